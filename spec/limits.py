"""Resource limits: docker's ``--memory``, ``--memory-swap``, ``--cpus``, ``--cpu-shares``,
``--pids-limit``, ``--cpuset-cpus`` and ``--cpuset-mems`` as the runtime spec's
``linux.resources`` (``ResourceOptions``), the check of a ``linux.resources`` read from a
config.json (``check_resources``), and the names of the members pyctr does not apply
(``unapplied_resources``), for the ``spec.field_not_applied`` warning.

Docker's spellings and ranges, so that a command line that works with ``docker run`` means
the same here. Every error is a SpecError with the one line to show, naming the flag or the
field and the bad value. Imported by the CLI before it forks the init: ``os`` only.
"""

from __future__ import annotations

import os

from .model import SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value

    from .model import Spec

APPLIED_RESOURCES = (
    "memory.limit", "memory.swap", "memory.reservation", "memory.swappiness",
    "memory.disableOOMKiller", "cpu.shares", "cpu.quota", "cpu.period", "cpu.cpus",
    "cpu.mems", "pids.limit", "devices",
)
"""The members of ``linux.resources`` that pyctr applies, dotted below it."""
MIN_MEMORY = 6 << 20
"""docker's minimum ``--memory``: with less, a container is killed before it gets going."""
CPU_PERIOD = 100_000
"""Microseconds: the period ``--cpus`` writes, docker's (and the kernel's default)."""
MIN_CPU_QUOTA = 1000
"""Microseconds: the kernel refuses a CFS quota (or period) under 1 ms."""
MAX_CPU_PERIOD = 1_000_000
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144
_INT64_MAX = (1 << 63) - 1
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_LIST_EXAMPLE = "such as 0-3 or 0-1,3"


class ResourceOptions:
    """The resource part of docker's options, parsed (and so checked) when made; ``apply``
    writes them into a spec. Each keyword takes docker's spelling as typed on a command line
    (``"512m"``, ``"1.5"``, ``"-1"``), or a number for the library (bytes for the sizes).
    What was not given, or given as docker's "unset" (``--memory 0``, ``--cpu-shares 0``), is
    None and writes nothing."""

    __slots__ = ("cpu_shares", "cpus", "cpuset_cpus", "cpuset_mems", "memory",
                 "memory_swap", "pids_limit")

    def __init__(self, *, memory: str | int | None = None,
                 memory_swap: str | int | None = None, cpus: str | float | None = None,
                 cpu_shares: str | int | None = None, pids_limit: str | int | None = None,
                 cpuset_cpus: str | None = None, cpuset_mems: str | None = None) -> None:
        self.memory = None if memory is None else _memory(memory)
        """Bytes."""
        self.memory_swap = None if memory_swap is None else _memory_swap(memory_swap,
                                                                         self.memory)
        """Bytes of memory plus swap, or -1 for unlimited swap; as given (see ``resources``
        for docker's default)."""
        self.cpus = None if cpus is None else _cpus(cpus)
        self.cpu_shares = None if cpu_shares is None else _cpu_shares(cpu_shares)
        self.pids_limit = None if pids_limit is None else _pids_limit(pids_limit)
        """The most processes, or -1 for no limit."""
        self.cpuset_cpus = None if cpuset_cpus is None else _flag_list(cpuset_cpus,
                                                                       "--cpuset-cpus")
        self.cpuset_mems = None if cpuset_mems is None else _flag_list(cpuset_mems,
                                                                       "--cpuset-mems")

    @property
    def empty(self) -> bool:
        """Whether no limit was given (nothing for ``apply`` to write)."""
        return all(getattr(self, name) is None for name in self.__slots__)

    def __bool__(self) -> bool:
        return not self.empty

    def resources(self) -> dict[str, Value]:
        """The ``linux.resources`` members these options set: ``memory``, ``cpu`` and ``pids``,
        each only when one of its values was given."""
        return dict(self._groups())

    def _groups(self) -> dict[str, dict[str, Value]]:
        memory: dict[str, Value] = {}
        if self.memory is not None:
            memory["limit"] = self.memory
            # docker gives a container as much swap as memory when --memory-swap is not
            # given (memory plus swap: twice the memory), and users count on that.
            swap = self.memory_swap
            memory["swap"] = min(2 * self.memory, _INT64_MAX) if swap is None else swap
        cpu: dict[str, Value] = {}
        if self.cpus is not None:
            cpu["quota"] = round(self.cpus * CPU_PERIOD)
            cpu["period"] = CPU_PERIOD
        if self.cpu_shares is not None:
            cpu["shares"] = self.cpu_shares
        if self.cpuset_cpus is not None:
            cpu["cpus"] = self.cpuset_cpus
        if self.cpuset_mems is not None:
            cpu["mems"] = self.cpuset_mems
        groups: dict[str, dict[str, Value]] = {"memory": memory, "cpu": cpu}
        if self.pids_limit is not None:
            groups["pids"] = {"limit": self.pids_limit}
        return {name: values for name, values in groups.items() if values}

    def apply(self, spec: Spec) -> None:
        """Write these limits into ``spec.linux.resources``, keeping what is there (the
        ``devices`` rules that ``--device`` and ``--privileged`` write, and any other member);
        a value given here wins over the same one already there."""
        given = self._groups()
        if not given:
            return
        current = spec.linux.resources
        if current is not None and not isinstance(current, dict):
            raise SpecError("linux.resources must be an object")
        merged: dict[str, Value] = dict(current or {})
        for name, values in given.items():
            existing = merged.get(name)
            if existing is not None and not isinstance(existing, dict):
                raise SpecError(f"linux.resources.{name} must be an object")
            merged[name] = {**(existing or {}), **values}
        spec.linux.resources = merged


def _memory(value: str | int) -> int | None:
    size = _size(value, "--memory", "512m or 1g")
    if size == 0:
        return None  # docker's "no limit"
    if size < MIN_MEMORY:
        raise SpecError(f"--memory must be at least 6m ({MIN_MEMORY} bytes), docker's "
                        f"minimum; got {_shown(value)}")
    return size


def _memory_swap(value: str | int, memory: int | None) -> int | None:
    if value == -1 or (isinstance(value, str) and value.strip() == "-1"):
        swap = -1
    else:
        swap = _size(value, "--memory-swap", "1g, or -1 for unlimited swap")
        if swap == 0:
            return None  # docker's "unset": the default applies
    if memory is None:
        raise SpecError(f"--memory-swap {_shown(value)} needs --memory too: it is the total of "
                        f"memory and swap, so give the memory limit as well")
    if swap != -1 and swap < memory:
        raise SpecError(f"--memory-swap must be at least --memory ({memory} bytes), as it "
                        f"counts memory plus swap; got {_shown(value)} (-1 for unlimited swap)")
    return swap


def _size(value: str | int, flag: str, example: str) -> int:
    """docker's sizes: a number, maybe with a fraction, then an optional unit k, m, g or t,
    spelled alone or as kb or kib (any case); b or nothing is bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and len(value) < 40:
        size = _parse_size(value.strip().lower())
    else:
        size = -1
    if size < 0:
        raise SpecError(f"{flag} must be a size such as {example}, got {_shown(value)}")
    if size > _INT64_MAX:
        raise SpecError(f"{flag} {_shown(value)} is too large: the most is {_INT64_MAX} bytes")
    return size


def _parse_size(text: str) -> int:
    """``text`` in bytes, or -1 when it is not a size."""
    rest = text.removesuffix("b")
    binary = rest.endswith("i")
    rest = rest.removesuffix("i")
    multiplier = _SIZE_UNITS.get(rest[-1:], 1)
    if multiplier > 1:
        rest = rest[:-1].rstrip()
    elif binary:
        return -1  # "ib" with no unit before it
    if not _decimal(rest):
        return -1
    whole, _, fraction = rest.partition(".")
    size = int(whole or "0") * multiplier
    if fraction:  # docker keeps whole bytes, dropping what is left of a byte
        size += int(fraction) * multiplier // 10 ** len(fraction)
    return size


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _decimal(text: str) -> bool:
    """``12``, ``1.5`` or ``.5``: no sign, no exponent, nothing float() takes beyond that
    (``inf``, ``1e3``, ``1_0``); short enough to make no huge number."""
    whole, dot, fraction = text.partition(".")
    return (len(text) < 30 and bool(whole or fraction) and _digits(whole or "0")
            and (not dot or _digits(fraction)))


def _host_cpus() -> int | None:
    return os.cpu_count()


def _cpus(value: str | float) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _decimal(value.strip()):
        number = float(value.strip())
    if number is None:
        raise SpecError(f"--cpus must be a number of CPUs such as 0.5 or 2, got {_shown(value)}")
    host = _host_cpus()
    # Below 0.01 the quota would be under the kernel's 1 ms minimum; above the host's count
    # the limit could never bind (docker's range).
    if not (MIN_CPU_QUOTA / CPU_PERIOD <= number <= (host or 1 << 20)):
        most = f"{host} (the CPUs this host has)" if host else "the CPUs this host has"
        raise SpecError(f"--cpus must be from 0.01 to {most}, got {_shown(value)}")
    return number


def _integer(value: str | int, flag: str, meaning: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if _digits(text.removeprefix("-")) and len(text) < 20:
            return int(text)
    raise SpecError(f"{flag} must be {meaning}, got {_shown(value)}")


def _cpu_shares(value: str | int) -> int | None:
    meaning = (f"a whole number from {MIN_CPU_SHARES} to {MAX_CPU_SHARES} (0 for the "
               f"default, 1024)")
    shares = _integer(value, "--cpu-shares", meaning)
    if shares == 0:
        return None
    if not MIN_CPU_SHARES <= shares <= MAX_CPU_SHARES:
        raise SpecError(f"--cpu-shares must be {meaning}, got {_shown(value)}")
    return shares


def _pids_limit(value: str | int) -> int:
    meaning = "a whole number above 0, or -1 (or 0) for no limit"
    limit = _integer(value, "--pids-limit", meaning)
    if limit < -1 or limit > _INT64_MAX:
        raise SpecError(f"--pids-limit must be {meaning}, got {_shown(value)}")
    # An explicit "no limit" is written, not left out: it then overrides a limit already in
    # the spec, and ``pyctr spec`` shows what was asked. docker takes 0 as no limit too.
    return -1 if limit <= 0 else limit


def _flag_list(value: str, flag: str) -> str | None:
    if not isinstance(value, str):
        raise SpecError(f"{flag} must be a list {_LIST_EXAMPLE}, got {_shown(value)}")
    text = value.strip()
    if not text:
        return None  # docker's default: every CPU (or memory node) the host allows
    return _check_list(text, flag, cpus=flag == "--cpuset-cpus")


def _check_list(text: str, name: str, *, cpus: bool) -> str:
    """The kernel's list syntax (``0-3``, ``0,2``, ``0-1,3``); CPUs must exist on this host.
    Returns ``text`` stripped."""
    text = text.strip()
    highest = -1
    for part in text.split(","):
        low, dash, high = part.partition("-")
        high = high if dash else low
        if not (_digits(low) and _digits(high)) or len(low) > 6 or len(high) > 6:
            raise SpecError(f"{name} must be a list {_LIST_EXAMPLE} (numbers from 0, and "
                            f"ranges low-high, split by commas), got {_shown(text)}")
        if int(low) > int(high):
            raise SpecError(f"{name}: the range {part} runs backwards; write {high}-{low} "
                            f"(got {_shown(text)})")
        highest = max(highest, int(high))
    host = _host_cpus()
    if cpus and host and highest >= host:
        has = f"CPUs 0-{host - 1}" if host > 1 else "CPU 0"
        raise SpecError(f"{name} names CPU {highest}, but this host has {has} only; got "
                        f"{_shown(text)}")
    return text


# --- a config's linux.resources ---------------------------------------------------------------

# (group, member, low, high, other values taken, what it must be): an integer in [low, high],
# or one of the others ("no limit").
_WHOLE_FIELDS: tuple[tuple[str, str, int, int, tuple[int, ...], str], ...] = (
    ("memory", "limit", 1, _INT64_MAX, (-1,),
     "a whole number of bytes above 0, or -1 for no limit"),
    ("memory", "swap", 0, _INT64_MAX, (-1,),
     "a whole number of bytes (memory plus swap), or -1 for unlimited swap"),
    ("memory", "reservation", 0, _INT64_MAX, (-1,),
     "a whole number of bytes (0 or more), or -1 for none"),
    ("memory", "swappiness", 0, 100, (), "a whole number from 0 to 100"),
    ("cpu", "shares", MIN_CPU_SHARES, MAX_CPU_SHARES, (),
     f"a whole number from {MIN_CPU_SHARES} to {MAX_CPU_SHARES}"),
    ("cpu", "quota", MIN_CPU_QUOTA, _INT64_MAX, (-1,),
     f"a whole number of microseconds, at least {MIN_CPU_QUOTA} (the kernel's minimum), or -1 "
     f"for no limit"),
    ("cpu", "period", MIN_CPU_QUOTA, MAX_CPU_PERIOD, (),
     f"a whole number of microseconds from {MIN_CPU_QUOTA} to {MAX_CPU_PERIOD}"),
    ("pids", "limit", 1, _INT64_MAX, (0, -1),
     "a whole number above 0 (the most processes), or 0 or -1 for no limit"),
)
# APPLIED_RESOURCES split: members applied whole, and the groups applied member by member.
_APPLIED_WHOLE = frozenset(name for name in APPLIED_RESOURCES if "." not in name)
_APPLIED_GROUPS = frozenset(name.partition(".")[0] for name in APPLIED_RESOURCES
                            if "." in name)


def check_resources(resources: Value) -> None:
    """Check the members of a config's ``linux.resources`` that pyctr applies (their types,
    ranges, and swap against the limit). Others are left to ``unapplied_resources``'s
    warning, and ``devices`` to the container's cgroup. Raises SpecError naming the field."""
    if resources is None:
        return
    if not isinstance(resources, dict):
        raise SpecError(f"linux.resources must be an object, got {_shown(resources)}")
    groups: dict[str, dict[str, Value]] = {}
    for name in ("memory", "cpu", "pids"):
        group = resources.get(name)
        if group is None:
            groups[name] = {}
        elif isinstance(group, dict):
            groups[name] = group
        else:
            raise SpecError(f"linux.resources.{name} must be an object, got {_shown(group)}")
    for group, key, low, high, others, what in _WHOLE_FIELDS:
        value = groups[group].get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not (
                low <= value <= high or value in others)):
            raise SpecError(f"linux.resources.{group}.{key} must be {what}, got "
                            f"{_shown(value)}")
    memory = groups["memory"]
    disable = memory.get("disableOOMKiller")
    if disable is not None and not isinstance(disable, bool):
        raise SpecError(f"linux.resources.memory.disableOOMKiller must be true or false, got "
                        f"{_shown(disable)}")
    _check_swap(memory.get("limit"), memory.get("swap"))
    for key, cpus in (("cpus", True), ("mems", False)):
        value = groups["cpu"].get(key)
        name = f"linux.resources.cpu.{key}"
        if value is None:
            continue
        if not isinstance(value, str):
            raise SpecError(f"{name} must be a string, a list {_LIST_EXAMPLE}; got "
                            f"{_shown(value)}")
        if value.strip():  # empty is unset, as runc reads it
            _check_list(value, name, cpus=cpus)


def _check_swap(limit: Value, swap: Value) -> None:
    if swap is None:
        return
    if limit is None:
        raise SpecError(f"linux.resources.memory.swap ({swap}) needs memory.limit: swap is "
                        f"counted with memory, so give the limit too")
    if swap == -1:
        return
    if limit == -1:
        raise SpecError(f"linux.resources.memory.swap ({swap}) must be -1 when memory.limit "
                        f"is -1 (no limit): set both, or make swap -1")
    if isinstance(limit, int) and isinstance(swap, int) and swap < limit:
        raise SpecError(f"linux.resources.memory.swap ({swap}) must be at least memory.limit "
                        f"({limit}): it counts memory plus swap; -1 for unlimited swap")


def _shown(value: object) -> str:
    """``value`` for a one-line message, cut short when long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unapplied_resources(resources: Value) -> list[str]:
    """The dotted names of the members of ``linux.resources`` present but not applied
    (``linux.resources.blockIO``, ``linux.resources.memory.kernel``), sorted. A member that
    sets nothing (null, ``{}`` or ``[]``) is not present; a value that is not an object is
    named whole."""
    if resources is None:
        return []
    if not isinstance(resources, dict):
        return ["linux.resources"]
    names: list[str] = []
    for key, value in resources.items():
        if _sets_nothing(value) or key in _APPLIED_WHOLE:
            continue
        if key in _APPLIED_GROUPS and isinstance(value, dict):
            names += [f"linux.resources.{key}.{member}" for member, item in value.items()
                      if f"{key}.{member}" not in APPLIED_RESOURCES
                      and not _sets_nothing(item)]
        else:
            names.append(f"linux.resources.{key}")
    return sorted(names)


def _sets_nothing(value: Value) -> bool:
    return value is None or value == {} or value == []
