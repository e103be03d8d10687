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
    # counters only grow at the end (stores hold them by code)
    assert C.N_COUNTERS >= len(OLD_COUNTERS)
    assert C.COUNTER_NAMES[len(OLD_COUNTERS):] == (
        "renewal_divisions_same_side", "renewal_divisions_border",
        "asymmetric_divisions_same_side", "asymmetric_divisions_border",
        "differentiating_divisions_same_side", "differentiating_divisions_border",
        "offsite_differentiations")
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


# ---------------------------------------------------------------- packing
# spot checks written out by hand: each scenario value lands at its index in kernel units
HAND = [
    ("K_KD", lambda c: c.motility.cxcr4_kd_nM),
    ("K_TAXIS", lambda c: c.motility.niche_taxis),
    ("K_ACT", lambda c: c.cycle.activation_per_day / 24.0),
    ("K_ENTRY", lambda c: c.cycle.g0_exit_per_day / 24.0),
    ("K_F_W_SCF", lambda c: c.fate.w_membrane_scf),
    ("K_F_W_CXCR4", lambda c: c.fate.w_cxcr4),
    ("K_F_W_SNO", lambda c: c.fate.w_sno),
    ("K_SITE", lambda c: c.fate.site_threshold),
    ("K_SITE_HILL", lambda c: c.fate.site_hill),
    ("K_OFFSITE", lambda c: c.fate.offsite_loss_per_day / 24.0),
    ("K_ASYM", lambda c: c.fate.divisional_asymmetry),
    ("K_PUSH", lambda c: 1.0 if c.fate.crowding == "push" else 0.0),
    ("K_DEATH", lambda c: c.death.hsc_per_day / 24.0),
    ("K_MPP_EXIT", lambda c: c.death.mpp_exit_per_day / 24.0),
    ("K_EGRESS", lambda c: c.blood.egress_per_h),
]

CONFIGS = [
    {},
    {"fate": {"crowding": "wait", "divisional_asymmetry": 0.3, "site_hill": 2.5,
              "site_threshold": 1.25, "w_sno": 0.7, "offsite_loss_per_day": 3.0},
     "motility": {"niche_taxis": 7.0}},
    {"cycle": {"activation_per_day": 0.137, "return_per_day": 0.71, "g0_exit_per_day": 1.3,
               "g1_shape": 7, "sg2m_mean_hours": 5.5},
     "death": {"hsc_per_day": 0.0123, "mpp_per_day": 0.3, "mpp_exit_per_day": 1.7},
     "adhesion": {"k_on_per_h": 0.37, "w_endosteal": 0.9, "ang1_retention": 3.0},
     "blood": {"homing_per_h": 0.21, "clearance_per_h": 0.033}},
]


@pytest.mark.parametrize("overrides", CONFIGS)
def test_packed_vector_holds_each_value_at_its_index(overrides):
    cfg = CellsConfig.model_validate(overrides)
    model = {"p_hop": 0.9375, "p_hop_mpp": 0.3125, "dt_hours": 1.0 / 3.0, "reach_voxels": 3}
    got = P.pack(cfg, model)
    assert got.dtype == np.float64 and got.shape == (P.N_PAR,)
    for name, value in HAND:
        assert got[getattr(P, name)] == value(cfg), name
    assert got[P.K_PHOP] == 0.9375 and got[P.K_PHOP_MPP] == 0.3125
    assert got[P.K_DT] == 1.0 / 3.0 and got[P.K_REACH] == 3.0
    for spec in P.PARAMS:
        if spec.runtime:
            assert got[getattr(P, spec.name)] == 0.0


def test_pack_names_a_missing_model_value():
    with pytest.raises(ValueError, match="p_hop_mpp"):
        P.pack(CellsConfig(), {"p_hop": 1.0, "dt_hours": 1.0})
