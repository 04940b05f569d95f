"""Logs: JSON lines that follow schema/log-record.schema.json, the lifecycle events in order,
init's events relayed with source=init, text for humans, and a log file."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import CLI, VALIDATOR, Run

pytestmark = requires_root

LIFECYCLE = ["container.created", "container.ready", "workload.started", "workload.exited",
             "container.cleanup_done"]


def validate(records: list[dict[str, object]]) -> None:
    assert records, "no log records"
    for record in records:
        VALIDATOR.validate(record)


def test_lifecycle_events_in_order_and_valid(pyctr) -> None:
    run = pyctr("/bin/true", options=("--name", "logcheck", "--log-level", "debug"))
    assert run.returncode == 0
    assert not run.other_stderr, "with JSON logs every stderr line from pyctr is a record"
    validate(run.records)
    supervisor_events = [r["event"] for r in run.records if r["source"] == "supervisor"]
    assert supervisor_events == LIFECYCLE
    assert {r["container"] for r in run.records} == {"logcheck"}
    assert list(run.records[0])[:5] == ["timestamp", "level", "event", "container", "source"]


def test_init_events_arrive_with_source_init_and_their_own_time(pyctr) -> None:
    run = pyctr("/bin/true", options=("--log-level", "debug"))
    from_init = [r for r in run.records if r["source"] == "init"]
    assert {r["event"] for r in from_init} >= {"rootfs.ready", "workload.exec"}
    created = run.record("container.created")["timestamp"]
    # Init runs before the supervisor has even imported trio: its events are older.
    assert str(run.record("rootfs.ready")["timestamp"]) <= str(created)
    validate(from_init)


def test_failure_is_also_one_structured_event(pyctr) -> None:
    run = pyctr("missing-command")
    validate(run.records)
    failed = run.record("container.failed")
    assert failed["level"] == "error" and failed["exit_code"] == 127
    assert failed["message"] == run.other_stderr[0].removeprefix("pyctr-supervise: error: ")


def test_forwarded_signal_is_logged(rootfs: Path) -> None:
    with subprocess.Popen([CLI, str(rootfs), "/bin/sh", "-c", "echo ready; exec sleep 30"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGUSR1)
        stdout, stderr = process.communicate(timeout=20)
    run = Run(subprocess.CompletedProcess([], process.returncode, stdout, stderr))
    validate(run.records)
    assert run.record("signal.forwarded")["signal"] == "SIGUSR1"
    assert run.record("workload.exited")["signal"] == "SIGUSR1"


def test_log_level_filters(pyctr) -> None:
    quiet = pyctr("/bin/true", options=("--log-level", "warning"))
    assert quiet.records == []
    chatty = pyctr("/bin/true", options=("--log-level", "debug"))
    assert any(r["level"] == "debug" for r in chatty.records)


def test_text_format_is_for_humans(pyctr) -> None:
    run = pyctr("/bin/true", options=("--log-format", "text", "--name", "human"))
    assert run.records == []
    assert any("workload.exited" in line and "human" in line for line in run.other_stderr)


def test_log_file_gets_json_lines_and_is_private(pyctr, tmp_path: Path) -> None:
    path = tmp_path / "pyctr.log"
    first = pyctr("/bin/true", options=("--log-file", str(path), "--name", "one"))
    second = pyctr("/bin/true", options=("--log-file", str(path), "--name", "two"))
    assert first.stderr == second.stderr == ""
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    records = [json.loads(line) for line in path.read_text().splitlines()]
    validate(records)
    assert [r["container"] for r in records if r["event"] == "container.created"] == ["one", "two"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_explicit_format_wins(pyctr, fmt: str) -> None:
    run = pyctr("/bin/true", options=("--log-format", fmt))
    assert bool(run.records) == (fmt == "json")


@requires_root
def test_a_log_reader_that_goes_away_costs_neither_the_container_nor_a_signal(
        rootfs: Path, tmp_path: Path) -> None:
    """``pyctr-supervise ... 2>&1 | head -1``: the supervisor's next record meets a closed
    pipe. It drops the records from then on and supervises the container to its end; and the
    SIGPIPE its own write raised (blocked, so it reaches the forwarding signalfd, from its own
    pid) is not forwarded to the workload as if someone had sent it."""
    from helpers import wait_until

    out = tmp_path / "out"
    out.mkdir()
    script = ('exec 2>/dev/null; trap "echo pipe >> /out/seen" PIPE; '
              'trap "echo usr1 >> /out/seen" USR1; touch /out/ready; '
              'while [ ! -e /out/stop ]; do sleep 0.05; done; exit 3')
    read_end, write_end = os.pipe()
    process = subprocess.Popen([CLI, "--log-format", "json", "-v", f"{out}:/out", str(rootfs),
                                "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=write_end)
    os.close(write_end)
    try:
        wait_until(lambda: (out / "ready").exists(), "the workload's traps")
        os.close(read_end)  # the reader goes away
        read_end = -1
        process.send_signal(signal.SIGUSR1)  # forwarded, then logged into the closed pipe
        wait_until(lambda: (out / "seen").exists(), "the forwarded SIGUSR1")
        process.send_signal(signal.SIGUSR1)
        wait_until(lambda: (out / "seen").read_text().count("usr1") == 2, "the second one")
        (out / "stop").touch()
        assert process.wait(timeout=30) == 3
    finally:
        if read_end != -1:
            os.close(read_end)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (out / "seen").read_text() == "usr1\nusr1\n"
