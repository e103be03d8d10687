"""Figures and table of docs/calibration.md: the default homeostasis scenario vs BIOLOGY.md 6.

Runs the default homeostasis scenario (scenarios/homeostasis.toml, full size) for
``--days`` simulated days into a run store, or reads an existing store with ``--store``,
then writes

* ``docs/img/calibration_timeseries.png``: HSCs per state, cycling fractions, MPP output;
* ``docs/img/calibration_localisation.png``: share of HSCs within 10 µm of each
  compartment beside the random-placement null of the same geometry;
* ``docs/img/calibration_targets.png``: each target's simulated value and interval
  against the acceptable range;

and prints the markdown table target | simulated | range | source (also as JSON with
``--json``).

Usage::

    PYTHONPATH=. .venv/bin/python tools/make_calibration_figures.py --out /tmp/homeostasis120.zarr
    PYTHONPATH=. .venv/bin/python tools/make_calibration_figures.py --store /tmp/homeostasis120.zarr
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from niche3d.analysis.calibration import (  # noqa: E402
    PERISINUSOIDAL_UM,
    TARGETS,
    calibration_series,
    calibration_table,
    hsc_positions,
)
from niche3d.analysis.localisation import localisation_table  # noqa: E402
from niche3d.io import open_run  # noqa: E402
from niche3d.tissue.lattice import Lattice  # noqa: E402

STATE_COLORS = {
    "dormant": "#4c72b0",
    "active_g0": "#55a868",
    "active_g1": "#dd8452",
    "active_sg2m": "#c44e52",
}


def run_scenario(out: Path, days: float, overrides: list[str]) -> float:
    """Run scenarios/homeostasis.toml for ``days`` into ``out``; return the wall time (s)."""
    from niche3d.scenario import load_scenario
    from niche3d.simulation import Simulation

    sc = load_scenario(ROOT / "scenarios" / "homeostasis.toml", [f"run.days={days:g}", *overrides])
    t0 = time.perf_counter()
    Simulation(sc, out=out, overwrite=True).run(progress=True)
    return time.perf_counter() - t0


def fig_timeseries(series: pd.DataFrame, path: Path, skip_days: float) -> None:
    """HSCs per state (stacked), cycling fractions and MPP output against time."""
    t = series["t_days"].to_numpy()
    fig, ax = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    stack = [series[f"n_{s}"].to_numpy(dtype=float) for s in STATE_COLORS]
    ax[0].stackplot(t, *stack, labels=list(STATE_COLORS), colors=list(STATE_COLORS.values()), alpha=0.85)
    ax[0].plot(t, series["hsc_total"], color="k", lw=1.2, label="HSC total")
    ax[0].set_ylabel("HSCs on the lattice")
    ax[0].legend(loc="lower left", ncol=5, fontsize=8)
    ax[0].set_ylim(0, None)
    for col, lab, lo, hi, c in (
        ("frac_sg2m", "S/G2/M", 0.04, 0.05, "#c44e52"),
        ("frac_g0", "G0 (dormant + active G0)", 0.60, 0.70, "#55a868"),
        ("frac_dormant", "dormant", 0.15, 0.25, "#4c72b0"),
    ):
        ax[1].plot(t, series[col], color=c, lw=1.2, label=lab)
        ax[1].axhspan(lo, hi, color=c, alpha=0.12)
    ax[1].set_ylabel("fraction of HSCs")
    ax[1].set_ylim(0, 1)
    ax[1].legend(loc="upper right", fontsize=8, title="lines: simulated; bands: BIOLOGY.md 6",
                 title_fontsize=8)
    ax[2].bar(t, series["mpp_output_per_day"].fillna(0), width=0.9 * np.median(np.diff(t)), color="#8172b3",
              label="MPPs leaving the niche per day")
    ax[2].plot(t, series["divisions_per_day"], color="k", lw=1, label="HSC divisions per day")
    ax[2].set_ylabel("cells per day")
    ax[2].set_xlabel("time (days)")
    ax[2].legend(loc="upper right", fontsize=8)
    for a in ax:
        a.axvspan(0, skip_days, color="0.9", zorder=-1)
    ax[0].set_title(f"Default homeostasis scenario (grey: {skip_days:g}-day burn-in, not scored)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_localisation(run: object, path: Path, skip_days: float) -> pd.DataFrame:
    """Observed share within 10 µm of each compartment vs uniform placement; returns the table."""
    cells = run.cells  # type: ignore[attr-defined]
    late = cells[cells["t"] >= skip_days * 24.0]
    lattice = Lattice(np.asarray(run.tissue.isel(t=-1).values), run.voxel_um)  # type: ignore[attr-defined]
    groups = {
        "all HSCs": ("dormant", "active_g0", "active_g1", "active_sg2m"),
        "dormant": ("dormant",),
        "cycling (G1, S/G2/M)": ("active_g1", "active_sg2m"),
    }
    tabs = {g: localisation_table(lattice, hsc_positions(late, run.voxel_um, s), within_um=PERISINUSOIDAL_UM)  # type: ignore[attr-defined]
            for g, s in groups.items()}
    comps = list(tabs["all HSCs"].index)
    n_rec = max(late["record"].nunique(), 1)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / (len(groups) + 1)
    x = np.arange(len(comps))
    ax.bar(x - 0.4 + width / 2, tabs["all HSCs"]["null"], width, color="0.6", label="random placement (exact)")
    colors = ["#4c72b0", "#8fb0d8", "#c44e52"]
    for i, (g, tab) in enumerate(tabs.items()):
        obs = tab["observed"].to_numpy()
        n_eff = tab["n"].to_numpy() / n_rec
        err = 1.96 * np.sqrt(obs * (1 - obs) / np.maximum(n_eff, 1))
        ax.bar(x - 0.4 + width * (i + 1.5), obs, width, yerr=err, capsize=3, color=colors[i], label=g)
    ax.axhline(0.85, color="#4c72b0", ls="--", lw=1)
    ax.text(len(comps) - 0.5, 0.86, "Acar 2015: ~85 % at sinusoids", ha="right", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{c}" for c in comps])
    ax.set_ylabel(f"share within {PERISINUSOIDAL_UM:g} µm of the wall")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.8))
    ax.set_title("Localisation vs the random-placement null of the same geometry "
                 "(error bars: 95 %, one snapshot's n)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pd.concat(tabs, names=["group", "compartment"])


def fig_targets(table: pd.DataFrame, path: Path) -> None:
    """Each target: acceptable range (band) and simulated value with its interval."""
    keys = list(table.index)
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 0.55 * len(keys) + 0.8))
    for ax, key in zip(axes, keys, strict=True):
        r = table.loc[key]
        v, lo, hi = r["simulated"], r["low"], r["high"]
        finite = [a for a in (v, lo, hi, r["ci_low"], r["ci_high"]) if np.isfinite(a)]
        left, right = min(finite), max(finite)
        pad = 0.25 * (right - left) if right > left else 1.0
        left, right = left - pad, right + pad
        ax.axvspan(lo if np.isfinite(lo) else left, hi if np.isfinite(hi) else right, color="#55a868", alpha=0.25)
        if np.isfinite(r["ci_low"]) or np.isfinite(r["ci_high"]):
            a = r["ci_low"] if np.isfinite(r["ci_low"]) else left
            b = r["ci_high"] if np.isfinite(r["ci_high"]) else right
            ax.plot([a, b], [0, 0], color="k", lw=1.5)
        ax.plot([v], [0], "o", color="#4c72b0" if r["met"] else "#c44e52", ms=6)
        ax.set_xlim(left, right)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel(key, rotation=0, ha="right", va="center", fontsize=8)
    axes[0].set_title("green: acceptable range; dot: simulated (blue met, red not); line: 95 % interval",
                      fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:.3g}"


def markdown_table(table: pd.DataFrame) -> str:
    """target | simulated (95 % interval) | range | null | met | source."""
    lines = ["| target | simulated (95 % interval) | range | null (random placement; Poisson) | met | source |",
             "|---|---|---|---|---|---|"]
    for key, r in table.iterrows():
        ci = f" ({_fmt(r['ci_low'])}-{_fmt(r['ci_high'])})" if np.isfinite(r["ci_low"]) else ""
        if key == "dormant_endosteal_enrichment" and np.isfinite(r["p_value"]):
            ci += f", one-sided p = {r['p_value']:.2g}"
        lines.append(
            f"| {key} | {_fmt(r['simulated'])}{ci} | {_fmt(r['low'])} to {_fmt(r['high'])}"
            f"{'' if r['unit'] == '-' else ' ' + r['unit']} | "
            f"{_fmt(r['null'])} | {'yes' if r['met'] else '**no**'} | {TARGETS[key].source} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", type=Path, help="read this run store")
    src.add_argument("--out", type=Path, help="run the default homeostasis scenario into this store")
    ap.add_argument("--days", type=float, default=120.0, help="simulated days with --out (default 120)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="scenario override key=value with --out (repeatable)")
    ap.add_argument("--skip-days", type=float, default=14.0, help="burn-in not scored (default 14)")
    ap.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    if args.out is not None:
        wall = run_scenario(args.out, args.days, args.overrides)
        print(f"simulated {args.days:g} days in {wall:.0f} s")
        store = args.out
    else:
        store = args.store
    run = open_run(store)
    args.img_dir.mkdir(parents=True, exist_ok=True)
    series = calibration_series(run)
    table = calibration_table(run, skip_days=args.skip_days)
    fig_timeseries(series, args.img_dir / "calibration_timeseries.png", args.skip_days)
    loc = fig_localisation(run, args.img_dir / "calibration_localisation.png", args.skip_days)
    fig_targets(table, args.img_dir / "calibration_targets.png")
    print(f"store {store}: {run.n_records} records, shape {run.shape}, seed {run.seed}")
    print(markdown_table(table))
    print()
    print(loc[["n", "observed", "ci_low", "ci_high", "null", "enrichment"]].to_string(float_format="%.3f"))
    late = series[series["t_days"] >= args.skip_days]
    print()
    print(late[["hsc_total", "frac_sg2m", "frac_g0", "frac_dormant", "perisinusoidal_share",
                "mpp_output_per_day"]].describe().loc[["mean", "std", "min", "max"]].to_string(float_format="%.3f"))
    if args.json is not None:
        args.json.write_text(json.dumps(json.loads(table.to_json(orient="index")), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
