"""``pyctr-supervise``: the command line over the library.

Start-up order is the point of this module. Python itself takes ~10 ms to start and trio
~100 ms to import, while runc runs a whole container in ~20 ms. So ``main`` parses the command
line and checks the host with light modules only, forks the init (which builds the container
and starts the workload on its own), and only then imports trio and structlog to supervise.
Signals that arrive in between are forwarded by a plain handler and logged once trio runs.
"""

from __future__ import annotations

import os
import signal
import sys

from pyctr import init as _init  # noqa: F401 - imported before the fork, so the child has it

from .config import ContainerConfig
from .errors import EXIT_PYCTR_FAILED, PyctrError
from .options import PROG, CommandLine, help_text, parse
from .signals import FORWARDED_SIGNALS
from .spawn import spawn_init

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, TextIO

    from .result import ContainerResult
    from .spawn import InitProcess

VERSION = "0.1.0"


def main(argv: list[str] | None = None) -> NoReturn:
    sys.exit(run_cli(sys.argv[1:] if argv is None else argv))


def run_cli(argv: list[str]) -> int:
    try:
        line = parse(argv)
    except PyctrError as exc:
        return _fail(exc)
    if line.help:
        print(help_text())
        return 0
    if line.version:
        print(f"{PROG} {VERSION}")
        return 0
    config = _config_from(line)
    try:
        rootfs = config.check()
        log_stream = _open_log_stream(line)
    except PyctrError as exc:
        return _fail(exc)

    # Block the forwarded signals across the fork: the child must not run our handlers, and
    # we must not lose a Ctrl-C that arrives before the handlers are in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        init = spawn_init(config, rootfs, fork=True)
    except PyctrError as exc:
        return _fail(exc)
    early: list[int] = []

    def forward_early(signum: int, _frame: object) -> None:
        try:
            os.kill(init.pid, signum)
        except ProcessLookupError:
            pass
        early.append(signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward_early)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)

    result = _supervise(init, config, line, log_stream, early)
    if result.message:
        print(f"{PROG}: error: {result.message}", file=sys.stderr)
    return result.exit_code


def _supervise(init: InitProcess, config: ContainerConfig, line: CommandLine,
               log_stream: TextIO, early: list[int]) -> ContainerResult:
    # The heavy imports, now that the container is already on its way.
    import trio

    from .logs import configure, default_format
    from .supervise import supervise

    configure(log_format=line.log_format or default_format(log_stream), level=line.log_level,
              stream=log_stream)
    return trio.run(lambda: supervise(init, config, forward_signals=True, early_signals=early))


def _config_from(line: CommandLine) -> ContainerConfig:
    env = dict(item.split("=", 1) for item in line.env)
    return ContainerConfig(
        line.rootfs, line.command, hostname=line.hostname, name=line.name, env=env,
        workdir=line.workdir, chroot=line.chroot, stop_timeout=line.stop_timeout,
    )


def _open_log_stream(line: CommandLine) -> TextIO:
    if line.log_file is None:
        return sys.stderr
    from .logs import open_log_file

    return open_log_file(line.log_file)


def _fail(exc: PyctrError) -> int:
    print(f"{PROG}: error: {exc.message}", file=sys.stderr)
    return exc.exit_code or EXIT_PYCTR_FAILED
