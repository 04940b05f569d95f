"""Compiling a ``linux.seccomp`` into the BPF program init installs, with libseccomp.

Why libseccomp, through ``_ctypes``: the program must dispatch on the architecture, tell x32
calls from x86_64 ones, see through i386's socketcall multiplexer, and know every system
call's number on every architecture. libseccomp does all of that and is on every distribution
that runs containers; writing the BPF by hand would mean maintaining syscall tables too. No
Python binding of it is packaged, and the few functions needed are bound here the way
``pyctr.linux.libc`` binds libc's: through ``_ctypes``, because ``import ctypes`` alone costs
about 2 ms and a cached program (below) should cost less than that to fetch.

Why the ENOSYS rules: a profile is a list of the calls someone knew when they wrote it. A libc
newer than the profile tries a newer call first (clone3, faccessat2, fchmodat2, ...) and falls
back to the old one only when it gets ENOSYS; the profile's default action, EPERM, reads as
"refused" and the program fails (runc PR 2746). So a call the profile cannot know, because its
number is higher than any it names, must fail with ENOSYS, while a call the profile knows and
does not allow still gets the default action. libseccomp has no rule for "every number above
N", and runc gets one by patching a hand-written stub in front of libseccomp's program. Here,
instead, every such number gets its own ordinary ERRNO(ENOSYS) rule, so the whole program is
still libseccomp's: from one above the highest number the profile names to the end of the
architecture's table (1023; 511 for x32, whose compatibility block starts at 512). With
``SCMP_FLTATR_CTL_OPTIMIZE`` 2 libseccomp sorts the rules into a binary tree, so the extra
rules cost a few comparisons per call, not a scan. The default profile comes to ~1,900 of
the kernel's 4,096 instructions on x86_64 with its x86 and x32 sub-architectures (~1,250
with the window ending at 511; every program is checked against the limit). Numbers past
1023 get the default action: Linux is near 470, and will skip x32's 512-547 when it gets
there.

Each architecture gets its own libseccomp context, merged at the end, because the window of
unknown numbers differs per architecture and a rule in a context with several architectures
applies to all of them. One limit of libseccomp 2.5: in a context of another architecture
than the machine's, it reads a rule's number as the machine's and translates it through the
call's name, so a number with no name cannot be given there. For x86 and x32 on an x86_64
host (arm on aarch64) the ENOSYS window therefore covers the calls libseccomp's table names;
past its table, those programs get the default action. The machine's own architecture, which
nearly every program in a container uses, is covered number by number. A call from an
architecture the filter does not list at all also gets ENOSYS (the bad-architecture action).

Why the cache: compiling the default profile takes ~30 ms on a small VM (libseccomp builds
and sorts ~1,300 rules; half of the time is the ENOSYS window), against ~0.3 ms to check the
value, hash it and read the program back (~0.7 ms with loading libseccomp). The same
``linux.seccomp`` on the same libseccomp and architecture always gives the same program, so
it is kept in ``/run/pyctr/seccomp`` (root's, 0700; files 0600, written whole and renamed
into place; /run is emptied at boot). Anything wrong with the cache only means compiling
again.
"""

from __future__ import annotations

import _ctypes
import os
import struct
import sys

from pyctr.linux import libc
from pyctr.spec.model import SpecError
from pyctr.spec.seccomp import check_linux_seccomp, native_architecture

from .errors import PyctrError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from pyctr.protocol.codec import Value

CACHE_DIR = "/run/pyctr/seccomp"
LIBRARY = "libseccomp.so.2"
BPF_MAXINSNS = 4096
"""The kernel's limit on one classic BPF program."""
INSTRUCTION_SIZE = 8
"""sizeof(struct sock_filter)."""
_COMPILER_VERSION = b"pyctr-seccomp-1"
"""Part of every cache key: change it when the program compiled from a spec changes."""

_ENOSYS = 38
_EPERM = 1
_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,  # | errno
    "SCMP_ACT_TRACE": 0x7FF00000,  # | message for the tracer
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_OPERATORS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
              "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# enum scmp_filter_attr
_ATTR_ACT_BADARCH = 2
_ATTR_CTL_NNP = 3
_ATTR_CTL_OPTIMIZE = 8
# Where each architecture's table of ordinary calls lies: (first number, size). Numbers
# above the profile's highest inside it get ENOSYS. x32's calls carry bit 30, and its own
# compatibility entries start at 512; MIPS's three ABIs count from 4000, 5000 and 6000.
_TABLES = {
    "SCMP_ARCH_X32": (0x40000000, 512),
    "SCMP_ARCH_MIPS": (4000, 1000), "SCMP_ARCH_MIPSEL": (4000, 1000),
    "SCMP_ARCH_MIPS64": (5000, 1000), "SCMP_ARCH_MIPSEL64": (5000, 1000),
    "SCMP_ARCH_MIPS64N32": (6000, 1000), "SCMP_ARCH_MIPSEL64N32": (6000, 1000),
}
_TABLE = (0, 1024)
_ARG = struct.Struct("=IIQQ")
"""struct scmp_arg_cmp: argument index, operator, datum_a, datum_b."""


_Int, _UInt, _ULong, _String, _Pointer, _Char = (libc.Int, libc.UInt, libc.ULong,
                                                 libc.String, libc.Pointer, libc.Char)


class _Version(_ctypes.Array):  # type: ignore[type-arg]
    """struct scmp_version: major, minor, micro."""

    _type_ = _UInt
    _length_ = 3


_CONTEXT, _ARCH, _NAME, _NUMBER = _Pointer, _UInt, _String, _Int  # C types, by role
# attribute: (C function, result type, argument types); libc's free and strlen are the
# process's (None).
_SIGNATURES: dict[str, tuple[str | None, str, type, tuple[type, ...]]] = {
    "version": (LIBRARY, "seccomp_version", _Pointer, ()),
    "init": (LIBRARY, "seccomp_init", _CONTEXT, (_UInt,)),
    "release": (LIBRARY, "seccomp_release", _Int, (_CONTEXT,)),
    "arch_add": (LIBRARY, "seccomp_arch_add", _Int, (_CONTEXT, _ARCH)),
    "arch_remove": (LIBRARY, "seccomp_arch_remove", _Int, (_CONTEXT, _ARCH)),
    "arch_native": (LIBRARY, "seccomp_arch_native", _ARCH, ()),
    "arch_resolve_name": (LIBRARY, "seccomp_arch_resolve_name", _ARCH, (_NAME,)),
    "attr_set": (LIBRARY, "seccomp_attr_set", _Int, (_CONTEXT, _Int, _UInt)),
    "resolve_name": (LIBRARY, "seccomp_syscall_resolve_name", _NUMBER, (_NAME,)),
    "resolve_name_arch": (LIBRARY, "seccomp_syscall_resolve_name_arch", _NUMBER,
                          (_ARCH, _NAME)),
    "resolve_num_arch": (LIBRARY, "seccomp_syscall_resolve_num_arch", _Pointer,
                         (_ARCH, _NUMBER)),
    # (context, action, syscall, argument count, struct scmp_arg_cmp array)
    "rule_add_array": (LIBRARY, "seccomp_rule_add_array", _Int,
                       (_CONTEXT, _UInt, _NUMBER, _UInt, _Pointer)),
    "rule_add_exact_array": (LIBRARY, "seccomp_rule_add_exact_array", _Int,
                             (_CONTEXT, _UInt, _NUMBER, _UInt, _Pointer)),
    "merge": (LIBRARY, "seccomp_merge", _Int, (_CONTEXT, _CONTEXT)),
    "export_bpf": (LIBRARY, "seccomp_export_bpf", _Int, (_CONTEXT, _Int)),
    "free": (None, "free", _Int, (_Pointer,)),
    "strlen": (None, "strlen", _ULong, (_Pointer,)),
}


class _Libseccomp:
    """libseccomp, loaded once per process on first use. Each function is bound when first
    called (a cached program needs only the version); each takes ints and bytes and returns
    a C int, or a pointer as an int (None for NULL)."""

    version: Callable[[], int]
    init: Callable[[int], int | None]
    release: Callable[[int], int]
    arch_add: Callable[[int, int], int]
    arch_remove: Callable[[int, int], int]
    arch_native: Callable[[], int]
    arch_resolve_name: Callable[[bytes], int]
    attr_set: Callable[[int, int, int], int]
    resolve_name: Callable[[bytes], int]
    resolve_name_arch: Callable[[int, bytes], int]
    resolve_num_arch: Callable[[int, int], int | None]
    rule_add_array: Callable[[int, int, int, int, bytes | None], int]
    rule_add_exact_array: Callable[[int, int, int, int, bytes | None], int]
    merge: Callable[[int, int], int]
    export_bpf: Callable[[int, int], int]
    free: Callable[[int], int]
    strlen: Callable[[int], int]

    def __init__(self) -> None:
        try:
            handle = _ctypes.dlopen(LIBRARY, _ctypes.RTLD_LOCAL)
        except OSError as exc:
            raise PyctrError(f"linux.seccomp: cannot load {LIBRARY} ({exc}); install "
                             f"libseccomp2, or run with --security-opt seccomp=unconfined",
                             error="config.invalid") from None
        process = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]
        self._sources = {LIBRARY: type("libseccomp", (), {"_handle": handle}),
                         None: type("process", (), {"_handle": process})}
        self._types: dict[tuple[type, tuple[type, ...]], type] = {}
        major, minor, micro = _Version.from_address(self.version())
        self.version_text = f"{major}.{minor}.{micro}"

    def __getattr__(self, attribute: str) -> Callable[..., int]:
        try:
            source, name, result, arguments = _SIGNATURES[attribute]
        except KeyError:
            raise AttributeError(attribute) from None
        function_type = self._types.get((result, arguments))
        if function_type is None:
            function_type = type("CFunction", (_ctypes.CFuncPtr,), {
                "_flags_": _ctypes.FUNCFLAG_CDECL, "_restype_": result,
                "_argtypes_": arguments})
            self._types[result, arguments] = function_type
        function: Callable[..., int] = function_type((name, self._sources[source]))
        setattr(self, attribute, function)
        return function

    def string(self, address: int) -> bytes:
        """The C string at ``address``, which is then freed."""
        try:
            chars: Any = type("Chars", (_ctypes.Array,), {"_type_": _Char,
                                                         "_length_": self.strlen(address)})
            text: bytes = chars.from_address(address).raw
            return text
        finally:
            self.free(address)


_library: _Libseccomp | None = None


def _libseccomp() -> _Libseccomp:
    global _library
    if _library is None:
        _library = _Libseccomp()
    return _library


def libseccomp_version() -> str:
    """``2.5.4``; PyctrError if libseccomp cannot be loaded."""
    return _libseccomp().version_text


# -- The cache ----------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    # The interpreter's own module: hashlib would load OpenSSL first, ~3 ms.
    try:
        module = __import__("_sha2" if sys.version_info >= (3, 12) else "_sha256")
    except ImportError:
        import hashlib

        return hashlib.sha256(data).hexdigest()
    return str(module.sha256(data).hexdigest())


def cache_key(linux_seccomp: Mapping[str, Value], version: str, machine: str) -> str:
    """The name of the cached program for this ``linux.seccomp``, libseccomp ``version`` and
    ``machine``. The value's ``repr``: exact for these JSON shapes, and made in C (sorting
    the keys in Python took 1.5 ms of every start); the same value with its keys in another
    order is another key, which costs one compile, never a wrong program."""
    data = b"\0".join((_COMPILER_VERSION, version.encode(), machine.encode(),
                       repr(dict(linux_seccomp)).encode()))
    return _sha256(data)


def _valid_size(size: int) -> bool:
    return 0 < size <= BPF_MAXINSNS * INSTRUCTION_SIZE and size % INSTRUCTION_SIZE == 0


def _cache_directory(cache_dir: str) -> bool:
    """Make ``cache_dir`` (0700) if needed; True if it is ours and nobody else can write."""
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        status = os.lstat(cache_dir)
    except OSError:
        return False
    return (status.st_uid == os.geteuid() and not status.st_mode & 0o022
            and (status.st_mode & 0o170000) == 0o040000)


def _read_cached(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        status = os.fstat(fd)
        if (status.st_uid != os.geteuid() or status.st_mode & 0o077
                or not _valid_size(status.st_size)):
            return None
        program = os.pread(fd, status.st_size + 1, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    return program if len(program) == status.st_size else None


def _write_cached(path: str, program: bytes) -> None:
    temporary = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        try:
            view = memoryview(program)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


# -- Compiling ----------------------------------------------------------------------------


def compile_filter(linux_seccomp: Mapping[str, Value], *,
                   cache_dir: str | None = CACHE_DIR) -> bytes:
    """The classic BPF program (``struct sock_filter`` after ``struct sock_filter``, 8 bytes
    each) for ``linux_seccomp`` on this machine, from the cache in ``cache_dir`` when it
    holds it (None: no cache). PyctrError (``config.invalid``) naming the field when the
    value is not a valid ``linux.seccomp`` (``check_linux_seccomp``), libseccomp is missing
    or refuses a rule, or the program is too long for the kernel."""
    # Remembered only beside the shared cache (tests give caches of their own to damage).
    text = repr(dict(linux_seccomp)) if cache_dir == CACHE_DIR else ""
    program = _compiled.get(text) if text else None
    if program is not None:  # this process compiled or read it already (the library)
        return program
    try:
        check_linux_seccomp(dict(linux_seccomp))
    except SpecError as exc:
        raise PyctrError(str(exc), error="config.invalid") from None
    library = _libseccomp()
    path = None
    if cache_dir is not None and _cache_directory(cache_dir):
        key = cache_key(linux_seccomp, library.version_text, os.uname().machine)
        path = f"{cache_dir}/{key}.bpf"
        program = _read_cached(path)
    if program is None:
        program = _Compiler(library, linux_seccomp).compile()
        if path is not None:
            _write_cached(path, program)
    if text:
        if len(_compiled) >= _REMEMBERED:
            _compiled.clear()
        _compiled[text] = program
    return program


_compiled: dict[str, bytes] = {}
"""Programs this process has compiled or read from the cache, by their value's repr."""
_REMEMBERED = 16


def _action(name: Value, errno: Value) -> int:
    value = _ACTIONS[str(name)]
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        value |= (errno if isinstance(errno, int) else _EPERM) & 0xFFFF
    return value


class _Compiler:
    """One ``linux.seccomp`` compiled: a libseccomp context per architecture, merged."""

    def __init__(self, library: _Libseccomp, linux_seccomp: Mapping[str, Value]) -> None:
        self.library = library
        self.spec = linux_seccomp
        self.default = _action(linux_seccomp.get("defaultAction"),
                               linux_seccomp.get("defaultErrnoRet"))
        self.enosys = _ACTIONS["SCMP_ACT_ERRNO"] | _ENOSYS
        rules = linux_seccomp.get("syscalls")
        self.rules = [rule for rule in rules if isinstance(rule, dict)] \
            if isinstance(rules, list) else []
        self.names = sorted({name for rule in self.rules for name in _texts(rule.get("names"))})

    def fail(self, field: str, problem: str) -> PyctrError:
        return PyctrError(f"linux.seccomp{field}: {problem}", error="config.invalid")

    def architectures(self) -> list[tuple[str, str, int]]:
        """(field, name, libseccomp token) of each architecture, the machine's first (which
        libseccomp keeps in every filter, listed or not)."""
        native = self.library.arch_native()
        chosen = [(".architectures", native_architecture(), native)]
        for index, name in enumerate(_texts(self.spec.get("architectures"))):
            field = f".architectures[{index}]"
            token = self.library.arch_resolve_name(
                name.removeprefix("SCMP_ARCH_").lower().encode())
            if not token:
                raise self.fail(field, f"libseccomp {self.library.version_text} does not "
                                       f"know {name}")
            if token == native:
                chosen[0] = (field, name, native)
            elif token not in (known for _, _, known in chosen):
                chosen.append((field, name, token))
        return chosen

    def compile(self) -> bytes:
        contexts: list[int] = []
        try:
            for field, name, token in self.architectures():
                contexts.append(self.context(field, name, token, native=not contexts))
            merged = contexts[0]
            while len(contexts) > 1:
                result = self.library.merge(merged, contexts[-1])
                if result < 0:
                    raise self.fail(".architectures", f"libseccomp cannot put these "
                                    f"architectures in one filter: {os.strerror(-result)}")
                contexts.pop()  # merged into the first, and freed by libseccomp
            return self.export(merged)
        finally:
            for context in contexts:
                self.library.release(context)

    def context(self, field: str, arch: str, token: int, native: bool) -> int:
        library = self.library
        context = library.init(self.default)
        if not context:
            raise self.fail(".defaultAction", "libseccomp refused it")
        try:
            if not native:
                result = library.arch_add(context, token)
                if result < 0:
                    raise self.fail(field, f"libseccomp cannot put {arch} in one filter with "
                                           f"this machine's architecture: "
                                           f"{os.strerror(-result)}")
                self.check(library.arch_remove(context, library.arch_native()), field,
                           "removing this machine's architecture")
            self.check(library.attr_set(context, _ATTR_CTL_NNP, 0), "", "no_new_privs off")
            self.check(library.attr_set(context, _ATTR_ACT_BADARCH, self.enosys), "",
                       "bad-architecture action")
            library.attr_set(context, _ATTR_CTL_OPTIMIZE, 2)  # a binary tree, if it can
            for index, rule in enumerate(self.rules):
                self.add(context, token, index, rule)
            self.add_enosys(context, token, arch, native)
        except BaseException:
            library.release(context)
            raise
        return context

    def check(self, result: int, field: str, what: str) -> None:
        if result < 0:
            raise self.fail(field, f"libseccomp refused {what}: {os.strerror(-result)}")

    def add(self, context: int, token: int, index: int, rule: Mapping[str, Value]) -> None:
        action = _action(rule.get("action"), rule.get("errnoRet"))
        if action == self.default:
            return  # named for the ENOSYS window only; libseccomp refuses such a rule
        arguments, count = self.arguments(index, rule.get("args"))
        for position, name in enumerate(_texts(rule.get("names"))):
            raw = name.encode()
            if self.library.resolve_name_arch(token, raw) < 0:
                continue  # not a call of this architecture, or unknown to libseccomp
            result = self.library.rule_add_array(context, action,
                                                 self.library.resolve_name(raw),
                                                 count, arguments)
            if result < 0:
                raise self.fail(f".syscalls[{index}].names[{position}]",
                                f"libseccomp refused the rule for {name}: "
                                f"{os.strerror(-result)}")

    def arguments(self, index: int, args: Value) -> tuple[bytes | None, int]:
        if not isinstance(args, list) or not args:
            return None, 0
        packed = []
        seen: set[int] = set()
        for position, arg in enumerate(args):
            assert isinstance(arg, dict)
            number = arg.get("index")
            assert isinstance(number, int)
            if number in seen:
                raise self.fail(f".syscalls[{index}].args[{position}]",
                                f"argument {number} is compared twice in one rule, which "
                                f"libseccomp cannot do; split the rule")
            seen.add(number)
            value, value_two = arg.get("value", 0), arg.get("valueTwo", 0)
            packed.append(_ARG.pack(number, _OPERATORS[str(arg.get("op"))],
                                    value if isinstance(value, int) else 0,
                                    value_two if isinstance(value_two, int) else 0))
        return b"".join(packed), len(packed)

    def add_enosys(self, context: int, token: int, arch: str, native: bool) -> None:
        """ERRNO(ENOSYS) for each number above the highest the profile names."""
        if self.default in (_ACTIONS["SCMP_ACT_ALLOW"], _ACTIONS["SCMP_ACT_LOG"],
                            self.enosys):
            return  # unknown calls already reach the kernel, which says ENOSYS itself
        library = self.library
        first, size = _TABLES.get(arch, _TABLE)
        highest = -1
        for name in self.names:
            number = library.resolve_name_arch(token, name.encode()) - first
            if 0 <= number < size:
                highest = max(highest, number)
        for number in range(first + highest + 1, first + size):
            if native:
                result = library.rule_add_exact_array(context, self.enosys, number, 0, None)
            else:
                address = library.resolve_num_arch(token, number)
                if not address:
                    continue  # libseccomp cannot name it here (see the module's notes)
                found = library.string(address)
                result = library.rule_add_array(context, self.enosys,
                                                library.resolve_name(found), 0, None)
            if result < 0:
                raise self.fail("", f"libseccomp refused an ENOSYS rule for call {number} "
                                    f"on {arch or 'this machine'}: {os.strerror(-result)}")

    def export(self, context: int) -> bytes:
        fd = os.memfd_create("pyctr-seccomp", os.MFD_CLOEXEC)
        try:
            result = self.library.export_bpf(context, fd)
            if result < 0:
                raise self.fail("", f"libseccomp could not write the program: "
                                    f"{os.strerror(-result)}")
            size = os.fstat(fd).st_size
            program = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        if len(program) > BPF_MAXINSNS * INSTRUCTION_SIZE:
            raise self.fail("", f"the filter compiles to {len(program) // INSTRUCTION_SIZE} "
                                f"BPF instructions, more than the kernel's {BPF_MAXINSNS}; "
                                f"name fewer system calls or architectures")
        if not _valid_size(len(program)):
            raise self.fail("", f"libseccomp wrote a program of {len(program)} bytes")
        return program


def _texts(value: Value) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
