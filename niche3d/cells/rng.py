"""Counter-based random numbers: a hash of (seed, step, cell id, purpose).

Every random decision of the cell model is a pure function of its key, so a result
never depends on the order in which threads visit cells. The hash is four rounds of the
splitmix64 finaliser (Steele, Lea & Flood 2014), one per key word, which passes
BigCrush as a counter-based generator; the top 53 bits give a double in [0, 1).

``purpose`` separates the streams of one cell in one step (hop, direction, binding,
fate, ...); sub-step and stage indices are folded into it as ``purpose + 64 * k``.
"""

from __future__ import annotations

import numpy as np

from niche3d._jit import jit

__all__ = ["hash64", "uniform", "uniform_array", "Purpose"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0


class Purpose:
    """Stream numbers (``purpose`` argument); sub-draws add ``64 * k``."""

    HOP = 1
    DIRECTION = 2
    PERSIST = 3
    PRIORITY = 4
    BIND = 5
    EVENT = 6
    EVENT_KIND = 7
    CYCLE = 8
    CYCLE_KIND = 9
    ERLANG = 10  # + 64 * k for the k-th exponential of an Erlang draw
    PLACE = 11
    FATE_MOTHER = 12
    FATE_DAUGHTER = 13
    ASYMMETRY = 14
    ASYMMETRY_SIDE = 15
    HOME_SITE = 16
    HOME_ACCEPT = 17
    SEED_PLACE = 18
    SEED_STATE = 19
    SEED_PHASE = 20
    SEED_RESIDUAL = 21
    SEED_BOUND = 22
    SEED_COUNT = 23
    PUSH = 24
    NICHE_TAXIS = 25
    BLOOD_HOMING = 26  # key = class of the blood compartment
    HOME_PLACE = 27  # key = attempt number in the step
    IRRADIATION = 28


@jit
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@jit
def hash64(seed: int, step: int, cell: int, purpose: int) -> np.uint64:
    """64-bit hash of the key (all four words taken modulo 2^64)."""
    h = _mix(np.uint64(seed) + _GOLDEN)
    h = _mix(h ^ (np.uint64(step) + _GOLDEN))
    h = _mix(h ^ (np.uint64(cell) + _GOLDEN))
    return _mix(h ^ (np.uint64(purpose) + _GOLDEN))


@jit
def uniform(seed: int, step: int, cell: int, purpose: int) -> float:
    """Uniform double in [0, 1) for the key (seed, step, cell, purpose)."""
    return float(hash64(seed, step, cell, purpose) >> _S11) * _INV53


@jit(parallel=False)
def _uniform_array(seed: int, step: int, cells: np.ndarray, purpose: int, out: np.ndarray) -> None:
    for i in range(cells.shape[0]):
        out[i] = uniform(seed, step, cells[i], purpose)


def uniform_array(seed: int, step: int, cells: np.ndarray, purpose: int) -> np.ndarray:
    """Vector form of :func:`uniform` over an array of cell keys (int64).

    Parameters
    ----------
    seed, step, purpose
        Key words, integers >= 0.
    cells
        1D integer array of cell keys (ids or voxel indices), each >= 0.
    """
    for name, v in (("seed", seed), ("step", step), ("purpose", purpose)):
        if int(v) < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    c = np.ascontiguousarray(cells, dtype=np.int64)
    if c.ndim != 1:
        raise ValueError(f"cells must be a 1D array, got shape {c.shape}")
    if c.size and c.min() < 0:
        raise ValueError(f"cells must be >= 0, got min {int(c.min())}")
    out = np.empty(c.shape[0], dtype=np.float64)
    _uniform_array(int(seed), int(step), c, int(purpose), out)
    return out
