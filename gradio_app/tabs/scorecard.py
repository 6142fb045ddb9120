"""The Accuracy & speed tab: accuracy, per-class accuracy, agreement with float, size and images/s per
variant, with advice when a quantized variant is slower than float.

API: ``/scorecard (source, test_set, runs)`` -> the table, per-class accuracy, speeds and advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app import render
from gradio_app.common import (
    HEAVY_EVENTS,
    PRIVATE,
    Page,
    api,
    hidden_endpoint,
    note,
    on_failure,
    progress_reporter,
    variants_for,
    whole_number,
)
from quantcore.data.test_sets import data_roots, find_test_sets
from quantcore.evaluate.inputs import folder_inputs, load_test_set
from quantcore.evaluate.scorecard import Scorecard, build_scorecard
from quantcore.evaluate.speed import BATCH_SIZES, DEFAULT_RUNS, MAX_RUNS
from quantcore.report import figures, tables

HINT = "Load a folder above, then measure every variant's accuracy on its samples (or a full test set) and its speed."


@dataclass(frozen=True)
class ScorecardTab:
    test_set: gr.Dropdown
    runs: gr.Slider
    run: gr.Button
    note: gr.Markdown
    plot: gr.Plot
    table: gr.Dataframe
    classes: gr.Dataframe


def _scorecard(source: Any, test_set: Any, runs: Any, progress: gr.Progress | None = None) -> Scorecard:
    count = whole_number(runs, DEFAULT_RUNS, 1, MAX_RUNS, "runs")
    variants = variants_for(source)
    inputs = folder_inputs(variants)
    if isinstance(test_set, str) and test_set.strip():
        samples = load_test_set(test_set.strip(), inputs.spec)
    elif test_set not in (None, ""):
        raise ValueError("test_set must be a folder path")
    elif inputs.samples is None:
        raise ValueError(f"no samples.npz to measure on ({'; '.join(inputs.notes)}); name a full test set folder")
    else:
        samples = inputs.samples
    report = progress_reporter(progress) if progress is not None else None
    return build_scorecard(variants, samples, inputs.spec, runs=count, progress=report)


def scorecard_api(source: Any, test_set: Any = "", runs: Any = DEFAULT_RUNS) -> dict:
    """Accuracy, per-class accuracy, agreement with float, file size and images/s per variant (API: /scorecard)."""
    return tables.scorecard_json(_scorecard(source, test_set, runs))


def _fastest(card: Scorecard) -> list[str]:
    lines = []
    for batch in BATCH_SIZES:
        timed = [s for s in card.scores if batch in s.images_per_second]
        if timed:
            best = max(timed, key=lambda s: s.images_per_second[batch])
            lines.append(f"Fastest at batch {batch}: {best.variant} ({best.images_per_second[batch]:,.0f} images/s).")
    return lines


def _hidden(message: str) -> tuple[Any, ...]:
    return (gr.Markdown(message, elem_classes=[]), gr.Plot(value=None, visible=False),
            gr.Dataframe(value=None, visible=False), gr.Dataframe(value=None, visible=False))  # fmt: skip


@on_failure("the accuracy and speed run", _hidden)
def _scorecard_page(source: Any, test_set: Any, runs: Any,
                    progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 # fmt: skip
    progress(0.0, desc="Loading the images")
    card = _scorecard(source, test_set, runs, progress)
    advice = [line for a in card.advice for line in (a.finding, a.suggestion) if line]
    lines = [*advice, *_fastest(card),
             f"Speed: fastest of {card.speeds.runs} runs per batch size (the least disturbed), variants taking turns, "
             f"{card.speeds.threads} threads, on {card.speeds.source}.", *card.notes]  # fmt: skip
    title = f"Accuracy and speed on {card.source}"
    kind = render.Kind.WARNING if card.advice else render.Kind.INFO
    if card.advice:
        title += " — a quantized variant is slower than float"
    return (
        gr.Markdown(note(lines, title), elem_classes=["qp-status", f"qp-status-{kind}"]),
        gr.Plot(value=figures.scorecard_figure(card), visible=True),
        gr.Dataframe(value=pd.DataFrame(tables.score_rows(card)), visible=True),
        gr.Dataframe(value=pd.DataFrame(tables.per_class_rows(card)), visible=True),
    )


def _test_set_choices() -> list[str]:
    try:
        return [str(p) for p in find_test_sets()]
    except OSError:
        return []


def build() -> ScorecardTab:
    """The tab's components (call inside its ``gr.Tab``)."""
    with gr.Row():
        test_set = gr.Dropdown(
            choices=["", *_test_set_choices()], value="", allow_custom_value=True, scale=3,
            label="Full test set (optional; default: the folder's samples.npz)",
            info="A Fashion-MNIST IDX or cifar-10-batches-py folder under " + " or ".join(map(str, data_roots())),
            elem_id="qp-score-test-set",
        )  # fmt: skip
        runs = gr.Slider(5, MAX_RUNS, value=DEFAULT_RUNS, step=5, label="Timed runs per batch size", scale=2)
        run = gr.Button("Measure accuracy and speed", variant="primary", elem_id="qp-score-run", scale=1)
    return ScorecardTab(
        test_set, runs, run,
        gr.Markdown(HINT, elem_id="qp-score-note"),
        gr.Plot(label="Accuracy and speed", elem_id="qp-score-plot", visible=False),
        gr.Dataframe(label="Per variant", interactive=False, elem_id="qp-score-table", visible=False),
        gr.Dataframe(label="Per-class accuracy (%)", interactive=False, elem_id="qp-score-classes", visible=False),
    )  # fmt: skip


def wire(page: Page, v: ScorecardTab) -> None:
    """Page events (private) and the /scorecard endpoint."""
    outputs = [v.note, v.plot, v.table, v.classes]
    v.run.click(_scorecard_page, [page.source, v.test_set, v.runs], outputs, api_name="page_scorecard", **PRIVATE,
                **HEAVY_EVENTS)  # fmt: skip
    # A new folder's scores are not the old one's: clear them until the user runs them.
    page.summary.change(lambda: _hidden(HINT), None, outputs, api_name="page_scorecard_clear", **PRIVATE)
    source, folder = gr.JSON(visible=False), gr.Textbox(visible=False)
    count = gr.Number(value=DEFAULT_RUNS, visible=False)
    hidden_endpoint(api(scorecard_api), [source, folder, count], gr.JSON(visible=False), "scorecard", HEAVY_EVENTS)
