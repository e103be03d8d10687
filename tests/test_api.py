"""The public namespace is pinned, loads lazily, and the core never imports Qt or napari."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_public_namespace_is_pinned() -> None:
    import niche3d

    assert sorted(niche3d.__all__) == sorted([
        "__version__", "Scenario", "ScenarioError", "load_scenario", "Simulation", "open_run",
        "Run", "StoreError", "Lattice", "Tissue",
    ])
    for name in niche3d.__all__:
        assert getattr(niche3d, name) is not None
    import niche3d.io
    import niche3d.simulation

    assert niche3d.open_run is niche3d.io.open_run
    assert niche3d.Simulation is niche3d.simulation.Simulation


def test_import_is_light() -> None:
    """`import niche3d` (and the CLI's --help) must not pay for numba, zarr or dask."""
    code = "import sys, niche3d; print(sorted(m for m in ('numba', 'zarr', 'dask', 'napari') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_core_has_no_qt_or_napari_imports() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(napari|qtpy|PyQt\d|PySide\d|magicgui|vispy)\b", re.M)
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "niche3d").rglob("*.py")
        if pattern.search(p.read_text(encoding="utf-8"))
    ]
    # the CLI's `view` command imports the plugin lazily, inside the function, by design
    assert offenders == []
