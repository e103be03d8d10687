"""Timed perturbations: drugs with pharmacokinetics, knockouts by source tissue.

Names load lazily (see :mod:`niche3d._lazy`).
"""

from __future__ import annotations

from niche3d._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ("AMD3100", "GCSF", "FiveFU", "Knockout", "Transplant", "Irradiation", "Intervention"),
        "niche3d.interventions.config",
    ),
    "Effects": "niche3d.interventions.schedule",
    "InterventionSchedule": "niche3d.interventions.schedule",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
