"""How fast a big run opens in napari: the niche3d plugin against napari-ome-zarr.

Opens one run store (``--store``; e.g. a 15-day femur run, about 1 GB) in a hidden napari
viewer, in this process, alternately with

* ``niche3d``: the niche3d plugin (``add_run_layers``: fields, tissue, niche sites, cells
  and lineage) as ``niche3d view`` does;
* ``ome-zarr``: napari-ome-zarr, which reads the same store as a plain OME-Zarr image
  (fields and tissue, no cells),

and times each from the call to the first frame drawn (a screenshot of the canvas), the
first open of each reader separately (cold for that reader; the OS file cache is warm
after the first) and the best of ``--repeats``. Then, with the niche3d layers, what a
user does next: a step of the z slider and of the time slider in 2D (median of 6, each
to its frame), the switch to 3D (the surfaces meshed, the volume uploaded) and a time
step in 3D. Also times ``niche3d view``'s whole start in a fresh Python process (imports,
the window, the layers, the first frame), the way a user starts it, and the start of a
bare napari window alone (the part no plugin can shorten). Needs a display: run under
``xvfb-run -a``. Writes ``benchmarks/results/bench_viewer.json``.

``--compare OTHER`` measures a second store the same way in the same process (e.g. the
same run written without a pyramid, by an earlier niche3d) and prints the ratios.

Run::

    niche3d run scenarios/femur.toml --days 15 -o /tmp/femur15.zarr     # ~1 GB, ~2 minutes
    xvfb-run -a python benchmarks/bench_viewer.py --store /tmp/femur15.zarr [--compare OLD]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
_BARE = """
import time
t0 = time.perf_counter()
import napari
v = napari.Viewer(show=False)
v.window._qt_window.resize(1000, 800)
v.window._qt_window.grab()
v.screenshot(canvas_only=True, flash=False)
print(time.perf_counter() - t0)
v.close()
"""


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _interact(viewer: Any, shot: Callable[[], None]) -> dict[str, float]:
    """Times of what a user does after the first frame, on the niche3d layers."""
    import numpy as np
    from napari_niche3d._display import decorate

    v = viewer
    decorate(v)
    shot()

    def timed(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        shot()
        return time.perf_counter() - t0

    rh, vz = v.layers["tissue"].scale[0], v.layers["tissue"].scale[1]
    n_t = int(v.layers["tissue"].level_shapes[0][0])
    z_steps, t_steps = [], []
    for k in range(6):
        z_steps.append(timed(lambda k=k: v.dims.set_point(1, v.dims.point[1] + (vz if k % 2 else -vz))))
        t_steps.append(timed(lambda k=k: v.dims.set_point(0, rh * ((k + 1) % n_t))))
    out = {"z_step_2d_s": float(np.median(z_steps)), "t_step_2d_s": float(np.median(t_steps))}
    out["to_3d_s"] = timed(lambda: setattr(v.dims, "ndisplay", 3))
    out["t_step_3d_s"] = timed(lambda: v.dims.set_point(0, rh * 2 % (rh * n_t)))
    v.dims.ndisplay = 2
    return out


def _measure(store: str, repeats: int) -> dict:
    import napari
    from napari_niche3d._launch import add_run_layers

    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(1000, 800)
    viewer.window._qt_window.grab()

    def shot() -> None:
        viewer.screenshot(canvas_only=True, flash=False)

    def niche3d() -> None:
        add_run_layers(viewer, store)

    def ome_zarr() -> None:
        viewer.open(store, plugin="napari-ome-zarr")

    times: dict[str, list[float]] = {"niche3d": [], "ome-zarr": []}
    for _ in range(repeats):
        for name, fn in (("niche3d", niche3d), ("ome-zarr", ome_zarr)):
            viewer.layers.clear()
            t0 = time.perf_counter()
            fn()
            shot()
            times[name].append(time.perf_counter() - t0)
    viewer.layers.clear()
    niche3d()
    steps = _interact(viewer, shot)
    viewer.close()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    fresh = [float(subprocess.run([sys.executable, "-c", _FRESH, store], capture_output=True, text=True,
                                  check=True, env=env).stdout.strip().splitlines()[-1]) for _ in range(2)]
    bare = [float(subprocess.run([sys.executable, "-c", _BARE], capture_output=True, text=True,
                                 check=True, env=env).stdout.strip().splitlines()[-1]) for _ in range(2)]
    from niche3d.io import open_run

    return {
        "store": store, "store_gb": _size(Path(store)) / 1e9, "levels": open_run(store).levels,
        "first_open_s": {k: v[0] for k, v in times.items()},
        "best_s": {k: min(v) for k, v in times.items()},
        "ratio_best_ome_zarr_over_niche3d": min(times["ome-zarr"]) / min(times["niche3d"]),
        **steps,
        "fresh_process_s": fresh, "bare_napari_window_s": bare,
    }


def _print(doc: dict) -> None:
    print(f"{doc['store']}: {doc['store_gb']:.2f} GB, {doc['levels']} level(s)")
    for k in doc["first_open_s"]:
        print(f"  {k:9s} first open {doc['first_open_s'][k]:.2f} s, best {doc['best_s'][k]:.2f} s (to the first frame)")
    print(f"  2D: z step {1e3 * doc['z_step_2d_s']:.0f} ms, time step {1e3 * doc['t_step_2d_s']:.0f} ms; "
          f"to 3D {doc['to_3d_s']:.2f} s, 3D time step {1e3 * doc['t_step_3d_s']:.0f} ms")
    f, b = doc["fresh_process_s"], doc["bare_napari_window_s"]
    print(f"  niche3d view from a fresh process (imports, window, layers, first frame): {f[0]:.1f} s, then "
          f"{f[1]:.1f} s; a bare napari window alone: {b[0]:.1f} s, then {b[1]:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="a run store (e.g. a femur run)")
    ap.add_argument("--compare", type=Path, default=None, help="a second store, measured the same way")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_viewer.json")
    a = ap.parse_args()
    import napari

    doc = _measure(str(a.store.resolve()), a.repeats)
    _print(doc)
    if a.compare is not None:
        other = _measure(str(a.compare.resolve()), a.repeats)
        _print(other)
        keys = ("z_step_2d_s", "t_step_2d_s", "to_3d_s", "t_step_3d_s")
        doc["compare"] = other
        doc["ratio_compare_over_store"] = {
            "first_open_niche3d": other["first_open_s"]["niche3d"] / doc["first_open_s"]["niche3d"],
            **{k: other[k] / doc[k] for k in keys}}
        print("  " + str(a.compare) + " / " + str(a.store) + ": "
              + ", ".join(f"{k} {v:.1f}x" for k, v in doc["ratio_compare_over_store"].items()))
    doc.update({"cpus": os.cpu_count(), "machine": platform.machine(), "napari": napari.__version__})
    write_results(a.out, doc)


if __name__ == "__main__":
    main()
