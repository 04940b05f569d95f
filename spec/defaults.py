"""pyctr's defaults, in one place: what a container gets when the command line or the library
says nothing else. They follow ``docker run``: the same mounts (plus the original program's
``/tmp``), the same device nodes, a new namespace of every kind but user, cgroup and time."""

from __future__ import annotations

from .model import Linux, Mount, Namespace

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_STOP_TIMEOUT = 10.0
"""Seconds between the stop signal and SIGKILL."""
OCI_VERSION = "1.0.2"
NAMESPACES = ("pid", "network", "ipc", "uts", "mount")

# (name, major, minor): the character devices every container gets, whatever linux.devices
# says (the runtime spec's list; /dev/ptmx is a link into the container's own devpts, and
# /dev/console is the terminal's, with one).
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]


def default_mounts() -> list[Mount]:
    """docker's list, in docker's order, and /tmp as a tmpfs (the original program had one)."""
    return [
        Mount("/proc", "proc", "proc", list(_NOSUID_NOEXEC_NODEV)),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts",
              ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount("/sys", "sysfs", "sysfs", [*_NOSUID_NOEXEC_NODEV, "ro"]),
        Mount("/sys/fs/cgroup", "cgroup", "cgroup", [*_NOSUID_NOEXEC_NODEV, "relatime", "ro"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", list(_NOSUID_NOEXEC_NODEV)),
        Mount("/dev/shm", "tmpfs", "shm", [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"]),
        Mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"]),
    ]


def default_linux() -> Linux:
    return Linux([Namespace(kind) for kind in NAMESPACES])
