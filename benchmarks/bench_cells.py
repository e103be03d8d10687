"""Cell-step cost: O(cells), not O(voxels).

Two sweeps, each against baselines timed in the same process:

1. step time vs number of cells (1e3 .. 1e6) on a fixed 128^3 lattice;
2. step time vs lattice size (32^3 .. 256^3) at a fixed 1e4 cells.

Baselines: ``cells_copy`` copies as many bytes as the cell state holds (the memory
bandwidth floor of touching every cell once), ``lattice_copy`` copies one int32 grid
of the lattice (what a single O(voxels) pass would cost). The report prints step time,
time per cell and the ratios; results go to benchmarks/results/bench_cells.json.

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_cells.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from niche3d._jit import set_threads
from niche3d.cells import CellModel, CellsConfig, Modifiers, Signals
from niche3d.tissue.codes import Tissue
from niche3d.tissue.lattice import Lattice

OUT = Path(__file__).resolve().parent / "results" / "bench_cells.json"


def world(n: int) -> tuple[Lattice, Signals]:
    """Marrow cube with sinusoid slabs (endothelium + stroma) every 32 voxels along x."""
    lab = np.full((n, n, n), Tissue.MARROW, np.uint8)
    for x0 in range(8, n - 4, 32):
        lab[:, :, x0 : x0 + 2] = Tissue.SINUSOID
        lab[:, :, x0 - 1] = Tissue.ENDOTHELIUM
        lab[:, :, x0 + 2] = Tissue.ENDOTHELIUM
        lab[:, :, x0 - 2] = Tissue.STROMA
    lat = Lattice(lab, 8.0)
    x = np.arange(n, dtype=np.float32)
    prof = 10.0 + 10.0 * np.cos(2 * np.pi * (x - 9) / 32.0)
    cx = np.ascontiguousarray(np.broadcast_to(prof, lab.shape), dtype=np.float32)
    sig = Signals(cxcl12=cx, scf=(cx * 0.2).astype(np.float32),
                  membrane_scf=(lab == Tissue.STROMA).astype(np.float32))
    return lat, sig


def populated(lat: Lattice, sig: Signals, n_cells: int, seed: int = 1) -> CellModel:
    cfg = CellsConfig()
    model = CellModel(cfg, lat, seed=seed, dt_hours=1.0, motility_substeps=6)
    free = np.flatnonzero(lat.enterable.ravel())
    rng = np.random.default_rng(seed)
    vox = np.sort(rng.choice(free, size=n_cells, replace=False))
    nz, ny, nx = lat.shape
    z, rem = np.divmod(vox, ny * nx)
    y, x = np.divmod(rem, nx)
    states = rng.choice([0, 1, 2, 3], size=n_cells, p=[0.2, 0.5, 0.25, 0.05])
    for code in range(4):
        sel = states == code
        model.add_cells(z[sel], y[sel], x[sel], state=code, residual=True)
    model.drain_events()
    return model


def time_steps(model: CellModel, sig: Signals, n: int, start: int = 0) -> float:
    """Median wall time of ``n`` steps (seconds)."""
    ts = []
    for k in range(start, start + n):
        t0 = time.perf_counter()
        model.step(k, float(k), sig, Modifiers())
        ts.append(time.perf_counter() - t0)
        model.drain_events()
    return float(np.median(ts))


def time_copy(nbytes: int, repeats: int = 5) -> float:
    src = np.ones(max(nbytes // 8, 1), np.float64)
    dst = np.empty_like(src)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


BYTES_PER_CELL = 8 + 8 + 4 + 4 + 1 + 1 + 12 + 1 + 1 + 8 + 8 + 1 + 8  # the columns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sweep (CI smoke)")
    ap.add_argument("--threads", type=int, default=0, help="numba threads (0 = all)")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    counts = [1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    sizes = [32, 64, 96] if args.quick else [32, 64, 128, 192, 256]
    reps = 3 if args.quick else 5
    lat_n = 64 if args.quick else 128

    # compile once
    lat, sig = world(32)
    m = populated(lat, sig, 500)
    time_steps(m, sig, 2)

    rows_cells = []
    lat, sig = world(lat_n)
    t_lat = time_copy(lat.size * 4)
    for n in counts:
        model = populated(lat, sig, n)
        time_steps(model, sig, 1)  # warm (allocations)
        t = time_steps(model, sig, reps, start=1)
        t_cells = time_copy(n * BYTES_PER_CELL)
        rows_cells.append({"cells": n, "lattice": lat.shape, "step_s": t,
                           "ns_per_cell": t / n * 1e9, "micro_steps": model.n_micro,
                           "cells_copy_s": t_cells, "lattice_copy_s": t_lat,
                           "ratio_to_cells_copy": t / t_cells,
                           "ratio_to_lattice_copy": t / t_lat})
        r = rows_cells[-1]
        print(f"cells {n:>8d} on {lat_n}^3: step {t * 1e3:9.2f} ms  {r['ns_per_cell']:8.1f} ns/cell"
              f"  x{r['ratio_to_cells_copy']:8.1f} cell-copy  x{r['ratio_to_lattice_copy']:7.2f} lattice-copy")

    rows_lat = []
    n_fixed = 10_000
    for size in sizes:
        lat, sig = world(size)
        model = populated(lat, sig, n_fixed)
        time_steps(model, sig, 1)
        t = time_steps(model, sig, reps, start=1)
        t_lat = time_copy(lat.size * 4)
        rows_lat.append({"cells": n_fixed, "lattice": lat.shape, "voxels": lat.size, "step_s": t,
                         "lattice_copy_s": t_lat, "ratio_to_lattice_copy": t / t_lat})
        print(f"lattice {size:>4d}^3 ({lat.size:>9d} voxels), {n_fixed} cells: step {t * 1e3:8.2f} ms"
              f"  lattice copy {t_lat * 1e3:8.2f} ms  ratio {t / t_lat:7.3f}")

    # scaling exponents (log-log slope)
    c = np.array([r["cells"] for r in rows_cells], float)
    s = np.array([r["step_s"] for r in rows_cells])
    v = np.array([r["voxels"] for r in rows_lat], float)
    sl = np.array([r["step_s"] for r in rows_lat])
    slope_cells = float(np.polyfit(np.log(c[1:]), np.log(s[1:]), 1)[0])
    slope_vox = float(np.polyfit(np.log(v), np.log(sl), 1)[0])
    print(f"log-log slope: step time vs cells {slope_cells:.2f} (1 = linear), "
          f"vs voxels at fixed cells {slope_vox:.2f} (0 = independent)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "benchmark": "bench_cells",
        "machine": platform.platform(),
        "threads": threads,
        "quick": args.quick,
        "vs_cells": rows_cells,
        "vs_lattice": rows_lat,
        "slope_vs_cells": slope_cells,
        "slope_vs_voxels": slope_vox,
    }, indent=2, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
