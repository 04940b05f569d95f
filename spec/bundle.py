"""An OCI bundle: a directory with ``config.json`` and (usually) the root filesystem.

``json`` is imported here only: the default command line never reads a bundle, and ``json``
(with ``re``) would add milliseconds to every start.
"""

from __future__ import annotations

import os

from .model import SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyctr.protocol.codec import Value

MAX_CONFIG_SIZE = 16 << 20


def load_config(bundle: str) -> dict[str, Value]:
    """The decoded ``bundle``/config.json. Raises SpecError with the one line to show."""
    import json

    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_SIZE + 1)
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}; give a bundle directory that "
                        f"holds a config.json (`pyctr-supervise spec` writes one)") from None
    if len(data) > MAX_CONFIG_SIZE:
        raise SpecError(f"{path} is larger than {MAX_CONFIG_SIZE >> 20} MiB")
    try:
        document = json.loads(data)
    except UnicodeDecodeError:
        raise SpecError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg})") from None
    if not isinstance(document, dict):
        raise SpecError(f"{path} must hold a JSON object")
    return document
