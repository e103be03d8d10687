"""Do two numba threads help? 1 vs 2 threads, per threading set-up, idle and under load.

For each threading set-up (numba's own choice with libgomp spinning, libgomp with
``OMP_WAIT_POLICY=PASSIVE``, numba's ``workqueue`` layer, each with niche3d's thread
governor off; the governor of ``niche3d/_threads.py`` with spinning threads; and niche3d
as it runs: the governor with sleeping threads) a child process is started with that environment; the
layer is fixed for a process's life, so set-ups cannot share one. Inside each child the
two thread counts alternate (1, 2, 1, 2, ...) on the same objects, so both see the same
machine state:

* **field solve**: a cold solve (zero start) of both default fields on a procedural
  marrow lattice of ``--n``³ voxels, every cell voxel a sink;
* **end to end**: one simulated day of the default scenario on a
  ``--run-shape`` block, writing its run store, stepped alternately with 1 and 2 threads
  (results are bit-identical for any thread count, so the alternation does not change
  the run).

Each set-up is measured idle and with ``--load`` busy processes (one busy core of two is
the shared-machine case). Prints the ratio time(1 thread) / time(2 threads) (above 1:
two threads help) and writes ``benchmarks/results/bench_threads.json``.

Run::

    python benchmarks/bench_threads.py            # full: 128³ solve, 64x128x128 run
    python benchmarks/bench_threads.py --quick    # smaller, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"

# name -> environment of the child (niche3d/_threads.py explains the choice)
# (GOMP_SPINCOUNT=300000 is libgomp's own default spin, spelled out so that niche3d,
# which sets OMP_WAIT_POLICY=PASSIVE when neither is set, leaves it alone)
SETUPS: dict[str, dict[str, str]] = {
    "numba default (omp, spinning)": {"NICHE3D_ADAPTIVE_THREADS": "0", "GOMP_SPINCOUNT": "300000"},
    "omp passive": {"NICHE3D_ADAPTIVE_THREADS": "0", "OMP_WAIT_POLICY": "PASSIVE"},
    "workqueue": {"NICHE3D_ADAPTIVE_THREADS": "0", "NUMBA_THREADING_LAYER": "workqueue",
                  "GOMP_SPINCOUNT": "300000"},
    "governor, spinning": {"GOMP_SPINCOUNT": "300000"},
    "niche3d (governor, passive)": {},
}
_CLEAR = ("NICHE3D_ADAPTIVE_THREADS", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER", "GOMP_SPINCOUNT",
          "NUMBA_NUM_THREADS")


def _child(args: argparse.Namespace) -> dict:
    import numba

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_fields import make_lattice

    from niche3d import Scenario, Simulation
    from niche3d.fields import FieldSet
    from niche3d.fields.config import FieldsConfig

    numba.set_num_threads(2)
    out: dict = {"layer": None}
    lat = make_lattice(args.n, "generator", 1, 8.0)
    fs = FieldSet(lat, FieldsConfig())
    rng = np.random.default_rng(1)
    enter = np.flatnonzero(lat.enterable.ravel())
    cells = np.sort(rng.choice(enter, max(1, enter.size // 2000), replace=False))
    zero = {k: (v * 0 if k.startswith("field") else v) for k, v in fs.state_dict().items()}

    def solve() -> None:
        fs.load_state_dict({k: v.copy() for k, v in zero.items()})
        fs.solve(cells)

    for nt in (1, 2):  # compile and warm both
        numba.set_num_threads(nt)
        solve()
    out["layer"] = numba.threading_layer()
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for nt in (1, 2):
            numba.set_num_threads(nt)
            t = time.perf_counter()
            solve()
            times[nt].append(time.perf_counter() - t)
    out["solve"] = {f"t{k}_s": float(np.median(v)) for k, v in times.items()}
    out["solve"]["ratio"] = out["solve"]["t1_s"] / out["solve"]["t2_s"]

    sc = Scenario.default().with_overrides({"domain.shape": list(args.run_shape)})
    with tempfile.TemporaryDirectory() as d:
        sim = Simulation(sc, Path(d) / "run.zarr")
        numba.set_num_threads(1)
        sim.run(1)  # warm
        times = {1: [], 2: []}
        for _ in range(args.repeats):
            for nt in (1, 2):
                numba.set_num_threads(nt)
                t = time.perf_counter()
                sim.run(1)
                times[nt].append(time.perf_counter() - t)
    out["run_day"] = {f"t{k}_s": float(np.median(v)) for k, v in times.items()}
    out["run_day"]["ratio"] = out["run_day"]["t1_s"] / out["run_day"]["t2_s"]
    return out


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="96³ solve, 48x96x96 run, 3 repeats")
    ap.add_argument("--n", type=int, default=128, help="field-solve lattice edge (voxels)")
    ap.add_argument("--run-shape", type=int, nargs=3, default=[64, 128, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--load", type=int, default=1, help="busy processes in the loaded phase")
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_threads.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n, args.run_shape, args.repeats = 96, [48, 96, 96], 3
    if args.child:
        print("RESULT " + json.dumps(_child(args)), flush=True)
        return

    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "n": args.n, "run_shape": args.run_shape, "repeats": args.repeats, "load": args.load,
        "setups": {},
    }
    base_env = {k: v for k, v in os.environ.items() if k not in _CLEAR}
    cmd = [sys.executable, __file__, "--child", "--n", str(args.n), "--repeats", str(args.repeats),
           "--run-shape", *map(str, args.run_shape)]
    for phase in ("idle", "loaded"):
        for name in args.setups:
            busy = [_busy() for _ in range(args.load if phase == "loaded" else 0)]
            try:
                p = subprocess.run(cmd, env={**base_env, **SETUPS[name]}, capture_output=True,
                                   text=True, check=False)
            finally:
                for b in busy:
                    b.kill()
                    b.wait()
            line = [s for s in p.stdout.splitlines() if s.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                raise SystemExit(f"{name} ({phase}) failed:\n{p.stderr[-3000:]}")
            r = json.loads(line[0][7:])
            results["setups"].setdefault(name, {})[phase] = r
            s, e = r["solve"], r["run_day"]
            print(f"{phase:6s} {name:26s} [{r['layer']:9s}] solve 1t {s['t1_s']:7.3f} s "
                  f"2t {s['t2_s']:7.3f} s  x{s['ratio']:5.2f} | day 1t {e['t1_s']:6.2f} s "
                  f"2t {e['t2_s']:6.2f} s  x{e['ratio']:5.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
