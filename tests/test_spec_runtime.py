"""Every field of the spec that the init applies, checked in a real container: the docker-style
options (``-u``, ``--ulimit``, ``--env-file``, ``-w``, ``--read-only``, ``-v``, ``--tmpfs``,
``--mount``, ``-t``) and hand-edited bundles (hostname, domainname, mounts, namespaces with a
path, sysctls, devices, oomScoreAdj, umask, rlimits, rootfsPropagation), each observed from
inside the container and, where it matters, from the host. Then hostile root filesystems:
symlinks that try to lead a mount, a mount point or a passwd lookup out of the rootfs.

The shared test rootfs is never changed: a test that needs a mount point the rootfs lacks, or
a different rootfs, works on its own copy (``copy_rootfs``).
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
import pytest
from conftest import copy_rootfs, requires_root
from helpers import CLI, LineReader, Run, mount_points, run_cli, wait_until

pytestmark = requires_root

EXIT_SETUP_FAILED = 125
RLIM_INFINITY = (1 << 64) - 1
CAP_SYS_RESOURCE = 24


# --- helpers ---------------------------------------------------------------------------------


def fails_with_one_line(run: Run, *words: str) -> str:
    """Assert pyctr itself failed (125) and explained it in exactly one line holding
    ``words``; return that line."""
    assert run.returncode == EXIT_SETUP_FAILED, (run.returncode, run.stdout, run.stderr)
    assert len(run.other_stderr) == 1, run.other_stderr
    line = run.other_stderr[0]
    assert line.startswith("pyctr-supervise: error: "), line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line


def ok(run: Run) -> str:
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    return run.stdout


def limits(text: str) -> dict[str, tuple[str, str]]:
    """/proc/self/limits as {"Max open files": (soft, hard)}."""
    found = {}
    for line in text.splitlines():
        if line.startswith("Max "):
            soft, hard = line[26:].split()[:2]
            found[line[:25].rstrip()] = (soft, hard)
    return found


def mountinfo(text: str) -> list[tuple[str, list[str], str, list[str]]]:
    """The mountinfo lines in ``text``: (mount point, optional fields, fstype, super options)."""
    entries = []
    for line in text.splitlines():
        head, separator, tail = line.partition(" - ")
        fields = head.split()
        if not separator or len(fields) < 6 or not fields[0].isdigit():
            continue
        kind, _, options = tail.split()[:3]
        entries.append((fields[4], fields[6:], kind, options.split(",")))
    return entries


def proc_mounts(text: str) -> dict[str, list[str]]:
    """The /proc/mounts lines in ``text``: {mount point: [fstype, options...]}."""
    found = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[1].startswith("/") and fields[4:] == ["0", "0"]:
            found[fields[1]] = [fields[2], *fields[3].split(",")]
    return found


def spec_document(rootfs: Path, *command: str, options: tuple[str, ...] = ()) -> dict:
    """What ``pyctr-supervise spec OPTIONS ROOTFS COMMAND`` writes, decoded: a bundle's
    config.json with root.path the rootfs's absolute path."""
    completed = subprocess.run([CLI, "spec", *options, str(rootfs), *command],
                               capture_output=True, text=True, timeout=30, check=True)
    document = json.loads(completed.stdout)
    assert document["root"]["path"] == str(rootfs)
    return document


def run_bundle(directory: Path, document: dict) -> Run:
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(document, indent=2))
    return run_cli("--bundle", str(directory))


def namespace_entry(document: dict, kind: str) -> dict:
    return next(entry for entry in document["linux"]["namespaces"] if entry["type"] == kind)


class Session:
    """The output of a container run by ``running``: lines before READY, and after it."""

    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[str] = []


@contextmanager
def running(*args: str) -> Iterator[Session]:
    """Run ``pyctr-supervise ARGS`` whose command prints lines and then READY, then reads a
    line from stdin (and may print more); the block runs while the container waits there.
    Leaving the block lets the command finish, collects what it printed after READY, and
    checks that it exited 0."""
    process = subprocess.Popen([CLI, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    session = Session()
    try:
        assert process.stdout is not None and process.stdin is not None
        reader = LineReader(process.stdout)
        while (line := reader.line()) != "READY":
            session.before.append(line)
        yield session
        rest, errors = process.communicate(b"done\n", timeout=10)
        session.after = (reader.buffer + rest).decode().splitlines()
        assert process.returncode == 0, errors.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def namespace_holder(*unshare: str, setup: str = "true") -> Iterator[int]:
    """A process of this test's own in new namespaces (``unshare`` options), set up by the
    shell command ``setup`` inside them; yield its pid while it sleeps there."""
    process = subprocess.Popen(["unshare", *unshare, "/bin/sh", "-c",
                                f"{setup} && exec sleep 60"])
    try:
        wait_until(lambda: Path(f"/proc/{process.pid}/comm").read_text() == "sleep\n",
                   "the namespace holder to sleep")
        yield process.pid
    finally:
        process.kill()
        process.wait()


def in_pty(*args: str, dimensions: tuple[int, int] = (24, 80)) -> tuple[list[str], str, int]:
    """Run ``pyctr-supervise ARGS`` on a new pseudo-terminal of ``dimensions``; return its
    output lines, the raw output and its exit status."""
    child = pexpect.spawn(CLI, ["--log-level", "error", *args], dimensions=dimensions,
                          encoding="utf-8", timeout=15)
    try:
        child.expect(pexpect.EOF)
        output = child.before
    finally:
        child.close(force=True)
    return re.split(r"\r*\n", output.rstrip("\r\n")), output, child.exitstatus


def host_mounts_at_or_below(path: Path | str) -> list[str]:
    """The host's mount points at ``path`` or below it (from its mount table: os.path.ismount
    misses a bind mount of a directory onto itself)."""
    prefix = str(path).rstrip("/")
    return [point for point in mount_points() if point == prefix or
            point.startswith(prefix + "/")]


def passwd_entry(path: Path, name: str) -> list[str]:
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"{name} is not in {path}")


# --- -u --------------------------------------------------------------------------------------


def test_user_by_name_takes_ids_and_home_from_the_rootfs_passwd(pyctr, rootfs: Path) -> None:
    entry = passwd_entry(rootfs / "etc" / "passwd", "nobody")
    # What the test rootfs says (build-rootfs writes it): uid, gid and a home that differs
    # from the default /root, so HOME must come from this line.
    assert entry[2:4] == ["65534", "65534"] and entry[5] == "/nonexistent"
    run = pyctr("/bin/sh", "-c", 'id -u; id -g; id -G; echo "$HOME"; id -un',
                options=("-u", "nobody"))
    assert ok(run) == "65534\n65534\n65534\n/nonexistent\nnobody\n"


def test_numeric_ids_not_in_passwd_work_with_home_slash(pyctr, rootfs: Path) -> None:
    names = (rootfs / "etc" / "passwd").read_text()
    assert ":1234:" not in names and ":5678:" not in names
    run = pyctr("/bin/sh", "-c", 'id -u; id -g; id -G; echo "$HOME"',
                options=("-u", "1234:5678"))
    assert ok(run) == "1234\n5678\n5678\n/\n"


def test_numeric_uid_in_passwd_takes_that_users_group_and_home(pyctr) -> None:
    run = pyctr("/bin/sh", "-c", 'id -u; id -g; echo "$HOME"', options=("-u", "65534"))
    assert ok(run) == "65534\n65534\n/nonexistent\n"


def test_supplementary_groups_come_from_the_rootfs_group_file(rootfs: Path,
                                                              tmp_path: Path) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    with open(root / "etc" / "group", "a") as file:
        file.write("staff:x:50:root,nobody\naudio:x:29:nobody\nvideo:x:44:root\n")
    run = run_cli("-u", "nobody", str(root), "/bin/sh", "-c", "id -g; id -G")
    primary, groups = ok(run).splitlines()
    assert primary == "65534"
    assert groups.split()[0] == "65534"
    assert sorted(groups.split()[1:]) == ["29", "50"]
    # The group file of the shared rootfs has no such membership: nobody has no extra groups.
    run = run_cli("-u", "nobody", str(rootfs), "/bin/sh", "-c", "id -G")
    assert ok(run) == "65534\n"


def test_a_user_added_only_to_the_rootfs_resolves(rootfs: Path, tmp_path: Path) -> None:
    assert "pyctralice" not in Path("/etc/passwd").read_text()
    root = copy_rootfs(rootfs, tmp_path / "r")
    with open(root / "etc" / "passwd", "a") as file:
        file.write("pyctralice:x:2001:2002:Alice:/home/alice:/bin/sh\n")
    run = run_cli("-u", "pyctralice", str(root), "/bin/sh", "-c", 'id -u; id -g; echo "$HOME"')
    assert ok(run) == "2001\n2002\n/home/alice\n"


def host_only_user(rootfs: Path) -> str:
    """A user in the host's /etc/passwd but not in the rootfs's (daemon, on most hosts)."""
    ours = {line.split(":")[0] for line in (rootfs / "etc" / "passwd").read_text().splitlines()}
    for line in Path("/etc/passwd").read_text().splitlines():
        name = line.split(":")[0]
        if name and not name.startswith("#") and name not in ours:
            return name
    pytest.skip("every host user is also in the rootfs's /etc/passwd")


@pytest.mark.parametrize("kind", ["unknown", "host-only", "unknown-group"])
def test_a_user_or_group_not_in_the_rootfs_fails_with_one_line(pyctr, rootfs: Path,
                                                               kind: str) -> None:
    user, named = {
        "unknown": ("pyctrnosuchuser", "'pyctrnosuchuser'"),
        "host-only": (host_only_user(rootfs), f"'{host_only_user(rootfs)}'"),
        "unknown-group": ("nobody:pyctrnosuchgroup", "'pyctrnosuchgroup'"),
    }[kind]
    run = pyctr("/bin/echo", "ran", options=("-u", user))
    fails_with_one_line(run, named, "rootfs")
    assert run.stdout == ""


@pytest.mark.parametrize("name", ["passwd", "group"])
def test_user_files_that_are_not_regular_files_are_refused(rootfs: Path, tmp_path: Path,
                                                           name: str) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    (root / "etc" / name).unlink()
    os.mkfifo(root / "etc" / name)  # reading it would block pyctr forever
    run = run_cli("-u", "nobody", str(root), "/bin/echo", "ran", timeout=20)
    fails_with_one_line(run, f"/etc/{name}", "not a regular file")


def test_bundle_user_ids_and_additional_gids(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/sh", "-c", "id -u; id -g; id -G")
    document["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [20, 10]}
    lines = ok(run_bundle(tmp_path / "bundle", document)).splitlines()
    assert lines[:2] == ["1000", "1001"]
    assert lines[2].split()[0] == "1001" and sorted(lines[2].split()[1:]) == ["10", "20"]


# --- --ulimit and rlimits ----------------------------------------------------------------------


def test_ulimits_set_soft_and_hard_limits(pyctr) -> None:
    run = pyctr("/bin/cat", "/proc/self/limits",
                options=("--ulimit", "nofile=100:200", "--ulimit", "nproc=500:1000",
                         "--ulimit", "core=0"))
    found = limits(ok(run))
    assert found["Max open files"] == ("100", "200")
    assert found["Max processes"] == ("500", "1000")
    assert found["Max core file size"] == ("0", "0")


def has_capability(number: int) -> bool:
    with open("/proc/self/status") as file:
        fields = dict(line.split(":\t", 1) for line in file if ":\t" in line)
    return bool(int(fields["CapEff"], 16) & (1 << number))


def test_ulimit_unlimited(pyctr) -> None:
    run = pyctr("/bin/cat", "/proc/self/limits", options=("--ulimit", "nproc=unlimited"))
    if resource.getrlimit(resource.RLIMIT_NPROC)[1] == resource.RLIM_INFINITY or \
            has_capability(CAP_SYS_RESOURCE):
        assert limits(ok(run))["Max processes"] == ("unlimited", "unlimited")
    else:
        # Raising a hard limit needs CAP_SYS_RESOURCE, which this host's root lacks (some
        # sandboxes drop it): the workload cannot get it, and pyctr says so in one line.
        fails_with_one_line(run, "RLIMIT_NPROC", "Operation not permitted")
        assert run.stdout == ""


@pytest.mark.parametrize("value", ["bogus=1", "nofile=200:100", "nofile=lots"])
def test_a_bad_ulimit_fails_with_one_line(pyctr, value: str) -> None:
    run = pyctr("/bin/echo", "ran", options=("--ulimit", value))
    fails_with_one_line(run, "--ulimit", value)
    assert run.stdout == ""


def test_bundle_rlimits_apply(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/cat", "/proc/self/limits")
    document["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 64, "hard": 128},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": RLIM_INFINITY},
    ]
    found = limits(ok(run_bundle(tmp_path / "bundle", document)))
    assert found["Max open files"] == ("64", "128")
    assert found["Max core file size"] == ("0", "unlimited")


# --- environment, working directory, umask ----------------------------------------------------


def test_env_file_is_read_and_env_flags_override_it(pyctr, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\n   # an indented comment\n\nA=1\nB=two words\n"
                        "C=from-file\nQUOTED=\"kept\"\nEMPTY=\nFROMHOST\nNOTONHOST\n")
    run = pyctr("/bin/sh", "-c",
                'printf "%s|" "$A" "$B" "$C" "$QUOTED" "$EMPTY" "$FROMHOST" '
                '"${NOTONHOST-unset}"; echo; env | cut -d= -f1 | sort',
                options=("--env-file", str(env_file), "-e", "C=override"),
                env={**os.environ, "FROMHOST": "host-value"})
    first, *names = ok(run).splitlines()
    assert first == '1|two words|override|"kept"||host-value|unset|'
    assert not any(name.startswith("#") or not name for name in names), names
    assert {"A", "B", "C", "QUOTED", "EMPTY", "FROMHOST", "PATH", "HOME"} <= set(names)
    assert "NOTONHOST" not in names


def test_workdir_is_created_in_the_rootfs_and_is_the_cwd(rootfs: Path, tmp_path: Path) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    assert not (root / "new").exists()
    run = run_cli("-w", "/new/dir", str(root), "/bin/sh", "-c", "pwd; stat -c %a .")
    assert ok(run) == "/new/dir\n755\n"
    assert (root / "new" / "dir").is_dir()


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"),
                         [(None, "644", "755"), (0o077, "600", "700"), (0, "666", "777")])
def test_bundle_umask_applies(rootfs: Path, tmp_path: Path, umask: int | None, file_mode: str,
                              dir_mode: str) -> None:
    document = spec_document(rootfs, "/bin/sh", "-c",
                             "touch /tmp/f; mkdir /tmp/d; stat -c %a /tmp/f /tmp/d")
    if umask is not None:
        document["process"]["user"]["umask"] = umask
    assert ok(run_bundle(tmp_path / "bundle", document)) == f"{file_mode}\n{dir_mode}\n"


# --- --read-only -----------------------------------------------------------------------------


def test_read_only_root_with_writable_tmp_shm_and_dev(pyctr, rootfs: Path) -> None:
    probe = f"pyctr-ro-probe-{secrets.token_hex(4)}"
    run = pyctr("/bin/sh", "-c",
                f"touch /{probe} 2>&1; echo root=$?; "
                "touch /tmp/a && touch /dev/shm/b && touch /dev/x && touch /run/c && "
                "echo writable; cat /proc/mounts",
                options=("--read-only", "--tmpfs", "/run"))
    output = ok(run)
    assert "Read-only file system" in output
    assert "root=1" in output
    assert "writable" in output
    mounts = proc_mounts(output)
    assert mounts["/"][1] == "ro"
    assert mounts["/tmp"][1] == "rw" and mounts["/dev"][1] == "rw"
    assert mounts["/dev/shm"][1] == "rw" and mounts["/run"][1] == "rw"
    assert not (rootfs / probe).exists()


@pytest.fixture
def rootfs_on_nosuid_mount(rootfs: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the rootfs on a tmpfs the host mounted nosuid,nodev (unmounted afterwards)."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,size=64m", "pyctr-test",
                    str(mount_point)], check=True)
    try:
        yield copy_rootfs(rootfs, mount_point / "r")
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
    assert host_mounts_at_or_below(mount_point) == []


@pytest.mark.parametrize("read_only", [
    False, True,
], ids=["rw", "read-only"])
def test_root_keeps_the_nosuid_and_nodev_of_its_host_mount(rootfs_on_nosuid_mount: Path,
                                                           read_only: bool) -> None:
    options = ("--read-only",) if read_only else ()
    run = run_cli(*options, str(rootfs_on_nosuid_mount), "/bin/cat", "/proc/mounts")
    root = proc_mounts(ok(run))["/"]
    assert root[1] == ("ro" if read_only else "rw")
    assert {"nosuid", "nodev"} <= set(root), root


# --- -v ----------------------------------------------------------------------------------------


@pytest.fixture
def root_copy(rootfs: Path, tmp_path: Path) -> Path:
    return copy_rootfs(rootfs, tmp_path / "r")


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "host"
    directory.mkdir()
    (directory / "in.txt").write_text("from the host\n")
    return directory


def test_volume_read_write(root_copy: Path, host_dir: Path) -> None:
    run = run_cli("-v", f"{host_dir}:/data", str(root_copy), "/bin/sh", "-c",
                  "cat /data/in.txt; echo from the container > /data/out.txt")
    assert ok(run) == "from the host\n"
    assert (host_dir / "out.txt").read_text() == "from the container\n"
    assert (root_copy / "data").is_dir() and not os.listdir(root_copy / "data")


def test_volume_read_only(root_copy: Path, host_dir: Path) -> None:
    run = run_cli("-v", f"{host_dir}:/data:ro", str(root_copy), "/bin/sh", "-c",
                  "cat /data/in.txt; touch /data/new 2>&1; echo rc=$?")
    output = ok(run)
    assert output.startswith("from the host\n")
    assert "Read-only file system" in output and output.endswith("rc=1\n")
    assert sorted(os.listdir(host_dir)) == ["in.txt"]


@pytest.fixture
def host_dir_with_submount(host_dir: Path) -> Iterator[Path]:
    """``host_dir`` with a tmpfs mounted on host_dir/sub (on the host, for this test only)."""
    sub = host_dir / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pyctr-test", str(sub)],
                   check=True)
    try:
        yield host_dir
    finally:
        subprocess.run(["umount", str(sub)], check=True)
    assert host_mounts_at_or_below(sub) == []


def test_read_only_volume_is_read_only_in_its_submounts_too(root_copy: Path,
                                                           host_dir_with_submount: Path) -> None:
    host_dir = host_dir_with_submount
    script = ("touch /data/sub/x 2>&1; echo sub=$?; touch /data/y 2>&1; echo top=$?; "
              "grep ' /data' /proc/mounts")
    run = run_cli("-v", f"{host_dir}:/data:ro", str(root_copy), "/bin/sh", "-c", script)
    output = ok(run)
    assert "sub=1" in output and "top=1" in output
    assert output.count("Read-only file system") == 2
    mounts = proc_mounts(output)
    assert mounts["/data"][1] == "ro" and mounts["/data/sub"][1] == "ro"
    assert os.listdir(host_dir / "sub") == []
    # Read-write, the same submount is reached (the bind is recursive) and writable.
    run = run_cli("-v", f"{host_dir}:/data", str(root_copy), "/bin/sh", "-c",
                  "echo through > /data/sub/x")
    ok(run)
    assert (host_dir / "sub" / "x").read_text() == "through\n"


def test_volume_of_a_single_file(root_copy: Path, tmp_path: Path) -> None:
    host_file = tmp_path / "myfile"
    host_file.write_text("hello file\n")
    run = run_cli("-v", f"{host_file}:/etc/myfile", str(root_copy), "/bin/sh", "-c",
                  "cat /etc/myfile; echo appended >> /etc/myfile; ls -p /etc")
    output = ok(run)
    assert output.startswith("hello file\n")
    assert "myfile\n" in output  # a file, not a directory (ls -p marks those with /)
    assert host_file.read_text() == "hello file\nappended\n"
    assert (root_copy / "etc" / "myfile").is_file()


@pytest.fixture
def noexec_host_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs the host mounted noexec,nosuid,nodev, holding an executable ``t``."""
    directory = tmp_path / "noexec"
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,nosuid,nodev,size=1m", "pyctr-test",
                    str(directory)], check=True)
    try:
        shutil.copy2("/bin/true", directory / "t")
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)
    assert host_mounts_at_or_below(directory) == []


@pytest.mark.parametrize("flag", [
    "-v {}:/data",
    "-v {}:/data:ro",
    "--mount type=bind,source={},target=/data,readonly",
])
def test_bind_keeps_the_noexec_nosuid_nodev_of_its_source(root_copy: Path,
                                                         noexec_host_dir: Path,
                                                         flag: str) -> None:
    option, value = flag.format(noexec_host_dir).split(" ", 1)
    run = run_cli(option, value, str(root_copy), "/bin/sh", "-c",
                  "/data/t; echo exec=$?; grep ' /data ' /proc/mounts")
    output = ok(run)
    assert "exec=126" in output, output
    assert {"nosuid", "nodev", "noexec"} <= set(proc_mounts(output)["/data"])


@pytest.mark.parametrize("root_change", [
    "pivot_root",
    "chroot",
])
def test_shared_propagation_of_a_volume_applies(root_copy: Path, host_dir: Path,
                                                tmp_path: Path, root_change: str) -> None:
    other, private = tmp_path / "other", tmp_path / "private"
    other.mkdir()
    private.mkdir()
    options = ["--chroot"] if root_change == "chroot" else []
    run = run_cli(*options, "-v", f"{host_dir}:/data:rshared", "--mount",
                  f"type=bind,source={other},target=/b,bind-propagation=shared",
                  "-v", f"{private}:/p:rprivate",
                  str(root_copy), "/bin/cat", "/proc/self/mountinfo")
    optional = {point: fields for point, fields, _, _ in mountinfo(ok(run))}
    assert any(re.fullmatch(r"shared:\d+", field) for field in optional["/data"]), optional
    assert any(re.fullmatch(r"shared:\d+", field) for field in optional["/b"]), optional
    assert optional["/p"] == []


@pytest.fixture
def shared_host_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory the host made a shared mount (bound onto itself), with an empty ``sub``."""
    directory = tmp_path / "shared"
    (directory / "sub").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(directory)], check=True)
        yield directory
    finally:
        if str(directory / "sub") in mount_points():
            subprocess.run(["umount", str(directory / "sub")], check=True)
        subprocess.run(["umount", str(directory)], check=True)
    assert host_mounts_at_or_below(directory) == []


def test_rslave_volume_receives_mounts_the_host_makes_later(root_copy: Path,
                                                            shared_host_dir: Path) -> None:
    script = "echo READY; read line; grep -c ' /data/sub ' /proc/self/mountinfo; true"
    with running("-v", f"{shared_host_dir}:/data:rslave", str(root_copy), "/bin/sh", "-c",
                 script) as session:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pyctr-test",
                        str(shared_host_dir / "sub")], check=True)
    assert session.after == ["1"]


def test_volume_with_a_missing_host_path_fails_with_one_line(pyctr, tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    run = pyctr("/bin/echo", "ran", options=("-v", f"{missing}:/data"))
    fails_with_one_line(run, str(missing), "does not exist")
    assert not missing.exists()


def test_named_volume_persists_across_runs(root_copy: Path, tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    name = f"pyctr-test-{secrets.token_hex(4)}"
    env = {**os.environ, "PYCTR_VOLUMES_DIR": str(volumes)}
    try:
        first = run_cli("-v", f"{name}:/v", str(root_copy), "/bin/sh", "-c",
                        "ls -A /v; echo persisted > /v/data", env=env)
        assert ok(first) == ""
        second = run_cli("--mount", f"type=volume,source={name},target=/v", str(root_copy),
                         "/bin/cat", "/v/data", env=env)
        assert ok(second) == "persisted\n"
        assert (volumes / name / "_data" / "data").read_text() == "persisted\n"
        assert not os.path.exists(f"/var/lib/pyctr/volumes/{name}")
    finally:
        shutil.rmtree(volumes, ignore_errors=True)
    assert not volumes.exists()


# --- --tmpfs and --mount -----------------------------------------------------------------------


def test_tmpfs_with_size_and_mode_is_noexec_by_default(pyctr, rootfs: Path) -> None:
    assert (rootfs / "run").is_dir()
    run = pyctr("/bin/sh", "-c",
                "stat -c %a /run; cp /bin/true /run/t; /run/t; echo exec=$?; cat /proc/mounts",
                options=("--tmpfs", "/run:size=1m,mode=700"))
    output = ok(run)
    assert output.startswith("700\n")
    assert "exec=126" in output
    mounts = proc_mounts(output)
    assert mounts["/run"][0] == "tmpfs"
    assert {"rw", "nosuid", "nodev", "noexec", "size=1024k", "mode=700"} <= set(mounts["/run"])


def test_tmpfs_on_tmp_replaces_the_default_one(pyctr) -> None:
    run = pyctr("/bin/grep", " /tmp ", "/proc/mounts", options=("--tmpfs", "/tmp:size=2m"))
    lines = ok(run).splitlines()
    assert len(lines) == 1, lines
    assert {"tmpfs", "size=2048k", "noexec", "nosuid", "nodev"} <= set(lines[0].replace(
        ",", " ").split())


def test_tmpfs_exec_option_drops_the_default_noexec(pyctr) -> None:
    run = pyctr("/bin/sh", "-c", "cp /bin/true /run/t && /run/t && echo exec=$?",
                options=("--tmpfs", "/run:exec"))
    assert ok(run) == "exec=0\n"


def test_mount_tmpfs_with_a_size(root_copy: Path) -> None:
    run = run_cli("--mount", "type=tmpfs,target=/x,tmpfs-size=1m,tmpfs-mode=1770",
                  str(root_copy), "/bin/sh", "-c", "stat -c %a /x; cat /proc/mounts")
    output = ok(run)
    assert output.startswith("1770\n")
    mounts = proc_mounts(output)
    assert mounts["/x"][0] == "tmpfs"
    assert {"noexec", "nosuid", "nodev", "size=1024k", "mode=1770"} <= set(mounts["/x"])


def test_mount_bind_read_only(root_copy: Path, host_dir: Path) -> None:
    run = run_cli("--mount", f"type=bind,source={host_dir},target=/b,readonly",
                  str(root_copy), "/bin/sh", "-c",
                  "cat /b/in.txt; touch /b/new 2>&1; echo rc=$?")
    output = ok(run)
    assert output.startswith("from the host\n")
    assert "Read-only file system" in output and output.endswith("rc=1\n")
    assert sorted(os.listdir(host_dir)) == ["in.txt"]


# --- bundles -----------------------------------------------------------------------------------


def test_bundle_hostname_and_domainname(rootfs: Path, tmp_path: Path) -> None:
    host_name, host_domain = socket.gethostname(), Path("/proc/sys/kernel/domainname").read_text()
    document = spec_document(rootfs, "/bin/sh", "-c",
                             "hostname; cat /proc/sys/kernel/domainname; echo $HOSTNAME")
    document["hostname"] = "spec-host"
    document["domainname"] = "example.org"
    lines = ok(run_bundle(tmp_path / "bundle", document)).splitlines()
    assert lines[:2] == ["spec-host", "example.org"]
    assert socket.gethostname() == host_name
    assert Path("/proc/sys/kernel/domainname").read_text() == host_domain


def test_bundle_mounts_are_made_in_the_order_written(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/cat", "/proc/self/mountinfo")
    order = ["/tmp/zz", "/tmp/aa", "/tmp/mm", "/tmp/aa/inner"]
    document["mounts"] += [
        {"destination": destination, "type": "tmpfs", "source": f"t{index}",
         "options": ["nosuid", f"size={index + 1}m"]}
        for index, destination in enumerate(order)
    ]
    entries = mountinfo(ok(run_bundle(tmp_path / "bundle", document)))
    points = [point for point, _, _, _ in entries]
    assert [point for point in points if point.startswith("/tmp/")] == order
    written = [mount["destination"] for mount in document["mounts"]]
    assert [point for point in points if point in written] == written
    sizes = {point: options for point, _, _, options in entries}
    assert "size=2048k" in sizes["/tmp/aa"] and "size=4096k" in sizes["/tmp/aa/inner"]


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of this test's own, ``ip netns add pyctr-test-XXXX``, holding a
    link d0 (a dummy one, or a bridge on kernels without the dummy driver); deleted
    afterwards (and /run/netns unmounted again if ip mounted it for it)."""
    name = f"pyctr-test-{secrets.token_hex(4)}"
    existed, mounted = os.path.exists("/run/netns"), "/run/netns" in mount_points()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for kind in ("dummy", "bridge"):
            added = subprocess.run(["ip", "netns", "exec", name, "ip", "link", "add", "d0",
                                    "type", kind], capture_output=True, text=True)
            if added.returncode == 0:
                break
        else:
            raise AssertionError(f"cannot add a link to {name}: {added.stderr}")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
        if not mounted and "/run/netns" in mount_points():
            subprocess.run(["umount", "/run/netns"], check=False)
        if not existed:
            try:
                os.rmdir("/run/netns")
            except OSError:
                pass
    assert not os.path.exists(f"/run/netns/{name}")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert name not in listed.stdout


def test_bundle_joins_a_network_namespace_by_path(rootfs: Path, tmp_path: Path,
                                                  netns: str) -> None:
    path = f"/run/netns/{netns}"
    document = spec_document(rootfs, "/bin/sh", "-c",
                             "readlink /proc/self/ns/net; ls /sys/class/net")
    namespace_entry(document, "network")["path"] = path
    lines = ok(run_bundle(tmp_path / "bundle", document)).splitlines()
    assert lines[0] == f"net:[{os.stat(path).st_ino}]"
    assert lines[1:] == ["d0", "lo"]


def test_bundle_without_a_network_namespace_shares_the_hosts(rootfs: Path,
                                                             tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/sh", "-c",
                             "readlink /proc/self/ns/net; ls /sys/class/net")
    document["linux"]["namespaces"].remove(namespace_entry(document, "network"))
    lines = ok(run_bundle(tmp_path / "bundle", document)).splitlines()
    assert lines[0] == os.readlink("/proc/self/ns/net")
    assert lines[1:] == sorted(os.listdir("/sys/class/net"))
    assert len(lines[1:]) > 1  # more than lo: the host's own interfaces


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "omitted"])
@pytest.mark.parametrize(("kind", "file"),
                         [("uts", "uts"), ("ipc", "ipc"), ("network", "net"),
                          ("cgroup", "cgroup")])
def test_bundle_namespaces_listed_are_new_and_omitted_are_the_hosts(
        rootfs: Path, tmp_path: Path, kind: str, file: str, listed: bool) -> None:
    document = spec_document(rootfs, "/bin/readlink", f"/proc/self/ns/{file}")
    namespaces = document["linux"]["namespaces"]
    namespaces[:] = [entry for entry in namespaces if entry["type"] != kind]
    if listed:
        namespaces.append({"type": kind})
    elif kind == "uts":
        del document["hostname"]  # a hostname needs a uts namespace of its own
    inside = ok(run_bundle(tmp_path / "bundle", document)).strip()
    host = os.readlink(f"/proc/self/ns/{file}")
    assert inside.startswith(f"{file}:[")
    assert (inside != host) is listed, (inside, host)


def test_bundle_joins_uts_and_ipc_namespaces_by_path(rootfs: Path, tmp_path: Path) -> None:
    host_name = socket.gethostname()
    with namespace_holder("--uts", "--ipc", setup="hostname pyctr-joined") as pid:
        document = spec_document(rootfs, "/bin/sh", "-c",
                                 "hostname; readlink /proc/self/ns/uts /proc/self/ns/ipc")
        del document["hostname"]
        for kind in ("uts", "ipc"):
            namespace_entry(document, kind)["path"] = f"/proc/{pid}/ns/{kind}"
        lines = ok(run_bundle(tmp_path / "bundle", document)).splitlines()
        assert lines == ["pyctr-joined", os.readlink(f"/proc/{pid}/ns/uts"),
                         os.readlink(f"/proc/{pid}/ns/ipc")]
    assert socket.gethostname() == host_name


def test_bundle_joining_a_mount_namespace_by_path_is_refused(root_copy: Path,
                                                             tmp_path: Path) -> None:
    # Never the host's: a namespace of this test's own, private, held by a sleeping process.
    with namespace_holder("--mount", "--propagation", "private") as pid:
        before = os.stat(f"/proc/{pid}/root/")
        document = spec_document(root_copy, "/bin/echo", "ran")
        namespace_entry(document, "mount")["path"] = f"/proc/{pid}/ns/mnt"
        run = run_bundle(tmp_path / "bundle", document)
        after = os.stat(f"/proc/{pid}/root/")
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino), \
            "the process in the joined namespace was moved into the container's root"
        fails_with_one_line(run, "mount")


def test_bundle_relative_bind_source_is_relative_to_the_bundle(root_copy: Path,
                                                               tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "shared").mkdir(parents=True)
    (bundle / "shared" / "f").write_text("next to config.json\n")
    document = spec_document(root_copy, "/bin/sh", "-c",
                             "cat /data/f; touch /data/g 2>&1; echo rc=$?")
    document["mounts"].append({"destination": "/data", "type": "bind", "source": "shared",
                               "options": ["rbind", "ro"]})
    output = ok(run_bundle(bundle, document))
    assert output.startswith("next to config.json\n")
    assert "Read-only file system" in output and output.endswith("rc=1\n")


def test_bundle_namespaced_sysctl_is_set_inside_only(rootfs: Path, tmp_path: Path) -> None:
    host = Path("/proc/sys/net/ipv4/ip_forward")
    before = host.read_text()
    value = "0" if before.strip() == "1" else "1"
    document = spec_document(rootfs, "/bin/cat", "/proc/sys/net/ipv4/ip_forward",
                             "/proc/sys/kernel/msgmax")
    document["linux"]["sysctl"] = {"net.ipv4.ip_forward": value, "kernel.msgmax": "12345"}
    assert ok(run_bundle(tmp_path / "bundle", document)) == f"{value}\n12345\n"
    assert host.read_text() == before


@pytest.mark.parametrize("key", ["kernel.core_pattern", "vm.swappiness"])
def test_bundle_sysctl_outside_a_namespace_is_refused(rootfs: Path, tmp_path: Path,
                                                      key: str) -> None:
    host = Path("/proc/sys") / key.replace(".", "/")
    before = host.read_text()
    document = spec_document(rootfs, "/bin/echo", "ran")
    document["linux"]["sysctl"] = {key: "pyctr-test-%p" if "core" in key else "7"}
    run = run_bundle(tmp_path / "bundle", document)
    fails_with_one_line(run, key, "not namespaced")
    assert run.stdout == ""
    assert host.read_text() == before


def test_bundle_sysctl_of_a_joined_namespace_is_refused(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/echo", "ran")
    document["linux"]["namespaces"].remove(namespace_entry(document, "network"))
    document["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    fails_with_one_line(run_bundle(tmp_path / "bundle", document), "net.ipv4.ip_forward",
                        "needs a new network namespace")
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == before


def test_bundle_devices_are_made_with_mode_and_owner(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/sh", "-c",
                             "stat -c '%F %t %T %a %u %g' /dev/mynull /dev/sub/myzero; "
                             "echo x > /dev/mynull && head -c 3 /dev/sub/myzero | od -An -tx1")
    document["linux"]["devices"] = [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600,
         "uid": 1, "gid": 2},
        {"path": "/dev/sub/myzero", "type": "c", "major": 1, "minor": 5},
    ]
    lines = ok(run_bundle(tmp_path / "bundle", document)).splitlines()
    assert lines == ["character special file 1 3 600 1 2",
                     "character special file 1 5 666 0 0",
                     " 00 00 00"]
    assert not (rootfs / "dev" / "mynull").exists()


def test_bundle_oom_score_adj(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/cat", "/proc/self/oom_score_adj")
    document["process"]["oomScoreAdj"] = 500
    assert ok(run_bundle(tmp_path / "bundle", document)) == "500\n"


@pytest.mark.parametrize(("propagation", "tag"),
                         [("shared", "shared:"), ("slave", None), ("private", None), ("", None)])
def test_bundle_rootfs_propagation(rootfs: Path, tmp_path: Path, propagation: str,
                                   tag: str | None) -> None:
    document = spec_document(rootfs, "/bin/cat", "/proc/self/mountinfo")
    if propagation:
        document["linux"]["rootfsPropagation"] = propagation
    entries = mountinfo(ok(run_bundle(tmp_path / "bundle", document)))
    roots = [optional for point, optional, _, _ in entries if point == "/"]
    assert len(roots) == 1, entries
    if tag is None:
        assert not any(field.startswith("shared:") for field in roots[0]), roots[0]
    else:
        assert any(re.fullmatch(r"shared:\d+", field) for field in roots[0]), roots[0]


# --- -t ----------------------------------------------------------------------------------------


def test_terminal_gives_a_console_and_a_pts(rootfs: Path) -> None:
    script = ("tty; stat -c %F /dev/console; stat -L -c %t:%T /dev/console $(tty); "
              "test -t 0 && echo stdin-tty; stty size")
    lines, output, status = in_pty("-t", str(rootfs), "/bin/sh", "-c", script)
    assert status == 0, output
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), lines
    assert lines[1] == "character special file"
    assert lines[2] == lines[3], "/dev/console is not the workload's terminal"
    assert lines[4:] == ["stdin-tty", "24 80"]  # as docker run -t: stdin is the terminal too
    assert "\r\r\n" not in output  # the host terminal is raw: one \r, the container's


def test_bundle_terminal_with_a_console_size(rootfs: Path, tmp_path: Path) -> None:
    """With no terminal on pyctr's side (pipes), consoleSize is what the workload gets."""
    document = spec_document(rootfs, "/bin/sh", "-c",
                             "stty size; tty; stat -c %F /dev/console; test -t 0 && echo in")
    document["process"]["terminal"] = True
    document["process"]["consoleSize"] = {"height": 30, "width": 100}
    output = ok(run_bundle(tmp_path / "bundle", document))
    lines = output.replace("\r\n", "\n").splitlines()
    assert lines[0] == "30 100"
    assert re.fullmatch(r"/dev/pts/\d+", lines[1]), lines
    assert lines[2:] == ["character special file", "in"]


def test_bundle_terminal_behaves_as_dash_t(rootfs: Path, tmp_path: Path) -> None:
    """process.terminal from a terminal: raw mode and the host's size, as -t gives."""
    document = spec_document(rootfs, "/bin/sh", "-c", "stty size; tty")
    document["process"]["terminal"] = True
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(document))
    lines, output, status = in_pty("--bundle", str(bundle))
    assert status == 0, output
    assert re.fullmatch(r"/dev/pts/\d+", lines[1]), lines
    assert lines[0] == "24 80"  # the host terminal's size, as with -t
    assert "\r\r\n" not in output  # the host terminal in raw mode, as with -t


# --- hostile root filesystems ----------------------------------------------------------------


@pytest.fixture
def outside() -> Iterator[Path]:
    """A host directory that symlinks in a hostile rootfs point at. Not under /tmp: inside the
    container /tmp is a tmpfs (which hides what the rootfs has there), and an absolute link
    r/tmp -> /tmp/... would resolve through itself."""
    directory = Path(tempfile.mkdtemp(prefix="pyctr-test-", dir="/var/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)
    assert not directory.exists()


def link_to(target: Path, link: Path, kind: str) -> None:
    """Make ``link`` a symlink to the host path ``target``: "absolute", or "relative" with
    enough ``..`` to climb out of the rootfs on the host (inside, ``..`` stops at the root, so
    both name the same path in the container)."""
    os.symlink(str(target) if kind == "absolute" else os.path.relpath(target, link.parent),
               link)


def in_root(root: Path, container_path: str) -> Path:
    """Where ``container_path`` is on the host, inside the rootfs ``root``."""
    return root / container_path.lstrip("/")


@pytest.mark.parametrize("link", ["relative", "absolute"])
def test_tmp_symlink_out_of_the_rootfs_stays_inside(rootfs: Path, tmp_path: Path,
                                                    outside: Path, link: str) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    shutil.rmtree(root / "tmp")
    link_to(outside, root / "tmp", link)
    inside = in_root(root, str(outside))  # where the link leads in the container
    inside.mkdir(parents=True)
    script = ("echo probe > /tmp/probe; stat -f -c %T /tmp/; cat /proc/self/mountinfo; "
              "echo READY; read line")
    with running(str(root), "/bin/sh", "-c", script) as session:
        lines = session.before
        assert lines[0] == "tmpfs"
        tmpfs_points = [point for point, _, kind, _ in mountinfo("\n".join(lines))
                        if kind == "tmpfs"]
        assert str(outside) in tmpfs_points  # the link, resolved inside the root
        assert host_mounts_at_or_below(outside) == host_mounts_at_or_below(inside) == []
        assert os.listdir(outside) == [] and os.listdir(inside) == []
    assert host_mounts_at_or_below(outside) == []
    assert os.listdir(outside) == []
    assert os.listdir(inside) == []  # the probe was in the container's tmpfs


@pytest.mark.parametrize("link", ["relative", "absolute"])
def test_dangling_tmp_symlink_out_of_the_rootfs_is_refused(rootfs: Path, tmp_path: Path,
                                                           outside: Path, link: str) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    shutil.rmtree(root / "tmp")
    link_to(outside, root / "tmp", link)
    run = run_cli(str(root), "/bin/echo", "ran")
    fails_with_one_line(run, "cannot create mount point", "/tmp")
    assert run.stdout == ""
    assert host_mounts_at_or_below(outside) == []
    assert os.listdir(outside) == []
    assert not (root / "var" / "tmp" / outside.name).exists()


@pytest.mark.parametrize("directory", ["proc", "dev", "sys"])
@pytest.mark.parametrize("present", [False, True], ids=["dangling", "present-inside"])
def test_kernel_filesystem_mount_point_that_is_a_symlink_is_refused(
        rootfs: Path, tmp_path: Path, outside: Path, directory: str, present: bool) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    shutil.rmtree(root / directory)
    link_to(outside, root / directory, "absolute")
    if present:
        in_root(root, str(outside)).mkdir(parents=True)
    run = run_cli(str(root), "/bin/echo", "ran")
    fails_with_one_line(run, "symbolic link", f"/{directory}")
    assert run.stdout == ""
    assert host_mounts_at_or_below(outside) == [] and os.listdir(outside) == []
    if present:
        assert os.listdir(in_root(root, str(outside))) == []


@pytest.mark.parametrize("present", [False, True], ids=["dangling", "present-inside"])
@pytest.mark.parametrize("link", ["relative", "absolute"])
def test_volume_under_a_symlink_escaping_the_rootfs_never_lands_on_the_host(
        rootfs: Path, tmp_path: Path, host_dir: Path, outside: Path, link: str,
        present: bool) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    link_to(outside, root / "escape", link)
    if present:
        in_root(root, str(outside)).mkdir(parents=True)
    run = run_cli("-v", f"{host_dir}:/escape/data", str(root), "/bin/sh", "-c",
                  "cat /escape/data/in.txt; cat /proc/self/mountinfo")
    if present:
        output = ok(run)
        assert output.startswith("from the host\n")
        points = [point for point, _, _, _ in mountinfo(output)]
        assert f"{outside}/data" in points  # the symlink, resolved inside the root
        assert in_root(root, f"{outside}/data").is_dir()
    else:
        fails_with_one_line(run, "cannot create mount point", "/escape/data")
        assert run.stdout == ""
    assert host_mounts_at_or_below(outside) == []
    assert os.listdir(outside) == []  # no mount point made on the host


@pytest.mark.parametrize("link", ["relative", "absolute"])
def test_passwd_symlink_out_of_the_rootfs_is_not_read(rootfs: Path, tmp_path: Path,
                                                      outside: Path, link: str) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    secret = outside / "shadow-like"
    secret.write_text("pyctrsomeuser:x:4242:4242:secret:/home/someuser:/bin/sh\n"
                      "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")
    (root / "etc" / "passwd").unlink()
    link_to(secret, root / "etc" / "passwd", link)
    run = run_cli("-u", "pyctrsomeuser", str(root), "/bin/echo", "ran")
    fails_with_one_line(run, "'pyctrsomeuser'", "/etc/passwd")
    assert run.stdout == ""
    # A numeric uid needs no passwd entry, and gets nothing from the host's file either.
    run = run_cli("-u", "4242", str(root), "/bin/sh", "-c", 'id -g; echo "$HOME"')
    assert ok(run) == "0\n/\n"


def test_passwd_symlink_within_the_rootfs_is_followed_there(rootfs: Path,
                                                            tmp_path: Path) -> None:
    root = copy_rootfs(rootfs, tmp_path / "r")
    real = root / "etc" / "passwd.real"
    real.write_text("pyctrsomeuser:x:4242:4243::/home/someuser:/bin/sh\n")
    (root / "etc" / "passwd").unlink()
    os.symlink("/etc/passwd.real", root / "etc" / "passwd")  # absolute: the container's /etc
    run = run_cli("-u", "pyctrsomeuser", str(root), "/bin/sh", "-c",
                  'id -u; id -g; echo "$HOME"')
    assert ok(run) == "4242\n4243\n/home/someuser\n"


def test_a_cgroup_namespace_still_shows_every_hierarchy_of_the_container(
        rootfs: Path, tmp_path: Path) -> None:
    # The host's cgroup files are read before the init makes the namespace: inside it, the
    # hierarchies no longer say where they are mounted (memory went missing that way).
    host = {line.split(":")[1] for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.split(":")[1]}
    document = spec_document(rootfs, "/bin/sh", "-c",
                             "ls /sys/fs/cgroup; echo --; cat /proc/self/cgroup")
    assert {"type": "cgroup"} in document["linux"]["namespaces"]  # the default
    listing, cgroups = ok(run_bundle(tmp_path / "bundle", document)).split("--\n")
    shown = set(listing.split())
    for controllers in host:
        assert controllers.removeprefix("name=") in shown, (controllers, shown)
    assert {line.split(":", 2)[2] for line in cgroups.splitlines()} == {"/"}


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_bundle_capabilities_and_no_new_privileges_are_applied(rootfs: Path,
                                                                tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/cat", "/proc/self/status")
    kill, chown, net_raw = 1 << 5, 1 << 0, 1 << 13
    document["process"]["capabilities"] = {
        "bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
        "permitted": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
        "inheritable": ["CAP_CHOWN"], "ambient": ["CAP_CHOWN"]}
    document["process"]["noNewPrivileges"] = True
    fields = status_fields(ok(run_bundle(tmp_path / "bundle", document)))
    assert int(fields["CapBnd"], 16) == kill | chown | net_raw
    # The exec recomputes the sets: root would get all the bounding set allows (file
    # capabilities count as all set for uid 0), but no_new_privs keeps the new permitted set
    # within the old one, so permitted and effective are the spec's permitted set.
    assert int(fields["CapPrm"], 16) == int(fields["CapEff"], 16) == kill | chown
    assert int(fields["CapInh"], 16) == chown
    assert int(fields["CapAmb"], 16) == chown
    assert fields["NoNewPrivs"] == "1"


def test_bundle_capabilities_of_a_user_that_is_not_root(rootfs: Path, tmp_path: Path) -> None:
    document = spec_document(rootfs, "/bin/cat", "/proc/self/status", options=("-u", "1000"))
    document["process"]["capabilities"] = {
        "bounding": ["CAP_NET_BIND_SERVICE"], "permitted": ["CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_NET_BIND_SERVICE"], "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"]}
    document["process"]["noNewPrivileges"] = False  # `spec` writes the default, true
    fields = status_fields(ok(run_bundle(tmp_path / "bundle", document)))
    bind = 1 << 10
    assert fields["Uid"].split()[:3] == ["1000"] * 3
    # Only the ambient set carries capabilities across the exec of an ordinary file by a user
    # that is not root.
    assert (int(fields["CapEff"], 16), int(fields["CapPrm"], 16)) == (bind, bind)
    assert (int(fields["CapAmb"], 16), int(fields["CapBnd"], 16)) == (bind, bind)
    assert fields["NoNewPrivs"] == "0"


def test_bundle_masked_and_read_only_paths(rootfs: Path, tmp_path: Path) -> None:
    hidden = next(path for path in ("/proc/timer_list", "/proc/keys")
                  if os.path.exists(path) and Path(path).read_bytes())  # something to hide
    assert os.listdir("/sys/firmware")
    script = (f"wc -c < {hidden}; ls -A /sys/firmware | wc -l; "
              "echo 1 > /proc/sys/kernel/ns_last_pid && echo wrote || echo refused; "
              "echo x > /tmp/ok && echo tmp-writable")
    document = spec_document(rootfs, "/bin/sh", "-c", script)
    document["linux"]["maskedPaths"] = [hidden, "/sys/firmware", "/proc/no-such-file"]
    document["linux"]["readonlyPaths"] = ["/proc/sys", "/proc/no-such-dir"]
    lines = ok(run_bundle(tmp_path / "bundle", document)).split()
    assert lines == ["0", "0", "refused", "tmp-writable"]
