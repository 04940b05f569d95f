"""The container's init (PID 1): stdlib only, no trio, nothing imported after the root
changes. ``run(sock)`` is the entry point for a freshly forked child; ``python -m pyctr.init
FD`` is the same for a freshly executed interpreter."""

from .main import run

__all__ = ["run"]
