"""Fit the default mechanism parameters to BIOLOGY.md sections 6 and 7, by script.

Two stages, each a small seeded design evaluated on the default homeostasis scenario
(scenarios/homeostasis.toml, full size), printing every evaluation and the chosen values:

``sites``
    The niche-site geometry, without running: for a grid of ``cells.fate.w_sno``, the
    arteriolar membrane SCF (``fields.membrane_scf.expression.arteriole``) and
    ``cells.fate.site_threshold`` the sites of the solved steady-state fields are scored
    on the share within 10 µm of a sinusoid wall (target 0.85, Acar 2015), the share
    within 10 µm of the endosteum (target 0.14, Kiel 2005) and the site density (target
    ``--site-density`` per mm³, which with the ~50-80 % occupancy of the runs gives the
    100-400 HSCs per mm³ of BIOLOGY.md section 3). Loss: squared relative errors.
``kinetics``
    Runs of ``--days`` days (scored after ``--skip-days``) over a scrambled-Sobol design
    (scipy.stats.qmc, seed ``--seed``) of the cycle, demand and egress rates in the box
    given by ``KINETIC_BOX``; each run is scored with
    :func:`niche3d.analysis.calibration.calibration_table` (targets 6.1-6.4) plus the
    section-7 steady state (``marrow_exchange_per_day`` ~1 %, ``asymmetric_border_share``
    >= 0.75). Loss: the sum over targets of the squared distance outside the target range,
    relative to the range's width (0 inside every range); ties (typically several sets
    meeting every target) go to the set whose closest target is farthest inside its
    range, relative to the range's width.

Usage::

    PYTHONPATH=. .venv/bin/python tools/calibrate.py sites
    PYTHONPATH=. .venv/bin/python tools/calibrate.py kinetics --n 16 --days 80

The results of the last calibration are written into docs/calibration.md by hand from the
printed table (the chosen values become the defaults in niche3d/cells/config.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from niche3d import Simulation  # noqa: E402
from niche3d.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "scenarios" / "homeostasis.toml"

#: kinetic parameters searched in stage 2: key -> (low, high), log-uniform
KINETIC_BOX: dict[str, tuple[float, float]] = {
    "cells.cycle.activation_per_day": (0.001, 0.01),
    "cells.cycle.g0_exit_per_day": (0.02, 0.15),
    "cells.lineage.demand_mpp_per_mm3_per_day": (2.0, 20.0),
    "cells.blood.egress_per_h": (0.02, 0.3),
}

#: no extra ranges: calibration_table scores the section-7 targets too
SECTION7: dict[str, tuple[float, float]] = {}


def site_scores(overrides: dict[str, float]) -> dict[str, float]:
    """Sites of the default block at t = 0 under ``overrides``: count, density and the
    shares near sinusoid walls and the endosteum (within 10 µm)."""
    sim = Simulation(load_scenario(SCENARIO).with_overrides(overrides))
    cells = sim.cells
    sites = cells.niche_sites() > 0
    lat = sim.lattice
    n = int(sites.sum())
    vol = float(lat.enterable.sum()) * lat.voxel_volume_mm3
    out = {"sites": n, "sites_per_mm3": n / vol}
    if n:
        out["perisinusoidal"] = float((lat.dist_sinusoid_um[sites] <= 10.0).mean())
        out["endosteal"] = float((lat.dist_endosteum_um[sites] <= 10.0).mean())
    else:
        out["perisinusoidal"] = out["endosteal"] = math.nan
    return out


def stage_sites(args: argparse.Namespace) -> dict[str, float]:
    best: tuple[float, dict[str, float]] | None = None
    grid = [(w, a, round(float(t), 4)) for w in args.w_sno for a in args.arteriole
            for t in np.arange(args.thr[0], args.thr[1] + 1e-9, args.thr[2])]
    for w_sno, art, thr in grid:
        over = {"cells.fate.w_sno": float(w_sno),
                "fields.membrane_scf.expression.arteriole": float(art),
                "cells.fate.site_threshold": thr}
        sc = site_scores(over)
        if not sc["sites"]:
            loss = math.inf
        else:
            loss = ((sc["perisinusoidal"] - 0.85) / 0.85) ** 2 + ((sc["endosteal"] - 0.14) / 0.14) ** 2 \
                + ((sc["sites_per_mm3"] - args.site_density) / args.site_density) ** 2
        print(json.dumps({**over, **{k: round(v, 4) for k, v in sc.items()}, "loss": round(loss, 4)}),
              flush=True)
        if best is None or loss < best[0]:
            best = (loss, over)
    assert best is not None
    print("chosen:", json.dumps(best[1]), "loss", round(best[0], 4))
    return best[1]


def run_scores(overrides: dict[str, float], days: float, skip_days: float,
               seeds: tuple[int, ...] = (1,)) -> dict[str, float]:
    """Replicate runs of the default block (one geometry, ``tissue.seed = 1``, cell seeds
    ``seeds``), pooled by ``calibration_table``; the targets' values and the loss."""
    from niche3d.analysis.calibration import TARGETS, calibration_table
    from niche3d.io import open_run

    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for seed in seeds:
            store = Path(tmp) / f"run{seed}.zarr"
            sc = load_scenario(SCENARIO).with_overrides(
                {**overrides, "tissue.seed": 1, "run.seed": seed, "run.days": days,
                 "output.fields": False})
            Simulation(sc, store).run()
            runs.append(open_run(store))
        table = calibration_table(runs, skip_days=skip_days)
        values = {k: float(table.loc[k, "simulated"]) for k in table.index}
        late = runs[0].metrics[runs[0].metrics["t"] >= skip_days * 24.0]
        values["hsc_mean"] = float(np.mean([r.metrics[r.metrics["t"] >= skip_days * 24.0]["hsc_total"].mean()
                                            for r in runs]))
        values["blood_hsc_per_mouse"] = float(late["blood_hsc_per_mouse"].mean())
    loss = 0.0
    margin = math.inf
    ranges = {k: (t.low, t.high) for k, t in TARGETS.items()}
    ranges.update(SECTION7)
    for key, (lo, hi) in ranges.items():
        v = values.get(key, math.nan)
        if not math.isfinite(v):
            loss += 4.0 if key in ("dormant_endosteal_enrichment",) else 1.0
            continue
        width = (hi - lo) if math.isfinite(hi) and math.isfinite(lo) else max(abs(lo), 1.0)
        if v < lo:
            loss += ((lo - v) / width) ** 2
        elif v > hi:
            loss += ((v - hi) / width) ** 2
        if math.isfinite(lo) and math.isfinite(hi):
            margin = min(margin, min(v - lo, hi - v) / width)
    values["loss"] = loss
    # among parameter sets that meet every target, prefer the one farthest from any bound
    values["margin"] = margin
    return values


def stage_kinetics(args: argparse.Namespace) -> dict[str, float]:
    from scipy.stats import qmc

    box = dict(KINETIC_BOX)
    for spec in args.box:
        key, rng = spec.split("=", 1)
        a, b = (float(v) for v in rng.split(":"))
        box[key] = (a, b)
    keys = list(box)
    lo = np.log([box[k][0] for k in keys])
    hi = np.log([box[k][1] for k in keys])
    design = qmc.Sobol(len(keys), scramble=True, seed=args.seed).random(args.n)
    fixed = dict(kv.split("=", 1) for kv in args.set)
    best: tuple[float, dict[str, float]] | None = None
    for row in design:
        over = {k: float(np.exp(a + (b - a) * u)) for k, a, b, u in zip(keys, lo, hi, row, strict=True)}
        over.update({k: float(v) for k, v in fixed.items()})
        t0 = time.perf_counter()
        sc = run_scores(over, args.days, args.skip_days, tuple(args.seeds))
        print(json.dumps({"params": {k: round(v, 5) for k, v in over.items()},
                          "scores": {k: round(v, 4) for k, v in sc.items()},
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        key = (sc["loss"], -sc["margin"])
        if best is None or key < best[0]:
            best = (key, over)
    assert best is not None
    print("chosen:", json.dumps(best[1]), "loss", round(best[0][0], 4), "margin", round(-best[0][1], 4))
    return best[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    s1 = sub.add_parser("sites", help="stage 1: niche-site geometry (no runs)")
    s1.add_argument("--w-sno", type=float, nargs="+", default=[0.3, 0.35, 0.45])
    s1.add_argument("--arteriole", type=float, nargs="+", default=[0.0, 0.5, 0.7, 1.0])
    s1.add_argument("--thr", type=float, nargs=3, default=[1.96, 2.04, 0.02],
                    metavar=("LOW", "HIGH", "STEP"), help="site_threshold grid")
    s1.add_argument("--site-density", type=float, default=300.0, help="target sites per mm³")
    s2 = sub.add_parser("kinetics", help="stage 2: cycle, demand and egress rates (runs)")
    s2.add_argument("--n", type=int, default=16, help="design points (a power of 2)")
    s2.add_argument("--days", type=float, default=80.0)
    s2.add_argument("--skip-days", type=float, default=40.0)
    s2.add_argument("--seed", type=int, default=14)
    s2.add_argument("--set", action="append", default=[], help="fixed KEY=VALUE for every run")
    s2.add_argument("--box", action="append", default=[], metavar="KEY=LO:HI",
                    help="search KEY log-uniformly in [LO, HI] (adds to or replaces KINETIC_BOX)")
    s2.add_argument("--seeds", type=int, nargs="+", default=[1],
                    help="cell seeds of replicate runs pooled per design point (one geometry)")
    args = ap.parse_args(argv)
    if args.stage == "sites":
        stage_sites(args)
    else:
        stage_kinetics(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
