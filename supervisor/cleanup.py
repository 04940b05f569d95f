"""What supervisors that were killed leave behind, found and removed.

A supervisor removes its container's cgroup, overlay layer and network lease itself; one
that was SIGKILLed cannot. Each of those is claimed with an flock for as long as its
supervisor lives, so whatever nobody holds is a leftover: ``sweep_stale`` removes it (the
CLI after each run, the library before its first container), and ``pyctr-supervise
--cleanup`` does the same on demand.
"""

from __future__ import annotations


def sweep_stale() -> list[str]:
    """Remove every leftover of a killed supervisor; what was removed, one line each.
    Never raises: what cannot be removed now is tried again by the next sweep."""
    from . import cgroup, network, overlay

    removed: list[str] = []
    try:
        removed += [f"cgroup of container {name}" for name in cgroup.sweep_stale()]
    except OSError:
        pass
    try:
        removed += [f"overlay layer of container {name}" for name in overlay.sweep_stale()]
    except OSError:
        pass
    try:
        removed += network.sweep_stale()
    except OSError:
        pass
    return removed


def clean_up() -> list[str]:
    """``pyctr-supervise --cleanup``: ``sweep_stale``, then the bridge and its NAT rules
    when no running container holds an address on it (the next bridge container makes them
    again). Raises PyctrError when not root."""
    import os

    from . import network
    from .errors import PyctrError

    if os.geteuid() != 0:
        raise PyctrError("--cleanup must run as root: it removes cgroups, network devices and "
                         "firewall rules; run it again with sudo", error="host.not_root")
    removed = sweep_stale()
    removed += [item for item in network.cleanup() if item not in removed]
    return removed
