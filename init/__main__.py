"""``python -m pyctr.init FD``: become the init on the socket inherited as descriptor FD.

Used when the caller cannot simply fork (a trio program with other threads running): the
supervisor starts a fresh interpreter inside the new PID namespace instead.
"""

from __future__ import annotations

import os
import sys

from pyctr.linux import socket

from .main import run

if __name__ == "__main__":
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)
    run(socket.socket(fileno=fd))
