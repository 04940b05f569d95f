"""A container's ``linux.resources`` as cgroup files, and what its cgroup used, on v1 and v2.

Pure functions over the spec's value (already checked by ``pyctr.spec.limits``) and over the
text of cgroup files, so that both versions can be tested on any host; ``cgroup`` does the
writing and reading. What goes where:

=====================  ==============================  ===================================
``linux.resources``    cgroup v1                       cgroup v2
=====================  ==============================  ===================================
memory.limit           memory.limit_in_bytes           memory.max
memory.swap            memory.memsw.limit_in_bytes     memory.swap.max (swap minus limit)
memory.reservation     memory.soft_limit_in_bytes      memory.low
memory.swappiness      memory.swappiness               (none: v2 has no such knob)
memory.disableOOMKiller  memory.oom_control            (none)
cpu.shares             cpu.shares                      cpu.weight (1-10000, scaled)
cpu.quota, cpu.period  cpu.cfs_quota_us, _period_us    cpu.max ("QUOTA PERIOD")
cpu.cpus, cpu.mems     cpuset.cpus, cpuset.mems        cpuset.cpus, cpuset.mems
pids.limit             pids.max                        pids.max
=====================  ==============================  ===================================

``-1`` means no limit, written as the file takes it; a pids limit of 0 or -1 is not written
(a new cgroup has none).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyctr.protocol.codec import Value

V1_ALWAYS = ("devices", "memory", "cpuacct", "pids", "freezer")
"""The v1 hierarchies every container joins: its devices; memory, cpuacct and pids for what
it used and its limits; freezer, to kill every process at the end. ``cpu`` and ``cpuset``
are joined only for a limit of theirs (a cpuset cgroup must be filled in before use, and
each hierarchy joined costs the move a little more)."""
V2_ALWAYS = ("memory", "pids")
"""The v2 controllers every container's cgroup enables where the host has them: the memory
peak and OOM count need ``memory``. ``cpu.stat`` needs no controller."""
DEFAULT_PERIOD = 100_000


class Write:
    """One value for one file of the container's cgroup: ``controller`` names the v1
    hierarchy (on v2 all files are in one directory). ``optional``: a file this kernel may
    lack (swap accounting off), skipped when missing."""

    __slots__ = ("controller", "file", "optional", "value")

    def __init__(self, controller: str, file: str, value: str, optional: bool = False) -> None:
        self.controller, self.file, self.value, self.optional = controller, file, value, optional

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Write):
            return NotImplemented
        return (self.controller, self.file, self.value, self.optional) == (
            other.controller, other.file, other.value, other.optional)

    def __repr__(self) -> str:
        return f"Write({self.controller!r}, {self.file!r}, {self.value!r})"


def _section(resources: Value, name: str) -> dict[str, Value]:
    section = resources.get(name) if isinstance(resources, dict) else None
    return section if isinstance(section, dict) else {}


def _int(section: dict[str, Value], key: str) -> int | None:
    value = section.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(section: dict[str, Value], key: str) -> str | None:
    value = section.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def uses_cpu(resources: Value) -> bool:
    cpu = _section(resources, "cpu")
    return any(_int(cpu, key) is not None for key in ("shares", "quota", "period"))


def uses_cpuset(resources: Value) -> bool:
    cpu = _section(resources, "cpu")
    return _text(cpu, "cpus") is not None or _text(cpu, "mems") is not None


def v1_controllers(resources: Value) -> list[str]:
    """The v1 hierarchies the container joins."""
    extra = [name for name, wanted in (("cpu", uses_cpu(resources)),
                                       ("cpuset", uses_cpuset(resources))) if wanted]
    return [*V1_ALWAYS, *extra]


def required_controllers(resources: Value) -> list[str]:
    """The controllers a limit of ``resources`` needs, on v1 or v2: an error when the host
    lacks one (the others are skipped where missing)."""
    required = []
    memory, pids = _section(resources, "memory"), _section(resources, "pids")
    if any(_int(memory, key) is not None for key in ("limit", "swap", "reservation")):
        required.append("memory")
    if uses_cpu(resources):
        required.append("cpu")
    if uses_cpuset(resources):
        required.append("cpuset")
    if (_int(pids, "limit") or 0) > 0:
        required.append("pids")
    return required


def v2_controllers(resources: Value) -> tuple[list[str], list[str]]:
    """(wanted, required): the v2 controllers to enable for the container's cgroup, and
    ``required_controllers`` among them."""
    required = required_controllers(resources)
    return list(dict.fromkeys([*V2_ALWAYS, *required])), required


def _limit(value: int) -> str:
    return "-1" if value < 0 else str(value)


def _max(value: int) -> str:
    return "max" if value < 0 else str(value)


def v1_writes(resources: Value) -> list[Write]:
    """The writes for cgroup v1, in an order the kernel accepts: the memory limit before
    memory+swap (which may not be below it), the period before the quota."""
    writes = []
    memory, cpu, pids = (_section(resources, name) for name in ("memory", "cpu", "pids"))
    limit, swap = _int(memory, "limit"), _int(memory, "swap")
    if limit is not None:
        writes.append(Write("memory", "memory.limit_in_bytes", _limit(limit)))
    if swap is not None:
        writes.append(Write("memory", "memory.memsw.limit_in_bytes", _limit(swap),
                            optional=True))
    reservation = _int(memory, "reservation")
    if reservation is not None:
        writes.append(Write("memory", "memory.soft_limit_in_bytes", _limit(reservation)))
    swappiness = _int(memory, "swappiness")
    if swappiness is not None:
        writes.append(Write("memory", "memory.swappiness", str(swappiness)))
    if memory.get("disableOOMKiller") is True:
        writes.append(Write("memory", "memory.oom_control", "1"))
    shares = _int(cpu, "shares")
    if shares is not None:
        writes.append(Write("cpu", "cpu.shares", str(shares)))
    period, quota = _int(cpu, "period"), _int(cpu, "quota")
    if period is not None:
        writes.append(Write("cpu", "cpu.cfs_period_us", str(period)))
    if quota is not None:
        writes.append(Write("cpu", "cpu.cfs_quota_us", _limit(quota)))
    return writes + _cpuset_and_pids(cpu, pids)


def _cpuset_and_pids(cpu: dict[str, Value], pids: dict[str, Value]) -> list[Write]:
    """The writes that are the same on v1 and v2."""
    writes = [Write("cpuset", f"cpuset.{key}", text) for key in ("cpus", "mems")
              if (text := _text(cpu, key)) is not None]
    pids_limit = _int(pids, "limit")
    if pids_limit is not None and pids_limit > 0:  # a new cgroup's pids.max is "max" already
        writes.append(Write("pids", "pids.max", str(pids_limit)))
    return writes


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2-262144, default 1024) as cpu.weight (1-10000, default 100): the linear
    map of one range onto the other that runc and crun use, so that a spec written for v1
    weighs the same on v2."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def v2_writes(resources: Value) -> list[Write]:
    """The writes for cgroup v2 (``controller`` is the one the file belongs to). v2 has no
    swappiness and no switch for the OOM killer: those are left out (see the README)."""
    writes = []
    memory, cpu, pids = (_section(resources, name) for name in ("memory", "cpu", "pids"))
    limit, swap = _int(memory, "limit"), _int(memory, "swap")
    if limit is not None:
        writes.append(Write("memory", "memory.max", _max(limit)))
    if swap is not None:
        # v1's and the spec's figure is memory plus swap; v2's is the swap alone.
        only_swap = -1 if swap < 0 or limit is None or limit < 0 else max(swap - limit, 0)
        writes.append(Write("memory", "memory.swap.max", _max(only_swap), optional=True))
    reservation = _int(memory, "reservation")
    if reservation is not None:
        # -1 is no reservation: nothing protected from reclaim (v2's 0), not everything.
        writes.append(Write("memory", "memory.low", str(max(reservation, 0))))
    shares = _int(cpu, "shares")
    if shares is not None:
        writes.append(Write("cpu", "cpu.weight", str(shares_to_weight(shares))))
    period, quota = _int(cpu, "period"), _int(cpu, "quota")
    if period is not None or quota is not None:
        writes.append(Write("cpu", "cpu.max", f"{_max(-1 if quota is None else quota)} "
                                              f"{period or DEFAULT_PERIOD}"))
    return writes + _cpuset_and_pids(cpu, pids)


class Usage:
    """What a container's cgroup used, read at its end: ``cpu_time_s`` (user plus system of
    every process), ``memory_peak_bytes`` (the highest charge, page cache included, as the
    kernel counts it), ``oom_kills`` (processes the OOM killer killed for its limit). None
    where the host cannot tell."""

    __slots__ = ("cpu_time_s", "memory_peak_bytes", "oom_kills")

    def __init__(self, cpu_time_s: float | None = None, memory_peak_bytes: int | None = None,
                 oom_kills: int | None = None) -> None:
        self.cpu_time_s = cpu_time_s
        self.memory_peak_bytes = memory_peak_bytes
        self.oom_kills = oom_kills

    def __repr__(self) -> str:
        return (f"Usage(cpu_time_s={self.cpu_time_s}, memory_peak_bytes="
                f"{self.memory_peak_bytes}, oom_kills={self.oom_kills})")


def _keyed(text: str | None, key: str) -> int | None:
    """The number after ``key`` in a flat-keyed file (``oom_kill 2``)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _number(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def v1_usage(read: Callable[[str, str], str | None]) -> Usage:
    """``read(controller, file)`` gives a file's text, or None when it cannot be read."""
    nanoseconds = _number(read("cpuacct", "cpuacct.usage"))
    return Usage(None if nanoseconds is None else nanoseconds / 1e9,
                 _number(read("memory", "memory.max_usage_in_bytes")),
                 _keyed(read("memory", "memory.oom_control"), "oom_kill"))


def v2_usage(read: Callable[[str, str], str | None]) -> Usage:
    microseconds = _keyed(read("cpu", "cpu.stat"), "usage_usec")
    return Usage(None if microseconds is None else microseconds / 1e6,
                 _number(read("memory", "memory.peak")),
                 _keyed(read("memory", "memory.events"), "oom_kill"))
