"""Skipped re-solves against always re-solving, same process, same scenario and seed.

For ``--days`` of the default scenario (or ``--scenario``), alternating the two set-ups
``--repeats`` times each (so machine load hits both alike):

* **skip**: the default ``fields.skip_tolerance`` (re-solves skipped when, after the local
  correction, the estimated change is below the tolerance);
* **always**: ``fields.skip_tolerance = 0`` (every scheduled re-solve runs).

It prints and writes (``benchmarks/results/bench_skip.json``) the wall time per simulated
day of each, the share of it spent in field solves, the solves skipped, their ratio, and,
from one extra run of the skipping set-up, the accuracy: at every scheduled solve the
fields the cells read are compared with a full solve at the same cells (largest change
of the field and of the receptor occupancy ``c / (c + K)`` at cells), beside what the
6-hourly schedule itself leaves (the change a full solve makes one step later).

Run::

    python benchmarks/bench_skip.py --days 30 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numba
import numpy as np
from _results import write_results  # noqa: E402

from niche3d.fields import FieldSet
from niche3d.names import CXCL12, SCF
from niche3d.scenario import Scenario, load_scenario
from niche3d.simulation import Simulation

RESULTS = Path(__file__).parent / "results"


def _scenario(args: argparse.Namespace, tol: float | None) -> Scenario:
    sc = load_scenario(args.scenario) if args.scenario else Scenario.default()
    over = [f"run.days={args.days}"]
    if tol is not None:
        over.append(f"fields.skip_tolerance={tol}")
    return sc.with_overrides(over)


def timed_run(sc: Scenario) -> dict:
    sim = Simulation(sc)
    spent = [0.0]
    solve = sim.fields.solve

    def timed_solve(*a: object, **kw: object) -> object:
        t = time.perf_counter()
        try:
            return solve(*a, **kw)  # type: ignore[arg-type]
        finally:
            spent[0] += time.perf_counter() - t

    sim.fields.solve = timed_solve  # type: ignore[method-assign]
    t0 = time.perf_counter()
    sim.run(sc.run.days)
    wall = time.perf_counter() - t0
    counts = sim.fields.solve_counts
    return {
        "seconds_per_day": wall / sc.run.days,
        "solve_share": spent[0] / wall,
        "solves": {n: c[0] for n, c in counts.items()},
        "skipped": {n: c[1] for n, c in counts.items()},
        "hsc_total": sim.metrics()["hsc_total"],
    }


def accuracy(sc: Scenario) -> dict:
    """Worst differences to a full solve at every scheduled solve of a skipping run, and
    what one hour of cell moves changes before the next scheduled solve (the schedule's
    own staleness, which every set-up has)."""
    sim = Simulation(sc)
    K = {CXCL12: sc.cells.motility.cxcr4_kd_nM, SCF: sc.cells.death.scf_half}
    ref = FieldSet(sim.lattice, sc.fields)
    worst: dict[str, float] = {}

    def compare(tag: str) -> None:
        cells = sim.cells.occupied_flat()
        ref.load_state_dict(sim.fields.state_dict())
        ref.solve(cells)
        for n, k in K.items():
            a, b = sim.fields[n].astype(np.float64), ref[n].astype(np.float64)
            key = f"{tag}.{n}"
            worst[f"{key}.dc_max"] = max(worst.get(f"{key}.dc_max", 0.0), float(np.abs(a - b).max()))
            if cells.size:
                ta, tb = a.ravel()[cells], b.ravel()[cells]
                d = float(np.abs(ta / (ta + k) - tb / (tb + k)).max())
                worst[f"{key}.occupancy_at_cells"] = max(worst.get(f"{key}.occupancy_at_cells", 0.0), d)

    solve = sim._solve

    def checked() -> None:
        solve()
        compare("after_solve")

    sim._solve = checked  # type: ignore[method-assign]
    steps = int(round(sc.run.days * 24 / sim.dt_hours))
    for _ in range(steps):
        sim.step(1)
        if sim.step_index % sim._steps_per_solve == 1:
            compare("one_step_later")  # cells moved once since the solve
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scenario", default=None, help="a scenario TOML (default: built-in)")
    ap.add_argument("--out", default=str(RESULTS / "bench_skip.json"))
    args = ap.parse_args()
    Simulation(_scenario(args, None).with_overrides(["run.days=1"])).run(1)  # compile
    runs: dict[str, list[dict]] = {"skip": [], "always": []}
    for rep in range(args.repeats):
        for name, tol in (("skip", None), ("always", 0.0)) if rep % 2 == 0 else \
                (("always", 0.0), ("skip", None)):
            r = timed_run(_scenario(args, tol))
            runs[name].append(r)
            print(f"[{rep}] {name:6s} {r['seconds_per_day']:.3f} s/day, solves "
                  f"{r['solve_share']:.0%} of it, skipped {r['skipped']} of {r['solves']}",
                  flush=True)
    med = {k: float(np.median([r["seconds_per_day"] for r in v])) for k, v in runs.items()}
    acc = accuracy(_scenario(args, None))
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "numba_threads": numba.get_num_threads()},
        "days": args.days,
        "skip_tolerance": _scenario(args, None).fields.skip_tolerance,
        "runs": runs,
        "median_seconds_per_day": med,
        "speedup_end_to_end": med["always"] / med["skip"],
        "accuracy": acc,
    }
    print(f"per simulated day: always {med['always']:.3f} s, skip {med['skip']:.3f} s, "
          f"ratio {out['speedup_end_to_end']:.2f}")
    for k, v in sorted(acc.items()):
        print(f"  {k}: {v:.3g}")
    write_results(args.out, out)


if __name__ == "__main__":
    main()
