"""docker's spellings of mounts and limits, each parsed into the model: ``-v``, ``--tmpfs``,
``--mount``, ``--ulimit``, and ``--env-file``'s files. Loaded only when one of them is given.
Every error is a SpecError with the one line to show, naming the flag and the bad value."""

from __future__ import annotations

import os

from pyctr.linux.syscalls import RLIMITS

from .model import Mount, Rlimit, SpecError

VOLUMES_DIR = os.environ.get("PYCTR_VOLUMES_DIR", "/var/lib/pyctr/volumes")
"""Where named volumes live, each as NAME/_data (docker's layout)."""
RLIM_INFINITY = (1 << 64) - 1
_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev")
_OPPOSITES = {"exec": "noexec", "suid": "nosuid", "dev": "nodev", "rw": "ro"}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_volume(text: str, *, make: bool = True) -> Mount:
    """``-v HOST:CTR[:OPTIONS]`` or ``-v NAME:CTR[:OPTIONS]``, OPTIONS from ro, rw and the
    bind propagations, comma-separated."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise SpecError(f"--volume needs HOST:CONTAINER[:ro|rw], got {text!r}")
    source, destination = parts[0], parts[1]
    options = ["rbind"]
    for option in parts[2].split(",") if len(parts) == 3 else []:
        if option in ("ro", "rw") or option in _PROPAGATIONS:
            options.append(option)
        else:
            raise SpecError(f"--volume {text!r}: unknown option {option!r}; use ro, rw or a "
                            f"propagation ({', '.join(_PROPAGATIONS)})")
    return _bind(source, destination, options, "--volume", make=make)


def _bind(source: str, destination: str, options: list[str], flag: str, *,
          make: bool) -> Mount:
    if not destination.startswith("/"):
        raise SpecError(f"{flag}: the container path {destination!r} must be absolute")
    if "/" not in source and source not in (".", ".."):
        source = named_volume(source, flag, make=make)
    elif not source.startswith("/"):
        raise SpecError(f"{flag}: the host path {source!r} must be absolute (or a volume name)")
    elif not os.path.exists(source):
        raise SpecError(f"{flag}: host path {source} does not exist; create it first")
    return Mount(destination, "bind", os.path.realpath(source), options)


def named_volume(name: str, flag: str, *, make: bool) -> str:
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or \
            name.startswith((".", "-")):
        raise SpecError(f"{flag}: volume name {name!r} may hold letters, digits, '_', '.' and "
                        f"'-' only")
    data = os.path.join(VOLUMES_DIR, name, "_data")
    if make:
        try:
            os.makedirs(data, 0o755, exist_ok=True)
        except OSError as exc:
            raise SpecError(f"{flag}: cannot create volume {name} in {VOLUMES_DIR}: "
                            f"{exc.strerror}") from None
    return data


def parse_tmpfs(text: str) -> Mount:
    """``--tmpfs CTR[:OPTIONS]``; noexec, nosuid and nodev unless OPTIONS say otherwise."""
    destination, _, given = text.partition(":")
    if not destination.startswith("/"):
        raise SpecError(f"--tmpfs needs an absolute container path, got {text!r}")
    return Mount(destination, "tmpfs", "tmpfs",
                 _merge(_TMPFS_DEFAULTS, [item for item in given.split(",") if item]))


def _merge(defaults: tuple[str, ...], given: list[str]) -> list[str]:
    """``given`` after the defaults it does not contradict (``exec`` drops ``noexec``)."""
    overridden = set()
    for option in given:
        for positive, negative in _OPPOSITES.items():
            if option in (positive, negative):
                overridden |= {positive, negative}
    return [option for option in defaults if option not in overridden] + given


def parse_mount(text: str, *, make: bool = True) -> Mount:
    """``--mount type=bind|tmpfs|volume,source=…,target=…,readonly,…`` as docker takes it."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        key = key.strip()
        if key in ("readonly", "ro") and not equals:
            value = "true"
        if key in fields:
            raise SpecError(f"--mount {text!r}: {key} is given twice")
        fields[key] = value
    kind = fields.pop("type", "volume")
    source = fields.pop("source", fields.pop("src", ""))
    target = fields.pop("target", fields.pop("destination", fields.pop("dst", "")))
    if not target:
        raise SpecError(f"--mount {text!r}: target is missing")
    readonly = fields.pop("readonly", fields.pop("ro", "false"))
    if readonly not in ("true", "1", "false", "0"):
        raise SpecError(f"--mount {text!r}: readonly must be true or false, got {readonly!r}")
    options = ["ro"] if readonly in ("true", "1") else []
    if kind in ("bind", "volume"):
        if not source:
            raise SpecError(f"--mount {text!r}: source is missing")
        if kind == "bind":
            propagation = fields.pop("bind-propagation", "")
            if propagation and propagation not in _PROPAGATIONS:
                raise SpecError(f"--mount {text!r}: bind-propagation must be one of "
                                f"{', '.join(_PROPAGATIONS)}")
            options += [propagation] if propagation else []
        elif "/" in source:
            raise SpecError(f"--mount {text!r}: a volume's source is a name, not a path; "
                            f"use type=bind for a host path")
        fields.pop("volume-nocopy", None)  # pyctr never copies into a volume
        _refuse_unknown(fields, text)  # before _bind, which may create a volume
        mount = _bind(source, target, ["rbind", *options], "--mount", make=make)
    elif kind == "tmpfs":
        if source:
            raise SpecError(f"--mount {text!r}: a tmpfs takes no source")
        if "tmpfs-size" in fields:
            options.append(f"size={parse_size(fields.pop('tmpfs-size'), '--mount tmpfs-size')}")
        if "tmpfs-mode" in fields:
            mode = fields.pop("tmpfs-mode")
            if not mode or any(digit not in "01234567" for digit in mode):
                raise SpecError(f"--mount {text!r}: tmpfs-mode must be octal, got {mode!r}")
            options.append(f"mode={mode}")
        mount = Mount(target, "tmpfs", "tmpfs", _merge(_TMPFS_DEFAULTS, options))
    else:
        raise SpecError(f"--mount {text!r}: type must be bind, tmpfs or volume, got {kind!r}")
    _refuse_unknown(fields, text)
    if not mount.destination.startswith("/"):
        raise SpecError(f"--mount {text!r}: target must be an absolute path")
    return mount


def _refuse_unknown(fields: dict[str, str], text: str) -> None:
    if fields:
        raise SpecError(f"--mount {text!r}: unknown key {sorted(fields)[0]!r}")


def parse_size(text: str, flag: str) -> int:
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and not value[-1:].isdigit() else ""
    number = value[: len(value) - len(unit)]
    if not (number.isascii() and number.isdigit()):
        raise SpecError(f"{flag} needs a size such as 64m or 512k, got {text!r}")
    return int(number) * _SIZE_UNITS[unit]


def parse_ulimit(text: str) -> Rlimit:
    """``--ulimit NAME=SOFT[:HARD]`` (docker's names: nofile, nproc, core, ...); -1 or
    ``unlimited`` for no limit."""
    name, equals, values = text.partition("=")
    kind = f"RLIMIT_{name.strip().upper()}"
    if not equals or kind not in RLIMITS:
        names = ", ".join(sorted(key[7:].lower() for key in RLIMITS))
        raise SpecError(f"--ulimit needs NAME=SOFT[:HARD] with NAME one of {names}; "
                        f"got {text!r}")
    soft_text, _, hard_text = values.partition(":")
    soft = _limit(soft_text, text)
    hard = _limit(hard_text, text) if hard_text else soft
    if soft > hard:
        raise SpecError(f"--ulimit {text!r}: the soft limit is above the hard limit")
    return Rlimit(kind, soft, hard)


def _limit(text: str, whole: str) -> int:
    if text in ("-1", "unlimited"):
        return RLIM_INFINITY
    if not (text.isascii() and text.isdigit()) or int(text) >= RLIM_INFINITY:
        raise SpecError(f"--ulimit {whole!r}: limits are whole numbers, -1 or unlimited")
    return int(text)


def read_env_file(path: str) -> dict[str, str]:
    """``--env-file PATH``: one NAME=VALUE a line, taken literally (no quotes removed);
    ``#`` lines and blank lines are skipped, and a bare NAME takes the host's value, if any."""
    try:
        with open(path, "rb") as file:
            data = file.read(16 << 20)
    except OSError as exc:
        raise SpecError(f"--env-file {path}: {exc.strerror}") from None
    env: dict[str, str] = {}
    for number, raw in enumerate(data.decode("utf-8", "surrogateescape").splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not name or " " in name or "\0" in line:
            raise SpecError(f"--env-file {path}, line {number}: not NAME=VALUE: {raw!r}")
        if equals:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env
