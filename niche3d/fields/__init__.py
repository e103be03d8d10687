"""The chemical world: diffusible fields (CXCL12, soluble SCF, ...) and membrane SCF.

Public API: :class:`FieldSet` (what the simulation calls), :class:`SolveReport`, the
scenario section models, and the lower-level :class:`Multigrid` / :class:`OperatorSpec`
for scripted use and benchmarks.
"""

from niche3d.fields.config import (
    FACES,
    BoundaryConfig,
    FieldConfig,
    FieldsConfig,
    MembraneSCFConfig,
)
from niche3d.fields.fieldset import MEMBRANE_SCF, FieldSet, SolveReport
from niche3d.fields.multigrid import Multigrid
from niche3d.fields.operator import OperatorSpec

__all__ = [
    "FieldSet",
    "SolveReport",
    "MEMBRANE_SCF",
    "Multigrid",
    "OperatorSpec",
    "FieldConfig",
    "FieldsConfig",
    "BoundaryConfig",
    "MembraneSCFConfig",
    "FACES",
]
