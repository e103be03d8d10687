"""Building blocks shared by every scenario section.

Each section of a scenario is a :class:`Section` (pydantic v2, unknown keys forbidden,
assignment validated). Every parameter is declared with :func:`param`, which records its
unit, range and one-line description so that ``niche3d scenario docs`` can print the
reference from the schema itself.

This module is the ground floor of the package: it imports pydantic and the leaf
:mod:`niche3d.names`, nothing else of niche3d.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from niche3d.names import TISSUE_NAMES

__all__ = ["Section", "param", "check_tissue_table", "merge_tables", "MERGE_CONTEXT"]

#: validation-context key under which :class:`Section` merges tables over their defaults
MERGE_CONTEXT = "merge_tables_over_defaults"


class Section(BaseModel):
    """Base of every scenario section: strict keys, validated assignment.

    In a scenario document (TOML, or a dict given to ``Scenario.from_dict``), a table
    parameter declared with ``param(..., merge=True)`` merges what the user gives over its
    default key by key (recursively, through nested tables), the way a ``--set
    a.b.c=value`` override does: ``[fields.diffusible.cxcl12]`` with one key changes that
    key of the calibrated CXCL12 field and keeps ``scf``; a per-tissue table with one
    tissue changes that tissue only. Lists and values replace. Python constructors and
    attribute assignment take a table exactly as given.
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        populate_by_name=True,
        # NaN and inf are refused in every number of a scenario (tables and lists too):
        # they would pass range checks (inf >= 0) and give fields of 0 or NaN
        allow_inf_nan=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_over_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        # only while validating a scenario document (Scenario.from_dict passes the
        # context): a Python constructor such as FieldsConfig(diffusible={"c": ...}) means
        # exactly the table it is given
        if not isinstance(data, dict) or not (info.context or {}).get(MERGE_CONTEXT):
            return data
        out = None
        for name, f in cls.model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            if not extra.get("merge") or f.default_factory is None:
                continue
            key = name if name in data else (f.alias if f.alias in data else None)
            if key is None or not isinstance(data[key], dict):
                continue
            if out is None:
                out = dict(data)
            out[key] = merge_tables(f.default_factory(), data[key])  # type: ignore[call-arg]
        return data if out is None else out


def param(
    default: Any,
    *,
    unit: str,
    description: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    default_factory: Any = None,
    merge: bool = False,
) -> Any:
    """Declare a scenario parameter with unit, range and description.

    Parameters
    ----------
    default
        Default value (the calibrated mouse value where one exists). Ignored when
        ``default_factory`` is given.
    unit
        Physical unit as users write it (``"µm"``, ``"1/day"``, ``"nM"``, ``"-"``).
    description
        One line, shown in the generated reference.
    ge, gt, le, lt
        Allowed range (inclusive / exclusive bounds).
    default_factory
        Callable making the default (for mutable defaults: tables, lists).
    merge
        For a table with a ``default_factory``: a table the user gives is merged over
        the default key by key instead of replacing it (see :class:`Section`).
    """
    extra: dict[str, Any] = {"unit": unit}
    if merge:
        if default_factory is None:
            raise ValueError("merge=True needs a default_factory (the table to merge over)")
        extra["merge"] = True
    if default_factory is not None:
        return Field(
            default_factory=default_factory,
            description=description,
            ge=ge,
            gt=gt,
            le=le,
            lt=lt,
            json_schema_extra=extra,
        )
    return Field(
        default,
        description=description,
        ge=ge,
        gt=gt,
        le=le,
        lt=lt,
        json_schema_extra=extra,
    )


def merge_tables(default: Any, user: Any) -> Any:
    """``user`` merged over ``default``: dicts key by key, recursively; anything else replaces.

    A pydantic model on the default side stands for its dump, so a user's partial table
    completes a default model (``{"uptake_per_min": 0.2}`` over the calibrated CXCL12).

    >>> merge_tables({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 9}})
    {'a': 1, 'b': {'c': 9, 'd': 3}}
    """
    if isinstance(default, BaseModel) and isinstance(user, dict):
        default = default.model_dump()
    if not (isinstance(default, dict) and isinstance(user, dict)):
        return user
    out = dict(default)
    for k, v in user.items():
        out[k] = merge_tables(default[k], v) if k in default else v
    return out


def check_tissue_table(
    table: dict[str, float],
    *,
    what: str,
    ge: float | None = 0.0,
    le: float | None = None,
    require: tuple[str, ...] = (),
) -> dict[str, float]:
    """Validate a per-tissue table ``{tissue name: value}``.

    Parameters
    ----------
    table
        The user's table.
    what
        Its name in messages.
    ge
        Smallest allowed value (None: no bound).
    le
        Largest allowed value (None: no bound; values must be finite anyway).
    require
        Tissue names the table must give (``("marrow",)`` for tables whose marrow
        value stands for every tissue not listed).

    Raises
    ------
    ValueError
        An unknown tissue (with a did-you-mean), an out-of-range value or a missing
        required tissue; used as a pydantic field validator by section models.
    """
    tissue_keys = tuple(TISSUE_NAMES.values())
    out: dict[str, float] = {}
    for key, value in table.items():
        name = str(key).strip().lower()
        if name not in tissue_keys:
            close = difflib.get_close_matches(name, tissue_keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown tissue {key!r} in {what}{hint} allowed: {', '.join(tissue_keys)}"
            )
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what}[{name}] = {value!r} must be a number") from None
        if not math.isfinite(v):
            raise ValueError(f"{what}[{name}] = {value!r} must be a finite number")
        if ge is not None and not v >= ge:
            raise ValueError(f"{what}[{name}] = {value!r} must be >= {ge}")
        if le is not None and not v <= le:
            raise ValueError(f"{what}[{name}] = {value!r} must be <= {le:g}")
        out[name] = v
    for name in require:
        if name not in out:
            raise ValueError(
                f"{what} must give {name!r} (the value of every tissue not listed), "
                f"got {dict(table)!r}"
            )
    return out
