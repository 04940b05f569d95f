"""The container description: docker-style flags -> OCI spec -> the document init reads.

Unit tests of ``pyctr.spec`` (the model, the docker translation, ``-u`` in a hostile rootfs) and
of ``ContainerConfig``'s two ways in; then the CLI's ``spec`` subcommand, ``--bundle`` and their
errors (exit 125 and one line naming the problem)."""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import requires_root
from helpers import assert_one_line_error, run_cli

from pyctr.linux.syscalls import RLIMITS
from pyctr.protocol import Config, decode, encode
from pyctr.spec import flags
from pyctr.spec.docker import build_spec
from pyctr.spec.flags import (
    RLIM_INFINITY,
    parse_mount,
    parse_tmpfs,
    parse_ulimit,
    parse_volume,
    read_env_file,
)
from pyctr.spec.model import Mount, Spec, SpecError
from pyctr.spec.security import MASKED_PATHS, READONLY_PATHS
from pyctr.spec.users import resolve_account
from pyctr.supervisor import ContainerConfig, PyctrError

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_DESTINATIONS = ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                        "/dev/shm", "/tmp"]
NOEXEC = ["noexec", "nosuid", "nodev"]  # --tmpfs's defaults
CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
# What `runc spec` writes (runc 1.1), a little trimmed and without the cgroup namespace.
RUNC_TEMPLATE: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
        "env": [DEFAULT_PATH, "TERM=xterm"], "cwd": "/",
        "capabilities": {kind: CAPS for kind in ("bounding", "effective", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*NOEXEC, "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/sys", "/proc/sysrq-trigger"],
    },
}
DELETE = object()
TWO = "\N{SUPERSCRIPT TWO}"  # str.isdigit() says yes, int() says no


def runc_document(**changes: object) -> dict[str, Any]:
    """A fresh RUNC_TEMPLATE with ``changes``: dotted paths ("mounts.1.sorce", list indices as
    numbers) to a new value, or to DELETE."""
    document = copy.deepcopy(RUNC_TEMPLATE)
    for dotted, value in changes.items():
        *parents, last = [int(part) if part.isdigit() else part for part in dotted.split(".")]
        target: Any = document
        for part in parents:
            target = target[part]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return document


def namespaces(*kinds: str) -> list[dict[str, str]]:
    return [{"type": kind} for kind in kinds]


def refusal(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The message of the SpecError that ``call`` must raise."""
    with pytest.raises(SpecError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def as_tuple(mount: Mount) -> tuple[str, str | None, str | None, list[str]]:
    return (mount.destination, mount.type, mount.source, mount.options)


# --- Spec.from_value -------------------------------------------------------------------------

def test_runc_template_is_accepted_and_round_trips() -> None:
    spec = Spec.from_value(runc_document())
    assert spec.to_value() == RUNC_TEMPLATE
    assert (spec.process.args, spec.process.cwd, spec.hostname) == (["sh"], "/", "runc")
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits] == [
        ("RLIMIT_NOFILE", 1024, 1024)]
    assert [ns.type for ns in spec.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount"]


def test_pending_fields_are_exactly_the_accepted_but_unapplied_ones() -> None:
    # runc's template limits only devices, which the container's cgroup applies; memory, cpu
    # and pids limits and the cgroup's path are applied too. What is not applied is named.
    assert Spec.from_value(runc_document()).pending_fields() == []
    limited = runc_document(**{"linux.resources.memory": {"limit": 1 << 30},
                               "linux.resources.pids": {"limit": 10},
                               "linux.cgroupsPath": "/pyctr/x"})
    assert Spec.from_value(limited).pending_fields() == []
    unapplied = runc_document(**{"linux.resources.memory": {"limit": 1 << 30, "kernel": 1},
                                 "linux.resources.blockIO": {"weight": 10}})
    assert Spec.from_value(unapplied).pending_fields() == [
        "linux.resources.blockIO", "linux.resources.memory.kernel"]


UNIMPLEMENTED = "pyctr does not implement this field; remove it from the config"
SPEC_REFUSALS: list[tuple[dict[str, object], str]] = [
    ({"hooks": {"prestart": []}}, f"hooks: {UNIMPLEMENTED}"),
    ({"process.apparmorProfile": "x"}, f"process.apparmorProfile: {UNIMPLEMENTED}"),
    ({"linux.uidMappings": []}, f"linux.uidMappings: {UNIMPLEMENTED}"),
    ({"mounts.1.sorce": "tmpfs"}, f"mounts[1].sorce: {UNIMPLEMENTED}"),
    ({"process.user.username": "root"}, f"process.user.username: {UNIMPLEMENTED}"),
    ({"process.args": "sh"}, "process.args must be a list of strings"),
    ({"process.user.uid": "0"}, "process.user.uid must be a whole number"),
    ({"process.user.uid": -1}, "process.user.uid must be between 0 and 4294967294, got -1"),
    ({"process.rlimits.0.soft": 2048}, "process.rlimits[0]: soft limit 2048 is above hard "
                                       "limit 1024"),
    ({"process.rlimits.0.type": "RLIMIT_FOO"}, "process.rlimits[0].type: unknown rlimit "
     f"'RLIMIT_FOO'; one of {', '.join(sorted(RLIMITS))}"),
    ({"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}] * 2},
     "process.rlimits[1].type: RLIMIT_NOFILE is given twice"),
    ({"process.env": ["NOEQUALS"]}, "process.env entries must be NAME=VALUE, got 'NOEQUALS'"),
    ({"process.cwd": "tmp"}, "process.cwd must be an absolute path, got 'tmp'"),
    ({"mounts.0.destination": "proc"}, "mounts[0].destination must be an absolute path, "
                                       "got 'proc'"),
    ({"linux.namespaces": namespaces("pid", "mount", "uts", "pid")},
     "linux.namespaces[3].type: namespace pid is listed twice"),
    ({"linux.namespaces": namespaces("pid", "mount", "uts", "chroot")},
     "linux.namespaces[3].type: unknown namespace type 'chroot'"),
    ({"linux.namespaces": namespaces("pid", "mount", "uts", "user")},
     "linux.namespaces: pyctr does not support user namespaces yet; remove it"),
    ({"linux.namespaces": namespaces("mount", "uts")}, "linux.namespaces must include pid: "
     "pyctr needs one because its init is PID 1 of the container"),
    ({"linux.namespaces": namespaces("pid", "uts")}, "linux.namespaces must include mount: "
     "pyctr needs one because it builds the container's root in its own mount table"),
    ({"linux.namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}, *namespaces("mount")]},
     "linux.namespaces: joining an existing pid namespace is not supported (pyctr's init "
     "must be PID 1); remove its path"),
    ({"linux.namespaces": namespaces("pid", "mount")},
     "hostname needs a new uts namespace in linux.namespaces"),
    ({"ociVersion": "2.0"}, "ociVersion '2.0' is not 1.x, the runtime spec pyctr runs"),
    ({"ociVersion": DELETE}, "ociVersion is missing; pyctr runs version 1.x of the runtime spec"),
]


@pytest.mark.parametrize(("changes", "message"), SPEC_REFUSALS,
                         ids=["+".join(changes) for changes, _ in SPEC_REFUSALS])
def test_document_is_refused_naming_the_field(changes: dict[str, object], message: str) -> None:
    assert refusal(Spec.from_value, runc_document(**changes)) == message


# --- spec.docker: one flag at a time ---------------------------------------------------------

@pytest.fixture
def volumes_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "volumes"
    directory.mkdir()
    monkeypatch.setattr(flags, "VOLUMES_DIR", str(directory))  # read at import
    return directory


def test_volume_of_a_host_path_binds_its_real_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    real = str(tmp_path / "real")
    assert as_tuple(parse_volume(f"{tmp_path}/link:/data")) == ("/data", "bind", real, ["rbind"])
    assert parse_volume(f"{real}:/data:ro").options == ["rbind", "ro"]
    assert parse_volume(f"{real}:/data:rw,rslave").options == ["rbind", "rw", "rslave"]


def test_named_volume_is_made_in_volumes_dir_only_when_asked(volumes_dir: Path) -> None:
    data = volumes_dir / "cache" / "_data"
    assert as_tuple(parse_volume("cache:/c", make=False)) == ("/c", "bind", str(data), ["rbind"])
    assert as_tuple(parse_mount("source=cache,target=/c", make=False)) == (
        "/c", "bind", str(data), ["rbind"])
    assert list(volumes_dir.iterdir()) == []
    parse_volume("cache:/c", make=True)
    assert data.is_dir()


def test_tmpfs_is_noexec_nosuid_nodev_unless_told_otherwise() -> None:
    assert as_tuple(parse_tmpfs("/run")) == ("/run", "tmpfs", "tmpfs", NOEXEC)
    assert parse_tmpfs("/run:exec,size=64m").options == ["nosuid", "nodev", "exec", "size=64m"]


def test_mount_flag_bind_and_tmpfs(tmp_path: Path) -> None:
    host = str(tmp_path)
    assert as_tuple(parse_mount(f"type=bind,source={host},target=/data,readonly")) == (
        "/data", "bind", host, ["rbind", "ro"])
    assert parse_mount(f"type=bind,src={host},dst=/d,bind-propagation=rslave").options == [
        "rbind", "rslave"]
    assert as_tuple(parse_mount("type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1770")) == (
        "/t", "tmpfs", "tmpfs", [*NOEXEC, "size=67108864", "mode=1770"])
    assert parse_mount("type=tmpfs,target=/t,readonly").options == [*NOEXEC, "ro"]


@pytest.mark.parametrize(("text", "limit"), [
    ("nofile=1024:2048", ("RLIMIT_NOFILE", 1024, 2048)),
    ("nofile=512", ("RLIMIT_NOFILE", 512, 512)),
    ("core=unlimited", ("RLIMIT_CORE", 2**64 - 1, 2**64 - 1)),
    ("memlock=64:-1", ("RLIMIT_MEMLOCK", 64, 2**64 - 1)),
    ("NPROC=0:0", ("RLIMIT_NPROC", 0, 0)),
])
def test_ulimit(text: str, limit: tuple[str, int, int]) -> None:
    rlimit = parse_ulimit(text)
    assert (rlimit.type, rlimit.soft, rlimit.hard) == limit


def mount_error(text: str, message: str) -> tuple[object, str, str]:
    return (parse_mount, text, f"--mount {text!r}: {message}")


FLAG_REFUSALS = [
    (parse_volume, "/no/such:/d", "--volume: host path /no/such does not exist; create it first"),
    (parse_volume, "rel/dir:/d", "--volume: the host path 'rel/dir' must be absolute (or a "
                                 "volume name)"),
    (parse_volume, "/:data", "--volume: the container path 'data' must be absolute"),
    (parse_volume, "/:/d:rx", "--volume '/:/d:rx': unknown option 'rx'; use ro, rw or a "
                              "propagation (private, rprivate, shared, rshared, slave, rslave)"),
    (parse_volume, "/:/a:ro:b", "--volume needs HOST:CONTAINER[:ro|rw], got '/:/a:ro:b'"),
    (parse_volume, "a$b:/d", "--volume: volume name 'a$b' may hold letters, digits, '_', '.' "
                             "and '-' only"),
    (parse_tmpfs, "run", "--tmpfs needs an absolute container path, got 'run'"),
    mount_error("type=tmpfs,target=/t,size=1", "unknown key 'size'"),
    mount_error("type=tmpfs", "target is missing"),
    mount_error("type=foo,target=/t", "type must be bind, tmpfs or volume, got 'foo'"),
    mount_error("type=tmpfs,source=x,target=/t", "a tmpfs takes no source"),
    mount_error("type=tmpfs,target=/t,tmpfs-mode=rwx", "tmpfs-mode must be octal, got 'rwx'"),
    mount_error("type=tmpfs,target=/t,ro=maybe", "readonly must be true or false, got 'maybe'"),
    mount_error("type=volume,source=/v,target=/t", "a volume's source is a name, not a path; "
                                                   "use type=bind for a host path"),
    mount_error("type=bind,target=/t", "source is missing"),
    mount_error("type=tmpfs,target=/t,target=/u", "target is given twice"),
    (parse_ulimit, "nofile=20:10", "--ulimit 'nofile=20:10': the soft limit is above the hard "
                                   "limit"),
    (parse_ulimit, "nofile=-2", "--ulimit 'nofile=-2': limits are whole numbers, -1 or "
                                "unlimited"),
    (parse_ulimit, "files=1", "--ulimit needs NAME=SOFT[:HARD] with NAME one of as, core, cpu, "
     "data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, "
     "sigpending, stack; got 'files=1'"),
    (parse_ulimit, "nofile=lots", "--ulimit 'nofile=lots': limits are whole numbers, -1 or "
                                  "unlimited"),
]


@pytest.mark.parametrize(("parse", "text", "message"), FLAG_REFUSALS,
                         ids=[text for _, text, _ in FLAG_REFUSALS])
def test_bad_flag_value_is_refused(parse: Callable[[str], object], text: str, message: str,
                                   volumes_dir: Path) -> None:
    assert refusal(parse, text) == message


def test_ulimit_with_a_non_ascii_digit_is_refused() -> None:
    assert refusal(parse_ulimit, f"nofile={TWO}") == (f"--ulimit 'nofile={TWO}': limits are "
                                                      "whole numbers, -1 or unlimited")


def test_refused_mount_flag_makes_no_volume(volumes_dir: Path) -> None:
    assert "unknown key 'bogus'" in refusal(parse_mount, "source=v,target=/c,bogus=1", make=True)
    assert list(volumes_dir.iterdir()) == []


def test_env_file_is_read_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROMHOST", "host value")
    monkeypatch.delenv("NOTONHOST", raising=False)
    path = tmp_path / "env"
    path.write_text('# comment\n\nA=1\n  B=two words\nFROMHOST\nNOTONHOST\nEQ=a=b\nQ="q" \n'
                    "EMPTY=\r\n")
    assert list(read_env_file(str(path)).items()) == [
        ("A", "1"), ("B", "two words"), ("FROMHOST", "host value"), ("EQ", "a=b"),
        ("Q", '"q" '), ("EMPTY", "")]


def test_bad_env_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert refusal(read_env_file, str(missing)) == f"--env-file {missing}: No such file or " \
                                                   "directory"
    path = tmp_path / "env"
    for bad in ("BAD NAME=x", "=value"):
        path.write_text(f"A=1\n{bad}\n")
        assert refusal(read_env_file, str(path)) == (f"--env-file {path}, line 2: not "
                                                     f"NAME=VALUE: {bad!r}")


# --- build_spec: the whole translation -------------------------------------------------------

def test_default_spec_follows_docker(tmp_path: Path) -> None:
    spec = build_spec(str(tmp_path), ["/bin/true"], hostname="box")
    assert [m.destination for m in spec.mounts] == DEFAULT_DESTINATIONS
    assert as_tuple(spec.mounts[-1]) == ("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"])
    assert spec.process.env == [DEFAULT_PATH, "HOSTNAME=box", "HOME=/root"]
    assert spec.to_value()["root"] == {"path": str(tmp_path), "readonly": False}
    assert spec.process.user.to_value() == {"uid": 0, "gid": 0}
    assert spec.pending_fields() == []
    assert Spec.from_value(spec.to_value()).to_value() == spec.to_value()


def test_user_tmpfs_on_tmp_replaces_the_default(tmp_path: Path) -> None:
    spec = build_spec(str(tmp_path), ["sh"], hostname=None, tmpfs=["/tmp/:size=1m"])
    assert [m.destination for m in spec.mounts] == DEFAULT_DESTINATIONS
    assert spec.mounts[-1].options == [*NOEXEC, "size=1m"]
    assert refusal(build_spec, str(tmp_path), ["sh"], hostname=None, tmpfs=["/data"],
                   volumes=[f"{tmp_path}:/data/"]) == "two mounts on /data; keep one"


def test_environment_order_and_overrides(tmp_path: Path) -> None:
    spec = build_spec(str(tmp_path), ["sh"], hostname="box", tty=True, term="vt100",
                      env={"A": "B", "HOME": "/srv", "PATH": "/bin"}, read_only=True)
    assert spec.process.env == ["PATH=/bin", "HOSTNAME=box", "HOME=/srv", "TERM=vt100", "A=B"]
    assert spec.process.terminal is True and spec.root_readonly is True
    assert build_spec(str(tmp_path), ["sh"], hostname=None).process.env == [DEFAULT_PATH,
                                                                           "HOME=/root"]
    assert refusal(build_spec, str(tmp_path), ["sh"], hostname=None, workdir="w") == (
        "working directory 'w' must be an absolute path")


# --- spec.users: -u against the rootfs's own files, which are hostile ------------------------

PASSWD = ("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
          "bob:x:1001:1001::relative:/bin/sh\n")
GROUP = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\nstaff:x:50:bob,alice\naudio:x:29:bob\n"
EVIL = "evil:x:0:0::/evil:/bin/sh\n"


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


@pytest.mark.parametrize(("user", "ids", "home"), [
    ("alice", (1000, 1000, [10, 50]), "/home/alice"),
    ("1000", (1000, 1000, [10, 50]), "/home/alice"),
    ("alice:wheel", (1000, 10, [50]), "/home/alice"),
    ("1000:50", (1000, 50, [10]), "/home/alice"),
    ("bob", (1001, 1001, [10, 50, 29]), "/"),
    ("0", (0, 0, []), "/root"),
    ("4242", (4242, 0, []), "/"),
    ("4242:4343", (4242, 4343, []), "/"),
])
def test_account_resolution(fake_root: Path, user: str, ids: tuple[int, int, list[int]],
                            home: str) -> None:
    account = resolve_account(str(fake_root), user)
    assert (account.user.uid, account.user.gid, account.user.additional_gids, account.home) == (
        *ids, home)


def test_unknown_user_or_group_is_refused(fake_root: Path) -> None:
    assert refusal(resolve_account, str(fake_root), "mallory") == (
        f"user 'mallory' is not in /etc/passwd of rootfs {fake_root}; give a numeric uid or "
        f"add the user")
    assert refusal(resolve_account, str(fake_root), "alice:nogroup") == (
        f"group 'nogroup' is not in /etc/group of rootfs {fake_root}; give a numeric gid or "
        f"add the group")


def test_user_sets_ids_and_home_in_the_spec(fake_root: Path) -> None:
    spec = build_spec(str(fake_root), ["id"], hostname=None, user="alice")
    assert spec.process.user.to_value() == {"uid": 1000, "gid": 1000, "additionalGids": [10, 50]}
    assert spec.process.env == [DEFAULT_PATH, "HOME=/home/alice"]


def test_absolute_passwd_symlink_resolves_inside_the_rootfs(fake_root: Path,
                                                            tmp_path: Path) -> None:
    (tmp_path / "hostsecret").write_text(EVIL)
    passwd = fake_root / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to(tmp_path / "hostsecret")  # the host's file, were it followed from /
    assert refusal(resolve_account, str(fake_root), "evil").startswith(
        "user 'evil' is not in /etc/passwd")
    (fake_root / "inside").write_text("inside:x:7:8::/in:/bin/sh\n")
    passwd.unlink()
    passwd.symlink_to("/inside")
    account = resolve_account(str(fake_root), "inside")
    assert (account.user.uid, account.user.gid, account.home) == (7, 8, "/in")


def test_etc_symlink_out_of_the_rootfs_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "outside" / "etc").mkdir(parents=True)
    (tmp_path / "outside" / "etc" / "passwd").write_text(EVIL)
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to("../outside/etc")
    assert (root / "etc" / "passwd").read_text() == EVIL  # what a lookup from the host reads
    assert refusal(resolve_account, str(root), "evil").startswith(
        "user 'evil' is not in /etc/passwd")


def test_passwd_fifo_is_refused_without_blocking(fake_root: Path) -> None:
    passwd = fake_root / "etc" / "passwd"
    passwd.unlink()
    os.mkfifo(passwd)
    outcome: list[object] = []

    def resolve() -> None:
        try:
            outcome.append(resolve_account(str(fake_root), "alice"))
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # a writer unblocks the reader, so the thread can end
        os.close(os.open(passwd, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail("resolve_account blocked on a FIFO /etc/passwd")
    assert [str(item) for item in outcome if isinstance(item, SpecError)] == [
        f"/etc/passwd in rootfs {fake_root} is not a regular file"], outcome


def test_group_line_with_a_non_ascii_digit_is_skipped(fake_root: Path) -> None:
    (fake_root / "etc" / "group").write_text(f"odd:x:{TWO}:root\n")
    assert resolve_account(str(fake_root), "root").user.additional_gids == []


# --- ContainerConfig: from a spec or a bundle, and what init gets ----------------------------

def test_from_spec_paths_are_relative_to_the_bundle(tmp_path: Path) -> None:
    (tmp_path / "b" / "data").mkdir(parents=True)
    (tmp_path / "srv").mkdir()
    mounts = [{"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]},
              {"destination": "/abs", "source": str(tmp_path / "srv"), "options": ["bind"]},
              {"destination": "/t", "type": "tmpfs", "source": "tmpfs"}]
    config = ContainerConfig.from_spec(runc_document(mounts=mounts), bundle=str(tmp_path / "b"))
    spec = config.build_spec()
    assert spec.root_path == str(tmp_path / "b" / "rootfs")
    assert [m.source for m in spec.mounts] == [str(tmp_path / "b" / "data"),
                                               str(tmp_path / "srv"), "tmpfs"]


def test_a_bundle_bind_whose_source_is_missing_is_refused_before_anything_runs(
        tmp_path: Path) -> None:
    mounts = [{"destination": "/x", "type": "bind", "source": "nothere", "options": ["rbind"]}]
    config = ContainerConfig.from_spec(runc_document(mounts=mounts), bundle=str(tmp_path))
    with pytest.raises(PyctrError, match=r"mounts\[0\]: the source .*nothere of the bind on /x "
                                         r"does not exist"):
        config.build_spec()


def test_from_spec_refuses_options_that_describe_the_container() -> None:
    with pytest.raises(TypeError, match="hostname, user is not a supervision option"):
        ContainerConfig.from_spec(runc_document(), hostname="h", user="nobody")
    assert ContainerConfig.from_spec(runc_document(), name="n", stop_timeout=1).name == "n"
    absolute = runc_document(**{"root.path": "/srv/root"})
    assert ContainerConfig.from_spec(absolute, bundle="b").build_spec().root_path == "/srv/root"


def test_from_bundle_reads_config_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps(runc_document()))
    monkeypatch.chdir(tmp_path)
    spec = ContainerConfig.from_bundle(Path("b"), name="x").build_spec()
    assert (spec.root_path, spec.hostname) == (str(tmp_path / "b" / "rootfs"), "runc")


@pytest.mark.parametrize(("make", "message"), ids=["from-spec", "docker-options"], argvalues=[
    (lambda: ContainerConfig.from_spec(runc_document(**{"process.cwd": "."})),
     "process.cwd must be an absolute path, got '.'"),
    (lambda: ContainerConfig("/r", ["sh"], ulimits=["nofile=2:1"]),
     "--ulimit 'nofile=2:1': the soft limit is above the hard limit"),
])
def test_build_spec_errors_become_config_invalid(make: Callable[[], ContainerConfig],
                                                 message: str) -> None:
    with pytest.raises(PyctrError) as caught:
        make().build_spec(make_volumes=False)
    error = caught.value
    assert (error.error, error.exit_code, error.message) == ("config.invalid", 125, message)


@requires_root
def test_init_gets_the_checked_spec_through_the_protocol(rootfs: Path) -> None:
    config = ContainerConfig(rootfs, ["/bin/true"], name="t", ulimits=["nofile=unlimited"],
                             user="root", tty=True)
    message = decode(encode(config.to_message(config.check(), rows=24, columns=80)))
    assert isinstance(message, Config)
    spec = Spec.from_value(json.loads(message.spec))
    assert (spec.hostname, spec.process.console_size) == ("t", (24, 80))
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits] == [
        ("RLIMIT_NOFILE", RLIM_INFINITY, RLIM_INFINITY)]
    term = os.environ.get("TERM", "xterm")
    assert spec.process.env[1:] == ["HOSTNAME=t", "HOME=/root", f"TERM={term}"]


# --- the CLI: `spec`, --bundle and their errors ----------------------------------------------

def spec_output(*args: str, **kwargs: Any) -> dict[str, Any]:
    run = run_cli("spec", *args, **kwargs)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    document: dict[str, Any] = json.loads(run.stdout)
    return document


def write_bundle(directory: Path, document: object) -> Path:
    directory.mkdir(exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (directory / "config.json").write_text(text)
    return directory


def test_spec_without_arguments_is_shaped_like_runcs_template(tmp_path: Path) -> None:
    document = spec_output(cwd=tmp_path)
    assert set(document) == set(RUNC_TEMPLATE)
    assert set(document["process"]) <= set(runc_document()["process"])
    assert document["root"] == {"path": str(tmp_path / "rootfs"), "readonly": False}
    assert document["process"]["args"] == ["sh"]
    assert [m["destination"] for m in document["mounts"]] == DEFAULT_DESTINATIONS
    # runc's template shares the host's cgroup namespace; pyctr's default makes one, as
    # docker does on cgroup v2, so the container sees its own cgroup as the root.
    assert document["linux"]["namespaces"] == [*runc_document()["linux"]["namespaces"],
                                               {"type": "cgroup"}]
    # runc's template hides and protects the same paths, and docker's default seccomp
    # profile comes with the docker-like defaults.
    assert document["linux"]["maskedPaths"] == list(MASKED_PATHS)
    assert document["linux"]["readonlyPaths"] == list(READONLY_PATHS)
    assert document["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert set(document["linux"]) == {"namespaces", "maskedPaths", "readonlyPaths", "seccomp"}
    assert document["process"]["noNewPrivileges"] is True
    assert Spec.from_value(document).pending_fields() == []
    # A fixed name, as runc's "runc": not a random container id frozen into the file.
    assert document["hostname"] == "pyctr" and "HOSTNAME=pyctr" in document["process"]["env"]
    assert spec_output("-h", "box", cwd=tmp_path)["hostname"] == "box"


def flags_document(rootfs: Path, host: Path, *command: str) -> dict[str, Any]:
    return spec_output("-u", "0:0", "-e", "A=B", "--read-only", "--ulimit", "nofile=10:20",
                       "-v", f"{host}:/data:ro", str(rootfs), *command)


def test_spec_with_flags(rootfs: Path, tmp_path: Path) -> None:
    document = flags_document(rootfs, tmp_path, "/bin/echo", "hi")
    process = document["process"]
    assert process["args"] == ["/bin/echo", "hi"] and process["user"] == {"uid": 0, "gid": 0}
    assert process["env"][0] == DEFAULT_PATH and process["env"][2:] == ["HOME=/root", "A=B"]
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]
    assert document["root"] == {"path": str(rootfs), "readonly": True}
    assert document["mounts"][-1] == {"destination": "/data", "type": "bind",
                                      "source": str(tmp_path), "options": ["rbind", "ro"]}


def test_spec_output_runs_as_a_bundle(rootfs: Path, tmp_path: Path) -> None:
    script = ('echo "$A"; ulimit -S -n; ulimit -H -n; id -u; touch /x 2>/dev/null || echo ro; '
              'touch /data/y 2>/dev/null || echo data-ro')
    (tmp_path / "host").mkdir()
    document = flags_document(rootfs, tmp_path / "host", "/bin/sh", "-c", script)
    run = run_cli("--log-format", "json", "--bundle", str(write_bundle(tmp_path / "b", document)))
    assert (run.returncode, run.stdout) == (0, "B\n10\n20\n0\nro\ndata-ro\n"), run.stderr
    assert run.record("container.created")["rootfs"] == str(rootfs)
    assert "spec.field_not_applied" not in run.events()


def test_spec_of_a_bundle_prints_its_config_with_an_absolute_root(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", runc_document())
    assert spec_output("--bundle", str(bundle)) == runc_document(
        **{"root.path": str(bundle / "rootfs")})


def test_bundle_ambient_capabilities_that_cannot_be_raised_are_warned_about(
        rootfs: Path, tmp_path: Path) -> None:
    document = spec_output(str(rootfs), "/bin/true")
    document["process"]["capabilities"] = {"bounding": CAPS, "permitted": CAPS,
                                           "ambient": ["CAP_KILL"]}
    run = run_cli("--log-format", "json", "--bundle", str(write_bundle(tmp_path / "b", document)))
    assert run.returncode == 0, run.stderr
    warnings = [r for r in run.records if r["event"] == "spec.field_not_applied"]
    assert [(r["level"], r["field"], r["capabilities"]) for r in warnings] == [
        ("warning", "process.capabilities.ambient", ["CAP_KILL"])]


def test_an_unknown_capability_is_refused() -> None:
    with pytest.raises(SpecError, match=r"process\.capabilities\.bounding: unknown "
                                        r"capability 'CAP_FLY'"):
        Spec.from_value(runc_document(**{"process.capabilities.bounding": ["CAP_FLY"]}))




@pytest.mark.parametrize(("config", "fragment"), ids=[
    "wrong-type", "unknown-field", "missing-rootfs", "json-syntax", "no-config-json"], argvalues=[
    ({"ociVersion": "1.0.2", "process": {"args": "sh"}}, "process.args must be a list of strings"),
    (runc_document(hooks={}), f"hooks: {UNIMPLEMENTED}"),
    (runc_document(**{"root.path": "/no/such/rootfs"}), "rootfs /no/such/rootfs does not exist"),
    ('{"ociVersion": "1.0.2",}', "is not valid JSON (line 1, column "),
    (None, "config.json: No such file or directory"),
])
def test_bad_bundle_is_one_line_error(tmp_path: Path, config: object, fragment: str) -> None:
    bundle = tmp_path / "b"
    if config is None:
        bundle.mkdir()
    else:
        write_bundle(bundle, config)
    run = run_cli("--bundle", str(bundle))
    assert run.returncode == 125
    assert_one_line_error(run, fragment)


@pytest.mark.parametrize(("options", "command", "dropped"), ids=["env", "command", "user"],
                         argvalues=[
    (("-e", "A=B"), (), "--env"),
    ((), ("/bin/true",), "/bin/true"),
    (("-u", "0", "--read-only"), (), "--user --read-only"),
])
def test_bundle_with_container_options_is_a_usage_error(
        tmp_path: Path, options: tuple[str, ...], command: tuple[str, ...], dropped: str) -> None:
    bundle = write_bundle(tmp_path / "b", runc_document())
    run = run_cli(*options, "--bundle", str(bundle), *command)
    assert run.returncode == 125
    assert_one_line_error(run, f"--bundle takes the container from DIR/config.json: drop "
                               f"{dropped} and edit the config instead")


@pytest.mark.parametrize(("args", "message"), ids=["ulimit", "mount", "user", "env-file"],
                         argvalues=[
    (("--ulimit", "nofile=20:10"), "--ulimit 'nofile=20:10': the soft limit is above the hard "
                                   "limit"),
    (("--mount", "type=foo,target=/t"), "type must be bind, tmpfs or volume, got 'foo'"),
    (("-u", "mallory"), "user 'mallory' is not in /etc/passwd of rootfs"),
    (("--env-file", "/no/such/env"), "--env-file /no/such/env: No such file or directory"),
])
def test_bad_flag_is_one_line_error(rootfs: Path, args: tuple[str, ...], message: str) -> None:
    for command in (("spec", *args, str(rootfs), "sh"), (*args, str(rootfs), "/bin/true")):
        run = run_cli(*command)
        assert run.returncode == 125, command
        assert_one_line_error(run, message)


def test_spec_with_user_and_missing_rootfs_is_one_line_error(tmp_path: Path) -> None:
    run = run_cli("spec", "-u", "1000", str(tmp_path / "missing"), "sh")
    assert run.returncode == 125
    assert_one_line_error(run, str(tmp_path / "missing"))
