"""Installing a seccomp filter: the last thing init does before exec.

The program comes compiled (``pyctr.supervisor.seccomp``, with libseccomp, on the host side),
so init needs no library: one seccomp(2) call with a ``struct sock_fprog`` pointing at it.
The filter must come after no_new_privs (or while init still holds CAP_SYS_ADMIN), and it
must allow the execve that follows it.
"""

from __future__ import annotations

import _ctypes
import errno as errno_codes
import os
import struct

from . import libc
from .syscalls import SyscallError

SECCOMP_SET_MODE_FILTER = 1
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
FILTER_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}
_INSTRUCTION_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
_MAX_INSTRUCTIONS = 4096
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358, "s390x": 348,
                "i686": 354, "armv7l": 383}
_MACHINE = os.uname().machine


_Char = libc.Char


class _Pinned:
    """A copy of some bytes at an address that does not move while this object lives: a
    bytearray, which cannot be resized while a C object views its first byte."""

    def __init__(self, data: bytes) -> None:
        self.buffer = bytearray(data)
        self.view = _Char.from_buffer(self.buffer)
        self.address = _ctypes.addressof(self.view)


def filter_flags(names: list[str] | tuple[str, ...]) -> int:
    """seccomp(2)'s flags for ``linux.seccomp.flags`` (``SECCOMP_FILTER_FLAG_LOG``, ...)."""
    flags = 0
    for name in names:
        value = FILTER_FLAGS.get(name)
        if value is None:
            raise SyscallError(errno_codes.EINVAL, "seccomp flags", name)
        flags |= value
    return flags


def install_filter(program: bytes, flags: int = 0) -> None:
    """Install ``program`` (classic BPF, 8 bytes an instruction) as this thread's seccomp
    filter (every thread's, with SECCOMP_FILTER_FLAG_TSYNC). Uses prctl(PR_SET_SECCOMP)
    where seccomp(2) is missing (before Linux 3.17), which takes no flags."""
    count, rest = divmod(len(program), _INSTRUCTION_SIZE)
    if rest or not 0 < count <= _MAX_INSTRUCTIONS:
        raise SyscallError(errno_codes.EINVAL, "seccomp", f"a program of {len(program)} bytes")
    # struct sock_fprog points at the program, which stays put until this function returns
    # (the kernel copies it).
    pinned = _Pinned(program)
    fprog = struct.pack("@HP", count, pinned.address)
    number = _SYS_SECCOMP.get(_MACHINE)
    err = errno_codes.ENOSYS
    if number is not None:
        result = libc.syscall(number, SECCOMP_SET_MODE_FILTER, flags, fprog)
        if result == 0:
            return
        if result > 0:  # TSYNC: the id of a thread that could not take the filter
            raise SyscallError(errno_codes.EBUSY, "seccomp(SECCOMP_SET_MODE_FILTER)",
                               f"thread {result}")
        err = libc.errno()
    if err != errno_codes.ENOSYS:
        raise SyscallError(err, "seccomp(SECCOMP_SET_MODE_FILTER)")
    if flags:
        raise SyscallError(err, "seccomp(SECCOMP_SET_MODE_FILTER)",
                           f"flags 0x{flags:x} need seccomp(2)")
    pinned_fprog = _Pinned(fprog)  # a name, so that it lives through the call
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, pinned_fprog.address, 0, 0) != 0:
        raise SyscallError(libc.errno(), "prctl(PR_SET_SECCOMP)")
