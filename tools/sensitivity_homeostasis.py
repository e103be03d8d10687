"""Global sensitivity of the homeostasis readouts to the cell parameters (docs/ensembles.md).

Two stages, both through ``niche3d.sensitivity`` on a LocalCluster:

1. **Morris screening** of every cell mechanism parameter: each numeric ``cells.*`` key
   with a non-zero float default, except the initial condition (``hsc_per_mm3``,
   ``dormant_fraction``), the mouse's fixed sizes (``blood.mouse_marrow_mm3``,
   ``blood.blood_volume_ul``) and the two lineage shares (coupled: their sum <= 1); each over [default / 2, default x 2] log-uniformly, capped
   at its schema bound. ``--trajectories`` trajectories.
2. **Sobol indices** (first and total order, bootstrap CIs) of the ten parameters with
   the largest Morris mu* (each readout's mu* divided by that readout's largest, then
   summed over the readouts), ``--sobol-n`` base samples.

Readouts: the HSC number, the dormant and S/G2/M fractions and the HSCs in blood, as
means over days 15-30 of a 30-day default run. Usage::

    .venv/bin/python tools/sensitivity_homeostasis.py --out /tmp/sens --workers 2

writes ``/tmp/sens/morris`` and ``/tmp/sens/sobol`` (sweep directories) and copies the
two figures to docs/img/sensitivity_morris.png and docs/img/sensitivity_sobol.png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import annotated_types

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import niche3d  # noqa: E402
from niche3d.cells.config import CellsConfig  # noqa: E402
from niche3d.ensemble import SensitivityResult, SweepError  # noqa: E402

#: readouts defined in every run: within 2-fold ranges many samples lose every HSC, where
#: the on-site fraction and the marrow exchange rate are undefined (the fractions of the
#: cycle states are 0 there)
READOUTS = ["hsc_total", "frac_dormant", "frac_sg2m", "blood_pool"]
#: the initial condition, the mouse's fixed sizes, and the two lineage shares, which only
#: split the myeloid output and are coupled by a constraint (their sum <= 1)
EXCLUDED = {"cells.hsc_per_mm3", "cells.dormant_fraction", "cells.blood.mouse_marrow_mm3",
            "cells.blood.blood_volume_ul", "cells.lineage.erythroid_share",
            "cells.lineage.megakaryocyte_share"}


def _upper(model: type, name: str) -> float:
    for m in model.model_fields[name].metadata:
        if isinstance(m, annotated_types.Le):
            return float(m.le)
        if isinstance(m, annotated_types.Lt):
            return float(m.lt) * (1 - 1e-9)
    return float("inf")


def cell_parameter_ranges() -> dict[str, tuple[float, float, str]]:
    """Every screened cell parameter and its range (see the module docstring)."""
    out: dict[str, tuple[float, float, str]] = {}

    def walk(model: type, obj: object, prefix: str) -> None:
        for name in model.model_fields:
            value = getattr(obj, name)
            key = f"{prefix}.{name}"
            if hasattr(type(value), "model_fields"):
                walk(type(value), value, key)
            elif type(value) is float and value > 0 and key not in EXCLUDED:
                out[key] = (value / 2, min(value * 2, _upper(model, name)), "log")

    cells = niche3d.Scenario.default().cells
    walk(CellsConfig, cells, "cells")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int)
    p.add_argument("--trajectories", type=int, default=8)
    p.add_argument("--sobol-n", type=int, default=32)
    p.add_argument("--top", type=int, default=10)
    a = p.parse_args(argv)
    scenario = ROOT / "scenarios" / "homeostasis.toml"
    ranges = cell_parameter_ranges()
    print(f"stage 1: Morris screening of {len(ranges)} cell parameters, "
          f"{a.trajectories} trajectories = {a.trajectories * (len(ranges) + 1)} runs", flush=True)
    t0 = time.perf_counter()
    morris_dir = Path(a.out) / "morris"
    try:  # a finished screening is analysed again from its index (its stores may be gone)
        morris = SensitivityResult.load(morris_dir)
        if morris.settings["readouts"] != READOUTS or morris.settings["n"] != a.trajectories:
            raise SweepError("another screening")
    except SweepError:
        job = niche3d.sensitivity(scenario, ranges, method="morris", n=a.trajectories,
                                  readouts=READOUTS, out=morris_dir, workers=a.workers)
        morris = job.result()
    print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    print(morris.format())
    mu = morris.indices[morris.indices["index"] == "mu_star"].copy()
    mu["rel"] = mu["value"] / mu.groupby("readout")["value"].transform("max")
    top = list(mu.groupby("param")["rel"].sum().sort_values(ascending=False).index[: a.top])
    print(f"stage 2: Sobol indices of the top {len(top)}: {top}", flush=True)
    t0 = time.perf_counter()
    job = niche3d.sensitivity(scenario, {k: ranges[k] for k in top}, method="sobol", n=a.sobol_n,
                              readouts=READOUTS, out=Path(a.out) / "sobol", workers=a.workers)
    sobol = job.result()
    print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    print(sobol.format())
    img = ROOT / "docs" / "img"
    shutil.copy(morris.figure, img / "sensitivity_morris.png")
    shutil.copy(sobol.figure, img / "sensitivity_sobol.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
