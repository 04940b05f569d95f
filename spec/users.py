"""``-u NAME[:GROUP]``: users and groups as the container's own ``/etc/passwd`` and
``/etc/group`` define them, never the host's.

The files are read from the host before the container exists, so they are hostile input: each
is opened with every symlink resolved inside the rootfs (``resolve_in_root``), must be a
regular file (a FIFO would block us), and is read up to a bound.
"""

from __future__ import annotations

import os
import stat

from pyctr.linux.syscalls import SyscallError, fd_path, open_root, resolve_in_root

from .model import SpecError, User

_MAX_SIZE = 4 << 20
_ID_MAX = (1 << 32) - 2


class Account:
    """What ``-u`` resolves to: the ids, the supplementary groups, and the home directory."""

    __slots__ = ("home", "user")

    def __init__(self, user: User, home: str) -> None:
        self.user, self.home = user, home


def read_rootfs_file(rootfs: str, path: str) -> bytes | None:
    """The bytes of ``path`` inside ``rootfs``, or None when it does not exist there."""
    try:
        root = open_root(rootfs)
    except SyscallError as exc:
        raise SpecError(f"cannot look up users in rootfs {rootfs}: {exc.strerror}") from None
    try:
        try:
            found = resolve_in_root(root, path)
        except SyscallError:
            return None
        try:
            fd = os.open(fd_path(found), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        finally:
            os.close(found)
    finally:
        os.close(root)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError(f"{path} in rootfs {rootfs} is not a regular file")
        return os.read(fd, _MAX_SIZE)
    finally:
        os.close(fd)


def _entries(data: bytes | None, fields: int) -> list[list[str]]:
    if data is None:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        row = line.split(":")
        if len(row) >= fields and row[0] and not line.startswith("#"):
            rows.append(row)
    return rows


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and int(text) <= _ID_MAX else None


def resolve_account(rootfs: str, spec: str) -> Account:
    """``NAME``, ``UID``, ``NAME:GROUP``, ``UID:GID`` (and mixes) resolved as ``docker run
    -u`` does, against the rootfs's files. A name that is not there is an error; a number
    need not be (it runs with gid 0 unless one is given, and HOME /)."""
    name, _, group = spec.partition(":")
    if not name:
        raise SpecError(f"--user needs NAME or UID, got {spec!r}")
    passwd = _entries(read_rootfs_file(rootfs, "/etc/passwd"), 7)
    uid = _number(name)
    entry = next((row for row in passwd if (row[0] == name if uid is None
                                             else _number(row[2]) == uid)), None)
    if entry is None and uid is None:
        raise SpecError(f"user {name!r} is not in /etc/passwd of rootfs {rootfs}; give a "
                        f"numeric uid or add the user")
    if entry is not None:
        uid = _number(entry[2])
        if uid is None:
            raise SpecError(f"/etc/passwd of rootfs {rootfs} has a bad uid for {name!r}")
    gid = (_number(entry[3]) or 0) if entry is not None else 0
    groups = _entries(read_rootfs_file(rootfs, "/etc/group"), 4)
    if group:
        gid_given = _number(group)
        if gid_given is None:
            row = next((row for row in groups if row[0] == group), None)
            if row is None or _number(row[2]) is None:
                raise SpecError(f"group {group!r} is not in /etc/group of rootfs {rootfs}; "
                                f"give a numeric gid or add the group")
            gid_given = _number(row[2])
        gid = gid_given or 0
    additional: list[int] = []
    if entry is not None:
        for row in groups:
            number = _number(row[2])
            if entry[0] in row[3].split(",") and number is not None and number != gid:
                additional.append(number)
    home = entry[5] if entry is not None and entry[5].startswith("/") else "/"
    return Account(User(uid or 0, gid, additional_gids=additional), home)
