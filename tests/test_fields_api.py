"""FieldSet public API: units, source scales, protease, uptake, membrane SCF, implicit
steps, checkpoints and error messages."""

from __future__ import annotations

import numpy as np
import pytest

import niche3d.fields as fields_pkg
from niche3d.fields import MEMBRANE_SCF, FieldSet, SolveReport
from niche3d.fields.config import BoundaryConfig, FieldConfig, FieldsConfig, MembraneSCFConfig
from niche3d.tissue.codes import Tissue
from niche3d.tissue.lattice import Lattice


def uniform_set(shape=(12, 12, 12), voxel_um=10.0, tol=1e-9, **kw) -> FieldSet:
    lab = np.full(shape, Tissue.STROMA, np.uint8)
    cfg = FieldConfig(
        diffusion_um2_s={"marrow": 10.0, "bone": 0.0},
        decay_per_min={"marrow": 0.05},
        secretion_per_min={"stroma": 2.0},
        **kw,
    )
    return FieldSet(Lattice(lab, voxel_um), FieldsConfig(diffusible={"c": cfg}, tolerance=tol))


def test_public_namespace_is_pinned() -> None:
    assert set(fields_pkg.__all__) == {
        "FieldSet", "SolveReport", "MEMBRANE_SCF", "Multigrid", "OperatorSpec",
        "StaticOperator", "DynamicOperator",
        "FieldConfig", "FieldsConfig", "BoundaryConfig", "MembraneSCFConfig", "FACES",
    }


def test_default_fields_names_units_windows() -> None:
    lab = np.full((10, 10, 10), Tissue.MARROW, np.uint8)
    fs = FieldSet(Lattice(lab, 8.0), FieldsConfig())
    assert fs.names == ("cxcl12", "scf")
    assert fs.units["cxcl12"] == "nM" and fs.units[MEMBRANE_SCF] == "1"
    assert fs.windows["cxcl12"] == (0.0, 40.0)
    assert fs["cxcl12"].dtype == np.float32 and fs["cxcl12"].shape == (10, 10, 10)


def test_uniform_source_gives_s_over_k_with_uptake_and_protease() -> None:
    fs = uniform_set(protease_sensitivity=2.0, uptake_per_min=0.3)
    rep = fs.solve()
    assert isinstance(rep, SolveReport) and rep.all_converged and rep.mode == "steady"
    np.testing.assert_allclose(fs["c"], 2.0 / 0.05, rtol=1e-6)
    fs.set_protease(0.01)  # extra decay 0.02
    fs.solve()
    np.testing.assert_allclose(fs["c"], 2.0 / 0.07, rtol=1e-6)
    everywhere = np.arange(12**3, dtype=np.int64)
    fs.solve(everywhere)  # a cell in every voxel: + 0.3
    np.testing.assert_allclose(fs["c"], 2.0 / 0.37, rtol=1e-6)
    prot = np.full((12, 12, 12), 0.01, np.float32)
    prot[:6] = 0.0
    fs.set_protease(prot)
    fs.solve()
    assert fs["c"][0, 0, 0] > fs["c"][11, 0, 0]


def test_diffusion_units_give_the_analytic_decay_length() -> None:
    """Slab with c = 1 at xmin: c ~ exp(-x/lambda) with lambda = sqrt(D/k) in µm."""
    n, voxel = 96, 5.0
    lab = np.full((2, 2, n), Tissue.MARROW, np.uint8)
    D_um2_s, k = 10.0, 0.06
    cfg = FieldConfig(
        diffusion_um2_s={"marrow": D_um2_s, "bone": 0.0},
        decay_per_min={"marrow": k},
        secretion_per_min={},
        boundary={"xmin": BoundaryConfig(kind="value", value=1.0)},
    )
    fs = FieldSet(Lattice(lab, voxel), FieldsConfig(diffusible={"c": cfg}, tolerance=1e-9))
    assert fs.solve().all_converged
    lam_um = np.sqrt(D_um2_s * 60.0 / k)  # µm²/s -> µm²/min
    x = (np.arange(n) + 0.5) * voxel
    prof = fs["c"][0, 0].astype(np.float64)
    sel = x < 2 * lam_um  # far from the no-flux face at 4.8 lambda
    fit = -1.0 / np.polyfit(x[sel], np.log(prof[sel]), 1)[0]
    assert fit == pytest.approx(lam_um, rel=0.01)


def test_source_scale_knockout_and_linearity() -> None:
    rng = np.random.default_rng(2)
    lab = np.full((16, 16, 16), Tissue.MARROW, np.uint8)
    lab[rng.random(lab.shape) < 0.05] = Tissue.STROMA
    lab[rng.random(lab.shape) < 0.05] = Tissue.ENDOSTEUM
    cfg = FieldConfig(secretion_per_min={"stroma": 1.0, "endosteum": 0.5})
    fs = FieldSet(Lattice(lab, 8.0), FieldsConfig(diffusible={"c": cfg}, tolerance=1e-9))
    fs.solve()
    full = fs["c"].astype(np.float64)
    fs.set_source_scale("c", "endosteum", 0.0)
    fs.solve()
    only_stroma = fs["c"].astype(np.float64)
    fs.set_source_scale("c", "stroma", 0.0)
    fs.set_source_scale("c", "endosteum", 1.0)
    fs.solve()
    only_endo = fs["c"].astype(np.float64)
    np.testing.assert_allclose(only_stroma + only_endo, full, rtol=1e-6, atol=1e-9)
    fs.set_source_scale("c", "endosteum", 0.0)
    rep = fs.solve()
    assert rep.all_converged and np.all(fs["c"] == 0.0)
    assert fs.source_scale("c", "stroma") == 0.0


def test_membrane_scf_contact_map_scaling_and_cleavage() -> None:
    lab = np.full((9, 9, 9), Tissue.MARROW, np.uint8)
    lab[4, 4, 4] = Tissue.ENDOTHELIUM
    cfg = FieldsConfig(
        membrane_scf=MembraneSCFConfig(expression={"endothelium": 1.0},
                                       protease_half_activity_per_min=0.02)
    )
    fs = FieldSet(Lattice(lab, 8.0), cfg)
    m = fs.membrane_scf
    assert m[4, 4, 5] == pytest.approx(1 / 6) and m[3, 4, 4] == pytest.approx(1 / 6)
    assert m[4, 4, 4] == 0.0 and m[4, 5, 5] == 0.0
    assert m.sum() == pytest.approx(1.0)
    fs.set_protease(0.02)  # a = a_half cleaves half
    assert fs.membrane_scf[4, 4, 5] == pytest.approx(1 / 12)
    fs.set_protease(0.0)
    fs.set_source_scale(MEMBRANE_SCF, "endothelium", 0.0)  # Sl/Sld-like knockout
    assert fs.membrane_scf.max() == 0.0
    full = np.full((9, 9, 9), Tissue.STROMA, np.uint8)
    fs2 = FieldSet(Lattice(full, 8.0), FieldsConfig())
    assert fs2.membrane_scf[4, 4, 4] == pytest.approx(1.0)  # all six neighbours express


def test_implicit_step_relaxes_like_backward_euler() -> None:
    fs = uniform_set()
    fs.solve()  # steady: c* = S / k = 40
    fs.set_source_scale("c", "stroma", 0.0)  # sources stop: c decays
    dt = 10.0
    rep = fs.solve(dt_minutes=dt)
    assert rep.mode == "implicit" and rep.dt_minutes == dt and rep.all_converged
    np.testing.assert_allclose(fs["c"], 40.0 / (1 + 0.05 * dt), rtol=1e-6)
    for _ in range(3):
        fs.solve(dt_minutes=dt)
    np.testing.assert_allclose(fs["c"], 40.0 / (1 + 0.05 * dt) ** 4, rtol=1e-6)


def test_warm_restart_costs_no_cycles_and_state_round_trips() -> None:
    rng = np.random.default_rng(3)
    lab = np.full((14, 14, 14), Tissue.MARROW, np.uint8)
    lab[rng.random(lab.shape) < 0.05] = Tissue.STROMA
    lab[rng.random(lab.shape) < 0.1] = Tissue.BONE
    fs = FieldSet(Lattice(lab, 8.0), FieldsConfig(tolerance=1e-8))
    cells = rng.choice(lab.size, 40, replace=False)
    fs.set_protease((rng.random(lab.shape) * 0.01).astype(np.float32))
    fs.set_source_scale("cxcl12", "stroma", 0.3)
    fs.set_source_scale(MEMBRANE_SCF, "stroma", 0.5)
    first = fs.solve(cells)
    assert first.cycles["cxcl12"] > 0
    again = fs.solve(cells)
    assert again.cycles == {"cxcl12": 0, "scf": 0}
    st = fs.state_dict()
    fs2 = FieldSet(Lattice(lab, 8.0), FieldsConfig(tolerance=1e-8))
    fs2.load_state_dict(st)
    for name in fs.names:
        assert np.array_equal(fs2[name], fs[name])
    assert np.array_equal(fs2.membrane_scf, fs.membrane_scf)
    assert fs2.solve(cells).cycles == {"cxcl12": 0, "scf": 0}


def test_bad_inputs_raise_clear_errors() -> None:
    fs = uniform_set()
    with pytest.raises(ValueError, match="target 'cxc' is not a field"):
        fs.set_source_scale("cxc", "stroma", 0.0)
    with pytest.raises(ValueError, match="unknown tissue name 'strom'"):
        fs.set_source_scale("c", "strom", 0.0)
    with pytest.raises(ValueError, match="factor must be a finite number >= 0"):
        fs.set_source_scale("c", "stroma", -1.0)
    with pytest.raises(ValueError, match="activity map has shape"):
        fs.set_protease(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="activity must be a finite number >= 0"):
        fs.set_protease(-0.1)
    with pytest.raises(ValueError, match="cell_voxels contains 1728"):
        fs.solve(np.array([0, 1728]))
    with pytest.raises(ValueError, match="cell_voxels must be integers"):
        fs.solve(np.array([0.5]))
    with pytest.raises(ValueError, match="1D array"):
        fs.solve(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="dt_minutes must be None or a finite number > 0"):
        fs.solve(dt_minutes=0.0)
    with pytest.raises(ValueError, match="unknown field 'x'"):
        fs["x"]
    with pytest.raises(ValueError, match="state is missing keys"):
        fs.load_state_dict({})
    lab = np.full((8, 8, 8), Tissue.MARROW, np.uint8)
    with pytest.raises(ValueError, match="reserved"):
        FieldSet(Lattice(lab, 8.0), FieldsConfig(diffusible={"membrane_scf": FieldConfig()}))
    no_sink = FieldConfig(decay_per_min={"marrow": 0.0})
    with pytest.raises(ValueError, match="no decay and touches no fixed-value face"):
        FieldSet(Lattice(lab, 8.0), FieldsConfig(diffusible={"c": no_sink}))
    with pytest.raises(TypeError, match="lattice must be a niche3d Lattice"):
        FieldSet(lab, FieldsConfig())  # type: ignore[arg-type]
