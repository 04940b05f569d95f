"""Which signals the supervisor passes on, and how they are named in logs. Kept apart from
the trio loop so the CLI can block them before it forks the init and imports trio; plain
numbers, because the ``signal`` module's enum costs milliseconds before that fork."""

from __future__ import annotations

from pyctr.linux import signal

# The CLI forwards every catchable signal (1-31) but SIGCHLD, which is about our own child.
CLI_FORWARDED_SIGNALS = tuple(
    number for number in range(1, 32)
    if number not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)
)
# A library caller forwards the ones a shell user sends (DESIGN.md, "Contracts").
LIBRARY_FORWARDED_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
)
# A stop request: the first is forwarded, a second (or the stop timeout) means SIGKILL.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Job control from the terminal (Ctrl-Z) or `kill -TSTP`: the workload gets it, then the CLI
# stops itself as any foreground job would; SIGCONT (from `fg`) resumes both.
JOB_CONTROL_SIGNALS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def signal_name(signum: int | None) -> str | None:
    """``SIGTERM`` for 15; ``SIG34`` for a number without a name."""
    if signum is None:
        return None
    import signal as named  # the enum: after the fork, or for an error message

    try:
        return named.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def parse_signal(text: str) -> int | None:
    """``TERM``, ``SIGTERM``, ``15`` -> 15; None when it names no signal that can be sent."""
    name = text.strip().upper()
    if name.isascii() and name.isdigit():
        number = int(name)
        return number if 0 < number < signal.NSIG else None
    import signal as named  # only when --stop-signal names a signal

    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(named.Signals[name])
    except KeyError:
        return None
