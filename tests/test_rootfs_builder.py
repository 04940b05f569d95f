"""Tests for rootfs-scripts/build-rootfs, the script that makes a root filesystem for pyctr.

They run the script for real (it needs root: it chroots into what it built), so they are
skipped for other users. The host-mode tree is built once per module (about a second).
The debootstrap test downloads a Debian base system and runs only with PYCTR_SLOW_TESTS=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "rootfs-scripts" / "build-rootfs"
SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = Path("/bin/busybox")
ERROR_PREFIX = "build-rootfs: error: "
BUILD_TIMEOUT = 120.0

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="build-rootfs needs root (it chroots)"),
]


# ---------------------------------------------------------------- helpers


def _tool(name: str) -> str:
    path = shutil.which(name, path=SYS_PATH)
    if path is None:
        pytest.skip(f"{name} is not installed on this host")
    return path


def build(*args: str, timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run build-rootfs with ARGS (the last one is DEST) and return the finished process."""
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def build_ok(*args: str, timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    proc = build(*args, timeout=timeout)
    assert proc.returncode == 0, f"build-rootfs {' '.join(args)} failed:\n{proc.stderr}"
    return proc


def in_chroot(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run CMD inside ROOT with a clean environment."""
    return subprocess.run(
        [_tool("chroot"), str(root), *cmd],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": SYS_PATH, "HOME": "/root"},
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    assert lines[0].startswith(ERROR_PREFIX), lines[0]


def resolve_in_root(root: Path, path: str) -> Path:
    """Resolve PATH as a process chrooted into ROOT would (absolute links stay inside ROOT)."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            assert hops <= 40, f"symlink loop resolving {path} in {root}"
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
        else:
            done.append(part)
    return root.joinpath(*done)


def elf_interp(data: bytes) -> str | None:
    """The PT_INTERP path of an ELF image, or None (static binary or not ELF)."""
    if data[:4] != b"\x7fELF":
        return None
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        (phoff,) = struct.unpack_from(end + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
    for i in range(phnum):
        base = phoff + i * phentsize
        (p_type,) = struct.unpack_from(end + "I", data, base)
        if p_type != 3:  # PT_INTERP
            continue
        if is64:
            (offset,) = struct.unpack_from(end + "Q", data, base + 8)
            (size,) = struct.unpack_from(end + "Q", data, base + 32)
        else:
            (offset,) = struct.unpack_from(end + "I", data, base + 4)
            (size,) = struct.unpack_from(end + "I", data, base + 16)
        return bytes(data[offset : offset + size]).rstrip(b"\0").decode()
    return None


def leftovers(dest: Path) -> list[str]:
    """Temp or set-aside siblings that build-rootfs should never leave next to DEST."""
    return sorted(
        p.name
        for p in dest.parent.iterdir()
        if p.name.startswith((f"{dest.name}.tmp.", f"{dest.name}.old."))
    )


def busybox_is_static() -> bool:
    return BUSYBOX.is_file() and elf_interp(BUSYBOX.read_bytes()) is None


@pytest.fixture(scope="module")
def host_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("host") / "rootfs"
    start = time.monotonic()
    proc = build_ok(str(dest))
    elapsed = time.monotonic() - start
    assert "copying" in proc.stderr and "done:" in proc.stderr, proc.stderr
    # The brief: a host build takes a few seconds at most.
    assert elapsed < 20, f"host build took {elapsed:.1f}s"
    return dest


# ---------------------------------------------------------------- host mode


def test_host_rootfs_runs_shell_ls_hostname(host_rootfs: Path) -> None:
    proc = in_chroot(
        host_rootfs, "/bin/sh", "-c", "ls / >/dev/null && hostname >/dev/null && echo ok"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"
    # Merged /usr: the host's /bin -> usr/bin style links are reproduced.
    for top in ("bin", "sbin", "lib", "lib64"):
        host_link = Path("/", top)
        if host_link.is_symlink():
            assert os.readlink(host_rootfs / top) == os.readlink(host_link), top


def test_host_rootfs_runs_ps_with_proc_mounted(host_rootfs: Path) -> None:
    # procps' ps refuses to run without /proc; mount one in a private mount namespace so the
    # mount disappears with the namespace whatever happens.
    unshare = _tool("unshare")
    script = 'mount -t proc proc "$1/proc" || exit 99; exec chroot "$1" /bin/ps -e -o pid,comm'
    proc = subprocess.run(
        [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(host_rootfs),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": SYS_PATH},
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount /proc here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["PID", "COMMAND"], proc.stdout
    assert "ps" in proc.stdout.split()


def test_host_rootfs_has_every_library_of_ls(host_rootfs: Path) -> None:
    ldd = subprocess.run(
        [_tool("ldd"), "/bin/ls"], capture_output=True, text=True, check=True, timeout=30
    )
    libs = []
    for line in ldd.stdout.splitlines():
        words = line.split()
        if "=>" in words and words[words.index("=>") + 1].startswith("/"):
            libs.append(words[words.index("=>") + 1])
        elif words and words[0].startswith("/"):
            libs.append(words[0])
    assert libs, ldd.stdout
    for lib in libs:
        assert resolve_in_root(host_rootfs, lib).is_file(), f"{lib} missing from the rootfs"

    interp = elf_interp(resolve_in_root(host_rootfs, "/bin/ls").read_bytes())
    assert interp is not None
    loader = resolve_in_root(host_rootfs, interp)
    assert loader.is_file(), f"ELF interpreter {interp} missing from the rootfs"
    assert loader.read_bytes()[:4] == b"\x7fELF"
    # The loader itself, inside the chroot, finds every library of ls.
    proc = in_chroot(host_rootfs, interp, "--list", "/bin/ls")
    assert proc.returncode == 0, proc.stderr
    assert "not found" not in proc.stdout, proc.stdout


def test_host_rootfs_every_binary_links(host_rootfs: Path) -> None:
    """Every dynamically linked program copied in finds all its libraries in the chroot."""
    checked = 0
    for bindir in ("usr/bin", "usr/sbin", "bin", "sbin"):
        top = host_rootfs / bindir
        if top.is_symlink() or not top.is_dir():
            continue
        for entry in sorted(top.iterdir()):
            real = resolve_in_root(host_rootfs, f"/{bindir}/{entry.name}")
            if not real.is_file():
                continue
            interp = elf_interp(real.read_bytes())
            if interp is None:
                continue
            proc = in_chroot(host_rootfs, interp, "--list", f"/{bindir}/{entry.name}")
            assert proc.returncode == 0 and "not found" not in proc.stdout, (
                f"/{bindir}/{entry.name}: {proc.stdout}{proc.stderr}"
            )
            checked += 1
    assert checked >= 30, f"only {checked} dynamically linked programs in the rootfs"


def test_host_rootfs_etc_and_dirs(host_rootfs: Path) -> None:
    passwd = (host_rootfs / "etc/passwd").read_text()
    group = (host_rootfs / "etc/group").read_text()
    assert "root:x:0:0:root:/root:/bin/sh" in passwd.splitlines()
    assert "nobody:x:65534:65534:" in passwd
    assert "root:x:0:" in group.splitlines()
    assert "localhost" in (host_rootfs / "etc/hosts").read_text()
    assert (host_rootfs / "etc/resolv.conf").is_file()
    for d in ("proc", "sys", "dev", "tmp", "root", "etc", "run", "var/tmp"):
        assert (host_rootfs / d).is_dir(), d
    assert (host_rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (host_rootfs / "var/tmp").stat().st_mode & 0o7777 == 0o1777
    # Resolves names through the files above.
    proc = in_chroot(host_rootfs, "/usr/bin/id", "-un")
    assert (proc.returncode, proc.stdout) == (0, "root\n"), proc.stderr


# ---------------------------------------------------------------- busybox mode


@pytest.mark.skipif(
    not busybox_is_static(),
    reason="busybox mode needs a static /bin/busybox: apt-get install busybox-static",
)
def test_busybox_rootfs(tmp_path: Path) -> None:
    dest = tmp_path / "bb"
    dest.mkdir()  # an existing but empty DEST needs no --force
    build_ok("--from", "busybox", str(dest))
    assert (dest / "bin/busybox").is_file() and not (dest / "bin").is_symlink()
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    proc = in_chroot(dest, "/bin/sh", "-c", "ls / >/dev/null && hostname >/dev/null && echo ok")
    assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr
    assert "root:x:0:" in (dest / "etc/group").read_text()
    assert leftovers(dest) == []


# ---------------------------------------------------------------- DEST handling and errors


def test_nonempty_dest_without_force_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    (dest / "keep").write_text("precious\n")
    proc = build(str(dest))
    assert proc.returncode == 1
    assert_one_line_error(proc)
    assert "--force" in proc.stderr
    assert [p.name for p in dest.iterdir()] == ["keep"]
    assert (dest / "keep").read_text() == "precious\n"
    assert leftovers(dest) == []


def test_force_rebuilds(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    (dest / "junk").write_text("old\n")
    proc = build_ok("--force", "--quiet", str(dest))
    assert proc.stderr == ""  # --quiet
    assert not (dest / "junk").exists()
    assert (dest / "etc/passwd").is_file()
    proc = in_chroot(dest, "/bin/sh", "-c", "echo ok")
    assert proc.stdout == "ok\n", proc.stderr
    assert leftovers(dest) == []


def test_force_refuses_a_dest_containing_a_mount_point(tmp_path: Path) -> None:
    # In a private mount namespace, so the tmpfs cannot outlive the test.
    dest = tmp_path / "rootfs"
    (dest / "sub").mkdir(parents=True)
    script = (
        'mount -t tmpfs pyctr-test "$1/sub" && echo data > "$1/sub/file" || exit 99\n'
        '"$2" --force "$1"; rc=$?\n'
        'cat "$1/sub/file"; exit $rc'
    )
    proc = subprocess.run(
        [
            _tool("unshare"),
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(dest),
            str(SCRIPT),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": SYS_PATH},
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 1, proc.stderr
    assert_one_line_error(proc)
    assert "mount point" in proc.stderr
    assert proc.stdout == "data\n"  # still mounted and untouched when the script gave up
    assert leftovers(dest) == []


def test_bad_from_is_a_usage_error(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    proc = build("--from", "floppy", str(dest))
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert not dest.exists()


@pytest.mark.parametrize(
    "args",
    [[], ["a", "b"], ["--bogus", "x"], ["--from"], ["--suite", "bookworm", "x"]],
    ids=["no-dest", "two-dests", "unknown-option", "missing-value", "suite-without-debootstrap"],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert list(tmp_path.iterdir()) == []


def test_help_exits_0() -> None:
    proc = build("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: build-rootfs")


def test_interrupted_build_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    seen_tmp = False
    with subprocess.Popen(
        [str(SCRIPT), str(dest)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.name.startswith("rootfs.tmp.") for p in tmp_path.iterdir()):
                seen_tmp = True
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.002)
        _, stderr = proc.communicate(timeout=BUILD_TIMEOUT)
    assert seen_tmp, "the build finished before its temp dir was seen; cannot test interruption"
    assert proc.returncode != 0, stderr
    assert not dest.exists(), "an interrupted build left a DEST behind"
    assert leftovers(dest) == []


def test_failed_debootstrap_leaves_no_temp_dir(tmp_path: Path) -> None:
    _tool("debootstrap")
    dest = tmp_path / "rootfs"
    # Nothing listens on port 9 of localhost, so debootstrap fails at once.
    proc = build(
        "--from", "debootstrap", "--mirror", "http://127.0.0.1:9/debian", "--quiet", str(dest)
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(ERROR_PREFIX)
    assert not dest.exists()
    assert leftovers(dest) == []


# ---------------------------------------------------------------- debootstrap mode


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("PYCTR_SLOW_TESTS") != "1",
    reason="downloads a Debian base system; set PYCTR_SLOW_TESTS=1 to run",
)
def test_debootstrap_rootfs(tmp_path: Path) -> None:
    _tool("debootstrap")
    dest = tmp_path / "deb"
    try:
        build_ok("--from", "debootstrap", str(dest), timeout=1800)
        proc = in_chroot(dest, "/bin/sh", "-c", "ls / >/dev/null && hostname >/dev/null && echo ok")
        assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr
        assert (dest / "etc/debian_version").is_file()
        assert "root:x:0:0:" in (dest / "etc/passwd").read_text()
        assert "localhost" in (dest / "etc/hosts").read_text()
        assert leftovers(dest) == []
    finally:
        # About 200 MB: do not leave it in pytest's kept temp dirs.
        shutil.rmtree(dest, ignore_errors=True)
