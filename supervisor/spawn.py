"""Starting the init: a new PID namespace, a socketpair, and a child that becomes PID 1.

A process cannot move itself into a new PID namespace; ``unshare(CLONE_NEWPID)`` only makes
its *next* child the first process of one. So the supervisor unshares, starts the init, and
immediately switches ``pid_for_children`` back with ``setns`` on its own PID namespace, or
whatever it started later would also land in the container. The init enters the other
namespaces itself.

Two ways to start the init, one init:

- ``fork=True`` (the CLI): fork this very interpreter, before importing trio, so the
  container is built and the workload runs while the supervisor is still starting up. The
  child never returns into the caller's code and drops what it inherited (descriptors, the
  environment, the command line's memory) before doing anything else. The CLI holds nothing
  but what the user typed, so a fork of it gives the container nothing of the host's.
- ``fork=False`` (the library): the init template (``pyctr.init.template``), a fresh
  interpreter with an empty environment started once per program, forks it, as PID 1 of a
  new PID namespace and a child of this process (CLONE_PARENT). A fork of the calling
  program would carry its whole memory (its secrets included) into the container's PID 1,
  and is unsafe in a program with threads (a lock one of them holds stays held in the child
  for ever); a fresh interpreter per container would cost a Python start-up and the init's
  imports each time.

Either way the Hello and Config messages are queued on the socket before the init exists, so
it never waits for the supervisor. Our end of the socket has SO_PASSCRED set before anything is
sent, so every message arrives with its sender's pid as seen from the host.

With output capture (as log records, or collected as bytes for the library), the init's stdout
and stderr are the write ends of pipes (which the workload and all its descendants inherit);
the supervisor keeps only the read ends. With ``stdin`` bytes, stdin is a pipe the supervisor
feeds. Without ``interactive``, a terminal on stdin is replaced by /dev/null, as ``docker run``
without -i. A terminal of ours is never handed in (without ``-t``): a workload holding it
could type into the user's shell (TIOCSTI), change its settings or reopen it through
/proc/self/fd, so a pipe stands in for it and the supervisor copies the bytes, as docker
does. Pipes and files are passed straight through.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import os
import select
import struct
import sys
import time

from pyctr.linux import signal, socket
from pyctr.linux.syscalls import CLONE_NEWPID, SyscallError, setns, unshare
from pyctr.protocol import CgroupJoined, Hello, ProtocolError, encode

from .cgroup import ContainerCgroup
from .errors import PyctrError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.spec.model import Spec

    from .config import ContainerConfig
    from .networking import ContainerNetwork
    from .overlay import OverlayLayer

_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
_SOCKET_BUFFER = 4 << 20
_PIPE_SIZE = 1 << 20
STREAMS = ("stdout", "stderr")


class InitProcess:
    """A started init: its host pid, our end of the socketpair, a pidfd to wait on, the read
    ends of the output pipes (stream name to fd) when output is captured, and the write end
    of its stdin pipe when the caller gave stdin bytes."""

    __slots__ = ("cgroup", "layer", "network", "output", "pid", "pidfd", "relayed", "sock",
                 "started", "stdin")

    def __init__(self, pid: int, sock: socket.socket, output: dict[str, int],
                 stdin: int | None = None, relayed: frozenset[str] = frozenset(),
                 cgroup: ContainerCgroup | None = None,
                 layer: OverlayLayer | None = None,
                 network: ContainerNetwork | None = None) -> None:
        self.pid = pid
        self.cgroup = cgroup
        """The container's cgroup, removed by ``close`` (the init must be reaped by then)."""
        self.layer = layer
        """The overlay's directories (``--overlay``), released by ``close``."""
        self.network = network
        """The published ports and the bridge attachment or host files, released by
        ``close``."""
        self.sock = sock
        self.output = output
        self.stdin = stdin
        self.relayed = relayed
        """The streams (``stdin``, ``stdout``, ``stderr``) that stand for a terminal of ours:
        their bytes are copied between the pipe and our own descriptor."""
        self.pidfd = os.pidfd_open(pid)
        self.started = time.monotonic()

    def send_config(self, config: ContainerConfig, rootfs: str, *,
                    window: tuple[int, int] = (0, 0), log_level: str = "debug",
                    inherited: bool = False, start_fifo: str = "",
                    detached: bool = False) -> None:
        """Send the init what to build (``rootfs`` as ``config.check()`` returned it):
        ``window`` is the (rows, columns) a terminal starts with; ``log_level``, the least
        severe init event that will be shown (init sends no others). ``inherited``: the init
        is a fork that has the spec already (``start_init``), so the message leaves it out.
        ``start_fifo``, ``detached``: the OCI runtime's (see Config)."""
        try:
            nodev = self.cgroup is None or not self.cgroup.devices_enforced
            cgroups = [] if self.cgroup is None else list(self.cgroup.paths)
            overlay = ("", "") if self.layer is None else (self.layer.upper, self.layer.work)
            data = encode(config.to_message(rootfs, *window, log_level, inherited=inherited,
                                            nodev=nodev, cgroups=cgroups, overlay=overlay,
                                            start_fifo=start_fifo, detached=detached))
        except ProtocolError as exc:
            raise PyctrError(f"the container's description is too large to send to init: "
                             f"{exc}", error="config.too_large") from None
        try:
            self.sock.send(data)
        except OSError as exc:  # the init is gone (or its socket is): nothing was built
            raise PyctrError(f"the container's init ended before it got its config "
                             f"({exc.strerror})", error="init.crashed") from None

    def join_cgroup(self) -> None:
        """Move the init into the container's cgroup and tell it so (CgroupJoined). Called
        after ``send_config``, so the init builds the container while the kernel moves it
        (on cgroup v1 that waits for an RCU grace period, several milliseconds). An init that
        has ended meanwhile (a setup failure) is left for ``supervise`` to report. When the
        move fails, the init is killed and reaped; raises PyctrError."""
        if self.cgroup is None or not self.cgroup.paths:
            return
        try:
            self.cgroup.add(self.pid)
        except PyctrError:
            if self.ended():
                return
            self.abort()
            raise
        try:
            self.sock.send(encode(CgroupJoined()))
        except OSError:
            pass  # the init is gone: its report, or its death, reaches supervise

    def ended(self) -> bool:
        """Whether the init has exited (it may not be reaped yet)."""
        return bool(select.select([self.pidfd], [], [], 0)[0])

    def abort(self) -> None:
        """Kill an init that has not been sent its config (it has built nothing yet), reap
        it, and release everything."""
        signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.close()

    def close(self) -> None:
        """Release what is still open (the output readers close their own ends), remove the
        cgroup and the overlay's throwaway layer, and release the network. Raises PyctrError
        when the cgroup or the layer cannot be removed (after trying everything)."""
        self.sock.close()
        os.close(self.pidfd)
        for fd in self.output.values():
            os.close(fd)
        self.output = {}
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None
        held = self.cgroup, self.layer, self.network
        self.cgroup, self.layer, self.network = None, None, None
        _release(*held)


def spawn_init(config: ContainerConfig, rootfs: str, *, fork: bool,
               window: tuple[int, int] = (0, 0), collect: tuple[str, ...] = (),
               stdin: bool = False, log_level: str = "debug",
               started: int = -1) -> InitProcess:
    """Start the init for the checked ``config`` and send it (see ``start_init`` and
    ``InitProcess.send_config``), then move it into its cgroup (``InitProcess.join_cgroup``).
    It blocks for milliseconds: an event loop calls it on a thread."""
    spec = config.spec
    if spec is not None and spec.process.terminal and spec.process.console_size is None \
            and window[0] > 0 and window[1] > 0:
        spec.process.console_size = window
    init = start_init(config, fork=fork, collect=collect, stdin=stdin, started=started)
    try:
        init.send_config(config, rootfs, window=window, log_level=log_level, inherited=fork)
    except BaseException:
        init.abort()
        raise
    init.join_cgroup()
    return init


def start_init(config: ContainerConfig, *, fork: bool, collect: tuple[str, ...] = (),
               stdin: bool = False, started: int = -1) -> InitProcess:
    """Start the init for ``config``; it waits for its config (``send_config``), so the
    caller may build that while the init starts. ``collect`` names the streams (``stdout``,
    ``stderr``) to pipe to us besides those ``config.capture_output`` pipes; ``stdin``: give
    the init a stdin pipe whose write end we keep. ``started`` (with ``fork``): a descriptor
    the init keeps open until the workload has started, then closes."""
    ours, theirs = _init_socketpair()
    # The init's own standard streams, where they are not simply ours: target fd -> source.
    stdio: dict[int, int] = {}
    readers: dict[str, int] = {}
    feeder: int | None = None
    relayed: set[str] = set()
    if stdin:
        stdio[0], feeder = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(feeder, False)
    elif os.isatty(0) and (config.tty or not config.interactive):
        # With -t the workload's terminal is its own pty; the init needs none of ours.
        stdio[0] = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    elif os.isatty(0) and not config.tty:
        stdio[0], feeder = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(feeder, False)
        relayed.add("stdin")
    for target, stream in enumerate(STREAMS, start=1):
        if config.capture_output or stream in collect:
            readers[stream], stdio[target] = _output_pipe()
        elif os.isatty(target) and config.tty:
            stdio[target] = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        elif os.isatty(target):
            readers[stream], stdio[target] = _output_pipe()
            relayed.add(stream)
    cgroup: ContainerCgroup | None = None
    layer: OverlayLayer | None = None
    network: ContainerNetwork | None = None
    request: tuple[_Template, int] | None = None
    try:
        spec = config.spec
        if not fork:
            # Asked first: the template clones the init, and the init starts up, while the
            # cgroup is made here.
            request = _request_from_template(theirs, stdio)
        cgroup = _container_cgroup(config)
        if config.overlay:  # after the cgroup, which refuses a name that is in use
            from .overlay import create_layer

            layer = create_layer(config.name, config.rootfs, config.overlay_upper)
        if spec is not None and config.network.mode in ("host", "bridge"):
            from .networking import open_network

            # Before the init exists: the spec it gets (or inherits) names the namespace
            # and the files made here.
            network = open_network(config.network, spec, config.name, config.rootfs,
                                   overlay=config.overlay)
        if request is None:
            pid = _start_in_new_pid_namespace(ours, theirs, stdio, started=started, spec=spec)
        else:
            asked, request = request, None  # answered (or failed) here, once
            pid = _template_answer(asked)
    except BaseException:
        if request is not None:
            _discard_template_init(request)
        ours.close()
        for fd in [*readers.values(), *([] if feeder is None else [feeder])]:
            os.close(fd)
        _release(cgroup, layer, network)
        raise
    finally:
        theirs.close()
        for fd in stdio.values():
            os.close(fd)
    return InitProcess(pid, ours, readers, feeder, frozenset(relayed), cgroup, layer, network)


def start_detached_init(config: ContainerConfig, keep_fds: int = 0) -> InitProcess:
    """The OCI runtime's init (``pyctr create``): a fork of this process, as the CLI's, in
    the container's cgroup-to-be, with this process's standard streams passed straight
    through (the caller's monitor, conmon or a shim, owns them) except a terminal, which is
    replaced by /dev/null: nobody stays to relay it, and a workload must not hold the
    host's terminal. ``keep_fds``: descriptors 3 to 3+keep_fds-1 are passed on to the
    workload (``--preserve-fds``). Send it its config with ``send_config(...,
    start_fifo=..., detached=True)``."""
    ours, theirs = _init_socketpair()
    stdio = {target: os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
             for target in (0, 1, 2) if os.isatty(target)}
    cgroup: ContainerCgroup | None = None
    try:
        cgroup = _container_cgroup(config)
        pid = _start_in_new_pid_namespace(ours, theirs, stdio, started=-1,
                                          spec=config.spec, keep_fds=keep_fds)
    except BaseException:
        ours.close()
        if cgroup is not None:
            cgroup.remove()
        raise
    finally:
        theirs.close()
        for fd in stdio.values():
            os.close(fd)
    return InitProcess(pid, ours, {}, cgroup=cgroup)


def _init_socketpair() -> tuple[socket.socket, socket.socket]:
    """Our end and the init's of its socketpair, with our Hello queued. Our end passes
    credentials, so every message arrives with its sender's host pid."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    for sock in (ours, theirs):
        for option in (_SO_SNDBUFFORCE, _SO_RCVBUFFORCE):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
            except OSError:
                pass  # the default buffers still carry every ordinary message
    ours.send(encode(Hello()))
    return ours, theirs


def _container_cgroup(config: ContainerConfig) -> ContainerCgroup:
    """The container's cgroup, made before the init exists: ``join_cgroup`` moves the init
    in, and the init waits for that before it starts the workload, so nothing of the
    container runs outside it."""
    spec = config.spec
    return ContainerCgroup.create(
        config.name, config.device_rules,
        resources=None if spec is None else spec.linux.resources,
        cgroups_path=None if spec is None else spec.linux.cgroups_path)


def _release(cgroup: ContainerCgroup | None, layer: OverlayLayer | None,
             network: ContainerNetwork | None) -> None:
    """Remove the cgroup and the layer and release the network, each even when another
    fails; the first failure is raised."""
    try:
        if cgroup is not None:
            cgroup.remove()
    finally:
        try:
            if layer is not None:
                layer.close()
        finally:
            if network is not None:
                network.close()


def _output_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_end, False)
    try:
        # A bigger pipe means fewer wake-ups for a chatty workload (default 64 KiB).
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size; the default works, only slower
    return read_end, write_end


def _start_in_new_pid_namespace(ours: socket.socket, theirs: socket.socket,
                                stdio: dict[int, int], *, started: int,
                                spec: Spec | None, keep_fds: int = 0) -> int:
    """Fork the init as PID 1 of a new PID namespace, with ``stdio`` (target fd -> source)
    replacing the standard streams it would otherwise share with us."""
    own_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            unshare(CLONE_NEWPID)
        except SyscallError as exc:
            raise PyctrError(f"cannot create a PID namespace ({exc}); run pyctr as root",
                             error="host.unshare_failed") from None
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child is the init; it never returns
                signal.set_wakeup_fd(-1)  # a trio caller's: not ours to write to
                ours.close()
                for target, source in stdio.items():
                    os.dup2(source, target)
                # Imported here, not by the CLI before the fork: the CLI builds the
                # container's spec meanwhile, on the other CPU.
                from pyctr.init import run

                run(theirs, started, spec, keep_fds)
            return pid
        finally:
            setns(own_namespace, CLONE_NEWPID)
    finally:
        os.close(own_namespace)


class _Template:
    """The library's end of its init template (``pyctr.init.template``): a fresh, isolated
    interpreter with an empty environment, started on first use, that forks each init."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.set_inheritable(theirs.fileno(), True)
            argv = [sys.executable, "-I", "-m", "pyctr.init.template", str(theirs.fileno())]
            self.pid = os.posix_spawn(
                sys.executable, argv, {}, setsigmask=(),
                file_actions=[(os.POSIX_SPAWN_DUP2, devnull, target) for target in (0, 1, 2)])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(devnull)
        self.sock = ours

    def request(self, init_end: int, stdio: list[int]) -> int:
        """Ask for a new init on ``init_end`` with ``stdio`` as its fds 0-2; return the
        descriptor its answer will come on (``_template_answer``). Raises OSError. Needs no
        lock: each request is one message, and each has its own answer."""
        answer, answer_end = os.pipe2(os.O_CLOEXEC)
        fds = struct.pack(f"{2 + len(stdio)}i", init_end, *stdio, answer_end)
        try:
            self.sock.sendmsg([b"start"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except BaseException:
            os.close(answer)
            raise
        finally:
            os.close(answer_end)
        return answer

    def close(self) -> None:
        """End the template (it exits when its socket closes) and reap it."""
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


_template: _Template | None = None
_template_lock = _thread.allocate_lock()


def ensure_template() -> None:
    """Start the library's init template unless it runs. Call it from the thread that will
    live as long as the containers (the event loop's): the inits' parent is the thread that
    started the template (CLONE_PARENT), and their parent-death signal fires when that
    thread ends, as a worker thread does when it has been idle a while."""
    global _template
    with _template_lock:
        if _template is not None and _template.owner != os.getpid():
            _template = None  # a fork of the program that started it: not ours to use
        if _template is None:
            _template = _Template()


def _request_from_template(theirs: socket.socket,
                           stdio: dict[int, int]) -> tuple[_Template, int]:
    """Ask the library's template for an init on ``theirs``: the template and the
    descriptor its answer comes on (``_Template.request``)."""
    ensure_template()
    template = _template
    assert template is not None
    try:
        return template, template.request(theirs.fileno(), [stdio.get(target, target)
                                                            for target in (0, 1, 2)])
    except (BrokenPipeError, ConnectionError):
        _forget_template(template)
        raise


def _template_answer(request: tuple[_Template, int]) -> int:
    """The pid of the init a request (``_request_from_template``) made; closes its answer
    descriptor. Raises OSError when the template could not start it or has gone."""
    template, answer = request
    try:
        data = os.read(answer, 4)
    finally:
        os.close(answer)
    if len(data) != 4:  # closed unanswered: the template died, or refused the request
        _forget_template(template)
        raise ConnectionResetError(errno.ECONNRESET, "the init template has gone")
    pid = int.from_bytes(data, sys.byteorder, signed=True)
    if pid < 0:
        raise OSError(-pid, os.strerror(-pid))
    return pid


def _discard_template_init(request: tuple[_Template, int]) -> None:
    """Wait for a request's answer and kill and reap the init it made (our child), if any:
    what the init was for has failed."""
    try:
        pid = _template_answer(request)
    except OSError:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _forget_template(template: _Template) -> None:
    """A template that has died (killed?): the next container starts another."""
    global _template
    with _template_lock:
        if _template is template:
            template.close()
            _template = None


def template_pid() -> int | None:
    """The library's init template's pid, when it runs (the tests look for leftovers)."""
    return _template.pid if _template is not None and _template.owner == os.getpid() else None


def close_template() -> None:
    """End the library's init template; the next container starts a new one."""
    global _template
    if _template is not None and _template.owner == os.getpid():
        _template.close()
    _template = None
