"""The CLI's fast path for captured output (records.py): the records it writes are the ones
the structlog path writes, byte for byte but for the timestamp, for any bytes cut into any
reads; and the file sink never splits a record across a rotation. Needs no root."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from pyctr.supervisor.logfile import LogFile, LogSink
from pyctr.supervisor.logs import configure
from pyctr.supervisor.output import LineSplitter, as_text
from pyctr.supervisor.records import OutputRecords

FIELDS = ["timestamp", "level", "event", "container", "source", "stream", "message", "partial"]


class Collecting(LogSink):
    """A sink that keeps what it is given (no descriptor)."""

    def __init__(self) -> None:
        super().__init__(-1)
        self.data = bytearray()

    def write_records(self, records: bytes) -> None:
        self.data += records

    def write(self, record: str | bytes) -> int:
        self.data += record if isinstance(record, bytes) else record.encode()
        return len(record)

    def flush(self) -> None:
        pass

    def commit(self) -> None:
        pass


def fast_records(chunks: list[bytes], limit: int, container: str = "box",
                 stream: str = "stdout") -> list[bytes]:
    sink = Collecting()
    records = OutputRecords(sink, container, limit=limit)
    for chunk in chunks:
        records.feed(stream, chunk)
    records.finish(stream)
    return bytes(sink.data).splitlines(keepends=True)


def structlog_records(chunks: list[bytes], limit: int, container: str = "box",
                      stream: str = "stdout") -> list[bytes]:
    """What the structlog path writes for the same reads (``_Supervision.emit_output``)."""
    sink = Collecting()
    configure(log_format="json", level="info", sink=sink)
    log = structlog.get_logger("pyctr").bind(container=container, source="workload")
    splitter = LineSplitter(limit)
    pieces = [piece for chunk in chunks for piece in splitter.feed(chunk)] + splitter.flush()
    for piece, partial in pieces:
        text, raw = as_text(piece)
        if raw is None:
            log.info("workload.output", stream=stream, message=text, partial=partial)
        else:
            log.info("workload.output", stream=stream, message=text, partial=partial,
                     raw_base64=raw)
    structlog.reset_defaults()
    return bytes(sink.data).splitlines(keepends=True)


def without_timestamp(record: bytes) -> bytes:
    assert record.startswith(b'{"timestamp":"') and record.endswith(b"}\n")
    return record[len(b'{"timestamp":"') + 27:]


@pytest.mark.parametrize("data", [
    b"hello\nworld\n",
    b"a\tb\n\x1b[31mred\n\xc2\x9bx\n\xffbad\nquote\" back\\slash\n\x7fdel\ntail",
    "ünïcödé ✓\nmixed\n".encode(),
    b"x" * 100 + b"\n" + b"y" * 33,
    b"",
    b"\n\n\n",
])
def test_the_same_records_as_the_structlog_path(data: bytes) -> None:
    chunks = [data[i:i + 7] for i in range(0, len(data), 7)] or [b""]
    fast = fast_records(chunks, 16)
    slow = structlog_records(chunks, 16)
    assert [without_timestamp(r) for r in fast] == [without_timestamp(r) for r in slow]
    for record in fast:
        value = json.loads(record)
        assert list(value)[:len(FIELDS)] == FIELDS
        assert set(value) - set(FIELDS) <= {"raw_base64"}


@given(st.lists(st.binary(max_size=60), max_size=12), st.integers(4, 40))
@settings(max_examples=300, deadline=None)
def test_any_bytes_in_any_reads_give_the_structlog_paths_records(chunks: list[bytes],
                                                                 limit: int) -> None:
    fast = fast_records(chunks, limit)
    assert [without_timestamp(r) for r in fast] == [
        without_timestamp(r) for r in structlog_records(chunks, limit)]
    # Nothing lost: the records give back the exact bytes, in order.
    data = b""
    for record in fast:
        value = json.loads(record)
        piece = (base64.b64decode(value["raw_base64"]) if "raw_base64" in value
                 else value["message"].encode())
        data += piece if value["partial"] else piece + b"\n"
    joined = b"".join(chunks)
    assert data == joined + (b"\n" if joined and not joined.endswith(b"\n") else b"")


def test_one_read_of_plain_lines_shares_one_timestamp_and_is_one_write() -> None:
    sink = Collecting()
    writes: list[bytes] = []
    sink.write_records = writes.append  # type: ignore[method-assign]
    OutputRecords(sink, "box").feed("stderr", b"one\ntwo\nthree\n")
    assert len(writes) == 1
    lines = writes[0].splitlines()
    assert len(lines) == 3 and len({line[:45] for line in lines}) == 1
    assert [json.loads(line)["stream"] for line in lines] == ["stderr"] * 3


def test_a_container_name_is_escaped_like_every_other_text() -> None:
    record = fast_records([b"x\n"], 16, container='odd"\u009bname')[0]
    assert b'"container":"odd\\"\\u009bname"' in record


def test_memory_stays_bounded_without_newlines() -> None:
    sink = Collecting()
    records = OutputRecords(sink, "box", limit=16)
    for _ in range(1000):
        records.feed("stdout", b"z" * 50)
    assert len(records._pending["stdout"]) <= 16
    assert all(json.loads(r)["partial"] for r in bytes(sink.data).splitlines())


def test_the_file_sink_rotates_between_records_of_one_write(tmp_path: Path) -> None:
    path = tmp_path / "log"
    sink = LogFile(str(path), max_size=100, max_files=3)
    records = b"".join(b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * 20) for n in range(10))
    sink.write_records(records)
    sink.close()
    files = [path, tmp_path / "log.1", tmp_path / "log.2"]
    kept = [line for file in reversed(files) if file.exists()
            for line in file.read_bytes().splitlines()]
    assert all(file.stat().st_size <= 100 for file in files if file.exists())
    assert [json.loads(line)["n"] for line in kept] == list(range(10 - len(kept), 10))
