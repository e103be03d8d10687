"""Codes and the parameter table: names agree with codes, indices are contiguous, and the
table packs the same vector as the hand-written packing it replaced."""

from __future__ import annotations

import numpy as np
import pytest

import niche3d.cells as cells
from niche3d.cells import _kernels as K
from niche3d.cells import codes as C
from niche3d.cells import params as P
from niche3d.cells.config import CellsConfig
from niche3d.tissue import contact

# the codes as they were numbered before the tables existed (frozen: stores hold them)
OLD_STATES = {"S_DORMANT": (0, "dormant"), "S_G0": (1, "active_g0"), "S_G1": (2, "active_g1"),
              "S_SG2M": (3, "active_sg2m"), "S_MPP": (4, "mpp"), "S_CIRC": (5, "circulating"),
              "S_DEAD": (6, "dead")}
OLD_EVENTS = {"E_BIRTH": (0, "birth"), "E_DIVISION": (1, "division"),
              "E_STATE": (2, "state_change"), "E_DEATH": (3, "death"), "E_EGRESS": (4, "egress"),
              "E_HOMING": (5, "homing"), "E_EXIT": (6, "exit"), "E_CLEARANCE": (7, "clearance")}
OLD_ACTIONS = {"A_NONE": 0, "A_DEATH": 1, "A_EGRESS": 2, "A_DIVIDE": 3, "A_EXIT": 4,
               "A_HOME": 5, "A_CLEAR": 6}
OLD_COUNTERS = {"N_DIV": (0, "divisions"), "N_DEATH": (1, "deaths"), "N_EGRESS": (2, "egress"),
                "N_HOMING": (3, "homing"), "N_EXIT": (4, "exits"), "N_CLEAR": (5, "clearance"),
                "N_WAIT": (6, "division_waits"), "N_PUSH": (7, "division_pushes"),
                "N_ASYM": (8, "asymmetric_divisions"), "N_HOME_FAIL": (9, "homing_failures"),
                "N_ACTIVATION": (10, "activations"), "N_RETURN": (11, "quiescence_returns"),
                "N_ENTRY": (12, "cycle_entries")}


@pytest.mark.parametrize("table", [C.STATES, C.ACTIONS, C.EVENTS, C.COUNTERS])
def test_each_code_table_is_contiguous_and_matches_its_constants(table):
    assert len(set(table.names)) == len(table.names) == len(table)
    assert len(set(table.constants)) == len(table)
    for code, const in enumerate(table.constants):
        assert getattr(C, const) == code, const
        assert getattr(K, const, code) == code  # the kernels see the same value


def test_state_and_event_names_agree_with_their_codes():
    for const, (code, name) in OLD_STATES.items():
        assert getattr(C, const) == code
        assert C.STATE_NAMES[code] == name
        assert C.state_code(name) == code
        assert C.state_code(f" {name.upper()} ") == code
    for const, (code, name) in OLD_EVENTS.items():
        assert getattr(C, const) == code
        assert C.EVENT_NAMES[code] == name
    for const, code in OLD_ACTIONS.items():
        assert getattr(C, const) == code
    for const, (code, name) in OLD_COUNTERS.items():
        assert getattr(C, const) == code
        assert C.COUNTER_NAMES[code] == name
    assert C.N_COUNTERS == len(OLD_COUNTERS)
    assert len(C.STATE_NAMES) == len(OLD_STATES) and len(C.EVENT_NAMES) == len(OLD_EVENTS)
    # the public names are the tables' names
    assert cells.STATE_NAMES is C.STATE_NAMES and cells.EVENT_NAMES is C.EVENT_NAMES
    assert cells.state_code("mpp") == C.S_MPP
    with pytest.raises(ValueError, match="unknown cell state 'zombie'; allowed: dormant"):
        cells.state_code("zombie")


def test_code_table_refuses_a_duplicate():
    t = C.CodeTable("thing")
    t.add("T_A", "a")
    with pytest.raises(ValueError, match="declared twice"):
        t.add("T_B", "a")


def test_contact_bits_are_distinct_powers_of_two():
    bits = [contact.C_ENDO, contact.C_ANG1, contact.C_SNO, contact.C_OPN]
    assert all(b > 0 and b & (b - 1) == 0 for b in bits)
    assert len(set(bits)) == len(bits)
    assert (C.C_ENDO, C.C_ANG1, C.C_SNO, C.C_OPN) == tuple(bits)


def test_parameter_table_indices_are_contiguous_and_unique():
    names = [s.name for s in P.PARAMS]
    assert len(set(names)) == len(names) == P.N_PAR
    for i, spec in enumerate(P.PARAMS):
        assert getattr(P, spec.name) == i
        assert getattr(K, spec.name, i) == i
        assert P.param_index(spec.name) == i
        assert P.param_index(spec.source) == i
    sources = [s.source for s in P.PARAMS]
    assert len(set(sources)) == len(sources)
    assert {s.kind for s in P.PARAMS} == {"cells", "model", "step", "modifiers"}
    with pytest.raises(ValueError, match="unknown kernel parameter"):
        P.param_index("K_NOPE")


def test_every_config_source_is_a_cells_field():
    cfg = CellsConfig()
    for spec in P.PARAMS:
        if spec.kind != "cells":
            continue
        obj = cfg
        for part in spec.source.split(".")[1:]:
            assert hasattr(obj, part), spec.source
            obj = getattr(obj, part)
        assert isinstance(spec.convert(obj), float), spec.source


def test_kernel_layout_digest_is_current():
    assert K.layout_digest() == K._LAYOUT_DIGEST


# ---------------------------------------------------------------- the old packing, frozen
OLD_INDEX = dict(
    K_PHOP=0, K_PHOP_MPP=1, K_PERSIST=2, K_KD=3, K_CHEMO_GAIN=4, K_CHEMO_THR=5, K_KON=6,
    K_W_SCF=7, K_W_VCAM=8, K_W_NCAD=9, K_W_CXCR4=10, K_KOFF=11, K_OFF_PROT=12, K_OFF_BLOCK=13,
    K_VCAM_PROT_HALF=14, K_EGRESS=15, K_RET_CXCR4=16, K_RET_VCAM=17, K_RET_SCF=18, K_ACT=19,
    K_ACT_ANG1=20, K_RET=21, K_RET_ANG1=22, K_ENTRY=23, K_ENTRY_CXCL=24, K_DEMAND_GAIN=25,
    K_G1_MEAN=26, K_G1_SHAPE=27, K_S_MEAN=28, K_S_SHAPE=29, K_F_W_SCF=30, K_F_W_CXCR4=31,
    K_RENEW_MIN=32, K_RENEW_MAX=33, K_RENEW_K=34, K_RENEW_N=35, K_ASYM=36, K_PUSH=37,
    K_DEATH=38, K_DEATH_OPN=39, K_DEATH_NOSCF=40, K_SCF_HALF=41, K_MPP_DEATH=42,
    K_MPP_EXIT=43, K_HOME=44, K_HOME_HALF=45, K_CLEAR=46, K_DEMAND=47, K_BLOCK=48, K_PROT=49,
    K_CYTO=50, K_DT=51, K_BIND_HALF=52, K_BIND_HILL=53, K_FATE_DEMAND=54, K_DEVIATION=55,
    K_W_ENDO=56, K_OFF_ANG1=57,
)


def old_base_params(c: CellsConfig, p_hop: float, p_hop_mpp: float, dt_hours: float) -> np.ndarray:
    """``CellModel._base_params`` as it was written by hand before the table."""
    K_ = OLD_INDEX
    p = np.zeros(58, dtype=np.float64)
    m, a, cy, fa, de, bl = c.motility, c.adhesion, c.cycle, c.fate, c.death, c.blood
    p[K_["K_PHOP"]] = p_hop
    p[K_["K_PHOP_MPP"]] = p_hop_mpp
    p[K_["K_PERSIST"]] = m.persistence
    p[K_["K_KD"]] = m.cxcr4_kd_nM
    p[K_["K_CHEMO_GAIN"]] = m.chemotaxis_gain
    p[K_["K_CHEMO_THR"]] = m.gradient_threshold
    p[K_["K_KON"]] = a.k_on_per_h
    p[K_["K_W_SCF"]] = a.w_membrane_scf
    p[K_["K_W_VCAM"]] = a.w_vcam1
    p[K_["K_W_NCAD"]] = a.w_ncadherin
    p[K_["K_W_ENDO"]] = a.w_endosteal
    p[K_["K_OFF_ANG1"]] = a.ang1_retention
    p[K_["K_W_CXCR4"]] = a.w_cxcr4
    p[K_["K_BIND_HALF"]] = a.binding_half
    p[K_["K_BIND_HILL"]] = a.binding_hill
    p[K_["K_KOFF"]] = a.k_off_per_h
    p[K_["K_OFF_PROT"]] = a.protease_gain
    p[K_["K_OFF_BLOCK"]] = a.blockade_gain
    p[K_["K_VCAM_PROT_HALF"]] = a.vcam1_protease_half
    p[K_["K_EGRESS"]] = bl.egress_per_h
    p[K_["K_RET_CXCR4"]] = bl.retention_cxcr4
    p[K_["K_RET_VCAM"]] = bl.retention_vcam1
    p[K_["K_RET_SCF"]] = bl.retention_membrane_scf
    p[K_["K_ACT"]] = cy.activation_per_day / 24.0
    p[K_["K_ACT_ANG1"]] = cy.ang1_quiescence
    p[K_["K_RET"]] = cy.return_per_day / 24.0
    p[K_["K_RET_ANG1"]] = cy.ang1_return_gain
    p[K_["K_ENTRY"]] = cy.g0_exit_per_day / 24.0
    p[K_["K_ENTRY_CXCL"]] = cy.cxcl12_quiescence
    p[K_["K_DEMAND_GAIN"]] = cy.demand_gain
    p[K_["K_G1_MEAN"]] = cy.g1_mean_hours
    p[K_["K_G1_SHAPE"]] = cy.g1_shape
    p[K_["K_S_MEAN"]] = cy.sg2m_mean_hours
    p[K_["K_S_SHAPE"]] = cy.sg2m_shape
    p[K_["K_F_W_SCF"]] = fa.w_membrane_scf
    p[K_["K_F_W_CXCR4"]] = fa.w_cxcr4
    p[K_["K_RENEW_MIN"]] = fa.renew_min
    p[K_["K_RENEW_MAX"]] = fa.renew_max
    p[K_["K_RENEW_K"]] = fa.renew_half
    p[K_["K_RENEW_N"]] = fa.renew_hill
    p[K_["K_ASYM"]] = fa.divisional_asymmetry
    p[K_["K_PUSH"]] = 1.0 if fa.crowding == "push" else 0.0
    p[K_["K_FATE_DEMAND"]] = fa.demand_renewal_gain
    p[K_["K_DEATH"]] = de.hsc_per_day / 24.0
    p[K_["K_DEATH_OPN"]] = de.opn_gain
    p[K_["K_DEATH_NOSCF"]] = de.no_scf_gain
    p[K_["K_SCF_HALF"]] = de.scf_half
    p[K_["K_MPP_DEATH"]] = de.mpp_per_day / 24.0
    p[K_["K_MPP_EXIT"]] = de.mpp_exit_per_day / 24.0
    p[K_["K_HOME"]] = bl.homing_per_h
    p[K_["K_HOME_HALF"]] = bl.homing_half
    p[K_["K_CLEAR"]] = bl.clearance_per_h
    p[K_["K_DT"]] = dt_hours
    return p


def test_the_table_keeps_the_old_indices():
    assert P.N_PAR == len(OLD_INDEX)
    for name, i in OLD_INDEX.items():
        assert getattr(P, name) == i, name


CONFIGS = [
    {},
    {"fate": {"crowding": "wait", "divisional_asymmetry": 0.3, "renew_hill": 2.5}},
    {"cycle": {"activation_per_day": 0.137, "return_per_day": 0.71, "g0_exit_per_day": 1.3,
               "g1_shape": 7, "sg2m_mean_hours": 5.5},
     "death": {"hsc_per_day": 0.0123, "mpp_per_day": 0.3, "mpp_exit_per_day": 1.7},
     "adhesion": {"k_on_per_h": 0.37, "w_endosteal": 0.9, "ang1_retention": 3.0},
     "blood": {"homing_per_h": 0.21, "clearance_per_h": 0.033}},
]


@pytest.mark.parametrize("overrides", CONFIGS)
def test_packed_vector_equals_the_old_hand_packing(overrides):
    cfg = CellsConfig.model_validate(overrides)
    model = {"p_hop": 0.9375, "p_hop_mpp": 0.3125, "dt_hours": 1.0 / 3.0}
    got = P.pack(cfg, model)
    want = old_base_params(cfg, 0.9375, 0.3125, 1.0 / 3.0)
    assert got.dtype == np.float64 and got.shape == (P.N_PAR,)
    assert got.tobytes() == want.tobytes()
    for spec in P.PARAMS:
        if spec.runtime:
            assert got[getattr(P, spec.name)] == 0.0


def test_pack_names_a_missing_model_value():
    with pytest.raises(ValueError, match="p_hop_mpp"):
        P.pack(CellsConfig(), {"p_hop": 1.0, "dt_hours": 1.0})
