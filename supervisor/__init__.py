"""pyctr's host side: run a command in a container and supervise it.

The public names are re-exported here, each loaded on first use (PEP 562): importing the
package costs nothing, the CLI loads only the modules it uses before it forks the init, and
``run`` (with trio behind it) stays out of the CLI's start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .api import run
    from .config import ContainerConfig
    from .errors import PyctrError, UsageError
    from .result import ContainerFailed, ContainerResult
    from .supervise import Container

__all__ = ["Container", "ContainerConfig", "ContainerFailed", "ContainerResult", "PyctrError",
           "UsageError", "run"]

_HOMES = {
    "Container": "supervise",
    "ContainerConfig": "config",
    "ContainerFailed": "result",
    "ContainerResult": "result",
    "PyctrError": "errors",
    "UsageError": "errors",
    "run": "api",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: importlib itself imports warnings.
    return getattr(__import__(f"{__name__}.{home}", fromlist=[name]), name)
