"""The speed targets of issue 15, each run as a user runs it: ``niche3d run`` in a child
process, timed from the outside, with its peak resident memory.

* **block**: 60 days of homeostasis of a 2 x 2 x 1 mm block at 8 µm (125 x 250 x 250
  voxels), with its run store; target < 2 min.
* **femur**: ``scenarios/femur.toml`` (144 x 144 x 1248 voxels), 30 days with its run
  store; targets < 5 min and < 4 GB, set-up <= 60 s.

The baseline in the same run is the same command with every re-solve done
(``fields.skip_tolerance = 0``), so the ratio shows what skipping buys at this size.
``--quick`` runs a tenth of the days (10 and 3) and extrapolates the whole run from the
set-up and the time per day (marked so in the output). Lattices come from the on-disk
cache when present (the first run of a size generates it; ``set-up`` is printed by the
CLI and parsed here). Writes ``benchmarks/results/bench_targets.json``.

Run::

    python benchmarks/bench_targets.py            # full: about 10 minutes on 2 cores
    python benchmarks/bench_targets.py --quick    # about 3 minutes
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"

#: name -> (scenario, overrides, days, target seconds, target GB or None)
TARGETS = {
    "block": ("homeostasis.toml", ["domain.shape=[125,250,250]"], 60.0, 120.0, None),
    "femur": ("femur.toml", [], 30.0, 300.0, 4.0),
}


def run_cli(scenario: str, sets: list[str], days: float, out: Path) -> dict:
    """Time one ``niche3d run`` in a child process; its peak RSS from wait4."""
    cmd = [sys.executable, "-c", "import sys; from niche3d.cli import main; sys.exit(main())",
           "run", str(ROOT / "scenarios" / scenario), "--days", f"{days:g}", "-o", str(out), "-q"]
    for s in sets:
        cmd += ["--set", s]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    text = proc.stdout.read() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text}")
    m = re.search(r"set up in ([0-9.]+) s", text)
    setup = float(m.group(1)) if m else float("nan")
    return {"wall_seconds": wall, "setup_seconds": setup,
            "seconds_per_day": (wall - setup) / days, "peak_gb": usage.ru_maxrss / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the days, extrapolated")
    ap.add_argument("--only", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    ap.add_argument("--out", default=str(RESULTS / "bench_targets.json"))
    args = ap.parse_args()
    res: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                 "quick": args.quick, "targets": {}}
    with tempfile.TemporaryDirectory() as d:
        for name in args.only:
            scenario, sets, days, t_target, gb_target = TARGETS[name]
            run_days = days / 10 if args.quick else days
            rec: dict = {"days": days, "run_days": run_days, "target_seconds": t_target,
                         "target_gb": gb_target}
            for setup_name, extra in (("after", []), ("before", ["fields.skip_tolerance=0"])):
                r = run_cli(scenario, sets + extra, run_days, Path(d) / f"{name}-{setup_name}.zarr")
                r["whole_run_seconds"] = r["setup_seconds"] + r["seconds_per_day"] * days
                rec[setup_name] = r
            a, b = rec["after"], rec["before"]
            rec["met_time"] = a["whole_run_seconds"] < t_target
            rec["met_memory"] = gb_target is None or a["peak_gb"] < gb_target
            res["targets"][name] = rec
            how = "extrapolated from " + f"{run_days:g} days" if args.quick else "measured"
            print(f"{name}: {days:g} days in {a['whole_run_seconds']:.0f} s ({how}; target "
                  f"< {t_target:.0f} s: {'met' if rec['met_time'] else 'NOT met'}), set-up "
                  f"{a['setup_seconds']:.1f} s, peak {a['peak_gb']:.2f} GB"
                  + (f" (target < {gb_target:g} GB: {'met' if rec['met_memory'] else 'NOT met'})"
                     if gb_target else "")
                  + f"; every re-solve done: {b['whole_run_seconds']:.0f} s "
                  f"({b['seconds_per_day'] / a['seconds_per_day']:.2f}x per day)", flush=True)
    write_results(args.out, res)


if __name__ == "__main__":
    main()
