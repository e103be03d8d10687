"""Time per simulated day and peak memory against lattice size, with fitted exponents.

Each size runs in its own child process (so its peak resident memory is its own): the
default scenario on an ``n``³ lattice (and, with ``--femur``, the shipped femur), one
warm-up day, then ``--days`` timed days without a store. With ``--hscs`` it also seeds
about that many HSCs on one ``--hsc-lattice`` cube and times the first 6 hours (the
surplus over the niche sites leaves over days), reporting the mean cell count. The parent fits
``time = a · voxels^b`` and ``memory = c · voxels^d`` by least squares in log-log over
the sizes at or above ``--fit-from`` voxels (small lattices are dominated by fixed costs),
and again over those at or above ``--dram-from`` (arrays beyond the last-level cache);
beside each size it times one plain float32 7-point sweep of the lattice, whose own
exponent is what the memory hierarchy alone contributes (in cache on small lattices,
from DRAM on large ones). It writes ``benchmarks/results/bench_scaling.json`` and a plot
(``docs/img/scaling.png``, with ``--plot``). Python 3.11+, 2 cores.

Run::

    python benchmarks/bench_scaling.py --sizes 32 64 96 128 192 256 --plot
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
IMG = Path(__file__).resolve().parent.parent / "docs" / "img" / "scaling.png"


def child(shape: list[int], days: float, femur: bool, hscs: int = 0) -> None:
    from niche3d.scenario import Scenario, load_scenario
    from niche3d.simulation import Simulation
    from niche3d.tissue import build_lattice

    if femur:
        sc = load_scenario(Path(__file__).resolve().parent.parent / "scenarios" / "femur.toml")
    else:
        sc = Scenario.default().with_overrides([f"domain.shape={shape}"])
    lat = build_lattice(sc.domain.shape, sc.domain.voxel_um, sc.tissue, seed=sc.run.seed)
    if hscs:  # seed about this many HSCs: the density over the lattice's non-bone marrow
        nonbone_mm3 = float(lat.enterable.sum()) * sc.domain.voxel_um**3 / 1e9
        sc = sc.with_overrides([f"cells.hsc_per_mm3={min(hscs / nonbone_mm3, 1e6)}",
                                "cells.initial_placement=random"])
    t = time.perf_counter()
    sim = Simulation(sc, lattice=lat)
    setup = time.perf_counter() - t
    if hscs:
        # an over-full marrow loses its surplus over days (finite niche sites): time the
        # first 6 hours after seeding, at about the seeded number (kernels cached)
        days = 0.25
        sim.run(1.0 / 24.0)
    else:
        sim.run(1.0)
    n0 = sim.cells.n_cells
    t = time.perf_counter()
    sim.run(days)
    per_day = (time.perf_counter() - t) / days
    n_cells = 0.5 * (n0 + sim.cells.n_cells)
    # the memory hierarchy's own scaling, measured beside: one plain float32 7-point sweep
    # of this lattice (in cache on small lattices, from DRAM on large ones)
    from niche3d.fields import _uniform_kernels as UK

    u = np.random.default_rng(0).random(sc.domain.shape, dtype=np.float32)
    v = np.zeros_like(u)
    UK.stencil_sweep(u, v)
    sweeps = []
    for _ in range(10):
        t = time.perf_counter()
        UK.stencil_sweep(u, v)
        sweeps.append(time.perf_counter() - t)
    del u, v
    print(json.dumps({"shape": list(sc.domain.shape), "voxels": int(np.prod(sc.domain.shape)),
                      "cells": int(round(n_cells)), "setup_seconds": setup,
                      "seconds_per_day": per_day, "sweep_seconds": float(np.median(sweeps)),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(exponent, prefactor) of y = a x^b by least squares in log-log."""
    b, loga = np.polyfit(np.log(x), np.log(y), 1)
    return float(b), float(np.exp(loga))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256])
    ap.add_argument("--femur", action="store_true", help="also the shipped femur")
    ap.add_argument("--days", type=float, default=2.0)
    ap.add_argument("--fit-from", type=float, default=5e5, help="fit over lattices this big or more")
    ap.add_argument("--dram-from", type=float, default=4e6,
                    help="also fit over lattices this big or more (16 MB float32 arrays: "
                         "beyond the 32 MB last-level cache once a kernel reads two)")
    ap.add_argument("--plot", action="store_true", help="write docs/img/scaling.png")
    ap.add_argument("--out", default=str(RESULTS / "bench_scaling.json"))
    ap.add_argument("--hscs", type=int, nargs="*", default=[],
                    help="also seed about these many HSCs on one --hsc-lattice cube")
    ap.add_argument("--hsc-lattice", type=int, default=160, help="edge of that cube")
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-hscs", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-femur", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the plot from the JSON at --out")
    args = ap.parse_args()
    if args.replot:
        out = json.loads(Path(args.out).read_text())
        plot(out["rows"], out)
        return
    if args.child or args.child_femur:
        child(list(args.child or [0, 0, 0]), args.days, args.child_femur, args.child_hscs)
        return
    rows = []
    jobs: list[list[str]] = [["--child", str(n), str(n), str(n)] for n in args.sizes]
    if args.femur:
        jobs.append(["--child-femur"])
    n = args.hsc_lattice
    jobs += [["--child", str(n), str(n), str(n), "--child-hscs", str(h)] for h in args.hscs]
    for job in jobs:
        r = subprocess.run([sys.executable, __file__, *job, "--days", str(args.days)],
                           capture_output=True, text=True, check=True)
        row = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{str(row['shape']):18s} {row['voxels']:>10d} voxels {row['cells']:>6d} cells: "
              f"{row['seconds_per_day']:7.3f} s/day, peak {row['peak_rss_mb']:7.0f} MB, "
              f"set-up {row['setup_seconds']:5.1f} s", flush=True)
    for r, job in zip(rows, jobs, strict=True):
        r["seeded_hscs"] = int(job[-1]) if "--child-hscs" in job else 0
    cube = [r for r in rows if len(set(r["shape"])) == 1 and r["voxels"] >= args.fit_from
            and not r["seeded_hscs"]]
    out: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                 "days": args.days, "rows": rows}
    if len(cube) >= 2:
        v = np.array([r["voxels"] for r in cube], float)
        out["time_exponent"], out["time_prefactor"] = fit(v, np.array([r["seconds_per_day"] for r in cube]))
        out["memory_exponent"], out["memory_prefactor"] = fit(v, np.array([r["peak_rss_mb"] for r in cube]))
        out["sweep_exponent"] = fit(v, np.array([r["sweep_seconds"] for r in cube]))[0]
        print(f"fitted over {len(cube)} cubes >= {args.fit_from:g} voxels: time per day ~ voxels^"
              f"{out['time_exponent']:.2f}, peak memory ~ voxels^{out['memory_exponent']:.2f}; "
              f"one plain sweep (the memory hierarchy alone) ~ voxels^{out['sweep_exponent']:.2f}")
        big = [r for r in cube if r["voxels"] >= args.dram_from]
        if len(big) >= 2:
            vb = np.array([r["voxels"] for r in big], float)
            out["time_exponent_beyond_cache"] = fit(vb, np.array([r["seconds_per_day"] for r in big]))[0]
            out["sweep_exponent_beyond_cache"] = fit(vb, np.array([r["sweep_seconds"] for r in big]))[0]
            print(f"over {len(big)} cubes >= {args.dram_from:g} voxels (arrays beyond the "
                  f"last-level cache): time ~ voxels^{out['time_exponent_beyond_cache']:.2f}, "
                  f"sweep ~ voxels^{out['sweep_exponent_beyond_cache']:.2f}")
    by_cells = [r for r in rows if r["seeded_hscs"]]
    if len(by_cells) >= 2:
        c = np.array([max(r["cells"], 1) for r in by_cells], float)
        t = np.array([r["seconds_per_day"] for r in by_cells])
        base = t.min()  # the lattice's own cost, from the fewest cells
        out["cells_time_exponent"] = fit(c, t)[0]
        extra = t - base
        keep = extra > 0.05 * t
        if keep.sum() >= 2:
            out["cells_marginal_time_exponent"] = fit(c[keep], extra[keep])[0]
        out["cells_memory_exponent"] = fit(c, np.array([r["peak_rss_mb"] for r in by_cells]))[0]
        print(f"against cells on {n}^3: time per day ~ cells^{out['cells_time_exponent']:.2f} "
              f"(beyond the fewest cells' time: ~ cells^"
              f"{out.get('cells_marginal_time_exponent', float('nan')):.2f}), peak memory ~ cells^"
              f"{out['cells_memory_exponent']:.2f}")
    write_results(args.out, out)
    if args.plot:
        plot(rows, out)


def plot(rows: list[dict], out: dict) -> None:
    """Time per day and peak memory against voxels (docs/img/scaling.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, key, label in ((axes[0], "seconds_per_day", "wall time per simulated day (s)"),
                           (axes[1], "peak_rss_mb", "peak resident memory (MB)")):
        for r in rows:
            if r["seeded_hscs"]:
                continue
            femur = len(set(r["shape"])) > 1
            ax.loglog(r["voxels"], r[key], "s" if femur else "o",
                      color="tab:red" if femur else "tab:blue")
        if "time_exponent" in out:
            xs = np.geomspace(min(r["voxels"] for r in rows), max(r["voxels"] for r in rows), 50)
            b, a = (out["time_exponent"], out["time_prefactor"]) if key == "seconds_per_day" \
                else (out["memory_exponent"], out["memory_prefactor"])
            ax.loglog(xs, a * xs**b, "--", color="gray", label=f"fit: voxels^{b:.2f}")
            if key == "seconds_per_day" and "sweep_exponent" in out:
                # the plain sweep, scaled onto the runs: the memory hierarchy's own shape
                pts = [r for r in rows if not r["seeded_hscs"] and len(set(r["shape"])) == 1]
                k = float(np.median([r[key] / r["sweep_seconds"] for r in pts]))
                ax.loglog([r["voxels"] for r in pts], [k * r["sweep_seconds"] for r in pts],
                          "^", mfc="none", color="tab:green",
                          label=f"plain sweep x {k:.0f} (voxels^{out['sweep_exponent']:.2f})")
            ax.legend(frameon=False, fontsize=8)
        ax.set_xlabel("lattice voxels")
        ax.set_ylabel(label)
    axes[0].set_title("default scenario on n³ (circles), femur (square)", fontsize=9)
    IMG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG, dpi=110)
    print(f"wrote {IMG}")


if __name__ == "__main__":
    main()
