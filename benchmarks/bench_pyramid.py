"""What the resolution pyramid and the z-slab chunks cost the writer and save the viewer.

On a femur-sized lattice (144 x 144 x 1248 voxels of 8 µm, ``scenarios/femur.toml``; two
float32 fields, the tissue and the niche-site map), in one process:

* **write**: ``RunWriter.write_record`` per record with today's layout (z slabs, levels
  s0 + s1) against the layout before (chunks cut along the longest axis, one level),
  records alternating between the two stores so both see the same machine state;
* **read**: what a viewer asks of each store: one y-x plane of a field at full resolution
  (a 2D view, a step of the z or time slider), the whole lattice of a field (a 3D view:
  napari renders the coarsest level of a pyramid) and the plane napari shows when the
  whole femur fits the window (level 1 when there is one).

Prints the times and ratios, writes ``benchmarks/results/bench_pyramid.json``.

Run::

    python benchmarks/bench_pyramid.py            # 6 records per store, ~1 minute
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import write_results

RESULTS = Path(__file__).parent / "results"
SHAPE = (144, 144, 1248)
FIELDS = [("cxcl12", "nM", (0.0, 40.0)), ("scf", "nM", (0.0, 20.0))]


def _old_inner_chunk(shape: Any, itemsize: int) -> tuple[int, int, int]:
    """The layout before: halved along the longest axis until a chunk fits 4 MiB."""
    c = [int(n) for n in shape]
    while int(np.prod(c)) * itemsize > 4 * 2**20 and max(c) > 1:
        i = int(np.argmax(c))
        c[i] = -(-c[i] // 2)
    return (c[0], c[1], c[2])


def _create(path: Path, n: int, old: bool) -> Any:
    import niche3d.io._layout as layout
    from niche3d.io import RunWriter
    from niche3d.scenario import Scenario

    saved = layout.inner_chunk, layout.PYRAMID_MIN_VOXELS
    if old:
        layout.inner_chunk, layout.PYRAMID_MIN_VOXELS = _old_inner_chunk, 2**62
    try:
        sc = Scenario.default().with_overrides({"domain.shape": list(SHAPE)})
        return RunWriter.create(path, scenario=sc, labels=_labels(0), voxel_um=8.0, record_hours=24.0,
                                n_records=n, fields=FIELDS, seed=1, code_version="bench", dt_hours=1.0,
                                niche=True)
    finally:
        layout.inner_chunk, layout.PYRAMID_MIN_VOXELS = saved


def _labels(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    lab = np.ones(SHAPE, np.uint8)
    lab[:, :20] = 2
    lab[rng.random(SHAPE) < 0.03] = 5
    return lab


def _record(i: int) -> dict[str, Any]:
    rng = np.random.default_rng(100 + i)
    z = np.linspace(0, 1, SHAPE[0], dtype=np.float32)[:, None, None]
    f = {"cxcl12": (z * 30 + rng.random(SHAPE, dtype=np.float32)).astype(np.float32),
         "scf": (z * 10 + rng.random(SHAPE, dtype=np.float32)).astype(np.float32)}
    sites = np.zeros(SHAPE, np.uint8)
    sites[rng.random(SHAPE) < 0.002] = rng.integers(1, 4, dtype=np.uint8)
    return {"fields": f, "labels": None, "niche": sites, "metrics": {"n": 1.0},
            "cells": {"track_id": np.arange(3), "z": np.array([1, 2, 3]), "y": np.array([1, 2, 3]),
                      "x": np.array([1, 2, 3])}}


def _reads(run: Any, t: int) -> dict[str, float]:
    """Seconds to read what a viewer asks for, each from a record not read before (the
    reader keeps the files it read): a full-resolution plane, the coarsest level's whole
    lattice (a 3D view), a plane of the coarsest level (the whole femur in the window)."""
    lv = run.pyramid("cxcl12")
    jobs = {
        "plane_s0": (lv[0].array, (t, SHAPE[0] // 2)),
        "volume_coarsest": (lv[-1].array, (t - 1,)),
        "plane_coarsest": (lv[-1].array, (t - 2, lv[-1].array.shape[1] // 2)),
    }
    out = {}
    for name, (arr, key) in jobs.items():
        t0 = time.perf_counter()
        np.asarray(arr[key])
        out[name] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_pyramid.json")
    a = ap.parse_args()
    from niche3d.io import open_run

    with tempfile.TemporaryDirectory() as tmp:
        paths = {"now": Path(tmp) / "now.zarr", "before": Path(tmp) / "before.zarr"}
        writers = {k: _create(p, a.records, k == "before") for k, p in paths.items()}
        write: dict[str, list[float]] = {k: [] for k in paths}
        for i in range(a.records):
            rec = _record(i)
            for k in (("now", "before") if i % 2 == 0 else ("before", "now")):
                t0 = time.perf_counter()
                writers[k].write_record(i, 24.0 * i, **rec)
                write[k].append(time.perf_counter() - t0)
        size = {k: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for k, p in paths.items()}
        runs = {k: open_run(p) for k, p in paths.items()}
        read = {k: _reads(run, a.records - 1) for k, run in runs.items()}
        doc = {
            "shape": list(SHAPE), "records": a.records, "levels": {k: r.levels for k, r in runs.items()},
            "write_ms_median": {k: 1e3 * float(np.median(v)) for k, v in write.items()},
            "store_mb": {k: v / 1e6 for k, v in size.items()},
            "read_ms": {k: {n: 1e3 * x for n, x in v.items()} for k, v in read.items()},
            "ratio_before_over_now": {n: read["before"][n] / read["now"][n] for n in read["now"]},
            "cpus": os.cpu_count(), "machine": platform.machine(),
        }
    print(f"lattice {SHAPE}, {a.records} records per store; levels now {doc['levels']['now']}, before 1")
    for k in ("now", "before"):
        r = doc["read_ms"][k]
        print(f"  {k:6s} write {doc['write_ms_median'][k]:6.0f} ms/record, {doc['store_mb'][k]:6.0f} MB; "
              f"read: plane {r['plane_s0']:6.1f} ms, 3D volume {r['volume_coarsest']:6.0f} ms, "
              f"zoomed-out plane {r['plane_coarsest']:5.1f} ms")
    print("  before/now: " + ", ".join(f"{n} {x:.1f}x" for n, x in doc["ratio_before_over_now"].items()))
    write_results(a.out, doc)


if __name__ == "__main__":
    main()
