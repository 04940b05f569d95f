"""--capture-output for real: every line the container wrote is a record, in order per stream,
whatever happens to the workload; rotation of the log file; signal senders; host pids."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import CLI, VALIDATOR, LineReader, Run, wait_until

pytestmark = requires_root



def output(run: Run, stream: str = "stdout") -> list[dict[str, object]]:
    return [r for r in run.records if r["event"] == "workload.output" and r["stream"] == stream]


def lines(run: Run, stream: str = "stdout") -> list[object]:
    return [r["message"] for r in output(run, stream)]


def capture(pyctr, script: str, *options: str, **kwargs: object) -> Run:  # type: ignore[no-untyped-def]
    run = pyctr("/bin/sh", "-c", script, options=("--capture-output", *options), **kwargs)
    for record in run.records:
        VALIDATOR.validate(record)
    return run


def test_each_line_is_a_record_with_its_stream(pyctr) -> None:
    run = capture(pyctr, "echo one; echo two >&2; echo three", "--name", "cap")
    assert run.returncode == 0
    assert run.stdout == "", "captured output does not also pass through"
    assert lines(run) == ["one", "three"]
    assert lines(run, "stderr") == ["two"]
    record = output(run)[0]
    assert record["source"] == "workload" and record["container"] == "cap"
    assert record["partial"] is False and "timestamp" in record


def test_lifecycle_frames_the_output(pyctr) -> None:
    run = capture(pyctr, "echo inside")
    events = [r["event"] for r in run.records if r["source"] != "init"]
    assert events == ["container.created", "container.ready", "workload.started",
                      "workload.output", "workload.exited", "container.cleanup_done"]


def test_lines_are_reassembled_and_the_last_one_needs_no_newline(pyctr) -> None:
    run = capture(pyctr, "printf par; sleep 0.2; printf 'tial\\nlast without newline'")
    assert lines(run) == ["partial", "last without newline"]


def test_invalid_utf8_is_kept_losslessly(pyctr) -> None:
    run = capture(pyctr, r"printf 'caf\351 \377\n'; echo plain")
    first, second = output(run)
    assert base64.b64decode(str(first["raw_base64"])) == b"caf\xe9 \xff"
    assert first["message"] == "caf\ufffd \ufffd"
    assert second["message"] == "plain" and "raw_base64" not in second


def test_very_long_line_is_split_into_partial_records(pyctr) -> None:
    run = capture(pyctr, "head -c 50000 /dev/zero | tr '\\0' a; echo; echo after")
    records = output(run)
    assert [r["partial"] for r in records] == [True, True, True, False, False]
    assert all(len(str(r["message"])) <= 16 * 1024 for r in records)
    assert "".join(str(r["message"]) for r in records[:4]) == "a" * 50000
    assert records[-1]["message"] == "after"


def test_stdin_still_reaches_the_workload(pyctr) -> None:
    run = capture(pyctr, "cat; echo done", input="from stdin\n")
    assert lines(run) == ["from stdin", "done"]


def test_lines_before_death_by_signal_are_kept(pyctr) -> None:
    run = capture(pyctr, "seq 1 2000; echo bye >&2; kill -KILL $$")
    assert run.returncode == 137
    assert lines(run) == [str(n) for n in range(1, 2001)]
    assert lines(run, "stderr") == ["bye"]


def test_closing_stdout_early_loses_nothing_else(pyctr) -> None:
    run = capture(pyctr, "echo first; exec 1>&-; sleep 0.2; echo still >&2; echo here >&2")
    assert lines(run) == ["first"]
    assert lines(run, "stderr") == ["still", "here"]


def test_grandchild_holding_the_pipe_is_drained_then_stopped(pyctr) -> None:
    # The grandchild writes, then keeps stdout open long after the workload exits. The run
    # ends when the workload does (the kernel kills the rest of the container), with every
    # line written until then.
    began = time.monotonic()
    run = capture(pyctr, "(echo from-grandchild; sleep 60) & sleep 0.3; echo main-exits")
    assert time.monotonic() - began < 20
    assert sorted(map(str, lines(run))) == ["from-grandchild", "main-exits"]


def test_a_hundred_megabytes_quickly_in_order(pyctr, tmp_path: Path) -> None:
    log = tmp_path / "big.jsonl"
    count, width = 100_000, 1000
    script = (f"awk 'BEGIN {{ pad = sprintf(\"%0{width - 9}d\", 0); "
              f"for (i = 1; i <= {count}; i++) printf \"%08d %s\\n\", i, pad }}'")
    run = pyctr("/bin/sh", "-c", script,
                options=("--capture-output", "--log-file", str(log)), timeout=300)
    assert run.returncode == 0, run.stderr
    seen = 0
    with log.open() as file:
        for line in file:
            record = json.loads(line)
            if record["event"] != "workload.output":
                continue
            seen += 1
            message = record["message"]
            assert int(message[:8]) == seen, "lines out of order or missing"
            assert len(message) == width and record["partial"] is False
    assert seen == count


def short_lines_peak_rss(rootfs: Path, log: Path, count: int) -> int:
    """Capture ``count`` short numbered lines into ``log``; the CLI's peak resident set in
    KiB (its own: wait4 on the CLI alone would also count its init, which it reaps)."""
    probe = ("import os, resource, sys; pid = os.fork()\n"
             "if pid == 0: os.execv(sys.argv[1], sys.argv[1:])\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")
    completed = subprocess.run(
        [sys.executable, "-c", probe, CLI, "--capture-output", "--log-file", str(log),
         str(rootfs), "/usr/bin/seq", str(count)], capture_output=True, text=True,
        timeout=300, check=True)
    code, peak = completed.stdout.split()
    assert code == "0", completed.stderr
    return int(peak)


def test_memory_stays_flat_however_much_is_written(rootfs: Path, tmp_path: Path) -> None:
    # Ten times the lines, as fast as seq writes them: the supervisor holds no more. Every
    # line is there, in order.
    small = short_lines_peak_rss(rootfs, tmp_path / "small.jsonl", 200_000)
    big = short_lines_peak_rss(rootfs, tmp_path / "big.jsonl", 2_000_000)
    assert big < small + 8 * 1024, (small, big)
    expected = 1
    with (tmp_path / "big.jsonl").open() as file:
        for line in file:
            record = json.loads(line)
            if record["event"] == "workload.output":
                assert record["message"] == str(expected)
                expected += 1
    assert expected == 2_000_001


def test_library_capture_goes_through_structlog(rootfs: Path) -> None:
    import structlog
    import trio

    from pyctr.supervisor import ContainerConfig, run

    async def main() -> None:
        with structlog.testing.capture_logs() as logs:
            await run(ContainerConfig(rootfs, ["/bin/echo", "via library"], capture_output=True))
        assert [e["message"] for e in logs if e["event"] == "workload.output"] == ["via library"]

    trio.run(main)


def test_log_file_rotation(pyctr, tmp_path: Path) -> None:
    log = tmp_path / "rot.jsonl"
    run = pyctr("/bin/sh", "-c", "seq 1 300",
                options=("--capture-output", "--log-file", str(log), "--log-max-size", "8k",
                         "--log-max-files", "3"))
    assert run.returncode == 0, run.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rot.jsonl", "rot.jsonl.1", "rot.jsonl.2"]
    newest_last: list[dict[str, object]] = []
    for name in reversed(files):
        path = tmp_path / name
        assert path.stat().st_size <= 8 * 1024
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        newest_last += [json.loads(line) for line in path.read_text().splitlines()]
    numbers = [int(str(r["message"])) for r in newest_last if r["event"] == "workload.output"]
    assert numbers == list(range(numbers[0], 301)), "rotation lost or reordered records"
    assert newest_last[-1]["event"] == "container.cleanup_done"


def test_rotation_with_one_file_keeps_only_the_newest(pyctr, tmp_path: Path) -> None:
    log = tmp_path / "one.jsonl"
    pyctr("/bin/sh", "-c", "seq 1 300",
          options=("--capture-output", "--log-file", str(log), "--log-max-size", "4k"))
    assert [p.name for p in tmp_path.iterdir()] == ["one.jsonl"]
    assert log.stat().st_size <= 4 * 1024


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (("--log-max-size", "1m"), "--log-max-size needs --log-file"),
        (("--log-file", "/tmp/x", "--log-max-files", "2"), "--log-max-files needs --log-max-size"),
        (("--log-file", "/tmp/x", "--log-max-size", "lots"), "a size such as 10m"),
        (("--log-file", "/tmp/x", "--log-max-size", "1m", "--log-max-files", "0"), "1 or more"),
    ],
)
def test_rotation_usage_errors(options: tuple[str, ...], fragment: str) -> None:
    completed = subprocess.run([CLI, *options, "r", "c"], capture_output=True, text=True)
    assert completed.returncode == 125
    assert fragment in completed.stderr and completed.stderr.count("\n") == 1


def test_signal_record_names_its_sender(rootfs: Path) -> None:
    with subprocess.Popen([CLI, str(rootfs), "/bin/sh", "-c", "echo ready; exec sleep 30"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        os.kill(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    run = Run(subprocess.CompletedProcess([], process.returncode, stdout, stderr))
    forwarded = run.record("signal.forwarded")
    VALIDATOR.validate(forwarded)
    assert forwarded["sender_pid"] == os.getpid()
    assert forwarded["sender_uid"] == os.getuid()
    assert forwarded["sender"] == Path(f"/proc/{os.getpid()}/comm").read_text().strip()


def test_workload_started_has_the_host_pid_even_for_a_quick_command(pyctr) -> None:
    run = pyctr("/bin/true")
    started = run.record("workload.started")
    assert started["pid"] == 2
    host_pid = started["host_pid"]
    assert isinstance(host_pid, int) and host_pid > 2
    assert host_pid != run.record("container.created")["init_pid"]


def test_host_pid_is_the_workload_as_the_host_sees_it(rootfs: Path) -> None:
    process = subprocess.Popen([CLI, "--log-format", "json", str(rootfs), "/bin/sleep", "30"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        reader = LineReader(process.stderr)
        records = {}
        while "workload.started" not in records:
            record = json.loads(reader.line())
            records[record["event"]] = record
        host_pid = records["workload.started"]["host_pid"]

        def status() -> dict[str, str]:
            lines = Path(f"/proc/{host_pid}/status").read_text().splitlines()
            return dict(line.split(":\t", 1) for line in lines)

        # The exec has happened; the kernel renames the process a moment later.
        wait_until(lambda: status()["Name"] == "sleep", "the workload to be sleep")
        fields = status()
        assert int(fields["PPid"]) == records["container.created"]["init_pid"]
        assert fields["NSpid"].split() == [str(host_pid), "2"]
    finally:
        process.kill()
        process.communicate()


def test_init_events_cover_mounts_root_change_and_exec(pyctr) -> None:
    run = pyctr("/bin/true", options=("--log-level", "debug"))
    from_init = [r for r in run.records if r["source"] == "init"]
    events = [r["event"] for r in from_init]
    assert events[0] == "namespaces.entered"
    mounted = [r["target"] for r in from_init if r["event"] == "rootfs.mounted"]
    assert mounted == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                       "/dev/shm", "/tmp"]
    assert events[-2:] == ["rootfs.ready", "workload.exec"]
    for record in run.records:
        VALIDATOR.validate(record)


def test_text_format_shows_output_for_humans(pyctr) -> None:
    run = pyctr("/bin/echo", "readable", options=("--capture-output", "--log-format", "text"))
    assert any("workload.output" in line and "readable" in line for line in run.other_stderr)


def test_lines_before_an_external_stop_are_kept(rootfs: Path, tmp_path: Path) -> None:
    log = tmp_path / "stop.jsonl"
    with subprocess.Popen([CLI, "--capture-output", "--log-file", str(log), str(rootfs),
                           "/bin/sh", "-c", "seq 1 500; exec sleep 30"]) as process:
        deadline = time.monotonic() + 20
        while '"message":"500"' not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the output never arrived"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 128 + signal.SIGTERM
    records = [json.loads(line) for line in log.read_text().splitlines()]
    numbers = [r["message"] for r in records if r["event"] == "workload.output"]
    assert numbers == [str(n) for n in range(1, 501)]
