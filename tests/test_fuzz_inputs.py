"""Property-based: whatever a user writes in a scenario file, a ``--set`` override or a
label image, niche3d accepts it as a valid scenario (every number finite) or refuses it
with its own error (ScenarioError, LabelImageError), never another exception or a hang.

With ``tests/test_fuzz_store.py`` this is 2,000 cases per CI run (600 + 600 + 200 here,
250 + 250 + 100 there); the examples are derandomized, so every run tries the same ones.
"""

from __future__ import annotations

import math
import os
import typing

import numpy as np
import pytest
import tomli_w
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from niche3d.scenario import Scenario, ScenarioError
from niche3d.tissue import ImageConfig, TissueConfig, load_label_image
from niche3d.tissue.errors import LabelImageError

#: NICHE3D_FUZZ_SCALE=10 (or more) multiplies every example count: the long lane
SCALE = max(1, int(os.environ.get("NICHE3D_FUZZ_SCALE", "1")))
SETTINGS = settings(max_examples=600 * SCALE, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every parameter path of the scenario (tables of models by their default keys)."""
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        sub = [a for a in (ann, *typing.get_args(ann))
               if isinstance(a, type) and issubclass(a, BaseModel)]
        if sub:
            out += _paths(sub[0], f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


PATHS = _paths(Scenario) + ["fields.diffusible.cxcl12.uptake_per_min",
                            "fields.diffusible.scf.secretion_per_min.stroma",
                            "fields.diffusible.cxcl12.boundary.zmin.value",
                            "fields.membrane_scf.expression.endothelium"]
KEYS = st.one_of(st.sampled_from(PATHS),
                 st.sampled_from(PATHS).map(lambda p: p + "x"),  # a typo
                 st.text("abcdefghij._", min_size=1, max_size=20))
SCALARS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e6, 1e6),
    st.integers(-(2**63), 2**63 - 1), st.integers(-10, 10_000), st.booleans(),
    st.text(max_size=10), st.sampled_from(["marrow", "bone", "femur", "noflux", "value"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text("abcxyz_", max_size=8), inner, max_size=3)),
    max_leaves=6)


def _set(doc: dict, path: str, value: object) -> None:
    d = doc
    parts = [p for p in path.split(".") if p]
    if not parts:
        return
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            return
    d[parts[-1]] = value


def _all_finite(x: object) -> bool:
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, dict):
        return all(_all_finite(v) for v in x.values())
    if isinstance(x, list | tuple):
        return all(_all_finite(v) for v in x)
    return True


def _accepted(sc: Scenario) -> None:
    """A scenario niche3d accepted: finite everywhere, its own checks pass, it round-trips."""
    assert _all_finite(sc.model_dump())
    sc.check()
    assert Scenario.from_toml_text(sc.to_toml()) == sc


@SETTINGS
@given(st.lists(st.tuples(KEYS, VALUES), max_size=5))
def test_any_scenario_document_is_valid_or_a_scenario_error(entries: list) -> None:
    doc: dict = {}
    for key, value in entries:
        _set(doc, key, value)
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # not expressible in TOML (None-free already): skip
        return
    try:
        sc = Scenario.from_toml_text(text)
    except ScenarioError:
        return
    _accepted(sc)


@SETTINGS
@given(KEYS, st.one_of(st.text(max_size=24), SCALARS.map(repr),
                       VALUES.map(lambda v: str(v).replace("'", '"'))))
def test_any_set_override_is_valid_or_a_scenario_error(key: str, text: str) -> None:
    try:
        sc = Scenario.default().with_overrides([f"{key}={text}"])
    except ScenarioError:
        return
    _accepted(sc)


@settings(max_examples=200 * SCALE, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       dtype=st.sampled_from(["uint8", "int16", "int32", "float32", "bool"]),
       voxel=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([0.0, -8.0, 1e-9, 8.0, 4.0, 16.0]),
                       st.lists(st.floats(0.5, 20.0), min_size=1, max_size=4)),
       table=st.dictionaries(st.sampled_from(["0", "1", "2", "7", "x"]),
                             st.sampled_from(["marrow", "bone", "sinusoid", "arteriole", "nope"]),
                             max_size=4),
       values=st.integers(0, 8))
def test_any_label_image_is_imported_or_a_label_image_error(
        tmp_path_factory: pytest.TempPathFactory, shape: list[int], dtype: str,
        voxel: object, table: dict, values: int) -> None:
    path = tmp_path_factory.mktemp("img") / "labels.zarr"
    data = (np.arange(int(np.prod(shape))) % (values + 1)).reshape(shape).astype(dtype)
    arr = zarr.create_array(str(path), shape=tuple(shape), dtype=dtype,
                            chunks=tuple(min(4, n) for n in shape), fill_value=0)
    arr[...] = data
    if voxel is not None:
        arr.attrs["voxel_um"] = voxel
    try:  # a table naming no tissue is refused where it is written (a scenario error)
        cfg = TissueConfig(source="image", image=ImageConfig(path=path, labels=table))
    except ValueError:
        return
    try:
        lat = load_label_image(cfg, 8.0)
    except LabelImageError:
        return
    assert all(8 <= n <= 4096 for n in lat.shape)


def test_the_paths_cover_the_scenario() -> None:
    assert len(PATHS) > 100 and "run.days" in PATHS and "cells.fate.crowding" in PATHS

