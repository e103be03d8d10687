"""One writer per run store: an OS file lock that the kernel releases when its holder dies.

A process that writes a run store (a new run, ``--overwrite``, ``--resume``) first takes
an exclusive ``flock`` on the store's lock file, before any set-up. A second writer is
refused at once with a message that says who holds the store; a reader (``open_run``,
the viewer) takes no lock. The lock belongs to the open file, not to a file on disk that
could be left behind: when the holder exits, however it exits (a kill included), the
kernel releases it, so a lock can never go stale.

The lock file sits beside the store, ``.<name>.lock`` in the same directory: it must
outlive ``--overwrite`` (which deletes and recreates the store directory; a lock inside
it would be deleted with it, and a second writer could then lock the new directory while
the first still writes). It holds the holder's pid, host and start time, for the message
only; it is never deleted (deleting a lock file races with a process about to lock it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from niche3d.io._format import StoreError

__all__ = ["StoreLocked", "WriterLock", "lock_path"]


class StoreLocked(StoreError):
    """Another process is writing this run store."""


def lock_path(store: str | os.PathLike[str]) -> Path:
    """The lock file of the run store at ``store``: ``.<name>.lock`` beside it."""
    p = Path(store).absolute()
    return p.parent / f".{p.name}.lock"


class WriterLock:
    """The exclusive write lock of one run store.

    Parameters
    ----------
    store
        Path of the run store (it need not exist yet).

    Use :meth:`acquire` (raises :class:`StoreLocked` when another process holds it) and
    :meth:`release`, or the object as a context manager. Locks are per process and open
    file: a second :class:`WriterLock` on the same store in the same process is refused
    too while the first is held.
    """

    def __init__(self, store: str | os.PathLike[str]) -> None:
        self.store = Path(store)
        self.path = lock_path(store)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> WriterLock:
        """Take the lock or raise :class:`StoreLocked` (naming the holder) at once; an
        unwritable directory raises :class:`StoreError` naming it."""
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"{self.store}: cannot write in {self.path.parent} ({exc.strerror or exc}); "
                "choose an --out in a writable directory"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            if holder.startswith(f"pid {os.getpid()} on {socket.gethostname()},"):
                raise StoreLocked(
                    f"{self.store}: this process is already writing this run store (an open "
                    "Simulation: call its close() or use it in a with block first)"
                ) from None
            raise StoreLocked(
                f"{self.store}: another process is writing this run store ({holder}); wait "
                "for it to end or choose another --out. --overwrite and --resume refuse a "
                "store that is being written"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()}, since "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S')}").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent); the file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
