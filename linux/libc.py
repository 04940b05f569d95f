"""The C library functions pyctr calls that Python's ``os`` does not wrap, bound through
``_ctypes``.

``import ctypes`` costs ~2 ms here (it builds some thirty C type classes, ``struct`` and
``types`` come along), and the CLI pays it before every workload starts, since init needs
mount(2) and friends. ``_ctypes``, the C module under it, can call a C function on its own
once it is told the argument and result types; the few types below are all these calls use.
Every function here takes ints and bytes (None for a NULL pointer), returns the C result as an
int, and leaves the C ``errno`` of the call for ``errno()``.
"""

from __future__ import annotations

import _ctypes
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "i"


class _Long(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "l"


class _ULong(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "L"


class _String(_ctypes._SimpleCData):  # type: ignore[type-arg]
    """``const char *``: bytes, or None for NULL."""

    _type_ = "z"


class _Pointer(_ctypes._SimpleCData):  # type: ignore[type-arg]
    """``void *``: bytes, or an int (None for NULL)."""

    _type_ = "P"


class _UInt(_ctypes._SimpleCData):  # type: ignore[type-arg]
    _type_ = "I"


class _Char(_ctypes._SimpleCData):  # type: ignore[type-arg]
    """``char``: with ``from_buffer``, the address of a bytearray's first byte."""

    _type_ = "c"


# The C types, for the other modules that bind a library through _ctypes (libseccomp, bpf).
Int, UInt, Long, ULong, String, Pointer, Char = (_Int, _UInt, _Long, _ULong, _String,
                                                 _Pointer, _Char)


class _Process:
    """Where symbols are looked up: the running program and what it has loaded (libc)."""

    _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]


_function_types: dict[tuple[type, tuple[type, ...] | None], type] = {}


def _bind(name: str, result: type, arguments: tuple[type, ...] | None) -> Callable[..., int]:
    """The C function ``name``; ``arguments`` None for a variadic one (Python ints and bytes
    then pass as C ints and pointers). One function type per signature: making a type is
    most of the cost."""
    function_type = _function_types.get((result, arguments))
    if function_type is None:
        namespace: dict[str, object] = {
            "_flags_": _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO,
            "_restype_": result,
        }
        if arguments is not None:
            namespace["_argtypes_"] = arguments
        function_type = type("CFunction", (_ctypes.CFuncPtr,), namespace)
        _function_types[result, arguments] = function_type
    function: Callable[..., int] = function_type((name, _Process))
    return function


bind = _bind
"""For the modules that bind more of the C library the same way (``spawn``)."""

mount: Callable[[bytes | None, bytes, bytes | None, int, bytes | None], int] = _bind(
    "mount", _Int, (_String, _String, _String, _ULong, _String))
umount2: Callable[[bytes, int], int] = _bind("umount2", _Int, (_String, _Int))
unshare: Callable[[int], int] = _bind("unshare", _Int, (_Int,))
setns: Callable[[int, int], int] = _bind("setns", _Int, (_Int, _Int))
sethostname: Callable[[bytes, int], int] = _bind("sethostname", _Int, (_String, _ULong))
prctl: Callable[[int, int, int, int, int], int] = _bind(
    "prctl", _Int, (_Int, _ULong, _ULong, _ULong, _ULong))
prctl_string: Callable[[int, bytes, int, int, int], int] = _bind(
    "prctl", _Int, (_Int, _String, _ULong, _ULong, _ULong))
"""prctl with a string second argument (PR_SET_NAME)."""
signalfd: Callable[[int, bytes, int], int] = _bind("signalfd", _Int, (_Int, _Pointer, _Int))
"""signalfd(fd, mask, flags); the mask is the bytes of a sigset_t."""
syscall: Callable[..., int] = _bind("syscall", _Long, None)
"""syscall(number, ...), for the calls glibc does not wrap."""

_WORD = _ctypes.sizeof(_ULong)
_BYTE_ORDER = sys.byteorder


def sigset(signals: tuple[int, ...] | frozenset[int]) -> bytes:
    """The bytes of a ``sigset_t`` (1024 bits, in unsigned longs) holding ``signals``, built
    by hand: glibc's sigaddset() refuses the two signals it keeps for itself (32, 33), but
    the set signalfd takes may name them."""
    words = [0] * (1024 // (8 * _WORD))
    for signum in signals:
        words[(signum - 1) // (8 * _WORD)] |= 1 << ((signum - 1) % (8 * _WORD))
    return b"".join(word.to_bytes(_WORD, _BYTE_ORDER) for word in words)


def errno() -> int:
    """The C errno left by the last call above in this thread."""
    return _ctypes.get_errno()
