"""Where every benchmark writes its JSON (one place for the directory and format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(path: str | Path, doc: Any) -> None:
    """Write ``doc`` as indented JSON to ``path`` (directories made) and say where."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1))
    print(f"wrote {p}")
