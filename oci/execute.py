"""``pyctr exec``: another process in a running container, as runc's ``exec`` starts one.

This process joins the container: its cgroups (so the process is counted, limited and
frozen with the rest), then its namespaces, the mount namespace last (which also makes the
container's root ours) and the PID namespace for the child. The child becomes what the
process description says exactly as the init's workload does, through the same code
(``pyctr.init.workload``: rlimits, groups and ids, capabilities, no_new_privs, the seccomp
filter compiled from the container's config, then exec), so an exec'd process is held to
the same rules as the container's own. Everything is imported before the mount namespace
changes: the container's root has no Python of ours.

The process is described by ``--process FILE`` (a runtime-spec ``process`` object, what
podman passes) or by the command line's arguments on top of the container's own process
(``--env``, ``--cwd``, ``--user``, ``--tty``, ``--cap``, ``--no-new-privs``). Without
``--detach``, the exit status is the process's (``128+N`` when signal N ended it), and the
usual signals are relayed to it; with it, ``--pid-file`` gets its host pid and the process
is left to whoever reaps our orphans.
"""

from __future__ import annotations

import json
import os
import signal

from pyctr.linux.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    setns,
)

# Imported now: wait_relaying needs it once our root is the container's.
from pyctr.supervisor import signalfd as _signalfd  # noqa: F401
from pyctr.supervisor.errors import PyctrError

from .runtime import FORWARDED, connect_console, send_to_console, wait_relaying, write_pid_file
from .state import ContainerState, RuntimeError_

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from pyctr.supervisor.config import ContainerConfig

# Joined in this order: the mount namespace last, since it changes our root.
NAMESPACES = (("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS), ("net", CLONE_NEWNET),
              ("cgroup", CLONE_NEWCGROUP), ("pid", CLONE_NEWPID), ("mnt", CLONE_NEWNS))


def execute(root: str, options: argparse.Namespace,
            before_joining: Callable[[], None] | None = None) -> int:
    """Run the process ``options`` describe in container ``options.id``; its exit status
    (0 with ``--detach``). ``before_joining`` is called while this process still sees the
    host's files (the caller opens its log then)."""
    state = ContainerState(root, options.id).load()
    status = state.status()
    if status != "running":
        raise RuntimeError_(f"cannot exec in a container that is {status}",
                            error="container.not_running")
    # What the caller left open beyond the preserved descriptors is not the container's.
    os.closerange(3 + options.preserve_fds, 1 << 20)
    for fd in range(3, 3 + options.preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    config = _describe(state, options)
    assert config.spec is not None
    process = config.spec.process
    if process.terminal and options.console_socket is None:
        raise RuntimeError_("cannot allocate a terminal without --console-socket",
                            error="usage.invalid")
    from pyctr.init import main as _init  # noqa: F401 - imported before the root changes
    from pyctr.init import workload

    # Opened now: once we are in the container's mount namespace, paths are the container's.
    if before_joining is not None:
        before_joining()
    console = None
    if process.terminal:
        console = connect_console(options.console_socket)
    pid_directory = -1
    if options.pid_file:
        pid_directory = os.open(os.path.dirname(os.path.abspath(options.pid_file)),
                                os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    namespaces = _open_namespaces(state.pid)
    try:
        _join_cgroups(state)
        for fd, flag in namespaces:
            setns(fd, flag)
    except (OSError, PyctrError) as exc:
        raise RuntimeError_(f"cannot join container {state.id}: {exc}") from None
    finally:
        for fd, _ in namespaces:
            os.close(fd)
    env = process.environment()
    if not options.detach:  # before the fork: none is lost
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    workload.reset_ignored_signals()
    terminal = None
    try:
        workload.enter_workdir(process.cwd)
        path = workload.resolve(process.args[0], env, state.rootfs)
        workload.check_runnable(path, env, state.rootfs)
        if process.terminal:
            height, width = process.console_size or (0, 0)
            master, terminal = workload.open_terminal(height, width)
            try:
                assert console is not None
                send_to_console(console, master, options.console_socket)
                console = None
            finally:
                os.close(master)
        pid = workload.start(path, process.args, env, process, terminal, config.seccomp_filter)
    except workload.WorkloadError as exc:
        raise RuntimeError_(exc.message, exc.error) from None
    finally:
        if terminal is not None:
            os.close(terminal)
        if console is not None:
            console.close()
    if pid_directory != -1:
        write_pid_file(os.path.basename(options.pid_file), pid, directory=pid_directory)
        os.close(pid_directory)
    if options.detach:
        return 0
    return wait_relaying(pid)


def _describe(state: ContainerState, options: argparse.Namespace) -> ContainerConfig:
    """The container's config with the process to run in place of its own, checked (its
    seccomp filter compiled): a ``ContainerConfig``."""
    from pyctr.supervisor.config import ContainerConfig

    try:
        with open(os.path.join(state.bundle, "config.json")) as file:
            document = json.load(file)
    except (OSError, ValueError) as exc:
        raise RuntimeError_(f"cannot read the container's config.json in {state.bundle}: "
                            f"{exc}") from None
    if options.process:
        try:
            with open(options.process) as file:
                document["process"] = json.load(file)
        except (OSError, ValueError) as exc:
            raise RuntimeError_(f"cannot read --process {options.process}: {exc}") from None
    else:
        args = [arg for arg in options.args if arg != "--"] if options.args[:1] == ["--"] \
            else list(options.args)
        if not args:
            raise RuntimeError_("exec needs a command, or --process FILE",
                                error="usage.invalid")
        process = dict(document.get("process") or {})
        process["args"] = args
        process["terminal"] = bool(options.tty)
        process.pop("consoleSize", None)
        if options.cwd:
            process["cwd"] = options.cwd
        if options.env:
            process["env"] = [*(process.get("env") or []), *options.env]
        if options.user:
            uid, _, gid = options.user.partition(":")
            process["user"] = {"uid": int(uid), "gid": int(gid or 0),
                               "additionalGids": [int(g) for g in options.additional_gids]}
        if options.no_new_privs:
            process["noNewPrivileges"] = True
        if options.cap:
            capabilities = dict(process.get("capabilities") or {})
            for kind in ("bounding", "effective", "permitted"):
                capabilities[kind] = sorted({*capabilities.get(kind, []), *options.cap})
            process["capabilities"] = capabilities
        document["process"] = process
    try:
        config = ContainerConfig.from_spec(document, bundle=state.bundle, name=state.id)
        config.check()
    except PyctrError as exc:
        raise RuntimeError_(exc.message, exc.error) from None
    return config


def _open_namespaces(pid: int) -> list[tuple[int, int]]:
    """The init's namespaces that differ from ours, opened (the init's pid was checked)."""
    opened = []
    try:
        for name, flag in NAMESPACES:
            theirs = f"/proc/{pid}/ns/{name}"
            if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue
            opened.append((os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), flag))
    except OSError as exc:
        for fd, _ in opened:
            os.close(fd)
        raise RuntimeError_(f"cannot open the container's namespaces: {exc.strerror}") from None
    return opened


def _join_cgroups(state: ContainerState) -> None:
    paths = state.cgroup.get("paths")
    for path in paths if isinstance(paths, list) else []:
        fd = os.open(os.path.join(str(path), "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
