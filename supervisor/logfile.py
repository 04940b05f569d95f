"""Where the CLI's records go: stderr or ``--log-file``, written in batches, with
``--log-max-size``/``--log-max-files`` rotation like docker's json-file driver. On a terminal
in raw mode, records end in ``\r\n``.

When writing a record would take the file past the maximum size, the file is renamed to
``PATH.1`` (``PATH.1`` to ``PATH.2`` and so on, the oldest beyond ``max_files - 1`` removed)
and a new ``PATH`` is started; with ``max_files`` 1 the old records are simply dropped.
Records are never split across files. Files are created mode 0600.
"""

from __future__ import annotations

import os

from .errors import PyctrError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_IOV_MAX = 1024


def parse_size(text: str) -> int:
    """``10m``, ``512k``, ``1g`` or plain bytes, as docker's ``max-size``."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _UNITS else ""
    number = value[: len(value) - len(unit)] if unit else value
    try:
        size = int(float(number) * _UNITS[unit])
    except ValueError:
        raise PyctrError(f"--log-max-size needs a size such as 10m or 512k, got {text!r}",
                         error="usage.invalid") from None
    if size < 1:
        raise PyctrError(f"--log-max-size must be positive, got {text!r}", error="usage.invalid")
    return size


def _open(path: str) -> int:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PyctrError(f"cannot open log file {path}: directory {directory} does not exist; "
                         f"create it first", error="log_file.unusable")
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise PyctrError(f"cannot open log file {path}: {exc.strerror}; choose a writable path",
                         error="log_file.unusable") from None


class LogSink:
    """Where the CLI's records go: a file descriptor (stderr by default), written in batches.

    structlog's loggers call ``write`` and then ``flush`` for every record; a system call per
    record was two thirds of the time spent capturing a chatty workload's output. So records
    wait here, and ``commit`` writes them in one go: the CLI commits each time trio is about
    to wait for I/O (``CommitBeforeWait``), i.e. after every batch of output read, and at the
    end. At most ``BATCH_BYTES`` wait at any time."""

    BATCH_BYTES = 64 * 1024

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.tty = fd >= 0 and os.isatty(fd)
        self.reader_gone = False
        """The records' reader went away (``2>&1 | head``): what follows is dropped, and the
        container is supervised to its end all the same."""

    def write(self, record: str | bytes) -> int:
        if self.reader_gone:
            return len(record)
        data = record if isinstance(record, bytes) else record.encode("utf-8", "backslashreplace")
        self._before_write(len(data))
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= self.BATCH_BYTES:
            self.commit()
        return len(record)

    def write_records(self, records: bytes) -> None:
        """Several whole records at once, each ending in a newline (``records.py``)."""
        self.write(records)

    def flush(self) -> None:
        """Called by structlog after every record: the batch is written by ``commit``."""

    def commit(self) -> None:
        """Write every record that is waiting."""
        if not self.pending:
            return
        pending, self.pending, self.pending_size = self.pending, [], 0
        if self.tty and not _translates_newlines(self.fd):
            pending = [b"".join(pending).replace(b"\n", b"\r\n")]
        # writev, not a join: the bytes are copied once, by the kernel.
        while pending:
            batch = pending[:_IOV_MAX]
            try:
                written = os.writev(self.fd, batch)
            except BrokenPipeError:
                self.reader_gone = True
                return
            done = 0
            while done < len(batch) and written >= len(batch[done]):
                written -= len(batch[done])
                done += 1
            pending = pending[done:]
            if written:  # a short write inside one buffer: the rest of it goes next
                pending[0] = pending[0][written:]

    def isatty(self) -> bool:
        return self.tty

    def close(self) -> None:
        self.commit()

    def _before_write(self, size: int) -> None:
        """Hook for the file sink's rotation."""


def _translates_newlines(fd: int) -> bool:
    """Whether the terminal on ``fd`` turns a newline into carriage return and newline, as
    it does unless it is in raw mode (``-t`` puts the user's terminal there): then a record
    must end in ``\r\n`` itself, or the next one starts where this one ended."""
    import termios  # a terminal's only

    try:
        output_flags = termios.tcgetattr(fd)[1]
    except termios.error:
        return True
    return bool(output_flags & termios.OPOST and output_flags & termios.ONLCR)


class LogFile(LogSink):
    """``--log-file PATH``, appended to, rotated by size."""

    def __init__(self, path: str, *, max_size: int | None = None, max_files: int = 1) -> None:
        if max_files < 1:
            raise PyctrError(f"--log-max-files must be 1 or more, got {max_files}",
                             error="usage.invalid")
        super().__init__(_open(path))
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self.size = os.fstat(self.fd).st_size

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.commit()
        os.close(self.fd)

    def write_records(self, records: bytes) -> None:
        """Split at record boundaries where rotation needs it: no record spans two files."""
        if self.max_size is None:
            self.write(records)
            return
        while records:
            room = self.max_size - self.size
            cut = records.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0:  # not one more record fits: the next goes alone (``write`` rotates)
                cut = records.find(b"\n") + 1 or len(records)
            self.write(records[:cut])
            records = records[cut:]

    def _before_write(self, size: int) -> None:
        if self.max_size is not None and self.size and self.size + size > self.max_size:
            self.commit()
            self._rotate()
        self.size += size

    def _rotate(self) -> None:
        os.close(self.fd)
        if self.max_files == 1:
            os.unlink(self.path)
        else:
            for index in range(self.max_files - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    if index == self.max_files - 1:
                        os.unlink(older)
                    else:
                        os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        self.fd = _open(self.path)
        self.size = 0
