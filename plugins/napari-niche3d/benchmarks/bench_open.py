"""Benchmark: opening a ~1 GB run store in napari is lazy.

Writes a run store with niche3d's RunWriter (default 2 fields x 64 records x 128^3 float32
= 1.07 GB of field data plus 134 MB of tissue labels, uncompressed), then times, in one
process:

- ``is_run_store`` on the store and ``napari_get_reader`` on a plain zarr group (rejection);
- our reader: ``read_run`` -> layer tuples, and adding them to a ``ViewerModel`` (which
  slices the current plane);
- baseline 1: napari-ome-zarr's reader on the same store (it is valid OME-Zarr);
- baseline 2: reading all the data eagerly (what a non-lazy reader would do).

Prints the ratios and writes ``plugins/napari-niche3d/benchmarks/results/open.json``.

    PYTHONPATH=. python plugins/napari-niche3d/benchmarks/bench_open.py [--records 64] [--n 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def write_store(path: Path, n: int, records: int, cells: int, seed: int = 0) -> float:
    """Write a synthetic store; returns its uncompressed size in bytes."""
    from niche3d.io import RunWriter
    from niche3d.scenario import Scenario
    from niche3d.tissue.codes import Tissue

    rng = np.random.default_rng(seed)
    shape = (n, n, n)
    sc = Scenario.default().with_overrides({"domain.shape": list(shape), "output.interval_hours": 12.0})
    z, y, x = np.indices(shape, dtype=np.float32)
    labels = np.full(shape, Tissue.MARROW, np.uint8)
    labels[z < n // 8] = Tissue.BONE
    w = RunWriter.create(
        path, scenario=sc, labels=labels, voxel_um=8.0, record_hours=12.0, n_records=records,
        fields=[("cxcl12", "nM", (0.0, 2.0)), ("scf", "nM", (0.0, 2.0))], seed=seed,
        code_version="bench", dt_hours=1.0,
    )
    w.set_categories("cells", "state", ["dormant", "active_g0", "mpp"])
    base = np.exp(-((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2) / (n * n / 8)).astype(np.float32)
    for r in range(records):
        noise = rng.random(shape, dtype=np.float32) * 0.05
        pos = rng.integers(n // 8, n, size=(cells, 3)).astype(np.int32)
        w.write_record(
            r, 12.0 * r,
            fields={"cxcl12": base + noise, "scf": 0.5 * base + noise},
            labels=labels,
            cells={"track_id": np.arange(cells, dtype=np.int64), "parent": np.full(cells, -1, np.int64),
                   "generation": np.zeros(cells, np.int32), "state": rng.integers(0, 3, cells).astype(np.int8),
                   "z": pos[:, 0], "y": pos[:, 1], "x": pos[:, 2], "bound": rng.random(cells) < 0.5,
                   "donor": np.zeros(cells, bool), "divisions": np.zeros(cells, np.int32)},
            metrics={"n_cells": float(cells)},
        )
    return records * (2 * 4 + 1) * n**3


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--records", type=int, default=64)
    ap.add_argument("--cells", type=int, default=2000)
    a = ap.parse_args()

    import npe2
    import zarr
    from napari.components import ViewerModel
    from napari.layers import Layer
    from napari_niche3d import is_run_store, napari_get_reader, read_run
    from napari_ome_zarr import napari_get_reader as ome_reader

    npe2.PluginManager.instance().discover()
    with tempfile.TemporaryDirectory(prefix="niche3d-bench-") as tmp:
        store = Path(tmp) / "big.zarr"
        t0 = time.perf_counter()
        nbytes = write_store(store, a.n, a.records, a.cells)
        t_write = time.perf_counter() - t0
        files = [f for f in store.rglob("*") if f.is_file()]
        disk = sum(f.stat().st_size for f in files)
        other = Path(tmp) / "other.zarr"
        zarr.open_group(other, mode="w").attrs["x"] = 1

        t_detect, _ = timed(lambda: is_run_store(store), 20)
        t_reject, _ = timed(lambda: napari_get_reader(str(other)), 20)
        t_read, layers = timed(lambda: read_run(str(store)))

        def into_viewer() -> ViewerModel:
            vm = ViewerModel()
            for d, kw, kind in read_run(str(store)):
                vm.add_layer(Layer.create(d, kw, kind))
            return vm

        t_viewer, vm = timed(into_viewer)
        t_ome, _ = timed(lambda: ome_reader(str(store))(str(store)))

        def eager() -> int:
            total = 0
            for d, _kw, kind in read_run(str(store)):
                if kind in ("image", "labels"):
                    total += np.asarray(d).nbytes
            return total

        t_eager, eager_bytes = timed(eager, 1)

    res = {
        "store_uncompressed_bytes": nbytes,
        "store_disk_bytes": disk,
        "files": len(files),
        "write_s": t_write,
        "is_run_store_s": t_detect,
        "reject_other_store_s": t_reject,
        "read_run_s": t_read,
        "read_run_into_viewermodel_s": t_viewer,
        "napari_ome_zarr_reader_s": t_ome,
        "eager_full_read_s": t_eager,
        "eager_bytes": int(eager_bytes),
        "ratio_eager_over_lazy_viewer": t_eager / t_viewer,
        "ratio_read_run_over_ome_zarr_reader": t_read / t_ome,
        "params": vars(a),
        "machine": platform.platform(),
    }
    print(f"store: {nbytes / 1e9:.2f} GB uncompressed, {disk / 1e6:.0f} MB on disk, written in {t_write:.1f} s")
    print(f"is_run_store            {t_detect * 1e6:8.1f} µs")
    print(f"reject a plain zarr     {t_reject * 1e6:8.1f} µs")
    print(f"read_run (layer tuples) {t_read:8.3f} s")
    print(f"  + into a ViewerModel  {t_viewer:8.3f} s  ({len(vm.layers)} layers)")
    print(f"napari-ome-zarr reader  {t_ome:8.3f} s  (baseline: same store, images only)")
    print(f"eager full read         {t_eager:8.3f} s  (baseline: {eager_bytes / 1e9:.2f} GB into memory)")
    print(f"eager / lazy = {res['ratio_eager_over_lazy_viewer']:.1f}x, "
          f"read_run / napari-ome-zarr reader = {res['ratio_read_run_over_ome_zarr_reader']:.2f}")
    out = Path(__file__).parent / "results" / "open.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
