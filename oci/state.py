"""What the OCI runtime (``pyctr``) keeps between its calls: one directory per container.

``create`` and ``start``, ``kill`` and ``delete`` are separate processes, and no process of
pyctr's stays in between, so everything a later call needs is in ``ROOT/ID/``:

- ``state.json``: the init's host pid and its start time (from ``/proc/PID/stat``: a pid the
  kernel gave to another process since is not ours), the bundle, when it was created, the
  config's annotations, and the container's cgroup (to pause, list and remove it);
- ``exec.fifo``: while it exists, the container is ``created``: the init waits to read a byte
  from it; ``start`` writes that byte and removes it.

The status is worked out, never stored: ``stopped`` once the init is gone (killed, or its
command ended), ``paused`` while its cgroup is frozen, ``created`` while the FIFO is there,
else ``running``. A container directory is locked (flock) by each call that changes it, so
concurrent calls on one id take turns and calls on different ids never meet.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time

from pyctr.supervisor.errors import PyctrError

DEFAULT_ROOT = "/run/pyctr"
STATE_FILE = "state.json"
FIFO = "exec.fifo"
OCI_VERSION = "1.0.2"
_ID = re.compile(r"[\w+.-]+", re.ASCII)
RESERVED_IDS = frozenset(("cgroups", "seccomp", "network"))
"""Directories of pyctr's own in its default root: no container may be called that."""


class RuntimeError_(PyctrError):
    """A runtime command failed: the message is runc's kind of one line; exit status 1."""

    def __init__(self, message: str, error: str = "runtime.failed") -> None:
        super().__init__(message, exit_code=1, error=error)


def check_id(container_id: str) -> None:
    if (not _ID.fullmatch(container_id) or container_id in (".", "..")
            or len(container_id) > 1024):
        raise RuntimeError_(f"invalid container id {container_id!r}: use letters, digits and "
                            f"_ + - . only", error="usage.invalid")
    if container_id in RESERVED_IDS:
        raise RuntimeError_(f"container id {container_id!r} is reserved: pyctr keeps its own "
                            f"state under that name", error="usage.invalid")


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (clock ticks after boot), or None when ``pid`` is gone
    or a zombie (its command has ended: for us it is stopped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class ContainerState:
    """One container's directory and what ``state.json`` says."""

    def __init__(self, root: str, container_id: str) -> None:
        check_id(container_id)
        self.id = container_id
        self.directory = os.path.join(root, container_id)
        self.pid = 0
        self.start_time = 0
        self.bundle = ""
        self.rootfs = ""
        self.created = ""
        self.annotations: dict[str, str] = {}
        self.cgroup: dict[str, object] = {}
        self._lock: int | None = None

    @property
    def fifo(self) -> str:
        return os.path.join(self.directory, FIFO)

    # -- the directory ----------------------------------------------------------------------

    def make(self) -> None:
        """Make the directory (locked) and the FIFO. Raises when the id is taken."""
        os.makedirs(os.path.dirname(self.directory), 0o711, exist_ok=True)
        try:
            os.mkdir(self.directory, 0o711)
        except FileExistsError:
            raise RuntimeError_(f"container with id {self.id} already exists",
                                error="container.exists") from None
        self.lock()
        os.mkfifo(self.fifo, 0o600)

    def load(self) -> ContainerState:
        """Read ``state.json``; raises when there is no such container."""
        try:
            with open(os.path.join(self.directory, STATE_FILE)) as file:
                value = json.load(file)
        except FileNotFoundError:
            raise RuntimeError_(f"container {self.id} does not exist",
                                error="container.missing") from None
        except (OSError, ValueError) as exc:
            raise RuntimeError_(f"cannot read the state of container {self.id}: {exc}") from None
        self.pid = int(value["pid"])
        self.start_time = int(value["start_time"])
        self.bundle = str(value["bundle"])
        self.rootfs = str(value.get("rootfs", ""))
        self.created = str(value["created"])
        self.annotations = dict(value.get("annotations") or {})
        self.cgroup = dict(value.get("cgroup") or {})
        return self

    def save(self) -> None:
        """Write ``state.json`` whole (a reader never sees half of it)."""
        value = {"pid": self.pid, "start_time": self.start_time, "bundle": self.bundle,
                 "rootfs": self.rootfs, "created": self.created,
                 "annotations": self.annotations, "cgroup": self.cgroup}
        temporary = os.path.join(self.directory, STATE_FILE + ".new")
        with open(temporary, "w") as file:
            json.dump(value, file)
        os.rename(temporary, os.path.join(self.directory, STATE_FILE))

    def lock(self) -> None:
        """Take the container's lock (waiting for another call that holds it)."""
        if self._lock is None:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock = fd

    def locked(self) -> _Locked:
        """The lock for one ``with`` block."""
        return _Locked(self)

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def remove(self) -> None:
        """Remove the directory (what is in it is ours: the state, the FIFO)."""
        for name in (STATE_FILE, STATE_FILE + ".new", FIFO):
            try:
                os.unlink(os.path.join(self.directory, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.directory)
        except FileNotFoundError:
            pass
        self.unlock()

    # -- what it is now ------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether the init is still running (and is still our init)."""
        return self.pid > 0 and process_start_time(self.pid) == self.start_time

    def status(self) -> str:
        if not self.alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        if self._frozen():
            return "paused"
        return "running"

    def _frozen(self) -> bool:
        directories = self.cgroup.get("directories")
        if isinstance(directories, dict) and "freezer" in directories:
            path = os.path.join(str(directories["freezer"]), "freezer.state")
            expected = "FROZEN"
        elif self.cgroup.get("kind") == "v2" and self.cgroup.get("paths"):
            paths = self.cgroup["paths"]
            assert isinstance(paths, list)
            path, expected = os.path.join(str(paths[0]), "cgroup.freeze"), "1"
        else:
            return False
        try:
            with open(path) as file:
                return file.read().strip() == expected
        except OSError:
            return False

    def oci_state(self) -> dict[str, object]:
        """The runtime spec's state document, plus runc's extra fields."""
        status = self.status()
        return {"ociVersion": OCI_VERSION, "id": self.id, "status": status,
                "pid": self.pid if status != "stopped" else 0, "bundle": self.bundle,
                "rootfs": self.rootfs, "created": self.created, "owner": "",
                "annotations": self.annotations}


class _Locked:
    __slots__ = ("state",)

    def __init__(self, state: ContainerState) -> None:
        self.state = state

    def __enter__(self) -> ContainerState:
        self.state.lock()
        return self.state

    def __exit__(self, *_: object) -> None:
        self.state.unlock()


def utc_now() -> str:
    """RFC 3339 with nanoseconds, as runc writes ``created``."""
    now = time.time_ns()
    seconds, nanoseconds = divmod(now, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanoseconds:09d}Z"


def container_ids(root: str) -> list[str]:
    """The ids with a state in ``root``."""
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [entry for entry in entries if entry not in RESERVED_IDS
            and os.path.exists(os.path.join(root, entry, STATE_FILE))]
