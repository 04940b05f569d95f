"""Which signals the supervisor passes on, and how they are named in logs. Kept apart from
the trio loop so the CLI can install its early handlers before importing trio."""

from __future__ import annotations

import signal

# What the host shell can send that the workload should see (DESIGN.md, "Contracts").
FORWARDED_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
)
# A stop request: the first is forwarded, a second (or the stop timeout) means SIGKILL.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int | None) -> str | None:
    if signum is None:
        return None
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"
