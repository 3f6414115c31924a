"""One self-contained HTML page of plotly figures: plotly.js is embedded once, inline, so the
report opens offline and can be mailed as a single file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
nav a { margin-right: 1rem; }
section { margin: 2.5rem 0; }
.muted, .caption { color: #666; }
table.kv { border-collapse: collapse; font-size: 0.9rem; }
table.kv th, table.kv td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.8rem; text-align: left; vertical-align: top; }
table.kv td { font-family: ui-monospace, monospace; word-break: break-all; }
pre { background: #f6f8fa; padding: 1rem; overflow: auto; max-height: 40rem; }
"""


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report: ``key`` becomes its div id (``figure-{key}``)."""

    key: str
    title: str
    figure: go.Figure
    caption: str = ""


def figure_div_id(key: str) -> str:
    return "figure-" + re.sub(r"[^A-Za-z0-9_-]", "-", key)


def _figure_section(item: ReportFigure) -> str:
    div = pio.to_html(
        item.figure,
        include_plotlyjs=False,
        full_html=False,
        div_id=figure_div_id(item.key),
        config={"displaylogo": False},
    )
    caption = f"<p class='caption'>{escape(item.caption)}</p>" if item.caption else ""
    return f"<section id='section-{escape(item.key)}'><h2>{escape(item.title)}</h2>{caption}{div}</section>"


def render_html_report(
    title: str, figures: list[ReportFigure], provenance_html: str, subtitle: str = ""
) -> str:
    """The whole page: a table of contents, every figure in order, then the provenance."""
    nav = (
        "".join(f"<a href='#section-{escape(f.key)}'>{escape(f.title)}</a>" for f in figures)
        + "<a href='#provenance'>Provenance</a>"
    )
    sections = "\n".join(_figure_section(f) for f in figures)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>\n<body>"
        f"<h1>{escape(title)}</h1><p class='muted'>{escape(subtitle)}</p><nav>{nav}</nav>\n{sections}\n"
        f"<section id='provenance'><h2>Provenance</h2>{provenance_html}</section>\n</body></html>\n"
    )
