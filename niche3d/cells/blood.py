"""The mouse's blood and the rest of its marrow, as well-mixed compartments.

The simulated block is a fraction ``f`` of the mouse's marrow. The rest of the marrow is a
mean field of the block: it holds ``(1 - f) / f`` times the block's HSCs and sends them
into the blood at the block's per-cell egress hazards, each averaged over the cell's
binding states (the unbound share ``koff / (kon + koff)`` where it sits), so that the
inflow follows the ensemble of the other marrow rather than which of the block's few
cells happen to be unbound. The blood holds HSCs of the whole
mouse, by class (host or donor, lodging as active G0 or dormant), and loses them by

* **arrest** in a marrow sinusoid (``homing_per_h``): a share ``f`` of the arrests fall in
  the block, where each is a transendothelial migration attempt at a random
  endothelium-touching voxel (accepted with ``s / (s + homing_half)``, ``s`` the adhesion
  score there; a failed attempt returns to the blood); the rest lodge in the other
  marrow with the block's mean acceptance (the mean field);
* **clearance** (``clearance_per_h``): trapping in lung, liver and spleen, and death.

The compartment is advanced exactly over a step with the inflow held constant. Counts are
expected values (floats); the block's arrests are Poisson numbers drawn from counter-based
random numbers, so results stay bit-identical for any thread count.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from niche3d.cells.config import BloodConfig
from niche3d.cells.rng import Purpose, uniform

__all__ = ["Blood", "CLASSES", "poisson"]

#: blood classes: (donor, lodges dormant)
CLASSES: tuple[tuple[bool, bool], ...] = ((False, False), (False, True), (True, False), (True, True))


def poisson(mean: float, u: float) -> int:
    """Poisson(``mean``) by inversion of one uniform ``u`` in [0, 1) (normal
    approximation above a mean of 500, where the inversion's ``exp(-mean)`` underflows)."""
    if not (math.isfinite(mean) and mean >= 0.0):
        raise ValueError(f"Poisson mean {mean!r} must be finite and >= 0")
    if mean == 0.0:
        return 0
    if mean > 500.0:
        z = NormalDist().inv_cdf(min(max(u, 1e-12), 1 - 1e-12))
        return max(0, int(round(mean + math.sqrt(mean) * z)))
    k = 0
    p = math.exp(-mean)
    cdf = p
    while u > cdf and k < 100_000:
        k += 1
        p *= mean / k
        cdf += p
    return k


class Blood:
    """HSCs in the mouse's blood and the traffic between blood, block and other marrow.

    Parameters
    ----------
    config
        The ``[cells.blood]`` section.
    block_fraction
        Share ``f`` of the mouse's marrow that the block is, in (0, 1].
    dt_hours
        Cell step (h).

    Attributes
    ----------
    counts : numpy.ndarray
        HSCs in blood per class of :data:`CLASSES` (float, expected values).
    totals : dict of str to float
        Cumulative whole-mouse flows: ``egress`` (into blood), ``arrested`` (arrests in
        marrow sinusoids), ``homed`` (lodged in marrow), ``cleared``, and their ``donor_``
        parts.
    """

    def __init__(self, config: BloodConfig, block_fraction: float, dt_hours: float) -> None:
        if not (math.isfinite(block_fraction) and 0.0 < block_fraction <= 1.0):
            raise ValueError(f"block_fraction = {block_fraction!r} must be in (0, 1]")
        self.config = config
        self.f = float(block_fraction)
        self.dt_hours = float(dt_hours)
        self.counts = np.zeros(len(CLASSES), np.float64)
        self.totals = dict.fromkeys(TOTALS, 0.0)
        self.last_inflow_per_day = 0.0
        self.last_k = 0.0

    @property
    def k_out(self) -> float:
        """Loss rate of a circulating cell (1/h): arrests that lodge plus clearance, with
        the transmigration acceptance of the last step (every arrest before the first)."""
        if self.last_k > 0.0:
            return self.last_k
        return self.config.homing_per_h + self.config.clearance_per_h

    def add(self, n: float, *, donor: bool, dormant: bool) -> None:
        """Put ``n`` HSCs into the blood (a transplant dose per mouse, or cells that left
        the block)."""
        if not (math.isfinite(n) and n >= 0):
            raise ValueError(f"n = {n!r} must be a finite number >= 0")
        self.counts[CLASSES.index((bool(donor), bool(dormant)))] += n

    def step(self, egressed: np.ndarray, block_rates: np.ndarray, accept_mean: float,
             seed: int, step: int) -> np.ndarray:
        """Advance one step; returns the number of arrests in the block per class (int).

        Parameters
        ----------
        egressed
            Cells per class that left the block during the step (they enter the blood).
        block_rates
            Summed egress hazards per class of the block's cells (1/h): the other marrow
            sends ``(1 - f) / f`` times as many, at a constant rate over the step.
        accept_mean
            Mean transmigration acceptance over the block's endothelial sites: the share
            of the other marrow's arrests that lodge (the rest return to the blood).
        seed, step
            Keys of the random numbers of the block's arrest counts.
        """
        cfg = self.config
        dt = self.dt_hours
        mirror = np.asarray(block_rates, np.float64) * (1.0 - self.f) / self.f  # per hour
        self.counts += np.asarray(egressed, np.float64)
        b0 = self.counts.copy()
        # arrests elsewhere that fail return at once: the other marrow's effective loss
        # is k_h * accept_mean, the block's attempts are drawn from the arrest integral
        k = cfg.homing_per_h * ((1.0 - self.f) * accept_mean + self.f) + cfg.clearance_per_h
        # the effective residence counts the block's failed crossings as returns too
        self.last_k = cfg.homing_per_h * accept_mean + cfg.clearance_per_h
        if k > 0:
            e = math.exp(-k * dt)
            integral = b0 * (1.0 - e) / k + mirror / k * (dt - (1.0 - e) / k)
            self.counts = b0 * e + mirror / k * (1.0 - e)
        else:
            integral = b0 * dt + 0.5 * mirror * dt * dt
            self.counts = b0 + mirror * dt
        arrest = cfg.homing_per_h * integral
        homed_other = arrest * (1.0 - self.f) * accept_mean
        cleared = cfg.clearance_per_h * integral
        # the decay above removed the expected arrests in the block, f * arrest; the drawn
        # attempts replace them, and the model returns the failed ones to the blood. The
        # counts are expected values of the whole mouse's pool, often below one cell at
        # steady state, so a draw may exceed them: the excess is a cell that arrested in
        # the block instead of being cleared during the step (taken from the step's
        # clearance, so nothing is created; a draw is capped by the pool plus that)
        avail = self.counts + self.f * arrest
        cap = np.floor(avail + cleared + 1e-9)
        block = np.array([min(poisson(self.f * a, uniform(seed, step, j, Purpose.BLOOD_HOMING)),
                              int(cap[j]))
                          for j, a in enumerate(arrest)], np.int64)
        excess = np.maximum(block - avail, 0.0)
        cleared = cleared - excess
        self.counts = np.maximum(avail - block, 0.0)
        donor = np.array([c[0] for c in CLASSES])
        inflow = np.asarray(egressed, np.float64) + mirror * dt
        t = self.totals
        t["egress"] += float(inflow.sum())
        t["donor_egress"] += float(inflow[donor].sum())
        t["arrested"] += float(arrest.sum() + excess.sum())
        t["homed"] += float(homed_other.sum())
        t["donor_homed"] += float(homed_other[donor].sum())
        t["cleared"] += float(cleared.sum())
        t["donor_cleared"] += float(cleared[donor].sum())
        self.last_inflow_per_day = float(inflow.sum()) / dt * 24.0
        return block

    def lodged(self, n: int, donor: bool) -> None:
        """Count ``n`` of the block's attempts that lodged (whole-mouse totals)."""
        self.totals["homed"] += n
        if donor:
            self.totals["donor_homed"] += n

    def state(self) -> np.ndarray:
        """Counts, totals and the last inflow as one float64 vector (checkpoints)."""
        return np.concatenate([self.counts, [self.totals[k] for k in TOTALS],
                               [self.last_inflow_per_day, self.last_k]])

    def load_state(self, v: np.ndarray) -> None:
        """Restore :meth:`state` output."""
        v = np.asarray(v, np.float64)
        n = len(CLASSES)
        if v.shape != (n + len(TOTALS) + 2,):
            raise ValueError(f"blood state has shape {v.shape}, expected ({n + len(TOTALS) + 2},)")
        self.counts = v[:n].copy()
        self.totals = {k: float(x) for k, x in zip(TOTALS, v[n:n + len(TOTALS)], strict=True)}
        self.last_inflow_per_day = float(v[-2])
        self.last_k = float(v[-1])


#: cumulative whole-mouse flows kept by :class:`Blood`
TOTALS: tuple[str, ...] = ("egress", "donor_egress", "arrested", "homed", "donor_homed",
                           "cleared", "donor_cleared")
