"""The line splitter behind --capture-output, the lossless text of invalid UTF-8, and the
batching log sink. Needs no root."""

from __future__ import annotations

import base64
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pyctr.supervisor.logfile import LogFile, LogSink
from pyctr.supervisor.output import LineSplitter, as_text


def reassemble(pieces: list[tuple[bytes, bool]]) -> bytes:
    """Undo the splitting: a piece that is not partial ends a line."""
    return b"".join(piece if partial else piece + b"\n" for piece, partial in pieces)


def test_lines_are_reassembled_across_reads() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == [(b"hello", False)]
    assert splitter.feed(b"ld\n\n") == [(b"world", False), (b"", False)]


def test_last_line_without_newline_is_emitted_at_the_end() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"a\nno newline") == [(b"a", False)]
    assert splitter.flush() == [(b"no newline", False)]
    assert splitter.flush() == []


def test_long_line_is_split_into_partial_pieces_with_bounded_memory() -> None:
    splitter = LineSplitter(limit=10)
    pieces = splitter.feed(b"x" * 35)
    assert pieces == [(b"x" * 10, True)] * 3
    assert splitter.pending == b"x" * 5
    pieces += splitter.feed(b"y\n")
    assert pieces[-1] == (b"x" * 5 + b"y", False)
    assert all(len(piece) <= 10 for piece, _ in pieces)


def test_split_never_cuts_a_utf8_character() -> None:
    text = "é" * 20  # two bytes each
    splitter = LineSplitter(limit=7)
    pieces = splitter.feed(text.encode() + b"\n")
    for piece, _ in pieces:
        piece.decode("utf-8")  # raises if a character was cut
    assert b"".join(piece for piece, _ in pieces).decode() == text


@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(4, 40))
@settings(max_examples=500)
def test_any_chunking_reassembles_to_the_exact_bytes(chunks: list[bytes], limit: int) -> None:
    splitter = LineSplitter(limit=limit)
    pieces: list[tuple[bytes, bool]] = []
    for chunk in chunks:
        pieces += splitter.feed(chunk)
        assert len(splitter.pending) <= limit
    pieces += splitter.flush()
    data = b"".join(chunks)
    expected = data if data.endswith(b"\n") or not data else data + b"\n"
    assert reassemble(pieces) == expected
    assert all(len(piece) <= limit for piece, _ in pieces)


def test_valid_utf8_is_plain_text() -> None:
    assert as_text("grüße".encode()) == ("grüße", None)


@given(st.binary(max_size=64))
def test_invalid_utf8_is_kept_exactly_in_base64(data: bytes) -> None:
    text, raw = as_text(data)
    if raw is None:
        assert text.encode() == data
    else:
        assert base64.b64decode(raw) == data
        assert "\ufffd" in text


def test_log_sink_writes_records_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "sink"
    with open(path, "wb") as file:
        sink = LogSink(file.fileno())
        sink.write(b"one\n")
        sink.flush()  # what structlog calls after each record: not yet a system call
        sink.write("two\n")
        assert path.read_bytes() == b""
        sink.commit()
        assert path.read_bytes() == b"one\ntwo\n"
        big = b"x" * LogSink.BATCH_BYTES + b"\n"
        sink.write(big)  # a full batch is written at once, without waiting for commit
        assert path.read_bytes() == b"one\ntwo\n" + big


def test_log_file_rotates_between_records_including_waiting_ones(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = LogFile(str(path), max_size=10, max_files=2)
    for record in (b"aaaa\n", b"bbbb\n", b"cccc\n"):
        log.write(record)
    log.close()
    assert (tmp_path / "log.jsonl.1").read_bytes() == b"aaaa\nbbbb\n"
    assert path.read_bytes() == b"cccc\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
