"""Global sensitivity analysis with SALib: Sobol indices or Morris screening of readouts.

The parameter ranges are sampled with SALib's own samplers in the unit hypercube
(``SALib.sample.sobol``: Saltelli's scheme, first and total order, N x (D + 2) runs;
``SALib.sample.morris``: N trajectories of D + 1 runs on a 4-level grid), mapped onto the
ranges (uniformly, or log-uniformly for ``low:high:log``), and run as a sweep
(:func:`niche3d.ensemble.engine.sweep`: the same directory layout, resume and failure
handling). Each readout is summarised per run (:func:`niche3d.ensemble.task.summarise`),
averaged over the replicates of each sample, and analysed with ``SALib.analyze.sobol``
or ``SALib.analyze.morris``, whose confidence intervals are bootstrap intervals
(``num_resamples`` resamples at ``conf_level``).

Replicates of a sample share their seed with every other sample (common random numbers),
so the indices measure the parameters' effect, not a change of tissue or random draw;
stochastic noise that remains shows as Morris ``sigma`` and as wide Sobol intervals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from niche3d.ensemble.design import Range, parse_vary
from niche3d.ensemble.results import SweepError, SweepResults, open_sweep
from niche3d.scenario import ScenarioError

__all__ = ["SensitivityJob", "SensitivityResult", "sensitivity", "METHODS"]

METHODS = ("sobol", "morris")
NUM_LEVELS = 4
SETTINGS = "sensitivity.json"


def _problem(ranges: dict[str, Range]) -> dict[str, Any]:
    return {"num_vars": len(ranges), "names": list(ranges), "bounds": [[0.0, 1.0]] * len(ranges)}


def _sample(method: str, problem: dict[str, Any], n: int, seed: int) -> np.ndarray:
    """The unit-cube sample of ``method`` (SALib's samplers)."""
    if method == "sobol":
        from SALib.sample import sobol

        return sobol.sample(problem, n, calc_second_order=False, seed=seed)
    from SALib.sample import morris

    return morris.sample(problem, n, num_levels=NUM_LEVELS, seed=seed)


def _check(method: str, ranges: dict[str, Any], n: int) -> dict[str, Range]:
    if method not in METHODS:
        raise ScenarioError(f"method {method!r} must be one of {', '.join(METHODS)}")
    bad = [k for k, v in ranges.items() if not isinstance(v, Range)]
    if bad:
        raise ScenarioError(f"--param {bad[0]} needs a range, key=low:high[:log]")
    if len(ranges) < 2:
        raise ScenarioError("a sensitivity analysis needs at least two --param ranges")
    if not isinstance(n, int) or not 2 <= n <= 65536:
        raise ScenarioError(f"--n {n!r} must be a whole number in 2..65536")
    if method == "sobol" and n & (n - 1):
        raise ScenarioError(f"--n {n} for sobol must be a power of two (Sobol' sequences "
                            "balance only there); try 8, 16, 32, ...")
    return ranges  # type: ignore[return-value]


class SensitivityJob:
    """A running sensitivity analysis: its :attr:`sweep` and, at the end, :meth:`result`."""

    def __init__(self, sweep: Any, settings: dict[str, Any], x: np.ndarray) -> None:
        self.sweep = sweep
        self.settings = settings
        self.x = x

    def result(self) -> SensitivityResult:
        """Wait for every run, then compute, save and return the indices."""
        self.sweep.wait()
        return _analyse(open_sweep(self.sweep.path), self.settings, self.x)


class SensitivityResult:
    """Sensitivity indices of a sweep directory.

    Attributes
    ----------
    indices
        Long table: ``readout``, ``param``, ``index`` (``S1``, ``ST`` for Sobol; ``mu_star``,
        ``mu``, ``sigma`` for Morris), ``value``, ``conf`` (bootstrap half-width;
        NaN where SALib gives none), ``ci_low``, ``ci_high``.
    sweep
        The underlying :class:`SweepResults`.
    path, figure
        ``sensitivity.parquet`` and ``sensitivity.png`` in the sweep directory.
    """

    def __init__(self, indices: pd.DataFrame, sweep: SweepResults, settings: dict[str, Any]) -> None:
        self.indices = indices
        self.sweep = sweep
        self.settings = settings
        self.path = sweep.path / "sensitivity.parquet"
        self.figure = sweep.path / "sensitivity.png"

    @property
    def method(self) -> str:
        return str(self.settings["method"])

    def ranking(self, readout: str) -> pd.DataFrame:
        """Parameters of ``readout`` from most to least influential (ST, or mu_star)."""
        key = "ST" if self.method == "sobol" else "mu_star"
        t = self.indices[(self.indices["readout"] == readout) & (self.indices["index"] == key)]
        return t.sort_values("value", ascending=False).reset_index(drop=True)

    def format(self) -> str:
        """A text table of the main index per readout and parameter."""
        key = "ST" if self.method == "sobol" else "mu_star"
        lines = []
        for readout in self.settings["readouts"]:
            lines.append(f"{readout} ({self.settings['summary']}): {key} ± {self.settings['conf_level']:.0%} CI")
            for row in self.ranking(readout).itertuples():
                lines.append(f"  {row.param:<45s} {row.value:10.4g} ± {row.conf:.3g}")
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None, *, top: int | None = 15) -> Any:
        """Bars of the indices per readout (most influential on top), with their CIs;
        the ``top`` most influential parameters of each readout (None: all)."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        readouts = list(self.settings["readouts"])
        keys = ["S1", "ST"] if self.method == "sobol" else ["mu_star", "sigma"]
        n_par = len(self.settings["params"]) if top is None else min(top, len(self.settings["params"]))
        fig, axes = plt.subplots(1, len(readouts), figsize=(4.6 * len(readouts), 0.34 * n_par + 1.4),
                                 squeeze=False)
        for ax, readout in zip(axes[0], readouts, strict=True):
            order = list(self.ranking(readout)["param"])[:n_par][::-1]
            y = np.arange(len(order))
            for j, key in enumerate(keys):
                t = self.indices[(self.indices["readout"] == readout) & (self.indices["index"] == key)]
                t = t.set_index("param").loc[order]
                err = t["conf"].fillna(0.0).to_numpy()
                ax.barh(y + (j - 0.5) * 0.38, t["value"], height=0.38, xerr=err, capsize=2,
                        label=key, color=f"C{j}")
            ax.set_yticks(y, [p.removeprefix("cells.") for p in order], fontsize=7)
            ax.set_title(f"{readout} ({self.settings['summary']})", fontsize=9)
            ax.axvline(0, color="k", lw=0.5)
            ax.legend(fontsize=7, frameon=False)
        shown = "" if n_par == len(self.settings["params"]) else \
            f", the {n_par} largest of {len(self.settings['params'])} parameters"
        fig.suptitle(f"{self.method} indices, {self.settings['conf_level']:.0%} bootstrap CI "
                     f"({len(self.sweep.index)} runs{shown})", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig

    @classmethod
    def load(cls, directory: str | Path) -> SensitivityResult:
        """The indices of a finished sensitivity sweep directory (recomputed from its runs)."""
        d = Path(directory)
        try:
            settings = json.loads((d / SETTINGS).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SweepError(f"{d} is not a sensitivity sweep (no {SETTINGS})") from None
        ranges = {k: Range(*v[:2], v[2] == "log") for k, v in settings["ranges"].items()}
        x = _sample(settings["method"], _problem(ranges), settings["n"], settings["seed"])
        return _analyse(open_sweep(d), settings, x)


def sensitivity(
    scenario: Any,
    params: Sequence[str] | Mapping[str, Any],
    *,
    out: str | Path,
    method: str = "morris",
    n: int = 8,
    readouts: Sequence[str] = ("hsc_total", "frac_dormant", "frac_sg2m"),
    summary: str = "mean",
    replicates: int = 1,
    seed: int | None = None,
    conf_level: float = 0.95,
    num_resamples: int = 1000,
    before_start: Callable[[], None] | None = None,
    **sweep_kw: Any,
) -> SensitivityJob:
    """Start a Sobol or Morris analysis of ``readouts`` over the ``params`` ranges.

    Parameters
    ----------
    scenario
        A Scenario or a TOML path.
    params
        ``["key=low:high[:log]", ...]`` or ``{key: (low, high[, "log"])}``.
    out
        The sweep directory (its runs, index, ``sensitivity.parquet`` and ``.png``).
    method, n
        ``sobol`` (n a power of two; n x (D + 2) runs) or ``morris`` (n trajectories;
        n x (D + 1) runs).
    readouts, summary
        Metric names, and ``mean`` (second half of each run) or ``final``.
    replicates, seed
        Runs per sample (averaged) and the sweep seed.
    conf_level, num_resamples
        The bootstrap confidence intervals.
    before_start
        Called before the cluster starts (see :func:`niche3d.sweep`).
    sweep_kw
        Passed to :func:`niche3d.sweep` (``days``, ``overrides``, ``scheduler``, ``workers``,
        ``client``, ``retry_failed``).

    Returns
    -------
    SensitivityJob
        ``job.sweep`` is the live :class:`~niche3d.ensemble.engine.Sweep`;
        ``job.result()`` waits and returns a :class:`SensitivityResult`.
    """
    from niche3d.ensemble.engine import sweep
    from niche3d.ensemble.task import SUMMARIES

    ranges = _check(method, parse_vary(params), n)
    if summary not in SUMMARIES:
        raise ScenarioError(f"summary {summary!r} must be one of {SUMMARIES}")
    if not readouts:
        raise ScenarioError("give at least one readout")
    if not 0 < conf_level < 1:
        raise ScenarioError(f"conf_level {conf_level} must be in (0, 1)")
    from niche3d.scenario import Scenario, load_scenario

    base = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    known = _metric_names(base)
    unknown = [r for r in readouts if known is not None and r not in known]
    if unknown:
        raise ScenarioError(f"unknown readouts {unknown}; a run of this scenario gives "
                            f"{', '.join(sorted(known))}")  # type: ignore[arg-type]
    seed = base.run.seed if seed is None else int(seed)
    problem = _problem(ranges)
    x = _sample(method, problem, n, seed)
    points = pd.DataFrame({k: r.scale(x[:, j]) for j, (k, r) in enumerate(ranges.items())})
    settings = {"method": method, "n": n, "seed": seed, "readouts": list(readouts),
                "summary": summary, "conf_level": conf_level, "num_resamples": num_resamples,
                "params": list(ranges), "ranges": {k: r.to_json() for k, r in ranges.items()}}
    sw = sweep(base, out=out, points=points, replicates=replicates, seed=seed,
               before_start=before_start, **sweep_kw)
    from niche3d.io._atomic import atomic_write_bytes

    atomic_write_bytes(Path(out) / SETTINGS, json.dumps(settings, indent=1).encode())
    return SensitivityJob(sw, settings, x)


def _metric_names(base: Any) -> set[str] | None:
    """The metric names a run of ``base`` records, from a small copy set up in memory
    (a second or two), so that a misspelt readout is refused before any run; None when
    the scenario cannot be shrunk (an imported tissue image)."""
    if base.tissue.source != "procedural":
        return None
    from niche3d.simulation import Simulation

    try:
        small = base.with_overrides({"domain.shape": [12, 24, 24]})
    except ScenarioError:
        return None
    with Simulation(small) as sim:
        return {k for k in sim.metrics() if k not in ("t_hours",)}


def _analyse(res: SweepResults, settings: dict[str, Any], x: np.ndarray) -> SensitivityResult:
    unknown = [r for r in settings["readouts"] if r not in res.readouts]
    if unknown:
        raise SweepError(f"unknown readouts {unknown}; the runs have {res.readouts}")
    idx = res.index
    missing = idx[idx["status"] != "done"]
    if len(missing):
        raise SweepError(
            f"{len(missing)} of {len(idx)} runs are not done ({', '.join(missing['run_id'][:5])}"
            f"{', ...' if len(missing) > 5 else ''}); the analysis needs every sample. Run the "
            "same command again to finish them (--retry-failed for failed ones)")
    problem = _problem({k: None for k in settings["params"]})  # type: ignore[misc]
    rows = []
    for readout in settings["readouts"]:
        col = f"{settings['summary']}.{readout}"
        y = idx.groupby("point", sort=True)[col].mean().to_numpy(dtype=float)
        if len(y) != len(x):
            raise SweepError(f"{res.path}: {len(y)} points but the design has {len(x)} samples")
        rows += _indices(settings, problem, x, y, readout)
    indices = pd.DataFrame(rows)
    half = indices["conf"].fillna(0.0)
    indices["ci_low"] = np.where(indices["conf"].notna(), indices["value"] - half, np.nan)
    indices["ci_high"] = np.where(indices["conf"].notna(), indices["value"] + half, np.nan)
    result = SensitivityResult(indices, res, settings)
    indices.to_parquet(result.path, index=False)
    indices.to_csv(result.path.with_suffix(".csv"), index=False)
    import matplotlib.pyplot as plt

    plt.close(result.plot(result.figure))
    return result


def _indices(settings: dict[str, Any], problem: dict[str, Any], x: np.ndarray, y: np.ndarray,
             readout: str) -> list[dict[str, Any]]:
    names = settings["params"]
    if not np.isfinite(y).all():
        bad = np.flatnonzero(~np.isfinite(y))
        raise SweepError(
            f"readout {readout!r} is undefined (NaN) at {len(bad)} of {len(y)} samples (points "
            f"{', '.join(str(b) for b in bad[:5])}{', ...' if len(bad) > 5 else ''}), e.g. a "
            "share of HSCs where none are left; analyse readouts defined in every run "
            "(counts such as hsc_total, n_dormant)")
    out: list[dict[str, Any]] = []
    if float(np.var(y)) == 0.0:  # a readout no parameter moves: every index is zero
        keys = ("S1", "ST") if settings["method"] == "sobol" else ("mu_star", "mu", "sigma")
        return [{"readout": readout, "param": p, "index": k, "value": 0.0, "conf": 0.0}
                for k in keys for p in names]
    if settings["method"] == "sobol":
        from SALib.analyze import sobol

        si = sobol.analyze(problem, y, calc_second_order=False, num_resamples=settings["num_resamples"],
                           conf_level=settings["conf_level"], seed=settings["seed"])
        pairs = (("S1", "S1_conf"), ("ST", "ST_conf"))
    else:
        from SALib.analyze import morris

        si = morris.analyze(problem, x, y, num_resamples=settings["num_resamples"],
                            conf_level=settings["conf_level"], num_levels=NUM_LEVELS,
                            seed=settings["seed"])
        pairs = (("mu_star", "mu_star_conf"), ("mu", None), ("sigma", None))
    for key, conf in pairs:
        for j, p in enumerate(names):
            c = float(si[conf][j]) if conf else math.nan
            out.append({"readout": readout, "param": p, "index": key, "value": float(si[key][j]),
                        "conf": c})
    return out
