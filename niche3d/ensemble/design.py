"""Sweep designs: which scenarios a sweep runs, and with which seeds.

A design is a table of *points* (one row per parameter set, one column per varied key)
crossed with *replicates* (the same point run with different seeds). Values are either
listed (``grid``: every combination; ``list``: the i-th value of every key together) or
drawn from ranges (``random``, ``lhs``, ``sobol``; scipy.stats.qmc and numpy's
Generator, seeded from the sweep seed). Sensitivity analyses hand their own SALib sample
in as explicit points.

Seeds
-----
Replicate ``r`` of every point runs with the seed of child ``r`` of
``numpy.random.SeedSequence(sweep_seed)`` (``seeds="common"``, the default: common random
numbers, so the points of one replicate share their tissue and random streams and a
difference between points is the parameters' doing, not the draw's). With
``seeds="independent"`` every (point, replicate) gets its own child. The seed of every
run is written in the index and in its store.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from niche3d.scenario import Scenario, ScenarioError

__all__ = ["DESIGNS", "Design", "Range", "parse_vary", "replicate_seeds"]

DESIGNS = ("grid", "list", "random", "lhs", "sobol")
DesignKind = Literal["grid", "list", "random", "lhs", "sobol", "points"]
SeedMode = Literal["common", "independent"]

_RANGE = re.compile(
    r"^\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*:\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*(?::\s*(log|lin))?\s*$"
)


@dataclass(frozen=True)
class Range:
    """A continuous range ``[low, high]`` to sample, uniformly or log-uniformly."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ScenarioError(f"range {self.low}:{self.high} must be finite")
        if not self.low < self.high:
            raise ScenarioError(f"range {self.low:g}:{self.high:g} must have low < high")
        if self.log and self.low <= 0:
            raise ScenarioError(f"log range {self.low:g}:{self.high:g} must be positive")

    def scale(self, u: np.ndarray) -> np.ndarray:
        """Map unit-interval samples ``u`` onto the range."""
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return np.exp(lo + u * (hi - lo))
        return self.low + u * (self.high - self.low)

    def to_json(self) -> list[Any]:
        return [self.low, self.high, "log" if self.log else "lin"]


def parse_vary(items: Sequence[str] | Mapping[str, Any]) -> dict[str, list[Any] | Range]:
    """Parse ``key=v1,v2,...`` (listed values, TOML syntax) or ``key=low:high[:log]``.

    Parameters
    ----------
    items
        CLI strings such as ``["cells.speed_um_min=0.5,1,2", "cells.cycle.g1_mean_hours=100:300"]``,
        or a mapping from key to a list of values, a :class:`Range`, or a ``(low, high)`` /
        ``(low, high, "log")`` tuple.

    Raises
    ------
    ScenarioError
        A malformed item, a key varied twice, an empty list or a bad range.
    """
    out: dict[str, list[Any] | Range] = {}
    pairs: list[tuple[str, Any]]
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            if "=" not in item:
                raise ScenarioError(f"--vary {item!r} must look like key=v1,v2,... or key=low:high")
            key, raw = item.split("=", 1)
            pairs.append((key.strip(), _parse_values(raw, key.strip())))
    for key, spec in pairs:
        if not isinstance(key, str) or not key or not all(key.split(".")):
            raise ScenarioError(f"--vary key {key!r} is not a dotted key path")
        if key in out:
            raise ScenarioError(f"--vary {key} is given twice")
        if key == "run.seed":
            raise ScenarioError("run.seed cannot be varied: replicates take their seeds from "
                                "the sweep seed (--seed, --replicates)")
        out[key] = _as_spec(key, spec)
    if not out:
        raise ScenarioError("a sweep needs at least one --vary key=values")
    return out


def _parse_values(raw: str, key: str) -> list[Any] | Range:
    m = _RANGE.match(raw)
    if m:
        return Range(float(m.group(1)), float(m.group(2)), m.group(3) == "log")
    try:
        values = tomllib.loads(f"v = [{raw}]")["v"]
    except tomllib.TOMLDecodeError:
        values = [v.strip() for v in raw.split(",")]  # bare words are strings, as in --set
    if not values or any(v == "" for v in values):
        raise ScenarioError(f"--vary {key}={raw!r}: give one or more values separated by commas")
    return list(values)


def _as_spec(key: str, spec: Any) -> list[Any] | Range:
    if isinstance(spec, Range):
        return spec
    if isinstance(spec, tuple) and len(spec) in (2, 3) and all(
            isinstance(v, int | float) for v in spec[:2]):
        log = len(spec) == 3 and spec[2] == "log"
        if len(spec) == 3 and spec[2] not in ("log", "lin"):
            raise ScenarioError(f"vary {key}: a range's third item must be 'log' or 'lin'")
        return Range(float(spec[0]), float(spec[1]), log)
    if isinstance(spec, str) or not isinstance(spec, Sequence | np.ndarray):
        spec = [spec]
    values = [v.item() if isinstance(v, np.generic) else v for v in spec]
    if not values:
        raise ScenarioError(f"vary {key}: no values")
    return values


def replicate_seeds(sweep_seed: int, n: int) -> list[int]:
    """``n`` seeds in ``[0, 2**63)`` derived from ``sweep_seed`` (SeedSequence children)."""
    if not 0 <= int(sweep_seed) < 2**63:
        raise ScenarioError(f"sweep seed {sweep_seed} must be in [0, 2**63)")
    children = np.random.SeedSequence(int(sweep_seed)).spawn(n)
    return [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in children]


@dataclass
class Design:
    """The runs of a sweep: points x replicates, each with its seed and scenario.

    Parameters
    ----------
    vary
        Key -> listed values or :class:`Range` (see :func:`parse_vary`).
    kind
        ``grid``, ``list``, ``random``, ``lhs``, ``sobol``, or ``points`` when ``points``
        is given.
    n
        Number of points of a sampled design (``random``, ``lhs``, ``sobol``).
    replicates
        Runs per point, with seeds from the sweep seed.
    seed
        The sweep seed: replicate seeds and sampled designs derive from it.
    seeds
        ``common`` (replicate r has the same seed at every point) or ``independent``.
    points
        An explicit table of points (one column per key), e.g. a SALib sample.
    """

    vary: dict[str, list[Any] | Range]
    kind: DesignKind = "grid"
    n: int | None = None
    replicates: int = 1
    seed: int = 1
    seeds: SeedMode = "common"
    points: pd.DataFrame | None = None
    _table: pd.DataFrame | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.points is not None:
            self.kind = "points"
        if self.kind not in (*DESIGNS, "points"):
            raise ScenarioError(f"design {self.kind!r} is not one of {', '.join(DESIGNS)}")
        if not isinstance(self.replicates, int) or not 1 <= self.replicates <= 10_000:
            raise ScenarioError(f"replicates = {self.replicates!r} must be a whole number in 1..10000")
        if self.seeds not in ("common", "independent"):
            raise ScenarioError(f"seeds = {self.seeds!r} must be 'common' or 'independent'")
        ranges = [k for k, v in self.vary.items() if isinstance(v, Range)]
        lists = [k for k, v in self.vary.items() if not isinstance(v, Range)]
        if self.kind in ("grid", "list") and ranges:
            raise ScenarioError(f"design {self.kind!r} takes listed values, but {ranges[0]} is a "
                                f"range; use --design random, lhs or sobol with --n to sample ranges")
        if self.kind in ("random", "lhs", "sobol"):
            if lists:
                raise ScenarioError(f"design {self.kind!r} samples ranges (key=low:high), but "
                                    f"{lists[0]} lists values")
            if self.n is None or not isinstance(self.n, int) or not 1 <= self.n <= 1_000_000:
                raise ScenarioError(f"design {self.kind!r} needs the number of points, --n N "
                                    f"(1..1000000), got {self.n!r}")
        elif self.n is not None and self.kind != "points":
            raise ScenarioError(f"--n is for sampled designs (random, lhs, sobol), not {self.kind!r}")
        if self.kind == "list":
            lengths = {k: len(v) for k, v in self.vary.items()}  # type: ignore[arg-type]
            if len(set(lengths.values())) > 1:
                raise ScenarioError("design 'list' pairs the i-th values of every key, so every "
                                    f"--vary needs as many values; got {lengths}")

    # -------------------------------------------------------------- points
    def point_table(self) -> pd.DataFrame:
        """One row per point, one column per varied key (values as the scenario takes them)."""
        keys = list(self.vary)
        if self.kind == "points":
            assert self.points is not None
            return self.points.reset_index(drop=True)
        if self.kind == "grid":
            rows = list(itertools.product(*(self.vary[k] for k in keys)))  # type: ignore[misc]
            return pd.DataFrame(rows, columns=keys)
        if self.kind == "list":
            return pd.DataFrame({k: list(self.vary[k]) for k in keys})  # type: ignore[arg-type]
        assert self.n is not None
        d = len(keys)
        if self.kind == "random":
            u = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(1)[0]).random((self.n, d))
        else:
            from scipy.stats import qmc

            rng = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(1)[0])
            engine = qmc.LatinHypercube(d, rng=rng) if self.kind == "lhs" else qmc.Sobol(d, rng=rng)
            u = engine.random(self.n)
        return pd.DataFrame({k: self.vary[k].scale(u[:, j]) for j, k in enumerate(keys)})  # type: ignore[union-attr]

    def runs(self) -> pd.DataFrame:
        """One row per run: ``run_id``, ``point``, ``replicate``, ``seed`` and the keys."""
        if self._table is not None:
            return self._table
        pts = self.point_table()
        n_pts, n_rep = len(pts), self.replicates
        if self.seeds == "common":
            rep_seeds = replicate_seeds(self.seed, n_rep)
            seeds = [rep_seeds[r] for _ in range(n_pts) for r in range(n_rep)]
        else:
            seeds = replicate_seeds(self.seed, n_pts * n_rep)
        wp, wr = len(str(max(n_pts - 1, 0))), len(str(max(n_rep - 1, 0)))
        rows = []
        for p in range(n_pts):
            for r in range(n_rep):
                rows.append({"run_id": f"p{p:0{wp}d}-r{r:0{wr}d}", "point": p, "replicate": r,
                             "seed": seeds[p * n_rep + r]})
        table = pd.DataFrame(rows)
        params = pts.loc[table["point"]].reset_index(drop=True)
        self._table = pd.concat([table, params], axis=1)
        return self._table

    @property
    def keys(self) -> list[str]:
        return list(self.vary) if self.kind != "points" else list(self.points.columns)  # type: ignore[union-attr]

    def scenarios(self, base: Scenario) -> dict[str, Scenario]:
        """The validated scenario of every run, keyed by run id.

        Raises
        ------
        ScenarioError
            Naming the run, its values and what the scenario refused, before any run starts.
        """
        out: dict[str, Scenario] = {}
        cache: dict[int, Scenario] = {}
        runs = self.runs()
        keys = self.keys
        int_keys = {k for k in keys if _is_int_key(base, k)}
        for row in runs.to_dict("records"):
            values = {k: _plain(row[k], k in int_keys) for k in keys}
            point = int(row["point"])
            if point not in cache:
                try:
                    cache[point] = base.with_overrides(values)
                except ScenarioError as exc:
                    shown = ", ".join(f"{k}={v!r}" for k, v in list(values.items())[:4])
                    shown += ", ..." if len(values) > 4 else ""
                    raise ScenarioError(f"sweep point {point} ({shown}): {exc}") from None
            out[row["run_id"]] = cache[point].with_overrides({"run.seed": int(row["seed"])})
        return out

    def to_json(self) -> dict[str, Any]:
        """What identifies the design (the manifest's ``design`` entry)."""
        return {
            "kind": self.kind,
            "vary": {k: (v.to_json() if isinstance(v, Range) else v) for k, v in self.vary.items()},
            "n": self.n,
            "replicates": self.replicates,
            "seed": int(self.seed),
            "seeds": self.seeds,
            "points": None if self.points is None else json.loads(self.points.to_json(orient="split")),
        }


def _is_int_key(base: Scenario, key: str) -> bool:
    node: Any = base.to_dict()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, int) and not isinstance(node, bool)


def _plain(v: Any, as_int: bool) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if as_int and isinstance(v, float):
        return int(round(v))  # a sampled integer parameter takes the nearest whole number
    return v


def fingerprint(base_toml: str, design: Design) -> str:
    """SHA-256 of what decides a sweep's runs: a re-run with another fingerprint is refused."""
    doc = {"scenario": base_toml, "design": design.to_json()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
