"""``pyctr-supervise``: the command line over the library.

Start-up order is the point of this module. Python itself takes ~10 ms to start and trio
~100 ms to import, while runc runs a whole container in ~20 ms. So ``main`` parses the command
line and checks the host with light modules only, forks the init (which builds the container
and starts the workload on its own), waits until the workload has started, and only then
imports trio and structlog to supervise.
The forwarded signals are blocked before the fork and stay blocked: ones that arrive while
trio is still being imported wait, and the supervisor reads them all from a signalfd, which
also tells who sent each one.
"""

from __future__ import annotations

import gc

# No collection until the workload has started: the imports below and the container's set-up
# create objects that are all still alive when it is done, and a collection among them took
# ~0.5 ms of the path to the exec. _supervise enables it again.
gc.disable()

import os  # noqa: E402 - after the collector is off
import select  # noqa: E402
import sys  # noqa: E402

from pyctr import init as _init  # noqa: E402, F401 - imported before the fork, for the child
from pyctr.linux import signal  # noqa: E402

from .config import ContainerConfig  # noqa: E402
from .errors import EXIT_PYCTR_FAILED, PyctrError  # noqa: E402
from .options import PROG, CommandLine, default_log_level, help_text, parse  # noqa: E402
from .signals import CLI_FORWARDED_SIGNALS  # noqa: E402
from .spawn import spawn_init  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from .logfile import LogSink
    from .result import ContainerResult
    from .spawn import InitProcess
    from .terminal import HostTerminal

VERSION = "0.1.0"
STARTUP_WAIT = 0.25
"""Seconds the CLI waits for the workload's start before it goes on importing anyway."""


def main(argv: list[str] | None = None) -> NoReturn:
    code = run_cli(sys.argv[1:] if argv is None else argv)
    _exit_without_teardown(code)


def _exit_without_teardown(code: int) -> NoReturn:
    """Exit with ``code`` once the standard streams are flushed, skipping the interpreter's
    own teardown: with trio and structlog loaded that frees every module and object one by
    one, ~30-40 ms here, a quarter of a short container's whole run. Nothing of ours depends
    on it: the log sink, the terminal and the init's descriptors are closed by then."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away (`| head`): what it did not read is not ours
    os._exit(code)


def run_cli(argv: list[str]) -> int:
    try:
        line = parse(argv)
    except PyctrError as exc:
        return _fail(exc)
    if line.help or line.version:
        return _show(help_text() if line.help else f"{PROG} {VERSION}")
    if line.cleanup:
        return _cleanup()
    status: int | None = None
    try:
        status = _open_status(line)
    except PyctrError as exc:
        return _fail(exc)
    try:
        config = _config_from(line)
        if line.print_spec:
            if line.hostname is None and line.name is None:
                # Not a random container id frozen into a file that may run many times.
                line.hostname = line.name = "pyctr"
                config = _config_from(line)
            return _show(_spec_document(config))
        rootfs = config.check()
        # A log file is opened now, so that a bad path fails before anything runs; stderr
        # needs no check, and its sink is made once the workload runs.
        log_sink = _open_log_sink(line) if line.log_file is not None else None
    except PyctrError as exc:
        return _fail(exc, status, line)
    line.log_level = default_log_level(line, to_terminal=line.log_file is None and
                                       os.isatty(2))

    # Blocked from here on, in every thread trio may start later: see the module docstring.
    signal.pthread_sigmask(signal.SIG_BLOCK, CLI_FORWARDED_SIGNALS)
    terminal: HostTerminal | None = None
    window = (0, 0)
    if config.tty:  # termios and tty load only for a terminal
        from .terminal import HostTerminal, window_size

        terminal = HostTerminal(0) if os.isatty(0) else None
        window = window_size(0)
    if terminal is not None:
        terminal.start_guard()
    try:
        started, init_started = os.pipe2(os.O_CLOEXEC)
        try:
            init = spawn_init(config, rootfs, fork=True, window=window, log_level=line.log_level,
                              started=init_started)
        except PyctrError as exc:
            os.close(started)
            return _fail(exc, status, line, config.name)
        finally:
            os.close(init_started)
        _wait_until_started(started)
        result = _supervise(init, config, line, log_sink or _open_log_sink(line), terminal)
    finally:
        if terminal is not None:
            terminal.close()
    if result.message:
        print(f"{PROG}: error: {result.message}", file=sys.stderr)
    if status is not None:
        _write_status(status, result.record())
    _sweep_stale()
    return result.exit_code


def _open_status(line: CommandLine) -> int | None:
    """The descriptor the result record goes to (``--status-file``, ``--status-fd``), checked
    now so that a bad one fails before anything runs. Raises PyctrError."""
    if line.status_file is not None:
        try:
            return os.open(line.status_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                           os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise PyctrError(f"cannot write the status file {line.status_file}: "
                             f"{exc.strerror}", error="usage.invalid") from None
    if line.status_fd is not None:
        import fcntl

        try:
            mode = fcntl.fcntl(line.status_fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            mode = -1
        if mode not in (os.O_WRONLY, os.O_RDWR):
            raise PyctrError(f"--status-fd {line.status_fd} is not a descriptor open for "
                             f"writing; open one, e.g. `3>status.json`", error="usage.invalid")
        # Not the container's: the init closes what it inherits, and this keeps it so.
        os.set_inheritable(line.status_fd, False)
        return line.status_fd
    return None


def _write_status(fd: int, record: dict[str, object]) -> None:
    """One JSON object and a newline, then the descriptor is closed."""
    import json

    data = (json.dumps(record) + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as exc:
        print(f"{PROG}: error: cannot write the result record: {exc.strerror}",
              file=sys.stderr)
    finally:
        os.close(fd)


def _sweep_stale() -> None:
    """Remove what supervisors that were killed left, now that ours is done: nothing of it
    is on the way to a workload's start."""
    from .cleanup import sweep_stale

    sweep_stale()


def _cleanup() -> int:
    """``--cleanup``: sweep, and take down the bridge when no container uses it; say what
    was removed, one line each."""
    from .cleanup import clean_up

    try:
        removed = clean_up()
    except PyctrError as exc:
        return _fail(exc)
    return _show("\n".join(f"removed {item}" for item in removed) or "nothing to remove")


def _show(text: str) -> int:
    """Print ``text``; a reader that has gone (``--help | head -1``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        pass
    return 0


def _wait_until_started(fd: int) -> None:
    """Wait until the init closes its end of the pipe ``fd`` (the workload has started, or
    cannot), for at most STARTUP_WAIT seconds, then close ``fd``. The imports that follow
    would otherwise compete with the container's setup for the CPU: on two CPUs that delayed
    the workload's start by ~3 ms, while the whole run (~200 ms of imports) gained nothing
    measurable from the overlap."""
    try:
        select.select([fd], [], [], STARTUP_WAIT)
    finally:
        os.close(fd)


def _supervise(init: InitProcess, config: ContainerConfig, line: CommandLine,
               sink: LogSink, terminal: HostTerminal | None) -> ContainerResult:
    # The heavy imports, now that the container is already on its way (the collector is still
    # off, see the top). They create ~45,000 objects the collector tracks, nearly all of them
    # kept for the whole run; collecting as they come cost ~7 ms here. Frozen afterwards, so
    # later collections skip them too.
    import trio

    from .logs import CommitBeforeWait, configure, default_format
    from .supervise import supervise

    gc.freeze()
    gc.enable()

    log_format = line.log_format or default_format(sink)
    assert line.log_level is not None, "run_cli decides the default"
    configure(log_format=log_format, level=line.log_level, sink=sink)
    records = None
    if log_format == "json" and config.capture_output and line.log_level in ("debug", "info"):
        from .records import OutputRecords

        records = OutputRecords(sink, config.name)
    try:
        return trio.run(lambda: supervise(init, config, forward_signals="signalfd",
                                          terminal=terminal, commit_logs=sink.commit,
                                          output_records=records),
                        instruments=[CommitBeforeWait(sink)])
    finally:
        sink.close()


def _config_from(line: CommandLine) -> ContainerConfig:
    supervision = {"name": line.name, "chroot": line.chroot, "stop_timeout": line.stop_timeout,
                   "capture_output": line.capture_output, "stop_signal": line.stop_signal,
                   "signal_group": line.signal_target == "group",
                   "interactive": line.interactive, "timeout": line.timeout,
                   "overlay": line.overlay, "overlay_upper": line.overlay_upper,
                   "network": line.network, "publish": line.publish}
    if line.bundle is not None:
        return ContainerConfig.from_bundle(line.bundle, **supervision)
    env: dict[str, str] = {}
    if line.env_files:
        from pyctr.spec.flags import read_env_file
        from pyctr.spec.model import SpecError

        try:
            for path in line.env_files:
                env.update(read_env_file(path))
        except SpecError as exc:
            raise PyctrError(str(exc), error="usage.invalid") from None
    env.update(item.partition("=")[::2] for item in line.env)
    return ContainerConfig(
        line.rootfs, line.command, hostname=line.hostname, env=env, workdir=line.workdir,
        user=line.user, read_only=line.read_only, volumes=line.volumes, tmpfs=line.tmpfs,
        mounts=line.mounts, ulimits=line.ulimits, tty=line.tty, cap_add=line.cap_add,
        cap_drop=line.cap_drop, privileged=line.privileged, security_opt=line.security_opt,
        devices=line.devices, memory=line.memory, memory_swap=line.memory_swap,
        cpus=line.cpus, cpu_shares=line.cpu_shares, pids_limit=line.pids_limit,
        cpuset_cpus=line.cpuset_cpus, cpuset_mems=line.cpuset_mems, **supervision,  # type: ignore[arg-type] # the constructor's own keywords, above
    )


def _spec_document(config: ContainerConfig) -> str:
    """The config.json that runs ``config``: what ``--bundle`` would take, as ``runc spec``
    writes it. The rootfs path is made absolute so that the file works from any bundle."""
    import json

    spec = config.build_spec(make_volumes=False)
    # --network host is the spec's (no network namespace); a bridge and published ports are
    # the supervisor's, for --network bridge with --bundle to bring.
    config.network.apply(spec)
    spec.root_path = os.path.abspath(spec.root_path)
    return json.dumps(spec.to_value(), indent=2)


def _open_log_sink(line: CommandLine) -> LogSink:
    from .logfile import LogFile, LogSink

    if line.log_file is None:
        return LogSink(2)
    return LogFile(line.log_file, max_size=line.log_max_size, max_files=line.log_max_files or 1)


def _fail(exc: PyctrError, status: int | None = None, line: CommandLine | None = None,
          name: str | None = None) -> int:
    """Report a failure before the container ran: the one line, and the record."""
    print(f"{PROG}: error: {exc.message}", file=sys.stderr)
    code = exc.exit_code or EXIT_PYCTR_FAILED
    if status is not None and line is not None:
        from .result import ContainerResult

        result = ContainerResult(name or line.name or "", line.command)
        result.exit_code, result.error, result.message = code, exc.error, exc.message
        _write_status(status, result.record())
    return code
