"""Timed perturbations: drugs with pharmacokinetics, knockouts by source tissue."""

from niche3d.interventions.config import AMD3100, GCSF, FiveFU, Intervention, Knockout, Transplant
from niche3d.interventions.schedule import Effects, InterventionSchedule

__all__ = [
    "AMD3100",
    "GCSF",
    "FiveFU",
    "Knockout",
    "Transplant",
    "Intervention",
    "Effects",
    "InterventionSchedule",
]
