"""napari plugin for niche3d run stores.

Reader (``napari-niche3d.get_reader``), dock widgets (run panel, metrics, cell inspector,
intervention timeline) and a sample run generated on the fly. The widgets import Qt, so
they are not imported here; import them from :mod:`napari_niche3d._widgets`.
"""

from napari_niche3d._reader import is_run_store, layers_from_run, napari_get_reader, read_run

__version__ = "0.1.0"

__all__ = ["__version__", "is_run_store", "layers_from_run", "napari_get_reader", "read_run"]
