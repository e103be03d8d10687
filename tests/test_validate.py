"""``niche3d validate``: every BIOLOGY.md target, its source, the simulated value and a status.

What is checked: the targets file covers every item of BIOLOGY.md sections 6 and 7 with a
source; the homeostasis values are exactly those of ``calibration_table``; a status is
``pass`` inside the inclusive range and ``fail`` outside; the G-CSF, seeding-density and
transplant estimators equal a direct computation from the stored metrics and fields; the
JSON carries the same numbers; the command's exit codes (``--strict``, bad input).

Runs: the session's 2-day tiny store (``tiny_run``) and, once per module, small stores of
the same 20 x 32 x 32 block (a G-CSF course, two transplants, two more seeding densities,
a replicate), about 25 s together on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pytest

from niche3d.analysis.calibration import TARGETS, calibration_table, load_targets
from niche3d.analysis.validation import (
    FAIL,
    NOT_MEASURED,
    PASS,
    ValidationError,
    add_parser,
    cmd_validate,
    status,
    validate,
    validation_targets,
)
from niche3d.io import open_run

SKIP = 0.5  # days: the tiny runs are 2 days long with a record every 12 h


class _Parser(argparse.ArgumentParser):
    """As niche3d.cli's: a usage error exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cli(*args: str) -> int:
    p = _Parser(prog="niche3d")
    add_parser(p.add_subparsers(dest="command", required=True, parser_class=_Parser))
    return cmd_validate(p.parse_args(["validate", *args]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_scenario, tiny_run):
    """Small stores of each experiment, keyed by name (``tiny`` is the homeostasis run)."""
    from niche3d.simulation import Simulation

    root = tmp_path_factory.mktemp("validate")
    tx = {"kind": "transplant", "day": 1.0, "cells": 20000}
    specs = {
        "gcsf": {"run.days": 7.0, "output.interval_hours": 6.0,
                 "interventions": [{"kind": "gcsf", "start_day": 1.0, "doses": 5}]},
        "conditioned": {"run.days": 15.5, "cells.blood.block_fraction": 0.02, "interventions": [
            {"kind": "irradiation", "day": 1.0, "dose_gy": 9.5}, tx]},
        "unconditioned": {"cells.blood.block_fraction": 0.02, "interventions": [tx]},
        "half": {"cells.hsc_per_mm3": 10000.0},
        "double": {"cells.hsc_per_mm3": 40000.0},
        "rep1": {"tissue.seed": 1, "run.days": 1.5},
    }
    out = {"tiny": tiny_run}
    for name, over in specs.items():
        out[name] = root / f"{name}.zarr"
        Simulation(tiny_scenario.with_overrides(over), out[name]).run()
    # a replicate of rep1 (same tissue, another cell seed), kept open as a Simulation
    sim = Simulation(tiny_scenario.with_overrides({**specs["rep1"], "run.seed": 2}), root / "rep2.zarr")
    sim.run()
    out["rep2"] = sim
    yield out
    sim.close()


# ------------------------------------------------------------------------------ the targets
def test_every_biology_item_has_a_target_with_its_source() -> None:
    t = validation_targets()
    items = {x.item for x in t.values()}
    assert {f"6.{i}" for i in range(1, 10)} | {"7", "3"} <= items
    for x in t.values():
        assert x.source.strip() and x.description.strip() and x.needs.strip(), x.key
        assert x.low <= x.high, x.key
    # the calibration set is exactly calibration.TARGETS, all measured on homeostasis runs
    assert {k for k, x in t.items() if x.calibration} == set(TARGETS)
    assert all(x.experiment == "homeostasis" for x in TARGETS.values())
    # the blood count of 6.7 is a target, with BIOLOGY's range, outside the calibration set
    b = t["blood_hsc_per_mouse"]
    assert (b.low, b.high, b.item, b.calibration) == (100.0, 400.0, "6.7", False)
    assert "inflow x residence" in b.known_issue
    assert {x.experiment for x in t.values()} == {
        "homeostasis", "gcsf", "seeding_density", "transplant", "transplant_unconditioned",
        "transplant_conditioned"}


@pytest.mark.parametrize(("edit", "match"), [
    (("low = 0.75", "low = 0.99"), "low <= high"),
    (('source = "Acar et al., Nature 2015"', 'source = " "'), "a source"),
    (('experiment = "gcsf"', 'experiment = "mri"'), "experiments"),
    (('key = "g0_fraction"', 'key = "sg2m_fraction"'), "duplicate"),
    (('item = "6.2"', 'itme = "6.2"'), "unknown keys"),
])
def test_a_malformed_targets_file_is_refused(edit, match) -> None:
    from importlib import resources

    text = resources.files("niche3d.analysis").joinpath("targets.toml").read_text("utf-8")
    assert edit[0] in text
    with pytest.raises(ValueError, match=match):
        load_targets(text.replace(edit[0], edit[1], 1))


def test_status_at_the_boundaries() -> None:
    lo, hi = 0.03, 0.06
    assert status(lo, lo, hi) == status(hi, lo, hi) == status(0.045, lo, hi) == PASS
    assert status(np.nextafter(lo, 0.0), lo, hi) == status(np.nextafter(hi, 1.0), lo, hi) == FAIL
    assert status(math.nan, lo, hi) == NOT_MEASURED
    assert status(math.inf, 1.0, math.inf) == status(-math.inf, -math.inf, 0.0) == PASS
    assert status(math.inf, 90.0, 250.0) == FAIL  # no dormant activation seen: a miss


# ------------------------------------------------------------------------------ homeostasis
def test_homeostasis_values_are_calibration_table(tiny_run) -> None:
    v = validate(tiny_run, skip_days=SKIP)
    run = open_run(tiny_run)
    tab = calibration_table(run, skip_days=SKIP)
    for key, t in TARGETS.items():
        r = v.table.loc[key]
        for c in ("simulated", "ci_low", "ci_high", "low", "high"):
            np.testing.assert_equal(r[c], tab.loc[key, c], err_msg=f"{key} {c}")
        assert r["source"] == t.source and r["item"] == t.item
        assert r["status"] == (PASS if tab.loc[key, "met"] else
                               NOT_MEASURED if math.isnan(tab.loc[key, "simulated"]) else FAIL)
    # the intervals follow --confidence as calibration_table's do
    v80 = validate(tiny_run, skip_days=SKIP, confidence=0.8)
    tab80 = calibration_table(run, skip_days=SKIP, confidence=0.8)
    np.testing.assert_equal(v80.table.loc[list(TARGETS), "ci_low"].to_numpy(dtype=float),
                            tab80["ci_low"].to_numpy(dtype=float))
    # beyond the calibration set, from the metrics after the burn-in
    m = run.metrics[run.metrics["t"] >= SKIP * 24]
    assert v.table.loc["blood_hsc_per_mouse", "simulated"] == pytest.approx(m["blood_hsc_per_mouse"].mean())
    free = (m["niche_sites_free"] / m["niche_sites"]).mean()
    assert v.table.loc["free_niche_share", "simulated"] == pytest.approx(free)
    # the blood count is far below BIOLOGY's 100-400 and is reported as a fail, with the reason
    assert "blood_hsc_per_mouse" in v.failed
    assert "inflow x residence" in v.table.loc["blood_hsc_per_mouse", "note"]
    # a homeostasis run measures no intervention target: each says which run would
    for key, t in validation_targets().items():
        if t.experiment != "homeostasis":
            assert v.table.loc[key, "status"] == NOT_MEASURED and v.table.loc[key, "note"] == t.needs


def test_every_status_follows_its_range(tiny_run) -> None:
    t = validate(tiny_run, skip_days=SKIP).table
    for key, r in t.iterrows():
        assert r["status"] == status(r["simulated"], r["low"], r["high"]), key
    assert set(t["status"]) <= {PASS, FAIL, NOT_MEASURED}


def test_replicates_are_pooled_and_a_simulation_is_read_from_its_store(runs, tiny_scenario) -> None:
    from niche3d.simulation import Simulation

    rep1, sim = open_run(runs["rep1"]), runs["rep2"]
    v = validate([runs["rep1"], sim], skip_days=SKIP)
    tab = calibration_table([rep1, open_run(sim.out)], skip_days=SKIP)
    np.testing.assert_equal(v.table.loc[list(TARGETS), "simulated"].to_numpy(dtype=float),
                            tab["simulated"].to_numpy(dtype=float))
    assert "pooled over 2 replicate runs" in v.table.loc["g0_fraction", "note"]
    # the same store twice is one run, not two replicates
    twice = validate([runs["rep1"], str(runs["rep1"])], skip_days=SKIP)
    assert len(twice.runs) == 1 and "pooled" not in twice.table.loc["g0_fraction", "note"]
    with pytest.raises(TypeError, match="writes none"):
        validate(Simulation(tiny_scenario))
    with pytest.raises(TypeError, match="expected a run store path"):
        validate(object())


# ------------------------------------------------------------------------------ JSON
def test_json_round_trip_has_the_table_numbers(tiny_run) -> None:
    v = validate(tiny_run, skip_days=SKIP)
    d = json.loads(v.to_json())
    assert d["skip_days"] == SKIP and d["confidence"] == 0.95
    (info,) = d["runs"]
    assert info["path"] == str(tiny_run) and info["seed"] == 1 and info["code_version"]
    assert info["scenario"] == open_run(tiny_run).scenario.name and info["experiments"] == ["homeostasis"]
    assert d["summary"] == {PASS: len(v.passed), FAIL: len(v.failed),
                            NOT_MEASURED: len(v.keys_with(NOT_MEASURED))}
    assert [r["key"] for r in d["targets"]] == list(v.table.index)
    for row in d["targets"]:
        r = v.table.loc[row["key"]]
        for c in ("simulated", "ci_low", "ci_high", "low", "high"):
            x = r[c]
            want = None if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else x
            assert row[c] == want, (row["key"], c)
        assert (row["status"], row["source"], row["note"]) == (r["status"], r["source"], r["note"])


# ------------------------------------------------------------------------------ the command
def test_strict_exits_1_on_a_fail_and_prints_the_table(tiny_run, capsys) -> None:
    v = validate(tiny_run, skip_days=SKIP)
    assert v.failed  # the blood count, at least
    assert _cli(str(tiny_run), "--skip-days", str(SKIP)) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(v.summary()) and "FAIL" in out and "PASS" in out
    assert "Wright et al., Science 2001" in out  # sources are printed
    assert _cli(str(tiny_run), "--skip-days", str(SKIP), "--strict") == 1


def test_strict_passes_when_nothing_fails(runs) -> None:
    """Not measured does not fail: the conditioned transplant meets both of its targets (16 %
    seeding efficiency, every HSC of the block a donor 14.5 days on) and measures nothing
    else, so --strict exits 0."""
    v = validate(runs["conditioned"])
    assert v.passed == ["seeding_efficiency", "donor_chimerism_conditioned"] and not v.failed
    assert _cli(str(runs["conditioned"]), "--strict") == 0


def test_json_to_stdout_or_a_file(tiny_run, tmp_path, capsys) -> None:
    assert _cli(str(tiny_run), "--skip-days", str(SKIP), "--json", "-") == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema"] == "niche3d-validation/1"
    path = tmp_path / "v.json"
    assert _cli(str(tiny_run), "--skip-days", str(SKIP), "--json", str(path)) == 0
    assert "not measured" in capsys.readouterr().out
    assert json.loads(path.read_text())["targets"] == d["targets"]


@pytest.mark.parametrize(("args", "match"), [
    (["{missing}"], "does not exist"),
    (["{empty}"], "not a zarr v3 store"),
    (["{tiny}", "--skip-days", "30"], "too short for the 30-day burn-in"),
    (["{tiny}", "--skip-days", "-1"], "skip_days"),
    (["{tiny}", "--confidence", "1.5"], "confidence"),
    (["{tiny}", "--confidence", "0"], "confidence"),
])
def test_bad_input_is_one_line_and_status_2(args, match, tiny_run, tmp_path, capsys) -> None:
    (tmp_path / "empty.zarr").mkdir()
    paths = {"missing": tmp_path / "nope.zarr", "empty": tmp_path / "empty.zarr", "tiny": tiny_run}
    assert _cli(*[a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("niche3d validate: error: ") and err.count("\n") == 1, err
    assert match in err and "Traceback" not in err


def test_too_short_for_the_burn_in_is_an_error_in_python_too(tiny_run) -> None:
    with pytest.raises(ValidationError, match="burn-in"):
        validate(tiny_run, skip_days=3.0)


# ------------------------------------------------------------------------------ G-CSF
def test_gcsf_course_measured_from_metrics_and_fields(runs) -> None:
    """Course day k = [start + k - 1, start + k) days; day 0 is the day before the first dose."""
    from niche3d.tissue.lattice import Lattice

    path = runs["gcsf"]
    run, v = open_run(path), validate(path)
    assert v.runs[0]["experiments"] == ["gcsf"]
    m = run.metrics.sort_values("t")
    day = m["t"].to_numpy() / 24.0 - 1.0
    # the metric is the stored field's mean over marrow (a record inside the course)
    lat = Lattice(np.asarray(run.tissue.isel(t=-1).values), run.voxel_um)
    k = int(np.flatnonzero(day >= 2.0)[0])
    field = np.asarray(run.fields["cxcl12"].isel(t=k).values, np.float64)
    assert field[lat.enterable].mean() == pytest.approx(m["cxcl12_mean"].iloc[k], rel=1e-3)
    daily = [m["cxcl12_mean"][(day >= d - 1) & (day < d)].mean() for d in range(6)]
    falls = np.mean(np.diff(daily) < 0)
    assert v.table.loc["gcsf_cxcl12_falling_days_share", "simulated"] == falls
    blood = m["blood_hsc_per_mouse"].to_numpy()
    before = blood[(day >= -1) & (day < 0)].mean()
    i = int(np.argmax(np.where(day >= 0, blood, -np.inf)))
    assert v.table.loc["gcsf_blood_hsc_fold_rise", "simulated"] == pytest.approx(blood[i] / before)
    assert v.table.loc["gcsf_blood_peak_course_day", "simulated"] == math.floor(day[i]) + 1
    for key in ("gcsf_cxcl12_falling_days_share", "gcsf_blood_hsc_fold_rise", "gcsf_blood_peak_course_day"):
        r = v.table.loc[key]
        assert r["status"] == (PASS if r["low"] <= r["simulated"] <= r["high"] else FAIL)
    # a G-CSF run is not a steady state: no homeostasis target is taken from it
    assert v.table.loc["g0_fraction", "status"] == NOT_MEASURED
    assert "homeostasis.toml" in v.table.loc["g0_fraction", "note"]


# ------------------------------------------------------------------------------ transplants
def test_seeding_efficiency_and_chimerism(runs) -> None:
    cond, uncond = open_run(runs["conditioned"]), open_run(runs["unconditioned"])
    v = validate([runs["conditioned"], runs["unconditioned"]])
    assert [r["experiments"] for r in v.runs] == [["transplant", "transplant_conditioned"],
                                                  ["transplant", "transplant_unconditioned"]]
    eff = []
    for run in (cond, uncond):  # donors lodged in the mouse's marrow a day after the injection
        m = run.metrics.sort_values("t")
        eff.append(m[m["t"] >= 48.0]["mouse_donor_homed_total"].iloc[0] / 20000)
    assert v.table.loc["seeding_efficiency", "simulated"] == pytest.approx(np.mean(eff))
    assert "mean of 2 runs" in v.table.loc["seeding_efficiency", "note"]
    last = cond.metrics.sort_values("t").iloc[-1]
    assert v.table.loc["donor_chimerism_conditioned", "simulated"] == last["donor_chimerism"]
    # the unconditioned run ends a day after its transplant: too early to read engraftment
    r = v.table.loc["donor_chimerism_unconditioned"]
    assert r["status"] == NOT_MEASURED and "ends 1 d after the transplant" in r["note"]


# ------------------------------------------------------------------------------ seeding density
def _late_mean_and_se(path) -> tuple[float, float]:
    m = open_run(path).metrics
    y = m[m["t"] >= SKIP * 24]["hsc_total"].to_numpy(float)
    e = y - y.mean()
    r1 = min(max(np.corrcoef(e[:-1], e[1:])[0, 1], 0.0), 0.99)
    return y.mean(), y.std(ddof=1) / math.sqrt(y.size) * math.sqrt((1 + r1) / (1 - r1))


def test_seeding_density_convergence(runs) -> None:
    paths = [runs["tiny"], runs["half"], runs["double"]]  # 20000 (1x), 10000, 40000 per mm³
    v = validate(paths, skip_days=SKIP)
    (m1, s1), (mh, sh), (md, sd) = (_late_mean_and_se(p) for p in paths)
    z = max(abs(mh - m1) / math.hypot(sh, s1), abs(md - m1) / math.hypot(sd, s1))
    r = v.table.loc["seeding_convergence_z"]
    assert r["simulated"] == pytest.approx(z)
    assert f"20000/mm³: {m1:.1f}" in r["note"] and f"10000/mm³: {mh:.1f}" in r["note"]
    assert r["status"] == (PASS if z <= 2.0 else FAIL)
    # the homeostasis targets come from the first run only, not from the other densities
    alone = validate(runs["tiny"], skip_days=SKIP).table
    np.testing.assert_equal(v.table.loc[list(TARGETS), "simulated"].to_numpy(dtype=float),
                            alone.loc[list(TARGETS), "simulated"].to_numpy(dtype=float))
    # two densities 2-fold apart do not span the target's 0.5x-2x
    r2 = validate([runs["tiny"], runs["double"]], skip_days=SKIP).table.loc["seeding_convergence_z"]
    assert r2["status"] == NOT_MEASURED and "4-fold" in r2["note"]
