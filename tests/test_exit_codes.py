"""The exit-code contract (as docker run): the workload's own code, 128+N for death by signal
N, 125 when pyctr fails, 126 when the command cannot be executed, 127 when it is not found."""

from __future__ import annotations

import signal

import pytest
from conftest import requires_root

pytestmark = requires_root


@pytest.mark.parametrize("code", [0, 1, 2, 42, 124, 125, 126, 127, 128, 200, 255])
def test_workload_exit_code_is_passed_through(pyctr, code: int) -> None:
    run = pyctr("/bin/sh", "-c", f"exit {code}")
    assert run.returncode == code
    exited = run.record("workload.exited")
    assert exited["exit_code"] == code and exited["signal"] is None
    assert not run.other_stderr, "a workload's own failure is not pyctr's error"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV,
                                    signal.SIGABRT, signal.SIGUSR1, signal.SIGHUP])
def test_death_by_signal_is_128_plus_n(pyctr, signum: int) -> None:
    run = pyctr("/bin/sh", "-c", f"kill -{int(signum)} $$")
    assert run.returncode == 128 + signum
    exited = run.record("workload.exited")
    assert exited["signal"] == signal.Signals(signum).name
    assert exited["exit_code"] is None


def test_command_not_found_is_127(pyctr) -> None:
    run = pyctr("no-such-command", "arg")
    assert run.returncode == 127
    assert len(run.other_stderr) == 1
    line = run.other_stderr[0]
    assert line.startswith("pyctr-supervise: error: command 'no-such-command' not found")
    assert "PATH" in line and "rootfs" in line
    assert run.record("container.failed")["error"] == "command.not_found"


def test_missing_absolute_path_is_127(pyctr) -> None:
    run = pyctr("/opt/nothing/here")
    assert run.returncode == 127
    assert "/opt/nothing/here" in run.other_stderr[0]


def test_not_executable_is_126(pyctr) -> None:
    run = pyctr("/etc/passwd")
    assert run.returncode == 126
    assert "cannot execute /etc/passwd" in run.other_stderr[0]
    assert "chmod +x" in run.other_stderr[0]


def test_directory_is_126(pyctr) -> None:
    assert pyctr("/etc").returncode == 126


def test_success_prints_nothing_but_the_workload_output(pyctr) -> None:
    run = pyctr("/bin/echo", "hi")
    assert (run.returncode, run.stdout, run.other_stderr) == (0, "hi\n", [])
