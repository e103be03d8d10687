"""Reading a big run's tables: a lazy Parquet scan against loading the whole table.

Writes a synthetic run store through ``RunWriter`` (the same write path as a simulation)
with ``--records`` records of ``--cells`` cells each (the default, 365 x 20,000 = 7.3
million cell rows, is a year of daily records of a block the size of a femur's marrow at
physiological density plus its MPPs), then times, in this process:

* ``whole``: ``Run.cells`` (every row as a DataFrame), then the rows of one record and
  the HSC count per record from it: what a user did before tables were Parquet;
* ``lazy``: ``Run.read_table("cells", columns=..., filter=record == k)`` for one record,
  and a scan of two columns for the count per record.

It prints the times and the peak Arrow memory (``pyarrow.total_allocated_bytes``,
sampled) and the ratios, the write cost per record, and writes
``benchmarks/results/bench_tables.json``.

Run::

    python benchmarks/bench_tables.py                      # 365 x 20,000, ~2 min
    python benchmarks/bench_tables.py --records 60 --cells 5000
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks._results import write_results

RESULTS = Path(__file__).parent / "results"


def _write(path: Path, records: int, cells: int, seed: int) -> float:
    from niche3d.io import RunWriter
    from niche3d.scenario import Scenario

    shape = (32, 32, 32)
    w = RunWriter.create(
        path, scenario=Scenario.default().with_overrides({"domain.shape": list(shape)}),
        labels=np.ones(shape, np.uint8), voxel_um=8.0, record_hours=24.0, n_records=records,
        fields=[], seed=seed, code_version="bench", dt_hours=1.0,
    )
    w.set_categories("cells", "state", ["dormant", "active_g0", "active_g1", "active_sg2m", "mpp"])
    rng = np.random.default_rng(seed)
    spent = 0.0
    for i in range(records):
        snap = {
            "track_id": np.arange(cells, dtype=np.int64) + i * cells,
            "parent": rng.integers(-1, cells, cells),
            "generation": rng.integers(0, 20, cells).astype(np.int32),
            "state": rng.integers(0, 5, cells).astype(np.int8),
            "z": rng.integers(0, shape[0], cells).astype(np.int32),
            "y": rng.integers(0, shape[1], cells).astype(np.int32),
            "x": rng.integers(0, shape[2], cells).astype(np.int32),
            "bound": rng.random(cells) < 0.5,
            "birth_hours": rng.random(cells) * 1000,
        }
        t0 = time.perf_counter()
        w.write_record(i, 24.0 * i, fields=None, labels=None, cells=snap, metrics={"n": float(cells)})
        spent += time.perf_counter() - t0
    return spent / records


class _Peak:
    """Peak of pyarrow's allocated bytes while a block runs (sampled every 2 ms)."""

    def __enter__(self) -> _Peak:
        import pyarrow as pa

        self._pa = pa
        self.base = pa.total_allocated_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._pa.total_allocated_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._pa.total_allocated_bytes())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=365)
    ap.add_argument("--cells", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_tables.json")
    args = ap.parse_args()
    import pyarrow.dataset as ds

    from niche3d.io import open_run

    tmp = Path(tempfile.mkdtemp(prefix="bench_tables_"))
    try:
        store = tmp / "big.zarr"
        per_record = _write(store, args.records, args.cells, 1)
        size = sum(f.stat().st_size for f in (store / "tables" / "cells").iterdir())
        k = args.records // 2
        times: dict[str, list[float]] = {"whole_one_record": [], "lazy_one_record": [],
                                         "whole_count": [], "lazy_count": []}
        peaks: dict[str, float] = {}
        for _ in range(args.repeats):
            run = open_run(store)  # a fresh Run: no cached table
            with _Peak() as p:
                t0 = time.perf_counter()
                cells = run.cells
                one = cells[cells["record"] == k]
                t1 = time.perf_counter()
                counts = cells[cells["state"] != "mpp"].groupby("record").size()
                t2 = time.perf_counter()
            times["whole_one_record"].append(t1 - t0)
            times["whole_count"].append(t2 - t1 + (t1 - t0))
            peaks["whole"] = p.mb
            del cells
            run = open_run(store)
            with _Peak() as p:
                t0 = time.perf_counter()
                lazy = run.read_table("cells", filter=ds.field("record") == k)
                t1 = time.perf_counter()
                tab = run.dataset("cells").to_table(columns=["record"], filter=ds.field("state") != "mpp")
                lazy_counts = np.bincount(tab.column("record").to_numpy(), minlength=args.records)
                t2 = time.perf_counter()
            times["lazy_one_record"].append(t1 - t0)
            times["lazy_count"].append(t2 - t1)
            peaks["lazy"] = p.mb
            assert len(lazy) == len(one) == args.cells
            assert np.array_equal(lazy_counts[counts.index.to_numpy()], counts.to_numpy())
        best = {key: min(v) for key, v in times.items()}
        doc = {
            "records": args.records, "cells_per_record": args.cells,
            "rows": args.records * args.cells, "cells_table_mb_on_disk": size / 1e6,
            "write_ms_per_record": 1e3 * per_record,
            "best_s": best,
            "speedup_one_record": best["whole_one_record"] / best["lazy_one_record"],
            "speedup_count": best["whole_count"] / best["lazy_count"],
            "peak_arrow_mb": peaks,
            "cpus": os.cpu_count(), "machine": platform.machine(),
        }
        print(f"{doc['rows']:,} cell rows, {size / 1e6:.0f} MB of Parquet; write "
              f"{doc['write_ms_per_record']:.1f} ms per record of {args.cells:,} cells")
        print(f"one record:      whole table {best['whole_one_record']:.2f} s, lazy "
              f"{best['lazy_one_record']:.3f} s ({doc['speedup_one_record']:.0f}x)")
        print(f"HSCs per record: whole table {best['whole_count']:.2f} s, lazy "
              f"{best['lazy_count']:.3f} s ({doc['speedup_count']:.1f}x)")
        print(f"peak Arrow memory: whole {peaks['whole']:.0f} MB, lazy {peaks['lazy']:.0f} MB")
        write_results(args.out, doc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
