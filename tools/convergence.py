"""Does the HSC number forget its seeding? Runs of the default block seeded at several
densities (BIOLOGY.md section 7, target 6), with replicate cell seeds.

Each run is ``scenarios/homeostasis.toml`` with ``cells.hsc_per_mm3`` = factor x the
default density, ``run.seed`` = a replicate seed and ``tissue.seed = 1`` (one geometry),
simulated for ``--days`` days without a store. The script prints, per run, the HSC count
every ``--window`` days (window means) and writes every daily count to ``--json``; with
``--figure`` it draws the trajectories (docs/img/convergence.png).

The replicate noise is the standard deviation of the late-window means between the
replicate seeds at 1x; runs "converge" when the late means of every seeding lie within
2 of those standard deviations (plus the standard error of a window mean) of the 1x mean.

Usage::

    PYTHONPATH=. .venv/bin/python tools/convergence.py --days 200 --seeds 1 2 3 \\
        --json /tmp/convergence.json --figure docs/img/convergence.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from niche3d import Simulation  # noqa: E402
from niche3d.scenario import load_scenario  # noqa: E402

SCENARIO = ROOT / "scenarios" / "homeostasis.toml"


def trajectory(factor: float, seed: int, days: int) -> dict[str, list[float]]:
    """Daily HSC count, free niche sites and site count of one run."""
    base = load_scenario(SCENARIO)
    dens = base.cells.hsc_per_mm3 * factor
    sim = Simulation(base.with_overrides({"cells.hsc_per_mm3": dens, "run.seed": seed, "tissue.seed": 1,
                                          "output.fields": False}))
    out: dict[str, list[float]] = {"hsc": [], "free": [], "sites": []}
    m = sim.metrics()
    for _ in range(days + 1):
        out["hsc"].append(m["hsc_total"])
        out["free"].append(m["niche_sites_free"])
        out["sites"].append(m["niche_sites"])
        if len(out["hsc"]) <= days:
            sim.run(days=1)
            m = sim.metrics()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--factors", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--late", type=int, default=50, help="days at the end scored as the level")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--figure", type=Path, default=None)
    args = ap.parse_args(argv)
    runs: dict[str, dict[str, list[float]]] = {}
    t0 = time.time()
    for f in args.factors:
        for s in args.seeds:
            tr = trajectory(f, s, args.days)
            runs[f"{f}x/seed{s}"] = tr
            h = np.asarray(tr["hsc"])
            wins = [round(float(h[a:a + args.window].mean()), 1)
                    for a in range(0, args.days, args.window)]
            print(f"{f}x seed {s}: start {h[0]:.0f}, window means {wins}, "
                  f"late mean {h[-args.late:].mean():.1f}, free sites at end {tr['free'][-1]:.0f} "
                  f"of {tr['sites'][-1]:.0f} ({time.time() - t0:.0f} s)", flush=True)
    late = {f: [float(np.mean(runs[f"{f}x/seed{s}"]["hsc"][-args.late:])) for s in args.seeds]
            for f in args.factors}
    ref = late.get(1.0, late[args.factors[0]])
    sd = float(np.std(ref, ddof=1)) if len(ref) > 1 else float("nan")
    print("late means by seeding:", json.dumps({f"{f}x": [round(v, 1) for v in late[f]]
                                                 for f in args.factors}))
    print(f"replicate SD at 1x: {sd:.1f}; seeding means: "
          + ", ".join(f"{f}x {np.mean(late[f]):.1f}" for f in args.factors))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": runs, "late": {str(k): v for k, v in late.items()}}))
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        colors = {f: c for f, c in zip(args.factors, ("tab:blue", "tab:green", "tab:red", "tab:purple"),
                                       strict=False)}
        for key, tr in runs.items():
            f = float(key.split("x")[0])
            ax.plot(tr["hsc"], color=colors.get(f, "k"), lw=1, alpha=0.8,
                    label=f"{f}x seeding" if key.endswith(f"seed{args.seeds[0]}") else None)
        ax.plot(runs[next(iter(runs))]["sites"], color="0.4", ls="--", lw=1, label="niche sites")
        ax.set_xlabel("day")
        ax.set_ylabel("HSCs in the block")
        ax.set_title("HSC number seeded at 0.5x, 1x and 2x the default density")
        ax.legend(frameon=False)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=120)
        print("figure:", args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
