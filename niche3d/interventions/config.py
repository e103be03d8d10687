"""Scenario section ``[[interventions]]``: timed perturbations.

Each table has a ``kind``; the others keys depend on it. Times are in days from the
start of the run.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator

from niche3d._schema import Section, check_tissue_table, param
from niche3d.names import CXCL12, MEMBRANE_SCF

__all__ = ["Knockout", "AMD3100", "GCSF", "FiveFU", "Transplant", "Irradiation", "Intervention"]


#: the largest transplant dose: every circulating cell is simulated one by one, and a
#: mouse holds 1-3 x 10^4 HSCs (purified-HSC doses are 10-10^4)
MAX_DONOR_HSCS = 1_000_000

class Knockout(Section):
    """Delete (or scale) a signal's production in chosen source tissues from ``start_day``.

    ``field`` names a diffusible field or ``membrane_scf``.
    """

    kind: Literal["knockout"] = "knockout"
    field: str = param(CXCL12, unit="-", description=f"diffusible field name or {MEMBRANE_SCF!r}")
    sources: dict[str, float] = param(
        None,
        default_factory=lambda: {"stroma": 0.0},
        unit="-",
        description="per source tissue, the factor left of production (0 = deleted)",
    )
    start_day: float = param(0.0, unit="day", ge=0.0, le=3650.0, description="when the deletion takes effect")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: dict[str, float]) -> dict[str, float]:
        return check_tissue_table(v, what="sources", le=1e3)


class _Doses(Section):
    """Bolus injections at listed days (shared by the drugs with first-order kinetics)."""

    dose_days: list[float] = param(
        None, default_factory=lambda: [0.0], unit="day", description="times of the injections"
    )

    @field_validator("dose_days")
    @classmethod
    def _doses(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 <= d <= 3650 for d in v):
            raise ValueError(f"dose_days {v} must be a non-empty list of days in 0..3650")
        return sorted(v)


class AMD3100(_Doses):
    """CXCR4 antagonist (plerixafor): bolus doses, first-order elimination."""

    kind: Literal["amd3100"] = "amd3100"
    half_life_hours: float = param(
        1.0, unit="h", gt=0.0, le=240.0, description="plasma elimination half-life (mouse ~1 h)"
    )
    peak_blockade: float = param(
        0.9, unit="-", ge=0.0, lt=1.0, description="CXCR4 blockade right after a dose (< 1)"
    )


class GCSF(Section):
    """G-CSF course: daily doses drive neutrophil protease activity in the marrow.

    Protease activity a(t) (1/min, added to every field's decay times its
    ``protease_sensitivity``) rises by ``protease_per_dose`` with each dose and relaxes
    with ``protease_half_life_hours``; osteoblast CXCL12 production falls by
    ``osteoblast_cxcl12_drop`` per dose (multiplicative, recovering after the course).
    """

    kind: Literal["gcsf"] = "gcsf"
    start_day: float = param(0.0, unit="day", ge=0.0, le=3650.0, description="first daily dose")
    doses: int = param(5, unit="-", ge=1, le=60, description="number of daily doses")
    protease_per_dose: float = param(
        0.02, unit="1/min", ge=0.0, le=10.0, description="protease activity added by one dose (calibrate)"
    )
    protease_half_life_hours: float = param(
        36.0, unit="h", gt=0.0, le=1000.0, description="relaxation of protease activity (calibrate)"
    )
    osteoblast_cxcl12_drop: float = param(
        0.3, unit="-", ge=0.0, le=1.0, description="fractional fall of osteoblast CXCL12 production per dose"
    )


class FiveFU(_Doses):
    """5-fluorouracil: a cytotoxic that kills cycling cells; quiescent HSCs survive.

    The kill hazard of cycling cells (active G1 and S/G2/M HSCs, MPPs, progenitor
    compartments) is ``k(t) = peak_kill_per_h * sum_i 2^(-(t - t_i)/h)``.
    """

    kind: Literal["5fu"] = "5fu"
    peak_kill_per_h: float = param(
        0.5, unit="1/h", gt=0.0, le=100.0, description="death hazard of cycling cells right after a dose"
    )
    half_life_hours: float = param(
        6.0, unit="h", gt=0.0, le=240.0, description="decay of the cytotoxic effect (calibrate)"
    )


class Transplant(Section):
    """Intravenous injection of donor HSCs into the mouse's blood (a dose per mouse); the
    block receives its share of their arrests (``cells.blood.block_fraction``)."""

    kind: Literal["transplant"] = "transplant"
    day: float = param(0.0, unit="day", ge=0.0, le=3650.0, description="time of the injection")
    cells: int = param(100, unit="-", ge=1, le=MAX_DONOR_HSCS,
                       description="number of donor HSCs injected, per mouse")
    state: Literal["active_g0", "dormant"] = param(
        "active_g0", unit="-", description="state the donor cells take when they lodge"
    )

    @field_validator("cells", mode="before")
    @classmethod
    def _dose(cls, v: object) -> object:
        if isinstance(v, int | float) and not isinstance(v, bool) and v > MAX_DONOR_HSCS:
            raise ValueError(
                f"cells = {v:g} is more than {MAX_DONOR_HSCS:,}: every circulating cell is "
                "simulated one by one, and a mouse holds 1-3 x 10^4 HSCs (purified-HSC "
                "doses are 10-10^4)")
        return v


class Irradiation(Section):
    """Whole-body irradiation: conditioning that frees niche sites by killing host cells.

    Each HSC and MPP (in the block, the blood and the other marrow) and each progenitor
    survives with ``exp(-dose_gy / d0_gy)`` (single-hit survival; mouse HSC/CFU-S
    D0 ~ 0.9-1.1 Gy, Till & McCulloch, Radiat Res 1961). 9-10 Gy is lethal: the host's HSCs
    are gone and a transplant given after it engrafts into the free niches. The
    niche stroma is taken as radioresistant here (sinusoidal damage and its repair,
    Hooper et al. 2009, are not modelled).
    """

    kind: Literal["irradiation"] = "irradiation"
    day: float = param(0.0, unit="day", ge=0.0, le=3650.0, description="time of the exposure")
    dose_gy: float = param(9.5, unit="Gy", ge=0.0, le=50.0, description="absorbed dose (lethal ~9-11 Gy)")
    d0_gy: float = param(
        1.0, unit="Gy", gt=0.0, le=10.0,
        description="dose that leaves 1/e of HSCs and progenitors alive (Till & McCulloch 1961)",
    )

    @property
    def survival(self) -> float:
        """Surviving share of HSCs and progenitors."""
        return math.exp(-self.dose_gy / self.d0_gy)


Intervention = Annotated[
    Knockout | AMD3100 | GCSF | FiveFU | Transplant | Irradiation, Field(discriminator="kind")
]

