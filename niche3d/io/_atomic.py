"""Crash-safe file writes and the zarr store that uses them.

Every object the run store writes (a ``zarr.json``, a shard, the checkpoint) goes to a
temporary file in the destination directory, is flushed (and ``fsync``-ed when
``durable``), and then atomically renamed over the destination with :func:`os.replace`.
A process killed at any instant therefore leaves either the complete old object or the
complete new one, never a torn mixture: rewriting a shard that already holds earlier
records cannot destroy them.

zarr 3.4's own :class:`zarr.storage.LocalStore` also writes a temp file and renames it,
but does not ``fsync``; :class:`AtomicLocalStore` makes the guarantee explicit and
independent of the zarr version.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

__all__ = [
    "AtomicLocalStore", "atomic_link", "atomic_write_bytes", "remove_stale_temp_files", "TEMP_SUFFIX",
]

#: Suffix of temporary files; a file with it is garbage left by a killed writer.
TEMP_SUFFIX = ".niche3d-tmp"


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview, *, durable: bool = True) -> int:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix.

    Parameters
    ----------
    path
        Destination file. Missing parent directories are created.
    data
        Bytes (or any object supporting the buffer protocol).
    durable
        ``fsync`` the file before the rename and the directory after it, so that the new
        content also survives a power failure (a killed process needs no ``fsync``).

    Returns
    -------
    int
        Number of bytes written.
    """
    n = 0

    def fill(tmp: Path) -> None:
        nonlocal n
        with open(tmp, "wb") as f:
            n = f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())

    _via_temp(Path(path), fill, durable)
    return n


def atomic_link(src: str | os.PathLike[str], path: str | os.PathLike[str], *, durable: bool = True) -> None:
    """Make ``path`` hold the same bytes as the existing file ``src``, atomically.

    A hard link (no bytes are written: an unchanged tissue image costs one directory
    entry per record), made under a temporary name and renamed over ``path``, so readers
    see the old or the new content. Where the filesystem has no hard links, the bytes
    are copied with :func:`atomic_write_bytes`. Files of the store are only ever
    replaced by rename, never changed in place, so linked files stay independent.
    """
    src, dest = Path(src), Path(path)
    with contextlib.suppress(OSError):
        if os.path.samefile(src, dest):
            # already linked (a resumed run replaying a record); renaming a link over
            # another link of the same file would do nothing and leave the temp name
            return
    try:
        _via_temp(dest, lambda tmp: os.link(src, tmp), durable, errors=False)
    except _NoLink:  # no hard links here (some network or FAT filesystems): copy
        atomic_write_bytes(dest, src.read_bytes(), durable=durable)


class _NoLink(Exception):
    """The filesystem refused a hard link (atomic_link copies instead)."""


def _via_temp(dest: Path, make: Callable[[Path], object], durable: bool, errors: bool = True) -> None:
    """Create ``dest``'s new content under a temporary name with ``make(tmp)``, then
    rename it over ``dest`` (and fsync the directory when ``durable``). With
    ``errors=False`` an OSError of ``make`` becomes :class:`_NoLink`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    try:
        try:
            make(tmp)
        except OSError:
            if errors:
                raise
            raise _NoLink from None
        os.replace(tmp, dest)
        if not errors and os.path.lexists(tmp):
            tmp.unlink()  # rename() of two links to one file leaves both: drop the temp one
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        _fsync_dir(dest.parent)


def remove_stale_temp_files(root: str | os.PathLike[str]) -> int:
    """Delete temporary files a killed writer left under ``root``; return how many."""
    n = 0
    for p in Path(root).rglob(f"*{TEMP_SUFFIX}"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


class AtomicLocalStore(LocalStore):
    """A :class:`zarr.storage.LocalStore` whose every write is temp file + ``os.replace``.

    Parameters
    ----------
    root
        Directory of the store.
    read_only
        Open read-only.
    durable
        ``fsync`` each object before renaming it into place (see :func:`atomic_write_bytes`).
    """

    def __init__(self, root: Path | str, *, read_only: bool = False, durable: bool = True) -> None:
        super().__init__(root, read_only=read_only)
        self.durable = bool(durable)

    def with_read_only(self, read_only: bool = False) -> AtomicLocalStore:
        """Return a copy of this store with another ``read_only`` flag."""
        return type(self)(self.root, read_only=read_only, durable=self.durable)

    def _put(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        if not isinstance(value, Buffer):
            raise TypeError(f"AtomicLocalStore.set(): value must be a zarr Buffer, got {type(value)}")
        path = self.root / key
        if exclusive and path.exists():
            return
        atomic_write_bytes(path, value.as_buffer_like(), durable=self.durable)

    async def set(self, key: str, value: Buffer) -> None:
        """Write one object atomically."""
        if not self._is_open:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            self._is_open = True
        self._check_writable()
        await asyncio.to_thread(self._put, key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Write one object atomically unless the key exists."""
        if not self._is_open:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            self._is_open = True
        self._check_writable()
        await asyncio.to_thread(self._put, key, value, True)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous atomic write (zarr's synchronous codec path)."""
        if not self._is_open:
            self.root.mkdir(parents=True, exist_ok=True)
            self._is_open = True
        self._check_writable()
        self._put(key, value)
