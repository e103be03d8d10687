"""What writing the run store costs the step loop: background writer vs synchronous, in
one process, and the write amplification of a long run.

Two runs of the default scenario (``scenarios/homeostasis.toml``, one record per day),
same seed, one after the other in this process, from a warm numba cache:

* ``before``: every call synchronous in the step loop and Blosc zstd level 5 with byte
  shuffle, as niche3d wrote until now (but with today's one-file-per-record layout);
* ``now``: today's codec (zstd level 1, bit shuffle); the simulation's writer alternates
  every ``--block`` days between synchronous and the background thread (as niche3d
  runs), so both are timed under the same machine state.

For each: wall time per simulated day, the time the step loop spent on the store
(``Simulation._record`` and checkpoints, i.e. copying, queueing and waiting, plus the
writes themselves when synchronous) as a share of the run, and, over the whole run, the
bytes handed to the filesystem against the bytes the store keeps (write amplification;
hard-linked files counted once). Writes ``benchmarks/results/bench_store.json``.

Run::

    python benchmarks/bench_store.py                 # 365 days (365 records), ~10 min
    python benchmarks/bench_store.py --days 60       # shorter
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def _one(days: float, mode: str, out: Path, block: float) -> dict:
    """``before``: zstd-5 codecs, synchronous. ``now``: today's codecs, one simulation
    whose writer alternates every ``block`` days between synchronous and background, so
    both see the same machine state (timings per mode)."""
    from zarr.codecs import BloscCodec

    import niche3d.io._atomic as atomic
    import niche3d.io.writer as W
    from niche3d import Simulation
    from niche3d.scenario import load_scenario

    written = {"records": 0, "metadata": 0, "checkpoint": 0}
    real_write = atomic.atomic_write_bytes

    def counting(p, data, *, durable=True):  # type: ignore[no-untyped-def]
        written[_kind(Path(p).relative_to(out))] += memoryview(data).nbytes
        return real_write(p, data, durable=durable)

    saved = (W._COMPRESSOR, W._LABEL_COMPRESSOR)
    if mode == "before":
        W._COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
        W._LABEL_COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="noshuffle")
    atomic.atomic_write_bytes = counting
    current = {"mode": "sync"}
    store_s: dict[str, float] = {"sync": 0.0, "background": 0.0}
    run_s: dict[str, float] = {"sync": 0.0, "background": 0.0}
    days_in: dict[str, float] = {"sync": 0.0, "background": 0.0}
    real_record = Simulation._record

    def timed_record(self):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return real_record(self)
        finally:
            store_s[current["mode"]] += time.perf_counter() - t

    Simulation._record = timed_record  # type: ignore[method-assign]
    try:
        sc = load_scenario(ROOT / "scenarios" / "homeostasis.toml")
        sim = Simulation(sc, out)
        bw = sim.writer
        bw.flush()
        plan = [("sync", days)] if mode == "before" else []
        left, k = days, 0
        while mode != "before" and left > 1e-9:
            step = min(block, left)
            plan.append(("sync" if k % 2 == 0 else "background", step))
            left -= step
            k += 1
        for m, d in plan:
            current["mode"] = m
            sim.writer = bw.writer if m == "sync" else bw
            t0 = time.perf_counter()
            sim.run(d)
            run_s[m] += time.perf_counter() - t0
            days_in[m] += d
        sim.writer = bw
        bw.close()
    finally:
        atomic.atomic_write_bytes = real_write
        W._COMPRESSOR, W._LABEL_COMPRESSOR = saved
        Simulation._record = real_record  # type: ignore[method-assign]
    kept = {"records": 0, "metadata": 0, "checkpoint": 0}
    seen: set[int] = set()
    for p in out.rglob("*"):
        if p.is_file():
            st = p.stat()
            if st.st_ino not in seen:  # hard-linked label files count once
                seen.add(st.st_ino)
                kept[_kind(p.relative_to(out))] += st.st_size
    modes = {m: {"days": days_in[m], "seconds_per_day": run_s[m] / days_in[m],
                 "store_share": store_s[m] / run_s[m]} for m in run_s if days_in[m] > 0}
    return {
        "writers": modes,
        "bytes_written": written,
        "bytes_kept": kept,
        # records: fields, labels and table rows (what the layout decides); the root
        # zarr.json is rewritten by every commit and the checkpoint replaced every
        # output.checkpoint_every_records records, by design
        "write_amplification": written["records"] / kept["records"],
        "write_amplification_all": sum(written.values()) / sum(kept.values()),
        "records": sim.records_written,
    }


def _kind(rel: Path) -> str:
    """records (array data files), metadata (zarr.json) or checkpoint."""
    if rel.parts and rel.parts[0] == "checkpoint":
        return "checkpoint"
    return "metadata" if rel.name == "zarr.json" else "records"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=365.0)
    ap.add_argument("--block", type=float, default=5.0, help="days per writer block in 'now'")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_store.json")
    args = ap.parse_args()
    from niche3d import Simulation
    from niche3d.scenario import load_scenario

    res: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                 "days": args.days, "block_days": args.block, "runs": {}}
    with tempfile.TemporaryDirectory() as d:
        # warm the numba cache and the solver so no run pays for compiling
        Simulation(load_scenario(ROOT / "scenarios" / "homeostasis.toml")).run(1)
        for mode in ("before", "now"):
            r = _one(args.days, mode, Path(d) / f"{mode}.zarr", args.block)
            res["runs"][mode] = r
            w, k = r["bytes_written"], r["bytes_kept"]
            for m, x in r["writers"].items():
                print(f"{mode:6s} {m:10s} {x['seconds_per_day']:.3f} s/day  store "
                      f"{100 * x['store_share']:5.1f} % of the run ({x['days']:g} days)", flush=True)
            print(f"{mode:6s} records written/kept {r['write_amplification']:.3f} "
                  f"({w['records'] / 2**20:.1f} / {k['records'] / 2**20:.1f} MiB, {r['records']} "
                  f"records); with metadata and checkpoints {r['write_amplification_all']:.2f}",
                  flush=True)
    now = res["runs"]["now"]["writers"]
    before = res["runs"]["before"]["writers"]["sync"]
    res["background_vs_sync"] = now["sync"]["seconds_per_day"] / now["background"]["seconds_per_day"]
    res["now_vs_before"] = before["seconds_per_day"] / now["background"]["seconds_per_day"]
    print(f"time per day, synchronous / background writer: x{res['background_vs_sync']:.2f}; "
          f"before (zstd-5, synchronous) / now: x{res['now_vs_before']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
