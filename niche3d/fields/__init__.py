"""The chemical world: diffusible fields (CXCL12, soluble SCF, ...) and membrane SCF.

Public API: :class:`FieldSet` (what the simulation calls), :class:`SolveReport`, the
scenario section models, and the lower-level solver for scripted use and benchmarks:
:class:`Multigrid`, given a :class:`StaticOperator` once and a :class:`DynamicOperator`
per solve (or a whole :class:`OperatorSpec`).
"""

from niche3d._lazy import lazy_exports

# Lazy: the scenario schema imports niche3d.fields.config without loading numba or scipy.
_EXPORTS = {
    "FieldSet": "niche3d.fields.fieldset",
    "SolveReport": "niche3d.fields.fieldset",
    "MEMBRANE_SCF": "niche3d.names",
    "Multigrid": "niche3d.fields.multigrid",
    "OperatorSpec": "niche3d.fields.operator",
    "StaticOperator": "niche3d.fields.operator",
    "DynamicOperator": "niche3d.fields.operator",
    **dict.fromkeys(
        ("FieldConfig", "FieldsConfig", "BoundaryConfig", "MembraneSCFConfig", "FACES"),
        "niche3d.fields.config",
    ),
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
