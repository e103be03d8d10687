"""Scenario section ``[tissue]``: where the lattice comes from and its target geometry.

Defaults are C57BL/6 metaphyseal values from shared/BIOLOGY.md section 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from niche3d._schema import Section, check_tissue_table, param

__all__ = ["TissueConfig", "ImageConfig"]


class ImageConfig(Section):
    """Import of a segmented label image instead of the procedural generator."""

    path: Path = param(
        Path("tissue.tif"), unit="-", description="label TIFF, zarr array or OME-Zarr image"
    )
    labels: dict[str, str] = param(
        None,
        default_factory=dict,
        unit="-",
        description="map from label value (as a string key) to tissue name",
    )
    voxel_um: float | None = param(
        None,
        unit="µm",
        ge=0.1,
        le=1000.0,
        description="voxel edge of the image; None = read from the file (a conflict is an error)",
    )
    derive_endosteum: bool = param(
        True, unit="-", description="line bone surfaces with endosteum if the image has none"
    )
    derive_endothelium: bool = param(
        True, unit="-", description="wrap sinusoid lumens in endothelium if the image has none"
    )
    derive_stroma: bool = param(
        True, unit="-", description="add perivascular stroma around vessels if the image has none"
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, name in v.items():
            try:
                value = int(key)
            except ValueError:
                raise ValueError(f"label value {key!r} is not an integer") from None
            if not 0 <= value <= 2**31 - 1:
                raise ValueError(f"label value {key!r} is out of range 0..2^31-1")
            check_tissue_table({name: 0.0}, what="tissue.image.labels")
            out[str(value)] = name.strip().lower()
        return out


class TissueConfig(Section):
    """Geometry of the marrow block (procedural) or the image to import."""

    source: Literal["procedural", "image"] = param(
        "procedural", unit="-", description="procedural generator or a segmented image"
    )
    seed: int | None = param(
        None,
        unit="-",
        ge=0,
        description="geometry seed; None = use run.seed (fix it to share one geometry across replicates)",
    )
    bv_tv: float = param(
        0.11, unit="-", ge=0.0, le=0.6, description="trabecular bone volume fraction BV/TV"
    )
    tb_th_um: float = param(
        55.0, unit="µm", gt=0.0, le=500.0, description="mean trabecular thickness Tb.Th"
    )
    tb_sp_um: float = param(
        175.0, unit="µm", gt=0.0, le=2000.0, description="mean trabecular separation Tb.Sp"
    )
    geometry: Literal["block", "femur"] = param(
        "block",
        unit="-",
        description="'block': marrow filling the lattice, trabecular throughout; 'femur': a "
        "whole-femur marrow cavity along x (put the long axis last: it runs fastest, "
        "docs/performance.md), a cortical tube of cortical_thickness_um around an elliptical "
        "cavity filling the z-y section, trabecular metaphyses (bv_tv) over "
        "metaphysis_fraction of the length at each end and sparse diaphyseal trabeculae between",
    )
    metaphysis_fraction: float = param(
        0.2, unit="-", ge=0.0, le=0.5,
        description="femur: share of the length at each end that is trabecular metaphysis",
    )
    diaphysis_bv_tv_factor: float = param(
        0.1, unit="-", ge=0.0, le=1.0,
        description="femur: diaphyseal BV/TV as a share of bv_tv (sparse trabeculae of the shaft)",
    )
    cortical_shell: bool = param(
        False, unit="-", description="block: close the block with a cortical bone shell on the x faces"
    )
    cortical_thickness_um: float = param(
        40.0, unit="µm", gt=0.0, le=500.0,
        description="cortical shell thickness (block with cortical_shell, or the femur's cortex)"
    )
    sno_fraction: float = param(
        0.2, unit="-", ge=0.0, le=1.0, description="share of endosteal voxels that are SNO osteoblasts"
    )
    sinusoid_diameter_um: float = param(
        20.0, unit="µm", gt=0.0, le=100.0, description="mean sinusoid lumen diameter"
    )
    sinusoid_spacing_um: float = param(
        100.0,
        unit="µm",
        gt=0.0,
        le=1000.0,
        description="expected sinusoid spacing 1/sqrt(length density), reported beside the measured "
        "value; diameter and vascular_fraction set the network, so this follows from them",
    )
    vascular_fraction: float = param(
        0.12,
        unit="-",
        ge=0.0,
        le=0.6,
        description="sinusoid (lumen + endothelium) volume share of non-bone marrow (calibrate)",
    )
    arteriole_count: int = param(
        2, unit="-", ge=0, le=1000, description="number of arterioles running near the endosteum"
    )
    arteriole_diameter_um: float = param(
        12.0, unit="µm", gt=0.0, le=100.0, description="arteriole outer diameter"
    )
    arteriole_bone_distance_um: float = param(
        25.0,
        unit="µm",
        ge=0.0,
        le=500.0,
        description="distance from an arteriole's axis to the nearest bone surface",
    )
    stroma_thickness_um: float = param(
        8.0, unit="µm", ge=0.0, le=100.0, description="thickness of the perivascular stromal sheath"
    )
    stroma_scattered_fraction: float = param(
        0.02, unit="-", ge=0.0, le=0.5, description="share of marrow voxels that are scattered stromal cells"
    )
    image: ImageConfig | None = param(
        None, unit="-", description="segmented image to import (with source = 'image')"
    )

    @model_validator(mode="after")
    def _image_needed(self) -> TissueConfig:
        if self.source == "image" and self.image is None:
            raise ValueError("tissue.source = 'image' needs a [tissue.image] table with a path")
        return self
