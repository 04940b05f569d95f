"""Helpers for the tests: run the CLI, parse its JSON logs, look for leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("pyctr-supervise"))
SCHEMA = json.loads((REPO / "schema" / "log-record.schema.json").read_text())
# Built once: jsonschema.validate() would re-check the schema for every record.
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as file:
        return sorted(line.split()[4] for line in file)


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


