"""One writer per run folder: an OS lock on ``<run>/.lock``, and files that are written once only.

Why: two spti commands on the same run folder would each draw the noise of every iteration, spending the
privacy budget twice while the ledger counts it once. Every command that writes into a run folder therefore
holds an exclusive lock on it for its whole life; a second command fails at once, naming the holder's pid.

Why ``flock`` on a file and not a pid file: the kernel drops an flock when its holder dies, however it dies
(SIGKILL, OOM, power loss of a network client), so a killed run never leaves a stale lock behind and no one
ever has to delete a lock file by hand. The pid written into the file is only for the error message.

Re-entrant within a process: the library may open the same folder several times (``spti.run()`` twice,
``RunDir.open`` inside the demo then again inside the run); every :class:`RunDir` of the process on that
folder shares the one lock, which is released (and ``.lock`` removed) when the last of them is closed or
garbage-collected, and at the latest at interpreter exit.

Independently of the lock, :func:`write_once` creates a file exclusively (a hard link from a complete
temporary file, which fails if the target exists): a noisy histogram, once written, can never be replaced,
so even a lock that does not work (a filesystem without flock) cannot draw noise twice for one iteration.
"""

from __future__ import annotations

import atexit
import errno
import io
import os
import threading
import time
import uuid
import weakref
from pathlib import Path

import numpy as np

from spti.errors import RunFolderError
from spti.log import logger

__all__ = ["LOCK_NAME", "RunFolderLock", "lock_run_folder", "save_npz_once", "write_once"]

#: The lock file, at the root of the run folder (never in release/).
LOCK_NAME = ".lock"

try:  # POSIX only; elsewhere the run folder is not locked (write_once still protects the histograms)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class _Held:
    """The flock this process holds on one folder's ``.lock``, shared by every :class:`RunFolderLock`."""

    def __init__(self, key: str, path: Path, fd: int | None):
        self.key = key
        self.path = path
        self.fd = fd
        self.pid = os.getpid()
        self.users = 0

    def close(self) -> None:
        """Remove ``.lock`` (while still holding it) then drop the flock. Removing first is safe because a
        process that opened the old file checks, once it holds the lock, that the path still names the file
        it locked (see :func:`_acquire`). A forked child only closes its copy of the descriptor."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if os.getpid() == self.pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        try:
            os.close(fd)
        except OSError:
            pass


_REGISTRY: dict[str, _Held] = {}
_REGISTRY_LOCK = threading.Lock()


def _release(held: _Held) -> None:
    with _REGISTRY_LOCK:
        held.users -= 1
        if held.users > 0:
            return
        if _REGISTRY.get(held.key) is held:
            del _REGISTRY[held.key]
        held.close()  # under the registry lock: a thread of this process re-locking waits for it


@atexit.register
def _release_all() -> None:
    with _REGISTRY_LOCK:
        held = list(_REGISTRY.values())
        _REGISTRY.clear()
    for h in held:
        h.close()


class RunFolderLock:
    """This process's hold on a run folder. :meth:`release` (or garbage collection) gives it up; the
    folder's flock is dropped when the process's last hold on it is released."""

    def __init__(self, held: _Held):
        self._held = held
        self._finalizer = weakref.finalize(self, _release, held)

    @property
    def path(self) -> Path:
        return self._held.path

    @property
    def held(self) -> bool:
        return self._finalizer.alive

    def release(self) -> None:
        self._finalizer()


def _holder_pid(path: Path) -> str:
    """The pid the holder wrote into the lock file ("unknown" if it has not written it yet)."""
    for _ in range(20):  # the holder writes its pid right after locking: wait for it a little
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            text = ""
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


def _acquire(folder: Path, path: Path) -> int | None:
    """Open and flock ``path`` (non-blocking); returns the descriptor, or None where locking is not
    available. Raises RunFolderError when another process holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        logger.warning("run folder locking is not available on this platform: do not run two commands on %s at once", folder)
        return None
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderError(
                    f"{folder} is in use by another spti process (pid {_holder_pid(path)}): one command at a time "
                    "per run folder (two would spend the privacy budget twice). Wait for it to finish, or stop it, "
                    "then run the same command again."
                ) from None
            logger.warning("cannot lock %s (%s): do not run two commands on this run folder at once", folder,
                           os.strerror(e.errno) if e.errno else e)
            return None
        # The holder before us may have removed the file between our open and our flock: then we locked a
        # file no one else will ever see. Lock the file the path names now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            try:  # for the error message of a second command only: a full disk must not stop this one
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            except OSError:
                pass
            return fd
        os.close(fd)
    raise RunFolderError(f"{folder}: could not take the run folder's lock ({path.name} keeps changing)")


def lock_run_folder(folder: str | os.PathLike[str]) -> RunFolderLock:
    """Take (or share, within this process) the exclusive lock of the existing run folder ``folder``.

    Raises RunFolderError, naming the holder's pid, when another process holds it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a folder")
    key = os.path.realpath(folder)
    with _REGISTRY_LOCK:
        held = _REGISTRY.get(key)
        if held is not None and held.pid != os.getpid():  # inherited through fork: not ours
            held = None
        if held is None:
            path = Path(key) / LOCK_NAME
            held = _Held(key, path, _acquire(folder, path))
            _REGISTRY[key] = held
        held.users += 1
    return RunFolderLock(held)


# ---------------------------------------------------------------------------------------------- write once
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, getattr(errno, "ENOTSUP", -1), getattr(errno, "EOPNOTSUPP", -1)}


def write_once(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path``, which must not exist: complete and fsynced in a temporary file first,
    then hard-linked to ``path`` (``link`` fails if the target exists, atomically). Raises FileExistsError
    and leaves the existing file untouched if ``path`` exists, even if it appeared a moment ago.

    On a filesystem without hard links the check and the rename cannot be one step; the run folder's lock
    is then the only protection."""
    from spti.data.io import atomic_write_bytes

    path = Path(path)
    if path.exists():
        raise FileExistsError(errno.EEXIST, "refusing to replace a file written once", str(path))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # ".*.tmp": removed on resume if left
    atomic_write_bytes(tmp, data)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise
            if path.exists():
                raise FileExistsError(errno.EEXIST, "refusing to replace a file written once", str(path)) from None
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def save_npz_once(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` with :func:`write_once`: never replaces an existing file."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_once(path, buf.getvalue())
