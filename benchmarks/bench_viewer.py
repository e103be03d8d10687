"""How fast a big run opens in napari: the niche3d plugin against napari-ome-zarr.

Opens one run store (``--store``; e.g. a 15-day femur run, about 1 GB) in a hidden napari
viewer, in this process, alternately with

* ``niche3d``: the niche3d plugin (``add_run_layers``: fields, tissue, niche sites, cells
  and lineage) as ``niche3d view`` does;
* ``ome-zarr``: napari-ome-zarr, which reads the same store as a plain OME-Zarr image
  (fields and tissue, no cells),

and times each from the call to the first frame drawn (a screenshot of the canvas), the
first open of each reader separately (cold for that reader; the OS file cache is warm
after the first) and the best of ``--repeats``. Also times ``niche3d view``'s whole start
in a fresh Python process (imports, the window, the layers, the first frame), the way a
user starts it. Needs a display: run under ``xvfb-run -a``. Writes
``benchmarks/results/bench_viewer.json``.

Run::

    niche3d run scenarios/femur.toml --days 15 -o /tmp/femur15.zarr     # ~1 GB, ~2 minutes
    xvfb-run -a python benchmarks/bench_viewer.py --store /tmp/femur15.zarr
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._results import write_results

RESULTS = Path(__file__).parent / "results"

_FRESH = """
import time, sys
t0 = time.perf_counter()
import napari
from napari_niche3d._launch import add_run_layers
v = napari.Viewer(show=False)
v.window._qt_window.resize(1000, 800)
v.window._qt_window.grab()
add_run_layers(v, sys.argv[1])
v.screenshot(canvas_only=True, flash=False)
print(time.perf_counter() - t0)
v.close()
"""


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="a run store (e.g. a femur run)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_viewer.json")
    a = ap.parse_args()
    import napari
    from napari_niche3d._launch import add_run_layers

    store = str(a.store.resolve())
    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(1000, 800)
    viewer.window._qt_window.grab()

    def niche3d() -> None:
        add_run_layers(viewer, store)

    def ome_zarr() -> None:
        viewer.open(store, plugin="napari-ome-zarr")

    times: dict[str, list[float]] = {"niche3d": [], "ome-zarr": []}
    for _ in range(a.repeats):
        for name, fn in (("niche3d", niche3d), ("ome-zarr", ome_zarr)):
            viewer.layers.clear()
            t0 = time.perf_counter()
            fn()
            viewer.screenshot(canvas_only=True, flash=False)
            times[name].append(time.perf_counter() - t0)
    viewer.close()
    fresh = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", _FRESH, store], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
        fresh.append(float(r.stdout.strip().splitlines()[-1]))
    doc = {
        "store": store, "store_gb": _size(a.store) / 1e9,
        "first_open_s": {k: v[0] for k, v in times.items()},
        "best_s": {k: min(v) for k, v in times.items()},
        "ratio_best_ome_zarr_over_niche3d": min(times["ome-zarr"]) / min(times["niche3d"]),
        "fresh_process_s": fresh,
        "cpus": os.cpu_count(), "machine": platform.machine(), "napari": napari.__version__,
    }
    print(f"{store}: {doc['store_gb']:.2f} GB")
    for k in times:
        print(f"  {k:9s} first open {times[k][0]:.2f} s, best {min(times[k]):.2f} s (to the first frame)")
    print(f"  niche3d view from a fresh process (imports, window, layers, first frame): "
          f"{fresh[0]:.1f} s, then {fresh[1]:.1f} s")
    write_results(a.out, doc)


if __name__ == "__main__":
    main()
