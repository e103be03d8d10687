"""A sweep directory on disk, and reading its results back.

Layout of a sweep directory::

    DIR/sweep.json          the manifest: scenario (TOML), design, sweep seed, code version
    DIR/index.parquet       one row per run (written by the client, atomically)
    DIR/runs/<id>.zarr      each run's store
    DIR/runs/<id>.json      each run's last result (written by the worker, atomically)
    DIR/report.png          readouts against the first varied parameter (the CLI's)

The index has the columns ``run_id``, ``point``, ``replicate``, ``seed``, ``status``
(``pending``, ``done``, ``failed``, ``interrupted``), ``error``, ``traceback``, ``wall_s``,
``store``, one ``param.<key>`` column per varied key, and ``final.<metric>`` /
``mean.<metric>`` readouts (:func:`niche3d.ensemble.task.summarise`). It is a plain
Parquet file: pandas, polars, DuckDB and Arrow read it without niche3d.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from niche3d.ensemble.design import Design, fingerprint
from niche3d.errors import SweepError
from niche3d.scenario import Scenario

__all__ = ["MANIFEST", "INDEX", "SweepError", "SweepResults", "open_sweep", "param_column", "prepare",
           "write_index"]

MANIFEST = "sweep.json"
INDEX = "index.parquet"
FORMAT = "niche3d-sweep/1"


def write_index(directory: Path, rows: pd.DataFrame) -> None:
    """Write ``rows`` as DIR/index.parquet, atomically (readers see the old or new file)."""
    from niche3d.io._atomic import atomic_write_bytes

    rows = rows.copy()
    for col in ("wall_s", "resumed_from_day"):
        if col in rows:
            rows[col] = pd.to_numeric(rows[col], errors="coerce").astype(float)
    buf = io.BytesIO()
    rows.to_parquet(buf, engine="pyarrow", index=False)
    atomic_write_bytes(directory / INDEX, buf.getvalue())


def param_column(values: pd.Series) -> pd.Series:
    """Parquet needs one type per column: lists and mixed types are stored as JSON text."""
    if values.map(lambda v: isinstance(v, list | tuple | dict | np.ndarray)).any() or \
            values.map(type).nunique() > 1 and not values.map(
                lambda v: isinstance(v, int | float) and not isinstance(v, bool)).all():
        return values.map(lambda v: json.dumps(np.asarray(v).tolist() if isinstance(v, np.ndarray) else v))
    return values


def prepare(path: Path, base: Scenario, design: Design) -> dict[str, Any]:
    """Create DIR (or check that it holds this very sweep) and return its manifest."""
    from niche3d._version import code_version
    from niche3d.io._atomic import atomic_write_bytes

    base_toml = base.to_toml()
    fp = fingerprint(base_toml, design)
    if (path / MANIFEST).exists():
        manifest = read_manifest(path)
        if manifest.get("fingerprint") != fp:
            raise SweepError(
                f"{path} holds another sweep (its scenario or design differ from this "
                "command's); choose another --out, or delete that directory to start over")
        return manifest
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SweepError(f"{path} exists and is not a niche3d sweep; choose another --out")
    (path / "runs").mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "fingerprint": fp, "code_version": code_version(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scenario": base_toml,
                "design": design.to_json(), "n_runs": len(design.runs())}
    atomic_write_bytes(path / MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of the sweep in ``directory``; :class:`SweepError` when there is none."""
    d = Path(directory)
    p = d / MANIFEST
    if not d.is_dir():
        raise SweepError(f"{d}: no such sweep directory")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{d} is not a niche3d sweep (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise SweepError(f"{p}: cannot be read ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SweepError(f"{p}: not a {FORMAT} manifest")
    return doc


def open_sweep(directory: str | Path) -> SweepResults:
    """Open a sweep directory written by :func:`niche3d.sweep` / ``niche3d sweep``.

    Examples
    --------
    >>> res = niche3d.open_sweep("sweeps/speed")                    # doctest: +SKIP
    >>> res.table(aggregate=True, readouts=["hsc_total"])          # doctest: +SKIP
    """
    d = Path(directory)
    manifest = read_manifest(d)
    try:
        index = pd.read_parquet(d / INDEX, engine="pyarrow")
    except FileNotFoundError:
        raise SweepError(f"{d}: the sweep has no {INDEX} yet") from None
    except (OSError, ValueError) as exc:
        raise SweepError(f"{d / INDEX}: cannot be read ({exc})") from None
    return SweepResults(d, manifest, index)


class SweepResults:
    """The results of a sweep: its index, tidy tables, plots and run stores.

    Attributes
    ----------
    path
        The sweep directory.
    manifest
        The sweep's manifest (scenario TOML, design, seed, code version).
    index
        One row per run (see the module docstring).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], index: pd.DataFrame) -> None:
        self.path = path
        self.manifest = manifest
        self.index = index

    def __repr__(self) -> str:
        counts = self.index["status"].value_counts().to_dict()
        return f"<SweepResults {self.path}: {len(self.index)} runs {counts}, params {self.params}>"

    @property
    def params(self) -> list[str]:
        """The varied keys."""
        return [c.removeprefix("param.") for c in self.index.columns if c.startswith("param.")]

    @property
    def readouts(self) -> list[str]:
        """The metric names summarised for every run."""
        return sorted({c.split(".", 1)[1] for c in self.index.columns if c.startswith("final.")})

    @property
    def failed(self) -> pd.DataFrame:
        """The runs that failed, with their error and traceback."""
        cols = [c for c in ("run_id", "failure", "error", "traceback") if c in self.index]
        return self.index[self.index["status"] == "failed"][cols]

    def open_run(self, run_id: str) -> Any:
        """The run store of ``run_id`` (:func:`niche3d.open_run`)."""
        from niche3d.io import open_run

        rows = self.index[self.index["run_id"] == run_id]
        if rows.empty:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        return open_run(self.path / rows["store"].iloc[0])

    def table(
        self,
        readouts: Sequence[str] | None = None,
        *,
        summary: str = "mean",
        aggregate: bool = False,
        confidence: float = 0.95,
        include_failed: bool = False,
    ) -> pd.DataFrame:
        """A long (tidy) table of readouts: one row per run and readout, or per point.

        Parameters
        ----------
        readouts
            Metric names (default: every one).
        summary
            ``mean`` (over the second half of each run) or ``final`` (last record).
        aggregate
            Replicates pooled per point: ``mean``, ``sd``, ``n``, ``ci_low``, ``ci_high``
            (Student-t interval of the mean; NaN with one replicate).
        confidence
            Level of that interval (default 0.95).
        include_failed
            Keep failed and unfinished runs (their readouts are NaN).

        Returns
        -------
        pandas.DataFrame
            Columns ``run_id``, ``point``, ``replicate``, ``seed``, the varied keys,
            ``readout``, ``summary``, ``value``; aggregated: the keys, ``point``,
            ``readout``, ``summary``, ``mean``, ``sd``, ``n``, ``ci_low``, ``ci_high``.
        """
        from niche3d.ensemble.task import SUMMARIES

        if summary not in SUMMARIES:
            raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        names = self.readouts if readouts is None else list(readouts)
        unknown = [r for r in names if r not in self.readouts]
        if unknown:
            raise KeyError(f"unknown readouts {unknown}; this sweep has {self.readouts}")
        idx = self.index if include_failed else self.index[self.index["status"] == "done"]
        ids = ["run_id", "point", "replicate", "seed"]
        wide = idx[ids + [f"param.{p}" for p in self.params]].rename(
            columns={f"param.{p}": p for p in self.params})
        values = idx[[f"{summary}.{r}" for r in names]].rename(columns=lambda c: c.split(".", 1)[1])
        long = pd.concat([wide, values], axis=1).melt(
            id_vars=ids + self.params, var_name="readout", value_name="value")
        long.insert(len(ids) + len(self.params) + 1, "summary", summary)
        if not aggregate:
            return long.reset_index(drop=True)
        return _aggregate(long, ["point", *self.params, "readout", "summary"], confidence)

    def plot(
        self,
        readouts: Sequence[str] | str = ("hsc_total",),
        param: str | None = None,
        *,
        summary: str = "mean",
        confidence: float = 0.95,
        path: str | Path | None = None,
    ) -> Any:
        """Readouts against one varied parameter: replicates as dots, their mean as a line
        with its confidence band; other varied keys as separate lines (up to 8).

        Returns the matplotlib Figure (also saved to ``path`` when given).
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = [readouts] if isinstance(readouts, str) else list(readouts)
        param = param or (self.params[0] if self.params else None)
        if param not in self.params:
            raise KeyError(f"param {param!r} is not varied in this sweep ({self.params})")
        runs = self.table(names, summary=summary)
        agg = self.table(names, summary=summary, aggregate=True, confidence=confidence)
        others = [p for p in self.params if p != param]
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            a = agg[agg["readout"] == name]
            r = runs[runs["readout"] == name]
            groups = list(a.groupby(others, sort=True)) if others else [((), a)]
            for k, (label, g) in enumerate(groups[:8]):
                colour = f"C{k}"
                g = g.groupby(param, sort=True).agg(
                    mean=("mean", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean")).reset_index()
                x = g[param].to_numpy(dtype=float)
                ax.plot(x, g["mean"], "-", color=colour, lw=1.5,
                        label=_label(others, label) if others else None)
                if np.isfinite(g["lo"]).any():
                    ax.fill_between(x, g["lo"], g["hi"], color=colour, alpha=0.2, lw=0)
                pts = r if not others else r[_match(r, others, label)]
                ax.plot(pts[param].to_numpy(dtype=float), pts["value"], "o", ms=3, alpha=0.5,
                        color=colour)
            ax.set_xlabel(param)
            ax.set_ylabel(f"{name} ({summary})")
            ax.grid(alpha=0.3)
            if others and len(groups) > 1:
                ax.legend(fontsize=7, frameon=False)
        n_rep = int(self.index["replicate"].max()) + 1 if len(self.index) else 0
        fig.suptitle(f"{self.path.name}: mean of {n_rep} replicate(s), "
                     f"{confidence:.0%} CI band", fontsize=9)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _label(keys: list[str], values: Any) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in zip(keys, values, strict=True))


def _match(df: pd.DataFrame, keys: list[str], values: Any) -> pd.Series:
    values = values if isinstance(values, tuple) else (values,)
    mask = pd.Series(True, index=df.index)
    for k, v in zip(keys, values, strict=True):
        mask &= df[k] == v
    return mask


def _aggregate(long: pd.DataFrame, by: list[str], confidence: float) -> pd.DataFrame:
    from scipy import stats

    # group keys that are lists (array-valued parameters) are not hashable: group on text
    hashable = long.copy()
    for col in by:
        if hashable[col].map(lambda v: isinstance(v, list | np.ndarray)).any():
            hashable[col] = hashable[col].map(lambda v: json.dumps(np.asarray(v).tolist()))
    g = hashable.groupby(by, sort=True, dropna=False)["value"]
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    half = []
    for sd, n in zip(out["sd"], out["n"], strict=True):
        if n < 2 or not math.isfinite(sd):
            half.append(math.nan)
        else:
            half.append(float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)))
    out["ci_low"] = out["mean"] - np.asarray(half)
    out["ci_high"] = out["mean"] + np.asarray(half)
    return out
