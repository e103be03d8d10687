"""Scenario section ``[cells]``: HSC population, kinetics, motility, adhesion, blood.

Values from shared/BIOLOGY.md sections 4-6. Parameters marked *(calibrated)* were set
so that the default homeostasis scenario reproduces the section 6 targets 1-4
(perisinusoidal HSCs, dormant HSCs at the endosteum, 4-5 % in S/G2/M, ~20 % dormant with
a ~145-day division interval, active HSCs dividing every 1-5 weeks, stable HSC number
with continuous MPP output); docs/calibration.md gives the run, the reason for each value
and what is not met. *(calibrate)* marks values that no target constrains yet.

Units: rates of slow processes in 1/day, fast ones (adhesion, egress, blood) in 1/h,
phase durations in hours, speed in µm/min, concentrations in nM. The kernels receive
everything converted to hours and voxels by :class:`~niche3d.cells.model.CellModel`.

Every signal -> behaviour rule is written out in docs/cells.md; the short form:

* niche signal ``S = mean27(w_mscf * mscf + w_cxcr4 * theta) + w_sno * sno`` (the 3x3x3
  mean around the voxel of membrane SCF contact and CXCL12 occupancy ``theta = c / (c +
  Kd)``, the ligand presented, not reduced by a CXCR4 blockade; ``sno`` SNO contact); a **niche site** is a voxel with ``S >= K``;
  a daughter stays a stem cell with probability ``S^n / (S^n + K^n)`` where it lands (it
  takes a free neighbour with weight ``exp(b S)``), an HSC off a site (``S < K``)
  differentiates at ``k_off``, and a hop down the niche signal is taken with probability
  ``exp(-b drop)``;
* adhesion score ``s = (w_scf mscf + w_vcam vcam + w_ncad sno + w_endo osteo) * (1 + w_cxcr4
  theta)`` (``osteo`` = contact with endosteum or SNO) with
  ``vcam = min(1, (f_endo * endothelium faces + stroma faces + own stroma) / 6)``
  (contact, with CXCR4 inside-out integrin activation); binding rate
  ``k_on = k_on0 * s^h / (s^h + K^h)``,
  unbinding ``k_off = k_off0 * (1 + g_prot * protease + g_block * blockade) / (1 + g_ang1_ret
  * ang1)``;
* egress (unbound, touching endothelium) ``k_e = k_e0 / (1 + r_cxcr4 theta + r_vcam vcam
  + r_scf mscf)``;
* osteoblast quiescence signal ``ang1 = exp(-gap / r_ang1)`` (gap between the HSC and the
  endosteal/SNO surface, 1 on contact, contact only for ``r_ang1 = 0``);
* dormant -> active ``k_act0 * (1 - q_ang1 * ang1) * (1 + g_d * demand)``, active G0 ->
  dormant ``k_ret0 * (1 + g_ang1 * ang1) * (1 - demand)``, G0 -> G1
  ``k_entry0 * (1 + g_d * demand) / (1 + q_cxcl12 * theta)``; G1 and S/G2/M last Erlang
  (gamma, integer shape) times;
* apoptosis ``k_death0 * (1 + g_opn * opn) * (1 + g_noscf * (1 - scf_support))``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from niche3d._schema import Section, param

__all__ = [
    "CellsConfig",
    "MotilityConfig",
    "AdhesionConfig",
    "CycleConfig",
    "FateConfig",
    "DeathConfig",
    "BloodConfig",
    "LineageConfig",
]


class MotilityConfig(Section):
    """Lattice hops of unbound cells: persistence and CXCR4 chemotaxis."""

    persistence: float = param(
        0.0,
        unit="-",
        ge=0.0,
        lt=1.0,
        description="probability that a hop repeats the previous hop direction",
    )
    cxcr4_kd_nM: float = param(
        10.0, unit="nM", gt=0.0, le=1e4, description="CXCL12-CXCR4 dissociation constant"
    )
    chemotaxis_gain: float = param(
        20.0,
        unit="-",
        ge=0.0,
        le=1e6,
        description="hop bias per unit CXCR4-occupancy difference across one voxel (calibrate)",
    )
    gradient_threshold: float = param(
        0.004,
        unit="-",
        ge=0.0,
        le=1.0,
        description="occupancy difference across one voxel below which no bias is felt",
    )
    mpp_speed_factor: float = param(
        1.0, unit="-", ge=0.0, le=100.0, description="MPP speed relative to speed_um_min"
    )
    niche_taxis: float = param(
        100.0,
        unit="1/signal",
        ge=0.0,
        le=1e4,
        description=(
            "adhesion energy per unit niche signal S (as in a cellular Potts model): an HSC's "
            "hop to a voxel of lower S is taken with probability exp(-b * drop), and a "
            "daughter takes a free neighbour with probability proportional to exp(b * S); "
            "HSCs stay on their sites, climb towards niches, and a niche keeps a daughter "
            "when it has a free site (calibrated)"
        ),
    )


class AdhesionConfig(Section):
    """Bound/unbound switching of HSCs (MPPs do not bind; bound cells do not move)."""

    k_on_per_h: float = param(
        1.0, unit="1/h", ge=0.0, le=1e3, description="binding rate at saturating adhesive contact (calibrate)"
    )
    w_membrane_scf: float = param(
        1.0, unit="-", ge=0.0, le=100.0, description="weight of membrane SCF contact in binding"
    )
    w_vcam1: float = param(
        1.0, unit="-", ge=0.0, le=100.0, description="weight of VCAM1 contact (weighted endothelium/stroma faces / 6, <= 1)"
    )
    endothelial_vcam1_factor: float = param(
        3.0,
        unit="-",
        ge=0.0,
        le=6.0,
        description="VCAM1 of an endothelium face relative to a stroma face (calibrate)",
    )
    w_ncadherin: float = param(
        1.0, unit="-", ge=0.0, le=100.0, description="weight of N-cadherin contact (any SNO face)"
    )
    w_endosteal: float = param(
        0.0,
        unit="-",
        ge=0.0,
        le=100.0,
        description=(
            "weight of contact with the osteoblastic lining (endosteum or SNO: N-cadherin, "
            "VCAM1 and membrane SCF of osteoblasts), added to the adhesion score"
        ),
    )
    ang1_retention: float = param(
        9.0,
        unit="-",
        ge=0.0,
        le=1e3,
        description=(
            "division of k_off by (1 + g * ang1): ANG1/TIE2 signalling keeps osteoblast-"
            "contacting HSCs adhesive (beta1-integrin/N-cadherin, Arai 2004; calibrated: bound "
            "residence ~30 days at the bone, gives the dormant endosteal enrichment)"
        ),
    )
    w_cxcr4: float = param(
        0.5,
        unit="-",
        ge=0.0,
        le=100.0,
        description="integrin activation by CXCR4: binding times (1 + w * occupancy)",
    )
    binding_half: float = param(
        1.2,
        unit="-",
        gt=0.0,
        le=100.0,
        description=(
            "adhesion score of half-maximal binding rate (calibrated: above the ~0.3-0.5 of a "
            "lone stromal cell's contact, below the ~1.3-2 of perisinusoidal stroma + "
            "endothelium, so binding needs the perivascular niche)"
        ),
    )
    binding_hill: float = param(
        6.0,
        unit="-",
        gt=0.0,
        le=16.0,
        description=(
            "Hill exponent of binding vs adhesion score (calibrated: avidity of multivalent "
            "integrin/Kit clustering; weak scattered contact binds ~500x slower than niche contact)"
        ),
    )
    k_off_per_h: float = param(
        0.015,
        unit="1/h",
        ge=0.0,
        le=1e3,
        description=(
            "unbinding rate without protease or blockade (calibrated: ~3-day bound residence; "
            "native HSCs are largely sessile at steady state, Christodoulou 2020)"
        ),
    )
    protease_gain: float = param(
        200.0,
        unit="min",
        ge=0.0,
        le=1e6,
        description="relative rise of unbinding per unit protease activity (1/min)",
    )
    blockade_gain: float = param(
        10.0, unit="-", ge=0.0, le=1e4, description="relative rise of unbinding at full CXCR4 blockade"
    )
    vcam1_protease_half: float = param(
        0.02,
        unit="1/min",
        gt=0.0,
        le=10.0,
        description="protease activity that halves VCAM1 contact (cleavage)",
    )


class CycleConfig(Section):
    """Dormancy, activation and the cycle clock of active HSCs."""

    activation_per_day: float = param(
        0.009,
        unit="1/day",
        ge=0.0,
        le=100.0,
        description=(
            "dormant -> active rate without niche contact or demand (calibrated by "
            "tools/calibrate.py kinetics: with ANG1 contact at endosteal sites the realised "
            "dormant residence is ~160 days, ~145-day division interval, Wilson 2008)"
        ),
    )
    ang1_quiescence: float = param(
        0.9,
        unit="-",
        ge=0.0,
        le=1.0,
        description=(
            "fractional cut of activation by osteoblast (ANG1) contact (calibrated: TIE2/ANG1 "
            "keeps contacting HSCs quiescent, Arai 2004; gives the dormant endosteal enrichment)"
        ),
    )
    ang1_range_um: float = param(
        0.0,
        unit="µm",
        ge=0.0,
        le=200.0,
        description=(
            "decay length of the osteoblast quiescence signal (ANG1/OPN, matrix-bound) with "
            "the gap between HSC and endosteal/SNO surface: signal exp(-gap / range), 1 on "
            "contact; 0 = contact only"
        ),
    )
    return_per_day: float = param(
        1.0 / 200.0,
        unit="1/day",
        ge=0.0,
        le=100.0,
        description="active G0 -> dormant rate without contact or demand (keeps ~20 % dormant)",
    )
    ang1_return_gain: float = param(
        2.0,
        unit="-",
        ge=0.0,
        le=1e3,
        description=(
            "relative rise of return to dormancy with ANG1 contact (calibrated with "
            "adhesion.ang1_retention: HSCs held ~30 days at the bone, Arai 2004)"
        ),
    )
    g0_exit_per_day: float = param(
        0.105,
        unit="1/day",
        ge=0.0,
        le=100.0,
        description=(
            "active G0 -> G1 rate without demand (calibrated by tools/calibrate.py kinetics: "
            "active HSCs divide every ~18 days, 5 % in S/G2/M)"
        ),
    )
    cxcl12_quiescence: float = param(
        0.0,
        unit="-",
        ge=0.0,
        le=1e3,
        description="division of the G0 exit rate by (1 + q * CXCR4 occupancy)",
    )
    demand_gain: float = param(
        4.0, unit="-", ge=0.0, le=1e3, description="relative rise of activation and G0 exit at full demand"
    )
    g1_mean_hours: float = param(
        168.0, unit="h", gt=0.0, le=1e5, description="mean G1 duration of an active HSC (calibrate)"
    )
    g1_shape: int = param(4, unit="-", ge=1, le=64, description="Erlang shape of the G1 duration")
    sg2m_mean_hours: float = param(
        24.0,
        unit="h",
        gt=0.0,
        le=1e4,
        description=(
            "mean S/G2/M duration (calibrated to 4-5 % in S/G2/M: S ~ 12-16 h plus G2/M in "
            "mouse HSPCs)"
        ),
    )
    sg2m_shape: int = param(8, unit="-", ge=1, le=64, description="Erlang shape of the S/G2/M duration")


class FateConfig(Section):
    """Niche sites and the fate of each daughter from the place it lands; crowding rule.

    The niche signal at a voxel is ``S = mean27(w_mscf * mscf + w_cxcr4 * theta) + w_sno *
    sno``: the signal within an HSC's reach (the mean over the 3x3x3 block around the
    voxel of membrane SCF contact and CXCL12 occupancy ``c / (c + Kd)``, the ligands the
    niche presents, so a CXCR4 blockade does not remove sites) and
    ``sno`` 1 where the voxel touches an SNO osteoblast (N-cadherin, ANG1). A **niche
    site** is an enterable voxel with ``S >= site_threshold``: sites are finite and come
    from the tissue and the signals. An HSC (or a daughter where it lands) stays a stem
    cell with probability ``h(S) = S^n / (S^n + K^n)`` (``K = site_threshold``,
    ``n = site_hill``): steep, so a daughter pushed off the niche into non-niche marrow
    becomes an MPP and one landing on a free site stays an HSC. An HSC that holds no
    site (``S < K``: it moved off, homed elsewhere, or its site lost signal) differentiates
    at ``offsite_loss_per_day``; one on a site is not lost this way.
    """

    w_membrane_scf: float = param(
        1.0, unit="-", ge=0.0, le=100.0,
        description="weight of membrane SCF within reach (3x3x3 mean) in the niche signal",
    )
    w_cxcr4: float = param(
        2.0, unit="-", ge=0.0, le=100.0,
        description="weight of CXCR4 occupancy within reach (3x3x3 mean) in the niche signal",
    )
    w_sno: float = param(
        0.35, unit="-", ge=0.0, le=100.0,
        description="niche signal of contact with an SNO osteoblast (N-cadherin, ANG1)",
    )
    site_threshold: float = param(
        2.01,
        unit="-",
        gt=0.0,
        le=100.0,
        description=(
            "niche signal at which a voxel is a niche site and a daughter there stays a stem "
            "cell with probability 1/2 (calibrated by tools/calibrate.py: the HSC density of "
            "mouse marrow)"
        ),
    )
    site_hill: float = param(
        1000.0,
        unit="-",
        ge=1.0,
        le=1e4,
        description=(
            "steepness n of the stem-cell probability S^n / (S^n + K^n): 10-90 % between "
            "K 9^(-1/n) and K 9^(1/n) (n = 1000: +-0.2 % of the threshold, i.e. the niche "
            "border itself; calibrated: with n = 100 the many sites within 2 % of K gave "
            "coin-flip fates on both sides of the border)"
        ),
    )
    daughter_reach_um: float = param(
        24.0,
        unit="µm",
        ge=0.0,
        le=200.0,
        description=(
            "how far a daughter moves after division before her fate is set: she takes the "
            "free voxel of highest niche signal (weighted by motility.niche_taxis) within "
            "this path length through marrow, at least the mother's face neighbours "
            "(calibrate: a few hours at the HSC speed, confined)"
        ),
    )
    offsite_loss_per_day: float = param(
        1.0,
        unit="1/day",
        ge=0.0,
        le=1e3,
        description=(
            "differentiation rate of an HSC that holds no niche site (S < site_threshold): "
            "an HSC without a niche differentiates over hours to days"
        ),
    )
    divisional_asymmetry: float = param(
        0.0,
        unit="-",
        ge=0.0,
        le=1.0,
        description="per-division probability of a determinant-driven HSC + MPP outcome (off by default)",
    )
    crowding: Literal["push", "wait"] = param(
        "push",
        unit="-",
        description="no free neighbour: push one unbound neighbour one voxel on, else wait",
    )


class DeathConfig(Section):
    """Apoptosis of HSCs and MPPs on the lattice."""

    hsc_per_day: float = param(
        0.002, unit="1/day", ge=0.0, le=100.0, description="baseline HSC apoptosis rate with SCF support"
    )
    opn_gain: float = param(
        1.0, unit="-", ge=0.0, le=1e3, description="relative rise of apoptosis in the OPN zone"
    )
    opn_range_um: float = param(
        20.0, unit="µm", ge=0.0, le=1e3, description="distance from endosteum of the OPN zone"
    )
    no_scf_gain: float = param(
        4.0, unit="-", ge=0.0, le=1e3, description="relative rise of apoptosis without any SCF"
    )
    scf_half: float = param(
        1.0, unit="field unit", gt=0.0, le=1e4, description="soluble SCF of half-maximal support"
    )
    mpp_per_day: float = param(
        0.05, unit="1/day", ge=0.0, le=100.0, description="MPP apoptosis rate on the lattice"
    )
    mpp_exit_per_day: float = param(
        1.0,
        unit="1/day",
        ge=0.0,
        le=1e3,
        description="rate at which MPPs leave the niche into the lineage compartments",
    )


class BloodConfig(Section):
    """Egress from the block, the mouse's blood, homing, and the rest of the mouse.

    The block is ``block_fraction`` of the mouse's marrow (default: its marrow volume over
    ``mouse_marrow_mm3``); blood and the other marrow are well-mixed compartments
    (:mod:`niche3d.cells.blood`) exchanging HSCs with the block at the same per-cell rates.
    """

    egress_per_h: float = param(
        0.3,
        unit="1/h",
        ge=0.0,
        le=1e3,
        description=(
            "transendothelial crossing of an unbound HSC touching endothelium, no retention "
            "(calibrated by tools/calibrate.py kinetics: ~0.7 % of the marrow pool enters the "
            "blood per day)"
        ),
    )
    retention_cxcr4: float = param(
        10.0, unit="-", ge=0.0, le=1e4, description="egress divided by (1 + r * CXCR4 occupancy + ...)"
    )
    retention_vcam1: float = param(
        2.0, unit="-", ge=0.0, le=1e4, description="retention by VCAM1 contact (0..1)"
    )
    retention_membrane_scf: float = param(
        2.0, unit="-", ge=0.0, le=1e4, description="retention by membrane SCF contact"
    )
    homing_per_h: float = param(
        2.0,
        unit="1/h",
        ge=0.0,
        le=1e3,
        description=(
            "arrest of a circulating HSC in a marrow sinusoid (selectin rolling, VLA4-VCAM1 "
            "arrest), anywhere in the mouse; a share block_fraction falls in the block"
        ),
    )
    homing_half: float = param(
        0.5,
        unit="-",
        gt=0.0,
        le=1e3,
        description="adhesion score of half-maximal transendothelial migration after arrest",
    )
    lodging_reach_um: float = param(
        40.0,
        unit="µm",
        ge=0.0,
        le=200.0,
        description=(
            "after crossing the endothelium an HSC migrates to the free voxel of highest "
            "niche signal within this path length through marrow (CXCL12-guided lodging) "
            "and lodges there; with none free it returns to the blood"
        ),
    )
    clearance_per_h: float = param(
        8.0,
        unit="1/h",
        ge=0.0,
        le=1e3,
        description=(
            "loss of circulating HSCs: trapping in lung, liver and spleen, and death "
            "(sets, with homing, the minutes-long blood residence and the 5-30 % seeding "
            "efficiency)"
        ),
    )
    block_fraction: float | None = param(
        None,
        unit="-",
        gt=0.0,
        le=1.0,
        description=(
            "share of the mouse's marrow that the block is; default its marrow volume over "
            "mouse_marrow_mm3"
        ),
    )
    mouse_marrow_mm3: float = param(
        100.0,
        unit="mm³",
        gt=0.0,
        le=1e5,
        description=(
            "the mouse's total marrow volume (a femur's marrow cavity a few to ~15 mm³, the "
            "two femurs ~10-15 % of the skeleton's marrow; 100 mm³ also makes a few hundred "
            "HSCs per mm³ and 1-3 x 10^4 per mouse agree)"
        ),
    )
    blood_volume_ul: float = param(
        1750.0, unit="µL", gt=0.0, le=1e6, description="the mouse's blood volume (1.5-2 mL)"
    )


class LineageConfig(Section):
    """Downstream compartment model fed by MPPs that leave the niche."""

    mpp_residence_days: float = param(
        2.0, unit="day", gt=0.0, le=1e3, description="mean residence in the downstream MPP pool"
    )
    mpp_amplification: float = param(
        8.0, unit="-", ge=1.0, le=1e6, description="cells out per MPP in (transit divisions)"
    )
    cmp_fraction: float = param(
        0.8, unit="-", ge=0.0, le=1.0, description="share of MPP output to CMP (rest to CLP)"
    )
    cmp_residence_days: float = param(
        2.0, unit="day", gt=0.0, le=1e3, description="mean CMP residence"
    )
    cmp_amplification: float = param(
        64.0, unit="-", ge=1.0, le=1e9, description="mature cells out per CMP"
    )
    clp_residence_days: float = param(
        3.0, unit="day", gt=0.0, le=1e3, description="mean CLP residence"
    )
    clp_amplification: float = param(
        32.0, unit="-", ge=1.0, le=1e9, description="mature lymphoid cells out per CLP"
    )
    erythroid_share: float = param(
        0.45, unit="-", ge=0.0, le=1.0, description="share of CMP output that is erythroid"
    )
    megakaryocyte_share: float = param(
        0.15, unit="-", ge=0.0, le=1.0, description="share of CMP output to megakaryocytes/platelets"
    )
    demand_mpp_per_mm3_per_day: float = param(
        5.0,
        unit="1/(mm³ day)",
        gt=0.0,
        le=1e6,
        description=(
            "MPP inflow per mm³ of marrow that the body's blood demand asks for: the "
            "progenitor pool it sustains is the set point of the demand signal (calibrated "
            "by tools/calibrate.py kinetics)"
        ),
    )

    @model_validator(mode="after")
    def _shares(self) -> LineageConfig:
        if self.erythroid_share + self.megakaryocyte_share > 1.0:
            raise ValueError(
                f"erythroid_share + megakaryocyte_share = "
                f"{self.erythroid_share + self.megakaryocyte_share:g} must be <= 1 "
                "(the rest is granulocyte/monocyte)"
            )
        return self


class CellsConfig(Section):
    """HSC cellular automaton parameters."""

    hsc_per_mm3: float = param(
        240.0, unit="1/mm³", ge=0.0, le=1e6,
        description=(
            "initial HSC density in non-bone marrow (only the start: the number the marrow "
            "keeps follows its niche sites; 240 is the level the default tissue holds, tools/convergence.py)"
        ),
    )
    initial_placement: Literal["niche", "random"] = param(
        "niche", unit="-", description="seed HSCs weighted by niche signal, or uniformly in marrow"
    )
    dormant_fraction: float = param(
        0.2, unit="-", ge=0.0, le=1.0, description="share of initial HSCs that are dormant"
    )
    speed_um_min: float = param(
        1.0, unit="µm/min", ge=0.0, le=100.0, description="random-motility speed of unbound cells (calibrate)"
    )
    motility: MotilityConfig = param(
        None, default_factory=MotilityConfig, unit="-", description="hops, persistence, chemotaxis"
    )
    adhesion: AdhesionConfig = param(
        None, default_factory=AdhesionConfig, unit="-", description="binding and unbinding"
    )
    cycle: CycleConfig = param(
        None, default_factory=CycleConfig, unit="-", description="dormancy, activation, cycle clock"
    )
    fate: FateConfig = param(
        None, default_factory=FateConfig, unit="-", description="daughter fates and crowding"
    )
    death: DeathConfig = param(
        None, default_factory=DeathConfig, unit="-", description="apoptosis and MPP exit"
    )
    blood: BloodConfig = param(
        None, default_factory=BloodConfig, unit="-", description="egress, homing, clearance"
    )
    lineage: LineageConfig = param(
        None, default_factory=LineageConfig, unit="-", description="downstream compartments"
    )
