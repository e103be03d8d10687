"""Runtime guards: a run that goes wrong stops, and says what, where and when.

Validation refuses what can be known before a run; these checks catch what only shows
while it runs. After every field solve that ran (skipped solves change nothing), each
solved field must be finite and non-negative (a concentration; rounding may leave values
a hair below 0, so the bound is ``-NEGATIVE_TOLERANCE`` of the field's largest value),
and the solve's residual must be finite. After every cell step the population must stay
within ``run.max_cells`` and every cell on the lattice must sit in a voxel a cell may
occupy.

A failed check raises :class:`SimulationError`. :class:`~niche3d.simulation.Simulation`
first writes a diagnostic into its store (``failure`` in the root attributes: what,
where, when), after every record committed before, and releases nothing it has
written: ``open_run`` reads the store, ``niche3d info`` shows the failure.

The field check is a numba kernel compiled without the fast-math flags that let the
compiler assume no NaN or inf (``niche3d._jit``: ``finite_checks=True``), so a NaN test
cannot be optimised away.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from niche3d._jit import jit
from niche3d.errors import SimulationError

__all__ = ["NEGATIVE_TOLERANCE", "SimulationError", "field_health", "check_field", "check_cells"]

#: a field value below ``-NEGATIVE_TOLERANCE * max(|field|)`` is an error, not rounding
NEGATIVE_TOLERANCE = 1e-5


@jit(parallel=True, finite_checks=True)
def _plane_health(a, out):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    nz, ny, nx = a.shape
    for z in prange(nz):
        lo = np.inf
        hi = -np.inf
        bad = 0
        first = -1
        for y in range(ny):
            for x in range(nx):
                v = a[z, y, x]
                if v != v or v == np.inf or v == -np.inf:
                    if first < 0:
                        first = y * nx + x
                    bad += 1
                else:
                    lo = min(lo, v)
                    hi = max(hi, v)
        out[z, 0] = lo
        out[z, 1] = hi
        out[z, 2] = bad
        out[z, 3] = first


def field_health(a: np.ndarray) -> tuple[float, float, int, tuple[int, int, int] | None]:
    """(min, max over the finite values, count of NaN/inf values, the first of them (z, y, x)
    or None) of a 3D float array; exact whatever the thread count (min, max and counts
    do not depend on the order)."""
    if a.ndim != 3:
        raise ValueError(f"field_health needs a 3D array, got shape {a.shape}")
    part = np.zeros((a.shape[0], 4), np.float64)
    _plane_health(a, part)
    bad = int(part[:, 2].sum())
    where = None
    if bad:
        z = int(np.flatnonzero(part[:, 2] > 0)[0])
        y, x = divmod(int(part[z, 3]), a.shape[2])
        where = (z, y, x)
    lo = float(part[:, 0].min()) if part.size else 0.0
    hi = float(part[:, 1].max()) if part.size else 0.0
    return lo, hi, bad, where


def check_field(name: str, a: np.ndarray, residual: float, unit: str) -> dict[str, Any] | None:
    """The diagnostic of a solved field that is not finite, negative, or whose residual is
    not finite; None when it is healthy."""
    lo, hi, bad, where = field_health(a)
    if bad:
        return {"what": f"field {name!r} has {bad} NaN or infinite values",
                "where": list(where) if where else None, "field": name}
    if lo < -NEGATIVE_TOLERANCE * max(abs(hi), abs(lo)):
        z, y, x = np.unravel_index(int(np.argmin(a)), a.shape)
        return {"what": f"field {name!r} is negative: {lo:.4g} {unit} (largest {hi:.4g})",
                "where": [int(z), int(y), int(x)], "field": name}
    if not np.isfinite(residual):
        return {"what": f"the solve of field {name!r} ended with residual {residual}",
                "where": None, "field": name}
    return None


def check_cells(n_cells: int, max_cells: int, occupied: np.ndarray,
                enterable: np.ndarray) -> dict[str, Any] | None:
    """The diagnostic of a population beyond ``max_cells`` or a cell on a voxel no cell may
    occupy (``occupied``: flat voxel indices; ``enterable``: bool map (z, y, x)); None if
    fine."""
    if n_cells > max_cells:
        return {"what": f"{n_cells:,} cells, more than run.max_cells = {max_cells:,} (a "
                        "runaway expansion: check the division and death parameters)",
                "where": None}
    bad = np.flatnonzero(~enterable.reshape(-1)[occupied])
    if bad.size:
        where = np.unravel_index(int(occupied[bad[0]]), enterable.shape)
        return {"what": f"{bad.size} cells sit on voxels no cell may occupy (bone, a lining "
                        "or a lumen)", "where": [int(i) for i in where]}
    return None
