"""The workload's output as log records (``--capture-output``).

The init's stdout and stderr (inherited by the workload and everything it starts) are the
write ends of two pipes; the supervisor reads the other ends. ``LineSplitter`` turns the byte
stream into lines: it reassembles lines across reads, emits a last line that has no newline,
and splits a line longer than ``MAX_RECORD_BYTES`` into pieces marked ``partial`` (the last
piece of a line is not partial), so a workload that never writes a newline cannot make us
hold unbounded memory. A piece that is not valid UTF-8 is kept losslessly: its text has
U+FFFD where bytes were invalid, and ``raw_base64`` carries the exact bytes.

Nothing is lost: a pipe is read until end-of-file, and end-of-file comes only when every
process of the container has exited. Once the workload has exited the init reports and exits,
and the kernel kills whatever else is left in the PID namespace (a daemonised grandchild
included), so what it wrote up to then is read and the run ends. The readers are shielded from
cancellation for the same reason: they end by themselves once the container is gone.
"""

from __future__ import annotations

import functools
import os

import trio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .records import OutputRecords

MAX_RECORD_BYTES = 16 * 1024
"""Longest piece of a line in one record, like docker's json-file driver (16 KiB)."""

READ_SIZE = 64 * 1024
"""One read of a pipe (whose buffer is 1 MiB, so the workload can write ahead of us)."""
SPLIT_SIZE = 16 * 1024
"""What the splitter gets at a time. Every piece of a read is alive until the read is done:
reading 1 MiB of two-byte lines at once meant half a million of them (a 67 MB supervisor);
16 KiB of them is well under 1 MB."""


class LineSplitter:
    """Bytes in, ``(piece, partial)`` out; pure, no I/O."""

    def __init__(self, limit: int = MAX_RECORD_BYTES) -> None:
        if limit < 4:
            raise ValueError("limit must leave room for one UTF-8 character")
        self.limit = limit
        self.pending = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        pieces: list[tuple[bytes, bool]] = []
        buffer = self.pending + data if self.pending else data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._split(buffer[start:end], pieces, final=True)
            start = end + 1
        rest = buffer[start:]
        # Without a newline, keep at most one record's worth; the rest goes out as partial.
        self.pending = self._split(rest, pieces, final=False) if len(rest) > self.limit else rest
        return pieces

    def flush(self) -> list[tuple[bytes, bool]]:
        """At end of file: the last line, even without a newline."""
        pieces: list[tuple[bytes, bool]] = []
        if self.pending:
            self._split(self.pending, pieces, final=True)
            self.pending = b""
        return pieces

    def _split(self, line: bytes, pieces: list[tuple[bytes, bool]], *, final: bool) -> bytes:
        """Append ``line`` in pieces of at most ``limit`` bytes, cut between UTF-8 characters.
        With ``final`` every piece is appended (the last as not partial); otherwise the tail
        that fits in one record is returned to wait for more."""
        while len(line) > self.limit:
            cut = self.limit
            while cut > self.limit - 3 and line[cut] & 0xC0 == 0x80:
                cut -= 1  # do not cut a multi-byte character in two
            pieces.append((line[:cut], True))
            line = line[cut:]
        if final:
            pieces.append((line, False))
            return b""
        return line


def as_text(piece: bytes) -> tuple[str, str | None]:
    """The piece as text, and its exact bytes in base64 when it is not valid UTF-8."""
    try:
        return piece.decode("utf-8"), None
    except UnicodeDecodeError:
        import base64  # only for the rare line that is not UTF-8

        return piece.decode("utf-8", "replace"), base64.b64encode(piece).decode("ascii")


async def read_to_end(fd: int, consume: Callable[[bytes], None]) -> None:
    """Read ``fd`` (non-blocking) to end of file, handing each read to ``consume``; close it.
    Shielded from cancellation: it ends by itself once every process of the container that
    held the pipe is gone, and what they wrote must not be lost."""
    with trio.CancelScope(shield=True):
        try:
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
                    continue
                if not data:
                    return
                consume(data)
                await trio.lowlevel.checkpoint()  # a chatty workload must not starve the rest
        finally:
            os.close(fd)


async def collect(fd: int, into: bytearray) -> None:
    """For the library's ``capture_stdout``/``capture_stderr``: the bytes as they are."""
    await read_to_end(fd, into.extend)


async def feed(fd: int, data: bytes) -> None:
    """Write ``data`` to the non-blocking ``fd`` (the workload's stdin), then close it so the
    workload sees end of file. Cancelled when the container has gone without reading it."""
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
            except BrokenPipeError:
                return  # nothing in the container reads its stdin any more
    finally:
        os.close(fd)


async def pump(fd: int, stream: str, emit: Callable[[str, bytes, bool], None]) -> None:
    """Read ``fd`` to end of file as records: ``emit(stream, piece, partial)`` for each piece
    of a line, the last line included even without its newline."""
    splitter = LineSplitter()

    def split(data: bytes) -> None:
        for start in range(0, len(data), SPLIT_SIZE):
            for piece, partial in splitter.feed(data[start:start + SPLIT_SIZE]):
                emit(stream, piece, partial)

    await read_to_end(fd, split)
    for piece, partial in splitter.flush():
        emit(stream, piece, partial)


async def pump_records(fd: int, stream: str, records: OutputRecords) -> None:
    """``pump`` for the CLI's JSON logs: each read goes to ``records`` whole (see
    ``records.py``), the last line at end of file too."""
    await read_to_end(fd, functools.partial(records.feed, stream))
    records.finish(stream)
