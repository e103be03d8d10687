"""Write the small reference run store of the current store format version.

Each format version keeps one tiny store under ``tests/data/reference_stores/`` with a
JSON summary of what it holds (record times, tissue counts, cell and event counts, field
sums). ``tests/test_reference_stores.py`` opens every kept store with the current code
and compares it with its summary, so a change that can no longer read an old store
fails the suite. Run this once when ``FORMAT_VERSION`` changes (older stores are kept)::

    python tools/make_reference_stores.py
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from niche3d.io import open_run
from niche3d.io._format import FORMAT_VERSION
from niche3d.scenario import Scenario
from niche3d.simulation import Simulation

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "reference_stores"

#: 12 x 24 x 24 voxels, 1 day recorded every 8 hours: a few hundred kB with checkpoint
SETTINGS = {
    "domain.shape": [12, 24, 24],
    "run.days": 1.0,
    "output.interval_hours": 8.0,
    "output.checkpoint_every_records": 2,
    "cells.hsc_per_mm3": 40000.0,
}


def summary(path: Path) -> dict:
    """The numbers the reference test checks, read through the public reader."""
    run = open_run(path)
    fields = run.fields
    return {
        "format_version": FORMAT_VERSION,
        "code_version": run.code_version,
        "seed": run.seed,
        "shape": list(run.shape),
        "voxel_um": run.voxel_um,
        "n_records": run.n_records,
        "times_h": [float(t) for t in run.times_h],
        "field_names": list(run.field_names),
        "field_sums": {
            name: [float(v) for v in np.asarray(fields[name].sum(dim=("z", "y", "x")))]
            for name in run.field_names
        },
        "tissue_counts": {
            str(k): int(v)
            for k, v in zip(*np.unique(np.asarray(run.tissue), return_counts=True), strict=True)
        },
        "cells_rows": len(run.cells),
        "events_rows": len(run.events),
        "metrics_rows": len(run.metrics),
        "metrics_columns": sorted(run.metrics.columns),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    store = args.out / f"v{FORMAT_VERSION}.zarr"
    if store.exists():
        shutil.rmtree(store)
    args.out.mkdir(parents=True, exist_ok=True)
    scenario = Scenario.default().with_overrides(SETTINGS)
    Simulation(scenario, store).run()
    doc = summary(store)
    (args.out / f"v{FORMAT_VERSION}.json").write_text(json.dumps(doc, indent=2) + "\n")
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    print(f"wrote {store} ({size / 1e3:.0f} kB) and its summary")


if __name__ == "__main__":
    main()
