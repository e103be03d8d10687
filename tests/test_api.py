"""The public namespace is pinned, loads lazily, and the core never imports Qt or napari."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import REPO


def test_public_namespace_is_pinned() -> None:
    import niche3d

    assert sorted(niche3d.__all__) == sorted([
        "__version__", "Scenario", "ScenarioError", "load_scenario", "Simulation", "open_run",
        "Run", "StoreError", "Lattice", "Tissue", "sweep", "open_sweep", "sensitivity",
    ])
    for name in niche3d.__all__:
        assert getattr(niche3d, name) is not None
    import niche3d.io
    import niche3d.simulation

    assert niche3d.open_run is niche3d.io.open_run
    assert niche3d.Simulation is niche3d.simulation.Simulation
    import niche3d.ensemble

    assert niche3d.sweep is niche3d.ensemble.sweep
    assert niche3d.open_sweep is niche3d.ensemble.open_sweep
    assert niche3d.sensitivity is niche3d.ensemble.sensitivity


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


def _imported_after(statement: str) -> tuple[list[str], float]:
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        f"{statement}\n"
        "dt = time.perf_counter() - t\n"
        "heavy = ('numba', 'scipy', 'zarr', 'dask', 'pandas', 'napari', 'llvmlite')\n"
        "print(sorted(m for m in heavy if m in sys.modules)); print(dt)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    mods, dt = out.stdout.strip().splitlines()
    return ast.literal_eval(mods), float(dt)


def test_scenario_schema_is_the_ground_floor() -> None:
    """Loading and validating a scenario imports pydantic, not numba, scipy or zarr."""
    heavy, seconds = _imported_after(
        "import niche3d.scenario as s; s.Scenario.default().with_overrides(['run.days=2'])")
    assert heavy == [], f"import niche3d.scenario pulled in {heavy}"
    # the time is printed for the record (-s), never asserted: machines are shared
    print(f"import niche3d.scenario + a validated override: {seconds * 1e3:.0f} ms")


def test_run_store_probe_imports_no_zarr() -> None:
    """What the napari reader asks of every path it is offered is one JSON read."""
    heavy, _ = _imported_after(
        "from niche3d.io import is_run_store, records_written; is_run_store('.'); records_written('.')")
    assert heavy == []


def test_schema_module_imports_nothing_of_niche3d_but_the_leaf_names() -> None:
    for module in ("_schema", "names"):
        src = (REPO / "niche3d" / f"{module}.py").read_text(encoding="utf-8")
        imports = re.findall(r"^\s*(?:from|import)\s+(niche3d[\w.]*)", src, re.M)
        assert set(imports) <= {"niche3d.names"}, (module, imports)
