"""``niche3d report RUN -o report.html``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "cmd_report"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``report`` subcommand."""
    r = sub.add_parser(
        "report",
        help="write one self-contained HTML report of a run",
        description="Write an HTML page (figures embedded, no other file needed) of RUN: "
        "localisation against random placement, state and cycle fractions, division modes, "
        "niche occupancy, blood, lineage output and clones, fields at HSCs against random "
        "points, geometry, the validation table, and the scenario and code version.",
    )
    r.add_argument("run", help="run store path")
    r.add_argument("-o", "--out", help="HTML file to write (default: report.html beside RUN)")
    r.add_argument("--skip-days", type=float, default=7.0, metavar="D",
                   help="burn-in of the validation's homeostasis targets in days (default 7)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random-placement draws (default 0)")
    r.add_argument("--n-random", type=int, default=1000, metavar="N",
                   help="random sets / points of the null models (default 1000)")


def cmd_report(a: argparse.Namespace) -> int:
    """Run the ``report`` subcommand; errors propagate to ``niche3d.cli.main`` (exit 2)."""
    import sys

    from niche3d.io import open_run
    from niche3d.report.build import check_report_args, make_report

    run = open_run(a.run)  # StoreError: one line and exit 2, from niche3d.cli.main
    here = Path(a.run).resolve()
    out = Path(a.out) if a.out else here.with_name(here.stem + "-report.html")
    try:
        check_report_args(run, out, skip_days=a.skip_days, n_random=a.n_random)
    except ValueError as exc:
        print(f"niche3d report: error: {exc}", file=sys.stderr)
        return 2
    path = make_report(run, out, skip_days=a.skip_days, n_random=a.n_random, seed=a.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
