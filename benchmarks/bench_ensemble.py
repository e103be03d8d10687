"""The sweep engine's cost: 8 short runs on a LocalCluster of 2 workers against the same
runs one after another in this process.

Both sides call the same function (:func:`niche3d.ensemble.task.run_task`: set up, run,
write the store, summarise), so their difference is the engine's: worker processes
starting and importing niche3d, scheduling, moving specs and results, the Parquet index,
and cores idle at the tail of the sweep. Printed:

* ``speed-up``: serial wall time / sweep wall time (cluster start not included; it is
  printed on its own, a one-off per sweep);
* ``overhead per run``: (sweep wall x workers - the runs' own time inside their tasks)
  / runs, i.e. every worker-second not spent running a run, per run; for the first sweep
  on a fresh cluster (``cold``: its workers have loaded the kernels as they started,
  :mod:`niche3d.ensemble._worker_setup`, but run their first lattices) and again on the
  same cluster (``warm``);
* that overhead as a share of one 30-day default run timed here (target: < 5 %).

Usage::

    python benchmarks/bench_ensemble.py [--runs 8] [--days 5] [--workers 2] [--load]

``--load`` keeps one core busy with another process during the whole measurement (the
machines are shared). JSON: benchmarks/results/bench_ensemble.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._results import write_results  # noqa: E402


def _spin(stop: mp.Event) -> None:  # type: ignore[valid-type]
    x = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        for _ in range(100_000):
            x += 1


def _serial(specs: list[dict]) -> tuple[float, list[float]]:
    from niche3d.ensemble.task import run_task

    t0 = time.perf_counter()
    walls = []
    for spec in specs:
        r = run_task(spec)
        assert r["status"] == "done", r["error"]
        walls.append(r["wall_s"])
    return time.perf_counter() - t0, walls


def _sweep(client, scenario, values, out: Path) -> tuple[float, float]:
    import niche3d

    t0 = time.perf_counter()
    sw = niche3d.sweep(scenario, {"cells.speed_um_min": values}, out=out, client=client)
    sw.wait()
    wall = time.perf_counter() - t0
    idx = niche3d.open_sweep(out).index
    assert (idx["status"] == "done").all(), idx[["run_id", "error"]]
    return wall, float(idx["wall_s"].sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--days", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--load", action="store_true", help="one core busy with another process")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_ensemble.json"))
    a = ap.parse_args(argv)

    from distributed import Client

    import niche3d
    from niche3d.ensemble.engine import local_cluster

    stop = mp.Event()
    spinner = mp.Process(target=_spin, args=(stop,), daemon=True) if a.load else None
    if spinner is not None:
        spinner.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ensemble-"))
    try:
        base = niche3d.Scenario.default().with_overrides({"run.days": a.days})
        values = [round(0.5 + 0.25 * k, 3) for k in range(a.runs)]
        specs = []
        for k, v in enumerate(values):
            sc = base.with_overrides({"cells.speed_um_min": v})
            specs.append({"run_id": f"s{k}", "store": str(tmp / f"serial-{k}.zarr"),
                          "scenario": sc.to_toml(), "days": a.days})
        # one 30-day default run, the yardstick of the target
        from niche3d.ensemble.task import run_task

        month = niche3d.Scenario.default()
        run_task({"run_id": "warm", "store": str(tmp / "warm.zarr"),  # kernels, lattice cache
                  "scenario": month.with_overrides({"run.days": 1.0}).to_toml(), "days": 1.0})
        t0 = time.perf_counter()
        run_task({"run_id": "month", "store": str(tmp / "month.zarr"), "scenario": month.to_toml(),
                  "days": month.run.days})
        month_s = time.perf_counter() - t0

        serial_s, serial_walls = _serial(specs)

        t0 = time.perf_counter()
        cluster = local_cluster(a.workers, dashboard=False)
        client = Client(cluster)
        start_s = time.perf_counter() - t0
        try:
            cold_s, cold_inside = _sweep(client, base, values, tmp / "cold")
            warm_s, warm_inside = _sweep(client, base, values, tmp / "warm")
        finally:
            client.close()
            cluster.close()
    finally:
        if spinner is not None:
            stop.set()
            spinner.join(5)
        shutil.rmtree(tmp, ignore_errors=True)

    def overhead(wall: float, inside: float) -> float:
        return (wall * a.workers - inside) / a.runs

    res = {
        "runs": a.runs, "days": a.days, "workers": a.workers, "load": a.load,
        "month_run_s": month_s,
        "serial_s": serial_s, "serial_per_run_s": serial_s / a.runs,
        "cluster_start_s": start_s,
        "sweep_cold_s": cold_s, "sweep_warm_s": warm_s,
        "speedup_cold": serial_s / cold_s, "speedup_warm": serial_s / warm_s,
        "inside_cold_s": cold_inside, "inside_warm_s": warm_inside,
        "overhead_per_run_cold_s": overhead(cold_s, cold_inside),
        "overhead_per_run_warm_s": overhead(warm_s, warm_inside),
    }
    res["overhead_share_of_month_cold"] = res["overhead_per_run_cold_s"] / month_s
    res["overhead_share_of_month_warm"] = res["overhead_per_run_warm_s"] / month_s
    print(f"{a.runs} runs of {a.days:g} days, {a.workers} workers{' (one core loaded)' if a.load else ''}")
    print(f"  one 30-day default run           {month_s:7.2f} s")
    print(f"  serial, one process               {serial_s:7.2f} s ({serial_s / a.runs:.2f} s/run)")
    print(f"  LocalCluster start (one-off)      {start_s:7.2f} s")
    for tag in ("cold", "warm"):
        print(f"  sweep, {tag:<4s}                       {res[f'sweep_{tag}_s']:7.2f} s   "
              f"speed-up {res[f'speedup_{tag}']:.2f}x   overhead/run "
              f"{res[f'overhead_per_run_{tag}_s']:6.3f} s = "
              f"{100 * res[f'overhead_share_of_month_{tag}']:.1f} % of a 30-day run (target < 5 %)")
    write_results(a.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
