"""Metrics and null models for runs (reads the public objects; never imported by the core)."""

from niche3d.analysis.localisation import COMPARTMENTS, localisation_table

__all__ = ["COMPARTMENTS", "localisation_table"]
