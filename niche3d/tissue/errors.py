"""Errors of the tissue package, importable without its numerical modules (the CLI maps
them to exit status 2)."""

from __future__ import annotations

__all__ = ["LabelImageError"]


class LabelImageError(ValueError):
    """A label image that cannot be imported: what is wrong and the key or file to fix."""
