"""What the scenario's interventions do at a given time.

Interventions are functions of time (doses with half-lives) plus discrete events. The
schedule turns the scenario's list into :class:`Effects` at any time ``t`` (hours); the
simulation applies them to the fields (source scales, protease) and to the cells
(CXCR4 blockade, protease-driven unbinding).

Pharmacokinetics
----------------
AMD3100
    Plasma level after doses at ``t_i``: ``C(t) = sum_i 2^(-(t - t_i)/h)`` (one dose = 1).
    CXCR4 blockade is receptor occupancy by the drug, ``b = C / (C + K)``, with
    ``K = (1 - peak) / peak`` so that one fresh dose blocks ``peak``.
G-CSF
    Protease activity ``a(t) = p * sum_i 2^(-(t - t_i)/h)`` (1/min) over daily doses,
    and osteoblast CXCL12 production scaled by ``prod_i (1 - drop * 2^(-(t - t_i)/h))``:
    each dose cuts production by ``drop``, recovering with the same half-life.
5-FU
    Death hazard of cycling cells ``k(t) = peak * sum_i 2^(-(t - t_i)/h)`` (1/h).
Transplant
    A discrete event: donor HSCs enter the blood pool during the step containing ``day``.
Irradiation
    A discrete event: host cells die with ``1 - exp(-dose / D0)`` during the step
    containing ``day`` (before a transplant given in the same step).
Knockout
    From ``start_day``, production of the named signal in each listed tissue is multiplied
    by the given factor (0 = deleted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from niche3d.interventions.config import (
    AMD3100,
    GCSF,
    FiveFU,
    Intervention,
    Irradiation,
    Knockout,
    Transplant,
)
from niche3d.names import CXCL12, MEMBRANE_SCF

__all__ = ["Effects", "InterventionSchedule"]

_OSTEOBLAST = ("endosteum", "sno")


@dataclass(frozen=True)
class Effects:
    """The state of every intervention at one time."""

    source_scale: dict[str, dict[str, float]] = field(default_factory=dict)
    """target (field name or ``membrane_scf``) -> tissue -> production factor."""
    protease: float = 0.0
    """neutrophil protease activity, 1/min."""
    cxcr4_blockade: float = 0.0
    """share of CXCR4 blocked, 0..1."""
    cytotoxic: float = 0.0
    """death hazard of cycling cells, 1/h (5-FU)."""
    active: tuple[str, ...] = ()
    """labels of the interventions acting now (for the timeline)."""

    def close_to(self, other: Effects, rtol: float = 0.01) -> bool:
        """True if no effect differs by more than ``rtol`` (relative, or absolute near 0)."""

        def near(a: float, b: float) -> bool:
            return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-3)

        for a, b in (
            (self.protease, other.protease),
            (self.cxcr4_blockade, other.cxcr4_blockade),
            (self.cytotoxic, other.cytotoxic),
        ):
            if not near(a, b):
                return False
        keys = set(self.source_scale) | set(other.source_scale)
        for k in keys:
            a, b = self.source_scale.get(k, {}), other.source_scale.get(k, {})
            for t in set(a) | set(b):
                if not near(a.get(t, 1.0), b.get(t, 1.0)):
                    return False
        return True


class InterventionSchedule:
    """Evaluate a scenario's interventions at any time.

    Parameters
    ----------
    interventions
        The scenario's ``interventions`` list.
    field_names
        Names of the diffusible fields; a knockout of an unknown field is an error.
    """

    def __init__(self, interventions: Sequence[Intervention], field_names: Sequence[str]) -> None:
        targets = set(field_names) | {MEMBRANE_SCF}
        for i, iv in enumerate(interventions):
            if isinstance(iv, Knockout) and iv.field not in targets:
                raise ValueError(
                    f"interventions.{i}.field = {iv.field!r}: no such signal; allowed: "
                    + ", ".join(sorted(targets))
                )
            if isinstance(iv, GCSF) and CXCL12 not in field_names:
                raise ValueError(
                    f"interventions.{i}: gcsf lowers osteoblast {CXCL12} production, but "
                    f"there is no {CXCL12!r} field (fields: {', '.join(field_names) or 'none'})"
                )
        self.interventions = list(interventions)
        self.field_names = tuple(field_names)

    def __len__(self) -> int:
        return len(self.interventions)

    def at(self, t_hours: float) -> Effects:
        """Effects of every intervention at ``t_hours``."""
        scale: dict[str, dict[str, float]] = {}
        protease = 0.0
        conc = 0.0
        peak = 0.0
        cytotoxic = 0.0
        active: list[str] = []

        def mul(target: str, tissue: str, f: float) -> None:
            scale.setdefault(target, {})
            scale[target][tissue] = scale[target].get(tissue, 1.0) * f

        for iv in self.interventions:
            if isinstance(iv, Knockout):
                if t_hours >= iv.start_day * 24.0:
                    for tissue, f in iv.sources.items():
                        mul(iv.field, tissue, f)
                    active.append(f"knockout:{iv.field}")
            elif isinstance(iv, AMD3100):
                c = sum(
                    2.0 ** (-(t_hours - d * 24.0) / iv.half_life_hours)
                    for d in iv.dose_days
                    if t_hours >= d * 24.0
                )
                if c > 0:
                    conc += c
                    peak = max(peak, iv.peak_blockade)
                    if c > 0.01:
                        active.append("amd3100")
            elif isinstance(iv, FiveFU):
                level = sum(
                    2.0 ** (-(t_hours - d * 24.0) / iv.half_life_hours)
                    for d in iv.dose_days
                    if t_hours >= d * 24.0
                )
                cytotoxic += iv.peak_kill_per_h * level
                if level > 0.01:
                    active.append("5fu")
            elif isinstance(iv, GCSF):
                level = 0.0
                keep = 1.0
                for k in range(iv.doses):
                    t0 = (iv.start_day + k) * 24.0
                    if t_hours >= t0:
                        w = 2.0 ** (-(t_hours - t0) / iv.protease_half_life_hours)
                        level += w
                        keep *= 1.0 - iv.osteoblast_cxcl12_drop * w
                protease += iv.protease_per_dose * level
                if level > 0.01:
                    active.append("gcsf")
                if keep < 1.0:  # the constructor checked that CXCL12 exists
                    for tissue in _OSTEOBLAST:
                        mul(CXCL12, tissue, keep)
        blockade = 0.0
        if conc > 0 and peak > 0:
            k = (1.0 - peak) / peak
            blockade = conc / (conc + k) if k > 0 else 1.0
        return Effects(
            source_scale=scale,
            protease=protease,
            cxcr4_blockade=blockade if math.isfinite(blockade) else 1.0,
            cytotoxic=cytotoxic,
            active=tuple(active),
        )

    def transplants_in(self, t0_hours: float, t1_hours: float) -> list[Transplant]:
        """Transplants whose time falls in ``[t0, t1)`` (hours), in scenario order."""
        return [
            iv
            for iv in self.interventions
            if isinstance(iv, Transplant) and t0_hours <= iv.day * 24.0 < t1_hours
        ]

    def irradiations_in(self, t0_hours: float, t1_hours: float) -> list[Irradiation]:
        """Irradiations whose time falls in ``[t0, t1)`` (hours), in scenario order."""
        return [
            iv
            for iv in self.interventions
            if isinstance(iv, Irradiation) and t0_hours <= iv.day * 24.0 < t1_hours
        ]

    def event_times_hours(self) -> list[float]:
        """Times at which an effect jumps (doses, knockout starts), sorted."""
        times: set[float] = set()
        for iv in self.interventions:
            if isinstance(iv, Knockout):
                times.add(iv.start_day * 24.0)
            elif isinstance(iv, AMD3100 | FiveFU):
                times.update(d * 24.0 for d in iv.dose_days)
            elif isinstance(iv, Transplant | Irradiation):
                times.add(iv.day * 24.0)
            elif isinstance(iv, GCSF):
                times.update((iv.start_day + k) * 24.0 for k in range(iv.doses))
        return sorted(times)
