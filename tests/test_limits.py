"""Bounded runs, for real: cgroup limits, the OOM killer, the result record, the wall-clock
timeout, what is left when the main process exits, and 200 containers at once.

Every test runs real containers as root on this host's cgroups (v1 controllers here; the v2
path is tested against a recording fake in test_cgroup_limits.py). The ``no_leaks`` fixture
checks after each test that no cgroup, mount or process of the tests' is left.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path

import pytest
import trio
from conftest import requires_root
from helpers import CLI, assert_one_line_error, run_cli

from pyctr.supervisor import ContainerConfig, PyctrError, run
from pyctr.supervisor.cgroup import PARENT, cgroup_path, host_layout

pytestmark = requires_root

RECORD_FIELDS = ("container", "exit_code", "signal", "wall_time_s", "cpu_time_s",
                 "memory_peak_bytes", "oom_killed", "timed_out", "remaining_processes",
                 "remaining_killed", "error", "message")
# A shell that doubles a string until something stops it: memory grows without bound.
MEMORY_HOG = "x=a; while :; do x=$x$x; done"
BUSY_LOOP = "while :; do :; done"


def run_with_record(*args: str, timeout: float = 60) -> tuple[int, dict[str, object], str]:
    """Run the CLI with ``--status-fd 3``; its exit code, the record, and its stdout."""
    read_end, write_end = os.pipe()
    try:
        # bash (dash takes single-digit descriptors only) gives the CLI the pipe as 3.
        completed = subprocess.run(["/bin/bash", "-c", f'exec "$0" "$@" 3>&{write_end}', CLI,
                                    "--status-fd", "3", *args], capture_output=True,
                                   text=True, timeout=timeout, pass_fds=(write_end,))
    finally:
        os.close(write_end)
    with os.fdopen(read_end) as reader:
        text = reader.read()
    assert text.endswith("\n") and text.count("\n") == 1, text
    record = json.loads(text)
    assert tuple(record) == RECORD_FIELDS, record
    return completed.returncode, record, completed.stdout


def v1_only() -> None:
    if host_layout().kind != "v1":
        pytest.skip("reads cgroup v1 files; the v2 path is tested with a fake")


# -- Limits ---------------------------------------------------------------------------------


def test_the_limits_reach_the_containers_own_cgroup(rootfs: Path) -> None:
    v1_only()
    code, record, out = run_with_record(
        "--memory", "64m", "--memory-swap", "96m", "--cpus", "0.5", "--cpu-shares", "512",
        "--pids-limit", "40", "--cpuset-cpus", "0", str(rootfs), "/bin/sh", "-c",
        "cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes cpu/cpu.cfs_quota_us "
        "cpu/cpu.cfs_period_us cpu/cpu.shares pids/pids.max cpuset/cpuset.cpus; "
        "test -e memory/memory.memsw.limit_in_bytes && cat memory/memory.memsw.limit_in_bytes"
        " || echo 100663296")
    assert code == 0, record
    assert out.split() == [str(64 << 20), "50000", "100000", "512", "40", "0",
                           str(96 << 20)]
    assert record["error"] is None and record["exit_code"] == 0


def test_a_cgroup_namespace_shows_the_container_its_own_cgroup_as_the_root(
        rootfs: Path) -> None:
    run = run_cli("--memory", "64m", str(rootfs), "/bin/cat", "/proc/self/cgroup")
    assert run.returncode == 0, run.stderr
    paths = {line.split(":", 2)[2] for line in run.stdout.splitlines()}
    assert paths == {"/"}, run.stdout


def test_a_fork_bomb_stops_at_the_pids_limit_and_the_host_stays_responsive(
        rootfs: Path) -> None:
    # Each shell forks two more until the limit refuses; the bomb is bounded by the
    # timeout, after which everything in the container is killed.
    started = time.monotonic()
    code, record, out = run_with_record(
        "--pids-limit", "32", "--timeout", "4", "--stop-timeout", "1", str(rootfs),
        "/bin/bash", "-c", "b() { b | b & }; b 2>/dev/null; sleep 2; "
                           "ps -e --no-headers | wc -l", timeout=60)
    # The host forks and answers at once while the bomb runs in its cgroup.
    probe = subprocess.run(["/bin/true"], timeout=5)
    assert probe.returncode == 0
    elapsed = time.monotonic() - started
    if code == 0:  # the count came out before the timeout: the limit held it
        assert int(out.split()[-1]) <= 32, out
    else:
        assert code == 124 and record["timed_out"] is True, record
    assert elapsed < 30


def test_the_pids_limit_refuses_the_process_after_the_last(rootfs: Path) -> None:
    # Exactly: the init and the shell are two of ten, so eight sleeps start and the ninth
    # fork fails (dash then gives up with status 2); init then stops the eight.
    code, record, out = run_with_record(
        "--pids-limit", "10", "--stop-timeout", "1", str(rootfs), "/bin/sh", "-c",
        "i=0; while [ $i -lt 12 ]; do sleep 30 & i=$((i+1)); echo $i; done")
    assert code == 2, record
    assert out.split()[-1] == "8"
    assert record["remaining_processes"] == 8 and record["remaining_killed"] == 0


def test_a_memory_hog_is_oom_killed_at_its_limit_and_reported(rootfs: Path) -> None:
    run = run_cli("-m", "32m", "--log-format", "json", str(rootfs), "/bin/sh", "-c",
                  MEMORY_HOG)
    assert run.returncode == 137
    oom = run.record("container.oom")
    assert oom["level"] == "warning" and oom["oom_kills"] >= 1
    exited = run.record("workload.exited")
    assert exited["signal"] == "SIGKILL" and exited["oom_killed"] is True


def test_oom_of_another_process_is_reported_too(rootfs: Path) -> None:
    # The main shell survives its child's OOM kill and exits 0 itself: the container still
    # ends as OOM-killed (docker's OOMKilled), with the status the OOM killer gives, 137.
    code, record, out = run_with_record(
        "-m", "32m", str(rootfs), "/bin/sh", "-c",
        f"/bin/sh -c '{MEMORY_HOG}'; echo child=$?")
    assert out.strip() == "child=137"
    assert code == 137 and record["exit_code"] == 137
    assert record["oom_killed"] is True and record["signal"] is None
    assert record["memory_peak_bytes"] <= 32 << 20
    assert record["error"] is None


def test_cpus_holds_a_busy_loop_near_its_share(rootfs: Path) -> None:
    # Two seconds of a busy loop at half a CPU: about one second of CPU time, measured by
    # the container's cgroup and by the test itself (its children's rusage includes the
    # supervisor, whose init and workload it waited for: an upper bound).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, record, _ = run_with_record(
        "--cpus", "0.5", str(rootfs), "/usr/bin/timeout", "2", "/bin/sh", "-c", BUSY_LOOP)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert code == 124, record  # timeout(1)'s own status
    cpu = record["cpu_time_s"]
    assert isinstance(cpu, float)
    assert 0.7 <= cpu <= 1.3, record
    wall = record["wall_time_s"]
    assert isinstance(wall, float) and 1.9 <= wall <= 3.0
    used_by_children = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert cpu <= used_by_children + 0.05


def test_without_cpus_a_busy_loop_gets_a_whole_cpu(rootfs: Path) -> None:
    # The other side of the comparison above: the same loop, unthrottled.
    code, record, _ = run_with_record(
        str(rootfs), "/usr/bin/timeout", "1", "/bin/sh", "-c", BUSY_LOOP)
    assert code == 124
    assert 0.75 <= record["cpu_time_s"] <= 1.3, record  # type: ignore[operator]


# -- The record -----------------------------------------------------------------------------


def test_the_records_figures_match_what_the_test_measures(rootfs: Path,
                                                          tmp_path: Path) -> None:
    # dd with a 40 MiB block touches 40 MiB; sleep 0.5 makes the wall time.
    status = tmp_path / "status.json"
    started = time.monotonic()
    completed = subprocess.run(
        [CLI, "--status-file", str(status), "-m", "128m", str(rootfs), "/bin/sh", "-c",
         "dd if=/dev/zero of=/dev/null bs=40M count=2 2>/dev/null; sleep 0.5; exit 3"],
        capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    record = json.loads(status.read_text())
    assert completed.returncode == record["exit_code"] == 3
    assert record["signal"] is None and record["error"] is None and record["message"] is None
    assert not record["oom_killed"] and not record["timed_out"]
    assert 0.5 <= record["wall_time_s"] <= elapsed
    assert 40 << 20 <= record["memory_peak_bytes"] <= 128 << 20
    assert 0 < record["cpu_time_s"] < elapsed
    assert oct(status.stat().st_mode & 0o777) == "0o644"


def test_the_logs_duration_is_the_workloads_wall_time(rootfs: Path) -> None:
    # Not the supervisor's time since it started (which includes its imports).
    run = run_cli(str(rootfs), "/bin/true")
    duration = run.record("workload.exited")["duration_s"]
    assert isinstance(duration, float) and 0 < duration < 0.1, duration


def test_the_workload_cannot_write_the_record(rootfs: Path) -> None:
    # The descriptor the record goes to is not the container's: the workload cannot forge it.
    code, record, out = run_with_record(str(rootfs), "/bin/sh", "-c",
                                        "(echo forged >&3) 2>/dev/null && echo wrote || "
                                        "echo refused")
    assert out == "refused\n" and code == 0 and record["exit_code"] == 0


def test_a_setup_failure_is_told_apart_from_a_workload_exiting_127(rootfs: Path) -> None:
    code, failed, _ = run_with_record(str(rootfs), "no-such-command")
    assert code == 127 and failed["exit_code"] == 127
    assert failed["error"] == "command.not_found" and failed["message"]
    code, ran, _ = run_with_record(str(rootfs), "/bin/sh", "-c", "exit 127")
    assert code == 127 and ran["exit_code"] == 127
    assert ran["error"] is None and ran["message"] is None


def test_a_failure_before_the_container_gets_a_record_too(tmp_path: Path) -> None:
    code, record, _ = run_with_record(str(tmp_path / "missing"), "/bin/true")
    assert code == 125 and record["exit_code"] == 125
    assert record["error"] == "rootfs.missing"


@pytest.mark.parametrize(("args", "fragments"), [
    (["--memory", "lots"], ["--memory", "lots"]),
    (["--memory", "1m"], ["--memory", "6m"]),
    (["--memory-swap", "64m"], ["--memory-swap", "--memory"]),
    (["--cpus", "-1"], ["--cpus"]),
    (["--cpus", "999"], ["--cpus"]),
    (["--pids-limit", "ten"], ["--pids-limit"]),
    (["--cpuset-cpus", "0-x"], ["--cpuset-cpus"]),
    (["--cpuset-cpus", "999"], ["--cpuset-cpus"]),
    (["--timeout", "0"], ["--timeout"]),
    (["--status-fd", "99"], ["--status-fd 99"]),
    (["--status-file", "/no/such/dir/status.json"], ["status file", "/no/such/dir"]),
])
def test_bad_values_get_one_line_and_125_with_nothing_made(
        rootfs: Path, args: list[str], fragments: list[str]) -> None:
    run = run_cli(*args, str(rootfs), "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, *fragments)


def test_a_limit_the_host_cannot_apply_is_one_line_and_leaves_nothing(
        rootfs: Path, tmp_path: Path) -> None:
    # A cpuset naming a memory node this host lacks: the kernel refuses the write, after the
    # cgroup was made; it must be removed again.
    run = run_cli("--cpuset-mems", "7", str(rootfs), "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, "cpuset.mems")


# -- The timeout ----------------------------------------------------------------------------


def test_timeout_stops_the_container_and_exits_124(rootfs: Path) -> None:
    started = time.monotonic()
    code, record, _ = run_with_record("--timeout", "1", str(rootfs), "/bin/sleep", "30")
    elapsed = time.monotonic() - started
    assert code == 124 and record["timed_out"] is True
    assert record["signal"] == "SIGTERM"  # the stop signal ended it
    assert 0.9 <= record["wall_time_s"] <= 1.5 and elapsed < 5


def test_timeout_kills_a_workload_that_ignores_the_stop_signal(rootfs: Path) -> None:
    started = time.monotonic()
    code, record, _ = run_with_record(
        "--timeout", "1", "--stop-timeout", "1", str(rootfs), "/bin/sh", "-c",
        "trap '' TERM; while :; do sleep 0.1; done")
    assert code == 124 and record["timed_out"] is True and record["signal"] == "SIGKILL"
    assert time.monotonic() - started < 6


def test_ulimit_cpu_is_cpu_seconds_not_throttling(rootfs: Path) -> None:
    # RLIMIT_CPU signals SIGXCPU after one CPU second (SIGKILL at the hard limit),
    # whatever --cpus says.
    code, record, _ = run_with_record(
        "--ulimit", "cpu=1:5", "--timeout", "10", str(rootfs), "/bin/sh", "-c", BUSY_LOOP)
    assert code == 128 + 24 and record["signal"] == "SIGXCPU", record
    assert not record["timed_out"]


# -- What is left when the main process exits -----------------------------------------------


def test_a_daemon_does_not_outlive_the_run(rootfs: Path) -> None:
    code, record, _ = run_with_record(
        str(rootfs), "/bin/sh", "-c", "setsid sleep 300 & setsid sleep 301 & exit 0")
    assert code == 0
    assert record["remaining_processes"] == 2 and record["remaining_killed"] == 0
    assert record["wall_time_s"] < 1  # type: ignore[operator]
    # no_leaks checks no sleep is left on the host.


def test_remaining_processes_get_the_stop_timeout_then_sigkill(rootfs: Path) -> None:
    started = time.monotonic()
    run = run_cli("--stop-timeout", "1", str(rootfs), "/bin/sh", "-c",
                  "setsid sh -c \"trap '' TERM; sleep 300\" & sleep 0.2; exit 5")
    elapsed = time.monotonic() - started
    assert run.returncode == 5
    exited = run.record("workload.exited")
    assert exited["remaining_processes"] == 2 and exited["remaining_killed"] == 2, exited
    stopped = run.record("container.remaining_stopped")
    assert stopped["source"] == "init" and stopped["killed"] == 2
    assert 1 <= elapsed < 10


# -- The cgroup's place ---------------------------------------------------------------------


def test_cgroups_path_from_a_bundle_is_honoured_and_removed(rootfs: Path,
                                                           tmp_path: Path) -> None:
    v1_only()
    name = f"limits-{os.getpid()}"
    relative = f"{PARENT}/custom-{name}"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    spec = subprocess.run([CLI, "spec", str(rootfs), "/bin/sh", "-c",
                           "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; sleep 0.3"],
                          capture_output=True, text=True, check=True).stdout
    document = json.loads(spec)
    document["linux"]["cgroupsPath"] = f"/{relative}"
    document["linux"].setdefault("resources", {})["memory"] = {"limit": 50 << 20}
    (bundle / "config.json").write_text(json.dumps(document))
    memory = host_layout().hierarchies["memory"]
    with subprocess.Popen([CLI, "--name", name, "--bundle", str(bundle)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 10
        while not os.path.isdir(os.path.join(memory, relative)):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.split() == [str(50 << 20)]
    assert not os.path.exists(os.path.join(memory, relative))
    assert cgroup_path(name, f"/{relative}") == relative


# -- Scale ----------------------------------------------------------------------------------


async def test_two_hundred_containers_at_once_each_limited(rootfs: Path) -> None:
    count = 200
    results: dict[int, object] = {}

    async def one(index: int) -> None:
        config = ContainerConfig(rootfs, ["/bin/sh", "-c", f"echo {index}; exit {index % 7}"],
                                 name=f"scale-{os.getpid()}-{index}", memory="64m",
                                 pids_limit=20)
        results[index] = await run(config, capture_stdout=True)

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    elapsed = time.monotonic() - started
    assert len(results) == count
    for index, result in results.items():
        record = result.record()  # type: ignore[attr-defined]
        assert record["error"] is None, record
        assert record["exit_code"] == index % 7
        assert result.stdout == f"{index}\n".encode()  # type: ignore[attr-defined]
        assert not record["oom_killed"] and not record["timed_out"]
        assert 0 < record["wall_time_s"] < elapsed
        assert 0 < record["memory_peak_bytes"] <= 64 << 20
        assert record["cpu_time_s"] > 0
    # no_leaks: no cgroup, mount or process of theirs is left.


async def test_the_library_reports_timeout_and_oom(rootfs: Path) -> None:
    timed = await run(ContainerConfig(rootfs, ["/bin/sleep", "30"], timeout=0.5,
                                      stop_timeout=1))
    assert timed.timed_out and timed.exit_code == 124 and timed.record()["timed_out"]
    oom = await run(ContainerConfig(rootfs, ["/bin/sh", "-c", MEMORY_HOG], memory="32m"))
    assert oom.oom_killed and oom.exit_code == 137


async def test_the_library_refuses_bad_limits_with_one_line() -> None:
    with pytest.raises(PyctrError) as caught:
        ContainerConfig("/", ["true"], memory="12q")
    assert caught.value.error == "usage.invalid" and "\n" not in caught.value.message
    with pytest.raises(PyctrError):
        ContainerConfig("/", ["true"], timeout=-1)
