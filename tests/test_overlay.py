"""Throwaway roots, for real: ``--overlay`` (and podman's ``ROOTFS:O``), ``--overlay-upper``.

Containers write, delete and plant setuid files in a root shared with others, and the rootfs
must come out unchanged (checked against a manifest of every entry: path, type, mode, owner,
size, mtime and the bytes of regular files). The ``no_leaks`` fixture checks after each
test that no overlay layer, mount, cgroup or process of the tests' is left.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import trio
from conftest import OVERLAY_DIR, own_layers, requires_root
from helpers import CLI, assert_one_line_error, run_cli, wait_until

from pyctr.supervisor import ContainerConfig, run

pytestmark = requires_root


def manifest(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below ``root``, as what a change to it would alter."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            digest = ""
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as file:
                    digest = hashlib.sha256(file.read()).hexdigest()
            found[os.path.relpath(path, root)] = (info.st_mode, info.st_uid, info.st_gid,
                                                  info.st_size, info.st_mtime_ns, digest)
    top = os.lstat(root)
    found["."] = (top.st_mode, top.st_uid, top.st_gid, top.st_mtime_ns)
    return found


@pytest.fixture
def unchanged(rootfs: Path) -> object:
    """Fails the test when the rootfs changed under it."""
    before = manifest(rootfs)
    yield
    assert manifest(rootfs) == before, "the rootfs changed"


def test_writes_deletes_and_setuid_files_stay_in_the_throwaway_layer(
        rootfs: Path, unchanged: object) -> None:
    script = ("echo planted > /etc/motd-pyctr && rm /etc/hosts && cp /bin/sh /sh-suid && "
              "chmod 4755 /sh-suid && mkdir -p /usr/local/new && ls -l /sh-suid && "
              "test ! -e /etc/hosts && cat /etc/motd-pyctr")
    result = run_cli("--overlay", str(rootfs), "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "rwsr-xr-x" in result.stdout and "planted" in result.stdout
    assert not (rootfs / "sh-suid").exists() and (rootfs / "etc" / "hosts").exists()
    assert own_layers() == []  # thrown away at the end, not by the leak check's sweep


def test_two_containers_on_one_rootfs_write_the_same_path(rootfs: Path,
                                                          unchanged: object) -> None:
    # Both write /etc/shared, wait until the other has written too, then read their own.
    flag = "/dev/shm/written"
    script = (f"echo $0 > /etc/shared && touch {flag} && "
              "i=0; while [ $i -lt 500 ] && [ ! -e /etc/shared ]; do i=$((i+1)); done; "
              "sleep 0.5; cat /etc/shared")
    processes = [subprocess.Popen([CLI, "--overlay", str(rootfs), "sh", "-c", script, name],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name in ("first", "second")]
    outputs = [process.communicate(timeout=60) for process in processes]
    for process, name, (stdout, stderr) in zip(processes, ("first", "second"), outputs,
                                               strict=True):
        assert process.returncode == 0, stderr
        assert stdout == f"{name}\n"
    assert not (rootfs / "etc" / "shared").exists()


def test_podman_spelling_rootfs_colon_o(rootfs: Path, unchanged: object) -> None:
    result = run_cli(f"{rootfs}:O", "sh", "-c", "echo x > /new-file && cat /new-file")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "x\n"


def test_overlay_upper_keeps_the_changes_for_the_next_run(rootfs: Path, tmp_path: Path,
                                                          unchanged: object) -> None:
    keep = tmp_path / "layer"
    keep.mkdir()
    first = run_cli("--overlay-upper", str(keep), str(rootfs), "sh", "-c",
                    "mkdir /kept-data && echo kept > /kept-data/file && rm /etc/hosts")
    assert first.returncode == 0, first.stderr
    assert (keep / "upper" / "kept-data" / "file").read_text() == "kept\n"
    # The deletion is a whiteout (a 0/0 character device) in the upper layer.
    assert stat.S_ISCHR((keep / "upper" / "etc" / "hosts").lstat().st_mode)
    second = run_cli("--overlay-upper", str(keep), str(rootfs), "sh", "-c",
                     "cat /kept-data/file; test -e /etc/hosts || echo gone")
    assert second.returncode == 0, second.stderr
    assert second.stdout == "kept\ngone\n"
    # The merged root has the rootfs root's owner and mode, not a private directory's.
    assert stat.S_IMODE((keep / "upper").stat().st_mode) == stat.S_IMODE(rootfs.stat().st_mode)


def test_other_users_can_use_the_overlay_root(rootfs: Path, unchanged: object) -> None:
    result = run_cli("--overlay", "-u", "65534:65534", str(rootfs), "sh", "-c",
                     "ls /etc >/dev/null && cat /etc/passwd >/dev/null && echo ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_read_only_overlay_refuses_writes(rootfs: Path, unchanged: object) -> None:
    result = run_cli("--overlay", "--read-only", str(rootfs), "sh", "-c",
                     "echo x > /etc/x 2>/dev/null && echo wrote || echo refused")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "refused\n"


def test_missing_upper_directory_is_a_usage_error(rootfs: Path, tmp_path: Path) -> None:
    result = run_cli("--overlay-upper", str(tmp_path / "missing"), str(rootfs), "true")
    assert result.returncode == 125
    assert_one_line_error(result, "--overlay-upper", "does not exist", "create the directory")
    file = tmp_path / "file"
    file.write_text("")
    result = run_cli("--overlay-upper", str(file), str(rootfs), "true")
    assert result.returncode == 125
    assert_one_line_error(result, "is not a directory")
    assert not (tmp_path / "missing").exists()


def test_path_overlayfs_cannot_carry_is_refused(rootfs: Path, tmp_path: Path) -> None:
    keep = tmp_path / "a,b"
    keep.mkdir()
    result = run_cli("--overlay-upper", str(keep), str(rootfs), "true")
    assert result.returncode == 125
    assert_one_line_error(result, "overlayfs's options cannot carry")
    assert list(keep.iterdir()) == []


def test_an_upper_directory_in_use_is_refused(rootfs: Path, tmp_path: Path,
                                              unchanged: object) -> None:
    keep = tmp_path / "layer"
    keep.mkdir()
    first = subprocess.Popen([CLI, "--overlay-upper", str(keep), str(rootfs), "sleep", "30"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (keep / "work").exists(), "the first container's layer")
        second = run_cli("--overlay-upper", str(keep), str(rootfs), "true")
        assert second.returncode == 125
        assert_one_line_error(second, "is in use by another container")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


def test_a_killed_supervisors_layer_is_swept(rootfs: Path, unchanged: object) -> None:
    supervisor = subprocess.Popen([CLI, "--overlay", "--name", "swept-layer", str(rootfs),
                                   "sh", "-c", "echo x > /left-behind; sleep 60"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    layer = Path(OVERLAY_DIR) / "swept-layer"
    wait_until(lambda: (layer / "upper" / "left-behind").exists(), "the container's write")
    supervisor.kill()
    supervisor.wait(timeout=10)
    time.sleep(0.2)  # the init dies by its parent-death signal
    assert layer.exists()  # nothing removed it: the supervisor had no chance
    # The next run sweeps what the killed one left.
    result = run_cli("--overlay", str(rootfs), "true")
    assert result.returncode == 0, result.stderr
    assert not layer.exists()


def test_library_overlay(rootfs: Path, unchanged: object) -> None:
    async def main() -> tuple[int, bytes]:
        config = ContainerConfig(rootfs, ["sh", "-c", "echo lib > /lib-file && cat /lib-file"],
                                 overlay=True)
        result = await run(config, capture_stdout=True)
        return result.exit_code, result.stdout

    assert trio.run(main) == (0, b"lib\n")
    assert own_layers() == []
