"""How a field solution is stored: float32 ``hi`` plus an int16 ``lo`` mantissa extension.

The value is ``hi + lo * |hi| * 2**-39`` (:func:`lo_part`, :func:`split`; ``|lo| <= 2**15``
because ``hi`` is the value rounded to float32, whose error is at most ``|hi| * 2**-24``).
That is 2 bytes per voxel for a relative resolution of 2**-39, where a float32 ``lo``
(double-float) would take 4 for more precision than any tolerance needs; float32 alone
cannot reach a 1e-6 residual (see ``docs/fields.md``). The numba helpers are used inside
the kernels, the numpy functions by the Python side (checkpoints, block solves, tests).
"""

from __future__ import annotations

import numpy as np

from niche3d._jit import jit

__all__ = ["LO_UNIT", "lo_part", "split", "lo_values", "solution", "lo_from_values",
           "split_values"]

LO_UNIT = 2.0**-39  # resolution of the int16 low part, relative to |hi|
_LO_UNIT32 = np.float32(LO_UNIT)
_LO_MAX = 32767.0


@jit(error_model="numpy")
def lo_part(h, q):  # type: ignore[no-untyped-def]
    """The low part ``q * |h| * 2**-39`` of a solution value, as float32 (its own rounding
    is 2**-24 of a part that is itself below 2**-24 of ``h``)."""
    return np.float32(q) * (abs(h) * _LO_UNIT32)


@jit(error_model="numpy")
def split(v):  # type: ignore[no-untyped-def]
    """A float64 value as (float32 ``hi``, int16 ``lo``), ``hi + lo * |hi| * 2**-39`` being
    within ``|hi| * 2**-40`` of ``v`` (``lo = 0`` where ``hi`` is 0 or not finite)."""
    hv = np.float32(v)
    a = abs(np.float64(hv)) * LO_UNIT
    t = (v - np.float64(hv)) / a if a > 0.0 else 0.0
    t = min(max(t, -_LO_MAX), _LO_MAX)  # (NaN compares false: stays NaN only if v is)
    return hv, np.int16(np.rint(t)) if t == t else np.int16(0)


def lo_values(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The low parts of a stored solution as float32 (numpy)."""
    return lo.astype(np.float32) * (np.abs(hi) * _LO_UNIT32)


def solution(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The stored solution ``hi + lo`` as float64 (numpy)."""
    return hi.astype(np.float64) + lo_values(hi, lo)


def lo_from_values(hi: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The int16 ``lo`` that represents the low parts ``low`` (float, ``|low|`` at most half
    an ulp of ``hi``) next to ``hi``: the inverse of :func:`lo_values` (exact on its
    output)."""
    a = np.abs(np.asarray(hi, np.float32).astype(np.float64)) * LO_UNIT
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(a > 0, np.asarray(low, np.float64) / np.where(a > 0, a, 1.0), 0.0)
    t = np.nan_to_num(np.clip(t, -_LO_MAX, _LO_MAX), nan=0.0)
    return np.rint(t).astype(np.int16)


def split_values(v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values as (float32 ``hi``, int16 ``lo``) (numpy counterpart of :func:`split`)."""
    v = np.asarray(v, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        h = v.astype(np.float32)
        low = v - h.astype(np.float64)  # NaN for infinities: lo 0
    return h, lo_from_values(h, low)
