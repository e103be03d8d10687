"""Typed, validated scenarios: TOML <-> :class:`Scenario`.

A scenario is the complete description of a run. Sections are pydantic v2 models whose
schemas live next to the code that uses them (``niche3d.tissue.config`` and so on); this
module composes them, parses TOML, applies ``a.b.c=value`` overrides and turns every
validation failure into one :class:`ScenarioError` that names the key path, the value and
what is allowed.

Examples
--------
>>> from niche3d.scenario import Scenario
>>> sc = Scenario.default().with_overrides(["run.days=2", "domain.shape=[32,32,32]"])
>>> sc.run.days
2.0
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from niche3d._schema import MERGE_CONTEXT, Section, param
from niche3d.cells.config import CellsConfig
from niche3d.fields.config import FieldsConfig
from niche3d.interventions.config import GCSF, Intervention, Knockout
from niche3d.names import CELL_FIELDS, CXCL12, MEMBRANE_SCF
from niche3d.tissue.config import TissueConfig

__all__ = [
    "Scenario",
    "ScenarioError",
    "DomainConfig",
    "OutputConfig",
    "RunConfig",
    "load_scenario",
    "scenario_reference",
]


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names key path, value and what is allowed."""


class DomainConfig(Section):
    """The lattice: shape and voxel edge."""

    shape: tuple[int, int, int] = param(
        (48, 96, 96), unit="voxel", description="lattice shape (z, y, x); each axis 8..4096"
    )
    voxel_um: float = param(
        8.0, unit="µm", ge=1.0, le=50.0, description="voxel edge (one HSC fills about one voxel)"
    )

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 8 <= n <= 4096 for n in v):
            raise ValueError(f"every axis of shape must be in 8..4096, got {list(v)}")
        return v


class OutputConfig(Section):
    """What the run store records and how often."""

    interval_hours: float = param(
        24.0, unit="h", gt=0.0, le=24.0 * 365, description="time between records"
    )
    fields: bool = param(True, unit="-", description="store the field volumes at every record")
    fields_every_records: int = param(
        1, unit="-", ge=1, le=100000,
        description="store the field volumes at every N-th record only (the records between "
                    "hold NaN: not recorded); cells, labels and metrics are stored at every record",
    )
    field_keepbits: int | None = param(
        None, unit="-", ge=1, le=23,
        description="lossy display copies: keep this many of float32's 23 mantissa bits of the "
                    "stored fields (round half to even, numcodecs BitRound); relative error "
                    "<= 2**-(keepbits+1); None = lossless. The simulation itself is unaffected",
    )
    checkpoint_every_records: int = param(
        10, unit="-", ge=1, le=100000, description="records between checkpoints (for --resume)"
    )


#: the most cell steps one run may take (run.days * 24 / run.dt_hours)
MAX_STEPS = 1_000_000


class RunConfig(Section):
    """Duration, seed, threads and the time steps of the multi-rate loop."""

    days: float = param(30.0, unit="day", gt=0.0, le=3650.0, description="simulated time")
    seed: int = param(1, unit="-", ge=0, lt=2**63, description="master seed of every random stream")
    threads: int = param(
        0, unit="-", ge=0, le=1024, description="numba threads; 0 = all cores (results do not depend on it)"
    )
    dt_hours: float = param(
        1.0, unit="h", gt=0.0, le=24.0, description="cell step (cycle, fate, adhesion, blood)"
    )
    motility_substeps: int = param(
        6, unit="-", ge=1, le=600, description="migration sub-steps per cell step"
    )
    max_cells: int = param(
        5_000_000, unit="-", ge=1, le=100_000_000,
        description="the most cells (on the lattice and in blood) a run may hold: beyond it "
                    "the run stops with a diagnostic in its store (a runaway expansion)",
    )


class Scenario(Section):
    """A complete niche3d scenario."""

    name: str = param("scenario", unit="-", description="short name recorded in the store")
    description: str = param("", unit="-", description="free text")
    domain: DomainConfig = param(None, default_factory=DomainConfig, unit="-", description="lattice")
    tissue: TissueConfig = param(None, default_factory=TissueConfig, unit="-", description="geometry")
    fields: FieldsConfig = param(None, default_factory=FieldsConfig, unit="-", description="signals")
    cells: CellsConfig = param(None, default_factory=CellsConfig, unit="-", description="HSCs")
    interventions: list[Intervention] = param(
        None, default_factory=list, unit="-", description="timed perturbations ([[interventions]])"
    )
    output: OutputConfig = param(None, default_factory=OutputConfig, unit="-", description="records")
    run: RunConfig = param(None, default_factory=RunConfig, unit="-", description="run control")

    @model_validator(mode="after")
    def _signals_exist(self) -> Scenario:
        problems = self.missing_signals()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _time_steps(self) -> Scenario:
        # before any set-up: a run whose days or record interval are no whole number of
        # steps would fail after it, and a tiny step would run for days without a word
        r, dt = self.run, self.run.dt_hours
        steps = r.days * 24.0 / dt
        if abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            raise ValueError(
                f"run.days = {r.days:g} is not a whole number of run.dt_hours = {dt:g} steps "
                f"({steps:.4g}); choose days that are a multiple of {dt / 24:g}")
        if round(steps) > MAX_STEPS:
            raise ValueError(
                f"run.days = {r.days:g} at run.dt_hours = {dt:g} is {round(steps):,} steps, more "
                f"than {MAX_STEPS:,}: at ~0.1-1 s a step on a small lattice that is days of "
                "computing; use a longer run.dt_hours (the cell rules are calibrated at 1 h)")
        ratio = self.output.interval_hours / dt
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(
                f"output.interval_hours = {self.output.interval_hours:g} must be a whole "
                f"multiple of run.dt_hours = {dt:g}")
        return self

    @model_validator(mode="after")
    def _femur_has_a_cavity(self) -> Scenario:
        t = self.tissue
        if t.source == "procedural" and t.geometry == "femur":
            nz, ny, _ = self.domain.shape
            across = min(nz, ny) - 2.0 * t.cortical_thickness_um / self.domain.voxel_um
            if across < 2.0:
                raise ValueError(
                    f"tissue.cortical_thickness_um = {t.cortical_thickness_um:g} leaves no femur "
                    f"cavity in a z-y section of {nz} x {ny} voxels of {self.domain.voxel_um:g} "
                    "µm (domain.shape); the cavity needs 2 voxels across: a thinner cortex "
                    "or a wider lattice")
        return self

    def missing_signals(self) -> list[str]:
        """What the cell rules and the interventions need but ``fields`` does not define.

        The cell rules read the diffusible fields of :data:`niche3d.names.CELL_FIELDS`
        every step; a knockout targets a diffusible field or ``membrane_scf``; G-CSF
        lowers osteoblast CXCL12 production. Each problem is one message naming the key.
        Validation runs this, and so does :class:`~niche3d.simulation.Simulation` before
        any work, because Python code can replace ``scenario.fields.diffusible`` after
        validation.
        """
        names = set(self.fields.diffusible)
        out = [
            f"fields.diffusible.{n}: required by the cell rules but missing (defined: "
            f"{', '.join(sorted(names)) or 'none'})"
            for n in CELL_FIELDS
            if n not in names
        ]
        targets = names | {MEMBRANE_SCF}
        for i, iv in enumerate(self.interventions):
            if isinstance(iv, Knockout) and iv.field not in targets:
                out.append(
                    f"interventions.{i}.field = {iv.field!r}: no such signal; allowed: "
                    + ", ".join(sorted(targets))
                )
            if isinstance(iv, GCSF) and CXCL12 not in names:
                out.append(f"interventions.{i}: gcsf lowers osteoblast {CXCL12} production, "
                           "but fields.diffusible does not define it")
        return out

    def check(self) -> None:
        """Raise :class:`ScenarioError` if :meth:`missing_signals` finds anything."""
        problems = self.missing_signals()
        if problems:
            raise ScenarioError("invalid scenario:\n  " + "\n  ".join(problems))

    # ------------------------------------------------------------------ construction
    @classmethod
    def default(cls) -> Scenario:
        """The built-in homeostasis defaults."""
        return cls()

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "scenario") -> Scenario:
        """Validate a plain dict; raises :class:`ScenarioError` with readable messages."""
        try:
            return cls.model_validate(data, context={MERGE_CONTEXT: True})
        except ValidationError as exc:
            raise ScenarioError(_format_errors(exc, source)) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Read and validate a TOML scenario file (the same as :func:`load_scenario`)."""
        return load_scenario(path)

    @classmethod
    def from_toml_text(
        cls, text: str, *, source: str = "scenario", base_dir: str | Path | None = None
    ) -> Scenario:
        """Parse and validate TOML text: the one parser behind every way to load a scenario.

        Parameters
        ----------
        text
            The TOML document.
        source
            Its name in error messages (a file path, or a store's ``scenario``).
        base_dir
            Directory that a relative ``tissue.image.path`` is relative to (the scenario
            file's); None leaves relative paths as written.

        Raises
        ------
        ScenarioError
            TOML syntax error, unknown key, wrong type or value out of range.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
        tissue = data.get("tissue")
        img = tissue.get("image") if isinstance(tissue, dict) else None
        if base_dir is not None and isinstance(img, dict) and isinstance(img.get("path"), str):
            ip = Path(img["path"])
            if not ip.is_absolute():
                img["path"] = str((Path(base_dir) / ip).resolve())
        return cls.from_dict(data, source=source)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-safe dict (None values dropped)."""
        return _drop_none(self.model_dump(mode="json"))

    def to_toml(self) -> str:
        """The full scenario, every default written out, as TOML text."""
        return tomli_w.dumps(self.to_dict())

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Scenario:
        """Return a copy with ``a.b.c=value`` overrides applied and validated.

        Parameters
        ----------
        overrides
            Either ``["run.days=5", "cells.speed_um_min=2"]`` (values parsed as TOML,
            bare words taken as strings) or a dict ``{"run.days": 5}``.
        """
        items = _parse_overrides(overrides)
        data = self.to_dict()
        for path, value in items:
            _set_path(data, path, value)
        return Scenario.from_dict(data, source="override")


# ---------------------------------------------------------------------- loading
def load_scenario(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Scenario:
    """Read a TOML scenario, apply overrides, validate.

    Raises
    ------
    ScenarioError
        Missing file, TOML syntax error, unknown key, wrong type or value out of range.
    """
    p = Path(path)
    if not p.exists():
        raise ScenarioError(f"scenario file {str(p)!r} does not exist")
    if p.is_dir():
        raise ScenarioError(f"scenario path {str(p)!r} is a directory, expected a .toml file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{p}: not a UTF-8 text file") from None
    sc = Scenario.from_toml_text(text, source=str(p), base_dir=p.parent)
    if overrides:
        sc = sc.with_overrides(overrides)
    return sc


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def _parse_overrides(overrides: list[str] | dict[str, Any]) -> list[tuple[str, Any]]:
    if isinstance(overrides, dict):
        return list(overrides.items())
    out: list[tuple[str, Any]] = []
    for item in overrides:
        if "=" not in item:
            raise ScenarioError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        raw = raw.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string: --set tissue.source=image
        out.append((key, value))
    return out


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    if not all(parts):
        raise ScenarioError(f"override key {path!r} is not a dotted key path")
    node: Any = data
    model: Any = Scenario
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            try:
                idx = int(part)
                node = node[idx]
            except (ValueError, IndexError):
                raise ScenarioError(
                    f"override {path!r}: {'.'.join(parts[:i])} is a list of {len(node)}; "
                    f"{part!r} is not a valid index"
                ) from None
            model = None
            continue
        if part not in node:
            allowed = _allowed_keys(model)
            if allowed is not None and part not in allowed:
                raise ScenarioError(_unknown_key_message(".".join(parts[: i + 1]), part, allowed))
            node[part] = {}
        model = _child_model(model, part)
        node = node[part]
        if not isinstance(node, dict | list):
            raise ScenarioError(f"override {path!r}: {'.'.join(parts[: i + 1])} is a value, not a table")
    last = parts[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ScenarioError(f"override {path!r}: {last!r} is not a valid index") from None
        return
    allowed = _allowed_keys(model)
    if allowed is not None and last not in allowed:
        raise ScenarioError(_unknown_key_message(path, last, allowed))
    node[last] = value


# ---------------------------------------------------------------------- errors
def _child_model(model: Any, key: str) -> Any:
    if model is None or not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    f = model.model_fields.get(key)
    if f is None:
        return None
    ann = f.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()):  # Optional[Model]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _dict_value_model(ann: Any) -> type[BaseModel] | None:
    args = getattr(ann, "__args__", ())
    if getattr(ann, "__origin__", None) is dict and len(args) == 2:
        v = args[1]
        if isinstance(v, type) and issubclass(v, BaseModel):
            return v
    return None


def _allowed_keys(model: Any) -> list[str] | None:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def _unknown_key_message(path: str, key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{path}: unknown key {key!r}{hint} allowed keys: {', '.join(allowed)}"


def _model_at(loc: tuple[Any, ...]) -> Any:
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        child = _child_model(model, str(part))
        if child is None:
            # a discriminated union member: tagged by the 'kind' literal in loc
            return None
        model = child
    return model


_KINDS = {"knockout", "amd3100", "gcsf", "5fu", "transplant", "irradiation"}


def _intervention_models() -> dict[str, type[BaseModel]]:
    from niche3d.interventions.config import (
        AMD3100,
        GCSF,
        FiveFU,
        Irradiation,
        Knockout,
        Transplant,
    )

    models: tuple[type[BaseModel], ...] = (Knockout, AMD3100, GCSF, FiveFU, Transplant, Irradiation)
    return {m.model_fields["kind"].default: m for m in models}


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        # drop pydantic's union tags ("gcsf") and function-wrapper names from the path
        clean = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _KINDS))]
        path = ".".join(clean) or "(top level)"
        value = err.get("input")
        etype = err.get("type", "")
        if not clean and etype == "value_error":  # a whole-scenario check: its own words
            lines.extend(str(err.get("msg", "invalid")).removeprefix("Value error, ").split("\n"))
            continue
        if etype == "extra_forbidden":
            key = str(loc[-1])
            tags = [p for p in loc[:-1] if isinstance(p, str) and p in _KINDS]
            if tags:  # inside an [[interventions]] table: the member model is named by its kind
                allowed = _allowed_keys(_intervention_models()[tags[-1]])
            else:
                allowed = _allowed_keys(_model_at(tuple(loc[:-1])))
            if allowed:
                lines.append(_unknown_key_message(path, key, allowed))
            else:
                lines.append(f"{path}: unknown key {key!r}")
            continue
        msg = err.get("msg", "invalid")
        msg = msg.removeprefix("Value error, ")
        shown = _short(value)
        if etype == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            lines.append(f"{path} = {shown}: {msg}")
    head = f"invalid {source}" if source else "invalid scenario"
    return head + ":\n  " + "\n  ".join(lines)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------- reference
def scenario_reference(fmt: Literal["markdown", "text"] = "markdown") -> str:
    """The parameter reference generated from the schema: key, default, unit, range, description."""
    rows: list[tuple[str, str, str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            key = f"{prefix}{name}"
            child = _child_model(model, name)
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            unit = str(extra.get("unit", "-"))
            value_model = _dict_value_model(f.annotation)
            if value_model is not None:  # e.g. fields.diffusible.<name>, boundary.<face>
                names = ""
                if f.default_factory is not None:
                    names = ", ".join(f.default_factory())  # type: ignore[call-arg]
                rows.append((key, f"({names})" if names else "(table of tables)", "", "", f.description or ""))
                walk(value_model, key + ".<name>.")
                continue
            if child is not None and child is not model:
                rows.append((key, "(table)", "", "", f.description or ""))
                walk(child, key + ".")
                continue
            lo = hi = ""
            for m in f.metadata:
                for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    v = getattr(m, attr, None)
                    if v is not None:
                        if sym.startswith(">"):
                            lo = f"{sym} {v:g}"
                        else:
                            hi = f"{sym} {v:g}"
            rng = ", ".join(x for x in (lo, hi) if x)
            if f.default_factory is not None:
                try:
                    default = f.default_factory()  # type: ignore[call-arg]
                except TypeError:
                    default = "..."
            else:
                default = f.default
            if isinstance(default, BaseModel):
                default = "(table)"
            elif isinstance(default, dict):
                default = {k: (v.model_dump(mode="json") if isinstance(v, BaseModel) else v) for k, v in default.items()}
            ann = f.annotation
            lit = getattr(ann, "__args__", None)
            if getattr(ann, "__origin__", None) is Literal and lit:
                rng = " or ".join(repr(a) for a in lit)
            rows.append((key, _short(default), unit, rng, f.description or ""))

    walk(Scenario, "")
    for kind, model in _intervention_models().items():
        walk(model, f"interventions[kind={kind}].")
    if fmt == "text":
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{w}}  {d}  [{u}]  {r}  {desc}".rstrip() for k, d, u, r, desc in rows)
    out = [
        "# Scenario reference",
        "",
        "Generated by `niche3d scenario docs` from the schema; do not edit by hand.",
        "",
        "Keys are dotted paths into the TOML file (`[run]` / `days = 30`) and into `--set`",
        "overrides (`--set run.days=30`). `<name>` stands for a key of your choice (a field",
        "name, a domain face); the defaults shown there are those of a newly added entry: the",
        "calibrated values of the built-in `cxcl12` and `scf` fields are printed in full by",
        "`niche3d scenario show`. `[[interventions]]` tables are chosen by their `kind`.",
        "",
        "Tables with calibrated defaults (`fields.diffusible`, its per-tissue tables and",
        "`fields.membrane_scf.expression`) merge key by key: `[fields.diffusible.cxcl12]`",
        "with one key changes that key of the calibrated CXCL12 and keeps `scf`;",
        "`secretion_per_min = {stroma = 0}` changes stroma only. Other tables (a knockout's",
        "`sources`, `tissue.image.labels`) are exactly what you write.",
        "",
        "| key | default | unit | allowed | description |",
        "|---|---|---|---|---|",
    ]
    for k, d, u, r, desc in rows:
        out.append(f"| `{k}` | `{d}` | {u} | {r} | {desc} |".replace("`(table)`", "table"))
    return "\n".join(out) + "\n"
