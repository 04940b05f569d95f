"""pyctr's host side: run a command in a container and supervise it.

The public names are re-exported here. ``run`` (and the trio machinery behind it) is loaded on
first use, so importing this package, as the CLI does before it forks the init, stays cheap.
"""

from __future__ import annotations

from .config import ContainerConfig
from .errors import PyctrError, UsageError
from .result import ContainerFailed, ContainerResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .api import run
    from .supervise import Container

__all__ = ["Container", "ContainerConfig", "ContainerFailed", "ContainerResult", "PyctrError",
           "UsageError", "run"]


def __getattr__(name: str) -> object:
    if name == "run":
        from .api import run

        return run
    if name == "Container":
        from .supervise import Container

        return Container
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
