"""Signals sent to the supervisor reach the workload; stop requests escalate to SIGKILL;
a killed supervisor takes its container with it."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import (
    CLI,
    LineReader,
    Run,
    descendants,
    reads_its_signals,
    signal_pending,
    wait_until,
)

pytestmark = requires_root

FORWARDED = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT]


def start(rootfs: Path, script: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen([CLI, *options, str(rootfs), "/bin/sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process: subprocess.Popen[str], expected: str) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == expected + "\n", f"expected {expected!r}, got {line!r}"


def finish(process: subprocess.Popen[str], timeout: float = 20) -> Run:
    stdout, stderr = process.communicate(timeout=timeout)
    return Run(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))


@pytest.mark.parametrize("signum", FORWARDED, ids=lambda s: signal.Signals(s).name)
def test_signal_reaches_the_workload(rootfs: Path, signum: int) -> None:
    name = signal.Signals(signum).name.removeprefix("SIG")
    script = (f'trap "echo got {name}; exit 7" {name}; echo ready; '
              "while :; do sleep 0.02; done")
    with start(rootfs, script) as process:
        wait_for_line(process, "ready")
        process.send_signal(signum)
        stdout_rest = finish(process)
    assert stdout_rest.stdout == f"got {name}\n"
    assert stdout_rest.returncode == 7
    forwarded = stdout_rest.record("signal.forwarded")
    assert forwarded["signal"] == signal.Signals(signum).name
    assert forwarded["delivered"] is True


def test_unhandled_sigterm_kills_the_workload_143(rootfs: Path) -> None:
    with start(rootfs, "echo ready; exec sleep 30") as process:
        wait_for_line(process, "ready")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        run = finish(process)
    assert run.returncode == 128 + signal.SIGTERM
    assert time.monotonic() - began < 5
    assert run.record("workload.exited")["signal"] == "SIGTERM"


def test_signals_reach_the_whole_process_group(rootfs: Path) -> None:
    # A pipeline: both sides must stop, not just the shell.
    with start(rootfs, "echo ready; sleep 30 | sleep 30; echo survived") as process:
        wait_for_line(process, "ready")
        process.send_signal(signal.SIGINT)
        run = finish(process)
    assert "survived" not in run.stdout


def test_stop_timeout_escalates_to_sigkill(rootfs: Path) -> None:
    script = 'trap "" TERM INT; echo ready; while :; do sleep 0.05; done'
    with start(rootfs, script, "--stop-timeout", "0.5") as process:
        wait_for_line(process, "ready")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        run = finish(process)
    elapsed = time.monotonic() - began
    assert run.returncode == 128 + signal.SIGKILL
    assert 0.4 < elapsed < 10
    assert "stop timeout" in str(run.record("container.killed")["reason"])


def test_second_interrupt_kills_at_once(rootfs: Path) -> None:
    script = 'trap "" TERM INT; echo ready; while :; do sleep 0.05; done'
    with start(rootfs, script, "--stop-timeout", "60") as process:
        wait_for_line(process, "ready")
        # Two SIGINTs pending at once would be one: send the second once the first is read.
        wait_until(lambda: reads_its_signals(process.pid), "the supervisor's signalfd")
        process.send_signal(signal.SIGINT)
        wait_until(lambda: not signal_pending(process.pid, signal.SIGINT), "the first SIGINT")
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        run = finish(process)
    assert run.returncode == 128 + signal.SIGKILL
    assert time.monotonic() - began < 5
    assert "second stop request" in str(run.record("container.killed")["reason"])


def container_pids(supervisor: int) -> set[int]:
    return descendants(supervisor)


def test_sigkill_of_the_supervisor_leaves_nothing_behind(rootfs: Path) -> None:
    with start(rootfs, "sleep 60 & echo ready; sleep 60") as process:
        wait_for_line(process, "ready")
        deadline = time.monotonic() + 5
        while len(inside := container_pids(process.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(inside) == 4, "init, the shell and its two sleeps"
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") and
                                                  _alive(pid) for pid in inside):
            time.sleep(0.02)
        assert not [pid for pid in inside if _alive(pid)], "container outlived its supervisor"
        process.communicate()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ignore_signals_like_a_careless_parent() -> None:
    """Runs in the CLI's process before exec: ignore SIGPIPE, SIGXFSZ and glibc's reserved
    signal 32, block SIGUSR1, to check that none of it reaches the workload."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    ignore = ctypes.create_string_buffer(32)
    ctypes.memmove(ignore, (ctypes.c_ulong * 1)(1), 8)  # SIG_IGN
    ctypes.CDLL(None).syscall(13, 32, ignore, None, 8)  # rt_sigaction on x86_64
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])


def test_workload_sees_default_signal_dispositions(pyctr) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the careless parent uses the x86_64 system call number")
    run = pyctr("/bin/sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status",
                preexec_fn=ignore_signals_like_a_careless_parent, restore_signals=False)
    fields = dict(line.split(":\t") for line in run.stdout.splitlines())
    assert int(fields["SigBlk"], 16) == 0, "the workload inherited a blocked signal mask"
    assert int(fields["SigIgn"], 16) == 0, "the workload inherited ignored signals (SIGPIPE?)"


@pytest.mark.parametrize("target", ["group", "main"])
def test_signal_target_chooses_the_group_or_the_main_process(rootfs: Path, target: str) -> None:
    child = "trap 'echo child got it' USR1; echo ready; while :; do sleep 0.02; done"
    script = f'trap "echo main got it" USR1; sh -c "{child}" & while :; do wait; done'
    expected = {"group": {"main got it", "child got it"}, "main": {"main got it"}}[target]
    process = subprocess.Popen([CLI, "--signal-target", target, str(rootfs), "/bin/sh", "-c",
                                script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        stdout = LineReader(process.stdout)
        assert stdout.line() == "ready"
        process.send_signal(signal.SIGUSR1)
        assert {stdout.line() for _ in expected} == expected
        assert stdout.quiet_for(0.5), "a process outside the target got the signal too"
    finally:
        process.kill()
        process.wait(timeout=20)
        assert process.stdout is not None
        process.stdout.close()


def test_stop_signal_replaces_a_forwarded_sigterm(rootfs: Path) -> None:
    script = ('trap "echo got QUIT; exit 0" QUIT; trap "echo got TERM; exit 0" TERM; '
              "echo ready; while :; do sleep 0.02; done")
    with start(rootfs, script, "--stop-signal", "SIGQUIT") as process:
        wait_for_line(process, "ready")
        process.send_signal(signal.SIGTERM)
        run = finish(process)
    assert run.stdout == "got QUIT\n"
    assert run.returncode == 0
    forwarded = run.record("signal.forwarded")
    assert (forwarded["received"], forwarded["signal"]) == ("SIGTERM", "SIGQUIT")
