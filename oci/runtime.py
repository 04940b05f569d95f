"""The OCI runtime's operations: ``create``, ``start``, ``kill``, ``delete``, ``pause``,
``resume``, ``ps`` and ``run``, each one process that does its part and exits.

``create`` forks the init as the CLI does, sends it its config with a FIFO to wait on and
``detached`` set, moves it into the container's cgroup, and reads its messages until it says
``created`` (the root is built, the command found, the terminal handed over): then it writes
the state and the pid file and exits. The init has no parent-death signal in this mode and
becomes the child of the caller's subreaper (conmon, the containerd shim), which waits for
it: its exit status is the command's (``128+N`` when signal N ended it, as the CLI's).
``start`` writes a byte to the FIFO. ``kill`` signals the init, which relays the signal to
the command (a signal that arrives before ``start`` ends the container). ``delete`` kills
what is left and removes the cgroup and the state. Nothing of pyctr runs in between.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import struct
import time

from pyctr.linux import socket
from pyctr.protocol import (
    Created,
    Hello,
    Log,
    ProtocolError,
    Ready,
    SetupFailed,
    Terminal,
    check_hello,
    decode,
)
from pyctr.protocol.codec import HEADER_SIZE, frame_size
from pyctr.supervisor.config import ContainerConfig
from pyctr.supervisor.errors import PyctrError

from .state import ContainerState, RuntimeError_, process_start_time, utc_now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyctr.supervisor.cgroup import ContainerCgroup
    from pyctr.supervisor.spawn import InitProcess

CREATE_TIMEOUT = 60.0
"""Seconds ``create`` waits for the init to report the container set up."""
KILL_WAIT = 10.0
"""Seconds ``delete --force`` waits for a killed init to go."""


def create(root: str, container_id: str, bundle: str, *, pid_file: str | None = None,
           console_socket: str | None = None, no_pivot: bool = False, preserve_fds: int = 0,
           debug: Callable[[str], None] | None = None) -> int:
    """Set the container up and leave its init waiting for ``start``; its host pid.
    ``preserve_fds``: our descriptors 3 to 3+N-1 are the container process's too."""
    from pyctr.supervisor.spawn import start_detached_init

    state = ContainerState(root, container_id)
    bundle = os.path.abspath(bundle)
    try:
        # As runc: the command's own pid is the container's, so signals reach it alone,
        # and what outlives it is killed at once.
        config = ContainerConfig.from_bundle(bundle, name=container_id, chroot=no_pivot,
                                             signal_group=False, stop_timeout=0.0)
        rootfs = config.check()
    except PyctrError as exc:
        raise RuntimeError_(exc.message, exc.error) from None
    assert config.spec is not None
    if config.spec.process.terminal and console_socket is None:
        raise RuntimeError_("cannot allocate a terminal without --console-socket: nobody would "
                            "hold its other end", error="usage.invalid")
    state.make()
    init: InitProcess | None = None
    try:
        try:
            init = start_detached_init(config, keep_fds=preserve_fds)
            init.send_config(config, rootfs, log_level="debug" if debug else "warning",
                             inherited=True, start_fifo=state.fifo, detached=True)
            init.join_cgroup()
        except PyctrError as exc:
            raise RuntimeError_(exc.message, exc.error) from None
        _await_created(init, console_socket, debug)
        start_time = process_start_time(init.pid)
        if start_time is None:
            raise RuntimeError_("the container's init exited before it was created")
        state.pid, state.start_time = init.pid, start_time
        state.bundle, state.rootfs, state.created = bundle, rootfs, utc_now()
        state.annotations = dict(config.spec.annotations)
        state.cgroup = _describe_cgroup(init.cgroup)
        state.save()
        if pid_file is not None:
            write_pid_file(pid_file, init.pid)
    except BaseException:
        if init is not None:
            init.abort()  # kills, reaps and removes the cgroup
        state.remove()
        raise
    # The container outlives us: its cgroup is the state's now, and the init is left to
    # whoever reaps our orphans.
    state.unlock()
    if init.cgroup is not None:
        init.cgroup.disown()
    init.sock.close()
    os.close(init.pidfd)
    return init.pid


def _await_created(init: InitProcess, console_socket: str | None,
                   debug: Callable[[str], None] | None) -> None:
    """Read the init's messages until Created; raises RuntimeError_ with its failure."""
    deadline = time.monotonic() + CREATE_TIMEOUT
    greeted = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError_("the container's init did not finish setting up within "
                                f"{CREATE_TIMEOUT:g} s")
        readable = select.select([init.sock.fileno(), init.pidfd], [], [], left)[0]
        if init.sock.fileno() not in readable:
            if readable:  # only the pidfd: it died without a word
                raise RuntimeError_("the container's init exited during set-up")
            continue
        message, fds = _receive(init.sock)
        try:
            if message is None:
                raise RuntimeError_("the container's init exited during set-up")
            if not greeted:
                if isinstance(message, SetupFailed):
                    raise RuntimeError_(message.message, message.error)
                if not isinstance(message, Hello):
                    raise RuntimeError_(f"the container's init broke the protocol: {message!r}")
                check_hello(message, "init")
                greeted = True
            elif isinstance(message, Log):
                if debug is not None:
                    debug(f"init: {message.event} {json.dumps(message.fields)}")
            elif isinstance(message, SetupFailed):
                raise RuntimeError_(message.message, message.error)
            elif isinstance(message, Terminal) and len(fds) == 1 and console_socket:
                send_console(console_socket, fds[0])
            elif isinstance(message, Created):
                return
            elif not isinstance(message, Ready):
                raise RuntimeError_(f"the container's init broke the protocol: {message!r}")
        except ProtocolError as exc:
            raise RuntimeError_(f"the container's init broke the protocol: {exc}") from None
        finally:
            for fd in fds:
                os.close(fd)


def _receive(sock: socket.socket) -> tuple[object | None, list[int]]:
    """One message and the descriptors that came with it."""
    head = sock.recv(HEADER_SIZE, socket.MSG_PEEK)
    if not head:
        return None, []
    # Room for the descriptors and the credentials SO_PASSCRED adds to every message.
    space = socket.CMSG_SPACE(4 * 4) + socket.CMSG_SPACE(12)
    data, ancillary, _, _ = sock.recvmsg(frame_size(head), space)
    fds = [fd for level, kind, payload in ancillary
           if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
           for (fd,) in struct.iter_unpack("i", payload[:len(payload) - len(payload) % 4])]
    if not data:
        return None, fds
    message = decode(data)
    message.check()
    return message, fds


def send_console(path: str, master: int) -> None:
    """Hand the pty's master to the caller's console socket, as runc does (SCM_RIGHTS, the
    terminal's name as the data)."""
    send_to_console(connect_console(path), master, path)


def connect_console(path: str) -> socket.socket:
    """A connection to the caller's console socket (``exec`` makes it before it joins the
    container, where the path would be the container's)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        connection.connect(path)
    except OSError as exc:
        connection.close()
        raise RuntimeError_(f"cannot connect to the console socket {path}: "
                            f"{exc.strerror}") from None
    return connection


def send_to_console(connection: socket.socket, master: int, path: str) -> None:
    try:
        connection.sendmsg([b"/dev/ptmx"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                            struct.pack("i", master))])
    except OSError as exc:
        raise RuntimeError_(f"cannot send the terminal to the console socket {path}: "
                            f"{exc.strerror}") from None
    finally:
        connection.close()


def _describe_cgroup(cgroup: ContainerCgroup | None) -> dict[str, object]:
    if cgroup is None:
        return {}
    return {"name": cgroup.name, "kind": cgroup.layout.kind, "paths": list(cgroup.paths),
            "directories": dict(cgroup.directories), "path": cgroup.path}


def _cgroup_of(state: ContainerState) -> ContainerCgroup | None:
    from pyctr.supervisor.cgroup import ContainerCgroup, host_layout

    described = state.cgroup
    paths = described.get("paths")
    if not isinstance(paths, list) or not paths:
        return None
    directories = described.get("directories")
    return ContainerCgroup(str(described.get("name", state.id)), host_layout(),
                           [str(path) for path in paths],
                           directories={str(key): str(value) for key, value in
                                        (directories.items() if isinstance(directories, dict)
                                         else ())},
                           path=str(described.get("path", "")))


def write_pid_file(path: str, pid: int, *, directory: int | None = None) -> None:
    """Written whole and renamed, as runc does: a reader never sees an empty file.
    ``directory``: a descriptor ``path`` is relative to."""
    if directory is None:
        directory_path = os.path.dirname(os.path.abspath(path))
        directory = os.open(directory_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        path = os.path.basename(path)
        try:
            write_pid_file(path, pid, directory=directory)
        finally:
            os.close(directory)
        return
    temporary = f".{path}.pyctr"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644,
                 dir_fd=directory)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.rename(temporary, path, src_dir_fd=directory, dst_dir_fd=directory)


def start(root: str, container_id: str) -> None:
    with ContainerState(root, container_id).load().locked() as state:
        status = state.status()
        if status != "created":
            raise RuntimeError_(f"cannot start a container that is {status}"
                                if status != "stopped"
                                else "cannot start a container that has stopped",
                                error="container.not_created")
        try:
            fifo = os.open(state.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):  # nobody reads it: the init is gone
                raise RuntimeError_("cannot start a container that has stopped",
                                    error="container.not_created") from None
            raise
        try:
            os.write(fifo, b"0")
        finally:
            os.close(fifo)
        os.unlink(state.fifo)


def kill(root: str, container_id: str, signum: int, *, all_processes: bool = False) -> None:
    state = ContainerState(root, container_id).load()
    if state.status() == "stopped":
        raise RuntimeError_("container not running", error="container.not_running")
    if all_processes:
        cgroup = _cgroup_of(state)
        for pid in cgroup.processes() if cgroup is not None else [state.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return
    _signal_init(state, signum)


def _signal_init(state: ContainerState, signum: int) -> bool:
    """Signal the init through a pidfd, once sure the pid is still ours; whether it was."""
    try:
        pidfd = os.pidfd_open(state.pid)
    except ProcessLookupError:
        return False
    try:
        if process_start_time(state.pid) != state.start_time:
            return False  # another process has that pid now
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def delete(root: str, container_id: str, *, force: bool = False) -> None:
    with ContainerState(root, container_id).load().locked() as state:
        status = state.status()
        if status != "stopped":
            if not force:
                raise RuntimeError_(f"cannot delete container {container_id} that is not "
                                    f"stopped: {status}", error="container.running")
            _kill_and_wait(state)
        cgroup = _cgroup_of(state)
        if cgroup is not None:
            cgroup.thaw()  # a paused container's processes must run to die
            cgroup.kill_all()  # processes of `exec` live outside the init's PID namespace
            try:
                cgroup.remove()
            except PyctrError as exc:
                raise RuntimeError_(exc.message, exc.error) from None
        state.remove()


def _kill_and_wait(state: ContainerState) -> None:
    try:
        pidfd = os.pidfd_open(state.pid)
    except ProcessLookupError:
        return
    try:
        if process_start_time(state.pid) != state.start_time:
            return
        cgroup = _cgroup_of(state)
        if cgroup is not None:
            cgroup.thaw()
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        if not select.select([pidfd], [], [], KILL_WAIT)[0]:
            raise RuntimeError_(f"the container's init {state.pid} did not die within "
                                f"{KILL_WAIT:g} s of SIGKILL")
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def pause(root: str, container_id: str, *, frozen: bool) -> None:
    with ContainerState(root, container_id).load().locked() as state:
        status = state.status()
        if frozen and status != "running":
            raise RuntimeError_(f"container not running: {status}",
                                error="container.not_running")
        if not frozen and status != "paused":
            raise RuntimeError_(f"container not paused: {status}", error="container.not_paused")
        cgroup = _cgroup_of(state)
        done = cgroup is not None and (cgroup.freeze() if frozen else cgroup.thaw())
        if not done:
            raise RuntimeError_("this host has no freezer cgroup for the container: it cannot "
                                "be paused", error="host.no_freezer")


def processes(root: str, container_id: str) -> list[int]:
    """The pids (host) of the container's processes."""
    state = ContainerState(root, container_id).load()
    cgroup = _cgroup_of(state)
    if cgroup is not None:
        return sorted(cgroup.processes())
    return [state.pid] if state.alive() else []


def run(root: str, container_id: str, bundle: str, *, pid_file: str | None = None,
        console_socket: str | None = None, no_pivot: bool = False, detach: bool = False,
        preserve_fds: int = 0, debug: Callable[[str], None] | None = None) -> int:
    """``create`` and ``start``; without ``detach``, wait for the container's end (relaying
    the usual signals to it), delete it and return its exit status."""
    if not detach:  # blocked from before the fork: none is lost, the init unblocks its own
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    pid = create(root, container_id, bundle, pid_file=pid_file, console_socket=console_socket,
                 no_pivot=no_pivot, preserve_fds=preserve_fds, debug=debug)
    try:
        start(root, container_id)
    except BaseException:
        delete(root, container_id, force=True)
        raise
    if detach:
        return 0
    status = wait_relaying(pid)  # the init is our child: its pid cannot be reused meanwhile
    delete(root, container_id, force=True)
    return status


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH)
"""What ``run`` and ``exec`` relay to the process they wait for (the caller keeps them
blocked from before the process exists)."""


def wait_relaying(pid: int) -> int:
    """Relay FORWARDED to our child ``pid`` until it ends; its exit status (``128+N`` when
    signal N ended it)."""
    from pyctr.supervisor.signalfd import open_signalfd, read_signals

    signals = open_signalfd(FORWARDED)
    pidfd = os.pidfd_open(pid)
    try:
        while pidfd not in select.select([pidfd, signals], [], [])[0]:
            for info in read_signals(signals):
                try:
                    signal.pidfd_send_signal(pidfd, info.signum)
                except ProcessLookupError:
                    pass
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
        os.close(signals)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
        128 + os.WTERMSIG(status)
