"""Scenario section ``[fields]``: diffusible signals and membrane SCF.

Every rate is per tissue, keyed by tissue name (see :mod:`niche3d.names`); a tissue
missing from a table takes the table's ``marrow`` value for diffusion and decay (so those
tables must give ``marrow``) and 0 for secretion. Values are calibrated
(docs/calibration.md) from the starting points of shared/BIOLOGY.md section 5.

Tables merge over the defaults key by key: ``[fields.diffusible.cxcl12]`` with one key
changes that key of the calibrated CXCL12 field and keeps ``scf``, and
``secretion_per_min = {stroma = 0}`` changes stroma only (set a tissue to 0 to remove its
production).
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from niche3d._schema import Section, check_tissue_table, param
from niche3d.names import CXCL12, MEMBRANE_SCF, SCF

__all__ = ["FieldConfig", "BoundaryConfig", "MembraneSCFConfig", "FieldsConfig", "FACES"]

FACES: tuple[str, ...] = ("zmin", "zmax", "ymin", "ymax", "xmin", "xmax")
# Largest values of the per-tissue tables: far beyond biology (a small molecule in water
# diffuses ~1000 µm²/s) and small enough that the float32 operator and fields stay finite
# and meaningful (coefficients ~D dt / h², concentrations ~S / k).
_TABLE_MAX = {"diffusion_um2_s": 1e4, "decay_per_min": 1e4, "secretion_per_min": 1e6}


class BoundaryConfig(Section):
    """Condition on one face of the domain."""

    kind: Literal["noflux", "value", "periodic"] = param(
        "noflux", unit="-", description="no-flux (Neumann 0), fixed value (Dirichlet) or periodic"
    )
    value: float = param(0.0, unit="field unit", ge=0.0, le=1e6,
                         description="concentration for kind = 'value'")


class FieldConfig(Section):
    """One diffusible field, solved quasi-steady: -div(D grad c) + k c = S."""

    units: Literal["nM", "ng/mL"] = param("nM", unit="-", description="concentration unit")
    diffusion_um2_s: dict[str, float] = param(
        None,
        default_factory=lambda: {"marrow": 20.0, "bone": 0.0},
        unit="µm²/s",
        description="effective diffusion coefficient per tissue (bone must be 0: impermeable)",
        merge=True,
    )
    decay_per_min: dict[str, float] = param(
        None,
        default_factory=lambda: {"marrow": 0.05},
        unit="1/min",
        description="first-order decay (matrix binding, degradation) per tissue",
        merge=True,
    )
    secretion_per_min: dict[str, float] = param(
        None,
        default_factory=dict,
        unit="field unit/min",
        description="production rate per tissue voxel",
        merge=True,
    )
    uptake_per_min: float = param(
        0.1, unit="1/min", ge=0.0, le=1e4, description="receptor internalisation by a cell in its voxel"
    )
    protease_sensitivity: float = param(
        1.0, unit="-", ge=0.0, le=1e4,
        description="multiplier on intervention protease activity (extra decay)"
    )
    boundary: dict[str, BoundaryConfig] = param(
        None,
        default_factory=dict,
        unit="-",
        description="per-face condition (zmin..xmax); missing faces are no-flux",
    )
    window: tuple[float, float] = param(
        (0.0, 20.0), unit="field unit", description="fixed display contrast window (low, high)"
    )

    @field_validator("diffusion_um2_s", "decay_per_min", "secretion_per_min")
    @classmethod
    def _tables(cls, v: dict[str, float], info) -> dict[str, float]:  # type: ignore[no-untyped-def]
        # diffusion and decay fall back to the marrow value for unlisted tissues
        need = ("marrow",) if info.field_name != "secretion_per_min" else ()
        return check_tissue_table(v, what=info.field_name, require=need,
                                  le=_TABLE_MAX[info.field_name])

    @field_validator("boundary")
    @classmethod
    def _faces(cls, v: dict[str, BoundaryConfig]) -> dict[str, BoundaryConfig]:
        import difflib

        for face in v:
            if face not in FACES:
                close = difflib.get_close_matches(face, FACES, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown face {face!r}{hint} allowed: {', '.join(FACES)}")
        for a, b in (("zmin", "zmax"), ("ymin", "ymax"), ("xmin", "xmax")):
            ka = v[a].kind if a in v else "noflux"
            kb = v[b].kind if b in v else "noflux"
            if (ka == "periodic") != (kb == "periodic"):
                raise ValueError(f"periodic boundary must be set on both {a} and {b}")
        return v

    @model_validator(mode="after")
    def _bone_impermeable(self) -> FieldConfig:
        if self.diffusion_um2_s.get("bone", 0.0) != 0.0:
            raise ValueError("diffusion_um2_s.bone must be 0 (bone is impermeable)")
        if self.window[1] <= self.window[0]:
            raise ValueError(f"window {self.window} must have low < high")
        return self


def _default_fields() -> dict[str, FieldConfig]:
    return {
        # Calibrated (docs/calibration.md): CXCL12 binds heparan sulfate and matrix, so its
        # effective diffusion is ~1 µm²/s (free ~100 µm²/s over a bound/free ratio ~100);
        # lifetime ~10 min (CXCR4/ACKR3 internalisation, CD26 and MMP cleavage). The decay
        # length sqrt(D/k) ~ 24 µm keeps CXCL12 at the perivascular stroma that makes it.
        CXCL12: FieldConfig(
            diffusion_um2_s={"marrow": 1.0, "bone": 0.0},
            decay_per_min={"marrow": 0.1},
            secretion_per_min={"stroma": 5.0, "endothelium": 1.5, "endosteum": 0.5, "sno": 0.5},
            uptake_per_min=0.1,
            window=(0.0, 40.0),
        ),
        SCF: FieldConfig(
            diffusion_um2_s={"marrow": 30.0, "bone": 0.0},
            decay_per_min={"marrow": 0.05},
            secretion_per_min={"stroma": 2.0, "endothelium": 2.0, "endosteum": 0.3, "sno": 0.3},
            uptake_per_min=0.05,
            window=(0.0, 20.0),
        ),
    }


class MembraneSCFConfig(Section):
    """Membrane-bound SCF: not diffusible, presented by expressing tissue to its neighbours."""

    expression: dict[str, float] = param(
        None,
        # arteriolar endothelium presents SCF too (Xu et al., Nat Cell Biol 2018: arterial
        # endothelial cells are a main SCF source for HSC maintenance); 0.7 calibrated by
        # tools/calibrate.py sites (the perisinusoidal share of niche sites, ~85 %)
        default_factory=lambda: {"endothelium": 1.0, "stroma": 1.0, "endosteum": 0.5, "sno": 0.5,
                                 "arteriole": 0.7},
        unit="-",
        description="relative membrane SCF per expressing tissue (0 = knockout)",
        merge=True,
    )

    protease_half_activity_per_min: float = param(
        0.02,
        unit="1/min",
        gt=0.0,
        le=1e4,
        description="protease activity that cleaves half of membrane SCF: factor 1/(1 + a/a_half)",
    )

    @field_validator("expression")
    @classmethod
    def _expr(cls, v: dict[str, float]) -> dict[str, float]:
        return check_tissue_table(v, what="expression", le=1e3)


class FieldsConfig(Section):
    """All signals: diffusible fields by name plus membrane SCF."""

    diffusible: dict[str, FieldConfig] = param(
        None,
        default_factory=_default_fields,
        unit="-",
        description="diffusible fields by name (a table you give merges over the calibrated "
        "cxcl12 and scf key by key)",
        merge=True,
    )
    membrane_scf: MembraneSCFConfig = param(
        None, default_factory=MembraneSCFConfig, unit="-", description="membrane-bound SCF contact map"
    )
    solve_every_hours: float = param(
        6.0, unit="h", gt=0.0, le=240.0, description="re-solve interval when no source changed"
    )
    skip_tolerance: float = param(
        0.005, unit="-", ge=0.0, le=0.5,
        description="a scheduled re-solve of a field the cells read is skipped when, after a "
                    "local correction around the voxels whose cells changed, the estimated "
                    "largest change it would make is below this fraction of the half-"
                    "saturation of the receptor that reads the field (CXCR4 Kd for CXCL12, "
                    "cells.death.scf_half for SCF); 0 re-solves always (docs/fields.md)"
    )
    max_skipped_solves: int = param(
        7, unit="-", ge=0, le=1000,
        description="scheduled re-solves skipped in a row at most (then one is done in full, "
                    "which also re-measures the response the skip estimate uses)"
    )
    tolerance: float = param(
        1e-5, unit="-", gt=0.0, lt=1.0,
        description="relative residual at which a solve stops (the stored solution, float32 "
                    "with an int16 extension, resolves ~1e-12 to 1e-9 depending on the "
                    "operator: a solve that stalls above the tolerance stops and warns)"
    )
    max_cycles: int = param(
        100, unit="-", ge=1, le=10000, description="multigrid V-cycles at most per field and solve"
    )

    @field_validator("diffusible")
    @classmethod
    def _names(cls, v: dict[str, FieldConfig]) -> dict[str, FieldConfig]:
        if MEMBRANE_SCF in v:
            raise ValueError(
                f"{MEMBRANE_SCF!r} is reserved for the membrane SCF contact map "
                "([fields.membrane_scf]); a diffusible field cannot take that name"
            )
        for name in v:
            if not name or not name.replace("_", "").isalnum():
                raise ValueError(
                    f"diffusible field name {name!r} must be letters, digits and '_'"
                )
        return v
