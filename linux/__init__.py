"""What both of pyctr's processes call the kernel with: the C library through ``_ctypes``
(``libc``), the system calls Python's ``os`` lacks and paths resolved inside a root
(``syscalls``), and, here, ``signal`` and ``socket`` without their Python wrappers.

Stdlib only: the init imports this before the root changes, and the CLI before it forks the
init, so everything here is on the path to the workload's exec. The standard ``signal`` and
``socket`` modules wrap C modules (``_signal``, ``_socket``) in enums, and ``socket`` also
imports ``selectors``: about 8 ms here. The C modules have the same functions and constants,
as plain ints, and cost almost nothing (``from pyctr.linux import signal, socket``). Type
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
