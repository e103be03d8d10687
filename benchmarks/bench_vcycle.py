"""The solver's own cost: one V-cycle against the bandwidth bound of the bytes it moves.

In one process this script

1. measures the machine's memory bandwidth with STREAM-style numba kernels (parallel, and
   on one thread: the ratio is the most threads can give a memory-bound kernel;
   float32 arrays of ``--stream-mb`` each, far larger than any cache): *copy* (``b = a``)
   and *triad* (``a = b + s c``), counting the bytes as STREAM does
   (each array read or written once; the read-for-ownership of a written line is not
   counted, so a kernel's bound is computed the same way);
2. builds the default scenario on ``--shape`` (or ``--scenario``), runs ``--warm-days``
   of simulation so the fields hold a real state, and times each step of one correction
   cycle of CXCL12 (``cycle_profile`` of ``bench_fields.py``: best of ``--repeats``);
3. counts, for each step, the bytes it must move: every array it reads once and every
   array it writes once per pass over memory, from the actual array sizes of the
   hierarchy's levels and the pass structure of the kernels (:func:`traffic`), and divides
   by the measured bandwidth: the step's bandwidth bound.

It prints, per step and for the V-cycle (the preconditioner: smoothing, transfers, coarse
levels, fjord block; the Krylov inner products are fused into the post-smoothing) and the
whole correction cycle (plus the float64 residual and the update), the time, the bound,
their ratio, the ratio to the bandwidth a plain float32 7-point sweep (``stencil_sweep``)
reaches on the same lattice (a stencil kernel's practical limit) and the cost in sweep
equivalents. Results go to ``benchmarks/results/bench_vcycle.json``.

Run::

    python benchmarks/bench_vcycle.py --shape 256 256 256
    python benchmarks/bench_vcycle.py --scenario scenarios/femur.toml
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import prange

from niche3d.fields import _coarse as CL
from niche3d.fields import _uniform_kernels as UK
from niche3d.fields.multigrid import Multigrid
from niche3d.scenario import Scenario, load_scenario
from niche3d.simulation import Simulation

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402
from bench_fields import cycle_profile, sweep_time  # noqa: E402


# --------------------------------------------------------------------------- bandwidth
@numba.njit(parallel=True, cache=True)
def _copy(a, b):  # type: ignore[no-untyped-def]
    for i in prange(a.size):
        b[i] = a[i]


@numba.njit(parallel=True, cache=True)
def _triad(a, b, c, s):  # type: ignore[no-untyped-def]
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


def stream(mb: int, repeats: int) -> dict[str, float]:
    """Bandwidth in GB/s (1e9 B/s) of the copy and triad kernels, best of
    ``repeats`` (STREAM's convention: the best run is the machine's capability)."""
    n = mb * 2**20 // 4
    a = np.ones(n, np.float32)
    b = np.ones(n, np.float32)
    c = np.ones(n, np.float32)
    runs = {"copy": (lambda: _copy(a, b), 8 * n),
            "triad": (lambda: _triad(a, b, c, np.float32(0.5)), 12 * n)}
    out = {}
    for name, (fn, nbytes) in runs.items():
        fn()
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[name] = nbytes / best / 1e9
    return out


# --------------------------------------------------------------------------- traffic
def traffic(mg: Multigrid) -> dict[str, float]:
    """Bytes each step of one correction cycle of the uniform level-0 path must move.

    A pass over memory reads each of its input arrays once and writes each output once
    (perfect reuse inside a pass: the fused wavefront passes keep their planes in cache).
    Level 0 arrays: correction ``e``, residual ``r`` and inverse diagonal ``invd``
    (float32), Krylov direction ``p`` (int16), labels (uint8), solution ``hi`` (float32)
    and ``lo`` (int16). A coarse level stores its face coefficients ``ax``, ``ay``,
    ``az``, reaction ``kr``, correction ``e`` and right-hand side ``rhs`` (float32).
    """
    n0 = math.prod(mg.shape)
    f32, i16 = 4 * n0, 2 * n0
    per_pass = UK.MAX_STAGES - UK.MAX_STAGES % 2
    pre_passes = math.ceil(2 * mg.pre / per_pass) if mg.pre else 0
    L1 = mg.levels[0]
    out: dict[str, float] = {
        # lab, hi, lo in; r out (the cells' uptake is a short sorted list)
        "residual_float64": n0 + f32 + i16 + f32,
        # first pass: r, invd in, e out (e starts at 0); later passes also read e
        "pre_smoothing": (2 * f32 + f32) + (pre_passes - 1) * 4 * f32 if pre_passes else f32,
        # e, r, invd in; the coarse right-hand side out
        "residual_and_restriction": 3 * f32 + L1.rhs.nbytes,
        "coarse_levels": coarse_traffic(mg),
        # e, invd, coarse e in; e out
        "prolongation": 3 * f32 + L1.e.nbytes,
        # fjord voxels: e and r gathered, e scattered, the block factors read
        "fjord_block_solve": fjord_traffic(mg),
        # one fused pass (post_smooth half-sweeps + the inner products): e, r, invd, p in,
        # e out
        "post_smoothing_and_krylov_inner_products": (
            math.ceil((2 * mg.post + 1) / UK.MAX_STAGES) * (4 * f32 + i16)),
        # hi, lo, e, p in; hi, lo, p out
        "update": 2 * (f32 + i16) + f32 + i16 + i16,
    }
    return out


def coarse_traffic(mg: Multigrid) -> float:
    """Bytes of the V-cycle on levels 1..L (see :func:`traffic`)."""
    cs = mg.coarse.coarse_smooth
    passes = math.ceil(2 * cs / CL.GS_STAGES) if cs else 0
    total = 0.0
    levels = mg.levels
    for i, L in enumerate(levels):
        coef = L.ax.nbytes + L.ay.nbytes + L.az.nbytes + L.kr.nbytes
        if i == len(levels) - 1:  # sparse LU: rhs in, factors read, e out
            lu = mg.coarse.lu
            fac = 0 if lu is None else 12 * (lu[0].L.nnz + lu[0].U.nnz)
            total += L.rhs.nbytes + L.e.nbytes + fac
            continue
        N = levels[i + 1]
        total += L.e.nbytes  # zeroed before the cycle on it
        total += 2 * passes * (coef + L.rhs.nbytes + 2 * L.e.nbytes)  # pre and post passes
        total += coef + L.e.nbytes + L.rhs.nbytes + N.rhs.nbytes  # residual, restriction
        total += L.kr.nbytes + 2 * L.e.nbytes + N.e.nbytes  # prolongation
    return total


def fjord_traffic(mg: Multigrid) -> float:
    """Bytes of the fjord block solve: its voxels' indices (int64), e and r gathered, e
    scattered, and the L and U factors of the block (12 B per stored entry)."""
    k = mg.blocks.fjords.size
    lu = mg.blocks._fjord_lu
    fac = 0 if lu is None else 12 * (lu[0].L.nnz + lu[0].U.nnz)
    return 8 * k + 4 * k + 4 * k + 4 * k + fac


V_CYCLE = ("pre_smoothing", "residual_and_restriction", "coarse_levels", "prolongation",
           "fjord_block_solve", "post_smoothing_and_krylov_inner_products")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 256, 256], metavar=("Z", "Y", "X"))
    ap.add_argument("--scenario", help="a scenario file (its own shape) instead of --shape")
    ap.add_argument("--warm-days", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--stream-mb", type=int, default=256)
    ap.add_argument("--out", default=str(RESULTS / "bench_vcycle.json"))
    args = ap.parse_args()

    bw = stream(args.stream_mb, args.repeats)
    nt = numba.get_num_threads()
    numba.set_num_threads(1)
    bw1 = stream(args.stream_mb, args.repeats)
    numba.set_num_threads(nt)
    print(f"bandwidth (GB/s), {nt} threads: " + ", ".join(f"{k} {v:.1f}" for k, v in bw.items())
          + "; 1 thread: " + ", ".join(f"{k} {v:.1f}" for k, v in bw1.items())
          + f"; {nt} threads / 1 on the triad: {bw['triad'] / bw1['triad']:.2f} (the most "
          "more threads can give a memory-bound kernel)", flush=True)
    if args.scenario:
        sc = load_scenario(args.scenario)
    else:
        sc = Scenario.default().with_overrides([f"domain.shape={list(args.shape)}"])
    sim = Simulation(sc)
    sim.run(args.warm_days)
    fs = sim.fields
    mg = fs._fields["cxcl12"].mg
    shape = tuple(mg.shape)
    ts = sweep_time(shape)  # type: ignore[arg-type]
    prof = cycle_profile(fs, "cxcl12", ts, repeats=args.repeats)
    if prof is None:
        raise SystemExit("cxcl12 is not on the uniform (matrix-free) path here")
    prof.pop("total")
    tb = traffic(mg)
    gbs = bw["triad"]
    rows = {}
    # the bandwidth a stencil kernel reaches here: one plain 7-point sweep moves 8 B/voxel
    # (in cache on small lattices, where it exceeds the DRAM figure)
    sweep_gbs = 8 * math.prod(shape) / ts / 1e9
    for step, se in prof.items():
        t = se * ts
        bound = tb[step] / (gbs * 1e9)
        rows[step] = {"ms": t * 1e3, "bytes_per_voxel": tb[step] / math.prod(shape),
                      "bound_ms": bound * 1e3, "ratio": t / bound if bound else math.nan,
                      "ratio_to_sweep_bandwidth": t / (tb[step] / (sweep_gbs * 1e9))
                      if tb[step] else math.nan,
                      "sweep_equivalents": se}
    for name, keys in (("v_cycle", V_CYCLE), ("correction_cycle", tuple(prof))):
        t = sum(rows[k]["ms"] for k in keys)
        b = sum(rows[k]["bound_ms"] for k in keys)
        nb = sum(rows[k]["bytes_per_voxel"] for k in keys)
        rows[name] = {"ms": t, "bytes_per_voxel": nb, "bound_ms": b, "ratio": t / b,
                      "ratio_to_sweep_bandwidth": t / 1e3 / (nb * math.prod(shape) / (sweep_gbs * 1e9)),
                      "sweep_equivalents": sum(rows[k]["sweep_equivalents"] for k in keys)}
    print(f"{'step':44s} {'ms':>8s} {'B/voxel':>8s} {'bound ms':>9s} {'ratio':>6s} "
          f"{'/sweep bw':>9s} {'sweeps':>7s}")
    for k, r in rows.items():
        print(f"{k:44s} {r['ms']:8.2f} {r['bytes_per_voxel']:8.1f} {r['bound_ms']:9.2f} "
              f"{r['ratio']:6.2f} {r['ratio_to_sweep_bandwidth']:9.2f} {r['sweep_equivalents']:7.2f}")
    unit = 8 * math.prod(shape) / (gbs * 1e9)
    print(f"one sweep {ts * 1e3:.2f} ms (its bound {unit * 1e3:.2f} ms: it reaches "
          f"{sweep_gbs:.0f} GB/s); levels {[list(L.shape) for L in mg.levels]}", flush=True)
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "numba_threads": numba.get_num_threads(),
                       "load_average": os.getloadavg()},
           "shape": list(shape), "bandwidth_GBs": bw, "bandwidth_GBs_1_thread": bw1,
           "bound_uses": "triad",
           "sweep_ms": ts * 1e3, "sweep_bound_ms": unit * 1e3, "sweep_GBs": sweep_gbs,
           "steps": rows}
    write_results(args.out, out)


if __name__ == "__main__":
    main()
