"""docker's security options as a spec (``spec/security.py``): no containers here; the escape
tests (test_escape.py) check what the running container is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyctr.spec.docker import build_spec
from pyctr.spec.model import SpecError
from pyctr.spec.security import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    READONLY_PATHS,
    SecurityOptions,
    capability_name,
    parse_device,
)

HELD = list(ALL_CAPABILITIES)


def test_the_default_set_is_dockers_fourteen() -> None:
    assert SecurityOptions().capabilities(HELD) == list(DEFAULT_CAPABILITIES)
    assert len(DEFAULT_CAPABILITIES) == 14


@pytest.mark.parametrize("spelling", ["NET_ADMIN", "net_admin", "CAP_NET_ADMIN", " cap_net_admin"])
def test_capability_names_with_or_without_the_prefix(spelling: str) -> None:
    assert capability_name(spelling, "--cap-add") == "CAP_NET_ADMIN"


def test_add_and_drop() -> None:
    chosen = SecurityOptions(cap_add=["NET_ADMIN"], cap_drop=["CAP_MKNOD", "net_raw"])
    names = chosen.capabilities(HELD)
    assert "CAP_NET_ADMIN" in names
    assert "CAP_MKNOD" not in names and "CAP_NET_RAW" not in names
    assert len(names) == 13


def test_drop_all_then_add_one() -> None:
    chosen = SecurityOptions(cap_drop=["ALL"], cap_add=["CHOWN"])
    assert chosen.capabilities(HELD) == ["CAP_CHOWN"]


def test_add_all_then_drop_one() -> None:
    names = SecurityOptions(cap_add=["ALL"], cap_drop=["SYS_ADMIN"]).capabilities(HELD)
    assert names == [name for name in HELD if name != "CAP_SYS_ADMIN"]


def test_privileged_is_everything_pyctr_holds() -> None:
    held = [name for name in HELD if name != "CAP_SYS_RESOURCE"]
    assert SecurityOptions(privileged=True, cap_drop=["KILL"]).capabilities(held) == held


def test_a_capability_pyctr_lacks_cannot_be_added() -> None:
    held = [name for name in HELD if name != "CAP_SYS_RESOURCE"]
    with pytest.raises(SpecError, match="does not hold CAP_SYS_RESOURCE"):
        SecurityOptions(cap_add=["SYS_RESOURCE"]).capabilities(held)


def test_unknown_capability_is_one_line() -> None:
    with pytest.raises(SpecError, match=r"--cap-drop: unknown capability 'SYS_FOO'"):
        SecurityOptions(cap_drop=["SYS_FOO"])


@pytest.mark.parametrize(("option", "expected"), [
    ("no-new-privileges", True), ("no-new-privileges=true", True),
    ("no-new-privileges:true", True), ("no-new-privileges=false", False),
    ("no-new-privileges:false", False),
])
def test_no_new_privileges(option: str, expected: bool) -> None:
    assert SecurityOptions(security_opt=[option]).no_new_privileges is expected


def test_no_new_privileges_is_on_by_default() -> None:
    assert SecurityOptions().no_new_privileges is True


@pytest.mark.parametrize("option", ["no-new-privileges=maybe", "selinux=x", "seccomp=",
                                    "bogus"])
def test_bad_security_opt_is_one_line(option: str) -> None:
    with pytest.raises(SpecError) as caught:
        SecurityOptions(security_opt=[option])
    assert "\n" not in str(caught.value)


def test_default_spec_is_hardened(tmp_path: Path) -> None:
    spec = build_spec(str(tmp_path), ["true"], hostname="x")
    caps = spec.process.capabilities
    assert caps is not None
    for kind in ("bounding", "effective", "inheritable", "permitted"):
        assert sorted(getattr(caps, kind)) == sorted(DEFAULT_CAPABILITIES)
    assert caps.ambient == []
    assert spec.process.no_new_privileges is True
    assert spec.linux.masked_paths == list(MASKED_PATHS)
    assert spec.linux.readonly_paths == list(READONLY_PATHS)
    assert isinstance(spec.linux.seccomp, dict)
    assert spec.linux.seccomp["defaultAction"] == "SCMP_ACT_ERRNO"


def test_privileged_spec_lifts_masks_seccomp_and_device_rules(tmp_path: Path) -> None:
    spec = build_spec(str(tmp_path), ["true"], hostname="x",
                      security=SecurityOptions(privileged=True))
    assert spec.linux.masked_paths == [] and spec.linux.readonly_paths == []
    assert spec.linux.seccomp is None
    assert spec.linux.resources == {"devices": [{"allow": True, "access": "rwm"}]}
    sys_mount = next(mount for mount in spec.mounts if mount.destination == "/sys")
    assert "ro" not in sys_mount.options
    assert spec.process.no_new_privileges is True  # lifted only by its own option


def test_seccomp_unconfined_keeps_capabilities_and_masks(tmp_path: Path) -> None:
    spec = build_spec(str(tmp_path), ["true"], hostname="x",
                      security=SecurityOptions(security_opt=["seccomp=unconfined"]))
    assert spec.linux.seccomp is None
    assert spec.process.capabilities is not None
    assert sorted(spec.process.capabilities.bounding) == sorted(DEFAULT_CAPABILITIES)
    assert spec.linux.masked_paths == list(MASKED_PATHS)


def test_device_takes_the_host_nodes_numbers() -> None:
    device, access = parse_device("/dev/null:/dev/mynull:rw")
    assert (device.path, device.type, device.major, device.minor) == ("/dev/mynull", "c", 1, 3)
    assert access == "rw"
    device, access = parse_device("/dev/zero")
    assert (device.path, access) == ("/dev/zero", "rwm")
    device, access = parse_device("/dev/zero:r")
    assert (device.path, access) == ("/dev/zero", "r")


def test_device_gets_a_rule_with_its_permissions(tmp_path: Path) -> None:
    spec = build_spec(str(tmp_path), ["true"], hostname="x",
                      security=SecurityOptions(devices=["/dev/zero:/dev/z:r"]))
    assert [device.path for device in spec.linux.devices] == ["/dev/z"]
    assert spec.linux.resources == {"devices": [
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]}


@pytest.mark.parametrize(("text", "fragment"), [
    ("/dev/does-not-exist", "No such file"),
    (str(Path(os.devnull).parent), "not a device node"),
    ("dev/null", "absolute"),
    ("/dev/null:/dev/n:rwx", "rwm"),
    ("", "HOST"),
])
def test_bad_device_is_one_line(text: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment) as caught:
        parse_device(text)
    assert "\n" not in str(caught.value)
