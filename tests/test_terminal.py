"""The host terminal drives the workload: ``-t`` with a real pseudo-terminal (pexpect), job
control inside the container and of pyctr itself, and the terminal settings restored however
pyctr ends."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import termios
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import requires_root
from helpers import (
    CLI,
    VALIDATOR,
    command_named,
    descendants,
    in_foreground,
    proc_stat,
    process_state,
    wait_until,
)

pytestmark = requires_root

PROMPT = "# "


@pytest.fixture
def shell(rootfs: Path) -> Iterator[pexpect.spawn]:
    """``pyctr-supervise -t -i ROOTFS /bin/sh -i`` on a 24x80 pseudo-terminal."""
    child = pexpect.spawn(CLI, ["--log-level", "error", "-t", "-i", str(rootfs), "/bin/sh", "-i"],
                          dimensions=(24, 80), encoding="utf-8", timeout=15)
    try:
        child.expect_exact(PROMPT)
        yield child
    finally:
        child.close(force=True)


def run_in(child: pexpect.spawn, command: str, expected: str) -> None:
    child.sendline(command)
    child.expect_exact(expected)


def parent(pid: int) -> int:
    fields = proc_stat(pid)
    return int(fields[1]) if fields else 0


def running_in_front(root: int, name: str) -> int:
    """Wait until a process called ``name`` below ``root`` runs in its terminal's foreground
    (so that a key typed now is for it); return its pid."""
    found: list[int] = []

    def ready() -> bool:
        pid = command_named(root, name)
        found[:] = [] if pid is None else [pid]
        return pid is not None and in_foreground(pid)

    wait_until(ready, f"{name} to run in the foreground")
    return found[0]


def test_the_workload_has_a_terminal_of_the_host_size(shell: pexpect.spawn) -> None:
    run_in(shell, "stty size", "24 80")
    run_in(shell, "tty", "/dev/pts/0")  # the container's own devpts instance


def test_a_resize_reaches_the_workload(shell: pexpect.spawn) -> None:
    shell.setwinsize(40, 132)  # the kernel sends SIGWINCH to pyctr, which copies the size
    sizes: list[str] = []

    def resized() -> bool:
        shell.sendline("stty size")
        shell.expect(r"\r\n(\d+ \d+)\r\n")
        sizes.append(shell.match.group(1))
        shell.expect_exact(PROMPT)
        return sizes[-1] == "40 132"

    wait_until(resized, "the new size inside")


def test_ctrl_c_reaches_the_shell_inside(shell: pexpect.spawn) -> None:
    shell.sendline("sleep 100")
    running_in_front(shell.pid, "sleep")
    shell.sendcontrol("c")
    shell.expect_exact(PROMPT)
    run_in(shell, "echo status=$?", "status=130")  # sleep died of SIGINT; the shell lives on
    run_in(shell, "echo still here", "still here")


def test_job_control_in_an_interactive_shell(shell: pexpect.spawn) -> None:
    shell.sendline("sleep 100 &")
    run_in(shell, "jobs", "Running")
    shell.sendline("fg")
    shell.expect_exact("sleep 100")
    running_in_front(shell.pid, "sleep")
    shell.sendcontrol("z")
    shell.expect_exact("Stopped")
    run_in(shell, "jobs", "Stopped")
    shell.sendline("kill -9 %1")
    run_in(shell, "jobs", "Killed")
    shell.sendline("exit 3")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 3


@pytest.fixture
def host_shell(tmp_path: Path) -> Iterator[pexpect.spawn]:
    """An interactive dash on a fresh pseudo-terminal, the way a person starts pyctr. Not
    bash: bash puts the terminal back itself after a job dies of a signal, which would hide
    whether pyctr did."""
    child = pexpect.spawn("/bin/dash", ["-i"], dimensions=(24, 80),
                          encoding="utf-8", timeout=15, cwd=str(tmp_path),
                          env={"PATH": os.environ["PATH"], "PS1": "host$ ", "TERM": "xterm"})
    try:
        child.expect_exact("host$ ")
        yield child
    finally:
        child.close(force=True)


def stty_g(host: pexpect.spawn) -> str:
    host.sendline("echo \"<$(stty -g)>\"")
    host.expect(r"<([0-9a-f:]+)>")
    settings = host.match.group(1)
    host.expect_exact("host$ ")
    return str(settings)


def supervisor_under(host: pexpect.spawn) -> int:
    """The pyctr-supervise process the host shell started (its direct child)."""
    found: list[int] = []

    def started() -> bool:
        found[:] = [pid for pid in descendants(host.pid) if parent(pid) == host.pid]
        return len(found) == 1

    wait_until(started, "pyctr-supervise to start")
    return found[0]


def _canonical(fd: int) -> bool:
    return bool(termios.tcgetattr(fd)[3] & termios.ICANON)


def test_terminal_settings_are_restored_on_exit(host_shell: pexpect.spawn,
                                                rootfs: Path, tmp_path: Path) -> None:
    before = stty_g(host_shell)
    # The typed line does not say "inside", so only the container's output matches.
    host_shell.sendline(f"{CLI} --log-file pyctr.jsonl --log-format json -t {rootfs} "
                        "/bin/sh -c 'echo in\"\"side; sleep 0.5'; echo exit=$?")
    host_shell.expect_exact("inside")
    assert not _canonical(host_shell.child_fd), "pyctr did not put the terminal in raw mode"
    host_shell.expect_exact("exit=0")
    host_shell.expect_exact("host$ ")
    assert stty_g(host_shell) == before
    records = [json.loads(line) for line in (tmp_path / "pyctr.jsonl").read_text().splitlines()]
    for record in records:
        VALIDATOR.validate(record)
    attached = [record for record in records if record["event"] == "terminal.attached"]
    assert [(r["raw"], r["interactive"]) for r in attached] == [(True, False)]


def test_terminal_settings_are_restored_after_sigkill(host_shell: pexpect.spawn,
                                                      rootfs: Path) -> None:
    before = stty_g(host_shell)
    host_shell.sendline(f"{CLI} --log-level error -t -i {rootfs} /bin/sh -i; echo exit=$?")
    host_shell.expect_exact(PROMPT)
    supervisor = supervisor_under(host_shell)
    assert not _canonical(host_shell.child_fd)
    os.kill(supervisor, signal.SIGKILL)
    host_shell.expect_exact(f"exit={128 + signal.SIGKILL}")
    host_shell.expect_exact("host$ ")
    wait_until(lambda: _canonical(host_shell.child_fd), "the guard to restore the terminal")
    assert stty_g(host_shell) == before


def test_ctrl_z_stops_pyctr_and_its_container_and_fg_resumes(host_shell: pexpect.spawn,
                                                             rootfs: Path,
                                                             tmp_path: Path) -> None:
    host_shell.sendline(f"{CLI} --log-file pyctr.jsonl --log-format json {rootfs} /bin/sh -c "
                        "'while :; do echo t\"\"ick; sleep 0.1; done'")
    host_shell.expect_exact("tick")
    supervisor = supervisor_under(host_shell)
    container = descendants(supervisor)
    assert container, "no container processes"
    host_shell.sendcontrol("z")
    host_shell.expect_exact("Stopped")
    host_shell.expect_exact("host$ ")
    wait_until(lambda: process_state(supervisor) == "T", "pyctr to stop")
    shell_inside = min(container - {pid for pid in container if parent(pid) == supervisor})
    wait_until(lambda: process_state(shell_inside) == "T", "the workload to stop")
    # A tick written between Ctrl-Z and the workload's stop may still be unread: drop it, so
    # that the next one shows the container running again.
    host_shell.expect(pexpect.TIMEOUT, timeout=0.3)
    host_shell.sendline("fg")
    host_shell.expect_exact("tick")  # running again
    assert process_state(supervisor) != "T"
    host_shell.sendcontrol("c")
    host_shell.expect_exact("host$ ")
    host_shell.sendline("echo exit=$?")
    host_shell.expect_exact(f"exit={128 + signal.SIGINT}")
    records = [json.loads(line) for line in (tmp_path / "pyctr.jsonl").read_text().splitlines()]
    for record in records:
        VALIDATOR.validate(record)
    events = [record["event"] for record in records]
    suspended = events.index("supervisor.suspended")
    assert events.index("supervisor.resumed") > suspended
    assert records[suspended]["reason"] == "SIGTSTP"


@pytest.mark.parametrize("interactive", [False, True])
def test_stdin_from_a_terminal_needs_interactive(rootfs: Path, interactive: bool) -> None:
    # As with docker run: without -i a terminal on stdin is not passed in (cat sees EOF).
    options = ["-i"] if interactive else []
    child = pexpect.spawn(CLI, ["--log-level", "error", *options, str(rootfs), "/bin/cat"],
                          encoding="utf-8", timeout=15)
    try:
        if interactive:
            child.sendline("typed line")
            child.expect_exact("typed line")  # the terminal's echo
            child.expect_exact("typed line")  # cat's copy
            child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_a_terminal_without_tty_reaches_the_workload_as_pipes(rootfs: Path) -> None:
    # Without -t the workload never holds the user's terminal (TIOCSTI, stty, reopening
    # /proc/self/fd/1 would reach it): pipes stand in, and what it writes still shows.
    child = pexpect.spawn(CLI, ["--log-level", "error", "-i", str(rootfs), "/bin/sh", "-c",
                                "for fd in 0 1 2; do echo fd$fd=$(readlink /proc/self/fd/$fd)"
                                "; done; echo to-stderr >&2; read line; echo got $line"],
                          encoding="utf-8", timeout=15)
    shown = io.StringIO()
    child.logfile_read = shown
    try:
        child.expect_exact("fd2=")
        child.sendline("typed")
        child.expect_exact("got typed")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    text = shown.getvalue()
    # (stdout and stderr are two pipes, relayed side by side: their order may differ)
    assert re.search(r"fd0=pipe:\[\d+\]", text) and re.search(r"fd1=pipe:\[\d+\]", text)
    assert re.search(r"fd2=pipe:\[\d+\]", text) and "to-stderr" in text, text


def test_pipes_and_files_are_passed_straight_through(rootfs: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    with open(output, "w") as file, open(os.devnull) as devnull:
        completed = subprocess.run(
            [CLI, "--log-level", "error", str(rootfs), "/bin/sh", "-c",
             "readlink /proc/self/fd/1; stat -L -c %i /proc/self/fd/1"],
            stdin=devnull, stdout=file, stderr=subprocess.PIPE, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    link, inode = output.read_text().split()
    # The file itself (seen from inside the container under another name): the same inode.
    assert not link.startswith("pipe:") and int(inode) == output.stat().st_ino


# -- What pyctr itself writes to a terminal ----------------------------------------------------


def screen_of(output: str, rows: int = 24, columns: int = 120) -> list[str]:
    """The screen a terminal shows after ``output`` (pyte emulates one), trailing blanks
    removed."""
    import pyte

    screen = pyte.Screen(columns, rows)
    pyte.Stream(screen).feed(output)
    return [line.rstrip() for line in screen.display]


def run_on_terminal(*args: str, columns: int = 120) -> tuple[int, str]:
    """``pyctr-supervise ARGS`` with stdin, stdout and stderr on one pseudo-terminal; its
    exit status and everything it showed there."""
    child = pexpect.spawn(CLI, list(args), dimensions=(24, columns), encoding="utf-8",
                          timeout=30)
    output = child.read()
    child.close()
    return child.exitstatus, output


def test_on_a_terminal_only_warnings_and_errors_show_by_default(rootfs: Path) -> None:
    status, output = run_on_terminal(str(rootfs), "/bin/echo", "hello")
    assert status == 0
    assert screen_of(output)[:2] == ["hello", ""]
    assert "container.created" not in output and "workload.exited" not in output


@pytest.mark.parametrize("option", [["--verbose"], ["--log-level", "info"]])
def test_verbose_brings_the_lifecycle_records_back(rootfs: Path, option: list[str]) -> None:
    status, output = run_on_terminal(*option, str(rootfs), "/bin/echo", "hello")
    assert status == 0
    for event in ("container.created", "container.ready", "workload.started",
                  "workload.exited", "container.cleanup_done"):
        assert event in output


def test_a_failure_still_shows_its_line_on_a_terminal(rootfs: Path) -> None:
    status, output = run_on_terminal(str(rootfs), "no-such-command")
    assert status == 127
    shown = [line for line in screen_of(output) if line]
    assert any(line.startswith("pyctr-supervise: error: command 'no-such-command' not found")
               for line in shown), shown


def test_records_written_in_raw_mode_start_at_the_left_edge(rootfs: Path) -> None:
    # With -t the terminal is raw while the workload runs: the records written meanwhile
    # (here every one, --verbose) must end in \r\n, or each would start where the last ended.
    status, output = run_on_terminal("--verbose", "-t", str(rootfs), "/bin/sh", "-c",
                                     "echo first; sleep 0.2; echo second", columns=500)
    assert status == 0
    screen = [line for line in screen_of(output, rows=60, columns=500) if line]
    records = [line for line in screen if "[" in line and "]" in line]
    assert len(records) >= 5, screen
    for line in records:
        assert re.match(r"\d{4}-\d\d-\d\dT", line), line  # a timestamp at column 0
    assert "first" in screen and "second" in screen
    assert "\n" not in output.replace("\r\n", "")
