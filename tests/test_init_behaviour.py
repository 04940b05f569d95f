"""What the init does as PID 1: reaps every zombie, orphans included, lets no host file
descriptor into the container, and tells the CLI when the workload has started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio
from conftest import requires_root
from helpers import CLI, Run

pytestmark = requires_root

LIST_STATES = 'for f in /proc/[0-9]*/stat; do read -r line < "$f" && echo "$line"; done'


def states(stdout: str) -> dict[int, str]:
    found = {}
    for line in stdout.splitlines():
        if ") " in line:
            pid = int(line.split(" ", 1)[0])
            found[pid] = line.rsplit(") ", 1)[1].split()[0]
    return found


def test_orphans_are_reparented_to_init_and_reaped(pyctr) -> None:
    # The inner shell exits at once, orphaning three sleeps; they end while the workload
    # still runs, so only the init can reap them.
    script = f'sh -c "sleep 0.1 & sleep 0.1 & sleep 0.1 &"; sleep 0.8; {LIST_STATES}'
    run = pyctr("/bin/sh", "-c", script)
    assert run.returncode == 0, run.stderr
    seen = states(run.stdout)
    assert 1 in seen and 2 in seen
    assert "Z" not in seen.values(), f"zombies left unreaped: {seen}"


def test_orphans_running_while_listed_belong_to_init(pyctr) -> None:
    script = 'sh -c "sleep 5 &"; sleep 0.3; for f in /proc/[0-9]*/stat; do cat "$f"; echo; done'
    run = pyctr("/bin/sh", "-c", script)
    parents = {}
    for line in run.stdout.splitlines():
        if ") " in line:
            fields = line.rsplit(") ", 1)[1].split()
            parents[line.split(" (")[0] + line.split(" (")[1].split(")")[0]] = fields[1]
    sleeps = {key: parent for key, parent in parents.items() if key.endswith("sleep")}
    assert "1" in sleeps.values(), f"the orphaned sleep was not adopted by init: {parents}"


def test_inheritable_host_descriptor_does_not_reach_the_container(rootfs: Path,
                                                                   tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("do not leak")
    fd = os.open(secret, os.O_RDONLY)
    try:
        os.set_inheritable(fd, True)
        completed = subprocess.run(
            [CLI, str(rootfs), "/bin/sh", "-c", "ls -l /proc/$$/fd"],
            pass_fds=(fd,), capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)
    run = Run(completed)
    assert run.returncode == 0, run.stderr
    assert "host-secret" not in run.stdout
    # `ls -l` lines end in "FD -> TARGET"; the shell's own are 0, 1 and 2.
    fds = {line.split(" -> ")[0].split()[-1] for line in run.stdout.splitlines() if " -> " in line}
    assert fds == {"0", "1", "2"}, f"unexpected descriptors in the workload: {run.stdout}"


def test_init_keeps_no_descriptor_but_its_socket_and_stdio(rootfs: Path) -> None:
    # Looked at from the host: the workload may not read /proc/1/fd (the init is not
    # dumpable). After a pause, since init closes its exec-status pipe once the workload
    # has exec'd.
    with subprocess.Popen([CLI, "--log-format", "json", str(rootfs), "/bin/sleep", "5"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            assert process.stderr is not None
            init_pid = None
            for line in process.stderr:
                if '"container.created"' in line:
                    init_pid = json.loads(line)["init_pid"]
                if '"workload.started"' in line:
                    break
            assert init_pid is not None
            time.sleep(0.2)
            targets = {name: os.readlink(f"/proc/{init_pid}/fd/{name}")
                       for name in os.listdir(f"/proc/{init_pid}/fd")}
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    extra = {fd: target for fd, target in targets.items() if fd not in ("0", "1", "2")}
    assert len(extra) == 1 and next(iter(extra.values())).startswith("socket:"), targets


STARTED_PIPE_SCRIPT = """
import json, os, select, sys, time
from pathlib import Path
from pyctr.linux import signal
from pyctr.supervisor import ContainerConfig
from pyctr.supervisor.spawn import spawn_init

config = ContainerConfig(sys.argv[1], ["/bin/sleep", "30"])
read_end, write_end = os.pipe2(os.O_CLOEXEC)
try:
    init = spawn_init(config, config.check(), fork=True, started=write_end)
finally:
    os.close(write_end)
found = {}
try:
    found["closed"] = bool(select.select([read_end], [], [], 10)[0])
    found["eof"] = os.read(read_end, 1) == b""
    found["init_alive"] = os.waitid(os.P_PIDFD, init.pidfd, os.WEXITED | os.WNOHANG) is None
    children = Path(f"/proc/{init.pid}/task/{init.pid}/children").read_text().split()
    found["children"] = len(children)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{children[0]}/comm").read_text().strip() != "sleep":
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    found["workload"] = Path(f"/proc/{children[0]}/comm").read_text().strip()
finally:
    os.close(read_end)
    signal.pidfd_send_signal(init.pidfd, signal.SIGKILL)
    os.waitid(os.P_PIDFD, init.pidfd, os.WEXITED)
    init.close()
print(json.dumps(found))
"""


def test_init_closes_the_started_pipe_once_the_workload_runs(rootfs: Path) -> None:
    """The CLI imports trio only after this pipe closes: it must close at the workload's
    start, not at the init's exit. (In a process of its own: forking the init, as the CLI
    does, needs a process with one thread, and the library's tests leave worker threads.)"""
    completed = subprocess.run([sys.executable, "-c", STARTED_PIPE_SCRIPT, str(rootfs)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    found = json.loads(completed.stdout)
    # The init hears of the exec when the child's close-on-exec pipe closes, a moment
    # before the kernel renames the process.
    assert found == {"closed": True, "eof": True, "init_alive": True, "children": 1,
                     "workload": "sleep"}, found


# -- How the init starts the workload -------------------------------------------------------
#
# posix_spawn, from an init that took on the workload's bounding set, no_new_privs and
# seccomp filter, when that is all the workload needs (docker's default); a fork whose child
# sets everything up otherwise. Both must give the workload the same process.

WORKLOAD_STATUS = "^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):"


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_both_ways_of_starting_the_workload_give_it_the_same_process(pyctr) -> None:
    command = ("/bin/sh", "-c", f"grep -E '{WORKLOAD_STATUS}' /proc/self/status; "
                                f"echo init; grep -E '{WORKLOAD_STATUS}' /proc/1/status; "
                                "ps -o pid,pgid,sid")
    spawned = pyctr(*command)
    # An rlimit is one thing posix_spawn cannot set: this one takes the fork.
    forked = pyctr(*command, options=("--ulimit", "nofile=1000:1000"))
    assert spawned.returncode == forked.returncode == 0, (spawned.stderr, forked.stderr)
    spawned_workload, spawned_init = spawned.stdout.split("init\n")
    forked_workload, forked_init = forked.stdout.split("init\n")
    workload = status_fields(spawned_workload)
    assert workload == status_fields(forked_workload)
    assert workload["CapEff"] == workload["CapPrm"] == workload["CapBnd"] == "00000000a80425fb"
    assert (workload["CapAmb"], workload["NoNewPrivs"], workload["Seccomp"]) == (
        "0000000000000000", "1", "2")
    # The spawning init took on the bounding set, no_new_privs and the filter; it keeps its
    # own effective set. The forking init keeps everything.
    init = status_fields(spawned_init)
    assert (init["CapBnd"], init["NoNewPrivs"], init["Seccomp"]) == (
        "00000000a80425fb", "1", "2")
    assert int(init["CapEff"], 16) == int(status_fields(forked_init)["CapEff"], 16) > int(
        workload["CapEff"], 16)
    assert (status_fields(forked_init)["NoNewPrivs"], status_fields(forked_init)["Seccomp"]) \
        == ("0", "0")
    # Either way the workload leads its own process group in init's session (ps: pid 2).
    for run in (spawned, forked):
        rows = [line.split() for line in run.stdout.splitlines()[-3:]]
        assert ["2", "2", "1"] in rows, run.stdout


def test_an_exec_failure_after_spawning_is_126(pyctr, rootfs: Path, tmp_path: Path) -> None:
    # Executable, no #! and not ELF: exec fails with ENOEXEC, which posix_spawn reports.
    script = tmp_path / "noformat"
    script.write_bytes(b"\x00\x01 not a program\n")
    script.chmod(0o755)
    run = pyctr("/mnt/noformat", options=("-v", f"{script}:/mnt/noformat:ro"))
    assert run.returncode == 126, run.stderr
    failed = run.record("container.failed")
    assert failed["error"] == "command.exec_failed"
    assert "Exec format error" in failed["message"]


def test_a_nul_in_an_argument_is_refused_either_way(rootfs: Path) -> None:
    # C strings end at a NUL: the command must not run with its argument cut short.
    from pyctr.supervisor import ContainerConfig
    from pyctr.supervisor import run as run_container

    async def both() -> list[tuple[int | None, str | None]]:
        outcomes = []
        for ulimits in ([], ["nofile=1000:1000"]):  # posix_spawn, then the fork
            result = await run_container(
                ContainerConfig(rootfs, ["/bin/echo", "cut\0here"], ulimits=ulimits),
                capture_stdout=True)
            assert result.stdout == b""
            outcomes.append((result.exit_code, result.error))
        return outcomes

    assert trio.run(both) == [(125, "workload.setup_failed")] * 2


def test_only_a_workload_init_can_become_is_spawned() -> None:
    from pyctr.init.workload import _spawnable
    from pyctr.spec.model import Capabilities, Process, Rlimit, User

    names = ["CAP_CHOWN", "CAP_KILL"]

    def process(**changes: object) -> Process:
        fields: dict[str, object] = {
            "user": User(0, os.getgid(), additional_gids=os.getgroups()),
            "capabilities": Capabilities(names, names, names, names, [])}
        fields.update(changes)
        return Process(["/bin/true"], [], **fields)  # type: ignore[arg-type]

    filter_ = (b"\0" * 8, 0)
    assert _spawnable(process(), None, False)
    assert _spawnable(process(), filter_, True)
    assert _spawnable(process(capabilities=None), None, False)
    assert _spawnable(process(capabilities=Capabilities(names, names, [], names, [])),
                      None, False)  # nothing inheritable: still bounding = permitted
    assert not _spawnable(process(), filter_, False)  # a filter init may not hold
    assert not _spawnable(process(user=User(1000, os.getgid())), None, False)
    assert not _spawnable(process(user=User(0, os.getgid() + 1)), None, False)
    assert not _spawnable(process(rlimits=[Rlimit("RLIMIT_NOFILE", 10, 10)]), None, False)
    assert not _spawnable(process(oom_score_adj=100), None, False)
    for odd in (Capabilities(names, ["CAP_CHOWN"], names, names, []),  # effective narrower
                Capabilities(names, names, names, ["CAP_KILL"], []),  # permitted narrower
                Capabilities(["CAP_KILL"], names, names, names, []),  # bounding narrower
                Capabilities(names, names, names, names, ["CAP_KILL"])):  # ambient
        assert not _spawnable(process(capabilities=odd), None, False), odd
