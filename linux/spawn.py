"""posix_spawn(3) through the C library, for the one thing ``os.posix_spawn`` cannot ask.

glibc's child blocks every signal while it sets itself up, and then gives the two signals
glibc keeps for itself (32 and 33) SIG_IGN, unless the attributes' signal-default set names
them; but the set ``os.posix_spawn(setsigdef=...)`` builds goes through sigaddset(), which
refuses exactly those two. A workload must start with every disposition at its default (as
under runc), so the set is built here by hand (``libc.sigset``), and the calls are made
through ``_ctypes`` as the rest of ``libc`` is.

The attribute and file-action objects are opaque to us: they get buffers larger than glibc's
(336 and 80 bytes on x86_64 and aarch64), which only glibc's own functions touch.
"""

from __future__ import annotations

import _ctypes
import os
import struct
import sys

from . import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# <spawn.h>, glibc: the attribute flags.
_SETPGROUP = 0x02
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80
_OBJECT_SIZE = 1024
# Every signal whose disposition can change (SIGKILL and SIGSTOP cannot).
_ALL_SIGNALS = libc.sigset(tuple(sorted(set(range(1, 65)) - {9, 19})))
_NO_SIGNALS = libc.sigset(())


def _bind(name: str, arguments: tuple[type, ...]) -> Callable[..., int]:
    return libc.bind(name, libc.Int, arguments)


_attr_init = _bind("posix_spawnattr_init", (libc.Pointer,))
_attr_destroy = _bind("posix_spawnattr_destroy", (libc.Pointer,))
_attr_setflags = _bind("posix_spawnattr_setflags", (libc.Pointer, libc.Int))
_attr_setsigdefault = _bind("posix_spawnattr_setsigdefault", (libc.Pointer, libc.Pointer))
_attr_setsigmask = _bind("posix_spawnattr_setsigmask", (libc.Pointer, libc.Pointer))
_attr_setpgroup = _bind("posix_spawnattr_setpgroup", (libc.Pointer, libc.Int))
_actions_init = _bind("posix_spawn_file_actions_init", (libc.Pointer,))
_actions_destroy = _bind("posix_spawn_file_actions_destroy", (libc.Pointer,))
_actions_addopen = _bind("posix_spawn_file_actions_addopen",
                         (libc.Pointer, libc.Int, libc.String, libc.Int, libc.UInt))
_actions_adddup2 = _bind("posix_spawn_file_actions_adddup2", (libc.Pointer, libc.Int, libc.Int))
_posix_spawn = _bind("posix_spawn", (libc.Pointer, libc.String, libc.Pointer, libc.Pointer,
                                     libc.Pointer, libc.Pointer))


def _address(buffer: bytearray) -> int:
    address: int = _ctypes.addressof(libc.Char.from_buffer(buffer))
    return address


def _string_array(items: list[bytes]) -> tuple[bytearray, list[bytearray]]:
    """A NULL-terminated ``char *[]`` of ``items``, and the buffers it points into (to be
    kept alive until the call returns). Raises ValueError for an item holding a NUL, which
    C would cut short there."""
    if any(b"\0" in item for item in items):
        raise ValueError("embedded null byte")
    strings = [bytearray(item + b"\0") for item in items]
    pointers = bytearray(struct.pack(f"{len(strings) + 1}P",
                                     *[_address(string) for string in strings], 0))
    return pointers, strings


def spawn(path: bytes, argv: list[bytes], env: list[bytes], *, terminal: bytes | None = None,
          ) -> int:
    """Start ``path`` with ``argv`` and ``env`` (``NAME=value`` items): every signal at its
    default disposition, none blocked; leading a new process group, or with ``terminal`` (a
    tty's path) a new session with that terminal opened as its controlling terminal and fds
    0-2. Returns the child's pid; raises OSError when the exec failed (glibc reports its
    errno), ValueError for a NUL byte in a path, an argument or the environment."""
    if b"\0" in path or (terminal is not None and b"\0" in terminal):
        raise ValueError("embedded null byte")
    attributes = bytearray(_OBJECT_SIZE)
    actions = bytearray(_OBJECT_SIZE)
    attr, file_actions = _address(attributes), _address(actions)
    _check(_attr_init(attr))
    try:
        flags = _SETSIGDEF | _SETSIGMASK | (_SETPGROUP if terminal is None else _SETSID)
        _check(_attr_setflags(attr, flags))
        _check(_attr_setsigdefault(attr, _ALL_SIGNALS))
        _check(_attr_setsigmask(attr, _NO_SIGNALS))
        if terminal is None:
            _check(_attr_setpgroup(attr, 0))
        _check(_actions_init(file_actions))
        try:
            if terminal is not None:
                _check(_actions_addopen(file_actions, 0, terminal, 0o2, 0))  # O_RDWR
                _check(_actions_adddup2(file_actions, 0, 1))
                _check(_actions_adddup2(file_actions, 0, 2))
            arguments, kept = _string_array(argv)
            environment, kept_too = _string_array(env)
            pid = bytearray(4)
            _check(_posix_spawn(_address(pid), path, file_actions, attr, _address(arguments),
                                _address(environment)))
            del kept, kept_too
            return int.from_bytes(pid, sys.byteorder, signed=True)
        finally:
            _actions_destroy(file_actions)
    finally:
        _attr_destroy(attr)


def _check(error: int) -> None:
    """posix_spawn and its helpers return an errno rather than setting it."""
    if error:
        raise OSError(error, os.strerror(error))
