"""``niche3d sweep`` and ``niche3d sensitivity``: the command-line side of ensembles.

Both validate every run's scenario before a cluster starts, show one live progress bar
(runs done / running / failed, ETA), print the Dask dashboard address, and on Ctrl-C
cancel cleanly: runs not started are dropped, running runs stop after their step with
their stores intact, and the same command later skips what finished and resumes the rest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "cmd_sweep", "cmd_sensitivity"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", "-o", required=True, help="sweep directory (made, or continued)")
    p.add_argument("--days", type=float, help="simulated days of every run (overrides run.days)")
    p.add_argument("--seed", type=int, help="sweep seed (default: the scenario's run.seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario value for every run (repeatable)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="an existing Dask scheduler (tcp://host:8786) instead of a LocalCluster")
    p.add_argument("--workers", type=int,
                   help="LocalCluster worker processes (default: one per core; each run uses "
                        "cores // workers numba threads)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the runs a runtime guard stopped in an earlier attempt "
                        "(other failures, such as a lost worker, are always retried)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_parsers(sub: Any) -> None:
    """Add the ``sweep`` and ``sensitivity`` sub-commands to ``niche3d``'s parser."""
    s = sub.add_parser(
        "sweep", help="run a parameter sweep with replicates on Dask",
        description="Run SCENARIO at every point of a design x --replicates seeds, one run "
        "store per run under --out, with a Parquet index (niche3d.open_sweep). Values: "
        "--vary key=v1,v2,... (grid, list) or key=low:high[:log] (random, lhs, sobol).")
    s.add_argument("scenario", help="scenario TOML file")
    s.add_argument("--vary", action="append", default=[], metavar="KEY=VALUES",
                   help="a varied key: key=v1,v2,... or key=low:high[:log] (repeatable)")
    s.add_argument("--design", default="grid", choices=["grid", "list", "random", "lhs", "sobol"],
                   help="grid: every combination (default); list: i-th values together; "
                        "random / lhs / sobol: --n points sampled from the ranges")
    s.add_argument("--n", type=int, help="points of a sampled design")
    s.add_argument("--replicates", type=int, default=1, help="runs per point (default 1)")
    s.add_argument("--seeds", default="common", choices=["common", "independent"],
                   help="common: replicate r has the same seed at every point (default)")
    _common(s)

    t = sub.add_parser(
        "sensitivity", help="global sensitivity analysis (Sobol or Morris, SALib) on Dask",
        description="Sample the --param ranges with SALib, run every sample as a sweep "
        "under --out, and compute Sobol (S1, ST) or Morris (mu*, sigma) indices of the "
        "--readouts with bootstrap confidence intervals.")
    t.add_argument("scenario", help="scenario TOML file")
    t.add_argument("--param", action="append", default=[], metavar="KEY=LOW:HIGH[:log]",
                   help="a parameter and its range (repeatable)")
    t.add_argument("--method", default="morris", choices=["sobol", "morris"])
    t.add_argument("--n", type=int, default=8,
                   help="base samples (sobol: N x (D + 2) runs) or trajectories (morris: "
                        "N x (D + 1) runs); default 8")
    t.add_argument("--readouts", default="hsc_total,frac_dormant,frac_sg2m",
                   help="comma-separated metric names (default hsc_total,frac_dormant,frac_sg2m)")
    t.add_argument("--summary", default="mean", choices=["mean", "final"],
                   help="mean over the second half of each run (default) or the last record")
    t.add_argument("--replicates", type=int, default=1, help="runs per sample, averaged")
    _common(t)


def _follow(sw: Any, quiet: bool) -> None:
    """Wait for the sweep with one live bar; Ctrl-C cancels it cleanly and re-raises."""
    if sw.n_to_run:
        print(f"{sw.n_to_run} runs to do on {sw.describe()}", file=sys.stderr, flush=True)
        import shutil

        free = shutil.disk_usage(sw.path).free
        if sw.bytes_bound > free:
            print(f"warning: these runs may write up to {_size(sw.bytes_bound)} (nothing "
                  f"compressed; stores are usually 60-80 % of that) and {sw.path} has "
                  f"{_size(free)} free. --set output.fields=false keeps only tables, "
                  "labels and checkpoints. A run that fills the disk fails and is retried "
                  "when the same command is run again.", file=sys.stderr, flush=True)
    link = sw.dashboard_link
    if link:
        print(f"Dask dashboard: {link}", file=sys.stderr, flush=True)
    bar = None
    if not quiet and sw.n_to_run:
        from tqdm import tqdm

        bar = tqdm(total=sw.n_to_run, unit="run", desc="sweep", file=sys.stderr,
                   bar_format="{l_bar}{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}]{postfix}")
    try:
        while not sw.wait(0.5):
            if bar is not None:
                p = sw.progress()
                bar.n = p["fraction"] * sw.n_to_run
                bar.set_postfix_str(f"done {p['done']}, running {p['running']}, "
                                    f"failed {p['failed']}")
        if bar is not None:
            p = sw.progress()
            bar.n = sw.n_to_run
            bar.set_postfix_str(f"done {p['done']}, failed {p['failed']}")
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        print("\ninterrupted: stopping the running runs after their current step ...",
              file=sys.stderr, flush=True)
        sw.cancel()
        p = sw.progress()
        print(f"{p['done']} runs finished and kept; {p['interrupted']} interrupted, "
              f"{p['pending']} not started. Run the same command again to continue "
              "(finished runs are skipped, interrupted ones resume from their checkpoints).",
              file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()


def _size(n: float) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.0f} MB"


def _summary(res: Any) -> None:
    counts = res.index["status"].value_counts().to_dict()
    print(f"sweep {res.path}: {len(res.index)} runs; " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for row in res.failed.itertuples():
        print(f"  FAILED {row.run_id}: {row.error}")
    print(f"index: {res.path / 'index.parquet'}")
    print(f"in Python: import niche3d; res = niche3d.open_sweep({str(res.path)!r})")


def cmd_sweep(a: argparse.Namespace) -> int:
    """``niche3d sweep``."""
    from niche3d.cli import _compile_first
    from niche3d.ensemble.engine import sweep

    sw = sweep(a.scenario, a.vary, out=a.out, design=a.design, n=a.n, replicates=a.replicates,
               seed=a.seed, seeds=a.seeds, days=a.days, overrides=a.overrides,
               scheduler=a.scheduler, workers=a.workers, retry_failed=a.retry_failed,
               before_start=lambda: _compile_first(a.quiet))
    _follow(sw, a.quiet)
    res = sw.results()
    _summary(res)
    done = res.index["status"] == "done"
    if done.any() and res.params:
        wanted = [r for r in ("hsc_total", "frac_dormant", "frac_sg2m", "blood_pool")
                  if r in res.readouts]
        if wanted:
            import matplotlib.pyplot as plt

            fig = res.plot(wanted, path=Path(a.out) / "report.png")
            plt.close(fig)
            print(f"report: {Path(a.out) / 'report.png'}")
    return 0 if bool(done.all()) else 1


def cmd_sensitivity(a: argparse.Namespace) -> int:
    """``niche3d sensitivity``."""
    from niche3d.cli import _compile_first
    from niche3d.ensemble.gsa import sensitivity

    readouts = [r.strip() for r in a.readouts.split(",") if r.strip()]
    job = sensitivity(a.scenario, a.param, method=a.method, n=a.n, readouts=readouts,
                      out=a.out, summary=a.summary, replicates=a.replicates, seed=a.seed,
                      days=a.days, overrides=a.overrides, scheduler=a.scheduler,
                      workers=a.workers, retry_failed=a.retry_failed,
                      before_start=lambda: _compile_first(a.quiet))
    _follow(job.sweep, a.quiet)
    result = job.result()
    _summary(result.sweep)
    print(result.format())
    print(f"indices: {result.path}")
    print(f"figure: {result.figure}")
    return 0
