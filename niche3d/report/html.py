"""One self-contained HTML page: sections of figures (PNG embedded as data URIs), tables and
text, with a table of contents; no script, no stylesheet or font from anywhere else, so
the file opens the same offline, attached to an e-mail or years later."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["Plot", "Section", "render_page", "figure_png"]

#: dots per inch of the embedded figures (sharp on a laptop screen, ~100 kB a figure)
DPI = 110

_CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 0 1.5em 3em; color: #1b1b1b; line-height: 1.45; }
h1 { margin-top: 1.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
nav ol { columns: 2; } figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto;
       border: 1px solid #e4e4e4; } figcaption { font-size: .92em; color: #444; margin-top: .3em; }
table { border-collapse: collapse; font-size: .88em; margin: .8em 0; }
th, td { border: 1px solid #d0d0d0; padding: .25em .5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
td.text { min-width: 6em; max-width: 30em; } .wide { overflow-x: auto; }
tr.pass td.status { background: #d9f2d9; } tr.fail td.status { background: #f8d3d3; }
tr.not-measured td.status { background: #eeeeee; color: #555; }
.note { color: #555; font-size: .92em; } pre { background: #f7f7f7; padding: .8em;
       overflow-x: auto; font-size: .82em; border: 1px solid #e4e4e4; }
.meta td, .meta th { text-align: left; }
"""


@dataclass
class Plot:
    """One figure of a section: an id (for the page and its test), a caption, PNG bytes."""

    id: str
    caption: str
    png: bytes


@dataclass
class Section:
    """A section of the page: a title, an introduction, figures, tables (as HTML), notes."""

    id: str
    title: str
    intro: str = ""
    figures: list[Plot] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def figure_png(fig: Figure) -> bytes:
    """The PNG bytes of a matplotlib figure (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def table_html(df: pd.DataFrame, *, text_columns: tuple[str, ...] = (), row_class: str | None = None,
               status_column: str | None = None, floatfmt: str = "{:.4g}") -> str:
    """A DataFrame as an HTML table; ``row_class`` names a column whose value (spaces as
    dashes) becomes each row's class, ``status_column`` gets the class ``status``."""
    import math

    cols = [c for c in df.columns if c != row_class or c == status_column]
    head = "".join(f'<th class="{"text" if c in text_columns else ""}">{html.escape(str(c))}</th>' for c in cols)
    rows = []
    for _, r in df.iterrows():
        cls = f' class="{html.escape(str(r[row_class]).replace(" ", "-"))}"' if row_class else ""
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                s = "" if math.isnan(v) else ("∞" if v == math.inf else "−∞" if v == -math.inf else floatfmt.format(v))
            else:
                s = "" if v is None else str(v)
            klass = " ".join(k for k in ("text" if c in text_columns else "", "status" if c == status_column else "") if k)
            cells.append(f'<td class="{klass}">{html.escape(s)}</td>')
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def render_page(title: str, subtitle: str, meta: dict[str, Any], sections: list[Section]) -> str:
    """The whole page as one string."""
    esc = html.escape
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    meta_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in meta.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1><p class=\"note\">{esc(subtitle)}</p>",
        f'<table class="meta">{meta_rows}</table>',
        f"<nav><ol>{toc}</ol></nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>')
        if s.intro:
            parts.append(f"<p>{esc(s.intro)}</p>")
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f'<figure id="{esc(f.id)}"><img alt="{esc(f.caption)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>{esc(f.caption)}</figcaption></figure>')
        parts.extend(s.tables)
        parts.extend(f'<p class="note">{esc(n)}</p>' for n in s.notes)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
