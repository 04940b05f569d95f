"""The workload's output as JSON log records, written straight into the CLI's log sink.

Through structlog every captured line is a dictionary passed through the processor chain and
rendered on its own: microseconds a record, so a workload printing short lines fast saturated
the supervisor. Here one read of a pipe becomes records in a few operations done in C: the
lines are split at once, checked at once for anything JSON would have to escape, and joined
between a shared prefix and suffix, so a record costs about what copying its bytes costs. A
read whose bytes need escaping (quotes, controls, text that is not UTF-8) or whose lines are
longer than a record takes the careful path, one record at a time, with the same escaping as
the structlog path (``logs.json_text``).

The records are the ones ``--log-format json`` writes through structlog, byte for byte in the
same field order (``timestamp``, ``level``, ``event``, ``container``, ``source``, ``stream``,
``message``, ``partial``, and ``raw_base64`` for text that is not UTF-8), cut into lines and
pieces exactly as ``output.LineSplitter`` cuts them. What differs: the records of one read
share one timestamp (they arrived together), and a structlog configuration does not see
them. Only the CLI uses this (it owns its log sink and its structlog configuration); the
library sends captured output through the caller's structlog.
"""

from __future__ import annotations

import re

import orjson

from pyctr.protocol import utc_timestamp

from .logs import json_text
from .output import MAX_RECORD_BYTES, as_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .logfile import LogSink

# What a JSON string cannot hold as it is (quote, backslash, C0 controls), and what pyctr
# escapes besides (DEL, and the C1 controls as UTF-8): see logs.py. Not the newline: this
# is searched for in whole reads, whose lines are split at their newlines.
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x09\x0b-\x1f"\\\x7f]|\xc2[\x80-\x9f]')
# The ASCII bytes a JSON string holds as they are, and the newline, which splits lines.
_ASCII_SAFE = bytes([0x0A, 0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)])
_FINAL = b'","partial":false}\n'
_PARTIAL = b'","partial":true}\n'


def _plain(data: bytes) -> bool:
    """Whether every line of ``data`` goes into a JSON string as it is: valid UTF-8 with
    nothing to escape. ASCII is checked with a translate, far faster than a regex."""
    if data.isascii():
        return not data.translate(None, _ASCII_SAFE)
    if _NEEDS_ESCAPE.search(data) is not None:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class OutputRecords:
    """Turns the bytes read from each captured stream into records for ``sink``. ``feed``
    each read of a stream as it comes, ``finish`` the stream at its end of file (for a last
    line without a newline)."""

    def __init__(self, sink: LogSink, container: str, *, limit: int = MAX_RECORD_BYTES) -> None:
        if limit < 4:
            raise ValueError("limit must leave room for one UTF-8 character")
        self.sink = sink
        self.limit = limit
        self.container = container
        self._heads: dict[str, bytes] = {}
        self._pending: dict[str, bytes] = {}

    def _head(self, stream: str) -> bytes:
        """Everything of a record between its timestamp and its message."""
        head = self._heads.get(stream)
        if head is None:
            head = (b'","level":"info","event":"workload.output","container":'
                    + json_text(self.container) + b',"source":"workload","stream":'
                    + json_text(stream) + b',"message":')
            self._heads[stream] = head
        return head

    def feed(self, stream: str, data: bytes) -> None:
        pending = self._pending.get(stream, b"")
        buffer = pending + data if pending else data
        end = buffer.rfind(b"\n")
        out: list[bytes] = []
        prefix = b'{"timestamp":"' + utc_timestamp().encode() + self._head(stream)
        if end >= 0:
            self._lines(prefix, buffer[:end], out)
            buffer = buffer[end + 1:]
        if len(buffer) > self.limit:  # no newline yet: keep one record's worth at most
            buffer = self._pieces(prefix, buffer, out, final=False, plain=_plain(buffer))
        self._pending[stream] = buffer
        for records in out:
            self.sink.write_records(records)

    def finish(self, stream: str) -> None:
        """At end of file: the last line, even without its newline."""
        pending = self._pending.pop(stream, b"")
        if pending:
            out: list[bytes] = []
            prefix = b'{"timestamp":"' + utc_timestamp().encode() + self._head(stream)
            self._pieces(prefix, pending, out, final=True, plain=_plain(pending))
            for records in out:
                self.sink.write_records(records)

    def _lines(self, prefix: bytes, complete: bytes, out: list[bytes]) -> None:
        """Records for ``complete``, whole lines without their last newline."""
        lines = complete.split(b"\n")
        plain = _plain(complete)
        if plain and max(map(len, lines)) <= self.limit:
            opened = prefix + b'"'
            out.append(opened + (_FINAL + opened).join(lines) + _FINAL)
            return
        for line in lines:
            self._pieces(prefix, line, out, final=True, plain=plain)

    def _pieces(self, prefix: bytes, line: bytes, out: list[bytes], *, final: bool,
                plain: bool) -> bytes:
        """Records for ``line`` in pieces of at most ``limit`` bytes, cut between UTF-8
        characters, as LineSplitter cuts them; without ``final`` the tail that fits in one
        record is returned to wait for more. ``plain``: ``_plain`` of what ``line`` is part
        of (a cut between characters keeps it so)."""
        limit = self.limit
        start = 0  # an index, not a shrinking copy: each byte is copied once
        while len(line) - start > limit:
            cut = start + limit
            while cut > start + limit - 3 and line[cut] & 0xC0 == 0x80:
                cut -= 1  # do not cut a multi-byte character in two
            out.append(self._record(prefix, line[start:cut], partial=True, plain=plain))
            start = cut
        rest = line[start:] if start else line
        if final:
            out.append(self._record(prefix, rest, partial=False, plain=plain))
            return b""
        return rest

    def _record(self, prefix: bytes, piece: bytes, *, partial: bool, plain: bool) -> bytes:
        if plain or _plain(piece):
            return prefix + b'"' + piece + (_PARTIAL if partial else _FINAL)
        text, raw = as_text(piece)
        record = prefix + json_text(text) + (b',"partial":true' if partial
                                            else b',"partial":false')
        if raw is not None:
            record += b',"raw_base64":' + orjson.dumps(raw)
        return record + b"}\n"
