"""Run niche3d's benchmarks one after another: ``python -m benchmarks [--quick]``.

Each benchmark times our code and a baseline in the same process, prints the ratios and
writes its JSON under ``benchmarks/results/``. ``--quick`` gives every script its short
mode (a few minutes in all on 2 cores); without it the full modes run (about half an
hour). ``--only NAME ...`` picks scripts by name (``threads``, ``store``, ``fields``,
``skip``, ``shape``, ``profile``, ``targets``, ``scaling``, ``vcycle``, ``cells``,
``tissue``, ``ensemble``, ``tables``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

#: name -> (script, quick arguments, full arguments)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "threads": ("bench_threads.py", ["--quick"], []),
    "store": ("bench_store.py", ["--days", "30", "--block", "3"], ["--days", "365"]),
    "fields": ("bench_fields.py", ["--sizes", "64", "--repeats", "1"], []),
    "skip": ("bench_skip.py", ["--days", "10", "--repeats", "2"], ["--days", "60", "--repeats", "3"]),
    "shape": ("bench_shape.py", ["--n", "64", "--days", "2"], ["--n", "128", "--days", "3"]),
    "profile": ("bench_profile.py", ["--days", "10"], ["--days", "30", "--compile"]),
    "targets": ("bench_targets.py", ["--quick"], []),
    "scaling": ("bench_scaling.py", ["--sizes", "32", "64", "96", "128"],
                ["--sizes", "32", "64", "96", "128", "192", "256", "--femur", "--plot"]),
    "vcycle": ("bench_vcycle.py", ["--shape", "128", "128", "128", "--warm-days", "0.25"],
               ["--shape", "256", "256", "256"]),
    "cells": ("bench_cells.py", ["--quick"], []),
    "tissue": ("bench_tissue.py", [], ["--large"]),
    "ensemble": ("bench_ensemble.py", ["--runs", "8", "--days", "2"], ["--runs", "8", "--days", "5"]),
    "tables": ("bench_tables.py", ["--records", "60", "--cells", "5000"], []),
}


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short modes")
    ap.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    a = ap.parse_args()
    failed = []
    for name in a.only:
        script, quick, full = BENCHES[name]
        cmd = [sys.executable, str(HERE / script), *(quick if a.quick else full)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, check=False)
        print(f"== {name}: {'ok' if r.returncode == 0 else f'FAILED ({r.returncode})'} "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        if r.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
