"""Expected failures: one line naming what failed, the path and what to do; no traceback; the
documented exit code; nothing half-made left behind (the autouse leak check)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import requires_root
from helpers import CLI, Run, assert_one_line_error, run_cli

from pyctr.supervisor import ContainerConfig, PyctrError

pytestmark = requires_root


def test_not_root(rootfs: Path) -> None:
    # A user namespace without mappings makes us "nobody" while the venv under /root stays
    # readable, which a real switch to an unprivileged uid would not allow.
    completed = subprocess.run(["unshare", "--user", CLI, str(rootfs), "/bin/true"],
                               capture_output=True, text=True, timeout=60)
    run = Run(completed)
    assert run.returncode == 125
    assert_one_line_error(run, "must run as root", "sudo")


def test_rootfs_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    run = run_cli(str(missing), "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, str(missing), "does not exist", "make rootfs")


def test_rootfs_not_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    run = run_cli(str(file), "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, str(file), "not a directory")


def test_host_root_is_refused() -> None:
    run = run_cli("/", "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, "host's own root")


def test_mount_point_impossible_to_create(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "proc").write_text("a file where /proc should go")
    run = run_cli(str(broken), "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, f"{broken}/proc", "mount point", "Not a directory")
    assert run.record("container.failed")["error"] == "setup.failed"


def test_read_only_rootfs_without_mount_points(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["mount", "--bind", str(empty), str(empty)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(empty)], check=True)
        run = run_cli(str(empty), "/bin/true")
    finally:
        subprocess.run(["umount", str(empty)], check=True)
    assert run.returncode == 125
    assert_one_line_error(run, f"{empty}/proc", "Read-only file system", "writable")


def dynamic_binary() -> Path:
    return Path(shutil.which("true") or "/bin/true").resolve()


def interpreter_of(binary: Path) -> Path:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        first = line.split()[0]
        if first.startswith("/") and "ld-linux" in first:
            return Path(first)
    pytest.skip("cannot find the ELF interpreter of /bin/true")


def test_elf_interpreter_missing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(dynamic_binary(), root / "bin" / "prog")
    run = run_cli(str(root), "/bin/prog")
    assert run.returncode == 127
    assert_one_line_error(run, "/bin/prog", "ELF interpreter", "missing", "build-rootfs")
    assert run.record("container.failed")["error"] == "command.loader_missing"


def test_shared_libraries_missing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    binary = dynamic_binary()
    shutil.copy(binary, root / "bin" / "prog")
    loader = interpreter_of(binary)
    target = root / str(loader).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(loader.resolve(), target)
    run = run_cli(str(root), "/bin/prog")
    assert run.returncode == 127
    assert_one_line_error(run, "/bin/prog", "shared libraries missing", "libc.so.6",
                          "build-rootfs")


def test_script_interpreter_missing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    script = root / "bin" / "script"
    script.write_text("#!/usr/bin/python9\nprint('hi')\n")
    script.chmod(0o755)
    run = run_cli(str(root), "script")
    assert run.returncode == 127
    assert_one_line_error(run, "/usr/bin/python9", "missing")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "missing ROOTFS and COMMAND"),
        (("./rootfs",), "missing COMMAND"),
        (("--bogus", "r", "c"), "unknown option --bogus"),
        (("--log-format", "xml", "r", "c"), "--log-format must be text or json"),
        (("--log-level", "loud", "r", "c"), "--log-level must be one of"),
        (("--hostname",), "needs a value"),
        (("--stop-timeout", "soon", "r", "c"), "--stop-timeout needs a number"),
        (("-e", "NOVALUE", "r", "c"), "--env needs KEY=VALUE"),
        (("--chroot=yes", "r", "c"), "takes no value"),
    ],
)
def test_usage_errors(args: tuple[str, ...], fragment: str) -> None:
    run = run_cli(*args)
    assert run.returncode == 125
    assert_one_line_error(run, fragment)


def test_log_file_in_a_missing_directory(rootfs: Path, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "log.json"
    run = run_cli("--log-file", str(path), str(rootfs), "/bin/true")
    assert run.returncode == 125
    assert_one_line_error(run, str(path.parent), "does not exist")


def test_workdir_that_cannot_be_created_in_a_read_only_root(pyctr) -> None:
    run = pyctr("/bin/true", options=("--read-only", "-w", "/no/such/workdir"))
    assert run.returncode == 125
    assert_one_line_error(run, "/no/such/workdir", "working directory", "Read-only file system")


def test_kernel_without_a_namespace_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    # The kernel here has every namespace; pretend the network one is missing.
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists",
                        lambda path: False if path == "/proc/self/ns/net" else real_exists(path))
    with pytest.raises(PyctrError) as caught:
        ContainerConfig(tmp_path, ["/bin/true"]).check()
    assert "kernel lacks the network namespace" in str(caught.value)
    assert caught.value.exit_code == 125


def test_help_and_version() -> None:
    helped = subprocess.run([CLI, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    assert "-h, --hostname NAME" in helped.stdout and "--log-format" in helped.stdout
    version = subprocess.run([CLI, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("pyctr-supervise ")


def test_help_into_a_reader_that_has_gone_is_quiet() -> None:
    # `pyctr-supervise --help | head -0`: the CLI exits without the interpreter's teardown,
    # so its own last flush must cope with the closed pipe (no "Exception ignored" noise).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        helped = subprocess.run([CLI, "--help"], stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=30)
    finally:
        os.close(write_end)
    assert helped.returncode == 0
    assert helped.stderr == ""


def test_command_arguments_that_look_like_options_belong_to_the_command(pyctr) -> None:
    run = pyctr("/bin/echo", "-h", "--name", "x", options=("--name", "argcheck"))
    assert run.stdout == "-h --name x\n"
