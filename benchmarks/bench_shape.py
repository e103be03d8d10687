"""Cost per voxel of a simulated day: a cube against elongated lattices of the same size.

The femur-shaped lattice is about 8.7 times longer than wide. This script builds, in one
process, the default scenario on a cube of ``--n``³ voxels and on two lattices with the
same number of voxels elongated ``--ratio`` : 1 : 1, once with the long axis first (z)
and once last (x), then runs one simulated day of each in turn, ``--days`` rounds, after a
warm-up day, and prints the wall time per voxel and simulated day of each shape, its
ratio to the cube, and the solver's per-cycle cost measured on each lattice (the
``cycle_profile`` of ``bench_fields.py``: where a V-cycle's time goes, in milliseconds).

Why the axis matters: every kernel walks x-rows (the contiguous, vectorised axis) inside
z-planes (the parallel axis, and the axis of the fused wavefront smoothers), and pays a
fixed cost per row and per plane; an elongated lattice with its long axis on z has short
rows and small planes on every multigrid level. Results go to
``benchmarks/results/bench_shape.json``.

Run::

    python benchmarks/bench_shape.py --n 128 --ratio 8 --days 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np
from _results import write_results  # noqa: E402

from niche3d.scenario import Scenario
from niche3d.simulation import Simulation

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))
from bench_fields import cycle_profile, sweep_time  # noqa: E402


def shapes(n: int, ratio: float) -> dict[str, tuple[int, int, int]]:
    """The cube and the two elongated lattices with (about) as many voxels."""
    w = int(round((n**3 / ratio) ** (1 / 3)))
    long = int(round(n**3 / w**2))
    return {"cube": (n, n, n), "long_z": (long, w, w), "long_x": (w, w, long)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="edge of the cube, voxels")
    ap.add_argument("--ratio", type=float, default=8.67, help="long : short edge (femur 1248 : 144)")
    ap.add_argument("--days", type=int, default=2, help="timed rounds of one simulated day")
    ap.add_argument("--out", default=str(RESULTS / "bench_shape.json"))
    args = ap.parse_args()
    sims: dict[str, Simulation] = {}
    out: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "numba_threads": numba.get_num_threads()},
                 "shapes": {}, "days": args.days}
    for name, shape in shapes(args.n, args.ratio).items():
        sc = Scenario.default().with_overrides([f"domain.shape={list(shape)}"])
        t = time.perf_counter()
        sims[name] = Simulation(sc)
        setup = time.perf_counter() - t
        sims[name].run(1)  # warm-up day (kernels, caches, first solves)
        fs = sims[name].fields
        ts = sweep_time(shape)
        prof = cycle_profile(fs, "cxcl12", ts) or {}
        out["shapes"][name] = {"shape": list(shape), "voxels": int(np.prod(shape)),
                               "setup_seconds": setup, "sweep_ms": ts * 1e3,
                               "cycle_ms": {k: v * ts * 1e3 for k, v in prof.items()},
                               "day_seconds": []}
        print(f"{name:7s} {shape}: set-up {setup:.1f} s, one V-cycle "
              f"{prof.get('total', float('nan')) * ts * 1e3:.1f} ms", flush=True)
    for _ in range(args.days):
        for name, sim in sims.items():
            t = time.perf_counter()
            sim.run(1)
            out["shapes"][name]["day_seconds"].append(time.perf_counter() - t)
    for rec in out["shapes"].values():
        rec["ns_per_voxel_day"] = float(np.median(rec["day_seconds"])) / rec["voxels"] * 1e9
    cube = out["shapes"]["cube"]
    for name, rec in out["shapes"].items():
        rec["ratio_to_cube"] = rec["ns_per_voxel_day"] / cube["ns_per_voxel_day"]
        rec["cycle_ratio_to_cube"] = (rec["cycle_ms"].get("total", np.nan) / rec["voxels"]) / (
            cube["cycle_ms"].get("total", np.nan) / cube["voxels"])
        print(f"{name:7s} {rec['ns_per_voxel_day']:.0f} ns per voxel and day, "
              f"{rec['ratio_to_cube']:.2f}x the cube; V-cycle per voxel "
              f"{rec['cycle_ratio_to_cube']:.2f}x", flush=True)
    write_results(args.out, out)


if __name__ == "__main__":
    main()
