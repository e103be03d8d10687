"""An on-disk cache of generated lattices and of maps derived from a lattice, keyed by
everything that determines them.

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

Derived maps (:func:`cached_arrays`: the nearest niche structure per voxel, the contact
maps, the field solver's closed pockets and fjords) live in ``derived/`` as ``.npz``
files, keyed by the lattice's content digest (:attr:`niche3d.tissue.Lattice.digest`: any
lattice, generated or imported), the parameters of the map and the source of the code
that computes it. They are recomputed in seconds, but at a femur's size those seconds
are most of a set-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
import zipfile
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import numpy as np

__all__ = ["cache_dir", "cached_arrays", "cached_labels", "code_digest", "lattice_key"]

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
    return code_digest(sorted(Path(__file__).parent.glob("*.py")))


def code_digest(paths: Iterable[Path | str]) -> str:
    """SHA-256 of source files (names and contents): a cache entry made by other code is
    never used."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
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


def cached_arrays(kind: str, key: dict, make: Callable[[], dict[str, np.ndarray]],
                  check: Callable[[dict[str, np.ndarray]], bool] | None = None,
                  ) -> dict[str, np.ndarray]:
    """The arrays stored for ``kind`` and ``key``, or ``make()``'s, stored for next time.

    ``key`` is a JSON-serialisable dict of everything the arrays depend on (a lattice
    digest, parameters, a :func:`code_digest`). An entry that cannot be read, or that
    ``check`` rejects (a damaged or foreign file), is recomputed and replaced.
    """
    root = cache_dir()
    if root is None:
        return make()
    doc = json.dumps({"kind": kind, "key": key}, sort_keys=True)
    path = root / "derived" / f"{kind}-{hashlib.sha256(doc.encode()).hexdigest()}.npz"
    with contextlib.suppress(OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        if check is None or check(out):
            with contextlib.suppress(OSError):
                os.utime(path)
            return out
    out = make()
    _write(path, lambda fh: np.savez(fh, **out))
    return out


def _store(path: Path, labels: np.ndarray) -> None:
    _write(path, lambda fh: np.save(fh, np.ascontiguousarray(labels), allow_pickle=False))


def _write(path: Path, save: Callable) -> None:
    """Write atomically (a temporary file renamed), then trim the cache."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            save(fh)
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache costs time, never a run
        with contextlib.suppress(OSError):
            tmp.unlink()
        return
    _trim(path.parent.parent, keep=path)


def _trim(root: Path, keep: Path) -> None:
    """Remove the least recently used entries (lattices and derived maps together) until
    the cache fits the limit; never ``keep``, the entry just written."""
    try:
        limit = float(os.environ.get("NICHE3D_CACHE_MB", _LIMIT_MB_DEFAULT)) * 2**20
    except ValueError:
        limit = _LIMIT_MB_DEFAULT * 2**20
    with contextlib.suppress(OSError):
        found = [*root.glob("lattices/*.npy"), *root.glob("derived/*.npz")]
        entries = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in found)
        total = sum(e[1] for e in entries)
        for _, size, p in entries:
            if total <= limit:
                break
            if p == keep:
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size
