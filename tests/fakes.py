"""A recording double of init's syscall layer: the mount plan runs against it without root."""

from __future__ import annotations


class RecordingSyscalls:
    """Records every call as a tuple (name, *arguments); fails the call named in ``fail_on``."""

    def __init__(self, fail_on: tuple[str, str] | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail_errno = 13
        """The errno of the failure ``fail_on`` makes (EACCES unless set)."""
        self.flags_of: dict[str, int] = {}
        """What ``mount_flags`` answers for a target (0 when not given)."""
        self.fail_on = fail_on

    def _record(self, *call: object) -> None:
        self.calls.append(call)
        if self.fail_on is not None and call[0] == self.fail_on[0] and self.fail_on[1] in call:
            from pyctr.linux.syscalls import SyscallError

            raise SyscallError(self.fail_errno, str(call[0]), str(self.fail_on[1]))

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int) -> None:
        self._record("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def chroot(self, path: str) -> None:
        self._record("chroot", path)

    def chdir(self, path: str) -> None:
        self._record("chdir", path)

    def mkdir(self, path: str, mode: int) -> None:
        self._record("mkdir", path, mode)

    def mknod(self, path: str, mode: int, major: int, minor: int) -> None:
        self._record("mknod", path, mode, major, minor)

    def symlink(self, target: str, path: str) -> None:
        self._record("symlink", target, path)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._record("setdomainname", name)

    def link_up(self, interface: str) -> None:
        self._record("link_up", interface)

    def setns(self, path: str, nstype: int) -> None:
        self._record("setns", path, nstype)

    def resolve(self, root: str, path: str, create: str | None, refuse_symlink: bool) -> str:
        """Inside-the-root resolution, as the host path it would name (no symlinks here)."""
        self._record("resolve", path, create, refuse_symlink)
        return root + ("/" + path.strip("/") if path.strip("/") else "")

    def release(self, target: str) -> None:
        pass

    def set_recursive(self, target: str, flags: int) -> None:
        self._record("set_recursive", target, flags)

    def mount_flags(self, target: str) -> int:
        self._record("mount_flags", target)
        return self.flags_of.get(target, 0)

    def is_directory(self, target: str) -> bool:
        self._record("is_directory", target)
        return not target.rsplit("/", 1)[-1].startswith(("kcore", "keys", "sysrq"))

    def write_file(self, target: str, data: str) -> None:
        self._record("write_file", target, data)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._record("chown", path, uid, gid)

    def names(self) -> list[object]:
        return [call[0] for call in self.calls]
