"""podman drives an OCI runtime: runc (the reference) and pyctr's runc-compatible binary.

Each test runs once per runtime, through ``podman --runtime PATH`` in an isolated podman
(tests/podman_env.py) with an image imported from the test rootfs. Set
PYCTR_PODMAN_CALL_LOG=FILE to have every runtime call podman makes (argv, environment keys,
descriptors) appended to FILE.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import requires_root
from helpers import wait_until
from podman_env import IMAGE, PODMAN, Podman, PodmanEnv, write_call_logger

pytestmark = [
    requires_root,
    pytest.mark.skipif(not os.path.exists(PODMAN), reason="podman is not installed"),
]

PYCTR_OCI = Path(sys.executable).with_name("pyctr")


def runtime_path(name: str) -> str | None:
    if name == "pyctr":
        return str(PYCTR_OCI) if PYCTR_OCI.exists() else None
    return shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(path)),
        None)


@pytest.fixture(scope="session")
def podman_env(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanEnv]:
    """One isolated podman for the session, with the rootfs imported as IMAGE."""
    env = PodmanEnv(tmp_path_factory.mktemp("podman"))
    try:
        env.import_image(rootfs)
        yield env
    finally:
        env.teardown()


@pytest.fixture(params=["runc", "pyctr"])
def podman(request: pytest.FixtureRequest, podman_env: PodmanEnv) -> Iterator[Podman]:
    """podman with the runtime of the parameter; every container is gone afterwards."""
    name: str = request.param
    path = runtime_path(name)
    if path is None:
        where = PYCTR_OCI if name == "pyctr" else "PATH, /usr/sbin or /usr/bin"
        pytest.skip(f"OCI runtime {name} is not installed (no {where})")
    call_log = os.environ.get("PYCTR_PODMAN_CALL_LOG")
    if call_log:
        path = write_call_logger(podman_env.directory / f"log-{name}", path, Path(call_log))
    bound = podman_env.with_runtime(path)
    try:
        yield bound
    finally:
        bound.remove_all()
    left = podman_env.leftovers()
    assert not left, f"left behind by podman/{name}: {left}"


def started(podman: Podman, *args: str) -> str:
    """``podman run -d ARGS``; the container's id."""
    done = podman.run("-d", IMAGE, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def inspect(podman: Podman, container: str, template: str) -> str:
    done = podman("inspect", "--format", template, container)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def logs_contain(podman: Podman, container: str, text: str) -> bool:
    done = podman("logs", container)
    return text in done.stdout


def test_run_prints_and_exits_zero(podman: Podman) -> None:
    done = podman.run("--rm", "--network=none", IMAGE, "echo", "hi")
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr


def test_run_passes_the_exit_code_and_stderr_through(podman: Podman) -> None:
    done = podman.run("--rm", IMAGE, "sh", "-c", "echo out; echo oops >&2; exit 7")
    assert (done.returncode, done.stdout) == (7, "out\n"), done.stderr
    assert "oops" in done.stderr


def test_a_missing_command_is_127_and_a_directory_126(podman: Podman) -> None:
    """podman reads the runtime's error (its --log file) to tell these apart, as docker."""
    missing = podman.run("--rm", IMAGE, "/nonexistent")
    assert missing.returncode == 127, missing.stderr
    not_executable = podman.run("--rm", IMAGE, "/etc")
    assert not_executable.returncode == 126, not_executable.stderr


def test_stop_kills_a_workload_that_ignores_term_after_the_timeout(podman: Podman) -> None:
    container = started(podman, "sh", "-c", 'trap "" TERM; echo ready; sleep 300')
    wait_until(lambda: logs_contain(podman, container, "ready"), "the trap")
    assert inspect(podman, container, "{{.State.Status}}") == "running"
    begin = time.monotonic()
    stopped = podman("stop", "-t", "2", container)
    took = time.monotonic() - begin
    assert stopped.returncode == 0, stopped.stderr
    assert 1.9 <= took < 4.5, f"podman stop -t 2 took {took:.2f}s"
    assert inspect(podman, container, "{{.State.Status}}") == "exited"
    assert inspect(podman, container, "{{.State.ExitCode}}") == "137"  # SIGKILL
    removed = podman("rm", container)
    assert removed.returncode == 0, removed.stderr


def test_stop_ends_a_workload_that_exits_on_term_quickly(podman: Podman) -> None:
    # `wait` returns at once on a trapped signal (a foreground sleep would delay the trap).
    container = started(podman, "sh", "-c",
                        'trap "exit 42" TERM; echo ready; sleep 300 & wait $!')
    wait_until(lambda: logs_contain(podman, container, "ready"), "the trap")
    begin = time.monotonic()
    stopped = podman("stop", "-t", "10", container)
    took = time.monotonic() - begin
    assert stopped.returncode == 0, stopped.stderr
    assert took < 2, f"podman stop took {took:.2f}s for a workload that exits on TERM"
    assert inspect(podman, container, "{{.State.ExitCode}}") == "42"  # the trap ran
    removed = podman("rm", container)
    assert removed.returncode == 0, removed.stderr


def test_exec_in_a_running_container(podman: Podman) -> None:
    container = started(podman, "sleep", "300")
    done = podman("exec", container, "echo", "from-exec")
    assert (done.returncode, done.stdout) == (0, "from-exec\n"), done.stderr
    failed = podman("exec", container, "sh", "-c", "echo to-stderr >&2; exit 5")
    assert (failed.returncode, failed.stdout) == (5, ""), failed.stderr
    assert "to-stderr" in failed.stderr
    # Exec'd processes share the container's PID namespace. runc's PID 1 is the workload;
    # pyctr's is its init, and the workload PID 2.
    comm = podman("exec", container, "cat", "/proc/1/comm", "/proc/2/comm")
    expected = "pyctr-init\nsleep\n" if os.path.basename(podman.runtime) == "pyctr" \
        else "sleep\n"
    assert comm.stdout.startswith(expected), comm.stderr
    assert inspect(podman, container, "{{.State.Status}}") == "running"


def test_run_with_a_terminal(podman: Podman) -> None:
    command, *args = podman.command(*podman.env.run_args("-it", "--rm", IMAGE, "sh"))
    child = pexpect.spawn(command, args, env=podman.env.env, dimensions=(24, 80),
                          encoding="utf-8", timeout=15)
    try:
        child.expect_exact("# ")
        child.sendline("echo $((6*7)); tty; stty size; exit 3")
        child.expect_exact("42")
        child.expect_exact("/dev/pts/0")
        child.expect_exact("24 80")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert (child.exitstatus, child.signalstatus) == (3, None)


def test_kill_delivers_a_signal_to_the_workload(podman: Podman) -> None:
    container = started(podman, "sh", "-c",
                        'trap "echo got-usr1; echo got-usr1 > /tmp/x" USR1; echo ready; '
                        "while :; do sleep 0.1; done")
    # Until the trap is set, USR1 to PID 1 of a PID namespace would be dropped.
    wait_until(lambda: logs_contain(podman, container, "ready"), "the trap")
    killed = podman("kill", "-s", "USR1", container)
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: logs_contain(podman, container, "got-usr1"), "the trap's output")
    read = podman("exec", container, "cat", "/tmp/x")
    assert (read.returncode, read.stdout) == (0, "got-usr1\n"), read.stderr
    assert inspect(podman, container, "{{.State.Status}}") == "running"


def test_pause_freezes_the_workload_until_unpause(podman: Podman) -> None:
    container = started(podman, "sh", "-c",
                        "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done")
    # Read the counter from the host, through the container's root filesystem: podman
    # refuses exec in a paused container.
    mounted = podman("mount", container)
    assert mounted.returncode == 0, mounted.stderr
    counter = Path(mounted.stdout.strip()) / "tmp" / "count"
    try:

        def count() -> int:
            return int(counter.read_text() or 0)  # empty for a moment when rewritten

        wait_until(lambda: counter.exists() and count() >= 3, "the counter")
        paused = podman("pause", container)
        assert paused.returncode == 0, paused.stderr
        assert inspect(podman, container, "{{.State.Status}}") == "paused"
        frozen = count()
        time.sleep(1)  # ~10 increments if the workload were running
        assert count() == frozen, "the counter moved while paused"
        assert podman("exec", container, "true").returncode != 0
        unpaused = podman("unpause", container)
        assert unpaused.returncode == 0, unpaused.stderr
        assert inspect(podman, container, "{{.State.Status}}") == "running"
        wait_until(lambda: count() >= frozen + 3, "the counter to move again", timeout=5)
    finally:
        podman("unmount", container)
