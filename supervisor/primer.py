"""Making the move of a container's init into its cgroup immediate, for the library.

A move between cgroups (a write to ``cgroup.procs``) takes a lock that, unless another move
happened within about one RCU grace period, first waits for a grace period to pass: several
milliseconds on an idle machine, in the middle of every container's start (the init waits to
be in its cgroup before it starts the workload). Right after a move, the next ones are
immediate (the kernel's ``rcu_sync`` stays on its fast path for a grace period or so).

So while a program starts containers, ``keep_primed`` makes a move that changes nothing, this
process into the cgroup it is already in, on a thread of its own, every few milliseconds: a
container that starts then finds the fast path open. The thread ends a quarter of a second
after the last start. The cost while it runs is one cheap system call every INTERVAL, and
that the kernel's fork and exit take a slower path for that lock (what cgroup v2's
``favordynmods`` mount option does for good). The CLI does without: it starts one container,
and its move already overlaps the init's work (see ``InitProcess.join_cgroup``).
"""

from __future__ import annotations

import _thread
import os
import time

from pyctr.linux.procfs import own_cgroup_directory, read_proc_file

# Between two moves while ``keep_primed`` runs: well under a grace period.
INTERVAL = 0.003


def own_procs_file() -> str | None:
    """The ``cgroup.procs`` of a cgroup this process is in, or None."""
    try:
        directory = own_cgroup_directory(read_proc_file("/proc/self/cgroup"),
                                         read_proc_file("/proc/self/mountinfo"))
    except OSError:
        return None
    return None if directory is None else os.path.join(directory, "cgroup.procs")


def move_self(procs: str) -> None:
    """Move this process into the cgroup it is in already (``procs`` is its cgroup.procs).
    A failure (not root, a cgroup gone) only means no priming."""
    try:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, str(os.getpid()).encode())
    except OSError:
        pass
    finally:
        os.close(fd)


class _Keeper:
    """The library's primer: a thread that moves this process into its own cgroup every
    INTERVAL until ``until``, started again by the next ``keep_primed`` once it has ended."""

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.until = 0.0
        self.running = False

    def extend(self, seconds: float) -> None:
        with self.lock:
            self.until = max(self.until, time.monotonic() + seconds)
            if self.running:
                return
            self.running = True
        try:
            _thread.start_new_thread(self._run, ())
        except BaseException:
            with self.lock:
                self.running = False
            raise

    def _run(self) -> None:
        try:
            procs = own_procs_file()
            while True:
                if procs is not None:
                    move_self(procs)
                with self.lock:
                    if procs is None or time.monotonic() >= self.until:
                        self.running = False
                        return
                time.sleep(INTERVAL)
        except BaseException:
            with self.lock:
                self.running = False
            raise


_keeper = _Keeper()


def keep_primed(seconds: float = 0.25) -> None:
    """Keep moves immediate for the next ``seconds`` (and as long as calls keep coming)."""
    _keeper.extend(seconds)
