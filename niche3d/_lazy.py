"""Lazy package namespaces: a package's public names load their module on first use.

Why: the scenario schema (pure pydantic) lives next to the code that uses it, inside
packages whose kernels import numba and scipy. With eager ``__init__`` imports,
``import niche3d.scenario`` (or a CLI ``--help``, or the napari reader deciding whether it
claims a path) paid for compiling-capable numba, scipy and zarr. A package declares
``name -> module`` once and gets PEP 562 ``__getattr__`` / ``__dir__`` from here.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for a package whose names load lazily.

    Parameters
    ----------
    package
        The package's ``__name__`` (for error messages).
    namespace
        The package's ``globals()``; a loaded name is cached there, so the module's
        ``__getattr__`` runs once per name.
    exports
        Public name -> absolute module path that defines it.
    """

    def __getattr__(name: str) -> Any:
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(mod), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__
