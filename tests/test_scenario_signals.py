"""Misconfiguration is loud: field tables merge over the calibrated defaults, and a signal
the cell rules or an intervention needs cannot go missing silently (issue 13, point 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from niche3d.fields.config import FieldConfig
from niche3d.names import CELL_FIELDS, MEMBRANE_SCF
from niche3d.scenario import Scenario, ScenarioError, load_scenario

DEFAULT = Scenario.default()
CXCL12_DEFAULT = DEFAULT.fields.diffusible["cxcl12"]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_one_key_of_a_field_table_keeps_the_other_field_and_the_calibration(tmp_path: Path) -> None:
    # the case of the issue: this table used to replace the whole [fields.diffusible]
    sc = load_scenario(_write(tmp_path, "[fields.diffusible.cxcl12]\nuptake_per_min = 0.2\n"))
    assert set(sc.fields.diffusible) == {"cxcl12", "scf"}
    c = sc.fields.diffusible["cxcl12"]
    assert c.uptake_per_min == 0.2
    # every other key is the calibrated CXCL12, not FieldConfig's generic default
    assert c.secretion_per_min == CXCL12_DEFAULT.secretion_per_min
    assert c.secretion_per_min["stroma"] == 5.0
    assert c.diffusion_um2_s == {"marrow": 1.0, "bone": 0.0}
    assert c.decay_per_min == {"marrow": 0.1}
    assert sc.fields.diffusible["scf"] == DEFAULT.fields.diffusible["scf"]


def test_a_per_tissue_table_merges_tissue_by_tissue(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, (
        "[fields.diffusible.cxcl12.secretion_per_min]\nstroma = 0.0\n"
        "[fields.membrane_scf.expression]\nendothelium = 0.0\n")))
    sec = sc.fields.diffusible["cxcl12"].secretion_per_min
    assert sec == {"stroma": 0.0, "endothelium": 1.5, "endosteum": 0.5, "sno": 0.5}
    assert sc.fields.membrane_scf.expression == {
        "endothelium": 0.0, "stroma": 1.0, "endosteum": 0.5, "sno": 0.5, "arteriole": 0.7}


def test_toml_table_and_set_override_agree() -> None:
    a = Scenario.from_dict({"fields": {"diffusible": {"scf": {"secretion_per_min": {"sno": 3}}}}})
    b = DEFAULT.with_overrides(["fields.diffusible.scf.secretion_per_min.sno=3"])
    assert a == b


def test_a_new_field_starts_from_the_generic_defaults() -> None:
    sc = Scenario.from_dict({"fields": {"diffusible": {"ang1": {"secretion_per_min": {"sno": 1}}}}})
    assert set(sc.fields.diffusible) == {"cxcl12", "scf", "ang1"}
    assert sc.fields.diffusible["ang1"].diffusion_um2_s == FieldConfig().diffusion_um2_s


def test_python_constructors_take_a_table_as_given() -> None:
    from niche3d.fields.config import FieldsConfig

    cfg = FieldsConfig(diffusible={"c": FieldConfig(secretion_per_min={"stroma": 1.0})})
    assert set(cfg.diffusible) == {"c"}  # a FieldSet of one field, as asked
    assert FieldConfig(secretion_per_min={"sno": 1.0}).secretion_per_min == {"sno": 1.0}


def test_intervention_tables_are_not_merged() -> None:
    # a knockout's sources say exactly which tissues lose production
    sc = Scenario.from_dict({"interventions": [
        {"kind": "knockout", "field": "cxcl12", "sources": {"endothelium": 0.0}}]})
    assert sc.interventions[0].sources == {"endothelium": 0.0}


@pytest.mark.parametrize("table", ["diffusion_um2_s", "decay_per_min"])
def test_marrow_entry_is_required_by_the_schema(table: str) -> None:
    # in a scenario a table merges over a default that gives marrow; from Python (which
    # does not merge) a table without marrow fails at once, not when the FieldSet is built
    with pytest.raises(ValueError, match=rf"{table} must give 'marrow'"):
        FieldConfig(**{table: {"stroma": 1.0}})
    cfg = FieldConfig()
    with pytest.raises(ValueError, match=rf"{table} must give 'marrow'"):
        setattr(cfg, table, {"stroma": 1.0})
    setattr(cfg, table, {"marrow": 2.0})
    assert getattr(cfg, table) == {"marrow": 2.0}


@pytest.mark.parametrize("field", CELL_FIELDS)
def test_a_run_without_a_cell_field_stops_before_any_work(field: str) -> None:
    from niche3d.simulation import Simulation

    sc = Scenario.default()
    sc.fields.diffusible = {k: v for k, v in sc.fields.diffusible.items() if k != field}
    with pytest.raises(ScenarioError, match=rf"fields\.diffusible\.{field}: required by the cell rules"):
        Simulation(sc)


def test_gcsf_without_cxcl12_is_an_error_not_a_skip() -> None:
    from niche3d.interventions import GCSF, InterventionSchedule

    with pytest.raises(ValueError, match="gcsf lowers osteoblast cxcl12"):
        InterventionSchedule([GCSF()], ["scf"])
    sc = Scenario.from_dict({"interventions": [{"kind": "gcsf"}]})
    sc.fields.diffusible = {"scf": sc.fields.diffusible["scf"]}
    problems = sc.missing_signals()
    assert any("interventions.0: gcsf" in p for p in problems)
    assert any("fields.diffusible.cxcl12" in p for p in problems)


def test_knockout_of_an_unknown_signal_is_a_schema_error(tmp_path: Path) -> None:
    p = _write(tmp_path, '[[interventions]]\nkind = "knockout"\nfield = "cxcl13"\n')
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    msg = str(e.value)
    assert "interventions.0.field = 'cxcl13': no such signal; allowed: cxcl12, membrane_scf, scf" in msg
    assert "(top level)" not in msg


def test_membrane_scf_is_not_a_diffusible_field_name() -> None:
    with pytest.raises(ScenarioError, match="reserved for the membrane SCF contact map"):
        Scenario.from_dict({"fields": {"diffusible": {MEMBRANE_SCF: {}}}})


def test_no_string_literal_names_membrane_scf() -> None:
    # one constant (niche3d.names.MEMBRANE_SCF) names the map in the library's code
    hits = []
    for path in (REPO / "niche3d").rglob("*.py"):
        if path.name == "names.py":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if '"membrane_scf"' in code or "'membrane_scf'" in code:
                hits.append(f"{path.relative_to(REPO)}:{i}")
    assert hits == []


def test_cli_reports_a_missing_signal_with_exit_2(tmp_path: Path) -> None:
    p = _write(tmp_path, '[[interventions]]\nkind = "knockout"\nfield = "sdf1"\n')
    r = subprocess.run([sys.executable, "-m", "niche3d.cli", "run", str(p), "-o",
                        str(tmp_path / "r.zarr")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "interventions.0.field = 'sdf1'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "r.zarr").exists()
