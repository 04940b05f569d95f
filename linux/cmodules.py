"""``signal`` and ``socket`` without their Python wrappers, for the path to the workload's exec.

The standard ``signal`` and ``socket`` modules wrap C modules (``_signal``, ``_socket``) in
enums, and ``socket`` also imports ``selectors``: about 8 ms here, paid before the workload can
start, since the CLI imports them before it forks the init and the init uses them. The C
modules have the same functions and constants, as plain ints, and cost almost nothing. Type
checkers see the full modules, whose stubs describe the same calls; the code uses none of the
wrappers' extras (``signal.Signals``, ``socket.send_fds``, the ``socket`` context manager).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    import socket
else:
    import _signal as signal
    import _socket as socket

__all__ = ["signal", "socket"]
