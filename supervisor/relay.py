"""The bytes between the container's pseudo-terminal and our stdin/stdout (``-t``), in trio,
and between our terminal and the pipes that stand for it without ``-t``.

Kept apart from ``terminal.py``, which the CLI imports before it forks the init and before
trio is imported at all."""

from __future__ import annotations

import os

import trio


async def copy_to_terminal(master: int, out: int) -> None:
    """The container's terminal output (or a pipe's) to ours, until the pty's last user is
    gone (EIO) or the pipe's last writer (end of file)."""
    with trio.CancelScope(shield=True):  # ends by itself, like the output readers
        while True:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(master)
                continue
            except OSError:  # EIO: every process holding the slave side has exited
                return
            if not data:
                return
            _write_all(out, data)
            await trio.lowlevel.checkpoint()


async def copy_from_terminal(source: int, master: int) -> None:
    """Our input to the container's terminal. ``source`` stays blocking (it may be shared
    with the shell that started us), so wait for it to be readable before each read."""
    while True:
        await trio.lowlevel.wait_readable(source)
        data = os.read(source, 65536)
        if not data:
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(master, view):]
            except BlockingIOError:  # the program is not reading its input yet
                await trio.lowlevel.wait_writable(master)


async def copy_input_to_pipe(source: int, pipe: int) -> None:
    """Our terminal's input to the workload's stdin pipe, then end of file when ours ends
    (Ctrl-D) or nothing reads the pipe any more; closes ``pipe``."""
    try:
        await copy_from_terminal(source, pipe)
    except BrokenPipeError:
        pass  # nothing in the container reads its stdin any more
    finally:
        os.close(pipe)


def _write_all(fd: int, data: bytes) -> None:
    """Write to our own (blocking) stdout."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
