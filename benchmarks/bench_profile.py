"""Where a run's time goes: set-up, field solves, cell steps, the store, the rest.

Runs a scenario (default: the built-in one; ``--shape`` to change the lattice) with a run
store, twice in one process, each after a warm-up day so that numba compiles nothing in
the timed part:

* **before**: every scheduled re-solve runs (``fields.skip_tolerance = 0``), the state of
  the step loop before the skipping of issue 15;
* **after**: the shipped defaults;
* **after, without a store**: the same run handing its records and checkpoints to a writer
  that writes nothing (so it computes the same readouts): the baseline of the store's
  whole cost, ``(with - without) / with``, which counts the writer thread's share of the
  cores too.

Each run is timed by parts: set-up (the lattice: generated or from the on-disk cache; the
field set, cell model and first solves), ``FieldSet.solve``, ``CellModel.step``, the
record and checkpoint hand-over to the store, the time the step loop waited for the
background writer (and, beside it, the writer thread's own encode-and-write time, which
runs in parallel), and the rest of the step. Compile time is reported from a separate
child process with an empty numba cache (``--compile``, slow: 1-3 minutes). Prints a
table and writes ``benchmarks/results/bench_profile.json``.

Run::

    python benchmarks/bench_profile.py --days 30
    python benchmarks/bench_profile.py --shape 125 250 250 --days 10
    python benchmarks/bench_profile.py --scenario scenarios/femur.toml --days 5
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba

from niche3d.scenario import Scenario, load_scenario
from niche3d.simulation import Simulation

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class _NullWriter:
    """Takes a run's store calls and writes nothing: the baseline run computes every
    record's readouts (metrics, niche map, cell table) and checkpoint state exactly as a
    run with a store does, so (with - without) is what the store itself costs."""

    n_records = 10**9
    has_niche = True
    wait_seconds = 0.0
    write_seconds = 0.0

    def write_record(self, *a: object, **k: object) -> None: ...
    def append_events(self, *a: object) -> None: ...
    def write_checkpoint(self, *a: object) -> None: ...
    def extend(self, *a: object) -> None: ...
    def flush(self) -> None: ...


class _Timer:
    """Wraps a bound method and adds its wall time to a named total."""

    def __init__(self, totals: dict[str, float], name: str, fn: object,
                 depth: list[int] | None = None) -> None:
        self.totals, self.name, self.fn = totals, name, fn
        self.depth = depth if depth is not None else [0]  # shared: only outermost calls count
        totals.setdefault(name, 0.0)

    def __call__(self, *a: object, **kw: object) -> object:
        t = time.perf_counter()
        self.depth[0] += 1
        try:
            return self.fn(*a, **kw)  # type: ignore[operator]
        finally:
            self.depth[0] -= 1
            if self.depth[0] == 0:
                self.totals[self.name] += time.perf_counter() - t


def profile(sc: Scenario, out: Path | None) -> dict:
    from niche3d import simulation as S

    setup: dict[str, float] = {}
    build = S.build_lattice
    S.build_lattice = _Timer(setup, "lattice", build)  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        sim = Simulation(sc, out=out)
        setup["total"] = time.perf_counter() - t0
    finally:
        S.build_lattice = build  # type: ignore[assignment]
    setup["fields_cells_and_first_solves"] = setup["total"] - setup["lattice"]
    parts: dict[str, float] = {}
    sim.fields.solve = _Timer(parts, "field solves", sim.fields.solve)  # type: ignore[method-assign]
    sim.cells.step = _Timer(parts, "cell steps", sim.cells.step)  # type: ignore[method-assign]
    if out is None:
        sim.writer = _NullWriter()
    sim._record = _Timer(parts, "records to the store", sim._record)  # type: ignore[method-assign]
    sim._flush = _Timer(parts, "final flush of the store", sim._flush)  # type: ignore[method-assign]
    # what a record reads from the simulation (metrics, the niche map, the cell table),
    # timed apart (outermost calls only: metrics() reads the niche map itself)
    reads: dict[str, float] = {}
    depth = [0]
    sim.metrics = _Timer(reads, "r", sim.metrics, depth)  # type: ignore[method-assign]
    for name in ("snapshot", "niche_sites", "drain_events"):
        setattr(sim.cells, name, _Timer(reads, "r", getattr(sim.cells, name), depth))
    w = sim.writer
    t0 = time.perf_counter()
    sim.run(sc.run.days)
    wall = time.perf_counter() - t0
    readouts = reads["r"]
    parts["records to the store"] -= readouts
    parts["record readouts (metrics, maps)"] = readouts
    parts["rest of the step"] = wall - sum(parts.values())
    # inside "records to the store" and the flush: the time the loop waited because the
    # writer's queue was full (the rest of the hand-over is copying the arrays)
    parts_waiting = w.wait_seconds
    counts = sim.fields.solve_counts
    return {"setup": setup, "loop_seconds": wall, "parts": parts,
            "waiting_for_the_writer_seconds": parts_waiting,
            "writer_thread_seconds": w.write_seconds if w is not None else 0.0,
            "seconds_per_day": wall / sc.run.days,
            "solves_skipped": {n: c[1] for n, c in counts.items()},
            "solves": {n: c[0] for n, c in counts.items()}}


def compile_seconds() -> float:
    """Seconds a child process with an empty numba cache spends in ``niche3d warmup``."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d, NICHE3D_CACHE_DIR=os.path.join(d, "n3d"))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; from niche3d.cli import main; "
                        "sys.exit(main(['warmup']))"], env=env, check=True, capture_output=True)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    ap.add_argument("--scenario", default=None, help="a scenario TOML (default: built-in)")
    ap.add_argument("--compile", action="store_true", help="also time a cold compile (slow)")
    ap.add_argument("--out", default=str(RESULTS / "bench_profile.json"))
    args = ap.parse_args()
    over = [f"run.days={args.days}"]
    if args.shape:
        over.append(f"domain.shape={list(args.shape)}")
    base = (load_scenario(args.scenario) if args.scenario else Scenario.default()).with_overrides(over)
    Simulation(base.with_overrides(["run.days=1"])).run(1)  # compile, fill the lattice cache
    res: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "numba_threads": numba.get_num_threads()},
                 "days": args.days, "shape": list(base.domain.shape)}
    with tempfile.TemporaryDirectory() as d:
        for name, sc in (("before", base.with_overrides(["fields.skip_tolerance=0"])),
                         ("after", base)):
            res[name] = profile(sc, Path(d) / f"{name}.zarr")
        # the same run without a store: what the store costs in all, the writer thread's
        # share of the cores included (on 2 cores it competes with the solver's threads)
        res["after_without_store"] = profile(base, None)
    a, n = res["after"]["loop_seconds"], res["after_without_store"]["loop_seconds"]
    res["store_share_of_run"] = (a - n) / a
    if args.compile:
        res["compile_seconds"] = compile_seconds()
    print(f"lattice {res['shape']}, {args.days:g} days, store written")
    print(f"{'':38s} {'before':>14s} {'after':>14s}")
    for key in ("field solves", "cell steps", "records to the store",
                "final flush of the store", "record readouts (metrics, maps)",
                "rest of the step"):
        b, a = res["before"]["parts"][key], res["after"]["parts"][key]
        print(f"{key:38s} {b:7.1f} s {100 * b / res['before']['loop_seconds']:3.0f} % "
              f"{a:7.1f} s {100 * a / res['after']['loop_seconds']:3.0f} %")
    print(f"{'(of the store: waiting for the writer)':38s} "
          f"{res['before']['waiting_for_the_writer_seconds']:7.1f} s       "
          f"{res['after']['waiting_for_the_writer_seconds']:7.1f} s")
    print(f"{'step loop':38s} {res['before']['loop_seconds']:7.1f} s       "
          f"{res['after']['loop_seconds']:7.1f} s")
    print(f"{'set-up (lattice from the cache)':38s} {res['before']['setup']['total']:7.1f} s       "
          f"{res['after']['setup']['total']:7.1f} s")
    print(f"{'step loop without a store':38s} {'':14s} "
          f"{res['after_without_store']['loop_seconds']:7.1f} s")
    print(f"the store's whole cost (with - without) / with: "
          f"{100 * res['store_share_of_run']:.1f} %"
          f" (writer thread busy {res['after']['writer_thread_seconds']:.1f} s)")
    if "compile_seconds" in res:
        print(f"{'compile (empty numba cache)':38s} {res['compile_seconds']:7.1f} s")
    write_results(args.out, res)


if __name__ == "__main__":
    main()
