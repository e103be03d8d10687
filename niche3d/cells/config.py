"""Scenario section ``[cells]``: HSC population, kinetics, motility, adhesion, blood.

Values from shared/BIOLOGY.md sections 4-6; *(calibrate)* values are fitted to the
section 6 targets.
"""

from __future__ import annotations

from typing import Literal

from niche3d._schema import Section, param

__all__ = ["CellsConfig"]


class CellsConfig(Section):
    """HSC cellular automaton parameters."""

    hsc_per_mm3: float = param(
        400.0, unit="1/mm³", ge=0.0, le=1e6, description="initial HSC density in non-bone marrow"
    )
    initial_placement: Literal["niche", "random"] = param(
        "niche", unit="-", description="seed HSCs weighted by niche signal, or uniformly in marrow"
    )
    dormant_fraction: float = param(
        0.2, unit="-", ge=0.0, le=1.0, description="share of initial HSCs that are dormant"
    )
    speed_um_min: float = param(
        1.0, unit="µm/min", ge=0.0, le=100.0, description="random-motility speed of unbound cells (calibrate)"
    )
