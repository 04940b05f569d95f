"""Device access on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program made from the rules.

cgroup v2 has no devices controller: the kernel asks the BPF programs attached to the
process's cgroup (type BPF_CGROUP_DEVICE) whether a device node may be opened or made, and the
program answers 1 (allow) or 0 (deny). There is no compiler to hand, so the program is written
here, instruction by instruction; it is short and only ever has the one shape below.

The rules mean on v2 what they mean on v1: ``exceptions`` first works out the list of
exceptions the v1 kernel would hold after the same writes to devices.allow/devices.deny (a
default, allow or deny, and the entries that differ from it), and the program checks a
request against that list the way the v1 controller does. So a config gives the same devices
on either kind of host.

Loading goes through bpf(2) with ``_ctypes`` (already loaded by ``pyctr.linux.libc``) rather
than ``ctypes``, which would add a few milliseconds to every start on a v2 host. A failure is
``DeviceProgramError``, which the caller turns into its fallback (nodev mounts and a warning).
"""

from __future__ import annotations

import _ctypes
import errno as errno_codes
import os
import struct
import sys

from pyctr.linux import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .devices import DeviceRule

# linux/bpf.h
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, where access_type is
# (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*.
_ACCESS_BITS = {"m": 1, "r": 2, "w": 4}
_TYPE_BITS = {"b": 1, "c": 2}
_ALL_ACCESS = 7

# The license only decides whether GPL-only helpers may be called; this program calls no
# helper at all, so the kernel takes any string. pyctr's own license is the honest one.
LICENSE = b"MIT"


class DeviceProgramError(Exception):
    """The program could not be loaded or attached; ``str()`` is one line saying why."""


def access_bits(access: str) -> int:
    bits = 0
    for letter in access:
        bits |= _ACCESS_BITS[letter]
    return bits


def exceptions(rules: list[DeviceRule]) -> tuple[bool, list[tuple[str, int, int, int]]]:
    """(default allow, exceptions) after ``rules``, as the v1 devices controller keeps them.

    ``a`` sets the default and clears the list. Any other rule that agrees with the default
    takes its access away from the entry of the same type, major and minor (exactly those:
    ``c *:*`` is not ``c 1:3``); one that differs adds its access to that entry, or a new one.
    A new cgroup starts as its parent, which pyctr never restricts: allow everything."""
    default_allow = True
    entries: dict[tuple[str, int, int], int] = {}
    for rule in rules:
        if rule.type == "a":
            default_allow, entries = rule.allow, {}
            continue
        key = (rule.type, rule.major, rule.minor)
        bits = access_bits(rule.access)
        if rule.allow == default_allow:
            left = entries.get(key, 0) & ~bits
            if left:
                entries[key] = left
            else:
                entries.pop(key, None)
        else:
            entries[key] = entries.get(key, 0) | bits
    return default_allow, [(*key, bits) for key, bits in entries.items()]


# -- The program ---------------------------------------------------------------------------
#
# An instruction is 8 bytes: opcode, the two registers (4 bits each), a 16-bit offset and a
# 32-bit immediate. Only these opcodes are used:
_LDX_W = 0x61  # dst = *(u32 *)(src + off)
_MOV64_K = 0xB7  # dst = imm
_MOV32_X = 0xBC  # dst = src (32 bits)
_AND32_K = 0x54  # dst &= imm (32 bits)
_RSH32_K = 0x74  # dst >>= imm (32 bits)
_JNE32_K = 0x56  # if dst != imm (32-bit compare): skip off instructions
_JEQ32_K = 0x16  # if dst == imm (32-bit compare): skip off instructions
_EXIT = 0x95  # return r0
# The 32-bit compares (BPF_JMP32, Linux 5.1) take a major or minor up to 2**32 - 1 as it is;
# a 64-bit compare would sign-extend the immediate.
_BIG_ENDIAN = sys.byteorder == "big"


def _insn(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    regs = (dst << 4 | src) if _BIG_ENDIAN else (src << 4 | dst)
    if imm >= 1 << 31:
        imm -= 1 << 32  # the field is signed; the 32-bit ops read the same bits
    return struct.pack("=BBhi", opcode, regs, off, imm)


# Registers: r1 is the context on entry; r2 the device type, r3 the access asked for, r4 the
# major, r5 the minor; r6 scratch; r0 the answer.
_PROLOGUE = b"".join((
    _insn(_LDX_W, 2, 1, 0),  # r2 = ctx->access_type
    _insn(_MOV32_X, 3, 2),  # r3 = r2
    _insn(_AND32_K, 2, imm=0xFFFF),  # r2 = device type bits
    _insn(_RSH32_K, 3, imm=16),  # r3 = access bits
    _insn(_LDX_W, 4, 1, 4),  # r4 = ctx->major
    _insn(_LDX_W, 5, 1, 8),  # r5 = ctx->minor
))


def program(default_allow: bool, entries: list[tuple[str, int, int, int]]) -> bytes:
    """The instructions: one block per exception, tried in turn, each ending in the answer
    opposite to the default when the request falls in it; the default last. Every block is
    reachable (the verifier refuses dead code) and jumps only forward, to the next block."""
    code = [_PROLOGUE]
    for kind, major, minor, bits in entries:
        # A tuple is a "skip to the next block" test, (opcode, register, immediate): its
        # offset is known once the block is.
        block: list[bytes | tuple[int, int, int]] = [(_JNE32_K, 2, _TYPE_BITS[kind])]
        if major >= 0:
            block.append((_JNE32_K, 4, major))
        if minor >= 0:
            block.append((_JNE32_K, 5, minor))
        if default_allow:
            # denied when any bit asked for is in the entry: skip when none is
            block += [_insn(_MOV32_X, 6, 3), _insn(_AND32_K, 6, imm=bits), (_JEQ32_K, 6, 0)]
        elif bits != _ALL_ACCESS:
            # allowed when every bit asked for is in the entry: skip when one is not
            block += [_insn(_MOV32_X, 6, 3), _insn(_AND32_K, 6, imm=~bits & _ALL_ACCESS),
                      (_JNE32_K, 6, 0)]
        block += [_insn(_MOV64_K, 0, imm=0 if default_allow else 1), _insn(_EXIT)]
        for index, part in enumerate(block):
            if isinstance(part, tuple):
                opcode, register, value = part
                part = _insn(opcode, register, off=len(block) - index - 1, imm=value)
            code.append(part)
    code.append(_insn(_MOV64_K, 0, imm=1 if default_allow else 0))
    code.append(_insn(_EXIT))
    return b"".join(code)


def program_for(rules: list[DeviceRule]) -> bytes:
    return program(*exceptions(rules))


# -- Loading and attaching -----------------------------------------------------------------


_Char = libc.Char


def _view(data: bytearray) -> object:
    """A C array over ``data``'s own memory: its address can go into bpf_attr, and the
    kernel's writes (the verifier's log) land in ``data``."""
    array = type("Buffer", (_ctypes.Array,), {"_type_": _Char, "_length_": len(data)})
    return array.from_buffer(data)  # type: ignore[attr-defined]


def _bpf(command: int, attr: bytearray) -> int:
    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(errno_codes.ENOSYS, "bpf(2) number unknown on this architecture")
    result = libc.syscall(number, command, _view(attr), len(attr))
    if result < 0:
        err = libc.errno()
        raise OSError(err, os.strerror(err))
    return result


def _load(code: bytes, log: bytearray | None) -> int:
    insns = bytearray(code)
    license = bytearray(LICENSE + b"\0")
    views = [_view(insns), _view(license)]
    log_view = _view(log) if log else None
    attr = bytearray(struct.pack(
        "=IIQQIIQII16sII", _BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
        _ctypes.addressof(views[0]), _ctypes.addressof(views[1]),  # type: ignore[arg-type]
        1 if log else 0, len(log) if log else 0,
        _ctypes.addressof(log_view) if log_view is not None else 0,  # type: ignore[arg-type]
        0, 0, b"pyctr_devices", 0, 0))
    return _bpf(_BPF_PROG_LOAD, attr)


def load(code: bytes) -> int:
    """Load the program; returns its descriptor (the caller closes it). On refusal the
    verifier's last line is in the error."""
    try:
        return _load(code, None)
    except OSError as exc:
        first = exc
    if first.errno in (errno_codes.EINVAL, errno_codes.EACCES):
        log = bytearray(1 << 16)
        try:
            os.close(_load(code, log))  # loads the second time: report the first failure
        except OSError:
            pass
        # The reason is the last line before the verifier's statistics ("processed N insns").
        text = bytes(log).split(b"\0", 1)[0].decode(errors="replace")
        lines = [line for line in text.splitlines()
                 if line.strip() and not line.startswith(("processed ", "verification time"))]
        if lines:
            raise DeviceProgramError(f"the kernel refused the device program "
                                     f"({first.strerror}): {lines[-1]}") from None
    reason = {errno_codes.ENOSYS: "the kernel has no bpf(2)",
              errno_codes.EPERM: "not permitted (needs CAP_BPF or CAP_SYS_ADMIN)"}.get(
        first.errno or 0, first.strerror)
    raise DeviceProgramError(f"cannot load a BPF device program: {reason}") from None


def attach(cgroup_dir: str, program_fd: int) -> None:
    """Attach to the cgroup2 directory ``cgroup_dir``. BPF_F_ALLOW_MULTI, as systemd uses for
    its own device programs: every program from the root down must then allow a request, so
    a container never gets more than its ancestors. The cgroup holds the program from here
    on; it goes with the cgroup's directory."""
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DeviceProgramError(f"cannot open cgroup {cgroup_dir}: {exc.strerror}") from None
    try:
        attr = bytearray(struct.pack("=IIIII", dir_fd, program_fd, _BPF_CGROUP_DEVICE,
                                     _BPF_F_ALLOW_MULTI, 0))
        _bpf(_BPF_PROG_ATTACH, attr)
    except OSError as exc:
        raise DeviceProgramError(f"cannot attach the BPF device program to {cgroup_dir}: "
                                 f"{exc.strerror}") from None
    finally:
        os.close(dir_fd)


def apply(cgroup_dir: str, rules: list[DeviceRule]) -> None:
    """Load the program for ``rules`` and attach it to ``cgroup_dir``. Raises
    DeviceProgramError."""
    program_fd = load(program_for(rules))
    try:
        attach(cgroup_dir, program_fd)
    finally:
        os.close(program_fd)
