"""A report's tables as a ZIP: ``<section>/<table>.csv`` and ``.json`` for each, the summary and what made them.

The CSVs hold the very rows the HTML shows (an empty cell where it shows "—"),
for a spreadsheet; the JSON keeps numbers as numbers, for a script.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from quantcore.report.contents import Report, Table
from quantcore.report.html import columns

ABOUT_NAME = "report.json"


def table_csv(table: Table) -> str:
    """One table as CSV text: a header of every column, then a line per row (``None`` as an empty cell)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(table.rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in table.rows)
    return out.getvalue()


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n"


def tables_zip(report: Report) -> bytes:
    """Every table of the report as CSV and JSON, with ``summary.json`` and ``report.json`` (model, time,
    machine, versions, and which file holds which table).

    Args:
        report: the report whose tables to pack.

    Returns:
        The ZIP archive's bytes.
    """
    buffer = io.BytesIO()
    index = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for section, table in report.all_tables():
            stem = f"{section}/{table.key}"
            archive.writestr(f"{stem}.csv", table_csv(table))
            archive.writestr(f"{stem}.json", _json(table.rows))
            index.append({"file": f"{stem}.csv", "title": table.title, "rows": len(table.rows)})
        archive.writestr("summary.json", _json(report.summary))
        about = {"model": report.model, "source": report.source, "created": report.created,
                 "machine": report.machine, "versions": report.versions, "tables": index}  # fmt: skip
        archive.writestr(ABOUT_NAME, _json(about))
    return buffer.getvalue()


def write_zip(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write ``tables_zip(report)`` to ``path``; returns the path."""
    target = Path(path)
    target.write_bytes(tables_zip(report))
    return target
