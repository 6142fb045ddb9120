"""The downloadable report: one offline HTML file and a ZIP of its tables, from the core and the command line.

The numbers in it are checked against independent computations: file sizes
from the file system, top-1 classes and probabilities from onnxruntime run
directly on the samples, the per-layer error from the core's own function
(itself checked against onnxruntime's qdq_loss_debug in test_drift.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from quantcore import load_model_variants
from quantcore.__main__ import main
from quantcore.inspect.drift import DEFAULT_BATCH_SIZE, cached_layer_drift
from quantcore.inspect.layer_table import layer_table
from quantcore.load import results_cache
from quantcore.report import tables
from quantcore.report.archive import table_csv, tables_zip
from quantcore.report.contents import Report, computed_report, standard_report
from quantcore.report.html import NOT_THERE, markdown_html, report_html

BUNDLED = Path(__file__).resolve().parent.parent / "models" / "resnet8"
FILES = {"onnx_float": "resnet8.onnx", "onnx_int8": "resnet8_int8.onnx", "onnx_uint8": "resnet8_uint8.onnx",
         "pytorch_float": "resnet8.pt", "pytorch_int8": "resnet8_int8.pt"}  # fmt: skip
IMAGES, RUNS = 32, 2


class ReportParser(HTMLParser):
    """Every tag's attributes, every script's text, and every ``data-table`` table as rows of cell text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table" and attributes.get("data-table"):
            self._table = attributes["data-table"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_script:
            self.scripts[-1] += data


def parse(text: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    return parser


def records(grid: list[list[str]]) -> list[dict[str, str]]:
    head, *body = grid
    return [dict(zip(head, row, strict=True)) for row in body]


@pytest.fixture(scope="module")
def report() -> Report:
    missing = [name for name in FILES.values() if not (BUNDLED / name).is_file()]
    if missing:
        pytest.fail(f"bundled models incomplete: {BUNDLED} lacks {', '.join(missing)}", pytrace=False)
    results_cache.cache_clear()
    return standard_report(load_model_variants(BUNDLED), images=IMAGES, runs=RUNS)


@pytest.fixture(scope="module")
def page(report: Report) -> ReportParser:
    return parse(report_html(report))


def test_every_standard_view_is_in_the_report(report: Report) -> None:
    keys = [s.key for s in report.sections]
    assert keys == [f"layer_error_{IMAGES}", "scorecard_samples", "predictions", "layers", "weights"]
    assert not [s for s in report.sections if any(n.startswith("not included") for n in s.notes)]


def test_html_is_offline_and_inlines_plotly_once(report: Report, page: ReportParser) -> None:
    for tag, attributes in page.tags:
        for name in ("src", "href", "srcset", "action", "data"):
            value = attributes.get(name) or ""
            assert not value or value.startswith("#"), f"<{tag} {name}={value!r}> would reach outside the file"
    assert [t for t, _ in page.tags if t in ("link", "iframe", "img", "object", "embed")] == []
    bundles = [s for s in page.scripts if "plotly.js v" in s[:2000]]
    assert len(bundles) == 1 and len(bundles[0]) > 1_000_000  # the library itself, inlined, once
    figures = sum(len(s.figures) for s in report.sections)
    plots = [a for t, a in page.tags if t == "div" and (a.get("id") or "").startswith("qp-plot-")]
    assert figures == len(plots) == 1 + 1 + len(layer_table(load_model_variants(BUNDLED)).rows)


def test_variant_table_matches_the_files(page: ReportParser) -> None:
    rows = records(page.tables["overview/variants"])
    assert [r["variant"] for r in rows] == list(FILES)
    for row in rows:
        assert row["status"] == "loaded"
        assert float(row["size (KB)"]) == round(os.path.getsize(BUNDLED / FILES[row["variant"]]) / 1024, 1)
    # The same weights counted two ways: ONNX initializers, and TorchScript's packed int8 weights.
    counts = {r["variant"]: int(r["parameters"]) for r in rows}
    assert counts["pytorch_int8"] == counts["onnx_int8"] == counts["onnx_float"]
    card = json.loads((BUNDLED / "model_card.json").read_text())
    int8 = next(r for r in rows if r["variant"] == "onnx_int8")
    assert float(int8["accuracy (%)"]) == round(100 * card["variants"]["onnx_int8"]["test"]["accuracy"], 2)


def test_top1_predictions_match_onnxruntime(page: ReportParser) -> None:
    import onnxruntime as ort

    samples = np.load(BUNDLED / "samples.npz")
    names = [str(n) for n in samples["label_names"]]
    rows = records(page.tables["predictions/top1"])
    assert len(rows) == len(samples["labels"])
    for key in ("onnx_float", "onnx_int8", "onnx_uint8"):
        session = ort.InferenceSession(str(BUNDLED / FILES[key]), providers=["CPUExecutionProvider"])
        # The model card's preprocessing: x = uint8_pixels / 255, NCHW.
        logits = session.run(None, {"input": samples["images"].astype(np.float32) / 255})[0]
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        top = probs.argmax(1)
        assert [r[key] for r in rows] == [names[i] for i in top]
        shown = np.array([float(r[f"{key} (%)"]) for r in rows])
        assert np.abs(shown - 100 * probs[np.arange(len(top)), top]).max() <= 0.006
    assert [r["label"] for r in rows] == [names[i] for i in samples["labels"]]


def test_flips_are_the_disagreements_with_float(page: ReportParser) -> None:
    top1 = records(page.tables["predictions/top1"])
    flips = records(page.tables["predictions/flips"])
    counts = {r["variant"]: int(r["flips"]) for r in records(page.tables["predictions/flip_counts"])}
    for key, ref in (("onnx_int8", "onnx_float"), ("onnx_uint8", "onnx_float"), ("pytorch_int8", "pytorch_float")):
        expected = [int(r["sample"]) for r in top1 if r[key] != r[ref]]
        assert [int(f["sample"]) for f in flips if f["variant"] == key] == expected
        assert counts[key] == len(expected)


def test_layer_error_numbers_are_the_cores(page: ReportParser) -> None:
    drift = cached_layer_drift(load_model_variants(BUNDLED), images=IMAGES, batch_size=DEFAULT_BATCH_SIZE)
    for name, rows in ((f"layer_error_{IMAGES}/per_variant", tables.drift_summary_rows(drift)),
                       (f"layer_error_{IMAGES}/per_layer", tables.drift_rows(drift))):  # fmt: skip
        shown = records(page.tables[name])
        assert shown == [{k: NOT_THERE if v is None else str(v) for k, v in row.items()} for row in rows]


def test_zip_csvs_equal_the_tables(report: Report, page: ReportParser) -> None:
    archive = zipfile.ZipFile(io.BytesIO(tables_zip(report)))
    for section, table in report.all_tables():
        with archive.open(f"{section}/{table.key}.csv") as file:
            rows = list(csv.DictReader(io.TextIOWrapper(file, encoding="utf-8")))
        assert rows == [{k: "" if v is None else str(v) for k, v in row.items()} for row in table.rows]
        assert json.loads(archive.read(f"{section}/{table.key}.json")) == json.loads(json.dumps(table.rows))
        if table.rows:  # the HTML shows the very same cells, "—" where the CSV leaves one empty
            assert records(page.tables[f"{section}/{table.key}"]) == [
                {k: NOT_THERE if v is None else str(v) for k, v in row.items()} for row in table.rows
            ]
    about = json.loads(archive.read("report.json"))
    assert about["model"] == "resnet8" and about["versions"]["onnxruntime"] and about["machine"]["cores"]
    assert json.loads(archive.read("summary.json"))["total_loaded"] == 5


def test_report_names_the_model_the_time_and_the_machine(report: Report) -> None:
    text = report_html(report)
    assert "resnet8 — quantization report" in text
    assert report.created[:4] in text and report.versions["onnxruntime"] in text and report.machine["cpu"] in text


def test_only_views_computed_so_far_are_reported() -> None:
    results_cache.cache_clear()
    variants = load_model_variants(BUNDLED)
    assert computed_report(variants).sections == ()
    layer_table(variants)
    assert [s.key for s in computed_report(variants).sections] == ["layers", "weights"]


def test_a_computed_integer_view_is_reported_as_the_core_makes_it() -> None:
    from quantcore.integer.view import cached_integer_view
    from quantcore.report import integer_tables

    results_cache.cache_clear()
    variants = load_model_variants(BUNDLED)
    integer = cached_integer_view(variants, images=8)
    report = computed_report(variants)
    assert [s.key for s in report.sections] == ["integer_8"]
    shown = records(parse(report_html(report)).tables["integer_8/layers"])
    assert shown == [{k: NOT_THERE if v is None else str(v) for k, v in row.items()}
                     for row in integer_tables.layer_rows(integer)]  # fmt: skip
    assert len(report.sections[0].figures) == 2


def test_status_markdown_is_escaped() -> None:
    shown = markdown_html("✔ **Loaded 5 of 5 from a\\_b &lt;script&gt;**\n\n- onnx_int8: **ok** <img src=x>")
    assert "<script>" not in shown and "<img" not in shown
    assert "<strong>Loaded 5 of 5 from a_b &lt;script&gt;</strong>" in shown
    assert "<li>onnx_int8: <strong>ok</strong> &lt;img src=x&gt;</li>" in shown


def test_csv_of_an_empty_table_is_empty() -> None:
    from quantcore.report.contents import Table

    assert table_csv(Table("t", "T", [])) == "\n"


def test_cli_writes_the_report(report: Report, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(BUNDLED), "-o", str(out), "--images", str(IMAGES), "--runs", str(RUNS)]) == 0
    text = out.read_text(encoding="utf-8")
    written = parse(text)
    assert "not included" not in text, [line for line in text.splitlines() if "not included" in line][:3]
    assert records(written.tables["overview/variants"]) == records(parse(report_html(report)).tables[
        "overview/variants"])  # fmt: skip
    with zipfile.ZipFile(out.with_suffix(".zip")) as archive:
        assert "predictions/top1.csv" in archive.namelist()


def test_cli_refuses_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r.html")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "r.html").exists()


def test_a_scorecard_on_a_full_test_set_is_reported_on_that_set(variant_folder: Path) -> None:
    from quantcore.evaluate.inputs import input_spec, load_test_set
    from quantcore.evaluate.scorecard import build_scorecard
    from tests.test_scorecard import write_fashion_test_set

    _, labels = write_fashion_test_set(variant_folder.parent / "data" / "fashion")
    results_cache.cache_clear()
    variants = load_model_variants(variant_folder)
    spec = input_spec(variants)
    card = build_scorecard(variants, load_test_set("data/fashion", spec), spec, runs=1)
    report = computed_report(load_model_variants(variant_folder))
    section = next(s for s in report.sections if s.key == "scorecard_test_set")
    assert section.title == f"Accuracy and speed on {card.source}" and card.images == len(labels)
    shown = {r["variant"]: r["correct"] for r in section.tables[0].rows}
    assert shown == {str(s.variant): s.correct for s in card.scores} and len(shown) == 5
    assert "predictions" not in [s.key for s in report.sections]  # the tiny folder has no samples.npz
