"""Ensembles without a cluster: designs, seeds, one run as a task, the index and tables,
and the sensitivity analysis' wiring to SALib (niche3d.ensemble)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from niche3d.ensemble.design import Design, Range, fingerprint, parse_vary, replicate_seeds
from niche3d.ensemble.gsa import _indices, _problem, _sample
from niche3d.ensemble.results import SweepError, open_sweep
from niche3d.ensemble.task import read_result, run_task, summarise
from niche3d.scenario import Scenario, ScenarioError


# ---------------------------------------------------------------------- parsing
def test_parse_vary_values_ranges_and_toml_types():
    v = parse_vary(["cells.speed_um_min=0.5,1,2", "tissue.source=procedural,image",
                    "cells.cycle.g1_mean_hours=100:300", "cells.blood.egress_per_h=0.01:1:log",
                    "domain.shape=[20,32,32],[24,32,32]"])
    assert v["cells.speed_um_min"] == [0.5, 1, 2]
    assert v["tissue.source"] == ["procedural", "image"]
    assert v["cells.cycle.g1_mean_hours"] == Range(100.0, 300.0, False)
    assert v["cells.blood.egress_per_h"] == Range(0.01, 1.0, True)
    assert v["domain.shape"] == [[20, 32, 32], [24, 32, 32]]
    assert parse_vary({"a.b": (1, 2, "log"), "a.c": 3})["a.c"] == [3]


@pytest.mark.parametrize("item, words", [
    ("cells.speed_um_min", "key=v1,v2"),
    ("cells.speed_um_min=", "one or more values"),
    ("run.seed=1,2", "replicates take their seeds"),
    ("cells.speed_um_min=2:1", "low < high"),
    ("cells.speed_um_min=0:1:log", "must be positive"),
    ("cells..speed=1", "dotted key path"),
])
def test_parse_vary_errors_name_the_item(item, words):
    with pytest.raises(ScenarioError, match=words):
        parse_vary([item])


def test_a_key_varied_twice_is_refused():
    with pytest.raises(ScenarioError, match="given twice"):
        parse_vary(["cells.speed_um_min=1", "cells.speed_um_min=2"])


# ---------------------------------------------------------------------- designs
def test_grid_is_every_combination_times_replicates():
    d = Design(parse_vary(["a.x=1,2", "a.y=10,20,30"]), replicates=3, seed=7)
    runs = d.runs()
    assert len(runs) == 2 * 3 * 3
    assert runs["run_id"].is_unique
    combos = set(zip(runs["a.x"], runs["a.y"], strict=True))
    assert combos == {(x, y) for x in (1, 2) for y in (10, 20, 30)}
    assert (runs.groupby("point").size() == 3).all()


def test_list_design_pairs_values_and_checks_lengths():
    d = Design(parse_vary(["a.x=1,2,3", "a.y=4,5,6"]), kind="list")
    assert list(zip(d.runs()["a.x"], d.runs()["a.y"], strict=True)) == [(1, 4), (2, 5), (3, 6)]
    with pytest.raises(ScenarioError, match="as many values"):
        Design(parse_vary(["a.x=1,2", "a.y=4,5,6"]), kind="list")


def test_design_kind_and_value_kind_must_agree():
    with pytest.raises(ScenarioError, match="takes listed values"):
        Design(parse_vary(["a.x=1:2"]))
    with pytest.raises(ScenarioError, match="samples ranges"):
        Design(parse_vary(["a.x=1,2"]), kind="lhs", n=4)
    with pytest.raises(ScenarioError, match="--n"):
        Design(parse_vary(["a.x=1:2"]), kind="sobol")
    with pytest.raises(ScenarioError, match="replicates"):
        Design(parse_vary(["a.x=1,2"]), replicates=0)


def test_latin_hypercube_fills_one_stratum_per_point_in_every_dimension():
    n = 16
    d = Design(parse_vary(["a.x=0:8", "a.y=1:16:log"]), kind="lhs", n=n, seed=3)
    pts = d.point_table()
    assert len(pts) == n
    strata_x = np.floor(pts["a.x"].to_numpy() / 8 * n)
    strata_y = np.floor(np.log(pts["a.y"].to_numpy()) / np.log(16) * n)
    assert sorted(strata_x) == list(range(n))
    assert sorted(strata_y) == list(range(n))


def test_sampled_designs_are_seeded_and_within_their_ranges():
    spec = parse_vary(["a.x=2:5"])
    for kind in ("random", "lhs", "sobol"):
        a = Design(spec, kind=kind, n=8, seed=1).point_table()["a.x"]
        b = Design(spec, kind=kind, n=8, seed=1).point_table()["a.x"]
        c = Design(spec, kind=kind, n=8, seed=2).point_table()["a.x"]
        assert a.between(2, 5).all()
        assert a.equals(b)
        assert not a.equals(c)


def test_common_seeds_repeat_across_points_and_derive_from_the_sweep_seed():
    d = Design(parse_vary(["a.x=1,2,3"]), replicates=4, seed=11)
    runs = d.runs()
    by_rep = runs.groupby("replicate")["seed"].nunique()
    assert (by_rep == 1).all()  # replicate r: one seed at every point
    assert runs.groupby("point")["seed"].nunique().eq(4).all()
    ss = np.random.SeedSequence(11).spawn(4)
    assert list(runs[runs["point"] == 0]["seed"]) == [
        int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in ss]
    assert replicate_seeds(11, 4) == list(runs[runs["point"] == 2]["seed"])
    ind = Design(parse_vary(["a.x=1,2,3"]), replicates=4, seed=11, seeds="independent").runs()
    assert ind["seed"].is_unique
    assert all(0 <= s < 2**63 for s in ind["seed"])


def test_every_run_is_validated_before_anything_runs():
    base = Scenario.default()
    d = Design(parse_vary(["cells.speed_um_min=1,-2"]), replicates=2)
    with pytest.raises(ScenarioError, match=r"sweep point 1 \(cells.speed_um_min=-2\)"):
        d.scenarios(base)
    good = Design(parse_vary(["cells.cycle.g1_shape=2:6"]), kind="lhs", n=4).scenarios(base)
    shapes = {sc.cells.cycle.g1_shape for sc in good.values()}
    assert all(isinstance(s, int) for s in shapes)  # an integer key takes whole numbers


def test_fingerprint_changes_with_the_design_and_the_scenario():
    base = Scenario.default().to_toml()
    a = Design(parse_vary(["a.x=1,2"]), replicates=2)
    assert fingerprint(base, a) == fingerprint(base, Design(parse_vary(["a.x=1,2"]), replicates=2))
    assert fingerprint(base, a) != fingerprint(base, Design(parse_vary(["a.x=1,2"]), replicates=3))
    other = Scenario.default().with_overrides({"run.days": 5.0}).to_toml()
    assert fingerprint(base, a) != fingerprint(other, a)


# ---------------------------------------------------------------------- one run as a task
def _spec(sc: Scenario, store, run_id="p0-r0", **kw):
    return {"run_id": run_id, "store": str(store), "scenario": sc.to_toml(),
            "days": sc.run.days, **kw}


def test_a_task_runs_summarises_and_then_reuses(tmp_path, tiny_scenario):
    store = tmp_path / "runs" / "p0-r0.zarr"
    store.parent.mkdir()
    r = run_task(_spec(tiny_scenario, store))
    assert r["status"] == "done", r["error"]
    from niche3d.io import open_run

    m = open_run(store).metrics
    assert r["final.hsc_total"] == m["hsc_total"].iloc[-1]
    late = m["t"] > tiny_scenario.run.days * 24 / 2
    assert r["mean.hsc_total"] == pytest.approx(m.loc[late, "hsc_total"].mean())
    assert read_result(store)["status"] == "done"
    again = run_task(_spec(tiny_scenario, store))
    assert again.get("reused") is True
    assert again["final.hsc_total"] == r["final.hsc_total"]


def test_a_failing_run_is_a_result_with_its_error_and_traceback(tmp_path, tiny_scenario):
    sc = tiny_scenario.with_overrides({"run.max_cells": 1})  # the runaway guard stops it
    store = tmp_path / "bad.zarr"
    r = run_task(_spec(sc, store))
    assert r["status"] == "failed"
    assert "run stopped" in r["error"]
    assert "SimulationError" in r["traceback"]
    assert read_result(store)["status"] == "failed"
    assert run_task(_spec(sc, store)).get("reused") is True  # not retried by default
    assert run_task(_spec(sc, store, retry_failed=True)).get("reused") is None


def test_an_interrupted_run_resumes_from_its_checkpoint_bit_for_bit(tmp_path, tiny_scenario):
    from niche3d.simulation import Simulation

    sc = tiny_scenario.with_overrides({"output.checkpoint_every_records": 2})
    whole = run_task(_spec(sc, tmp_path / "whole.zarr"))
    part = tmp_path / "part.zarr"
    sim = Simulation(sc, part)
    sim.run(days=1.5)  # a cancelled sweep stops its runs so: closed, checkpointed at 1.5 d
    sim.close()
    r = run_task(_spec(sc, part))
    assert r["status"] == "done"
    assert r["resumed_from_day"] == pytest.approx(1.5)
    keys = [k for k in whole if k.startswith(("final.", "mean."))]
    assert {k: r[k] for k in keys} == pytest.approx({k: whole[k] for k in keys}, nan_ok=True)


def test_summarise_takes_the_last_record_and_the_second_half_mean():
    m = pd.DataFrame({"record": [0, 1, 2, 3], "t": [0.0, 24.0, 48.0, 72.0],
                      "hsc_total": [10.0, 20.0, 30.0, 50.0], "label": ["a"] * 4})
    s = summarise(m, days=3.0)
    assert s == {"final.hsc_total": 50.0, "mean.hsc_total": 40.0}


# ---------------------------------------------------------------------- index and tables
def _fake_sweep(tmp_path, values=(1.0, 2.0), reps=3, seed=0):
    """A sweep directory written by the real engine's files, with made-up readouts."""
    import json

    from niche3d.ensemble.results import FORMAT, write_index

    rng = np.random.default_rng(seed)
    rows = []
    for p, v in enumerate(values):
        for r in range(reps):
            rows.append({"run_id": f"p{p}-r{r}", "point": p, "replicate": r, "seed": r,
                         "param.cells.speed_um_min": v, "status": "done", "error": None,
                         "traceback": None, "wall_s": 1.0, "store": f"runs/p{p}-r{r}.zarr",
                         "final.hsc_total": 50 + 10 * v + rng.normal(),
                         "mean.hsc_total": 40 + 10 * v + rng.normal(),
                         "final.frac_dormant": 0.2, "mean.frac_dormant": 0.2})
    (tmp_path / "sweep.json").write_text(json.dumps({"format": FORMAT}))
    write_index(tmp_path, pd.DataFrame(rows))
    return pd.DataFrame(rows)


def test_open_sweep_gives_a_tidy_table_and_replicate_intervals(tmp_path):
    raw = _fake_sweep(tmp_path)
    res = open_sweep(tmp_path)
    assert res.params == ["cells.speed_um_min"]
    assert res.readouts == ["frac_dormant", "hsc_total"]
    long = res.table()
    assert len(long) == len(raw) * 2
    assert set(long.columns) >= {"run_id", "replicate", "seed", "cells.speed_um_min", "readout",
                                 "summary", "value"}
    agg = res.table(["hsc_total"], aggregate=True)
    for v, g in raw.groupby("param.cells.speed_um_min"):
        x = g["mean.hsc_total"].to_numpy()
        row = agg[agg["cells.speed_um_min"] == v].iloc[0]
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        assert row["mean"] == pytest.approx(x.mean())
        assert row["n"] == len(x)
        assert row["ci_low"] == pytest.approx(x.mean() - half)
        assert row["ci_high"] == pytest.approx(x.mean() + half)
    with pytest.raises(KeyError, match="unknown readouts"):
        res.table(["nope"])


def test_the_report_plot_draws_each_point_and_its_band(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _fake_sweep(tmp_path, values=(0.5, 1.0, 2.0))
    fig = open_sweep(tmp_path).plot(["hsc_total", "frac_dormant"], path=tmp_path / "r.png")
    ax = fig.axes[0]
    line = ax.lines[0]
    assert list(line.get_xdata()) == [0.5, 1.0, 2.0]
    assert len(ax.collections) == 1  # the CI band
    assert (tmp_path / "r.png").stat().st_size > 10_000
    plt.close(fig)


def test_open_sweep_refuses_what_is_not_a_sweep(tmp_path):
    with pytest.raises(SweepError, match="no such sweep"):
        open_sweep(tmp_path / "missing")
    with pytest.raises(SweepError, match="not a niche3d sweep"):
        open_sweep(tmp_path)


# ---------------------------------------------------------------------- sensitivity wiring
def test_morris_and_sobol_recover_known_indices_of_an_analytic_model():
    # y = 4 x0 + x1^2 + 0 x2 on the unit cube: x2 has no effect; x0 dominates
    problem = _problem({"a": None, "b": None, "c": None})
    base = {"params": ["a", "b", "c"], "seed": 1, "num_resamples": 200, "conf_level": 0.95}
    x = _sample("morris", problem, 20, seed=1)
    y = 4 * x[:, 0] + x[:, 1] ** 2
    rows = pd.DataFrame(_indices({**base, "method": "morris"}, problem, x, y, "y"))
    mu = rows[rows["index"] == "mu_star"].set_index("param")["value"]
    assert mu["a"] == pytest.approx(4.0)  # a linear effect: every elementary effect is 4
    assert mu["c"] == 0.0
    assert 0 < mu["b"] < mu["a"]
    x = _sample("sobol", problem, 1024, seed=1)
    y = 4 * x[:, 0] + x[:, 1] ** 2
    rows = pd.DataFrame(_indices({**base, "method": "sobol"}, problem, x, y, "y"))
    s1 = rows[rows["index"] == "S1"].set_index("param")
    # analytic: Var = 16/12 + 4/45; S1_a = (16/12) / Var, S1_b = (4/45) / Var
    var = 16 / 12 + 4 / 45
    assert s1.loc["a", "value"] == pytest.approx(16 / 12 / var, abs=0.03)
    assert s1.loc["b", "value"] == pytest.approx(4 / 45 / var, abs=0.03)
    assert abs(s1.loc["c", "value"]) < 0.02
    assert (rows["conf"] > 0).any() and rows.loc[rows["index"] == "S1", "conf"].notna().all()


def test_a_readout_no_parameter_moves_has_zero_indices():
    problem = _problem({"a": None, "b": None})
    x = _sample("morris", problem, 4, seed=1)
    rows = _indices({"params": ["a", "b"], "seed": 1, "num_resamples": 10, "conf_level": 0.95,
                     "method": "morris"}, problem, x, np.ones(len(x)), "y")
    assert all(r["value"] == 0.0 for r in rows)


def test_the_disk_bound_of_a_run_is_above_what_its_store_takes(tmp_path, tiny_scenario, tiny_run):
    from niche3d.ensemble.engine import store_bytes_bound
    from niche3d.simulation import Simulation

    def size(p):
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())

    with_fields = size(tiny_run)
    bound = store_bytes_bound(tiny_scenario)
    assert with_fields <= bound < 4 * with_fields
    no_fields = tiny_scenario.with_overrides({"output.fields": False})
    with Simulation(no_fields, tmp_path / "nf.zarr") as sim:
        sim.run()
    assert size(tmp_path / "nf.zarr") <= store_bytes_bound(no_fields) < bound
