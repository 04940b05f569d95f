"""Resource limits as a spec (``spec/limits.py``): docker's flags turned into
``linux.resources``, the check of a config's ``linux.resources``, and the names of the members
pyctr does not apply. Pure unit tests: no container, no root."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pyctr.spec import limits
from pyctr.spec.docker import default_linux
from pyctr.spec.limits import (
    APPLIED_RESOURCES,
    ResourceOptions,
    check_resources,
    unapplied_resources,
)
from pyctr.spec.model import Process, Spec, SpecError

MIB, GIB = 1 << 20, 1 << 30
HOST_CPUS = 4


@pytest.fixture(autouse=True)
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees a host of HOST_CPUS CPUs, whatever runs them."""
    monkeypatch.setattr(limits, "_host_cpus", lambda: HOST_CPUS)


def refusal(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The message of the SpecError that ``call`` must raise, checked to be one line."""
    with pytest.raises(SpecError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message, message
    return message


def resources(**options: Any) -> dict[str, Any]:
    return dict(ResourceOptions(**options).resources())


def a_spec(resources: Any = None) -> Spec:
    linux = default_linux()
    linux.resources = resources
    return Spec(Process(["sh"], []), "/rootfs", linux=linux)


# --- --memory and --memory-swap --------------------------------------------------------------

@pytest.mark.parametrize(("given", "size"), [
    ("512m", 512 * MIB), ("512M", 512 * MIB), ("1g", GIB), ("1G", GIB), ("8192k", 8 * MIB),
    ("8192K", 8 * MIB), ("512mb", 512 * MIB), ("512MB", 512 * MIB), ("1gb", GIB), ("1GiB", GIB),
    ("512mib", 512 * MIB), ("8388608", 8 * MIB), ("8388608b", 8 * MIB), ("1.5g", 3 * GIB // 2),
    (".5g", GIB // 2), (" 64m ", 64 * MIB), ("64 m", 64 * MIB), ("1t", 1 << 40),
    (64 * MIB, 64 * MIB), (MIB * 6, MIB * 6),
])
def test_memory_spellings(given: str | int, size: int) -> None:
    assert ResourceOptions(memory=given).memory == size
    assert resources(memory=given)["memory"]["limit"] == size


@pytest.mark.parametrize("given", [
    "", "m", "mb", "-1", "-512m", "12x", "1.5.2g", "1.", "1e9", "inf", "nan", "0x10", "1_000",
    "5 12m", "1ib", "12kk", "\N{SUPERSCRIPT TWO}g", "1" * 50, True, 1.5, [1], -5,
])
def test_memory_refusals(given: Any) -> None:
    message = refusal(ResourceOptions, memory=given)
    assert message.startswith("--memory must be a size such as 512m or 1g, got "), message
    assert repr(given)[:20] in message


def test_memory_too_large() -> None:
    message = refusal(ResourceOptions, memory="9000000000g")
    assert "--memory '9000000000g' is too large" in message


@pytest.mark.parametrize("given", ["1m", "6291455", "5.9m", 1024])
def test_memory_below_dockers_minimum(given: str | int) -> None:
    message = refusal(ResourceOptions, memory=given)
    assert message.startswith("--memory must be at least 6m (6291456 bytes)"), message
    assert repr(given) in message


def test_memory_zero_is_dockers_no_limit() -> None:
    assert ResourceOptions(memory="0").memory is None
    assert not ResourceOptions(memory=0)


def test_swap_defaults_to_twice_the_memory_as_docker() -> None:
    assert resources(memory="512m") == {"memory": {"limit": 512 * MIB, "swap": GIB}}
    # --memory-swap 0 is docker's "not given": the default still applies.
    assert resources(memory="512m", memory_swap="0") == {
        "memory": {"limit": 512 * MIB, "swap": GIB}}


@pytest.mark.parametrize(("swap", "stored"), [
    ("1g", GIB), ("512m", 512 * MIB), ("-1", -1), (" -1 ", -1), (-1, -1), ("2GB", 2 * GIB),
    (GIB, GIB),
])
def test_memory_swap_is_the_total_as_given(swap: str | int, stored: int) -> None:
    assert resources(memory="512m", memory_swap=swap) == {
        "memory": {"limit": 512 * MIB, "swap": stored}}


@pytest.mark.parametrize("swap", ["1g", "-1", -1])
def test_memory_swap_needs_memory(swap: str | int) -> None:
    message = refusal(ResourceOptions, memory_swap=swap)
    assert message.startswith(f"--memory-swap {swap!r} needs --memory too"), message


def test_memory_swap_below_memory() -> None:
    message = refusal(ResourceOptions, memory="1g", memory_swap="512m")
    assert message.startswith(f"--memory-swap must be at least --memory ({GIB} bytes)"), message
    assert "'512m'" in message and "-1 for unlimited swap" in message


@pytest.mark.parametrize("swap", ["-2", "lots", "1.2.3m", True])
def test_memory_swap_refusals(swap: Any) -> None:
    message = refusal(ResourceOptions, memory="1g", memory_swap=swap)
    assert message.startswith("--memory-swap must be a size such as 1g, or -1 for unlimited "
                              "swap, got "), message


# --- --cpus, --cpu-shares ---------------------------------------------------------------------

@pytest.mark.parametrize(("given", "quota"), [
    ("0.5", 50000), ("1.5", 150000), ("1", 100000), ("4", 400000), (".25", 25000),
    ("0.01", 1000), ("0.29", 29000), ("0.123456", 12346), (" 2 ", 200000), (2, 200000),
    (0.75, 75000), (4.0, 400000),
])
def test_cpus(given: str | float, quota: int) -> None:
    assert resources(cpus=given) == {"cpu": {"quota": quota, "period": 100000}}


@pytest.mark.parametrize("given", ["", "-1", "-0.5", "1e2", "inf", "nan", "1.", "half", "1,5",
                                   True, "\N{SUPERSCRIPT TWO}"])
def test_cpus_that_are_not_numbers(given: Any) -> None:
    message = refusal(ResourceOptions, cpus=given)
    assert message == f"--cpus must be a number of CPUs such as 0.5 or 2, got {given!r}"


@pytest.mark.parametrize("given", ["0", "0.009", "4.01", "16", 0, 5, float("inf"),
                                   float("nan")])
def test_cpus_out_of_the_hosts_range(given: str | float) -> None:
    message = refusal(ResourceOptions, cpus=given)
    assert message == (f"--cpus must be from 0.01 to 4 (the CPUs this host has), got "
                       f"{given!r}")


@pytest.mark.parametrize(("given", "shares"), [
    ("2", 2), ("512", 512), ("1024", 1024), ("262144", 262144), (" 100 ", 100), (300, 300),
])
def test_cpu_shares(given: str | int, shares: int) -> None:
    assert resources(cpu_shares=given) == {"cpu": {"shares": shares}}


def test_cpu_shares_zero_is_the_default() -> None:
    assert ResourceOptions(cpu_shares="0").empty
    assert resources(cpu_shares=0) == {}


@pytest.mark.parametrize("given", ["1", "-1", "262145", "1.5", "", "many", 1, True, "+5"])
def test_cpu_shares_refusals(given: Any) -> None:
    message = refusal(ResourceOptions, cpu_shares=given)
    assert message == (f"--cpu-shares must be a whole number from 2 to 262144 (0 for the "
                       f"default, 1024), got {given!r}")


def test_cpus_and_cpu_shares_and_cpusets_share_the_cpu_object() -> None:
    assert resources(cpus="1.5", cpu_shares="512", cpuset_cpus="0-1", cpuset_mems="0") == {
        "cpu": {"quota": 150000, "period": 100000, "shares": 512, "cpus": "0-1", "mems": "0"}}


# --- --pids-limit -----------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "limit"), [
    ("100", 100), ("1", 1), (" 20 ", 20), (64, 64), ("-1", -1), (-1, -1), ("0", -1), (0, -1),
])
def test_pids_limit(given: str | int, limit: int) -> None:
    options = ResourceOptions(pids_limit=given)
    assert options.pids_limit == limit and options
    assert options.resources() == {"pids": {"limit": limit}}


@pytest.mark.parametrize("given", ["-2", "lots", "1.5", "", "1e3", True, -7, 1 << 63])
def test_pids_limit_refusals(given: Any) -> None:
    message = refusal(ResourceOptions, pids_limit=given)
    assert message == (f"--pids-limit must be a whole number above 0, or -1 (or 0) for no "
                       f"limit, got {given!r}")


# --- --cpuset-cpus and --cpuset-mems ----------------------------------------------------------

@pytest.mark.parametrize(("given", "stored"), [
    ("0", "0"), ("0-3", "0-3"), ("0,2", "0,2"), ("0-1,3", "0-1,3"), (" 1-2 ", "1-2"),
    ("2-2", "2-2"), ("3,0", "3,0"),
])
def test_cpuset_cpus(given: str, stored: str) -> None:
    assert resources(cpuset_cpus=given) == {"cpu": {"cpus": stored}}


@pytest.mark.parametrize("given", ["0-7", "12", "0,1,2,3,4,9"])
def test_cpuset_mems_checks_syntax_only(given: str) -> None:
    assert resources(cpuset_mems=given) == {"cpu": {"mems": given}}


@pytest.mark.parametrize("flag", ["cpuset_cpus", "cpuset_mems"])
@pytest.mark.parametrize("given", ["a", "0-", "-1", "0,,1", "0,", ",1", "0 - 3", "1-2-3",
                                   "0;1", "0.5", "\N{SUPERSCRIPT TWO}", "1234567"])
def test_cpuset_syntax_refusals(flag: str, given: str) -> None:
    message = refusal(ResourceOptions, **{flag: given})
    name = "--" + flag.replace("_", "-")
    assert message.startswith(f"{name} must be a list such as 0-3 or 0-1,3"), message
    assert message.endswith(f"got {given!r}"), message


@pytest.mark.parametrize("flag", ["cpuset_cpus", "cpuset_mems"])
def test_cpuset_backwards_range(flag: str) -> None:
    message = refusal(ResourceOptions, **{flag: "0,3-1"})
    assert message == f"--{flag.replace('_', '-')}: the range 3-1 runs backwards; write 1-3 " \
                      f"(got '0,3-1')"


@pytest.mark.parametrize(("given", "highest"), [("0-4", 4), ("7", 7), ("0,1,5-6", 6)])
def test_cpuset_cpus_must_exist(given: str, highest: int) -> None:
    message = refusal(ResourceOptions, cpuset_cpus=given)
    assert message == (f"--cpuset-cpus names CPU {highest}, but this host has CPUs 0-3 only; "
                       f"got {given!r}")


@pytest.mark.parametrize("flag", ["cpuset_cpus", "cpuset_mems"])
def test_empty_cpuset_is_dockers_default(flag: str) -> None:
    assert ResourceOptions(**{flag: "  "}).empty


# --- ResourceOptions as a whole, and apply ----------------------------------------------------

def test_nothing_given_is_empty_and_writes_nothing() -> None:
    options = ResourceOptions()
    assert options.empty and not options
    assert options.resources() == {}
    spec = a_spec()
    options.apply(spec)
    assert spec.linux.resources is None
    document: Any = spec.to_value()
    assert "resources" not in document["linux"]


def test_every_flag_together() -> None:
    options = ResourceOptions(memory="1g", memory_swap="-1", cpus="2", cpu_shares="512",
                              pids_limit="100", cpuset_cpus="0-1", cpuset_mems="0")
    assert not options.empty and options
    assert options.resources() == {
        "memory": {"limit": GIB, "swap": -1},
        "cpu": {"quota": 200000, "period": 100000, "shares": 512, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 100},
    }
    check_resources(options.resources())  # what the flags write, a config accepts
    assert unapplied_resources(options.resources()) == []


def test_apply_keeps_the_devices_rules() -> None:
    devices = [{"allow": False, "access": "rwm"},
               {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"}]
    spec = a_spec({"devices": devices})
    ResourceOptions(memory="256m", pids_limit="50").apply(spec)
    assert spec.linux.resources == {"devices": devices,
                                    "memory": {"limit": 256 * MIB, "swap": 512 * MIB},
                                    "pids": {"limit": 50}}
    document: Any = spec.to_value()
    assert document["linux"]["resources"] == spec.linux.resources


def test_apply_to_no_resources_creates_only_the_groups_given() -> None:
    spec = a_spec()
    ResourceOptions(cpus="0.5").apply(spec)
    assert spec.linux.resources == {"cpu": {"quota": 50000, "period": 100000}}


def test_apply_merges_into_a_group_and_does_not_change_the_original() -> None:
    original: dict[str, Any] = {"memory": {"reservation": MIB * 64, "limit": GIB},
                                "blockIO": {"weight": 10}}
    spec = a_spec(original)
    ResourceOptions(memory="512m", memory_swap="1g").apply(spec)
    assert spec.linux.resources == {
        "memory": {"reservation": MIB * 64, "limit": 512 * MIB, "swap": GIB},
        "blockIO": {"weight": 10}}
    assert original == {"memory": {"reservation": MIB * 64, "limit": GIB},
                        "blockIO": {"weight": 10}}


@pytest.mark.parametrize(("resources", "fragment"), [
    ([], "linux.resources must be an object"),
    ({"memory": 5}, "linux.resources.memory must be an object"),
])
def test_apply_refuses_resources_that_are_not_objects(resources: Any, fragment: str) -> None:
    assert refusal(ResourceOptions(memory="1g").apply, a_spec(resources)) == fragment


# --- check_resources --------------------------------------------------------------------------

# A linux.resources as runc's own tests and docker write it: every member pyctr applies, and
# some it does not (accepted here, warned about by unapplied_resources).
FULL_RESOURCES: dict[str, Any] = {
    "devices": [{"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
    "memory": {"limit": 536870912, "reservation": 268435456, "swap": 1073741824,
               "kernel": 0, "kernelTCP": 0, "swappiness": 60, "disableOOMKiller": False,
               "useHierarchy": True},
    "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "realtimeRuntime": 950000,
            "realtimePeriod": 1000000, "cpus": "0-3", "mems": "0", "idle": 0},
    "pids": {"limit": 32771},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 9223372036854772000}],
    "blockIO": {"weight": 10, "leafWeight": 10,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 300}]},
    "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]},
    "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
    "unified": {"io.max": "8:0 rbps=1048576"},
}


def test_a_full_runc_style_resources_object_is_accepted() -> None:
    check_resources(FULL_RESOURCES)


@pytest.mark.parametrize("resources", [
    None, {}, {"devices": []}, {"memory": None, "cpu": {}, "pids": None},
    {"memory": {"limit": -1, "swap": -1}}, {"memory": {"limit": 1, "swap": 1}},
    {"memory": {"limit": -1}}, {"memory": {"reservation": 0}}, {"memory": {"reservation": -1}},
    {"memory": {"swappiness": 0, "disableOOMKiller": True}}, {"memory": {"swappiness": 100}},
    {"cpu": {"shares": 2}}, {"cpu": {"shares": 262144}}, {"cpu": {"quota": -1}},
    {"cpu": {"quota": 1000, "period": 1000}}, {"cpu": {"period": 1000000}},
    {"cpu": {"cpus": "", "mems": ""}}, {"cpu": {"cpus": "3", "mems": "0-1,5"}},
    {"pids": {"limit": 0}}, {"pids": {"limit": -1}}, {"pids": {"limit": 1}},
    {"memory": {"limit": (1 << 63) - 1}}, {"blockIO": "anything: not applied, not checked"},
])
def test_check_resources_accepts(resources: Any) -> None:
    check_resources(resources)


BAD_RESOURCES: list[tuple[dict[str, Any], str]] = [
    ({"memory": []}, "linux.resources.memory must be an object, got []"),
    ({"cpu": "1"}, "linux.resources.cpu must be an object, got '1'"),
    ({"pids": 5}, "linux.resources.pids must be an object, got 5"),
    ({"memory": {"limit": 0}}, "linux.resources.memory.limit must be a whole number of bytes "
                               "above 0, or -1 for no limit, got 0"),
    ({"memory": {"limit": -2}}, "linux.resources.memory.limit must be"),
    ({"memory": {"limit": "1g"}}, "linux.resources.memory.limit must be a whole number of "
                                  "bytes above 0, or -1 for no limit, got '1g'"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit must be"),
    ({"memory": {"limit": 1.5}}, "linux.resources.memory.limit must be"),
    ({"memory": {"limit": 1 << 63}}, "linux.resources.memory.limit must be"),
    ({"memory": {"limit": GIB, "swap": -2}},
     "linux.resources.memory.swap must be a whole number of bytes (memory plus swap), or -1 "
     "for unlimited swap, got -2"),
    ({"memory": {"limit": GIB, "swap": "x"}}, "linux.resources.memory.swap must be"),
    ({"memory": {"swap": GIB}}, f"linux.resources.memory.swap ({GIB}) needs memory.limit"),
    ({"memory": {"swap": -1}}, "linux.resources.memory.swap (-1) needs memory.limit"),
    ({"memory": {"limit": GIB, "swap": MIB}},
     f"linux.resources.memory.swap ({MIB}) must be at least memory.limit ({GIB})"),
    ({"memory": {"limit": -1, "swap": GIB}},
     f"linux.resources.memory.swap ({GIB}) must be -1 when memory.limit is -1"),
    ({"memory": {"reservation": -2}}, "linux.resources.memory.reservation must be a whole "
                                      "number of bytes (0 or more), or -1 for none, got -2"),
    ({"memory": {"reservation": False}}, "linux.resources.memory.reservation must be"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness must be a whole "
                                      "number from 0 to 100, got 101"),
    ({"memory": {"swappiness": -1}}, "linux.resources.memory.swappiness must be"),
    ({"memory": {"disableOOMKiller": "yes"}},
     "linux.resources.memory.disableOOMKiller must be true or false, got 'yes'"),
    ({"memory": {"disableOOMKiller": 1}}, "linux.resources.memory.disableOOMKiller must be"),
    ({"cpu": {"shares": 1}}, "linux.resources.cpu.shares must be a whole number from 2 to "
                             "262144, got 1"),
    ({"cpu": {"shares": 262145}}, "linux.resources.cpu.shares must be"),
    ({"cpu": {"shares": 0}}, "linux.resources.cpu.shares must be"),
    ({"cpu": {"quota": 0}}, "linux.resources.cpu.quota must be a whole number of "
                            "microseconds, at least 1000 (the kernel's minimum), or -1 for no "
                            "limit, got 0"),
    ({"cpu": {"quota": 999}}, "linux.resources.cpu.quota must be"),
    ({"cpu": {"quota": -5}}, "linux.resources.cpu.quota must be"),
    ({"cpu": {"period": 999}}, "linux.resources.cpu.period must be a whole number of "
                               "microseconds from 1000 to 1000000, got 999"),
    ({"cpu": {"period": 1000001}}, "linux.resources.cpu.period must be"),
    ({"cpu": {"period": -1}}, "linux.resources.cpu.period must be"),
    ({"cpu": {"cpus": 3}}, "linux.resources.cpu.cpus must be a string, a list such as 0-3 or "
                           "0-1,3; got 3"),
    ({"cpu": {"cpus": "0-x"}}, "linux.resources.cpu.cpus must be a list such as 0-3 or 0-1,3"),
    ({"cpu": {"cpus": "3-0"}}, "linux.resources.cpu.cpus: the range 3-0 runs backwards; "
                               "write 0-3"),
    ({"cpu": {"cpus": "0-4"}}, "linux.resources.cpu.cpus names CPU 4, but this host has CPUs "
                               "0-3 only"),
    ({"cpu": {"mems": ["0"]}}, "linux.resources.cpu.mems must be a string"),
    ({"cpu": {"mems": "0,,1"}}, "linux.resources.cpu.mems must be a list such as 0-3 or 0-1,3"),
    ({"pids": {"limit": -2}}, "linux.resources.pids.limit must be a whole number above 0 (the "
                              "most processes), or 0 or -1 for no limit, got -2"),
    ({"pids": {"limit": "100"}}, "linux.resources.pids.limit must be"),
    ({"pids": {"limit": True}}, "linux.resources.pids.limit must be"),
]


@pytest.mark.parametrize(("resources", "fragment"), BAD_RESOURCES,
                         ids=[fragment.split(" ")[0] for _, fragment in BAD_RESOURCES])
def test_check_resources_refuses(resources: dict[str, Any], fragment: str) -> None:
    assert fragment in refusal(check_resources, resources)


@pytest.mark.parametrize("resources", [[], "memory", 5, True])
def test_check_resources_needs_an_object(resources: Any) -> None:
    assert refusal(check_resources, resources) == (f"linux.resources must be an object, got "
                                                   f"{resources!r}")


def test_a_long_bad_value_is_cut_short() -> None:
    message = refusal(check_resources, {"memory": {"limit": "x" * 500}})
    assert message.endswith("...") and len(message) < 200


# --- unapplied_resources and Spec.pending_fields ----------------------------------------------

def test_applied_resources_are_the_checked_ones_and_devices() -> None:
    assert set(APPLIED_RESOURCES) == {
        "memory.limit", "memory.swap", "memory.reservation", "memory.swappiness",
        "memory.disableOOMKiller", "cpu.shares", "cpu.quota", "cpu.period", "cpu.cpus",
        "cpu.mems", "pids.limit", "devices"}


FULL_UNAPPLIED = [
    "linux.resources.blockIO", "linux.resources.cpu.idle", "linux.resources.cpu.realtimePeriod",
    "linux.resources.cpu.realtimeRuntime", "linux.resources.hugepageLimits",
    "linux.resources.memory.kernel", "linux.resources.memory.kernelTCP",
    "linux.resources.memory.useHierarchy", "linux.resources.network", "linux.resources.rdma",
    "linux.resources.unified",
]


def test_unapplied_resources_of_a_full_object() -> None:
    assert unapplied_resources(FULL_RESOURCES) == FULL_UNAPPLIED


@pytest.mark.parametrize(("resources", "names"), [
    (None, []),
    ({}, []),
    ({"devices": [{"allow": False, "access": "rwm"}]}, []),
    ({"memory": {"limit": GIB, "swap": -1}, "cpu": {"shares": 2}, "pids": {"limit": 5}}, []),
    ({"blockIO": {}, "hugepageLimits": [], "unified": None, "memory": {"kernel": None}}, []),
    ({"memory": {"kernel": 0}}, ["linux.resources.memory.kernel"]),
    ({"pids": {"limit": 5, "extra": 1}}, ["linux.resources.pids.extra"]),
    ({"unified": {"memory.max": "1G"}, "blockIO": {"weight": 10}},
     ["linux.resources.blockIO", "linux.resources.unified"]),
    ({"memory": 5}, ["linux.resources.memory"]),
    ({"memory.limit": 5}, ["linux.resources.memory.limit"]),
    ([], ["linux.resources"]),
])
def test_unapplied_resources(resources: Any, names: list[str]) -> None:
    assert unapplied_resources(resources) == names


def test_pending_fields_are_the_unapplied_resources() -> None:
    assert a_spec().pending_fields() == []
    assert a_spec({"devices": [], "memory": {"limit": GIB}}).pending_fields() == []
    assert a_spec(FULL_RESOURCES).pending_fields() == FULL_UNAPPLIED


def test_cgroups_path_is_no_longer_pending() -> None:
    spec = a_spec()
    spec.linux.cgroups_path = "/pyctr/x"
    assert spec.pending_fields() == []
