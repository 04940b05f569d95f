"""A container's network as its spec sees it: ``--network none|host|bridge`` and
``--publish``, between the options (``ContainerConfig``) and the pieces that do the work
(``network``: the bridge, leases and namespace; ``ports``: the published ports' proxy).

``NetworkOptions`` checks what was asked for before anything runs and shapes the spec (no
network namespace for ``host``); ``open_network`` makes what the container needs when it
starts (the ports bound first, so a taken one fails before anything else exists), and points
the spec at it: the network namespace the supervisor made, and ``/etc/hosts``,
``/etc/hostname`` and ``/etc/resolv.conf`` bind-mounted from files of the container's own,
never written into the rootfs. ``ContainerNetwork.close`` undoes all of it.
"""

from __future__ import annotations

import os

from pyctr.spec.model import Mount

from .errors import PyctrError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.spec.model import Spec

    from .network import Attachment, HostFiles
    from .ports import Listener, PublishedPort

MODES = ("none", "host", "bridge")
# What the container gets of /etc/hosts and friends: bound, not copied, and for the
# container's own (nosuid, nodev, noexec: they are data).
_FILE_OPTIONS = ["rbind", "nosuid", "nodev", "noexec"]


class NetworkOptions:
    """``network`` (None: the spec decides, which for docker's options means ``none``) and
    the ``--publish`` values, parsed and checked. Raises UsageError."""

    __slots__ = ("mode", "published")

    def __init__(self, mode: str | None, publish: list[str] | tuple[str, ...] = ()) -> None:
        if mode is not None and mode not in MODES:
            raise UsageError(f"--network must be none, host or bridge, got {mode!r}")
        self.mode = mode
        self.published: list[PublishedPort] = []
        if publish:
            from .ports import parse_publish

            self.published = [parse_publish(text) for text in publish]
            if mode != "bridge":
                raise UsageError(f"--publish needs --network bridge (the container is on "
                                 f"network {mode or 'none'}, which the host cannot reach)")

    def apply(self, spec: Spec) -> None:
        """Shape ``spec`` for the mode: ``host`` takes its network namespace away; ``bridge``
        needs a new one, which ``open_network`` fills in. Raises PyctrError."""
        namespace = spec.linux.namespace("network")
        if self.mode == "host":
            if namespace is not None and namespace.path is not None:
                raise PyctrError(f"--network host, but the spec joins the network namespace "
                                 f"{namespace.path}; drop one of them", error="config.invalid")
            spec.linux.namespaces = [item for item in spec.linux.namespaces
                                     if item.type != "network"]
        elif self.mode == "bridge" and (namespace is None or namespace.path is not None):
            raise PyctrError("--network bridge needs the spec to make a new network namespace "
                             "(linux.namespaces with a network entry without a path)",
                             error="config.invalid")


class ContainerNetwork:
    """What one container holds of the network until ``close``: the published ports'
    listeners, and the bridge attachment or the host network's files."""

    __slots__ = ("attachment", "listeners", "mode")

    def __init__(self, mode: str, listeners: list[Listener],
                 attachment: Attachment | HostFiles | None) -> None:
        self.mode = mode
        self.listeners = listeners
        self.attachment = attachment

    @property
    def ip_address(self) -> str | None:
        """The container's address on the bridge (None for the other modes)."""
        address = getattr(self.attachment, "address", None)
        return None if address is None else str(address)

    def describe(self) -> dict[str, object]:
        """The fields of ``network.attached``."""
        fields: dict[str, object] = {"mode": self.mode}
        if self.ip_address is not None:
            from . import network

            fields.update(bridge=network.BRIDGE, ip_address=self.ip_address,
                          gateway=str(getattr(self.attachment, "gateway", "")),
                          nat=bool(getattr(self.attachment, "nat", False)))
        if self.listeners:
            fields["published"] = [str(listener.port) for listener in self.listeners]
        return fields

    def close(self) -> None:
        """Close the listeners and release the attachment; never raises for what is gone."""
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            listener.sock.close()
        attachment, self.attachment = self.attachment, None
        if attachment is not None:
            attachment.close()


def open_network(options: NetworkOptions, spec: Spec, name: str, rootfs: str, *,
                 overlay: bool = False) -> ContainerNetwork | None:
    """Make what the container's network needs and point ``spec`` at it; None when it needs
    nothing (``none``, or the spec's own namespaces). A file whose place the rootfs lacks is
    left out, unless the root is an overlay (``overlay``): its mount point would have to be
    made in the rootfs. Raises PyctrError, having made nothing that stays."""
    if options.mode not in ("host", "bridge"):
        return None
    listeners: list[Listener] = []
    if options.published:
        from .ports import bind_published

        listeners = bind_published(options.published)
    try:
        hostname = spec.hostname or os.uname().nodename
        attachment: Attachment | HostFiles
        if options.mode == "bridge":
            from .network import attach_bridge

            attachment = attach_bridge(name, hostname)
            namespace = spec.linux.namespace("network")
            assert namespace is not None, "NetworkOptions.apply checked it"
            namespace.path = attachment.netns_path
        else:
            from .network import host_files

            attachment = host_files(name, hostname)
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    taken = {os.path.normpath(mount.destination) for mount in spec.mounts}
    spec.mounts += [Mount(destination, "bind", source, list(_FILE_OPTIONS))
                    for destination, source in sorted(attachment.files.items())
                    if destination not in taken  # a volume of the user's on it wins
                    and (overlay or os.path.lexists(os.path.join(rootfs,
                                                                 destination.lstrip("/"))))]
    return ContainerNetwork(options.mode, listeners, attachment)
