"""What a caller asks for: ``ContainerConfig``, a container (an OCI spec) plus how to
supervise it, validated against the machine by ``check``.

Two ways to describe the container, one result: docker's options (``ContainerConfig(rootfs,
command, user=..., volumes=...)``, which the CLI uses too) are translated by
``pyctr.spec.docker``; ``ContainerConfig.from_spec`` and ``from_bundle`` take a runtime-spec
document as it is. Either way ``check`` leaves the spec the init will apply in ``spec``.

Plain classes, not dataclasses: the CLI builds one before it forks the init, and everything
imported before that fork delays the workload's start.
"""

from __future__ import annotations

import os

from pyctr.linux import signal
from pyctr.spec.docker import DEFAULT_STOP_TIMEOUT, DockerOptions
from pyctr.spec.model import SpecError
from pyctr.spec.security import SecurityOptions

from .devices import DeviceRule, device_rules
from .errors import PyctrError
from .networking import NetworkOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol import Config
    from pyctr.protocol.codec import Value
    from pyctr.spec.model import Spec

_SUPERVISION_OPTIONS = frozenset(("name", "chroot", "stop_signal", "stop_timeout",
                                  "capture_output", "signal_group", "interactive", "timeout",
                                  "overlay", "overlay_upper", "network", "publish"))
NAMESPACE_FILES = {"pid": "pid", "mount": "mnt", "uts": "uts", "ipc": "ipc", "network": "net",
                   "cgroup": "cgroup"}


class ContainerConfig:
    """One container to run.

    ``rootfs`` is a directory holding the root filesystem, ``command`` the program and its
    arguments (looked up in the container's PATH). ``hostname`` defaults to the container id
    (``name``, itself random by default), as docker does. ``env`` adds to or overrides the
    default environment (PATH, HOSTNAME, HOME, and TERM with a tty). ``user`` is docker's
    ``-u`` (``NAME[:GROUP]`` or ``UID[:GID]``, from the rootfs's own passwd and group files),
    ``read_only`` its ``--read-only``; ``volumes``, ``tmpfs``, ``mounts`` and ``ulimits`` are
    lists of docker's ``-v``, ``--tmpfs``, ``--mount`` and ``--ulimit`` values. Security, as
    docker's defaults unless asked otherwise: ``cap_add``/``cap_drop`` (``NET_ADMIN``,
    ``CAP_NET_ADMIN`` or ``ALL``), ``privileged``, ``security_opt``
    (``no-new-privileges=false``, ``seccomp=unconfined`` or ``seccomp=PROFILE.json``) and
    ``devices`` (``--device HOST[:CONTAINER[:rwm]]``). Limits, docker's spellings, kept by the
    container's cgroup: ``memory`` (``"512m"`` or bytes), ``memory_swap`` (memory plus swap,
    or -1), ``cpus`` (``0.5``), ``cpu_shares``, ``pids_limit``, ``cpuset_cpus`` and
    ``cpuset_mems`` (``"0-1"``).

    How it is supervised: when the container must stop, SIGKILL follows the first stop
    signal after ``stop_timeout`` seconds. ``stop_signal`` is what a stop sends first (default
    SIGTERM), and replaces a forwarded SIGINT/SIGTERM when set. With ``capture_output`` the
    command's stdout and stderr become log records (``workload.output``, one per line)
    instead of passing through. ``signal_group``: signals go to the workload's whole process
    group (default) or, when False, to its main process only. ``tty``: the command gets a
    pseudo-terminal, relayed to this process's stdin/stdout; ``interactive``: keep stdin
    attached (without it, a terminal on stdin is replaced by /dev/null, as with docker).
    ``timeout``: seconds of wall-clock time from the container's start, after which it is
    stopped as above (the result says ``timed_out``, the exit code is 124).

    The network: ``network`` is ``"none"`` (the default: a network namespace of its own with
    only ``lo``), ``"host"`` (the host's) or ``"bridge"`` (a veth into pyctr's bridge, an
    address of its own, a default route and NAT); ``publish`` lists docker's ``-p`` values
    (``"8080:80"``, ``"127.0.0.1:5353:53/udp"``), for ``bridge`` only. With a spec
    (``from_spec``), ``network=None`` leaves its namespaces as they are.

    The root: ``overlay`` makes the rootfs the read-only lower layer of an overlayfs, whose
    upper layer (the container's writes) is thrown away at the end; ``overlay_upper``
    (an existing directory; implies ``overlay``) keeps it in ``overlay_upper/upper``.
    """

    __slots__ = ("_docker", "_given_spec", "bundle", "capture_output", "chroot", "device_rules",
                 "interactive", "name", "network", "overlay", "overlay_upper", "rootfs",
                 "seccomp_filter", "seccomp_fits_init", "signal_group", "spec", "stop_signal",
                 "stop_timeout", "timeout")

    def __init__(
        self,
        rootfs: str | os.PathLike[str],
        command: list[str],
        *,
        hostname: str | None = None,
        name: str | None = None,
        env: dict[str, str] | None = None,
        workdir: str = "/",
        user: str | None = None,
        read_only: bool = False,
        volumes: list[str] | tuple[str, ...] = (),
        tmpfs: list[str] | tuple[str, ...] = (),
        mounts: list[str] | tuple[str, ...] = (),
        ulimits: list[str] | tuple[str, ...] = (),
        cap_add: list[str] | tuple[str, ...] = (),
        cap_drop: list[str] | tuple[str, ...] = (),
        privileged: bool = False,
        security_opt: list[str] | tuple[str, ...] = (),
        devices: list[str] | tuple[str, ...] = (),
        memory: str | int | None = None,
        memory_swap: str | int | None = None,
        cpus: str | float | None = None,
        cpu_shares: str | int | None = None,
        pids_limit: str | int | None = None,
        cpuset_cpus: str | None = None,
        cpuset_mems: str | None = None,
        chroot: bool = False,
        stop_signal: int | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        capture_output: bool = False,
        signal_group: bool = True,
        tty: bool = False,
        interactive: bool = True,
        timeout: float | None = None,
        overlay: bool = False,
        overlay_upper: str | os.PathLike[str] | None = None,
        network: str | None = None,
        publish: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.rootfs = os.fspath(rootfs)
        self.name = name or os.urandom(6).hex()
        self.network = NetworkOptions(network, publish)
        """The network asked for, checked; ``check`` shapes the spec for it."""
        if not hostname:  # docker's: the host's name on its network, else the id
            hostname = os.uname().nodename if network == "host" else self.name[:63]
        try:
            security = SecurityOptions(cap_add=cap_add, cap_drop=cap_drop,
                                       privileged=privileged, security_opt=security_opt,
                                       devices=devices)
            limits = None
            if any(value is not None for value in (memory, memory_swap, cpus, cpu_shares,
                                                   pids_limit, cpuset_cpus, cpuset_mems)):
                from pyctr.spec.limits import ResourceOptions

                limits = ResourceOptions(memory=memory, memory_swap=memory_swap, cpus=cpus,
                                         cpu_shares=cpu_shares, pids_limit=pids_limit,
                                         cpuset_cpus=cpuset_cpus, cpuset_mems=cpuset_mems)
        except SpecError as exc:
            raise PyctrError(str(exc), error="usage.invalid") from None
        if timeout is not None and not 0 < timeout < 1e9:
            raise PyctrError(f"timeout must be more than zero seconds, got {timeout!r}",
                             error="usage.invalid")
        self._docker: DockerOptions | None = DockerOptions(
            command, hostname=hostname, env=env, workdir=workdir, user=user,
            read_only=read_only, volumes=volumes, tmpfs=tmpfs, mounts=mounts, ulimits=ulimits,
            tty=tty, security=security, limits=limits)
        self._given_spec: Value = None
        self.bundle: str | None = None
        self.spec: Spec | None = None
        """The container as the init will build it; set by ``check``."""
        self.device_rules: list[DeviceRule] = []
        """The devices the container may use, for its cgroup; set by ``check``."""
        self.seccomp_filter: tuple[bytes, int] | None = None
        """The workload's compiled seccomp filter and its flags; set by ``check``."""
        self.seccomp_fits_init = False
        """Whether init may hold the workload's filter too (see Config); set by ``check``."""
        self.chroot = chroot
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.capture_output = capture_output
        self.signal_group = signal_group
        self.interactive = interactive
        self.timeout = timeout
        """Seconds of wall-clock time the container may run, or None for no limit."""
        self.overlay_upper = None if overlay_upper is None else os.fspath(overlay_upper)
        """Where the overlay's upper layer is kept (``check`` makes it absolute), or None."""
        self.overlay = overlay or self.overlay_upper is not None

    @classmethod
    def from_spec(cls, spec: dict[str, Value] | Spec, *, bundle: str | None = None,
                  **options: object) -> ContainerConfig:
        """A container described by a runtime-spec document (a decoded config.json, or a
        ``Spec``); ``root.path`` and relative bind sources are relative to ``bundle`` (default:
        the working directory). ``options`` are the supervision keywords of the constructor."""
        document = spec if isinstance(spec, dict) else spec.to_value()
        describing = sorted(set(options) - _SUPERVISION_OPTIONS)
        if describing:
            raise TypeError(f"from_spec takes the container from the spec; "
                            f"{', '.join(describing)} is not a supervision option (write it "
                            f"into the spec instead)")
        # The constructor sets the supervision options; the container is the document.
        config = cls("", ["-"], **options)  # type: ignore[arg-type] # names checked above
        config._docker = None
        config._given_spec = document
        config.bundle = os.path.abspath(bundle or ".")
        return config

    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike[str], **options: object) -> ContainerConfig:
        """The container described by ``bundle``/config.json, as ``runc run --bundle``."""
        from pyctr.spec.bundle import load_config
        from pyctr.spec.model import SpecError

        directory = os.fspath(bundle)
        try:
            document = load_config(directory)
        except SpecError as exc:
            raise PyctrError(str(exc), error="config.invalid") from None
        return cls.from_spec(document, bundle=directory, **options)

    def __repr__(self) -> str:
        return f"ContainerConfig({self.rootfs!r}, {self.command!r}, name={self.name!r})"

    @property
    def command(self) -> list[str]:
        if self.spec is not None:
            return self.spec.process.args
        if self._docker is not None:
            return self._docker.command
        return []

    @property
    def hostname(self) -> str | None:
        return self.spec.hostname if self.spec is not None else None

    @property
    def tty(self) -> bool:
        if self.spec is not None:
            return self.spec.process.terminal
        return self._docker is not None and self._docker.tty

    def build_spec(self, *, make_volumes: bool = True) -> Spec:
        """The spec this config describes, checked. Raises PyctrError."""
        from pyctr.spec.model import Spec, SpecError

        try:
            if self._docker is None:
                spec = Spec.from_value(self._given_spec)
                spec.root_path = os.path.join(self.bundle or ".", spec.root_path)
                for index, mount in enumerate(spec.mounts):
                    if not (mount.is_bind and mount.source):
                        continue
                    if not mount.source.startswith("/"):
                        mount.source = os.path.join(self.bundle or ".", mount.source)
                    if not os.path.exists(mount.source):
                        raise SpecError(f"mounts[{index}]: the source {mount.source} of the "
                                        f"bind on {mount.destination} does not exist; create it "
                                        f"or fix the path")
                return spec
            return self._docker.build(self.rootfs, term=os.environ.get("TERM", "xterm"),
                                      make_volumes=make_volumes)
        except SpecError as exc:
            raise PyctrError(str(exc), error="config.invalid") from None

    def check(self) -> str:
        """Check everything that can be checked from the host and build the spec; return the
        rootfs's absolute, symlink-free path. Raises PyctrError with a one-line explanation."""
        if self._docker is not None and not (self.command and self.command[0]):
            raise PyctrError("no command given; say what to run after the rootfs",
                             error="usage.invalid")
        if os.geteuid() != 0:
            raise PyctrError(
                "pyctr must run as root: it creates namespaces and mounts; "
                "run it again with sudo", error="host.not_root")
        if self._docker is not None:  # before the spec: -u reads the rootfs's passwd
            rootfs = _check_rootfs(self.rootfs)
            spec = self.build_spec()
        else:
            spec = self.build_spec()
            rootfs = _check_rootfs(spec.root_path)
        self.rootfs = spec.root_path
        if self.tty and self.capture_output:
            raise PyctrError("--tty and --capture-output cannot be combined: a terminal's output "
                             "is one stream; drop one of them", error="usage.invalid")
        for namespace in spec.linux.namespaces:
            name = NAMESPACE_FILES.get(namespace.type, namespace.type)
            if not os.path.exists(f"/proc/self/ns/{name}"):
                raise PyctrError(
                    f"the kernel lacks the {namespace.type} namespace (/proc/self/ns/{name} "
                    f"is missing); use a kernel built with it", error="host.no_namespace")
            if namespace.path is not None and not os.path.exists(namespace.path):
                raise PyctrError(f"cannot join the {namespace.type} namespace at "
                                 f"{namespace.path}: it does not exist", error="config.invalid")
        try:
            self.device_rules = device_rules(spec)
            if spec.linux.resources is not None:
                from pyctr.spec.limits import check_resources

                check_resources(spec.linux.resources)
        except SpecError as exc:
            raise PyctrError(str(exc), error="config.invalid") from None
        self.network.apply(spec)
        self.seccomp_filter = None
        self.seccomp_fits_init = False
        if spec.linux.seccomp is not None:
            self.seccomp_filter = _compile_seccomp(spec.linux.seccomp)
            self.seccomp_fits_init = _is_default_profile(spec)
        if self.overlay:
            from .overlay import check_layer_path, check_upper

            check_layer_path(rootfs, "rootfs")
            if self.overlay_upper is not None:
                self.overlay_upper = check_upper(self.overlay_upper)
        self.spec = spec
        return rootfs

    @property
    def first_stop_signal(self) -> int:
        return signal.SIGTERM if self.stop_signal is None else self.stop_signal

    def to_message(self, rootfs: str, rows: int = 0, columns: int = 0,
                   log_level: str = "debug", *, inherited: bool = False,
                   nodev: bool = False, cgroups: list[str] | None = None,
                   overlay: tuple[str, str] = ("", ""), start_fifo: str = "",
                   detached: bool = False) -> Config:
        """The init's config message; ``inherited``: the init is a fork that has the spec
        already, so the message leaves it out (an empty object); ``nodev``, ``cgroups``,
        ``overlay`` (its upper and work directories), ``start_fifo``, ``detached``: see
        Config."""
        from pyctr.protocol import Config

        assert self.spec is not None, "check() builds the spec"
        text = ""
        if not inherited:
            import json

            spec = self.spec.to_value()
            linux = spec.get("linux")
            if isinstance(linux, dict):
                # The init installs the compiled program (``seccomp``), not the rules: some
                # 400 syscall names less to encode, send and check again.
                linux.pop("seccomp", None)
            if self.spec.process.terminal and rows > 0 and columns > 0 and \
                    self.spec.process.console_size is None:
                process = spec["process"]
                assert isinstance(process, dict)
                process["consoleSize"] = {"height": rows, "width": columns}
            # ASCII escapes: lone surrogates (undecodable argv and environment bytes) survive.
            text = json.dumps(spec, separators=(",", ":"))
        program, flags = self.seccomp_filter or (b"", 0)
        return Config(container=self.name, rootfs=rootfs, spec=text, chroot=self.chroot,
                      signal_group=self.signal_group, log_level=log_level,
                      seccomp=program.hex(), seccomp_flags=flags,
                      seccomp_fits_init=self.seccomp_fits_init, nodev=nodev,
                      cgroups=list(cgroups or []), stop_signal=self.first_stop_signal,
                      stop_timeout_ms=round(self.stop_timeout * 1000),
                      overlay_upper=overlay[0], overlay_work=overlay[1],
                      start_fifo=start_fifo, detached=detached)


def _compile_seccomp(value: Value) -> tuple[bytes, int]:
    """``linux.seccomp`` as a program for init to install, and its seccomp(2) flags."""
    from pyctr.linux.seccomp import filter_flags
    from pyctr.linux.syscalls import SyscallError

    from .seccomp import compile_filter

    assert isinstance(value, dict), "the spec reader checks linux.seccomp"
    names = value.get("flags") or []
    assert isinstance(names, list)
    try:
        flags = filter_flags([str(name) for name in names])
    except SyscallError as exc:
        raise PyctrError(f"linux.seccomp.flags: unknown flag {exc.path!r}",
                         error="config.invalid") from None
    return compile_filter(value), flags


def _is_default_profile(spec: Spec) -> bool:
    """Whether the spec's ``linux.seccomp`` is pyctr's default for its capabilities, which
    allows all that init does once the workload runs."""
    from pyctr.spec.seccomp import is_default_linux_seccomp

    caps = spec.process.capabilities
    return caps is not None and is_default_linux_seccomp(spec.linux.seccomp, caps.bounding)


def _check_rootfs(path: str) -> str:
    rootfs = os.path.realpath(path)
    if not os.path.exists(rootfs):
        raise PyctrError(
            f"rootfs {path} does not exist; build one with `make rootfs` or "
            f"`rootfs-scripts/build-rootfs {path}`", error="rootfs.missing")
    if not os.path.isdir(rootfs):
        raise PyctrError(
            f"rootfs {path} is not a directory; give the directory that holds the "
            f"container's root filesystem", error="rootfs.not_directory")
    if rootfs == "/":
        raise PyctrError("rootfs / is the host's own root; give a separate directory",
                         error="rootfs.is_host_root")
    return rootfs
