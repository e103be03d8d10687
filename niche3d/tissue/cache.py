"""An on-disk cache of generated lattices, keyed by everything that determines them.

Generating the procedural marrow is the largest part of a big run's set-up (minutes for
a femur-sized lattice) and every replicate with the same geometry (``tissue.seed`` fixed)
or every rerun of a scenario repeats it exactly. The generator is deterministic, so its
output can be kept: the key is a SHA-256 of the domain shape, voxel size, the whole
``[tissue]`` section, the seed used and the source code of ``niche3d.tissue`` (a code
change invalidates every entry). A cached lattice is bit-identical to a regenerated one.

Where: ``$NICHE3D_CACHE_DIR`` if set (``off`` disables the cache), else
``$XDG_CACHE_HOME/niche3d`` or ``~/.cache/niche3d``; entries live in ``lattices/`` as
``.npy`` files written atomically. The directory is kept under ``$NICHE3D_CACHE_MB``
(default 2048) by removing the least recently used entries. Any entry that cannot be
read is regenerated and replaced; an unwritable cache directory only costs the time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

__all__ = ["cache_dir", "cached_labels", "lattice_key"]

_LIMIT_MB_DEFAULT = 2048


def cache_dir() -> Path | None:
    """The cache directory, or None when ``NICHE3D_CACHE_DIR=off``."""
    env = os.environ.get("NICHE3D_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("off", "0", "none", "") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "niche3d"


@cache
def _code_digest() -> str:
    """SHA-256 of the tissue package's sources (what the generator's output depends on)."""
    h = hashlib.sha256()
    pkg = Path(__file__).parent
    for p in sorted(pkg.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def lattice_key(shape: tuple[int, int, int], voxel_um: float, config_json: str, seed: int) -> str:
    """Cache key of a generated lattice (hex SHA-256)."""
    doc = json.dumps({"shape": [int(n) for n in shape], "voxel_um": float(voxel_um),
                      "tissue": json.loads(config_json), "seed": int(seed),
                      "code": _code_digest()}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def cached_labels(key: str, shape: tuple[int, int, int], make: Callable[[], np.ndarray]) -> np.ndarray:
    """The labels stored under ``key``, or ``make()``'s, stored for next time.

    ``make`` must return a uint8 array of ``shape``; a stored entry of another shape or
    dtype (a damaged file) is ignored and replaced.
    """
    root = cache_dir()
    if root is None:
        return make()
    path = root / "lattices" / f"{key}.npy"
    with contextlib.suppress(OSError, ValueError):
        arr = np.load(path, allow_pickle=False)
        if arr.shape == tuple(shape) and arr.dtype == np.uint8:
            with contextlib.suppress(OSError):
                os.utime(path)  # least recently *used* goes first
            return arr
    labels = make()
    _store(path, labels)
    return labels


def _store(path: Path, labels: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(labels), allow_pickle=False)
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache costs time, never a run
        with contextlib.suppress(OSError):
            tmp.unlink()
        return
    _trim(path.parent)


def _trim(directory: Path) -> None:
    """Remove the least recently used entries until the directory fits the limit."""
    try:
        limit = float(os.environ.get("NICHE3D_CACHE_MB", _LIMIT_MB_DEFAULT)) * 2**20
    except ValueError:
        limit = _LIMIT_MB_DEFAULT * 2**20
    with contextlib.suppress(OSError):
        entries = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in directory.glob("*.npy"))
        total = sum(e[1] for e in entries)
        for _, size, p in entries[:-1]:  # never the entry just written
            if total <= limit:
                break
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size
