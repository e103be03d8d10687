"""Errors a run raises, importable without numba (the CLI maps them to exit status 2)."""

from __future__ import annotations

from typing import Any

__all__ = ["SimulationError", "SweepError"]


class SimulationError(RuntimeError):
    """A run stopped by a runtime guard (:mod:`niche3d.guards`); ``diagnostic`` is what
    went into its store: what, where, when."""

    def __init__(self, message: str, diagnostic: dict[str, Any]) -> None:
        super().__init__(message)
        self.diagnostic = diagnostic


class SweepError(ValueError):
    """A sweep directory that cannot be used: not a sweep, another sweep's, unreadable, or
    a scheduler that cannot be reached (``niche3d.ensemble``)."""
