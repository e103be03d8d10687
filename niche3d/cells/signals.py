"""What the cell model reads each step: local signals on the lattice and systemic
intervention effects."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from niche3d.names import CXCL12, MEMBRANE_SCF, SCF

__all__ = ["Signals", "Modifiers", "flat_signals", "SIGNAL_NAMES"]

#: the attributes of :class:`Signals`, named as the fields they come from
SIGNAL_NAMES: tuple[str, str, str] = (CXCL12, SCF, MEMBRANE_SCF)


@dataclass
class Signals:
    """Local signals on the lattice, all (z, y, x) float32, built by the simulation.

    Attributes
    ----------
    cxcl12
        Free CXCL12 in nM.
    scf
        Soluble SCF in field units (half-maximal support at ``death.scf_half``).
    membrane_scf
        Membrane SCF contact map (>= 0, about 0..1).
    """

    cxcl12: np.ndarray
    scf: np.ndarray
    membrane_scf: np.ndarray


@dataclass
class Modifiers:
    """Systemic effects of interventions at the current time (defaults: none).

    Attributes
    ----------
    cxcr4_blockade
        Share of CXCR4 blocked (AMD3100), 0..1: scales occupancy, raises unbinding.
    protease
        Neutrophil protease activity in 1/min (G-CSF): raises unbinding, cleaves VCAM1.
    cytotoxic
        Extra death hazard in 1/h of cycling cells (active G1, S/G2/M HSCs, MPPs and the
        downstream progenitor compartments), e.g. 5-FU. Quiescent HSCs are spared.
    """

    cxcr4_blockade: float = 0.0
    protease: float = 0.0
    cytotoxic: float = 0.0

    def validated(self) -> Modifiers:
        """Return self after checking ranges; raises ValueError naming the field."""
        for name, lo, hi in (("cxcr4_blockade", 0.0, 1.0), ("protease", 0.0, math.inf),
                             ("cytotoxic", 0.0, math.inf)):
            v = getattr(self, name)
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"Modifiers.{name} = {v!r} must be a number") from None
            if not (math.isfinite(fv) and lo <= fv <= hi):
                rng = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g} and finite"
                raise ValueError(f"Modifiers.{name} = {v!r} must be {rng}")
        return self


def flat_signals(
    signals: Signals, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check ``signals`` against the lattice ``shape``; return flat float32 (cxcl12, scf,
    membrane_scf) views, copying only arrays that are not C-contiguous float32.

    Raises
    ------
    TypeError
        If ``signals`` is not a :class:`Signals` or an entry is not a numpy array.
    ValueError
        If an array is not a float array of the lattice shape.
    """
    if not isinstance(signals, Signals):
        raise TypeError(f"signals must be a niche3d.cells.Signals, got {type(signals).__name__}")
    out = []
    for name in SIGNAL_NAMES:
        a = getattr(signals, name)
        if not isinstance(a, np.ndarray):
            raise TypeError(f"signals.{name} must be a numpy array, got {type(a).__name__}")
        if a.shape != shape:
            raise ValueError(
                f"signals.{name} has shape {a.shape}; it must match the lattice {shape}"
            )
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"signals.{name} has dtype {a.dtype}; a float array is required")
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=np.float32)
        out.append(a.reshape(-1))
    return out[0], out[1], out[2]
