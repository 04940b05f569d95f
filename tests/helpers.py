"""Helpers for the tests: run the CLI, parse its JSON logs, look for leftovers."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import jsonschema

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("pyctr-supervise"))
SCHEMA = json.loads((REPO / "schema" / "log-record.schema.json").read_text())
# Built once: jsonschema.validate() would re-check the schema for every record.
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def mount_points(under: tuple[str, ...] = ("/",)) -> list[str]:
    """The host's mount points below any of ``under`` (as mountinfo spells them)."""
    prefixes = tuple(path.rstrip("/") + "/" for path in under)
    with open("/proc/self/mountinfo") as file:
        points = (line.split()[4] for line in file)
        return sorted(point for point in points if (point + "/").startswith(prefixes))


def descendants(root: int | None = None) -> set[int]:
    """Pids of every live process below ``root`` (default: this process)."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def reap_orphans() -> None:
    """Collect zombies of orphans re-parented to us (we are a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            command = file.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return str(pid)
    return f"{pid}: {command}"


class Run:
    """A finished CLI run: exit code, output, and the JSON log records from stderr. Every
    record is checked against the schema, so each test that runs the CLI checks it too."""

    def __init__(self, completed: subprocess.CompletedProcess[str]) -> None:
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        self.records: list[dict[str, object]] = []
        self.other_stderr: list[str] = []
        for line in completed.stderr.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                self.other_stderr.append(line)
                continue
            if isinstance(record, dict):
                VALIDATOR.validate(record)
                self.records.append(record)
            else:
                self.other_stderr.append(line)

    def events(self) -> list[object]:
        return [record["event"] for record in self.records]

    def record(self, event: str) -> dict[str, object]:
        matching = [record for record in self.records if record["event"] == event]
        assert matching, f"no {event} record in {self.events()}; stderr: {self.stderr}"
        return matching[0]


def run_cli(*args: str, timeout: float = 60, input: str | None = None,
            **kwargs: object) -> Run:
    """Run ``pyctr-supervise ARGS`` with JSON logs on stderr (stderr is a pipe here)."""
    completed = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                               input=input, **kwargs)  # type: ignore[call-overload]
    return Run(completed)




def assert_one_line_error(run: Run, *fragments: str) -> None:
    """The CLI failed the way every expected failure must: one line, no traceback."""
    assert "Traceback" not in run.stderr
    assert len(run.other_stderr) == 1, run.stderr
    line = run.other_stderr[0]
    assert line.startswith("pyctr-supervise: error: ")
    for fragment in fragments:
        assert fragment in line, line


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first); [] once gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def process_state(pid: int) -> str:
    fields = proc_stat(pid)
    return fields[0] if fields else "gone"


def in_foreground(pid: int) -> bool:
    """Whether ``pid`` runs in the foreground process group of its terminal."""
    fields = proc_stat(pid)
    return bool(fields) and fields[0] != "T" and fields[2] == fields[5]  # pgrp == tpgid


def command_named(root: int, name: str) -> int | None:
    """A live process below ``root`` whose command (comm) is ``name``."""
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/comm") as file:
                if file.read().strip() == name:
                    return pid
        except OSError:
            continue
    return None


def reads_its_signals(pid: int) -> bool:
    """Whether ``pid`` (the CLI's supervisor) has its signalfd open yet: until then, signals
    sent to it wait, and two of the same kind would merge into one."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[signalfd]":
                return True
        except OSError:
            continue
    return False


def signal_pending(pid: int, signum: int) -> bool:
    with open(f"/proc/{pid}/status") as file:
        fields = dict(line.split(":\t", 1) for line in file.read().splitlines() if ":\t" in line)
    return bool(int(fields["ShdPnd"], 16) & (1 << (signum - 1)))


class LineReader:
    """Lines from a pipe, each read with a deadline (a failed assertion, not a hung test)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""

    def line(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line within {timeout}s (have {self.buffer!r})"
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 4096)
                assert chunk, f"end of output (have {self.buffer!r})"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def quiet_for(self, seconds: float) -> bool:
        """True when nothing more arrives within ``seconds``."""
        return not self.buffer and not select.select([self.fd], [], [], seconds)[0]
