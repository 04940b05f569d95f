"""OCI conformance: the runtime-tools checker ``runtimetest`` runs as the process of a bundle
that ``pyctr-supervise --bundle`` starts, and compares the container it finds itself in with
the bundle's config.json, one TAP line a check.

The checker and the busybox root filesystem it is shipped with live next to the repository, in
``../shared/oci`` (see its README.md); CI always has that folder, so a missing one fails the
tests rather than skipping them. The config is the one ``runc spec`` writes (runc 1.1.5),
copied below so that the tests do not need runc.

Every ``not ok`` must be about an area pyctr does not apply yet: a field it still reports as
``spec.field_not_applied`` (none of runc's default config is, now: its capabilities,
noNewPrivileges, masked and read-only paths, seccomp and devices cgroup are all applied), or
one of the two checks runc fails on this config as well. The bundle is built, and the
container run, once for the module.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import REPO, Run, mount_points, run_cli

from pyctr.spec.model import PENDING_FIELDS

pytestmark = requires_root

OCI = REPO.parent / "shared" / "oci"
CHECKER = OCI / "runtimetest"
ROOTFS_TARBALL = OCI / "rootfs-amd64.tar.gz"
MIN_CHECKS = 300

# What `runc spec` (runc 1.1.5, spec 1.0.2-dev) writes, with the checker as the process and
# no terminal, as runtime-tools' README says.
RUNC_SPEC: dict[str, object] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["/runtimetest", "--path=/"],
        "env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM=xterm",
        ],
        "cwd": "/",
        "capabilities": {
            "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                       {"type": "mount"}],
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
            "/proc/scsi",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    },
}

# The checks allowed to fail while a field is pending (pyctr warns spec.field_not_applied).
# Once pyctr applies a field and drops it from PENDING_FIELDS, its failures stop being excused.
_CAPABILITY = re.compile(r"(un)?expected (bounding|effective|inheritable|permitted|ambient) "
                         r"capability CAP_\w+ (not )?set")
EXEMPT_WHILE_PENDING: dict[str, re.Pattern[str]] = {
    "process.capabilities": _CAPABILITY,
    "process.noNewPrivileges": re.compile(r"has expected noNewPrivileges"),
    "linux.maskedPaths": re.compile(r'cannot read masked path ".*"'),
    "linux.readonlyPaths": re.compile(r'".*" \(linux\.readonlyPaths\[\d+\]\) is not writable'),
    "linux.seccomp": re.compile(r".*\b(seccomp|syscall)\b.*"),
}
# Checks that fail under runc 1.1 on this very config too, whatever pyctr does. The config
# asks for a mount of type "cgroup" on /sys/fs/cgroup; runtimes put a tmpfs there with one
# cgroup mount per v1 controller below it (a cgroup2 mount on a cgroup2 host), so the checker
# finds no "cgroup" mount at that very path. And it asks for ambient capabilities without
# the inheritable ones the kernel requires for them (capabilities(7)).
EXEMPT_ALWAYS: dict[str, re.Pattern[str]] = {
    "/sys/fs/cgroup mount": re.compile(r"mounts\[\d+\] \(/sys/fs/cgroup\) found"),
    "ambient capabilities": re.compile(r"expected ambient capability CAP_\w+ set"),
}
TAP_LINE = re.compile(r"(?P<status>ok|not ok) (?P<number>\d+)(?: - (?P<description>.*?))?"
                      r"(?P<directive> # (?:SKIP|TODO)\b.*)?")
TAP_PLAN = re.compile(r"1\.\.(\d+)")


def _rootfs_member(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, but device nodes and fifos are left out, not refused: the
    runtime makes /dev (and the rootfs is not expected to hold any today)."""
    if member.ischr() or member.isblk() or member.isfifo():
        return None
    return tarfile.data_filter(member, path)


def _config() -> dict[str, object]:
    config = copy.deepcopy(RUNC_SPEC)
    linux = config["linux"]
    assert isinstance(linux, dict)
    # runtimetest stops at a read-only path missing from /proc (it stats it to test it for
    # reading: cmd/runtimetest/main.go, validateROPaths) and never prints its plan; kernels
    # without CONFIG_MAGIC_SYSRQ have no /proc/sysrq-trigger. The container's /proc is the
    # host kernel's, so keep the paths the host has.
    linux["readonlyPaths"] = [path for path in linux["readonlyPaths"] if os.path.exists(path)]
    return config


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [str(path) for path in (CHECKER, ROOTFS_TARBALL) if not path.is_file()]
    if missing:
        pytest.fail(f"the OCI conformance files are missing: {', '.join(missing)} (expected "
                    f"in {OCI}, next to the repository checkout: CI provides ../shared/oci; "
                    f"see the README.md there)", pytrace=False)
    directory = tmp_path_factory.mktemp("oci-bundle")
    rootfs = directory / "rootfs"
    rootfs.mkdir()
    with tarfile.open(ROOTFS_TARBALL) as tarball:
        tarball.extractall(rootfs, filter=_rootfs_member)
    shutil.copy(CHECKER, rootfs / "runtimetest")  # the folder is read-only: copy, then use
    (rootfs / "runtimetest").chmod(0o755)
    text = json.dumps(_config(), indent=2)
    (directory / "config.json").write_text(text)
    (rootfs / "config.json").write_text(text)  # what the checker reads (--path=/)
    return directory


@pytest.fixture(scope="module")
def conformance(bundle: Path) -> Run:
    """The one run of the checker under pyctr, shared by the tests below."""
    mounts_before = mount_points()
    run = run_cli("--log-format", "json", "--bundle", str(bundle))
    # conftest's no_leaks checks each test, and this runs before the first one's check.
    assert mount_points() == mounts_before, "mounts left behind on the host"
    return run


def _tap(run: Run) -> tuple[list[tuple[str, int, str]], list[int]]:
    """The test lines (status, number, description or directive) and the plans found."""
    tests: list[tuple[str, int, str]] = []
    plans: list[int] = []
    for line in run.stdout.splitlines():
        if match := TAP_LINE.fullmatch(line):
            text = match["description"] or (match["directive"] or "").strip()
            tests.append((match["status"], int(match["number"]), text))
        elif match := TAP_PLAN.fullmatch(line):
            plans.append(int(match[1]))
    return tests, plans


def test_checker_runs_to_its_plan(conformance: Run) -> None:
    """A checker that crashed, or a container that died, must not pass for a clean run."""
    assert conformance.returncode == 0, (
        f"exit status {conformance.returncode}; checker's stderr: {conformance.other_stderr}; "
        f"events: {conformance.events()}")
    tests, plans = _tap(conformance)
    assert conformance.stdout.startswith("TAP version 13\n"), conformance.stdout[:200]
    assert len(plans) == 1, f"expected one TAP plan line, found {plans}: the checker stopped " \
                            f"early? stderr: {conformance.other_stderr}"
    numbers = [number for _, number, _ in tests]
    assert numbers == list(range(1, plans[0] + 1)), (
        f"test numbers do not run 1..{plans[0]}: {len(numbers)} lines, last {numbers[-1:]}")
    assert len(tests) >= MIN_CHECKS, f"only {len(tests)} checks ran (expected {MIN_CHECKS}+)"


def test_only_pending_areas_fail(conformance: Run) -> None:
    tests, _ = _tap(conformance)
    exempt = [pattern for field, pattern in EXEMPT_WHILE_PENDING.items()
              if field in PENDING_FIELDS] + list(EXEMPT_ALWAYS.values())
    offending = [f"not ok {number} - {text}" for status, number, text in tests
                 if status == "not ok" and not any(p.fullmatch(text) for p in exempt)]
    assert not offending, (f"{len(offending)} conformance check(s) failed outside the pending "
                           f"areas:\n" + "\n".join(offending))


def _has(config: dict[str, object], field: str) -> bool:
    """Whether the dotted ``field`` is set in ``config`` (as Spec.pending_fields sees it)."""
    value: object = config
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return value is not None and value != []


def test_pending_fields_are_reported(bundle: Path, conformance: Run) -> None:
    config = json.loads((bundle / "config.json").read_text())
    assert all(_has(config, field) for field in (
        "process.capabilities", "process.noNewPrivileges", "linux.maskedPaths",
        "linux.readonlyPaths", "linux.resources"))
    # Of linux.resources, runc's default has devices only, which the container's cgroup applies.
    assert set(config["linux"]["resources"]) == {"devices"}
    expected = [field for field in PENDING_FIELDS
                if _has(config, field) and field != "linux.resources"]
    # runc's default lists ambient capabilities that are not inheritable: the kernel will not
    # raise them, and pyctr says so (runc warns and goes on too).
    expected.append("process.capabilities.ambient")
    warnings = [record for record in conformance.records
                if record["event"] == "spec.field_not_applied"]
    assert [record["field"] for record in warnings] == expected, conformance.events()
    assert all(record["level"] == "warning" for record in warnings), warnings
