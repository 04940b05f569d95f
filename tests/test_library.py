"""The trio API: ``await run(config)`` from a trio program, concurrency, cancellation, and
events through the caller's structlog configuration."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import structlog
import trio
from conftest import requires_root

from pyctr.supervisor import (
    Container,
    ContainerConfig,
    ContainerFailed,
    ContainerResult,
    PyctrError,
    run,
)

pytestmark = requires_root


async def test_run_returns_the_result(rootfs: Path) -> None:
    result = await run(ContainerConfig(rootfs, ["/bin/sh", "-c", "exit 3"], name="lib-1"))
    assert result.exit_code == result.returncode == 3
    assert result.container == "lib-1"
    assert result.started and result.pid == 2
    assert result.error is None and result.signal is None
    assert result.wall_time_s > 0 and result.cpu_time_s > 0 and result.memory_peak_bytes > 0
    assert not (result.oom_killed or result.timed_out)
    assert result.record()["exit_code"] == 3 and result.record()["error"] is None


async def test_setup_failure_is_kept_apart_from_the_exit_code(rootfs: Path) -> None:
    result = await run(ContainerConfig(rootfs, ["no-such-program"]))
    assert result.exit_code == 127
    assert result.error == "command.not_found"
    assert result.message and "no-such-program" in result.message
    assert not result.started


async def test_check_raises(rootfs: Path) -> None:
    with pytest.raises(ContainerFailed) as caught:
        await run(ContainerConfig(rootfs, ["/bin/false"]), check=True)
    assert caught.value.result.exit_code == 1


async def test_host_problems_raise(tmp_path: Path) -> None:
    with pytest.raises(PyctrError, match="does not exist"):
        await run(ContainerConfig(tmp_path / "missing", ["/bin/true"]))


async def test_containers_run_concurrently(rootfs: Path) -> None:
    results = {}

    async def one(index: int) -> None:
        config = ContainerConfig(rootfs, ["/bin/sh", "-c", f"sleep 0.5; exit {index}"])
        results[index] = await run(config)

    began = time.monotonic()
    async with trio.open_nursery() as nursery:
        for index in range(4):
            nursery.start_soon(one, index)
    assert {index: result.exit_code for index, result in results.items()} == {
        0: 0, 1: 1, 2: 2, 3: 3}
    assert time.monotonic() - began < 0.5 * 4, "containers ran one after another"


async def test_cancellation_stops_the_container(rootfs: Path) -> None:
    config = ContainerConfig(rootfs, ["/bin/sleep", "60"], stop_timeout=5)
    init_pid = None
    began = time.monotonic()
    with trio.move_on_after(0.5) as scope:
        async with trio.open_nursery() as nursery:
            container = await nursery.start(run, config)
            init_pid = container.init_pid
    assert scope.cancelled_caught
    assert init_pid is not None
    assert time.monotonic() - began < 5, "SIGTERM should have stopped sleep at once"
    assert not os.path.exists(f"/proc/{init_pid}")


async def test_cancellation_escalates_to_sigkill(rootfs: Path) -> None:
    script = 'trap "" TERM; while :; do sleep 0.05; done'
    config = ContainerConfig(rootfs, ["/bin/sh", "-c", script], stop_timeout=0.3)
    with structlog.testing.capture_logs() as logs, trio.move_on_after(0.5):
        await run(config)
    killed = [entry for entry in logs if entry["event"] == "container.killed"]
    assert killed and "stop timeout" in killed[0]["reason"]


async def test_events_go_through_the_callers_structlog(rootfs: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        await run(ContainerConfig(rootfs, ["/bin/true"], name="events"))
    events = [entry["event"] for entry in logs if entry.get("source") == "supervisor"]
    assert events == ["container.created", "container.ready", "workload.started",
                      "workload.exited", "container.cleanup_done"]
    assert all(entry["container"] == "events" for entry in logs)


async def test_stop_signal_is_configurable(rootfs: Path) -> None:
    script = 'trap "exit 42" USR1; trap "" TERM; while :; do sleep 0.05; done'
    config = ContainerConfig(rootfs, ["/bin/sh", "-c", script], stop_signal=signal.SIGUSR1)
    with structlog.testing.capture_logs() as logs, trio.move_on_after(0.5):
        await run(config)
    exited = [entry for entry in logs if entry["event"] == "workload.exited"]
    assert exited and exited[0]["exit_code"] == 42


async def test_output_and_input_as_bytes(rootfs: Path) -> None:
    script = "cat; printf 'to stderr\\n' >&2; printf '\\377'"
    result = await run(ContainerConfig(rootfs, ["/bin/sh", "-c", script]),
                       capture_stdout=True, capture_stderr=True, stdin=b"in\x00put\n")
    assert result.exit_code == 0
    assert result.stdout == b"in\x00put\n\xff"  # exact bytes, not text
    assert result.stderr == b"to stderr\n"


async def test_stdin_bytes_end_even_if_never_read(rootfs: Path) -> None:
    result = await run(ContainerConfig(rootfs, ["/bin/true"]), stdin=b"x" * (1 << 20),
                       capture_stdout=True)
    assert (result.exit_code, result.stdout) == (0, b"")


async def test_capture_as_bytes_and_as_records_do_not_mix(rootfs: Path) -> None:
    with pytest.raises(PyctrError, match="cannot be combined"):
        await run(ContainerConfig(rootfs, ["/bin/true"], capture_output=True),
                  capture_stdout=True)


async def test_a_started_container_can_be_signalled_and_stopped(rootfs: Path) -> None:
    script = ('trap "echo got USR1" USR1; trap "echo stopping; exit 5" TERM; echo ready; '
              "while :; do sleep 0.02; done")
    config = ContainerConfig(rootfs, ["/bin/sh", "-c", script], name="handle")
    results: list[ContainerResult] = []

    async def run_it(task_status: trio.TaskStatus[Container]) -> None:
        results.append(await run(config, capture_stdout=True, task_status=task_status))

    async with trio.open_nursery() as nursery:
        container = await nursery.start(run_it)
        assert isinstance(container, Container) and container.name == "handle"
        assert os.path.exists(f"/proc/{container.init_pid}")
        await trio.sleep(0.3)  # the traps are set once "ready" is out; give it time
        assert container.send_signal(signal.SIGUSR1)
        await trio.sleep(0.2)
        container.stop()
    [result] = results
    assert result.exit_code == 5
    assert result.stdout is not None
    assert result.stdout.decode().splitlines() == ["ready", "got USR1", "stopping"]
    assert not container.send_signal(signal.SIGUSR1), "the container is gone"


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of process ``pid`` contains ``needle`` (as root)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as memory:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r") or fields[-1] in ("[vvar]", "[vsyscall]"):
                continue
            start, end = (int(value, 16) for value in fields[0].split("-"))
            try:
                memory.seek(start)
                if needle in memory.read(end - start):
                    return True
            except OSError:
                continue  # a mapping that cannot be read (guard pages)
    return False


@pytest.mark.parametrize("other_thread", [False, True], ids=["one-thread", "threads"])
async def test_the_init_holds_nothing_of_the_calling_program(
        rootfs: Path, other_thread: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh interpreter, never a fork of the caller: no environment, no command line with
    # host paths, and none of the caller's memory (a password it holds, say).
    secret = f"pyctr-secret-{os.urandom(8).hex()}"
    monkeypatch.setenv("PYCTR_TEST_SECRET", secret)
    held = bytearray(secret.encode() * 2)  # in this program's memory only
    release = threading.Event()
    helper = threading.Thread(target=release.wait)
    results: list[ContainerResult] = []

    async def run_it(task_status: trio.TaskStatus[Container]) -> None:
        config = ContainerConfig(rootfs, ["/bin/sh", "-c", "echo ready; exec sleep 5"])
        results.append(await run(config, capture_stdout=True, task_status=task_status))

    if other_thread:
        helper.start()
    try:
        async with trio.open_nursery() as nursery:
            container = await nursery.start(run_it)
            await trio.sleep(0.3)  # posix_spawn returns before the init has started
            pid = container.init_pid
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                command = file.read()
            with open(f"/proc/{pid}/environ", "rb") as file:
                environment = file.read()
            leaked = memory_holds(pid, secret.encode())
            container.stop()
    finally:
        release.set()
        if other_thread:
            helper.join()
    [result] = results
    assert (result.error, result.stdout, result.exit_code) == (None, b"ready\n", 143)
    assert command == b"pyctr-init\0", command
    assert environment.strip(b"\0") == b"", environment
    assert not leaked, "the caller's secret is in the init's memory"
    assert held  # alive until here


async def test_library_containers_get_the_same_defaults_as_the_cli(rootfs: Path) -> None:
    # Capabilities, no_new_privs and the seccomp filter, through the template's init too.
    result = await run(ContainerConfig(rootfs, ["/bin/grep", "-E", "^(CapEff|NoNewPrivs|Seccomp):",
                                                "/proc/self/status"]), capture_stdout=True)
    fields = dict(line.split(":\t") for line in result.stdout.decode().splitlines())
    assert fields == {"CapEff": "00000000a80425fb", "NoNewPrivs": "1", "Seccomp": "2"}
    unconfined = await run(ContainerConfig(rootfs, ["/bin/grep", "Seccomp:", "/proc/self/status"],
                                           security_opt=["seccomp=unconfined"]),
                           capture_stdout=True)
    assert unconfined.stdout.split() == [b"Seccomp:", b"0"]
