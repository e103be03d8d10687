"""Intervention pharmacokinetics against their closed forms."""

from __future__ import annotations

import math

import pytest

from niche3d.interventions import AMD3100, GCSF, InterventionSchedule, Knockout


def test_amd3100_blockade_is_receptor_occupancy() -> None:
    s = InterventionSchedule([AMD3100(dose_days=[1.0], half_life_hours=2.0, peak_blockade=0.9)], ["cxcl12"])
    assert s.at(23.9).cxcr4_blockade == 0.0
    assert s.at(24.0).cxcr4_blockade == pytest.approx(0.9)
    # after two half-lives the plasma level is 1/4: b = C / (C + K), K = 0.1 / 0.9
    c = 0.25
    assert s.at(28.0).cxcr4_blockade == pytest.approx(c / (c + 0.1 / 0.9))


def test_gcsf_protease_accumulates_over_daily_doses() -> None:
    g = GCSF(start_day=0.0, doses=3, protease_per_dose=0.02, protease_half_life_hours=24.0,
             osteoblast_cxcl12_drop=0.3)
    s = InterventionSchedule([g], ["cxcl12", "scf"])
    # just after the third dose: 0.02 * (1 + 1/2 + 1/4)
    e = s.at(48.0)
    assert e.protease == pytest.approx(0.02 * 1.75)
    keep = (1 - 0.3 * 0.25) * (1 - 0.3 * 0.5) * (1 - 0.3)
    assert e.source_scale["cxcl12"]["endosteum"] == pytest.approx(keep)
    assert e.source_scale["cxcl12"]["sno"] == pytest.approx(keep)
    assert "stroma" not in e.source_scale["cxcl12"]
    # long after the course the effect has relaxed
    late = s.at(48.0 + 24.0 * 20)
    assert late.protease < 0.02 * 1.75 * 2.0**-19
    assert math.isclose(late.source_scale["cxcl12"]["endosteum"], 1.0, abs_tol=1e-5)


def test_knockout_starts_on_time_and_combines() -> None:
    s = InterventionSchedule(
        [Knockout(field="cxcl12", sources={"stroma": 0.0}, start_day=2.0),
         Knockout(field="membrane_scf", sources={"endothelium": 0.5})],
        ["cxcl12", "scf"],
    )
    assert "cxcl12" not in s.at(47.0).source_scale
    assert s.at(48.0).source_scale["cxcl12"]["stroma"] == 0.0
    assert s.at(0.0).source_scale["membrane_scf"]["endothelium"] == 0.5
    assert s.event_times_hours() == [0.0, 48.0]


def test_knockout_of_unknown_field_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"interventions.0.field = 'il7': no such signal; allowed: cxcl12, membrane_scf"):
        InterventionSchedule([Knockout(field="il7")], ["cxcl12"])


def test_effects_change_detection() -> None:
    s = InterventionSchedule([AMD3100(dose_days=[0.0])], ["cxcl12"])
    assert not s.at(0.0).close_to(s.at(1.0))
    assert s.at(100.0).close_to(s.at(101.0))
