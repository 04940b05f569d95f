"""Framing and a small tagged binary encoding for message payloads.

Why not JSON: this module is imported by the supervisor before it forks the init, and
everything imported then sits on the path between the user pressing Enter and the workload
starting. ``json`` pulls in ``re`` (and with it ``enum``), a few milliseconds on these
machines; this encoder needs only ``struct``.

A frame is a 4-byte big-endian payload length followed by the payload. The payload is one
value in this encoding (tag byte, then data):

    N            None
    T / F        True / False
    i  int64     integer (big-endian, signed)
    u  uint64    integer above int64's range (rlimits' RLIM_INFINITY, seccomp arguments)
    s  u32 len   text, UTF-8 with lone surrogates kept (``surrogatepass``), so argv and
                 environment strings that Python decoded with ``surrogateescape`` round-trip
    l  u32 n     list of n values
    d  u32 n     n pairs of (text key, value)

The transport (a SOCK_SEQPACKET socketpair) keeps message boundaries on its own; the length
prefix makes them explicit in the bytes too, so a short read is detected as truncation rather
than misparsed.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeAlias

    Value: TypeAlias = "bool | int | str | list[Value] | dict[str, Value] | None"

# The errors decoding raises; it never raises anything else.


class ProtocolError(Exception):
    """Base class: the peer sent bytes that are not a valid message."""


class TruncatedMessage(ProtocolError):
    """The frame is shorter than its header, or than the length its header declares."""


class OversizedMessage(ProtocolError):
    """The frame declares (or has) more bytes than MAX_MESSAGE_SIZE."""


class MalformedMessage(ProtocolError):
    """The bytes are framed correctly but do not decode to a well-formed message."""


class UnknownMessage(ProtocolError):
    """The message names a type this side does not know."""


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version."""


MAX_MESSAGE_SIZE = 1 << 20
"""Largest payload either side accepts (bytes, excluding the 4-byte header)."""

HEADER_SIZE = 4
MAX_DEPTH = 16

_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_U64 = struct.Struct("!Q")
_UINT64_MAX = (1 << 64) - 1


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its length; refuse payloads the peer would reject."""
    if len(payload) > MAX_MESSAGE_SIZE:
        raise OversizedMessage(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return _U32.pack(len(payload)) + payload


def frame_size(head: bytes) -> int:
    """How many bytes to receive for the message whose first bytes (peeked) are ``head``:
    its declared size and one more, so that a frame carrying more than it declares is caught
    by ``unframe`` rather than cut to fit. Receiving into a buffer of the largest possible
    message instead costs a megabyte allocation per message, 50-100 us each here."""
    if len(head) < HEADER_SIZE:
        return HEADER_SIZE  # all of a message too short for its header; unframe says so
    length: int = _U32.unpack_from(head)[0]
    return HEADER_SIZE + min(length, MAX_MESSAGE_SIZE) + 1


def unframe(data: bytes) -> bytes:
    """Return the payload of exactly one frame."""
    if len(data) < HEADER_SIZE:
        raise TruncatedMessage(f"frame of {len(data)} bytes is shorter than its header")
    (length,) = _U32.unpack_from(data)
    if length > MAX_MESSAGE_SIZE:
        raise OversizedMessage(f"frame declares {length} bytes, limit is {MAX_MESSAGE_SIZE}")
    body = len(data) - HEADER_SIZE
    if body < length:
        raise TruncatedMessage(f"frame declares {length} bytes but carries {body}")
    if body > length:
        raise MalformedMessage(f"frame declares {length} bytes but carries {body}")
    return data[HEADER_SIZE:]


def encode_value(value: Value) -> bytes:
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Value, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("value nests too deeply to encode")
    if value is None:
        out.append(b"N")
    elif value is True:
        out.append(b"T")
    elif value is False:
        out.append(b"F")
    elif isinstance(value, int):
        if _INT64_MAX < value <= _UINT64_MAX:
            out.append(b"u" + _U64.pack(value))
            return
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        out.append(b"i" + _I64.pack(value))
    elif isinstance(value, str):
        _encode_text(value, out)
    elif isinstance(value, list):
        out.append(b"l" + _U32.pack(len(value)))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        out.append(b"d" + _U32.pack(len(value)))
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"dictionary key {key!r} is not text")
            _encode_text(key, out)
            _encode(item, out, depth + 1)
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def _encode_text(text: str, out: list[bytes]) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    out.append(b"s" + _U32.pack(len(raw)) + raw)


def decode_value(data: bytes) -> Value:
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise MalformedMessage(f"{len(data) - end} trailing bytes after the value")
    return value


def _need(data: bytes, pos: int, count: int) -> None:
    if pos + count > len(data):
        raise MalformedMessage(f"value runs past the end of the payload at byte {pos}")


def _decode(data: bytes, pos: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise MalformedMessage("value nests too deeply")
    _need(data, pos, 1)
    tag = data[pos]
    pos += 1
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x54:  # T
        return True, pos
    if tag == 0x46:  # F
        return False, pos
    if tag == 0x69:  # i
        _need(data, pos, 8)
        return _I64.unpack_from(data, pos)[0], pos + 8
    if tag == 0x75:  # u
        _need(data, pos, 8)
        value: int = _U64.unpack_from(data, pos)[0]
        if value <= _INT64_MAX:
            raise MalformedMessage(f"unsigned integer {value} should have been signed")
        return value, pos + 8
    if tag == 0x73:  # s
        return _decode_text(data, pos)
    if tag in (0x6C, 0x64):  # l, d
        _need(data, pos, 4)
        (count,) = _U32.unpack_from(data, pos)
        pos += 4
        # Every item takes at least one byte: a count larger than what is left is a lie,
        # and believing it would let a tiny frame make us loop for a long time.
        if count > len(data) - pos:
            raise MalformedMessage(f"container claims {count} items in {len(data) - pos} bytes")
        if tag == 0x6C:
            items: list[Value] = []
            for _ in range(count):
                item, pos = _decode(data, pos, depth + 1)
                items.append(item)
            return items, pos
        mapping: dict[str, Value] = {}
        for _ in range(count):
            _need(data, pos, 1)
            if data[pos] != 0x73:
                raise MalformedMessage("dictionary key is not text")
            key, pos = _decode_text(data, pos + 1)
            if key in mapping:
                raise MalformedMessage(f"duplicate dictionary key {key!r}")
            mapping[key], pos = _decode(data, pos, depth + 1)
        return mapping, pos
    raise MalformedMessage(f"unknown value tag 0x{tag:02x} at byte {pos - 1}")


def _decode_text(data: bytes, pos: int) -> tuple[str, int]:
    _need(data, pos, 4)
    (length,) = _U32.unpack_from(data, pos)
    pos += 4
    _need(data, pos, length)
    try:
        text = data[pos : pos + length].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"text is not UTF-8: {exc.reason}") from None
    return text, pos + length
