"""The devices a container may use, as rules for its cgroup.

A container may open, and mount, only the devices it is given: the runtime spec's defaults
(``/dev/null`` and friends, terminals), its ``linux.devices`` and what its
``linux.resources.devices`` allows. A node its root makes with mknod for the host's disk, in
any directory, is refused. ``device_rules`` turns a spec into the rules, as docker and runc
give them: deny everything, allow making (``m``) any character node, so CAP_MKNOD still works
though the node cannot be opened, then allow the devices above. Unlike docker, no block node
can be made at all (see ``DEFAULT_RULES``). The container's cgroup (``cgroup``) hands them to
the kernel: the v1 devices controller takes them as written, cgroup v2 as a BPF program
(``devices_bpf``). A bad ``linux.resources.devices`` entry is a SpecError naming the field.
"""

from __future__ import annotations

from pyctr.spec.model import DEVICES, SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value
    from pyctr.spec.model import Spec

ACCESS = "rwm"


class DeviceRule:
    """One rule, as cgroup v1 writes it: ``type`` "c", "b" or "a" (every device; ``major``
    and ``minor`` are then -1), ``major``/``minor`` -1 for any (``*``), ``access`` a subset
    of "rwm" (read, write, mknod), ``allow`` whether it allows or denies."""

    __slots__ = ("access", "allow", "major", "minor", "type")

    def __init__(self, type: str, major: int = -1, minor: int = -1, access: str = ACCESS,
                 allow: bool = True) -> None:
        self.type, self.major, self.minor = type, major, minor
        self.access, self.allow = access, allow

    def line(self) -> str:
        """What devices.allow or devices.deny takes: ``c 1:3 rwm``, ``c 136:* rwm``, ``a``."""
        if self.type == "a":
            return "a"
        major = "*" if self.major < 0 else str(self.major)
        minor = "*" if self.minor < 0 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeviceRule):
            return NotImplemented
        return (self.type, self.major, self.minor, self.access, self.allow) == (
            other.type, other.major, other.minor, other.access, other.allow)

    def __hash__(self) -> int:
        return hash((self.type, self.major, self.minor, self.access, self.allow))

    def __repr__(self) -> str:
        return f"DeviceRule({self.line()!r}, allow={self.allow})"


# After "deny all": make any character node (docker's rule, so CAP_MKNOD keeps working), use
# the spec's defaults. Unlike docker, no block node may be made: a mount of a disk the host has
# mounted already reuses its superblock without opening the device, so the cgroup's check never
# runs, and a container given CAP_SYS_ADMIN could mount the host's root through such a node.
DEFAULT_RULES = (
    DeviceRule("a", allow=False),
    DeviceRule("c", access="m"),
    *(DeviceRule("c", major, minor) for _, major, minor in DEVICES),
    DeviceRule("c", 5, 1),  # /dev/console
    DeviceRule("c", 5, 2),  # /dev/ptmx
    DeviceRule("c", 136),  # /dev/pts/*
)


def device_rules(spec: Spec) -> list[DeviceRule]:
    """The rules for ``spec``, in runc's order: deny everything, then
    ``linux.resources.devices`` in order, then the default allowed devices (which a
    resources rule cannot take away, as with runc), then each ``linux.devices`` entry (rwm;
    fifos need none) that no resources rule names exactly: such a rule decides its access
    (docker's ``--device HOST:CTR:r``). Raises SpecError naming the field."""
    given = _resource_rules(spec.linux.resources)
    rules = [DEFAULT_RULES[0], *given, *DEFAULT_RULES[1:]]
    named = {(rule.type, rule.major, rule.minor) for rule in given}
    for device in spec.linux.devices:
        if device.type != "p":
            kind = "b" if device.type == "b" else "c"  # "u" is an unbuffered char device
            if (kind, device.major, device.minor) not in named:
                rules.append(DeviceRule(kind, device.major, device.minor))
    return rules


def _resource_rules(resources: Value) -> list[DeviceRule]:
    if resources is None:
        return []
    if not isinstance(resources, dict):
        raise SpecError("linux.resources must be an object")
    entries = resources.get("devices")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise SpecError("linux.resources.devices must be a list")
    return [_resource_rule(entry, f"linux.resources.devices[{index}]")
            for index, entry in enumerate(entries)]


def _resource_rule(entry: Value, name: str) -> DeviceRule:
    """One OCI entry. As runc reads them: no ``type`` is "a", no (or null) ``major`` or
    ``minor`` is any, no (or empty) ``access`` is "rwm"; ``allow`` is required."""
    if not isinstance(entry, dict):
        raise SpecError(f"{name} must be an object")
    for key in entry:
        if key not in ("allow", "type", "major", "minor", "access"):
            raise SpecError(f"{name}.{key}: pyctr does not implement this field; remove it "
                            f"from the config")
    allow = entry.get("allow")
    if not isinstance(allow, bool):
        raise SpecError(f"{name}.allow must be true or false")
    kind = entry.get("type", "a")
    if kind is None:
        kind = "a"
    if kind not in ("a", "c", "b"):
        raise SpecError(f"{name}.type must be a, c or b, got {kind!r}")
    numbers = []
    for key in ("major", "minor"):
        value = entry.get(key)
        if value is None:
            value = -1
        elif not isinstance(value, int) or isinstance(value, bool) or not (
                0 <= value <= 0xFFFFFFFF):
            raise SpecError(f"{name}.{key} must be a whole number from 0 to 4294967295, or "
                            f"left out for any, got {value!r}")
        numbers.append(value)
    access = entry.get("access")
    if access is None or access == "":
        access = ACCESS
    if not isinstance(access, str) or not set(access) <= set(ACCESS):
        raise SpecError(f"{name}.access must be letters of rwm (read, write, mknod), got "
                        f"{access!r}")
    access = "".join(letter for letter in ACCESS if letter in access)
    if kind == "a" and (numbers != [-1, -1] or access != ACCESS):
        # v1 takes "a" as every device and every access, whatever follows it.
        raise SpecError(f"{name}: a rule for every device (type a, or no type) cannot "
                        f"name a major, a minor or an access other than rwm; give a type")
    return DeviceRule(kind, numbers[0], numbers[1], access, allow)
