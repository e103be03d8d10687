"""The downstream lineage compartments: MPP -> CMP / CLP -> mature output.

HSCs that leave the lattice as MPPs (the ``exit`` rule) feed three well-mixed
compartments. Their size sets the systemic demand that feeds back on HSC activation,
cycle entry and fate (see docs/cells.md, "Lineage compartments and demand").
"""

from __future__ import annotations

import numpy as np

from niche3d.cells.config import LineageConfig

__all__ = ["LINEAGES", "Lineage"]

#: mature lineages of the compartment model (daily output per lineage in metrics)
LINEAGES: tuple[str, ...] = ("erythroid", "megakaryocyte", "granulocyte_monocyte", "lymphoid")


class Lineage:
    """MPP, CMP and CLP compartments advanced exactly over each cell step.

    Parameters
    ----------
    config
        The ``[cells.lineage]`` section.
    dt_hours
        Cell step in hours.

    Attributes
    ----------
    comp : numpy.ndarray
        Compartment sizes ``[mpp, cmp, clp]`` (cells).
    out_rate, out_total : numpy.ndarray
        Mature output per lineage (:data:`LINEAGES`): per day over the last step, and
        cumulative (cells).
    p_ref : float
        Progenitor pool at the demand set point.
    demand, deviation : float
        ``max(deviation, 0)`` and ``1 - pool / p_ref`` clipped to [-1, 1].
    last_exit_rate : float
        MPP inflow of the last step, per day.
    """

    def __init__(self, config: LineageConfig, dt_hours: float) -> None:
        self.config = config
        self.dt_hours = float(dt_hours)
        self.comp = np.zeros(3, dtype=np.float64)
        self.out_rate = np.zeros(4, dtype=np.float64)
        self.out_total = np.zeros(4, dtype=np.float64)
        self.p_ref = 0.0
        self.demand = 0.0
        self.deviation = 0.0
        self.last_exit_rate = 0.0
        self._prop_cache: dict[float, np.ndarray] = {}

    def set_homeostasis(self, marrow_mm3: float) -> None:
        """Put the compartments at the steady state of the blood demand of
        ``marrow_mm3`` of marrow (``demand_mpp_per_mm3_per_day`` times the volume) and make
        that progenitor pool the demand set point.

        The set point is systemic: it does not depend on how many HSCs the block holds.
        """
        if not (np.isfinite(marrow_mm3) and marrow_mm3 >= 0):
            raise ValueError(f"marrow_mm3 = {marrow_mm3!r} must be a finite number >= 0")
        lc = self.config
        j = marrow_mm3 * lc.demand_mpp_per_mm3_per_day / 24.0  # MPP per hour
        mpp = j * lc.mpp_residence_days * 24.0
        out = j * lc.mpp_amplification
        cmp_ = out * lc.cmp_fraction * lc.cmp_residence_days * 24.0
        clp = out * (1 - lc.cmp_fraction) * lc.clp_residence_days * 24.0
        self.comp[:] = (mpp, cmp_, clp)
        self.p_ref = float(mpp + cmp_ + clp)
        self.out_rate[:] = self.rates(out * lc.cmp_fraction, out * (1 - lc.cmp_fraction))
        self.demand = 0.0
        self.deviation = 0.0

    def rates(self, cmp_in: float, clp_in: float) -> np.ndarray:
        """Mature output per day per lineage at steady throughput (inputs per hour)."""
        lc = self.config
        c = cmp_in * lc.cmp_amplification * 24.0
        gm = 1.0 - lc.erythroid_share - lc.megakaryocyte_share
        return np.array([c * lc.erythroid_share, c * lc.megakaryocyte_share, c * gm,
                         clp_in * lc.clp_amplification * 24.0])

    def step(self, exits: int, cyto: float) -> None:
        """Advance the compartments one step, exactly.

        The compartments obey the linear ODE ``M' = J - M/tm - k M``,
        ``C' = a f M/tm - C/tc - k C``, ``L' = a (1-f) M/tm - L/tl - k L`` (``k`` the
        cytotoxic hazard) with the MPP inflow ``J`` constant over the step; the step is
        the matrix exponential of the system augmented by ``J`` and by the integrated
        outflows of CMP and CLP (which give the mature output per lineage).

        Parameters
        ----------
        exits
            MPPs that left the lattice during the step.
        cyto
            Cytotoxic hazard in 1/h.
        """
        dt = self.dt_hours
        j = exits / dt
        self.last_exit_rate = j * 24.0
        prop = self.propagator(float(cyto))
        x = np.array([self.comp[0], self.comp[1], self.comp[2], 0.0, 0.0, j])
        y = prop @ x
        self.comp[:] = np.maximum(y[:3], 0.0)
        rates = self.rates(y[3] / dt, y[4] / dt)
        self.out_rate[:] = rates
        self.out_total += rates * dt / 24.0
        pool = float(self.comp.sum())
        dev = 0.0 if self.p_ref <= 0 else float(min(max(1.0 - pool / self.p_ref, -1.0), 1.0))
        self.deviation = dev
        self.demand = max(dev, 0.0)

    def propagator(self, cyto: float) -> np.ndarray:
        """``expm(A dt)`` of the augmented 6x6 system for a cytotoxic hazard (cached)."""
        cache = self._prop_cache
        if cyto in cache:
            return cache[cyto]
        from scipy.linalg import expm

        lc = self.config
        tm = lc.mpp_residence_days * 24.0
        tc = lc.cmp_residence_days * 24.0
        tl = lc.clp_residence_days * 24.0
        a = lc.mpp_amplification
        f = lc.cmp_fraction
        A = np.zeros((6, 6))
        A[0, 0] = -1 / tm - cyto
        A[0, 5] = 1.0
        A[1, 0] = a * f / tm
        A[1, 1] = -1 / tc - cyto
        A[2, 0] = a * (1 - f) / tm
        A[2, 2] = -1 / tl - cyto
        A[3, 1] = 1 / tc
        A[4, 2] = 1 / tl
        prop = expm(A * self.dt_hours)
        if len(cache) < 64:
            cache[cyto] = prop
        return prop

    def metrics(self) -> dict[str, float]:
        """Demand, pool, compartment sizes and outputs (the lineage part of
        ``CellModel.metrics``), in the order the model reports them."""
        m: dict[str, float] = {}
        m["demand"] = float(self.demand)
        m["pool_deviation"] = float(self.deviation)
        m["progenitor_pool"] = float(self.comp.sum())
        m["progenitor_pool_reference"] = float(self.p_ref)
        m["compartment_mpp"] = float(self.comp[0])
        m["compartment_cmp"] = float(self.comp[1])
        m["compartment_clp"] = float(self.comp[2])
        for k, name in enumerate(LINEAGES):
            m[f"output_{name}_per_day"] = float(self.out_rate[k])
            m[f"output_{name}_total"] = float(self.out_total[k])
        m["mpp_output_per_day"] = float(self.last_exit_rate)
        return m
