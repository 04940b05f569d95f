"""The container's init (PID 1): stdlib only, no trio, nothing imported after the root
changes. ``run(sock)`` is the entry point for a freshly forked child: the CLI's fork, or one
cloned by the library's template (``python -m pyctr.init.template FD``)."""

from .main import run

__all__ = ["run"]
