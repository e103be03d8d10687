"""Analyses of runs: each function takes a run store (``Run`` or path) or a live
``Simulation`` and returns tidy tables (reads the public objects; never imported by the
core). Names load lazily (:mod:`niche3d._lazy`).

- :func:`distance_distributions`: HSC distances to sinusoid, endosteum and arteriole
  against random placement, with a null band and a test statistic;
- :func:`state_fractions`: fractions by state, cycle phase and location over time;
- :func:`division_modes`: symmetric renewal, asymmetric and differentiating divisions;
- :func:`clone_sizes`, :func:`lineage_tree`: clones and lineage trees from the events;
- :func:`circulating_counts`: HSCs in blood, egress and homing over time;
- :func:`field_at_cells`: a field at HSCs against random marrow voxels;
- :func:`localisation_table`, :func:`calibration_table`, :func:`validate`: localisation
  statistics and the calibration targets of BIOLOGY.md sections 6 and 7.

``docs/analysis.md`` shows each on a full-size run.
"""

from __future__ import annotations

from niche3d._lazy import lazy_exports

_EXPORTS = {
    "COMPARTMENTS": "niche3d.analysis.localisation",
    "localisation_table": "niche3d.analysis.localisation",
    "calibration_table": "niche3d.analysis.calibration",
    "TARGETS": "niche3d.analysis.calibration",
    "Source": "niche3d.analysis.source",
    "as_source": "niche3d.analysis.source",
    "distance_distributions": "niche3d.analysis.spatial",
    "DistanceDistributions": "niche3d.analysis.spatial",
    "STRUCTURES": "niche3d.analysis.spatial",
    "state_fractions": "niche3d.analysis.dynamics",
    "division_modes": "niche3d.analysis.dynamics",
    "DivisionModes": "niche3d.analysis.dynamics",
    "circulating_counts": "niche3d.analysis.dynamics",
    "clone_sizes": "niche3d.analysis.lineage",
    "lineage_tree": "niche3d.analysis.lineage",
    "LineageTree": "niche3d.analysis.lineage",
    "field_at_cells": "niche3d.analysis.sampling",
    "FieldSample": "niche3d.analysis.sampling",
    "validate": "niche3d.analysis.validation",
    "Validation": "niche3d.analysis.validation",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
