"""``--network bridge`` and ``--network host``: a container's network namespace, its veth on
pyctr's bridge, NAT to the uplink, and the /etc files the container sees.

Why the supervisor makes the network namespace, not the init: the namespace must exist
before the init starts so that its end of the veth pair can be moved into it and configured
from the host (podman and CNI make it the same way before they call the OCI runtime). The
calling thread ``unshare``s a new one, opens ``/proc/thread-self/ns/net``, makes a netlink
socket inside it (a netlink socket talks to the namespace it was made in, wherever the thread
goes afterwards) and ``setns``es back, checked by comparing the namespace's inode before and
after. Only the calling thread moves: the caller may be a trio worker thread. The descriptor
is held by the ``Attachment``; the init joins it through ``netns_path``.

Addresses are leased with files: ``STATE_DIR/<bridge>/leases/<ip>``, held with an flock for
the container's life. Allocation walks the subnet and takes the first file nobody holds; the
flock decides between concurrent supervisors, threads or processes, and the inode check
after locking catches a file a sweeper unlinked in between. The container's /etc files live
next to the lease, in ``<ip>.d/``, and every name made on the host (the veth ``pv<hex of
the address>``, the MAC ``02:50:<address>``) is derived from the address, never from the
container's name, so whoever holds the lease can find and remove what an earlier holder left.

What is left after a supervisor is SIGKILLed: its namespace descriptor closes with it, its
init dies (parent-death signal), the namespace goes and the kernel deletes the veth pair.
The lease file and the ``.d`` directory stay; nobody holds their flock, so ``sweep_stale``
(run before every allocation, and by ``cleanup``) removes them, and deletes the host's veth
if something still kept the namespace alive. The bridge and the nft table are kept for the
next container; ``cleanup`` removes them when no lease is held. ``host_files`` (``--network
host``) claims its copies of the host's files the same way, in ``STATE_DIR/host``.

The bridge is made under an exclusive flock on ``STATE_DIR/<bridge>/lock``, which every
attach holds while it allocates and plugs its veth in, so that ``cleanup`` (which takes it
too) never deletes a bridge a container is joining. A bridge pyctr made carries the alias
``pyctr <subnet>``; ``cleanup`` deletes no other. NAT is an nft table of pyctr's own per
bridge (``table ip pyctr_<bridge>``); no other table is touched.

Errors are PyctrError with one line: ``network.failed`` (the kernel refused something),
``network.exhausted`` (no free address), ``network.subnet_conflict`` (the subnet overlaps a
route of the host), ``network.unavailable`` (no privilege or no pyroute2), ``config.invalid``
(PYCTR_BRIDGE or PYCTR_BRIDGE_SUBNET). pyroute2 (all netlink) is imported on first use: it
takes a tenth of a second.
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import ipaddress
import os
import socket
import stat

from pyctr.linux.syscalls import CLONE_NEWNET, setns, unshare

from .errors import PyctrError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_DEFAULT_SUBNET = "10.222.0.0/16"
BRIDGE = os.environ.get("PYCTR_BRIDGE") or "pyctr0"
"""The bridge every ``--network bridge`` container is plugged into."""
_SUBNET_TEXT = os.environ.get("PYCTR_BRIDGE_SUBNET") or _DEFAULT_SUBNET
try:
    SUBNET = ipaddress.IPv4Network(_SUBNET_TEXT, strict=False)
    """The bridge's subnet; its first host address is the gateway, on the bridge."""
    _SUBNET_PROBLEM = ""
except ValueError as exc:
    # Reported by attach_bridge as a one-line error, not as a traceback at import.
    SUBNET = ipaddress.IPv4Network(_DEFAULT_SUBNET)
    _SUBNET_PROBLEM = f"PYCTR_BRIDGE_SUBNET={_SUBNET_TEXT!r} is not an IPv4 subnet ({exc})"
STATE_DIR = "/run/pyctr/network"
"""Leases and lock per bridge in ``STATE_DIR/<bridge>/``, host-mode claims in ``host/``."""
HOST_HOSTS = "/etc/hosts"
HOST_RESOLV_CONF = "/etc/resolv.conf"
RESOLVED_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
"""systemd-resolved's list of the real upstream servers; /etc/resolv.conf then names its
stub at 127.0.0.53, which a container in its own namespace cannot reach."""
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
"""What a container gets when the host has no nameserver it can reach (docker's choice)."""
NFT = "nft"
"""nftables' command, looked up on PATH and in /usr/sbin and /sbin."""
HOST_FILE_LIMIT = 64 * 1024
"""How much of a host file is read: they are data, and a container needs no more."""

_ALIAS_PREFIX = "pyctr "
_MAC_PREFIX = "02:50"  # locally administered, unicast
_NS_PATH = "/proc/thread-self/ns/net"
_OPEN_NS = os.O_RDONLY | os.O_CLOEXEC
_CLAIM_FLAGS = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class _Claimed:
    """Files for one container held by a claim: a file locked with flock for as long as the
    container lives, with the files to bind-mount in ``<claim>.d/``. A claim nobody holds is
    swept. ``files`` maps each container path to its file on the host."""

    __slots__ = ("_claim_fd", "_claim_path", "files", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.files: dict[str, str] = {}
        self._claim_fd = -1
        self._claim_path = ""

    def close(self) -> None:
        """Remove the files and give up the claim. Idempotent."""
        self.files = {}
        if self._claim_fd >= 0:
            _release(self._claim_path, self._claim_fd)
            self._claim_fd = -1

    def _write_files(self, contents: dict[str, str]) -> None:
        """Write ``contents`` (file name: text) in a fresh ``<claim>.d``, readable by the
        container's users whatever its uid (0755, files 0644)."""
        directory = self._claim_path + ".d"
        _remove_tree(directory)  # an earlier holder's
        os.mkdir(directory, 0o755)
        os.chmod(directory, 0o755)  # whatever the umask
        for file_name, text in contents.items():
            path = os.path.join(directory, file_name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
            try:
                os.fchmod(fd, 0o644)
                data = text.encode()
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
        self.files = {f"/etc/{file_name}": os.path.join(directory, file_name)
                      for file_name in contents}


class HostFiles(_Claimed):
    """``--network host``: the container's /etc/hosts and /etc/resolv.conf are copies of
    the host's, its /etc/hostname is its own."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"HostFiles({self.name!r}, {self._claim_path!r})"


class Attachment(_Claimed):
    """A container's place on the bridge: its network namespace (``netns_path``, valid until
    ``close``), its address, its veth, its leased address and its /etc files. ``nat`` says
    whether its traffic is masqueraded to the host's uplink; when not, ``nat_reason`` says
    why (for the caller's warning)."""

    __slots__ = ("_netns_fd", "_veth_made", "address", "gateway", "host_veth", "nat",
                 "nat_reason", "netns_path", "prefix")

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gateway = SUBNET[1]
        self.prefix = SUBNET.prefixlen
        self.address = SUBNET.network_address  # until leased
        self.host_veth = ""
        self.netns_path = ""
        self.nat = False
        self.nat_reason = ""
        self._netns_fd = -1
        self._veth_made = False

    def close(self) -> None:
        """Delete the host's veth (and so its peer), close the namespace, remove the files
        and release the address. Idempotent; something already gone is no error. Raises
        PyctrError when the kernel refuses to delete the veth, after doing the rest."""
        problem = None
        if self._veth_made:
            try:
                _with_host_netlink(lambda ipr: _delete_link(ipr, self.host_veth))
            except PyctrError as exc:
                problem = exc
            except OSError as exc:  # no netlink socket to be had
                problem = _failed(f"delete the veth {self.host_veth}", exc)
            self._veth_made = False
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1
        super().close()
        if problem is not None:
            raise problem

    def __repr__(self) -> str:
        return (f"Attachment({self.name!r}, {self.address}/{self.prefix} via {self.gateway}, "
                f"{self.host_veth!r} on {BRIDGE!r}, nat={self.nat})")


# -- Entry points ---------------------------------------------------------------------------

def attach_bridge(name: str, hostname: str) -> Attachment:
    """Make container ``name``'s network namespace and plug it into the bridge: a veth pair
    (``eth0`` inside, with a leased address, the MAC derived from it and a default route via
    the gateway), ``lo`` up, NAT when the host has an uplink, and its /etc/hosts (naming
    ``hostname``), /etc/hostname and /etc/resolv.conf. The calling thread is back in its own
    network namespace when this returns or raises. Raises PyctrError, having removed what it
    made."""
    _check_config()
    sweep_stale()
    IPRoute, _ = _pyroute2()
    attachment = Attachment(name)
    ns_route = host_route = None
    try:
        attachment._netns_fd, ns_socket = _new_netns()
        attachment.netns_path = f"/proc/{os.getpid()}/fd/{attachment._netns_fd}"
        try:
            ns_route = IPRoute(fileno=ns_socket.detach(), groups=0)
        finally:
            ns_socket.close()  # only when IPRoute did not take it
        host_route = IPRoute(groups=0)
        lock = _lock_bridge()
        try:
            bridge_index = _ensure_bridge(host_route)
            attachment.nat, attachment.nat_reason = _ensure_nat(host_route)
            _take_lease(attachment)
            _plug_veth(host_route, attachment, bridge_index)
        finally:
            os.close(lock)
        _configure_inside(ns_route, attachment)
        attachment._write_files({
            "hostname": f"{hostname}\n",
            "hosts": ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                      f"{attachment.address}\t{hostname}\n"),
            "resolv.conf": bridge_resolv_conf(),
        })
    except BaseException as exc:
        try:
            attachment.close()
        except PyctrError:
            pass  # the error that brought us here is the one to report
        if isinstance(exc, (OSError, _netlink_error())):
            raise _failed("set up the container's network", exc) from None
        raise
    finally:
        for route in (ns_route, host_route):
            if route is not None:
                route.close()
    return attachment


def host_files(name: str, hostname: str) -> HostFiles:
    """For ``--network host``: copies of the host's /etc/hosts and /etc/resolv.conf (taken
    now, so that the container sees a consistent pair) and an /etc/hostname naming
    ``hostname``, in a directory of the container's own. Raises PyctrError."""
    sweep_stale()
    files = HostFiles(name)
    try:
        directory = _host_claims()
        while files._claim_fd < 0:
            path = os.path.join(directory, os.urandom(8).hex())
            fd = _claim(path, exclusive=True)
            if fd is not None:
                files._claim_fd, files._claim_path = fd, path
        _record(files._claim_fd, "host", name)
        hosts = _read_host_file(HOST_HOSTS)
        files._write_files({
            "hostname": f"{hostname}\n",
            "hosts": hosts if hosts is not None else
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            "resolv.conf": _read_host_file(HOST_RESOLV_CONF) or "",
        })
    except BaseException as exc:
        files.close()
        if isinstance(exc, OSError):
            raise _failed("copy the host's /etc files for the container", exc) from None
        raise
    return files


def sweep_stale() -> list[str]:
    """Remove what killed supervisors left: leases and host-file claims nobody holds, their
    files, and a lease's host veth if something kept it alive. Returns what was removed, one
    description each. Never raises for a single entry."""
    removed: list[str] = []
    for directory, kind in ((_leases(), "lease"), (_host_claims(), "host files")):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        # A ".d" without its claim file is swept too: the claim is made (and locked) to
        # keep a new holder from writing there while it goes.
        for entry in sorted({entry.removesuffix(".d") for entry in entries}):
            try:
                description = _sweep_one(directory, entry, kind)
            except (OSError, PyctrError):
                continue
            if description:
                removed.append(description)
    return removed


def cleanup() -> list[str]:
    """``sweep_stale``, then, when no lease on BRIDGE is held, delete the bridge (when pyctr
    made it and nothing else is plugged into it), pyctr's nft table for it and the bridge's
    state directory. Returns descriptions of what was removed. Raises PyctrError."""
    _check_config()
    lock = _lock_bridge()
    try:
        removed = sweep_stale()
        if _held_leases():
            return removed
        removed += _with_host_netlink(_delete_bridge)
        nft = _nft_path()
        if nft is not None and _nft(nft, "list", "table", "ip", _table())[0]:
            ok, problem = _nft(nft, "delete", "table", "ip", _table())
            if not ok:
                raise PyctrError(f"cannot delete the nft table ip {_table()}: {problem}",
                                 error="network.failed")
            removed.append(f"nft table ip {_table()}")
        try:
            os.rmdir(_leases())
        except OSError:
            pass  # not empty: a lease file nobody holds, made meanwhile
        # Unlinked while held: a supervisor waiting for it finds it is not the file at the
        # path any more and makes a new one (_lock_bridge).
        os.unlink(os.path.join(_bridge_dir(), "lock"))
        try:
            os.rmdir(_bridge_dir())
        except OSError:
            pass
    finally:
        os.close(lock)
    for path in (_host_claims(), STATE_DIR):
        try:
            os.rmdir(path)  # only when empty; a new claim makes them again
        except OSError:
            pass
    return removed


def bridge_resolv_conf() -> str:
    """The /etc/resolv.conf of a container on the bridge: the host's (systemd-resolved's
    upstream list when it runs) without the nameservers the container cannot reach, loopback
    ones (the container's loopback is its own) and IPv6 ones (the bridge carries IPv4 only),
    or docker's fallback when none is left. Search and options lines are kept."""
    text = _read_host_file(RESOLVED_RESOLV_CONF)
    if text is None:
        text = _read_host_file(HOST_RESOLV_CONF) or ""
    lines, nameservers = [], 0
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "nameserver":
            if len(fields) < 2 or not _reachable(fields[1]):
                continue
            nameservers += 1
        lines.append(line)
    if not nameservers:
        lines += [f"nameserver {server}" for server in FALLBACK_NAMESERVERS]
    return "\n".join(lines) + "\n"


# -- The namespace --------------------------------------------------------------------------

def _new_netns() -> tuple[int, socket.socket]:
    """A new network namespace's descriptor and a netlink socket in it; the calling thread
    is back where it was. Raises PyctrError."""
    home = os.open(_NS_PATH, _OPEN_NS)
    try:
        home_id = _ns_id(os.fstat(home))
        try:
            unshare(CLONE_NEWNET)
        except OSError as exc:
            raise _failed("make the container's network namespace", exc,
                          "--network bridge needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)",
                          error="network.unavailable"
                          if exc.errno == errno_codes.EPERM else "network.failed") from None
        netns_fd, route_socket, problem = -1, None, None
        try:
            netns_fd = os.open(_NS_PATH, _OPEN_NS)
            route_socket = _route_socket()
        except BaseException as exc:
            problem = exc
        # Whatever happened in there, even KeyboardInterrupt: a thread left in the
        # container's namespace would make every later socket of it in there.
        back = _return_home(home, home_id)
        if back is None and problem is None and route_socket is not None:
            return netns_fd, route_socket
        if route_socket is not None:
            route_socket.close()
        if netns_fd >= 0:
            os.close(netns_fd)
        if back is not None:
            raise back  # the worse news
        if isinstance(problem, OSError):
            raise _failed("open the container's network namespace", problem) from None
        assert problem is not None
        raise problem
    finally:
        os.close(home)


def _route_socket() -> socket.socket:
    # Bound to the calling thread's namespace for its life, wherever the thread goes next.
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)


def _return_home(home: int, home_id: tuple[int, int]) -> PyctrError | None:
    """Move the thread back to the namespace ``home``; the error to raise when it did not
    get there."""
    reason = ""
    try:
        setns(home, CLONE_NEWNET)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    try:
        if not reason and _ns_id(os.stat(_NS_PATH)) != home_id:
            reason = "it is in another namespace after setns"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    if not reason:
        return None
    return PyctrError(f"cannot return this thread to its own network namespace ({reason}); "
                      f"it is stuck in the container's: the supervisor must exit",
                      error="network.failed")


def _ns_id(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _configure_inside(ns_route: Any, attachment: Attachment) -> None:
    """In the container's namespace: ``eth0`` addressed and up, ``lo`` up, the default
    route via the gateway."""
    try:
        eth0 = ns_route.link("get", ifname="eth0")[0]["index"]
        ns_route.addr("add", index=eth0, address=str(attachment.address),
                      prefixlen=attachment.prefix)
        ns_route.link("set", index=eth0, state="up")
        ns_route.link("set", index=ns_route.link("get", ifname="lo")[0]["index"], state="up")
        ns_route.route("add", dst="0.0.0.0/0", gateway=str(attachment.gateway))
    except _netlink_error() as exc:
        raise _failed(f"configure eth0 ({attachment.address}/{attachment.prefix}) in the "
                      f"container's network namespace", exc) from None


# -- The host's side ------------------------------------------------------------------------

def _ensure_bridge(host_route: Any) -> int:
    """The bridge's index, made and addressed when missing (under the bridge lock)."""
    gateway = str(SUBNET[1])
    try:
        try:
            link = host_route.link("get", ifname=BRIDGE)[0]
        except _netlink_error() as exc:
            if exc.code != errno_codes.ENODEV:
                raise
            link = None
        if link is None:
            _refuse_conflicts(host_route)
            host_route.link("add", ifname=BRIDGE, kind="bridge", address=_mac(SUBNET[1]))
            link = host_route.link("get", ifname=BRIDGE)[0]
            # Marks the bridge as pyctr's: cleanup() deletes no other.
            host_route.link("set", index=link["index"], ifalias=f"{_ALIAS_PREFIX}{SUBNET}")
        elif link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge":
            raise PyctrError(f"the interface {BRIDGE} exists and is not a bridge; set "
                             f"PYCTR_BRIDGE to another name", error="network.failed")
        index: int = link["index"]
        present = {(address.get("address"), address["prefixlen"]) for address in
                   host_route.addr("dump", index=index, family=socket.AF_INET)}
        if (gateway, SUBNET.prefixlen) not in present:
            try:
                host_route.addr("add", index=index, address=gateway,
                                prefixlen=SUBNET.prefixlen)
            except _netlink_error() as exc:
                if exc.code != errno_codes.EEXIST:
                    raise
        if not link["flags"] & 1:  # IFF_UP
            host_route.link("set", index=index, state="up")
        return index
    except _netlink_error() as exc:
        raise _failed(f"set up the bridge {BRIDGE} ({gateway}/{SUBNET.prefixlen})", exc,
                      "the kernel needs bridge support (CONFIG_BRIDGE)"
                      if exc.code == errno_codes.EOPNOTSUPP else "") from None


def _refuse_conflicts(host_route: Any) -> None:
    """Raise when SUBNET overlaps a route of the host's main table (not the default one):
    the bridge would take that network's traffic, or lose its own."""
    for route in _main_routes(host_route):
        if route["dst_len"] == 0:
            continue
        network = ipaddress.IPv4Network(f"{route.get('dst')}/{route['dst_len']}", strict=False)
        if not network.overlaps(SUBNET):
            continue
        where = "a multipath route"
        oif = route.get("oif")
        if oif is not None:
            try:
                where = host_route.link("get", index=oif)[0].get("ifname") or f"#{oif}"
            except _netlink_error():
                where = f"interface #{oif}"
        raise PyctrError(f"the bridge subnet {SUBNET} overlaps the host's route to {network} "
                         f"on {where}; set PYCTR_BRIDGE_SUBNET to a free subnet (e.g. "
                         f"10.223.0.0/16)", error="network.subnet_conflict")


def _main_routes(host_route: Any) -> list[Any]:
    """The host's IPv4 routes through an interface, in its main table: blackhole and
    unreachable routes take no traffic anywhere."""
    return [route for route in host_route.route("dump", family=socket.AF_INET)
            if route.get("table") == 254 and route["type"] == 1]  # RTN_UNICAST


def _plug_veth(host_route: Any, attachment: Attachment, bridge_index: int) -> None:
    """The veth pair: the host's end in the bridge and up, ``eth0`` (with the address's MAC)
    made straight in the container's namespace."""
    attachment.host_veth = _veth_name(attachment.address)
    spec = {"ifname": attachment.host_veth, "kind": "veth", "master": bridge_index,
            "state": "up", "peer": {"ifname": "eth0", "net_ns_fd": attachment._netns_fd,
                                    "address": _mac(attachment.address)}}
    try:
        try:
            host_route.link("add", **spec)
        except _netlink_error() as exc:
            # An earlier holder's, its namespace kept alive by something: the lease is ours.
            if exc.code != errno_codes.EEXIST or not _delete_link(host_route,
                                                                  attachment.host_veth):
                raise
            host_route.link("add", **spec)
        attachment._veth_made = True
    except _netlink_error() as exc:
        raise _failed(f"make the veth pair {attachment.host_veth} on the bridge {BRIDGE}",
                      exc) from None


def _delete_link(host_route: Any, name: str) -> bool:
    """Delete the veth ``name``; False when there is none (or it is not a veth). Raises
    PyctrError."""
    try:
        link = host_route.link("get", ifname=name)[0]
        if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "veth":
            return False
        host_route.link("del", index=link["index"])
    except _netlink_error() as exc:
        if exc.code == errno_codes.ENODEV:
            return False
        raise _failed(f"delete the veth {name}", exc) from None
    return True


def _delete_bridge(host_route: Any) -> list[str]:
    try:
        link = host_route.link("get", ifname=BRIDGE)[0]
    except _netlink_error():
        return []
    if not (link.get("ifalias") or "").startswith(_ALIAS_PREFIX):
        return []  # not made by pyctr
    index = link["index"]
    if any(port.get("master") == index for port in host_route.link("dump")):
        return []  # someone else's interface is plugged in
    try:
        host_route.link("del", index=index)
    except _netlink_error() as exc:
        if exc.code != errno_codes.ENODEV:
            raise _failed(f"delete the bridge {BRIDGE}", exc) from None
    return [f"bridge {BRIDGE}"]


def _with_host_netlink(action: Any) -> Any:
    """``action(IPRoute)`` with a netlink socket in the calling thread's namespace."""
    IPRoute, _ = _pyroute2()
    route = IPRoute(groups=0)
    try:
        return action(route)
    finally:
        route.close()


# -- NAT ------------------------------------------------------------------------------------

def _ensure_nat(host_route: Any) -> tuple[bool, str]:
    """Masquerading to the uplink, when there is one: forwarding on and pyctr's nft table.
    Whether it is in place, and why not (under the bridge lock)."""
    try:
        default = any(route["dst_len"] == 0 for route in _main_routes(host_route))
    except _netlink_error() as exc:
        return False, f"cannot read the host's routes: {exc}"
    if not default:
        return False, "the host has no default route"
    nft = _nft_path()
    if nft is None:
        return False, f"{NFT} (nftables) is not installed"
    table = _table()
    if not _nft(nft, "list", "table", "ip", table)[0]:
        ok, problem = _nft(nft, "-f", "-", script=_nat_rules(table))
        if not ok:
            return False, f"nft could not make the table ip {table}: {problem}"
    try:
        with open("/proc/sys/net/ipv4/ip_forward", "r+") as forward:
            if forward.read().strip() != "1":
                forward.seek(0)
                forward.write("1\n")
    except OSError as exc:
        return False, f"cannot turn on IPv4 forwarding: {exc.strerror or exc}"
    return True, ""


def _nat_rules(table: str) -> str:
    return (f"table ip {table} {{\n"
            f"\tchain postrouting {{\n"
            f"\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            f"\t\tip saddr {SUBNET} oifname != \"{BRIDGE}\" masquerade\n"
            f"\t}}\n"
            f"\tchain forward {{\n"
            f"\t\ttype filter hook forward priority filter; policy accept;\n"
            f"\t\tiifname \"{BRIDGE}\" accept\n"
            f"\t\toifname \"{BRIDGE}\" ct state established,related accept\n"
            f"\t}}\n"
            f"}}\n")


def _table() -> str:
    return "pyctr_" + "".join(c if c.isascii() and c.isalnum() else "_" for c in BRIDGE)


def _nft_path() -> str | None:
    if "/" in NFT:
        return NFT if os.access(NFT, os.X_OK) else None
    for directory in [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/sbin"]:
        path = os.path.join(directory or ".", NFT)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _nft(nft: str, *args: str, script: str | None = None) -> tuple[bool, str]:
    """Run nft; whether it succeeded, and the first line it complained with."""
    import subprocess

    try:
        done = subprocess.run([nft, *args], input=script, capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    problem = next((line for line in done.stderr.splitlines() if line.strip()), "")
    return done.returncode == 0, problem or f"exit status {done.returncode}"


# -- Leases and claims ----------------------------------------------------------------------

def _take_lease(attachment: Attachment) -> None:
    """Lease the first free address after the gateway (under the bridge lock, so that
    cleanup sees every lease). Raises PyctrError (``network.exhausted``)."""
    directory = _leases()
    try:
        taken = set(os.listdir(directory))
    except FileNotFoundError:
        taken = set()
    first, last = int(SUBNET[1]) + 1, int(SUBNET.broadcast_address) - 1
    for number in range(first, last + 1):
        text = socket.inet_ntoa(number.to_bytes(4, "big"))
        if text in taken:
            continue
        fd = _claim(os.path.join(directory, text))
        if fd is None:
            continue
        attachment._claim_fd, attachment._claim_path = fd, os.path.join(directory, text)
        attachment.address = ipaddress.IPv4Address(number)
        _record(fd, _veth_name(attachment.address), attachment.name)
        return
    raise PyctrError(f"no free address left on the bridge {BRIDGE} ({SUBNET}: {len(taken)} "
                     f"leases); stop a container or set PYCTR_BRIDGE_SUBNET to a larger subnet "
                     f"(and PYCTR_BRIDGE to a new bridge)", error="network.exhausted")


def _claim(path: str, *, create: bool = True, exclusive: bool = False) -> int | None:
    """Lock the claim file ``path`` (made when missing, with its directory) and return its
    descriptor, or None when someone holds it (or, without ``create``, it is gone; with
    ``exclusive``, it exists)."""
    flags = _CLAIM_FLAGS | (os.O_CREAT if create else 0) | (os.O_EXCL if exclusive else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if not create:
                return None
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            continue
        except FileExistsError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # A sweeper may have unlinked the file between our open and our lock: that file
        # is nobody's claim any more.
        if _is_at(fd, path):
            return fd
        os.close(fd)
        if not create or exclusive:
            return None


def _is_at(fd: int, path: str) -> bool:
    try:
        return _ns_id(os.stat(path, follow_symlinks=False)) == _ns_id(os.fstat(fd))
    except FileNotFoundError:
        return False


def _record(fd: int, what: str, name: str) -> None:
    """What a claim is for, for whoever finds it: the veth (or "host"), then the name."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{what}\n{name}\n".encode(errors="replace"), 0)


def _release(path: str, fd: int) -> None:
    """Remove a held claim's files, then the claim, then unlock it: the files go first so
    that a new holder of the path never finds an old one's."""
    try:
        _remove_tree(path + ".d")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    finally:
        os.close(fd)


def _sweep_one(directory: str, entry: str, kind: str) -> str:
    """Sweep the claim ``entry`` when nobody holds it; what was removed ("" for nothing)."""
    path = os.path.join(directory, entry)
    fd = _claim(path)
    if fd is None:
        return ""  # its supervisor is alive
    deleted = ""
    try:
        record = os.pread(fd, 4096, 0).decode(errors="replace")
        if kind == "lease":
            address = ipaddress.IPv4Address(entry)
            if address in SUBNET:
                veth = _veth_name(address)
                if _link_exists(veth) and _with_host_netlink(
                        lambda ipr: _delete_link(ipr, veth)):
                    deleted = f", veth {veth} deleted"
        had_files = os.path.isdir(path + ".d")
    except BaseException:
        os.close(fd)
        raise
    _release(path, fd)
    if not record and not had_files and not deleted:
        return ""  # made by us just now, or by someone who let it go meanwhile
    owner = record.partition("\n")[2].rstrip("\n")
    return f"stale {kind} {entry}" + (f" of container {owner!r}" if owner else "") + deleted


def _held_leases() -> list[str]:
    try:
        entries = os.listdir(_leases())
    except FileNotFoundError:
        return []
    held = []
    for entry in entries:
        if entry.endswith(".d"):
            continue
        try:
            fd = os.open(os.path.join(_leases(), entry), _CLAIM_FLAGS)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(entry)
        finally:
            os.close(fd)
    return held


def _lock_bridge() -> int:
    """Take the bridge's lock (blocking) and return its descriptor."""
    path = os.path.join(_bridge_dir(), "lock")
    while True:
        try:
            fd = os.open(path, _CLAIM_FLAGS | os.O_CREAT, 0o600)
        except FileNotFoundError:
            os.makedirs(_bridge_dir(), 0o755, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _is_at(fd, path):  # cleanup() unlinks it while holding it
            return fd
        os.close(fd)


def _bridge_dir() -> str:
    return os.path.join(STATE_DIR, BRIDGE)


def _leases() -> str:
    return os.path.join(STATE_DIR, BRIDGE, "leases")


def _host_claims() -> str:
    return os.path.join(STATE_DIR, "host")


def _remove_tree(path: str) -> None:
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        return
    for entry in entries:
        child = os.path.join(path, entry)
        try:
            os.unlink(child)
        except IsADirectoryError:
            _remove_tree(child)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


# -- Small pieces ---------------------------------------------------------------------------

def _check_config() -> None:
    if _SUBNET_PROBLEM:
        raise PyctrError(f"{_SUBNET_PROBLEM}; use a form such as 10.222.0.0/16",
                         error="config.invalid")
    if SUBNET.prefixlen > 30:
        raise PyctrError(f"PYCTR_BRIDGE_SUBNET={SUBNET} holds no address for a container "
                         f"besides the gateway; use a subnet of /30 or larger",
                         error="config.invalid")
    if not 0 < len(BRIDGE) <= 15 or not set(BRIDGE) <= _NAME_CHARACTERS:
        raise PyctrError(f"PYCTR_BRIDGE={BRIDGE!r} cannot be an interface name; use up to 15 "
                         f"letters, digits, '_', '.' and '-'", error="config.invalid")


def _veth_name(address: ipaddress.IPv4Address) -> str:
    return f"pv{int(address):08x}"


def _mac(address: ipaddress.IPv4Address) -> str:
    return _MAC_PREFIX + "".join(f":{byte:02x}" for byte in address.packed)


def _link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _reachable(nameserver: str) -> bool:
    try:
        address = ipaddress.ip_address(nameserver.partition("%")[0])
    except ValueError:
        return True  # not ours to judge; the resolver skips what it cannot parse
    return address.version == 4 and not address.is_loopback


def _read_host_file(path: str) -> str | None:
    """The start of a host file (HOST_FILE_LIMIT, cut at a line's end), or None when there
    is no regular file there."""
    try:
        # O_NONBLOCK: a FIFO put there does not hang us.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, HOST_FILE_LIMIT + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > HOST_FILE_LIMIT:
        data = data[:data.rfind(b"\n", 0, HOST_FILE_LIMIT) + 1]
    return data.decode(errors="replace")


def _pyroute2() -> tuple[Any, type[Exception]]:
    try:
        from pyroute2 import IPRoute  # type: ignore[import-untyped]
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]
    except ImportError as exc:
        raise PyctrError(f"--network bridge needs pyroute2, which cannot be imported ({exc}); "
                         f"install it (pip install pyroute2)",
                         error="network.unavailable") from None
    return IPRoute, NetlinkError


def _netlink_error() -> Any:
    """pyroute2's NetlinkError, for ``except`` (it has ``.code``, an errno)."""
    return _pyroute2()[1]


def _failed(what: str, exc: BaseException, advice: str = "", *,
            error: str = "network.failed") -> PyctrError:
    if isinstance(exc, OSError):
        reason = exc.strerror or os.strerror(exc.errno or 0)
    else:  # NetlinkError: (code, message)
        code = getattr(exc, "code", 0)
        reason = os.strerror(code) if code else str(exc)
    return PyctrError(f"cannot {what}: {reason}{'; ' + advice if advice else ''}",
                      error=error)
