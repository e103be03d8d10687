"""Scenario schema: defaults, TOML round trip, overrides and error messages."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from niche3d.scenario import Scenario, ScenarioError, load_scenario, scenario_reference

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.toml"))


def test_defaults_are_biology_values() -> None:
    sc = Scenario.default()
    assert sc.domain.voxel_um == 8.0
    assert sc.tissue.bv_tv == pytest.approx(0.11)  # C57BL/6 BV/TV (BIOLOGY.md §3)
    assert sc.fields.diffusible["cxcl12"].diffusion_um2_s["bone"] == 0.0
    assert set(sc.fields.diffusible) == {"cxcl12", "scf"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_validates_and_round_trips(path: Path) -> None:
    sc = load_scenario(path)
    again = Scenario.from_dict(tomllib.loads(sc.to_toml()))
    assert again == sc


def test_overrides_list_and_dict_agree() -> None:
    base = Scenario.default()
    a = base.with_overrides(["run.days=2.5", "domain.shape=[16, 24, 32]", "tissue.source=procedural"])
    b = base.with_overrides({"run.days": 2.5, "domain.shape": [16, 24, 32]})
    assert a == b
    assert a.run.days == 2.5 and a.domain.shape == (16, 24, 32)
    # nested per-tissue tables and new dict keys
    c = base.with_overrides(["fields.diffusible.cxcl12.secretion_per_min.stroma=7"])
    assert c.fields.diffusible["cxcl12"].secretion_per_min["stroma"] == 7.0
    assert base.fields.diffusible["cxcl12"].secretion_per_min["stroma"] == 5.0  # copy, not mutation


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"run": {"dayz": 3}}, ["run.dayz", "did you mean 'days'"]),
        ({"run": {"days": -1}}, ["run.days = -1", "greater than 0"]),
        ({"run": {"days": "abc"}}, ["run.days = 'abc'", "valid number"]),
        ({"domain": {"shape": [4, 64, 64]}}, ["domain.shape", "8..4096"]),
        ({"domain": {"voxel_um": 500}}, ["domain.voxel_um = 500", "less than or equal to 50"]),
        (
            {"fields": {"diffusible": {"cxcl12": {"secretion_per_min": {"strom": 1}}}}},
            ["secretion_per_min", "did you mean 'stroma'"],
        ),
        (
            {"fields": {"diffusible": {"cxcl12": {"diffusion_um2_s": {"bone": 5}}}}},
            ["bone must be 0"],
        ),
        ({"interventions": [{"kind": "gcsf", "doses": 0}]}, ["interventions.0.doses = 0"]),
        ({"interventions": [{"kind": "aspirin"}]}, ["interventions.0", "'knockout', 'amd3100', 'gcsf'"]),
        ({"tissue": {"source": "image"}}, ["tissue", "needs a [tissue.image]"]),
        ({"tisue": {}}, ["unknown key 'tisue'", "did you mean 'tissue'"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(data: dict, expected: list[str]) -> None:
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(data)
    for text in expected:
        assert text in str(err.value)


def test_bad_override_keys() -> None:
    sc = Scenario.default()
    with pytest.raises(ScenarioError, match="run.dys: unknown key 'dys'; did you mean 'days'"):
        sc.with_overrides(["run.dys=3"])
    with pytest.raises(ScenarioError, match="must look like key.path=value"):
        sc.with_overrides(["run.days"])
    with pytest.raises(ScenarioError, match="run.days = 'x'"):
        sc.with_overrides(["run.days=x"])


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\ndays = 3\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)


def test_reference_lists_every_parameter_with_unit() -> None:
    text = scenario_reference("markdown")
    for key in ("run.days", "domain.voxel_um", "tissue.bv_tv", "cells.hsc_per_mm3",
                "interventions[kind=gcsf].doses", "fields.tolerance"):
        assert f"`{key}`" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| `domain.voxel_um`"))
    assert "µm" in line and ">= 1" in line and "<= 50" in line


def test_image_path_relative_to_scenario_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "s.toml"
    f.write_text('[tissue]\nsource = "image"\n[tissue.image]\npath = "img.tif"\nlabels = {"1" = "bone"}\n')
    sc = load_scenario(f)
    assert sc.tissue.image is not None
    assert sc.tissue.image.path == (tmp_path / "sub" / "img.tif").resolve()


def test_a_femur_cortex_that_leaves_no_cavity_is_a_scenario_error() -> None:
    from niche3d.scenario import Scenario, ScenarioError

    base = Scenario.default()
    ok = base.with_overrides(["tissue.geometry=femur", "domain.shape=[24,24,64]",
                              "tissue.cortical_thickness_um=80"])  # 4 voxels across
    assert ok.tissue.geometry == "femur"
    with pytest.raises(ScenarioError, match=r"tissue\.cortical_thickness_um = 100 leaves no femur cavity"):
        base.with_overrides(["tissue.geometry=femur", "domain.shape=[24,24,64]",
                             "tissue.cortical_thickness_um=100"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # NaN and inf are refused everywhere a number is expected, tables and lists too
        ("fields.diffusible.cxcl12.secretion_per_min.stroma=inf", "finite"),
        ("fields.diffusible.cxcl12.secretion_per_min.stroma=nan", "finite"),
        ("fields.diffusible.cxcl12.diffusion_um2_s.marrow=inf", "finite"),
        ("fields.membrane_scf.expression.stroma=nan", "finite"),
        ("fields.diffusible.cxcl12.window=[0.0, inf]", "finite"),
        ("run.days=nan", "finite"),
        # ranges that keep the float32 numerics finite
        ("fields.diffusible.cxcl12.secretion_per_min.stroma=1e308", r"<= 1e\+06"),
        ("fields.diffusible.cxcl12.boundary.zmin={kind='value', value=1e308}", "less than or equal"),
        ("fields.diffusible.cxcl12.uptake_per_min=1e300", "less than or equal"),
        # whole steps, and a bounded number of them, with the reason
        ("run.days=0.3", "not a whole number of run.dt_hours"),
        ("run.dt_hours=0.0001", "more than 1,000,000"),
        ("output.interval_hours=1.5", "whole multiple of run.dt_hours"),
    ],
)
def test_non_finite_and_unbounded_numbers_are_refused(override: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        Scenario.default().with_overrides([override])


@pytest.mark.parametrize(
    ("intervention", "message"),
    [
        ({"kind": "amd3100", "dose_days": [float("nan")]}, "finite"),
        ({"kind": "amd3100", "dose_days": [1e9]}, "0..3650"),
        ({"kind": "transplant", "day": float("inf")}, "finite"),
        ({"kind": "transplant", "cells": 10_000_000}, "simulated one by one"),
        ({"kind": "knockout", "field": "cxcl12", "sources": {"stroma": float("inf")}}, "finite"),
    ],
)
def test_interventions_refuse_non_finite_and_huge_values(intervention: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        Scenario.from_dict({"interventions": [intervention]})
