"""``pyctr``, the OCI runtime, driven as podman and containerd drive it: one command per step.

The test process is a child subreaper (see conftest), so a container's init, orphaned when
``pyctr create`` exits, becomes our child, as it becomes conmon's: the tests wait for it and
read its exit status the way the caller's monitor would. Every test keeps its state in a
``--root`` of its own, and ``no_leaks`` checks that no process, mount or cgroup is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import CLI, proc_stat, wait_until

pytestmark = requires_root
PYCTR = str(Path(CLI).with_name("pyctr"))


class Runtime:
    """``pyctr --root ROOT ...`` for one test."""

    def __init__(self, root: Path, rootfs: Path, tmp_path: Path) -> None:
        self.root, self.rootfs, self.tmp_path = root, rootfs, tmp_path
        self.log = tmp_path / "runtime.log"

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: the container's process inherits create's standard streams (as
        # from conmon) and holds them open long after create has exited.
        with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
            done = subprocess.run([PYCTR, "--root", str(self.root), "--log", str(self.log),
                                   "--log-format", "json", *args], stdout=stdout,
                                  stderr=stderr, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL)
            stdout.seek(0)
            stderr.seek(0)
            return subprocess.CompletedProcess(done.args, done.returncode, stdout.read(),
                                               stderr.read())

    def bundle(self, name: str, *command: str, terminal: bool = False,
               edit: dict[str, object] | None = None) -> Path:
        """A bundle whose config is what ``pyctr-supervise spec`` writes for ``command``."""
        directory = self.tmp_path / name
        directory.mkdir()
        options = ["-t"] if terminal else []
        written = subprocess.run([CLI, "spec", "--name", name, *options, str(self.rootfs),
                                  *command], capture_output=True, text=True, check=True)
        config = json.loads(written.stdout)
        config.update(edit or {})
        (directory / "config.json").write_text(json.dumps(config))
        return directory

    def state(self, container_id: str) -> dict[str, object]:
        done = self("state", container_id)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def status(self, container_id: str) -> object:
        return self.state(container_id)["status"]


@pytest.fixture
def pyctr(tmp_path: Path, rootfs: Path) -> Runtime:
    runtime = Runtime(tmp_path / "state", rootfs, tmp_path)
    yield runtime
    for container_id in runtime("list", "-q").stdout.split():
        runtime("delete", "--force", container_id)
    assert runtime("list", "-q").stdout.split() == []


def wait_for_exit(pid: int, timeout: float = 30) -> int:
    """The exit status of the orphaned init, which is ours to reap (we are a subreaper)."""
    deadline = time.monotonic() + timeout
    while True:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return os.waitstatus_to_exitcode(status)
        assert time.monotonic() < deadline, f"init {pid} did not exit"
        time.sleep(0.01)


def test_create_start_state_kill_delete(pyctr: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    bundle = pyctr.bundle("life", "sh", "-c", 'echo started > /out/started; '
                          'trap "echo term > /out/term; exit 7" TERM; '
                          'while :; do sleep 0.05; done',
                          edit={})
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                             "options": ["rbind", "rw"]})
    (bundle / "config.json").write_text(json.dumps(config))
    pid_file = tmp_path / "pid"
    created = pyctr("create", "--bundle", str(bundle), "--pid-file", str(pid_file), "life")
    assert created.returncode == 0, created.stderr
    pid = int(pid_file.read_text())  # digits only, no newline, as runc writes it
    assert pid_file.read_text() == str(pid)
    state = pyctr.state("life")
    assert (state["status"], state["pid"], state["id"], state["ociVersion"]) == (
        "created", pid, "life", "1.0.2")
    assert state["bundle"] == str(bundle)
    time.sleep(0.2)
    assert not (out / "started").exists()  # the command waits for start
    assert pyctr("start", "life").returncode == 0
    wait_until(lambda: (out / "started").exists(), "the command to start")
    assert pyctr.status("life") == "running"
    again = pyctr("start", "life")
    assert again.returncode == 1 and "running" in again.stderr
    refused = pyctr("delete", "life")
    assert refused.returncode == 1 and "not stopped" in refused.stderr
    assert pyctr("kill", "life", "TERM").returncode == 0
    # The waiter sees the command's own exit status.
    assert wait_for_exit(pid) == 7
    assert (out / "term").read_text() == "term\n"
    assert pyctr.status("life") == "stopped"
    assert pyctr("kill", "life", "KILL").returncode == 1  # runc's "container not running"
    assert pyctr("delete", "life").returncode == 0
    assert not (pyctr.root / "life").exists()
    missing = pyctr("state", "life")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_a_signal_before_start_ends_the_container(pyctr: Runtime) -> None:
    bundle = pyctr.bundle("early", "sleep", "30")
    pid_file = pyctr.tmp_path / "pid"
    assert pyctr("create", "--bundle", str(bundle), "--pid-file", str(pid_file),
                 "early").returncode == 0
    pid = int(pid_file.read_text())
    assert pyctr("kill", "early", "KILL").returncode == 0
    assert wait_for_exit(pid) == -signal.SIGKILL
    assert pyctr.status("early") == "stopped"
    assert pyctr("delete", "early").returncode == 0


def test_a_killed_init_reads_as_stopped_and_delete_cleans_up(pyctr: Runtime) -> None:
    bundle = pyctr.bundle("stale", "sleep", "30")
    pid_file = pyctr.tmp_path / "pid"
    assert pyctr("create", "--bundle", str(bundle), "--pid-file", str(pid_file),
                 "stale").returncode == 0
    assert pyctr("start", "stale").returncode == 0
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for_exit(pid)
    assert pyctr.status("stale") == "stopped"
    assert pyctr.state("stale")["pid"] == 0
    assert pyctr("delete", "stale").returncode == 0


def test_delete_force_kills_a_running_container(pyctr: Runtime) -> None:
    bundle = pyctr.bundle("forced", "sleep", "30")
    assert pyctr("create", "--bundle", str(bundle), "forced").returncode == 0
    assert pyctr("start", "forced").returncode == 0
    pid = pyctr.state("forced")["pid"]
    assert isinstance(pid, int)
    # podman runs kill and delete with no PATH and no HOME.
    assert pyctr("delete", "--force", "forced", env={}).returncode == 0
    assert wait_for_exit(pid) == -signal.SIGKILL


def test_setup_failure_is_one_error_in_the_json_log_and_leaves_nothing(pyctr: Runtime) -> None:
    bundle = pyctr.bundle("broken", "/no/such/command")
    failed = pyctr("create", "--bundle", str(bundle), "broken")
    assert failed.returncode == 1
    assert "no/such/command" in failed.stderr and "Traceback" not in failed.stderr
    records = [json.loads(line) for line in pyctr.log.read_text().splitlines()]
    assert records[-1]["level"] == "error" and "no/such/command" in records[-1]["msg"]
    assert set(records[-1]) == {"level", "msg", "time"}
    assert not (pyctr.root / "broken").exists()
    assert pyctr("list", "-q").stdout == "\n" or pyctr("list", "-q").stdout == ""


def test_usage_errors_exit_1(pyctr: Runtime) -> None:
    for args in (["start"], ["state"], ["delete"], ["kill"], ["create", "--bundle", "/nope"],
                 ["kill", "nobody", "TERM"], ["state", "../x"], ["frobnicate"]):
        done = pyctr(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr
    bundle = pyctr.bundle("sig", "sleep", "30")
    assert pyctr("create", "--bundle", str(bundle), "sig").returncode == 0
    bad = pyctr("kill", "sig", "NOSUCH")
    assert bad.returncode == 1 and "unknown signal" in bad.stderr
    duplicate = pyctr("create", "--bundle", str(bundle), "sig")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr


def test_signals_by_name_and_number_reach_the_command(pyctr: Runtime, tmp_path: Path) -> None:
    bundle = pyctr.bundle("traps", "sh", "-c", 'trap "echo usr1" USR1; trap "echo usr2" USR2; '
                          'trap "exit 3" TERM; while :; do sleep 0.05; done')
    output = tmp_path / "output"
    with open(output, "w") as sink:
        created = subprocess.run([PYCTR, "--root", str(pyctr.root), "create", "--bundle",
                                  str(bundle), "traps"], stdout=sink, stderr=sink,
                                 stdin=subprocess.DEVNULL)
    assert created.returncode == 0, output.read_text()
    pid = pyctr.state("traps")["pid"]
    assert isinstance(pid, int)
    assert pyctr("start", "traps").returncode == 0
    time.sleep(0.3)
    for name in ("USR1", "SIGUSR2", str(int(signal.SIGUSR1))):
        assert pyctr("kill", "traps", name).returncode == 0
        time.sleep(0.2)
    assert pyctr("kill", "traps").returncode == 0  # TERM by default
    assert wait_for_exit(pid) == 3
    assert output.read_text() == "usr1\nusr2\nusr1\n"


def test_list_ps_pause_resume(pyctr: Runtime, tmp_path: Path) -> None:
    bundle = pyctr.bundle("ticks", "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; "
                          "sleep 0.02; done")
    assert pyctr("create", "--bundle", str(bundle), "ticks").returncode == 0
    assert pyctr("start", "ticks").returncode == 0
    listed = json.loads(pyctr("list", "--format", "json").stdout)
    assert [(item["id"], item["status"]) for item in listed] == [("ticks", "running")]
    assert pyctr("list", "-q").stdout.split() == ["ticks"]
    pids = json.loads(pyctr("ps", "--format", "json", "ticks").stdout)
    assert pyctr.state("ticks")["pid"] in pids and len(pids) >= 2
    table = pyctr("ps", "ticks").stdout
    assert "pyctr-init" in table and "sh -c" in table
    pid = pyctr.state("ticks")["pid"]

    def counter() -> int:
        return int(Path(f"/proc/{pid}/root/tmp/n").read_text() or 0)

    assert pyctr("pause", "ticks").returncode == 0
    assert pyctr.status("ticks") == "paused"
    frozen = counter()
    time.sleep(0.3)
    assert counter() == frozen
    assert pyctr("resume", "ticks").returncode == 0
    assert pyctr.status("ticks") == "running"
    wait_until(lambda: counter() > frozen, "the counter to move again")
    assert pyctr("resume", "ticks").returncode == 1  # not paused
    # --all: every process of the container's cgroup, the init among them.
    assert pyctr("kill", "--all", "ticks", "KILL").returncode == 0
    assert isinstance(pid, int)
    assert wait_for_exit(pid) == -signal.SIGKILL
    wait_until(lambda: all(proc_stat(each)[:1] in ([], ["Z"]) for each in pids),
               "every process of the container to die")


def test_exec_joins_the_container(pyctr: Runtime, tmp_path: Path) -> None:
    bundle = pyctr.bundle("host", "sh", "-c", "echo inside > /tmp/mark; sleep 30")
    assert pyctr("create", "--bundle", str(bundle), "host").returncode == 0
    assert pyctr("start", "host").returncode == 0
    wait_until(lambda: pyctr("exec", "host", "test", "-e", "/tmp/mark").returncode == 0,
               "the workload's mark")
    done = pyctr("exec", "host", "sh", "-c", "cat /tmp/mark; hostname; "
                 "cat /proc/self/cgroup | grep -c :/$; grep CapEff /proc/self/status; exit 4")
    assert done.returncode == 4, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "inside" and lines[1] == "host"  # its files, its hostname
    assert int(lines[2]) >= 5  # in the container's cgroups, seen from its cgroup namespace
    # The container's own process and the exec'd one hold the same (docker's) capabilities.
    init = pyctr.state("host")["pid"]
    workload = Path(f"/proc/{init}/task/{init}/children").read_text().split()[0]
    caps = [line for line in Path(f"/proc/{workload}/status").read_text().splitlines()
            if line.startswith("CapEff")]
    assert lines[3] == caps[0] != "CapEff:\t000001ffffffffff"
    # --process, as podman passes it; --detach with a pid file.
    process = {"args": ["sh", "-c", "echo from-process-file > /tmp/p"], "cwd": "/tmp",
               "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 65534, "gid": 65534}}
    process_file = tmp_path / "process.json"
    process_file.write_text(json.dumps(process))
    pid_file = tmp_path / "exec.pid"
    detached = pyctr("exec", "--process", str(process_file), "--detach", "--pid-file",
                     str(pid_file), "host")
    assert detached.returncode == 0, detached.stderr
    exec_pid = int(pid_file.read_text())
    assert wait_for_exit(exec_pid) == 0
    check = pyctr("exec", "host", "stat", "-c", "%u %n", "/tmp/p")
    assert check.stdout == "65534 /tmp/p\n"
    assert pyctr("delete", "--force", "host").returncode == 0
    refused = pyctr("exec", "host", "true")
    assert refused.returncode == 1


class ConsoleSocket:
    """A console socket as conmon listens on one: receives one pty master (SCM_RIGHTS)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.received: list[int] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return  # closed without a connection
        with connection:
            _, ancillary, _, _ = connection.recvmsg(64, socket.CMSG_SPACE(4))
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    self.received.append(struct.unpack("i", data[:4])[0])

    def master(self) -> int:
        self.thread.join(10)
        self.listener.close()
        assert len(self.received) == 1, "no terminal came"
        return self.received[0]


def read_terminal(master: int) -> str:
    """What the terminal shows until its last holder has gone (EIO)."""
    output = b""
    try:
        while chunk := os.read(master, 1024):
            output += chunk
    except OSError:
        pass
    finally:
        os.close(master)
    return output.decode()


def test_console_socket_gets_the_terminal(pyctr: Runtime, tmp_path: Path) -> None:
    bundle = pyctr.bundle("tty", "sh", "-c", "tty; exit 2", terminal=True)
    refused = pyctr("create", "--bundle", str(bundle), "notty")
    assert refused.returncode == 1 and "console-socket" in refused.stderr
    console = ConsoleSocket(tmp_path / "console.sock")
    created = pyctr("create", "--bundle", str(bundle), "--console-socket", console.path, "tty")
    assert created.returncode == 0, created.stderr
    master = console.master()
    pid = pyctr.state("tty")["pid"]
    assert isinstance(pid, int)
    assert pyctr("start", "tty").returncode == 0
    output = read_terminal(master)
    assert wait_for_exit(pid) == 2
    assert output.split()[0] == "/dev/pts/0"


def test_exec_with_a_terminal_and_its_errors_in_the_log(pyctr: Runtime, tmp_path: Path) -> None:
    bundle = pyctr.bundle("execty", "sleep", "30")
    assert pyctr("create", "--bundle", str(bundle), "execty").returncode == 0
    assert pyctr("start", "execty").returncode == 0
    # The console socket and the log are host paths, though exec joins the container.
    console = ConsoleSocket(tmp_path / "exec-console.sock")
    done = pyctr("exec", "--tty", "--console-socket", console.path, "execty", "sh", "-c",
                 "tty; exit 6")
    assert done.returncode == 6, done.stderr
    assert read_terminal(console.master()).split()[0].startswith("/dev/pts/")
    missing = pyctr("exec", "execty", "/no/such/command")
    assert missing.returncode == 1 and "no/such/command" in missing.stderr
    last = json.loads(pyctr.log.read_text().splitlines()[-1])
    assert last["level"] == "error" and "no/such/command" in last["msg"]


def test_run_waits_and_returns_the_exit_code(pyctr: Runtime) -> None:
    bundle = pyctr.bundle("once", "sh", "-c", "exit 9")
    done = pyctr("run", "--bundle", str(bundle), "once")
    assert done.returncode == 9, done.stderr
    assert pyctr("list", "-q").stdout.split() == []


def test_concurrent_containers_never_meet(pyctr: Runtime) -> None:
    bundle = pyctr.bundle("many", "true")
    results: dict[str, list[int]] = {}

    def lifecycle(container_id: str) -> None:
        steps = [pyctr("create", "--bundle", str(bundle), container_id).returncode]
        steps.append(pyctr("start", container_id).returncode)
        deadline = time.monotonic() + 20
        while pyctr.status(container_id) != "stopped" and time.monotonic() < deadline:
            time.sleep(0.02)
        steps.append(pyctr("delete", container_id).returncode)
        results[container_id] = steps

    threads = [threading.Thread(target=lifecycle, args=(f"c{index}",)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {f"c{index}": [0, 0, 0] for index in range(6)}


def test_spec_and_features(tmp_path: Path) -> None:
    features = json.loads(subprocess.run([PYCTR, "features"], capture_output=True, text=True,
                                         check=True).stdout)
    assert features["ociVersionMax"] == "1.0.2"
    assert "network" in features["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]
    written = subprocess.run([PYCTR, "spec", "--bundle", str(tmp_path)], capture_output=True,
                             text=True)
    assert written.returncode == 0, written.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["root"]["path"] == "rootfs" and config["process"]["args"] == ["sh"]
    again = subprocess.run([PYCTR, "spec", "--bundle", str(tmp_path)], capture_output=True,
                           text=True)
    assert again.returncode == 1 and "exists" in again.stderr


def test_preserve_fds_passes_descriptors_to_the_process(pyctr: Runtime, tmp_path: Path) -> None:
    bundle = pyctr.bundle("fds", "sh", "-c", "echo via-fd3 >&3; ls /proc/self/fd")
    read_end, write_end = os.pipe()
    listing = tmp_path / "listing"
    try:
        with open(listing, "w") as sink:
            # bash gives pyctr the pipe as its descriptor 3, as podman would.
            created = subprocess.run(["/bin/bash", "-c", f'exec "$0" "$@" 3>&{write_end}',
                                      PYCTR, "--root", str(pyctr.root), "create",
                                      "--preserve-fds", "1", "--bundle", str(bundle), "fds"],
                                     stdout=sink, stderr=sink, pass_fds=(write_end,),
                                     stdin=subprocess.DEVNULL)
        os.close(write_end)
        write_end = -1
        assert created.returncode == 0, listing.read_text()
        pid = pyctr.state("fds")["pid"]
        assert isinstance(pid, int)
        assert pyctr("start", "fds").returncode == 0
        assert wait_for_exit(pid) == 0
        assert os.read(read_end, 100) == b"via-fd3\n"
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)
    # 0-2, the preserved 3, and ls's own directory descriptor: nothing else leaked in.
    assert sorted(int(fd) for fd in listing.read_text().split()) == [0, 1, 2, 3, 4]
