"""The HTML report of a run (``niche3d report RUN -o report.html``): one self-contained
page of figures and tables from :mod:`niche3d.analysis`, the validation table, the
scenario and the code version. Names load lazily (:mod:`niche3d._lazy`)."""

from __future__ import annotations

from niche3d._lazy import lazy_exports

_EXPORTS = {
    "make_report": "niche3d.report.build",
    "intervention_marks": "niche3d.report.build",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
