"""Building blocks shared by every scenario section.

Each section of a scenario is a :class:`Section` (pydantic v2, unknown keys forbidden,
assignment validated). Every parameter is declared with :func:`param`, which records its
unit, range and one-line description so that ``niche3d scenario docs`` can print the
reference from the schema itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Section", "param", "check_tissue_table"]


class Section(BaseModel):
    """Base of every scenario section: strict keys, validated assignment."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        populate_by_name=True,
    )


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
    """
    extra = {"unit": unit}
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


def check_tissue_table(
    table: dict[str, float], *, what: str, ge: float | None = 0.0
) -> dict[str, float]:
    """Validate a per-tissue table ``{tissue name: value}``.

    Raises ``ValueError`` naming the unknown tissue (with a did-you-mean) or the
    out-of-range value; used as a pydantic field validator by section models.
    """
    import difflib

    # imported here: niche3d.tissue's package init imports the section schemas
    from niche3d.tissue.codes import TISSUE_NAMES

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
        v = float(value)
        if ge is not None and not v >= ge:
            raise ValueError(f"{what}[{name}] = {value!r} must be >= {ge}")
        out[name] = v
    return out
