"""The ``niche3d`` command line.

    niche3d run SCENARIO [-o OUT] [--days D] [--seed S] [--set key=value ...]
    niche3d run --resume OUT
    niche3d info RUN
    niche3d upgrade RUN [RUN ...]
    niche3d validate RUN [RUN ...] [--strict] [--json PATH|-] [--skip-days D]
    niche3d report RUN [-o report.html]
    niche3d export RUN --to DIR [--format tiff,trackmate,napari,csv,parquet] [--records A:B[:S]]
    niche3d scenario docs | show SCENARIO | validate SCENARIO
    niche3d geometry SCENARIO [-o OUT]
    niche3d view RUN
    niche3d movie RUN -o run.mp4 [--mode 2d|3d]
    niche3d warmup
    niche3d sweep SCENARIO --vary key=v1,v2 [--replicates N] --out DIR [--scheduler ADDR]
    niche3d sensitivity SCENARIO --param key=low:high ... --method sobol|morris --out DIR

Bad input (scenario, override, store) prints one clear message and exits with status 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="niche3d",
        description="Simulate the bone-marrow haematopoietic stem-cell niche in 3D.",
    )
    from niche3d._version import __version__

    p.add_argument("--version", action="version", version=f"niche3d {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser(
        "run",
        help="run a scenario to a run store",
        description="Run a TOML scenario and write an OME-Zarr run store, with a progress bar. "
        "Without -o the store goes to runs/<scenario file stem>.zarr (a new numbered name "
        "if that exists).",
    )
    r.add_argument("scenario", nargs="?", help="scenario TOML file (e.g. scenarios/homeostasis.toml)")
    r.add_argument("-o", "--out", help="run store path (*.zarr)")
    r.add_argument("--days", type=float, help="simulated days (overrides run.days)")
    r.add_argument("--seed", type=int, help="master seed (overrides run.seed)")
    r.add_argument("--threads", type=int, help="numba threads (overrides run.threads; 0 = all)")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario value, e.g. --set cells.speed_um_min=2 (repeatable)",
    )
    r.add_argument("--overwrite", action="store_true", help="replace an existing run store at --out")
    r.add_argument(
        "--resume", metavar="RUN", help="continue the run store RUN from its last checkpoint"
    )
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    i = sub.add_parser("info", help="summarise a run store", description="Print what a run store holds.")
    i.add_argument("run", help="run store path")

    s = sub.add_parser(
        "scenario",
        help="scenario reference, validation and full listing",
        description="Work with scenario files.",
    )
    ssub = s.add_subparsers(dest="action", required=True, parser_class=_Parser)
    d = ssub.add_parser("docs", help="print the parameter reference generated from the schema")
    d.add_argument("--format", choices=["markdown", "text"], default="markdown")
    d.add_argument("-o", "--out", help="write to this file instead of stdout")
    sh = ssub.add_parser("show", help="print a scenario with every default filled in (TOML)")
    sh.add_argument("scenario", nargs="?", help="scenario file (default: built-in defaults)")
    sh.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    v = ssub.add_parser("validate", help="check a scenario file and exit 0 if it is valid")
    v.add_argument("scenario")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    g = sub.add_parser(
        "geometry",
        help="generate a scenario's lattice and report its statistics",
        description="Build the scenario's tissue, print measured geometry beside the targets, "
        "and write the lattice to a store.",
    )
    g.add_argument("scenario")
    g.add_argument("-o", "--out", help="store for the lattice (default runs/<stem>-geometry.zarr)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    g.add_argument("--overwrite", action="store_true")

    w = sub.add_parser(
        "view", help="open a run store in napari", description="Open RUN in napari with niche3d's plugin."
    )
    w.add_argument("run")
    mv = sub.add_parser(
        "movie", help="render a time-lapse movie of a run (napari-animation)",
        description="Render RUN record by record in a hidden napari viewer, as a 2D slice or a "
        "3D view turning once over the run, with the time on every frame, and write an mp4 "
        "(mov, avi, mkv) or gif. Needs a display (a desktop, or xvfb-run).",
    )
    mv.add_argument("run")
    mv.add_argument("-o", "--out", required=True, help="movie file (.mp4, .mov, .avi, .mkv or .gif)")
    mv.add_argument("--mode", choices=["2d", "3d"], default="2d", help="a 2D slice or a turning 3D view")
    mv.add_argument("--fps", type=float, default=6.0, help="frames per second (1-60, default 6)")
    mv.add_argument("--frames-per-record", type=int, metavar="N",
                    help="frames from one record to the next (default 1 in 2D, 4 in 3D)")
    mv.add_argument("--z", type=float, metavar="UM", help="the 2D slice, µm (default: the plane with most cells)")
    mv.add_argument("--size", default="960x720", metavar="WxH", help="window size in pixels (default 960x720)")
    sub.add_parser(
        "warmup",
        help="compile the numba kernels now (tools/install.sh does)",
        description="Compile every numba kernel a run needs and cache it on disk, so that "
        "the next run starts at once. niche3d run does this by itself when it finds "
        "kernels without a cached copy.",
    )
    u = sub.add_parser(
        "upgrade",
        help="convert run stores of an older format to the current one, in place",
        description="Rewrite the tables of run stores written by an older niche3d (store "
        "formats 1 and 2: one float64 zarr array per table) as Parquet part files (format "
        "3), which any Arrow reader opens, and give a big lattice's store written before "
        "resolution pyramids its coarser levels (what a run writes today: fields averaged, "
        "labels by block mode; docs/store.md). Lossless and crash-safe: a store interrupted "
        "mid-way still opens, and running the command again finishes the job. Stores of "
        "the current format with their levels are left as they are.",
    )
    u.add_argument("runs", nargs="+", metavar="RUN", help="run store path(s)")
    from niche3d.analysis.validation import add_parser as add_validate_parser
    from niche3d.ensemble.cli import add_parsers
    from niche3d.export.cli import add_parser as add_export_parser
    from niche3d.report.cli import add_parser as add_report_parser

    add_parsers(sub)
    add_export_parser(sub)
    add_validate_parser(sub)
    add_report_parser(sub)
    return p


def _compile_first(quiet: bool) -> None:
    """Compile uncached kernels up front, saying so (the first run after an install)."""
    import niche3d.simulation  # noqa: F401  (imports every kernel module)
    from niche3d._warmup import cold_kernels, warm_up

    cold = cold_kernels()
    if not cold:
        return

    print(f"compiling {len(cold)} numba kernels (first run only: they are cached for every "
          "later run; about 1-3 min on 2 cores)", file=sys.stderr, flush=True)
    secs = warm_up(say=None if not quiet else (lambda _msg: None))
    print(f"kernels compiled in {secs:.0f} s", file=sys.stderr, flush=True)


def _cmd_warmup(a: argparse.Namespace) -> int:
    import niche3d.simulation  # noqa: F401
    from niche3d._warmup import cold_kernels, warm_up

    n = len(cold_kernels())
    print(f"niche3d warmup: {n} kernels to compile" if n else
          "niche3d warmup: every kernel is cached; checking a small run", file=sys.stderr, flush=True)
    secs = warm_up()
    print(f"niche3d warmup: done in {secs:.0f} s", file=sys.stderr)
    return 0


def _default_out(scenario_path: str | None, suffix: str = "") -> Path:
    stem = Path(scenario_path).stem if scenario_path else "scenario"
    base = Path("runs") / f"{stem}{suffix}.zarr"
    if not base.exists():
        return base
    k = 2
    while (Path("runs") / f"{stem}{suffix}-{k}.zarr").exists():
        k += 1
    return Path("runs") / f"{stem}{suffix}-{k}.zarr"


def _cmd_run(a: argparse.Namespace) -> int:
    from niche3d.scenario import load_scenario
    from niche3d.simulation import Simulation

    if a.resume:
        if a.scenario or a.overrides or a.days or a.seed is not None:
            raise _UsageError("--resume RUN takes no scenario, --set, --days or --seed")
        from niche3d.io import check_store
        from niche3d.io.lock import lock_path

        if not Path(a.resume).exists() and not lock_path(a.resume).exists():
            check_store(a.resume)  # "does not exist", and no lock file made for nothing
        _probe_lock(a.resume)  # another writer: said before anything else
        check_store(a.resume)  # a damaged store is reported before any compiling
        _compile_first(a.quiet)
        sim = Simulation.resume(a.resume)
        remaining = sim.scenario.run.days - sim.t_days
        print(f"resuming {a.resume} at day {sim.t_days:g}; {remaining:g} days to go", file=sys.stderr)
        with _closing_on_error(sim):
            if remaining > 1e-9:
                sim.run(days=remaining, progress=not a.quiet)
        _finish(sim, Path(a.resume))
        sim.close()
        return 0
    if not a.scenario:
        raise _UsageError("run needs a SCENARIO file (or --resume RUN)")
    overrides = list(a.overrides)
    if a.days is not None:
        overrides.append(f"run.days={a.days!r}")
    if a.seed is not None:
        overrides.append(f"run.seed={a.seed}")
    if a.threads is not None:
        overrides.append(f"run.threads={a.threads}")
    sc = load_scenario(a.scenario, overrides)
    if sc.tissue.source == "image":  # its metadata, before compiling or setting up
        from niche3d.tissue.importer import check_label_image

        check_label_image(sc.tissue, sc.domain.voxel_um)
    out = Path(a.out) if a.out else _default_out(a.scenario)
    _probe_lock(out)  # a store another process writes: refused whatever the flags
    if out.exists() and not a.overwrite:
        raise _UsageError(
            f"{out} already exists; choose another --out, add --overwrite to replace a run "
            f"store, or continue it with: {_invoked_as()} run --resume {out}"
        )
    _compile_first(a.quiet)
    t0 = time.perf_counter()
    print(f"building {sc.name!r}: lattice {tuple(sc.domain.shape)} at {sc.domain.voxel_um:g} µm ...",
          file=sys.stderr)
    sim = Simulation(sc, out, overwrite=a.overwrite)
    print(f"set up in {time.perf_counter() - t0:.1f} s; {sim.cells.n_cells} cells; "
          f"simulating {sc.run.days:g} days", file=sys.stderr)
    with _closing_on_error(sim):
        sim.run(progress=not a.quiet)
    _finish(sim, out)
    sim.close()
    return 0


@contextlib.contextmanager
def _closing_on_error(sim: Any) -> Iterator[None]:
    """On an error in the run, close the simulation (its writer lock released; a second
    error from the writer is not allowed to hide the first) and re-raise."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            sim.close()
        raise


def _probe_lock(store: str | Path) -> None:
    """Raise StoreLocked now if another process writes ``store`` (the run takes the lock
    for good at its start, before set-up; this only says so before compiling)."""
    from niche3d.io.lock import WriterLock

    WriterLock(store).acquire().release()


def _finish(sim: Any, out: Path) -> None:
    m = sim.metrics()
    keys = [k for k in ("hsc_total", "n_dormant", "frac_sg2m", "total_exits", "blood_pool") if k in m]
    summary = ", ".join(f"{k} = {m[k]:.4g}" for k in keys)
    print(f"\ndone: day {sim.t_days:g}; {summary}")
    exe = _invoked_as()
    print(f"run store: {out.resolve()}")
    print(f"look at it:  {exe} info {out}    |    {exe} view {out}    |    {exe} report {out}")
    print(f"in Python:   import niche3d; run = niche3d.open_run({str(out)!r})")


def _invoked_as() -> str:
    """The command as the user typed it (``.venv/bin/niche3d``), for copy-paste hints."""
    arg0 = sys.argv[0] if sys.argv else ""
    return arg0 if Path(arg0).name == "niche3d" else "niche3d"


def _cmd_info(a: argparse.Namespace) -> int:
    from niche3d.io import open_run

    run = open_run(a.run)
    print(_summary(run))
    return 0


def _cmd_upgrade(a: argparse.Namespace) -> int:
    from niche3d.io import check_store
    from niche3d.io.upgrade import upgrade

    for path in a.runs:  # every store is checked before any is changed
        check_store(path)
    for path in a.runs:
        done = upgrade(path)
        if done is None:
            print(f"{path}: already of the current format")
            continue
        if done["tables"]:
            tables = ", ".join(f"{t} {d['rows']} rows in {d['parts']} part(s)" for t, d in done["tables"].items())
            print(f"{path}: format {done['from']} -> {done['to']} ({tables})")
        for image, shapes in done.get("levels", {}).items():
            sizes = ", ".join(f"s{k} {' x '.join(map(str, s))}" for k, s in enumerate(shapes, start=1))
            print(f"{path}: {image or 'fields'}: pyramid levels added ({sizes})")
    return 0


def _levels_line(run: Any) -> str:
    """The image resolutions of a run: ``1 (no pyramid)`` or each level's shape."""
    levels = run.pyramid("tissue")
    if len(levels) == 1:
        return "1 (no pyramid: the lattice is small enough to show whole)"
    return f"{len(levels)}: " + ", ".join(
        f"s{k} {' x '.join(map(str, lv.array.shape[1:]))} at {lv.voxel_um[-1]:g} µm" for k, lv in enumerate(levels))


def _summary(run: Any) -> str:
    import tomllib

    from niche3d.io import StoreError

    try:
        sc = run.scenario
        about = f"{sc.name!r}: {sc.description}".rstrip(": ")
    except StoreError:
        # written by a model whose keys this niche3d no longer has: the store still reads
        sc = None
        raw = tomllib.loads(run.scenario_toml)
        about = (f"{raw.get('name', '?')!r} (its scenario is not valid with this niche3d: written "
                 "by an older model; its records and tables read, it resumes with that version)")
    shape = tuple(run.tissue.shape[1:])
    lines = [
        f"run store   {run.path}",
        f"scenario    {about}",
        f"code        {run.code_version}; seed {run.seed}",
        f"store       format {run.format_version}"
        + (" (float64 table arrays; 'niche3d upgrade RUN' converts them to Parquet)"
           if run.format_version < 3 else " (Parquet tables)"),
        f"lattice     {shape} voxels at {run.voxel_um:g} µm "
        f"({' x '.join(f'{n * run.voxel_um / 1000:.3g}' for n in shape)} mm)",
        f"levels      {_levels_line(run)}",
        f"records     {run.n_records} every {run.record_hours:g} h "
        f"(t = {run.times_h[0] if run.n_records else 0:g} .. {run.times_h[-1] if run.n_records else 0:g} h)",
        f"fields      {', '.join(f'{n} [{run.fields[n].attrs.get("units", "?")}]' for n in run.fields.data_vars) or 'not stored'}",
        f"cells       {len(run.cells)} rows; events {len(run.events)} rows",
    ]
    if len(run.metrics):
        last = run.metrics.iloc[-1]
        keys = [k for k in ("hsc_total", "n_dormant", "frac_sg2m", "total_exits", "blood_pool") if k in last]
        if keys:
            lines.append("last record " + ", ".join(f"{k} = {last[k]:.4g}" for k in keys))
    if sc is not None and sc.interventions:
        lines.append("interventions " + ", ".join(iv.kind for iv in sc.interventions))
    if run.failure is not None:
        lines.append(f"FAILED      {run.failure.get('message', run.failure.get('what'))}")
    return "\n".join(lines)


def _cmd_scenario(a: argparse.Namespace) -> int:
    from niche3d.scenario import Scenario, load_scenario, scenario_reference

    if a.action == "docs":
        text = scenario_reference(a.format)
        if a.out:
            Path(a.out).write_text(text, encoding="utf-8")
            print(f"wrote {a.out}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    if a.action == "show":
        sc = load_scenario(a.scenario, a.overrides) if a.scenario else Scenario.default().with_overrides(a.overrides)
        sys.stdout.write(sc.to_toml())
        return 0
    sc = load_scenario(a.scenario, a.overrides)
    print(f"{a.scenario}: valid scenario {sc.name!r} ({sc.run.days:g} days, lattice {tuple(sc.domain.shape)})")
    return 0


def _cmd_geometry(a: argparse.Namespace) -> int:
    from niche3d.scenario import load_scenario
    from niche3d.tissue import build_lattice, format_geometry_report, geometry_report

    sc = load_scenario(a.scenario, a.overrides)
    lat = build_lattice(sc.domain.shape, sc.domain.voxel_um, sc.tissue, seed=sc.run.seed)
    report = getattr(lat, "import_report", None)
    if report is not None:  # image sources: where the voxel size came from, derived layers
        for line in report.lines():
            print(line)
    print(format_geometry_report(geometry_report(lat, sc.tissue)))
    out = Path(a.out) if a.out else _default_out(a.scenario, "-geometry")
    from niche3d._version import code_version
    from niche3d.io import RunWriter

    w = RunWriter.create(
        out, scenario=sc, labels=lat.labels, voxel_um=lat.voxel_um, record_hours=sc.output.interval_hours,
        n_records=1, fields=[], seed=sc.run.seed, code_version=code_version(),
        dt_hours=sc.run.dt_hours, overwrite=a.overwrite,
    )
    w.write_record(0, 0.0, fields=None, labels=lat.labels, cells={}, metrics={})
    print(f"lattice store: {out.resolve()}")
    return 0


def _cmd_movie(a: argparse.Namespace) -> int:
    from niche3d.io import open_run

    open_run(a.run)  # a clear error for a wrong path before napari starts
    try:
        w, h = (int(x) for x in a.size.lower().split("x"))
    except ValueError:
        raise _UsageError(f"--size must be WIDTHxHEIGHT in pixels (e.g. 960x720), got {a.size!r}") from None
    try:
        from napari_niche3d._movie import _check, render_movie
    except ImportError:
        raise _UsageError(
            "napari, napari-animation and the napari-niche3d plugin are needed; "
            "run: bash tools/install.sh"
        ) from None
    fpr = a.frames_per_record if a.frames_per_record is not None else (4 if a.mode == "3d" else 1)
    try:
        _check(a.out, a.mode, a.fps, fpr)
        if not all(200 <= s <= 4000 for s in (w, h)):
            raise ValueError(f"--size must be in 200..4000 pixels a side, got {a.size}")
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    out = render_movie(a.run, a.out, mode=a.mode, fps=a.fps, frames_per_record=fpr, z_um=a.z, size=(w, h))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _cmd_view(a: argparse.Namespace) -> int:
    from niche3d.io import open_run

    open_run(a.run)  # a clear error for a wrong path before napari starts
    try:
        from napari_niche3d._launch import view
    except ImportError:
        raise _UsageError(
            "napari and the napari-niche3d plugin are not installed; "
            "run: pip install -e plugins/napari-niche3d"
        ) from None
    view(a.run)
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    from niche3d.ensemble.cli import cmd_sweep

    return cmd_sweep(a)


def _cmd_export(a: argparse.Namespace) -> int:
    from niche3d.export.cli import cmd_export

    return cmd_export(a)


def _cmd_validate(a: argparse.Namespace) -> int:
    from niche3d.analysis.validation import cmd_validate

    return cmd_validate(a)


def _cmd_report(a: argparse.Namespace) -> int:
    from niche3d.report.cli import cmd_report

    return cmd_report(a)


def _cmd_sensitivity(a: argparse.Namespace) -> int:
    from niche3d.ensemble.cli import cmd_sensitivity

    return cmd_sensitivity(a)


class _UsageError(ValueError):
    """Bad command-line input: one line on stderr, exit status 2."""


#: OSError numbers of a full, read-only or forbidden output (a clear message, exit 2)
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``niche3d`` command; returns the exit status."""
    parser = _build_parser()
    a = parser.parse_args(argv)
    handlers = {
        "run": _cmd_run,
        "info": _cmd_info,
        "scenario": _cmd_scenario,
        "geometry": _cmd_geometry,
        "view": _cmd_view,
        "movie": _cmd_movie,
        "warmup": _cmd_warmup,
        "upgrade": _cmd_upgrade,
        "sweep": _cmd_sweep,
        "sensitivity": _cmd_sensitivity,
        "export": _cmd_export,
        "validate": _cmd_validate,
        "report": _cmd_report,
    }
    from niche3d.errors import SimulationError, SweepError
    from niche3d.scenario import ScenarioError
    from niche3d.tissue.errors import LabelImageError

    known: tuple[type[BaseException], ...] = (ScenarioError, _UsageError, FileNotFoundError,
                                              LabelImageError, SimulationError, SweepError)
    from niche3d.io import StoreError

    known = (*known, StoreError)
    try:
        return handlers[a.command](a)
    except known as exc:
        print(f"niche3d {a.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # the disk or the directory the store is written to: the run's fault is the
        # machine's, and what is committed is kept
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"niche3d {a.command}: error: {exc.strerror or exc}{where}. Every record "
              "committed before is kept; once this is fixed, continue with: niche3d run "
              "--resume RUN", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if a.command in ("sweep", "sensitivity"):
            return 130  # the sweep said what it kept and how to continue
        print("\ninterrupted; the run store holds every record written so far "
              "(continue with: niche3d run --resume RUN)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
