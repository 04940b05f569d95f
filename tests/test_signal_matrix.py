"""Black-box, the way dumb-init and tini test themselves: a workload that prints every signal
it receives, every catchable signal sent to the supervisor, and every exit code."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import CLI, LineReader, process_state, wait_until

pytestmark = requires_root

CATCHABLE = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)]
JOB_CONTROL = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
# Default action "ignore" or "stop": sending them does not end a plain workload.
NOT_FATAL = {signal.SIGCONT, signal.SIGURG, signal.SIGWINCH} | JOB_CONTROL

PRINT_SIGNALS = (
    "for s in " + " ".join(map(str, CATCHABLE)) + "; do trap \"echo got $s\" $s; done; "
    "echo ready; while :; do sleep 0.02; done"
)


def name(signum: int) -> str:
    return signal.Signals(signum).name


class Supervisor:
    """A running ``pyctr-supervise`` and its stdout, line by line with a deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process = process
        self.stdout = LineReader(process.stdout)

    def line(self, timeout: float = 10) -> str:
        return self.stdout.line(timeout)


@contextmanager
def supervisor(rootfs: Path, *command: str) -> Iterator[Supervisor]:
    process = subprocess.Popen([CLI, "--log-level", "error", str(rootfs), *command],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        yield Supervisor(process)
    finally:
        # Whatever happened above, the container goes (PR_SET_PDEATHSIG) with its supervisor.
        process.kill()
        process.wait(timeout=20)
        assert process.stdout is not None
        process.stdout.close()


@pytest.mark.parametrize("signum", CATCHABLE, ids=name)
def test_every_catchable_signal_reaches_the_workload(rootfs: Path, signum: int) -> None:
    with supervisor(rootfs, "/bin/sh", "-c", PRINT_SIGNALS) as running:
        assert running.line() == "ready"
        running.process.send_signal(signum)
        expected = {f"got {signum}"}
        if signum in JOB_CONTROL:
            # pyctr stops itself like a foreground job after passing the signal on; `fg`
            # sends SIGCONT, which resumes it and is forwarded too. The shell may run the
            # two traps in either order (dash runs pending traps by signal number).
            wait_until(lambda: process_state(running.process.pid) == "T", "pyctr to stop")
            running.process.send_signal(signal.SIGCONT)
            expected.add(f"got {signal.SIGCONT}")
        seen = {running.line() for _ in expected}
        assert seen == expected


@pytest.mark.parametrize("signum", [s for s in CATCHABLE if s not in NOT_FATAL], ids=name)
def test_death_by_any_signal_is_128_plus_n(rootfs: Path, signum: int) -> None:
    with supervisor(rootfs, "/bin/sh", "-c", "echo ready; exec sleep 100") as running:
        assert running.line() == "ready"
        running.process.send_signal(signum)
        assert running.process.wait(timeout=30) == 128 + signum


@pytest.mark.parametrize("code", range(256))
def test_every_exit_code(rootfs: Path, code: int) -> None:
    completed = subprocess.run([CLI, "--log-level", "error", str(rootfs), "/bin/sh", "-c",
                                f"exit {code}"], capture_output=True, text=True, timeout=60)
    assert completed.returncode == code, completed.stderr
