"""A report as one self-contained HTML file: it opens offline, in any browser, with its plots interactive.

plotly.js is inlined once, in the first plot; every later plot uses it. Nothing
else is fetched: the styles are inline, and no tag names an outside address.
Every text from the model or the folder is escaped.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

from quantcore.report.contents import Report, Section, Table

NOT_THERE = "—"
# Long tables (a row per sample) are folded, so the plots stay in view; the ZIP has them in full either way.
FOLD_ROWS = 60
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 80rem; padding: 0 1rem; color: #1f2328; }
h1 { margin-bottom: 0.2rem; } .about { color: #59636e; margin-top: 0; }
.status { border-left: 4px solid #0969da; background: #f6f8fa; padding: 0.5rem 1rem; }
table.qp-table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
table.qp-table th, table.qp-table td { border: 1px solid #d1d9e0; padding: 0.2rem 0.5rem; text-align: left; }
table.qp-table th { background: #f6f8fa; position: sticky; top: 0; }
.scroll { overflow-x: auto; max-height: 40rem; overflow-y: auto; }
section { margin-top: 2.5rem; } .notes li { margin: 0.15rem 0; }
details > summary { cursor: pointer; color: #0969da; margin: 0.5rem 0; }
pre { background: #f6f8fa; padding: 1rem; overflow: auto; font-size: 0.8rem; }
"""

_BOLD = re.compile(r"(?<!\\)\*\*(.+?)(?<!\\)\*\*")
_BACKSLASHED = re.compile(r"\\(.)")


def _inline(markdown: str) -> str:
    """One line of the app's status Markdown as HTML: ``**bold**`` kept, every other character as text."""
    parts = _BOLD.split(markdown)
    out = []
    for i, part in enumerate(parts):
        # The app escapes Markdown with backslashes and HTML with entities: undo both, then escape once here.
        text = html.escape(html.unescape(_BACKSLASHED.sub(r"\1", part)), quote=False)
        out.append(f"<strong>{text}</strong>" if i % 2 else text)
    return "".join(out)


def markdown_html(markdown: str) -> str:
    """The status's Markdown (paragraphs, ``- `` bullets, ``**bold**``) as HTML."""
    blocks, items = [], []
    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("- "):
            items.append(f"<li>{_inline(stripped[2:])}</li>")
            continue
        if items:
            blocks.append(f"<ul>{''.join(items)}</ul>")
            items = []
        if stripped:
            blocks.append(f"<p>{_inline(stripped)}</p>")
    if items:
        blocks.append(f"<ul>{''.join(items)}</ul>")
    return "\n".join(blocks)


def cell_text(value: Any) -> str:
    """A table value as the report shows it (``None`` as "—")."""
    return NOT_THERE if value is None else str(value)


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every column of the rows, in first-seen order."""
    return list(dict.fromkeys(name for row in rows for name in row))


def table_html(table: Table, section: str) -> str:
    """A table with its title; ``data-table`` names it as its ZIP file does (``section/key``)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns(table.rows))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell_text(row.get(c)))}</td>" for c in columns(table.rows)) + "</tr>"
        for row in table.rows
    )
    name = html.escape(f"{section}/{table.key}")
    title = f"<h3>{html.escape(table.title)}</h3>"
    if not table.rows:
        return f'{title}<p class="empty" data-table="{name}">No rows.</p>'
    grid = (f'<div class="scroll"><table class="qp-table" data-table="{name}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")  # fmt: skip
    if len(table.rows) > FOLD_ROWS:
        return f"{title}<details><summary>{len(table.rows):,} rows (show)</summary>{grid}</details>"
    return title + grid


class _Plots:
    """Plot HTML, plotly.js inlined in the first only."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, figure: Any) -> str:
        first = self.count == 0
        self.count += 1
        return figure.to_html(full_html=False, include_plotlyjs=first, config=PLOT_CONFIG,
                              div_id=f"qp-plot-{self.count}", default_height="480px")  # fmt: skip


def _notes(notes: tuple[str, ...]) -> str:
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"


def _section(section: Section, plots: _Plots) -> str:
    parts = [f'<section id="{html.escape(section.key)}"><h2>{html.escape(section.title)}</h2>', _notes(section.notes)]
    parts += [f'<div class="plot">{plots(f)}</div>' for f in section.figures]
    parts += [table_html(t, section.key) for t in section.tables]
    return "\n".join(parts) + "</section>"


def _about(report: Report) -> str:
    machine = ", ".join(f"{k} {v}" for k, v in report.machine.items())
    libraries = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    return (f'<p class="about" id="qp-about">Source <strong>{html.escape(report.source)}</strong> · '
            f'made {html.escape(report.created)}<br>Machine: {html.escape(machine)}<br>'
            f"Libraries: {html.escape(libraries)}</p>")  # fmt: skip


def report_html(report: Report) -> str:
    """The whole report as one HTML document (plotly.js inlined once; no outside addresses).

    Args:
        report: what to show (``contents.computed_report`` or ``contents.standard_report``).

    Returns:
        The HTML text.
    """
    plots = _Plots()
    title = f"{report.model} — quantization report"
    sections = "\n".join(_section(s, plots) for s in report.sections)
    summary = html.escape(json.dumps(report.summary, indent=2, ensure_ascii=False, default=str))
    contents = "".join(f'<li><a href="#{html.escape(s.key)}">{html.escape(s.title)}</a></li>' for s in report.sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
{_about(report)}
<div class="status" id="qp-status">{markdown_html(report.status)}</div>
<section id="overview">{table_html(report.variants, "overview")}</section>
<nav><h2>Views</h2><ul>{contents or "<li>No views computed yet.</li>"}</ul></nav>
{sections}
<section id="summary"><details><summary>Summary (JSON)</summary><pre>{summary}</pre></details></section>
</body></html>
"""


def write_html(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write ``report_html(report)`` to ``path`` (UTF-8); returns the path."""
    target = Path(path)
    target.write_text(report_html(report), encoding="utf-8")
    return target
