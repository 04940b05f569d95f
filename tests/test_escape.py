"""Ways out of a default container, each tried as root from inside one, each of which must be
refused: the host's disk through a device node (read, and mount), new proc and cgroup mounts,
read-only mounts made writable, the host's kernel settings, kernel modules, new namespaces,
TIOCSTI on an inherited terminal, the kernel keyring, the init's memory and descriptors (and a
forged message on its socket), and the masked parts of /proc and /sys. Then what
``--privileged``, ``--cap-add``/``--cap-drop`` and ``--security-opt`` lift, and that each
lifts nothing more.

Every attempt is made by one small static C program, ``escape_probe.c`` (built once per
session, bound read-only into the container at /probe), which prints one line: ``refused
ERRNO ...`` (exit 0), ``ok ...`` (exit 1: the way out is open) or ``error: ...`` (exit 2). An
attempt that works changes nothing on the host: a write goes where the test can see and remove
it, or writes what is already there. The disk tests also use a loop device over a small image,
detached afterwards.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import stat
import subprocess
import tempfile
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import CLI, Run

pytestmark = requires_root

PROBE_SOURCE = Path(__file__).with_name("escape_probe.c")
PROBE = "/probe"
# docker's default set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
# NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
DEFAULT_CAPABILITIES = 0x00000000A80425FB
CAP_SYS_ADMIN = 1 << 21
CAP_MKNOD = 1 << 27
SECCOMP_FILTER = "2"  # "Seccomp:" in /proc/PID/status: SECCOMP_MODE_FILTER
# Refusals by a read-only mount, a missing permission or a missing capability.
WRITE_REFUSALS = ("EROFS", "EACCES", "EPERM")
ACCESS_REFUSALS = ("EACCES", "EPERM")


@pytest.fixture(scope="session")
def probe() -> Iterator[Path]:
    """The probe, built static (so it needs nothing from the rootfs) into a temporary
    directory that is removed at the end of the session."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("the escape tests build a C probe: install gcc and libc6-dev "
                    "(apt-get install gcc libc6-dev)")
    directory = Path(tempfile.mkdtemp(prefix="pyctr-escape-probe-"))
    try:
        trivial = directory / "trivial.c"
        trivial.write_text("int main(void) { return 0; }\n")
        static = subprocess.run([gcc, "-static", "-o", str(directory / "trivial"), str(trivial)],
                                capture_output=True, text=True)
        if static.returncode != 0:
            pytest.skip("the escape tests need a static C library to build their probe "
                        f"(apt-get install libc6-dev): {static.stderr.strip()[-300:]}")
        binary = directory / "probe"
        built = subprocess.run([gcc, "-static", "-O2", "-Wall", "-o", str(binary),
                                str(PROBE_SOURCE)], capture_output=True, text=True)
        assert built.returncode == 0, f"{PROBE_SOURCE.name} does not build:\n{built.stderr}"
        binary.chmod(0o755)
        directory.chmod(0o755)
        yield binary
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Attempt:
    """One run of the probe in a container: the CLI's run, and the probe's verdict."""

    run: Run

    @property
    def line(self) -> str:
        lines = self.run.stdout.strip().splitlines()
        return lines[-1].strip() if lines else ""

    @property
    def verdict(self) -> str:
        return self.line.split()[0] if self.line else ""

    @property
    def error(self) -> str | None:
        """The errno name of a refusal (or ``empty``)."""
        words = self.line.split()
        return words[1] if self.verdict == "refused" and len(words) > 1 else None

    def explain(self) -> str:
        return (f"the probe said {self.line!r} (exit {self.run.returncode}); "
                f"pyctr said {self.run.other_stderr}, events {self.run.events()}")

    def status(self) -> dict[str, str]:
        """``probe status``'s fields (CapEff, NoNewPrivs, ...)."""
        assert self.run.returncode == 0, self.explain()
        fields = (line.split(":", 1) for line in self.run.stdout.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in fields}


ProbeIn = Callable[..., Attempt]


@pytest.fixture
def probe_in(pyctr, probe: Path) -> ProbeIn:
    """``probe_in(*args, options=(...))`` runs ``/probe ARGS`` in a container with those
    options (default: none, a default container)."""

    def attempt(*args: str, options: tuple[str, ...] = ()) -> Attempt:
        return Attempt(pyctr(PROBE, *args, options=("-v", f"{probe}:{PROBE}:ro", *options)))

    return attempt


def assert_refused(attempt: Attempt, *errors: str) -> None:
    """The probe was refused (with one of ``errors``, when given) and the container ran and
    ended normally."""
    assert attempt.verdict == "refused" and attempt.run.returncode == 0, attempt.explain()
    if errors:
        assert attempt.error in errors, attempt.explain()


def assert_allowed(attempt: Attempt) -> None:
    assert attempt.verdict == "ok" and attempt.run.returncode == 1, attempt.explain()


def assert_capabilities(status: dict[str, str], expected: int,
                        names: tuple[str, ...] = ("CapEff", "CapPrm", "CapBnd")) -> None:
    """Each of the sets ``names`` in ``status`` is ``expected``."""
    sets = {name: status.get(name, "missing") for name in names}
    wrong = {name: value for name, value in sets.items()
             if not value.isalnum() or int(value, 16) != expected}
    assert not wrong, f"expected {expected:016x} in {names}, got {sets}"


def assert_fields(status: dict[str, str], **expected: str) -> None:
    """``status`` has these values (``NoNewPrivs="1"``, ``Seccomp="2"``)."""
    got = {name: status.get(name, "missing") for name in expected}
    assert got == expected, f"expected {expected}, got {got}"


def own_status() -> dict[str, str]:
    with open("/proc/self/status") as file:
        fields = (line.split(":", 1) for line in file if ":" in line)
        return {key.strip(): value.strip() for key, value in fields}


# The default container.


def test_default_capabilities_no_new_privs_and_seccomp(probe_in: ProbeIn) -> None:
    status = probe_in("status").status()
    assert_capabilities(status, DEFAULT_CAPABILITIES)
    assert_fields(status, NoNewPrivs="1", Seccomp=SECCOMP_FILTER)


def test_default_inheritable_set_is_the_default_set_and_ambient_is_empty(
        probe_in: ProbeIn) -> None:
    # The inheritable set as the issue asks (docker empties it since 20.10.14, CVE-2022-24769:
    # a program with inheritable file capabilities run by a non-root user gains them). With
    # no_new_privs, on by default, file capabilities are not honoured at exec at all.
    status = probe_in("status").status()
    assert_capabilities(status, DEFAULT_CAPABILITIES, ("CapInh",))
    assert_capabilities(status, 0, ("CapAmb",))


@dataclass
class Disk:
    """A block device of the host's that the container was not given: ``marker`` is the path,
    from its filesystem's root, of a file the probe creates should it mount the device, and
    ``written()`` tells whether that file reached the device."""

    major: int
    minor: int
    fstype: str
    marker: str | None
    written: Callable[[], bool]
    readable_on_host: bool = True


def _unescape(field: str) -> str:
    """A mountinfo path with its octal escapes (``\\040`` for a space) undone."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def _mount_of(path: Path, mountinfo: list[list[str]]) -> list[str] | None:
    """The mountinfo entry of the mount that ``path`` (resolved) lies on."""
    resolved = str(path.resolve())
    best: list[str] | None = None
    for fields in mountinfo:
        point = _unescape(fields[4])
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(_unescape(best[4]))):
            best = fields  # later entries are mounted over earlier ones on the same point
    return best


@contextmanager
def _host_disk(rootfs: Path) -> Iterator[Disk]:
    """The disk the rootfs is on; the marker goes in a temporary directory on it."""
    with open("/proc/self/mountinfo") as file:
        mountinfo = [line.split() for line in file]
    entry = _mount_of(rootfs, mountinfo)
    assert entry is not None
    fstype, source = entry[entry.index("-") + 1], _unescape(entry[entry.index("-") + 2])
    major, minor = (int(number) for number in entry[2].split(":"))
    if not os.path.exists(f"/sys/dev/block/{major}:{minor}"):
        # btrfs and the like number their mounts anonymously: the source names the disk.
        try:
            device = os.stat(source)
        except OSError:
            device = None
        if device is None or not stat.S_ISBLK(device.st_mode):
            pytest.skip(f"the rootfs {rootfs} is on {fstype} {source}, not on a block device")
        major, minor = os.major(device.st_rdev), os.minor(device.st_rdev)
    readable = _readable_on_host(major, minor)
    directory: Path | None = None
    for parent in (tempfile.gettempdir(), str(rootfs.parent)):
        candidate = Path(tempfile.mkdtemp(prefix=".pyctr-escape-", dir=parent))
        place = _mount_of(candidate, mountinfo)
        if place is not None and place[2] == entry[2]:
            directory = candidate
            break
        candidate.rmdir()
    if directory is None:  # nowhere to look for a marker: the verdict alone tells
        yield Disk(major, minor, fstype, None, lambda: False, readable)
        return
    try:
        place = _mount_of(directory, mountinfo)
        assert place is not None
        host_marker = directory / "escaped"
        inside = os.path.relpath(host_marker, _unescape(place[4]))
        marker = os.path.normpath(os.path.join(_unescape(place[3]), inside)).lstrip("/")
        yield Disk(major, minor, fstype, marker, host_marker.exists, readable)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _readable_on_host(major: int, minor: int) -> bool:
    """Whether the host's own node of the block device MAJOR:MINOR opens for reading (some
    VMs refuse that to everyone); True when the host has no node to try."""
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{major}:{minor}"))
    try:
        os.close(os.open(f"/dev/{name}", os.O_RDONLY))
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


LOOP_MARKER = "pyctr-escape-marker"


@contextmanager
def _loop_device() -> Iterator[Disk]:
    """A loop device over a small ext4 image, which the host can read: a disk that no
    restriction of the host's own (some VMs refuse every open of their root disk) hides."""
    losetup, mkfs = shutil.which("losetup"), shutil.which("mkfs.ext4")
    if losetup is None or mkfs is None:
        pytest.skip("needs losetup and mkfs.ext4 (util-linux, e2fsprogs)")
    directory = Path(tempfile.mkdtemp(prefix="pyctr-escape-loop-"))
    device: str | None = None
    try:
        image = directory / "disk.img"
        with image.open("wb") as file:
            file.truncate(8 << 20)
        subprocess.run([mkfs, "-q", "-F", str(image)], check=True, capture_output=True)
        attached = subprocess.run([losetup, "--find", "--show", str(image)],
                                  capture_output=True, text=True)
        if attached.returncode != 0:
            pytest.skip(f"cannot attach a loop device: {attached.stderr.strip()}")
        device = attached.stdout.strip()
        number = os.stat(device).st_rdev
        if not _readable_on_host(os.major(number), os.minor(number)):
            pytest.skip(f"the host itself cannot open the loop device {device}")
        yield Disk(os.major(number), os.minor(number), "ext4", LOOP_MARKER,
                   lambda: LOOP_MARKER.encode() in image.read_bytes())
    finally:
        if device is not None:
            subprocess.run([losetup, "--detach", device], check=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["host-disk", "loop-device"])
def disk(request: pytest.FixtureRequest, rootfs: Path) -> Iterator[Disk]:
    with _host_disk(rootfs) if request.param == "host-disk" else _loop_device() as found:
        yield found


def test_host_block_device_cannot_be_read_through_a_node(probe_in: ProbeIn, disk: Disk) -> None:
    # CAP_MKNOD is in the default set, as in docker: the node may be made (docker allows
    # mknod of any device), but the devices cgroup must refuse its open.
    if not disk.readable_on_host:
        pytest.skip(f"the host itself cannot open its disk {disk.major}:{disk.minor} here, so "
                    "a refusal would prove nothing (the loop-device case tests this)")
    attempt = probe_in("mknod-open", str(disk.major), str(disk.minor))
    assert_refused(attempt, "EPERM")


@pytest.mark.parametrize("options", [(), ("--cap-add", "SYS_ADMIN")],
                         ids=["default", "cap-add-SYS_ADMIN"])
def test_host_block_device_cannot_be_mounted(probe_in: ProbeIn, disk: Disk,
                                             options: tuple[str, ...]) -> None:
    """Refused for want of CAP_SYS_ADMIN by default. With it, the devices cgroup refuses the
    mount of a device nobody has mounted (the kernel opens it, and checks), but not of one
    the host has mounted already, such as its own disk: mount(2) then reuses the superblock
    without opening the device, so no device check runs at all (docker leans on AppArmor's
    "deny mount" here). What stops that is refusing the node itself: no mknod of block devices
    (no "b *:* m" in the devices cgroup)."""
    arguments = [str(disk.major), str(disk.minor), disk.fstype]
    if disk.marker is not None:
        arguments.append(disk.marker)
    attempt = probe_in("mknod-mount", *arguments, options=options)
    assert not disk.written(), f"the container mounted the disk and wrote {disk.marker}"
    assert_refused(attempt, *ACCESS_REFUSALS)


def test_proc_cannot_be_mounted(probe_in: ProbeIn) -> None:
    assert_refused(probe_in("mount-proc"), "EPERM")


def test_cgroup_hierarchy_cannot_be_mounted(probe_in: ProbeIn) -> None:
    assert_refused(probe_in("mount-cgroup"), "EPERM")


@pytest.mark.parametrize(("path", "options"), [
    ("/sys", ()),
    ("/sys/fs/cgroup", ()),
    ("/proc/sys", ()),
    ("/", ("--read-only",)),
], ids=["sys", "sys-fs-cgroup", "proc-sys", "root-read-only"])
def test_read_only_mount_cannot_be_remounted_read_write(probe_in: ProbeIn, path: str,
                                                        options: tuple[str, ...]) -> None:
    assert_refused(probe_in("remount-rw", path, options=options), "EPERM")


def test_host_core_pattern_cannot_be_written(probe_in: ProbeIn) -> None:
    # The probe writes back what the host has: should the write go through, nothing changes.
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    attempt = probe_in("write", "/proc/sys/kernel/core_pattern", before)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    assert_refused(attempt, *WRITE_REFUSALS)


def test_sysrq_trigger_cannot_be_written(probe_in: ProbeIn) -> None:
    if not os.path.exists("/proc/sysrq-trigger"):
        pytest.skip("this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ)")
    # "h" only prints the help to the kernel log, should the write go through.
    assert_refused(probe_in("write", "/proc/sysrq-trigger", "h"), *WRITE_REFUSALS)


def test_kernel_modules_cannot_be_loaded_or_removed(probe_in: ProbeIn) -> None:
    # EPERM for each of init_module, finit_module and delete_module: refused before the kernel
    # looks at the (harmless) arguments. A kernel without modules answers ENOSYS, which means
    # the call reached it: no filter stood in the way.
    assert_refused(probe_in("init-module"), "EPERM")


@pytest.mark.parametrize("kind", ["user", "mount"])
def test_new_namespaces_cannot_be_made(probe_in: ProbeIn, kind: str) -> None:
    # By unshare(2), and by clone(2) and clone3(2) with the same flag.
    attempt = probe_in("unshare", kind)
    assert_refused(attempt)
    assert "unshare=EPERM" in attempt.line, attempt.explain()


def test_keyring_is_out_of_reach(probe_in: ProbeIn) -> None:
    # keyctl, add_key and request_key: the host's keyrings are not namespaced.
    assert_refused(probe_in("keyctl"), "EPERM")


@pytest.mark.parametrize(("stream", "options"), [("stdout", ()), ("stdin", ("-i",))],
                         ids=["stdout", "stdin-interactive"])
def test_tiocsti_cannot_type_into_an_inherited_terminal(probe: Path, rootfs: Path,
                                                        stream: str,
                                                        options: tuple[str, ...]) -> None:
    """The container's stdout (or stdin, with -i) is a terminal the test owns: pushing input
    into it with TIOCSTI must fail (a pipe in between: ENOTTY; no CAP_SYS_ADMIN and not the
    caller's controlling terminal: EPERM), and nothing may arrive in its input."""
    text = "echo pyctr-escape-injected\n"
    fd = "1" if stream == "stdout" else "0"
    master, slave = pty.openpty()
    try:
        tty.setraw(slave)  # input is readable as it arrives, not line by line; no echo
        streams = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE}
        streams[stream] = slave
        completed = subprocess.run(
            [CLI, "-v", f"{probe}:{PROBE}:ro", *options, str(rootfs), PROBE, "tiocsti", fd,
             text], stderr=subprocess.PIPE, text=True, timeout=60, check=False,
            **streams)
        output = completed.stdout if stream == "stdin" else _drain(master)
        injected = _drain(slave)
    finally:
        os.close(master)
        os.close(slave)
    assert not injected, f"the container typed {injected!r} into the test's terminal"
    run = Run(completed)
    # The probe's line comes through the terminal (relayed or not), or, should pyctr log
    # what it relays, as a workload.output record.
    lines = output.strip().splitlines() + [
        str(record["message"]) for record in run.records
        if record["event"] == "workload.output" and record.get("stream") == "stdout"]
    attempt = [line.strip() for line in lines if line.startswith(("refused ", "ok", "error:"))]
    assert attempt and attempt[-1].startswith("refused ") and completed.returncode == 0, (
        f"the probe said {attempt} (exit {completed.returncode}); pyctr said "
        f"{run.other_stderr}, events {run.events()}")


def _drain(fd: int) -> str:
    """What can be read from ``fd`` now (waiting a moment for the first bytes)."""
    data = b""
    timeout = 0.2
    while select.select([fd], [], [], timeout)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side of a pty is closed
            break
        if not chunk:
            break
        data += chunk
        timeout = 0.05
    return data.decode(errors="replace")


@pytest.mark.parametrize(("action", "path"), [
    ("open", "/proc/1/environ"),
    ("open", "/proc/1/mem"),
    ("open", "/proc/1/maps"),
    ("readlinks", "/proc/1/map_files"),
    ("readlinks", "/proc/1/fd"),
    ("readlink", "/proc/1/exe"),
    ("open", "/proc/1/exe"),
], ids=["environ", "mem", "maps", "map_files", "fd", "exe-link", "exe-open"])
def test_init_is_out_of_reach(probe_in: ProbeIn, action: str, path: str) -> None:
    """The init is root with every capability and holds the socket to the supervisor on the
    host: the workload may not read its memory, environment or maps, nor follow its
    descriptors or its executable (a host file) through /proc."""
    assert_refused(probe_in(action, path), *ACCESS_REFUSALS)


def test_init_socket_cannot_be_taken_to_forge_a_message(probe_in: ProbeIn) -> None:
    # pidfd_open(1) and pidfd_getfd of each of init's descriptors 0..64; a socket taken this
    # way would get a forged message.
    attempt = probe_in("pidfd-getfd", "1", "64")
    assert_refused(attempt, "EPERM")
    assert "container.killed" not in attempt.run.events(), attempt.explain()
    assert attempt.run.record("workload.exited")["exit_code"] == 0


@pytest.mark.parametrize(("action", "path"), [
    ("read", "/proc/kcore"),
    ("read", "/proc/keys"),
    ("read", "/proc/timer_list"),
    ("list", "/sys/firmware"),
])
def test_masked_paths_cannot_be_read(probe, pyctr, action: str, path: str) -> None:
    """Masked: nothing to read, and a mount over the path in the container."""
    if not os.path.exists(path):
        pytest.skip(f"this kernel has no {path}")
    run = pyctr("/bin/sh", "-c", f'{PROBE} {action} {path}; echo "exit=$?"; '
                "cat /proc/self/mountinfo", options=("-v", f"{probe}:{PROBE}:ro"))
    assert run.returncode == 0 and len(run.stdout.splitlines()) >= 2, run.stderr
    line, status = run.stdout.splitlines()[:2]
    assert line.startswith("refused ") and status == "exit=0", (line, status)
    mount_points = {fields.split()[4] for fields in run.stdout.splitlines()[2:]}
    assert path in mount_points, f"{path} is not masked: {line}"


# What the options lift.


def test_privileged_has_every_capability_and_no_seccomp(probe_in: ProbeIn) -> None:
    status = probe_in("status", options=("--privileged",)).status()
    # pyctr runs as this test does, so "every capability" is every one the test holds.
    assert_capabilities(status, int(own_status()["CapEff"], 16))
    assert_fields(status, Seccomp="0")


def test_privileged_can_mount_proc(probe_in: ProbeIn) -> None:
    assert_allowed(probe_in("mount-proc", options=("--privileged",)))


def test_privileged_keeps_the_namespaces(pyctr) -> None:
    names = ("pid", "mnt", "uts", "ipc", "net")
    run = pyctr("/bin/sh", "-c", "; ".join(f"readlink /proc/self/ns/{name}" for name in names),
                options=("--privileged",))
    assert run.returncode == 0, run.stderr
    inside = run.stdout.split()
    assert len(inside) == len(names), run.stdout
    for name, theirs in zip(names, inside, strict=True):
        assert theirs != os.readlink(f"/proc/self/ns/{name}"), f"{name} namespace is the host's"


def test_seccomp_unconfined_lifts_the_filter_and_nothing_else(probe_in: ProbeIn) -> None:
    options = ("--security-opt", "seccomp=unconfined")
    status = probe_in("status", options=options).status()
    assert_fields(status, Seccomp="0", NoNewPrivs="1")
    assert_capabilities(status, DEFAULT_CAPABILITIES)
    # Still no CAP_SYS_ADMIN: the kernel itself refuses the mount.
    assert_refused(probe_in("mount-proc", options=options), "EPERM")


@pytest.mark.parametrize(("options", "expected"), [
    (("--cap-add", "SYS_ADMIN"), DEFAULT_CAPABILITIES | CAP_SYS_ADMIN),
    (("--cap-drop", "MKNOD"), DEFAULT_CAPABILITIES & ~CAP_MKNOD),
    (("--cap-drop", "ALL"), 0),
], ids=["add-SYS_ADMIN", "drop-MKNOD", "drop-ALL"])
def test_capability_options_change_only_the_capabilities(probe_in: ProbeIn,
                                                         options: tuple[str, ...],
                                                         expected: int) -> None:
    status = probe_in("status", options=options).status()
    assert_capabilities(status, expected)
    assert_fields(status, NoNewPrivs="1", Seccomp=SECCOMP_FILTER)


def test_cap_add_sys_admin_allows_a_tmpfs_mount(probe_in: ProbeIn) -> None:
    assert_allowed(probe_in("mount-tmpfs", options=("--cap-add", "SYS_ADMIN")))


def test_no_new_privileges_false_lifts_no_new_privs_only(probe_in: ProbeIn) -> None:
    status = probe_in("status", options=("--security-opt", "no-new-privileges=false")).status()
    assert_fields(status, NoNewPrivs="0", Seccomp=SECCOMP_FILTER)
    assert_capabilities(status, DEFAULT_CAPABILITIES)
