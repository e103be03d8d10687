"""Benchmark: procedural marrow generation against one scipy Gaussian filter.

For each lattice size the script times ``generate_marrow`` (default C57BL/6 targets,
8 µm voxels) and, in the same process, one ``scipy.ndimage.gaussian_filter`` (sigma = 2
voxels, float32) of a volume of the same shape, and prints the ratio. The issue's target
is a 256^3 lattice in under 30 s on 2 cores. Results go to
``benchmarks/results/tissue.json``.

Usage::

    python benchmarks/bench_tissue.py            # 32^3, 128^3, 256^3
    python benchmarks/bench_tissue.py --large    # also 512 x 512 x 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numba
import numpy as np
from scipy import ndimage

from niche3d.tissue import TissueConfig, generate_marrow, geometry_stats

RESULTS = Path(__file__).resolve().parent / "results" / "tissue.json"


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="also time 512 x 512 x 256")
    ap.add_argument("--repeats", type=int, default=2, help="repeats per size (best is kept)")
    args = ap.parse_args(argv)

    cfg = TissueConfig()
    t0 = time.perf_counter()
    generate_marrow((32, 32, 32), 8.0, cfg, 0)  # compile / load cached kernels
    first_call = time.perf_counter() - t0

    sizes = [(32, 32, 32), (128, 128, 128), (256, 256, 256)]
    if args.large:
        sizes.append((256, 512, 512))
    rows = []
    for shape in sizes:
        reps = args.repeats if np.prod(shape) <= 256**3 else 1
        gen = _best(lambda shape=shape: generate_marrow(shape, 8.0, cfg, 1), reps)
        vol = np.random.default_rng(0).random(shape, dtype=np.float32)
        base = _best(lambda vol=vol: ndimage.gaussian_filter(vol, 2.0), reps)
        del vol
        row = {
            "shape": list(shape),
            "voxels": int(np.prod(shape)),
            "generate_s": gen,
            "gaussian_filter_s": base,
            "ratio": gen / base,
        }
        if shape == (128, 128, 128):
            lat = generate_marrow(shape, 8.0, cfg, 1)
            t1 = time.perf_counter()
            geometry_stats(lat)
            row["geometry_stats_s"] = time.perf_counter() - t1
        rows.append(row)
        print(
            f"{'x'.join(map(str, shape)):>12}: generate {gen:7.2f} s   gaussian_filter {base:6.3f} s"
            f"   ratio {gen / base:6.1f}" + (f"   stats {row['geometry_stats_s']:.2f} s" if "geometry_stats_s" in row else ""),
            flush=True,
        )
    result = {
        "benchmark": "tissue.generate_marrow",
        "baseline": "scipy.ndimage.gaussian_filter(float32, sigma=2) of the same shape",
        "threads": numba.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "first_call_s": first_call,
        "target": "256^3 in < 30 s on 2 cores",
        "rows": rows,
    }
    big = [r for r in rows if r["shape"] == [256, 256, 256]]
    if big:
        print(f"256^3 target (< 30 s): {'met' if big[0]['generate_s'] < 30 else 'NOT met'} ({big[0]['generate_s']:.1f} s)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return result


if __name__ == "__main__":
    main()
