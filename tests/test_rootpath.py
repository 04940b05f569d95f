"""Mount destinations resolve inside the rootfs and never follow a symlink out of it (runc's
CVE-2021-30465), on a real kernel: hostile symlinks, creation, refusal, and a real mount."""

from __future__ import annotations

import errno
import os
import stat
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import requires_root

from pyctr.linux import syscalls
from pyctr.linux.syscalls import SyscallError, fd_path, open_root, resolve_in_root

pytestmark = requires_root

# Enough ".." to climb from any tmp_path up to the host's "/".
DEEP = "../" * 40 + "etc"


@dataclass
class Layout:
    root: Path
    decoy: Path  # where "../../etc" from the root lands if resolved naively on the host
    fd: int
    name: str  # unique, so that "not created on the host" can be checked in the real /etc


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    root = tmp_path / "host" / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "inside").write_text("in the rootfs\n")
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "file").write_text("")
    decoy = tmp_path / "etc"
    decoy.mkdir()
    (decoy / "inside").write_text("on the host\n")
    (root / "tmp").symlink_to("../../etc")
    (root / "deep").symlink_to(DEEP)
    (root / "abs").symlink_to("/etc")
    (root / "loop").symlink_to("loop")
    (root / "link").symlink_to("dir")
    name = f"pyctr-rootpath-{uuid.uuid4().hex}"
    fd = open_root(str(root))
    yield Layout(root, decoy, fd, name)
    os.close(fd)
    for host in (Path("/etc") / name, decoy / name):
        assert not os.path.lexists(host), f"{host} was created outside the rootfs"


def resolved(layout: Layout, path: str, **options: object) -> str:
    fd = resolve_in_root(layout.fd, path, **options)  # type: ignore[arg-type]
    try:
        # fstat and the magic link must agree: both name the inode the caller would mount on.
        where = os.readlink(fd_path(fd))
        assert os.stat(where, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        return where
    finally:
        os.close(fd)


def refused(layout: Layout, path: str, **options: object) -> SyscallError:
    with pytest.raises(SyscallError) as caught:
        resolved(layout, path, **options)
    return caught.value


@pytest.mark.parametrize("path", ["/tmp", "tmp", "/deep", "/abs", "/tmp/../abs/../deep/."])
def test_escaping_symlinks_resolve_inside_the_root(layout: Layout, path: str) -> None:
    assert resolved(layout, path) == str(layout.root / "etc")
    assert resolved(layout, path + "/inside") == str(layout.root / "etc" / "inside")


@pytest.mark.parametrize("path", ["/", "", ".", "..", "/dir/../..", "/dir/sub/../../../../.."])
def test_dotdot_cannot_climb_above_the_root(layout: Layout, path: str) -> None:
    assert resolved(layout, path) == str(layout.root)
    assert resolved(layout, path + "/etc") == str(layout.root / "etc")


def test_lookups_that_fail_name_the_container_path(layout: Layout) -> None:
    assert os.path.exists("/etc/passwd")
    missing = refused(layout, "/abs/passwd")
    assert (missing.errno, missing.operation, missing.path) == (errno.ENOENT, "resolve",
                                                                "/abs/passwd")
    loop = refused(layout, "loop/x")
    assert (loop.errno, loop.operation, loop.path) == (errno.ELOOP, "resolve", "/loop/x")
    assert refused(layout, "/file/x").errno == errno.ENOTDIR


def test_a_symlink_inside_the_root_is_followed(layout: Layout) -> None:
    assert resolved(layout, "/link/sub") == str(layout.root / "dir" / "sub")
    assert resolved(layout, "/link/sub", refuse_symlink=True) == str(layout.root / "dir" / "sub")
    assert resolved(layout, "/link/new", create="dir") == str(layout.root / "dir" / "new")


def test_create_dir_makes_every_missing_component_inside(layout: Layout) -> None:
    made = layout.root / layout.name / "b" / "c"
    assert resolved(layout, f"/{layout.name}/b/c", create="dir", mode=0o700) == str(made)
    assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o700 & ~_umask()
    # Again: it exists now, and the same directory comes back.
    assert resolved(layout, f"/{layout.name}/b/c", create="dir") == str(made)


@pytest.mark.parametrize("via", ["/tmp", "/deep", "/abs"])
def test_create_through_an_escaping_symlink_stays_inside(layout: Layout, via: str) -> None:
    target = layout.root / "etc" / layout.name / "x"
    assert resolved(layout, f"{via}/{layout.name}/x", create="dir") == str(target)
    assert target.is_dir()


def test_create_file_makes_an_empty_file_and_its_parents(layout: Layout) -> None:
    made = layout.root / "etc" / layout.name / "resolv.conf"
    assert resolved(layout, f"/abs/{layout.name}/resolv.conf", create="file") == str(made)
    assert made.is_file() and made.stat().st_size == 0
    assert stat.S_IMODE(made.stat().st_mode) == 0o644 & ~_umask()
    made.write_text("kept\n")
    assert resolved(layout, f"/tmp/{layout.name}/resolv.conf", create="file") == str(made)
    assert made.read_text() == "kept\n"


@pytest.mark.parametrize("target", ["/etc/{name}", "../../etc/{name}", DEEP + "/{name}"])
@pytest.mark.parametrize("create", ["dir", "file"])
def test_a_dangling_symlink_is_never_made_on_the_host(layout: Layout, target: str,
                                                      create: str) -> None:
    (layout.root / "dangling").symlink_to(target.format(name=layout.name))
    for path in ("/dangling", "/dangling/below"):
        try:
            where = resolved(layout, path, create=create)
        except SyscallError as exc:
            assert (exc.operation, exc.path) == ("create mount point", path)
        else:
            assert where.startswith(str(layout.root) + "/")


def test_the_wrong_kind_of_existing_last_component_is_refused(layout: Layout) -> None:
    not_dir = refused(layout, "/file", create="dir")
    assert (not_dir.errno, not_dir.operation, not_dir.path) == (
        errno.ENOTDIR, "create mount point", "/file")
    is_dir = refused(layout, "/tmp", create="file")
    assert (is_dir.errno, is_dir.operation) == (errno.EISDIR, "create mount point")
    assert refused(layout, "/", create="file").errno == errno.EISDIR
    with pytest.raises(ValueError):
        resolve_in_root(layout.fd, "/x", create="fifo")


@pytest.mark.parametrize("create", [None, "dir"])
def test_a_symlinked_special_mount_point_is_refused(layout: Layout, create: str | None) -> None:
    (layout.root / "proc").symlink_to("dir")
    (layout.root / "sys").symlink_to(f"/{layout.name}")  # dangling
    for path in ("/proc", "/sys", "/link/../proc"):
        error = refused(layout, path, create=create, refuse_symlink=True)
        assert error.errno == errno.ELOOP
        assert str(error) == (f"refuse symlinked mount point `{path}`: "
                              "Too many levels of symbolic links")
    assert not (layout.root / layout.name).exists()
    (layout.root / "dev").mkdir()
    assert resolved(layout, "/dev", create=create, refuse_symlink=True) == str(layout.root / "dev")


def test_refuse_symlink_still_creates_a_missing_mount_point(layout: Layout) -> None:
    assert resolved(layout, "/tmp/sys", create="dir", refuse_symlink=True) == str(
        layout.root / "etc" / "sys")


def test_no_descriptor_is_leaked(layout: Layout) -> None:
    def calls() -> None:
        for path, options in [("/tmp", {}), ("/a/b/c", {"create": "dir"}),
                              ("/a/f", {"create": "file"}), ("/loop/x", {}),
                              ("/file", {"create": "dir"}), ("/tmp", {"create": "file"}),
                              ("/tmp", {"refuse_symlink": True}), ("/nope/x", {}),
                              ("/file/x", {"create": "dir"})]:
            try:
                os.close(resolve_in_root(layout.fd, path, **options))  # type: ignore[arg-type]
            except SyscallError:
                pass

    calls()  # once first, so lazily opened descriptors (none expected) do not count
    before = sorted(os.listdir("/proc/self/fd"))
    calls()
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_open_root_of_a_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(SyscallError) as caught:
        open_root(str(tmp_path / "missing"))
    assert caught.value.errno == errno.ENOENT


def test_mounting_on_fd_path_lands_on_the_resolved_directory(layout: Layout) -> None:
    # In a forked child with its own private mount namespace, so nothing reaches the host's
    # mount table whatever happens; the child reports by exit code.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            syscalls.unshare(syscalls.CLONE_NEWNS)
            kernel = syscalls.LinuxSyscalls()
            kernel.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
            # A descriptor opened before unshare() names a mount of the host's namespace, and
            # mount(2) refuses a target there: the root must be opened after unshare().
            stale = resolve_in_root(layout.fd, "/tmp")
            try:
                kernel.mount("tmpfs", fd_path(stale), "tmpfs", 0, None)
            except SyscallError as exc:
                assert exc.errno == errno.EINVAL, exc
            else:
                raise AssertionError("mounted through a descriptor of the host's namespace")
            root = open_root(str(layout.root))
            fd = resolve_in_root(root, "/tmp", create="dir")
            kernel.mount("tmpfs", fd_path(fd), "tmpfs", 0, None)
            code = 0 if (os.path.ismount(layout.root / "etc")
                         and not os.path.ismount(layout.decoy)
                         and not (layout.root / "etc" / "inside").exists()) else 3
        except BaseException as exc:
            print(f"child: {exc}", file=sys.stderr)
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not os.path.ismount(layout.root / "etc")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
