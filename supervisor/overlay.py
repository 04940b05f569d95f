"""Throwaway roots (``--overlay``): the upper and work directories of an overlayfs whose
read-only lower layer is the rootfs.

The init mounts the overlay itself, inside the container's private mount namespace, so the
host never holds the mount and nothing is left mounted however the container ends. What the
supervisor owns is the directories:

- By default a layer of the container's own, ``OVERLAY_DIR/NAME/{upper,work}``, removed at
  the end. ``OVERLAY_DIR`` is root's alone (0700): the upper directory holds whatever the
  container wrote, setuid binaries included, and no user of the host may reach those.
- With ``--overlay-upper DIR`` the changes are kept in ``DIR/upper`` (``DIR/work`` is
  overlayfs's scratch space, which must be on the same filesystem) for the next run to start
  from. ``DIR`` must exist: a typo should not silently start from nothing.

While a container runs, its supervisor holds an flock on the layer's directory. A
supervisor that was SIGKILLed holds nothing any more; its init died with it (the parent-death
signal), and ``sweep_stale`` removes its throwaway layer. Creation and the sweep serialise on
``OVERLAY_DIR/.lock``, so a sweep never takes a layer that is being made.
"""

from __future__ import annotations

import fcntl
import os
import shutil

from .errors import PyctrError

OVERLAY_DIR = os.environ.get("PYCTR_OVERLAY_DIR") or "/var/lib/pyctr/overlay"
"""Where throwaway layers are made (the tests use one of their own)."""
_LOCK = ".lock"
UNSAFE_CHARACTERS = (",", ":", "\\")
"""Characters overlayfs's mount options give a meaning (separators, escapes)."""


def check_layer_path(path: str, what: str) -> None:
    """Refuse a path the overlay's mount options cannot carry. Raises PyctrError."""
    bad = sorted({char for char in path if char in UNSAFE_CHARACTERS})
    if bad:
        raise PyctrError(f"{what} {path} contains {' '.join(repr(char) for char in bad)}, "
                         f"which overlayfs's options cannot carry; use a path without them",
                         error="overlay.bad_path")


def check_upper(path: str) -> str:
    """``--overlay-upper DIR`` made absolute and symlink-free; it must exist. Raises
    PyctrError."""
    directory = os.path.realpath(path)
    if not os.path.isdir(directory):
        why = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise PyctrError(f"--overlay-upper {path} {why}; create the directory first (its "
                         f"upper/ keeps the container's changes)", error="overlay.upper_missing")
    check_layer_path(directory, "--overlay-upper")
    return directory


class OverlayLayer:
    """The directories of one container's overlay, held until ``close``."""

    __slots__ = ("_fd", "directory", "kept", "upper", "work")

    def __init__(self, directory: str, fd: int, *, kept: bool) -> None:
        self.directory = directory
        self.upper = os.path.join(directory, "upper")
        self.work = os.path.join(directory, "work")
        self.kept = kept
        """The upper directory stays after the container (``--overlay-upper``)."""
        self._fd: int | None = fd

    def close(self) -> None:
        """Unlock the layer, and remove it unless it is kept. Raises PyctrError when a
        throwaway layer cannot be removed (``sweep_stale`` tries again later)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if not self.kept:
                _remove(self.directory)
        finally:
            os.close(fd)


def create_layer(name: str, rootfs: str, keep: str | None = None) -> OverlayLayer:
    """The layer for container ``name`` over ``rootfs``: a throwaway one, or with ``keep``
    (``check_upper``'s result) the one in that directory. Raises PyctrError."""
    check_layer_path(rootfs, "rootfs")
    root = os.stat(rootfs)
    if keep is not None:
        fd = os.open(keep, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PyctrError(f"--overlay-upper {keep} is in use by another container; "
                                 f"give each running container its own",
                                 error="overlay.upper_busy") from None
            _make_layer_directories(keep, root)
        except BaseException:
            os.close(fd)
            raise
        return OverlayLayer(keep, fd, kept=True)
    check_layer_path(OVERLAY_DIR, "PYCTR_OVERLAY_DIR")
    with _Locked():
        directory = os.path.join(OVERLAY_DIR, name)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            raise PyctrError(f"an overlay layer for a container named {name} exists already "
                             f"({directory}); is one of that name running?",
                             error="overlay.exists") from None
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.rmdir(directory)
            raise
        try:
            _make_layer_directories(directory, root)
        except BaseException:
            os.close(fd)
            _remove(directory)
            raise
    return OverlayLayer(directory, fd, kept=False)


def _make_layer_directories(directory: str, root: os.stat_result) -> None:
    """``upper`` and ``work`` in ``directory``. The merged root takes the upper directory's
    owner and mode, so those are the rootfs root's (a 0700 root would lock the container's
    other users out of ``/``)."""
    upper = os.path.join(directory, "upper")
    try:
        try:
            os.mkdir(upper)
            os.chown(upper, root.st_uid, root.st_gid)
            os.chmod(upper, root.st_mode & 0o7777)
        except FileExistsError:
            pass  # a kept layer: what it holds is the container's to start from
        try:
            os.mkdir(os.path.join(directory, "work"), 0o700)
        except FileExistsError:
            pass
    except OSError as exc:
        raise PyctrError(f"cannot make the overlay's directories in {directory}: "
                         f"{exc.strerror}", error="overlay.failed") from None


def _remove(directory: str) -> None:
    # rmtree works through descriptors without following symlinks: the container's files
    # may be links anywhere on the host, and none of those is touched.
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PyctrError(f"cannot remove the overlay layer {directory}: {exc.strerror}",
                         error="overlay.remove_failed") from None


class _Locked:
    """``OVERLAY_DIR``, made when missing, and its lock held for one ``with`` block."""

    def __enter__(self) -> None:
        os.makedirs(OVERLAY_DIR, 0o700, exist_ok=True)
        self.fd = os.open(os.path.join(OVERLAY_DIR, _LOCK),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


def sweep_stale() -> list[str]:
    """Remove the throwaway layers of containers whose supervisor was killed (nobody holds
    their lock); return their names. Never raises for a single layer."""
    try:
        names = [name for name in os.listdir(OVERLAY_DIR) if name != _LOCK]
    except FileNotFoundError:
        return []
    if not names:
        return []
    removed = []
    with _Locked():
        for name in names:
            directory = os.path.join(OVERLAY_DIR, name)
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC |
                             os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _remove(directory)
            except (BlockingIOError, PyctrError):
                continue  # a live container's, or one we cannot remove: the next sweep
            finally:
                os.close(fd)
            removed.append(name)
    return removed
