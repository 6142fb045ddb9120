"""The compare tabs beside the inspect tabs: Predictions, and Accuracy & speed.

Thin like ``inspect_views``: each handler works out the loaded folder from the
summary the page (or an API script) holds, calls quantcore, and shapes the
result for display. Named endpoints for scripts take that summary (or a folder
name relative to the models root) and return plain JSON:

    /predict    (source, sample, image, k, invert) -> every variant's top-k for a sample or an uploaded image
    /flips      (source, limit)                    -> samples where a quantized variant flips float's top-1
    /scorecard  (source, test_set, runs)           -> accuracy, per-class, agreement, size and images/s table
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app import render
from gradio_app.inspect_views import (
    DRIFT_EVENTS,
    INSPECT_EVENTS,
    NOTHING_LOADED,
    _api,
    _failure,
    _note,
    _NothingLoaded,
    variants_from,
)
from quantcore import QuantcoreError
from quantcore.data.test_sets import data_roots, find_test_sets
from quantcore.evaluate.flips import FlipReport, find_flips
from quantcore.evaluate.images import image_to_pixels, pixels_to_picture
from quantcore.evaluate.inputs import InputSpec, SampleSet, folder_samples, input_spec, load_test_set
from quantcore.evaluate.predictions import DEFAULT_TOP_K, MAX_TOP_K, Prediction, predict_image
from quantcore.evaluate.predictions import variant_logits as _variant_logits
from quantcore.evaluate.scorecard import Scorecard, build_scorecard, scorecard_figure
from quantcore.evaluate.speed import DEFAULT_RUNS, MAX_RUNS
from quantcore.load import ModelVariants
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

GALLERY_SIZE = 40
FLIPS_SHOWN = 200
PICTURE_SCALE = 4
INVERT_CHOICES = ("auto", "yes", "no")
FLIP_CSS = "background-color: #fcd9dc; font-weight: 600"
SAMPLES_NOTE = "Pick a sample below, type its number, or upload an image."


@dataclass(frozen=True)
class CompareViews:
    """The components of the two tabs (for tests and for wiring more views in)."""

    pred_note: gr.Markdown
    gallery: gr.Gallery
    sample: gr.Number
    predict: gr.Button
    upload: gr.Image
    top_k: gr.Slider
    invert: gr.Radio
    seen: gr.Image
    pred_table: gr.Dataframe
    flips_run: gr.Button
    flips_note: gr.Markdown
    flips_table: gr.Dataframe
    test_set: gr.Dropdown
    runs: gr.Slider
    score_run: gr.Button
    score_note: gr.Markdown
    score_plot: gr.Plot
    score_table: gr.Dataframe
    score_classes: gr.Dataframe


# ------------------------------------------------------------------- context


@dataclass(frozen=True)
class _Folder:
    variants: ModelVariants
    spec: InputSpec
    samples: SampleSet | None
    notes: tuple[str, ...]


def _folder(source: Any) -> _Folder:
    variants = variants_from(source)

    def describe() -> tuple[InputSpec, SampleSet | None, tuple[str, ...]]:
        spec = input_spec(variants)
        samples, notes = folder_samples(variants, spec)
        return spec, samples, (*spec.notes, *notes)

    spec, samples, notes = cached(variants, "model_input", (), describe)[0]
    return _Folder(variants, spec, samples, notes)


def _count(value: Any, default: int, low: int, high: int, what: str) -> int:
    """A whole number a client sent, within [low, high]."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{what} must be a whole number")
    if not low <= int(value) <= high:
        raise ValueError(f"{what} must be between {low} and {high}, got {int(value)}")
    return int(value)


def _invert(choice: Any) -> bool | None:
    if choice in (None, "", "auto"):
        return None
    if choice in ("yes", True):
        return True
    if choice in ("no", False):
        return False
    raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}")


# --------------------------------------------------------------- predictions


def _predict(folder: _Folder, sample: Any, image: Any, k: Any, invert: Any) -> Prediction:
    """One image's predictions: the uploaded ``image`` (a file path) if given, else sample number ``sample``."""
    top = _count(k, DEFAULT_TOP_K, 1, MAX_TOP_K, "k")
    if image:
        pixels, notes = image_to_pixels(str(image), folder.spec, invert=_invert(invert))
        names = folder.samples.label_names if folder.samples is not None else None
        result = predict_image(folder.variants, pixels, folder.spec, k=top, label_names=names, source="uploaded image")
        return Prediction(result.source, result.pixels, None, None, result.variants, (*notes, *result.notes))
    samples = folder.samples
    if samples is None:
        raise ValueError(f"this folder has no samples to pick from ({'; '.join(folder.notes)}); upload an image")
    index = _count(sample, 0, 0, len(samples) - 1, "sample")
    label = int(samples.labels[index]) if samples.labels is not None else None
    return predict_image(
        folder.variants, samples.images[index], folder.spec, k=top, label=label,
        label_names=samples.label_names, source=f"sample #{index}",
    )  # fmt: skip


def predict_api(source: Any, sample: Any = 0, image: Any = None, k: Any = DEFAULT_TOP_K, invert: Any = "auto") -> dict:
    """Every variant's top-k for a sample (by number) or an uploaded image (API: /predict)."""
    try:
        return _predict(_folder(source), sample, image, k, invert).as_dict()
    except (_NothingLoaded, QuantcoreError, ValueError) as exc:
        return {"error": str(exc) or NOTHING_LOADED}


def _flip_styler(frame: pd.DataFrame) -> Any:
    def style(column: pd.Series) -> list[str]:
        return [FLIP_CSS if isinstance(v, str) and "FLIPS" in v else "" for v in column]

    return frame.style.apply(style, axis=0)


def _prediction_outputs(result: Prediction) -> tuple[Any, Any, Any]:
    flipped = [str(p.variant) for p in result.variants if p.agrees is False]
    truth = f" — label: {result.label_name}" if result.label_name else ""
    title = f"{result.source}{truth}"
    if flipped:
        title += f" — flipped by {', '.join(flipped)}"
    elif any(p.agrees for p in result.variants):
        title += " — every variant agrees with float"
    frame = pd.DataFrame(result.records())
    return (
        _note(list(result.notes), title),
        pixels_to_picture(result.pixels, scale=PICTURE_SCALE),
        _flip_styler(frame) if len(frame) else frame,
    )


def _prediction_page(source: Any, sample: Any, image: Any, k: Any, invert: Any,
                     progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 # fmt: skip
    try:
        progress(0.1, desc="Running every variant")
        return _prediction_outputs(_predict(_folder(source), sample, image, k, invert))
    except Exception as exc:  # shown in the note: a handler never raises
        return _failure(exc, "the predictions"), None, pd.DataFrame()


def _sample_page(source: Any, sample: Any, k: Any, invert: Any, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
    return _prediction_page(source, sample, None, k, invert, progress)


def _upload_page(source: Any, image: Any, k: Any, invert: Any, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
    if not image:
        return gr.skip(), gr.skip(), gr.skip()
    return _prediction_page(source, None, image, k, invert, progress)


def _gallery_page(source: Any) -> tuple[Any, ...]:
    """Thumbnails of the first samples, and the note saying how to pick one."""
    try:
        folder = _folder(source)
    except Exception as exc:  # shown in the note: a handler never raises
        return [], _failure(exc, "the samples"), None, pd.DataFrame(), gr.Number(value=0)
    samples = folder.samples
    if samples is None:
        return [], _note([*folder.notes, "Upload an image to see every variant's prediction."], "No samples"), None, \
            pd.DataFrame(), gr.Number(value=0)  # fmt: skip
    names = samples.label_names
    thumbs = [
        (pixels_to_picture(samples.images[i], scale=2),
         f"#{i} {names[int(samples.labels[i])]}" if samples.labels is not None else f"#{i}")
        for i in range(min(GALLERY_SIZE, len(samples)))
    ]  # fmt: skip
    note = _note([*folder.notes, f"{samples.description}; the first {len(thumbs)} are shown."], SAMPLES_NOTE)
    return thumbs, note, None, pd.DataFrame(), gr.Number(value=0, maximum=len(samples) - 1)


def _pick_from_gallery(source: Any, k: Any, invert: Any, evt: gr.SelectData) -> tuple[Any, ...]:
    index = evt.index if isinstance(evt.index, int) else 0
    return (index, *_prediction_page(source, index, None, k, invert))


def _flip_report(folder: _Folder, progress: Any = None) -> FlipReport:
    if folder.samples is None:
        raise ValueError(f"no samples to look for flips in ({'; '.join(folder.notes)})")
    outputs = _variant_logits(folder.variants, folder.samples, folder.spec, progress=progress)
    return find_flips(outputs, folder.samples)


def flips_api(source: Any, limit: Any = FLIPS_SHOWN) -> dict:
    """The samples on which a quantized variant's top-1 differs from its float reference's (API: /flips)."""
    try:
        shown = _count(limit, FLIPS_SHOWN, 0, 100_000, "limit")
        return _flip_report(_folder(source)).as_dict(shown)
    except (_NothingLoaded, QuantcoreError, ValueError) as exc:
        return {"error": str(exc) or NOTHING_LOADED}


def _flips_page(source: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    try:
        report = _flip_report(_folder(source), lambda fraction, message: progress(fraction, desc=message))
    except Exception as exc:  # shown in the note: a handler never raises
        return _failure(exc, "the flip search"), pd.DataFrame()
    counts = ", ".join(f"{k} {n}" for k, n in report.counts().items()) or "nothing to compare"
    shown = min(len(report.flips), FLIPS_SHOWN)
    lines = [f"Flips per variant: {counts}.", *report.notes]
    if len(report.flips) > shown:
        lines.append(f"The first {shown} of {len(report.flips)} are listed.")
    if report.flips:
        lines.append("Click a row to see that sample's predictions.")
    title = f"{len(report.samples())} of {report.images} samples flipped by a quantized variant"
    return _note(lines, title), pd.DataFrame(report.records(shown))


def _pick_flip(source: Any, k: Any, invert: Any, evt: gr.SelectData) -> tuple[Any, ...]:
    row = evt.row_value or []
    if not row:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return (row[0], *_prediction_page(source, row[0], None, k, invert))


# ------------------------------------------------------------ accuracy & speed


def _scorecard(source: Any, test_set: Any, runs: Any, progress: Any = None) -> Scorecard:
    count = _count(runs, DEFAULT_RUNS, 1, MAX_RUNS, "runs")
    folder = _folder(source)
    if isinstance(test_set, str) and test_set.strip():
        samples = load_test_set(test_set.strip(), folder.spec)
    elif test_set not in (None, ""):
        raise ValueError("test_set must be a folder path")
    elif folder.samples is None:
        raise ValueError(f"no samples.npz to measure on ({'; '.join(folder.notes)}); name a full test set folder")
    else:
        samples = folder.samples
    return build_scorecard(folder.variants, samples, folder.spec, runs=count, progress=progress)


def scorecard_api(source: Any, test_set: Any = "", runs: Any = DEFAULT_RUNS) -> dict:
    """Accuracy, per-class accuracy, agreement with float, file size and images/s per variant (API: /scorecard)."""
    try:
        return _scorecard(source, test_set, runs).as_dict()
    except (_NothingLoaded, QuantcoreError, ValueError) as exc:
        return {"error": str(exc) or NOTHING_LOADED}


def _fastest(card: Scorecard) -> list[str]:
    lines = []
    for batch in (1, 64):
        timed = [s for s in card.scores if batch in s.images_per_second]
        if timed:
            best = max(timed, key=lambda s: s.images_per_second[batch])
            lines.append(f"Fastest at batch {batch}: {best.variant} ({best.images_per_second[batch]:,.0f} images/s).")
    return lines


def _scorecard_page(source: Any, test_set: Any, runs: Any,
                    progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 # fmt: skip
    try:
        progress(0.0, desc="Loading the images")
        card = _scorecard(source, test_set, runs, lambda fraction, message: progress(fraction, desc=message))
    except Exception as exc:  # shown in the note: a handler never raises
        return gr.Markdown(_failure(exc, "the accuracy and speed run"), elem_classes=[]), None, pd.DataFrame(), \
            pd.DataFrame()  # fmt: skip
    advice = [line for a in card.advice for line in (a.finding, a.suggestion) if line]
    lines = [*advice, *_fastest(card),
             f"Speed: fastest of {card.speeds.runs} runs per batch size (the least disturbed), variants taking turns, "
             f"{card.speeds.threads} threads, on {card.speeds.source}.", *card.notes]  # fmt: skip
    title = f"Accuracy and speed on {card.source}"
    status = render.Kind.WARNING if card.advice else render.Kind.INFO
    if card.advice:
        title += " — a quantized variant is slower than float"
    return (
        gr.Markdown(_note(lines, title), elem_classes=["qp-status", f"qp-status-{status}"]),
        scorecard_figure(card),
        pd.DataFrame(card.records()),
        pd.DataFrame(card.per_class_records()),
    )


# -------------------------------------------------------------------- layout


def _test_set_choices() -> list[str]:
    try:
        return [str(p) for p in find_test_sets()]
    except OSError:
        return []


def build_compare_views(summary: gr.JSON) -> CompareViews:
    """The Predictions and Accuracy & speed tabs, wired to ``summary``, plus their named API endpoints.

    Call inside the page's ``gr.Tabs`` context (beside the inspect tabs), after ``summary`` exists.
    """
    with gr.Tab("Predictions", id="predictions"):
        pred_note = gr.Markdown(render.info(NOTHING_LOADED).markdown, elem_id="qp-pred-note")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Samples (click one)", columns=6, height=320, allow_preview=False,
                                     format="png", elem_id="qp-pred-gallery")  # fmt: skip
                with gr.Row():
                    sample = gr.Number(label="Sample #", value=0, precision=0, minimum=0, elem_id="qp-pred-sample")
                    top_k = gr.Slider(1, MAX_TOP_K, value=DEFAULT_TOP_K, step=1, label="Top-k")
                    predict = gr.Button("Predict this sample", variant="primary", elem_id="qp-pred-run")
            with gr.Column(scale=2):
                upload = gr.Image(label="…or upload an image", type="filepath", sources=["upload", "clipboard"],
                                  height=200, elem_id="qp-pred-upload")  # fmt: skip
                invert = gr.Radio(list(INVERT_CHOICES), value="auto", label="Invert a light background")
        with gr.Row(equal_height=False):
            seen = gr.Image(label="What the models see", type="numpy", interactive=False, height=160,
                            elem_id="qp-pred-seen", scale=1)  # fmt: skip
            pred_table = gr.Dataframe(label="Top-k per variant, side by side", interactive=False,
                                      elem_id="qp-pred-table", scale=4)  # fmt: skip
        with gr.Row():
            flips_run = gr.Button("Find flipped predictions in the samples", elem_id="qp-flips-run")
        flips_note = gr.Markdown(elem_id="qp-flips-note")
        flips_table = gr.Dataframe(label="Samples where a quantized variant flips float's prediction (click a row)",
                                   interactive=False, elem_id="qp-flips-table", max_height=360)  # fmt: skip
    with gr.Tab("Accuracy & speed", id="scorecard"):
        with gr.Row():
            test_set = gr.Dropdown(
                choices=["", *_test_set_choices()], value="", allow_custom_value=True, scale=3,
                label="Full test set (optional; default: the folder's samples.npz)",
                info="A Fashion-MNIST IDX or cifar-10-batches-py folder under "
                     + " or ".join(str(r) for r in data_roots()),
                elem_id="qp-score-test-set",
            )  # fmt: skip
            runs = gr.Slider(5, MAX_RUNS, value=DEFAULT_RUNS, step=5, label="Timed runs per batch size", scale=2)
            score_run = gr.Button("Measure accuracy and speed", variant="primary", elem_id="qp-score-run", scale=1)
        score_note = gr.Markdown(elem_id="qp-score-note")
        score_plot = gr.Plot(label="Accuracy and speed", elem_id="qp-score-plot")
        score_table = gr.Dataframe(label="Per variant", interactive=False, elem_id="qp-score-table")
        score_classes = gr.Dataframe(label="Per-class accuracy (%)", interactive=False, elem_id="qp-score-classes")
        views = CompareViews(
            pred_note, gallery, sample, predict, upload, top_k, invert, seen, pred_table, flips_run, flips_note,
            flips_table, test_set, runs, score_run, score_note, score_plot, score_table, score_classes,
        )  # fmt: skip
        # Inside a tab: a Tabs block holds tabs only, and the endpoints' hidden inputs must live somewhere.
        _wire(summary, views)
    return views


def _wire(summary: gr.JSON, v: CompareViews) -> None:
    private: dict[str, Any] = {"api_visibility": "private", **INSPECT_EVENTS}
    pred_outputs = [v.pred_note, v.seen, v.pred_table]
    summary.change(_gallery_page, summary, [v.gallery, *pred_outputs, v.sample], api_name="page_samples", **private)
    v.predict.click(_sample_page, [summary, v.sample, v.top_k, v.invert], pred_outputs, api_name="page_predict",
                    **private)  # fmt: skip
    v.sample.submit(_sample_page, [summary, v.sample, v.top_k, v.invert], pred_outputs,
                    api_name="page_predict_submit", **private)  # fmt: skip
    v.upload.upload(_upload_page, [summary, v.upload, v.top_k, v.invert], pred_outputs, api_name="page_upload",
                    **private)  # fmt: skip
    v.gallery.select(_pick_from_gallery, [summary, v.top_k, v.invert], [v.sample, *pred_outputs],
                     api_name="page_pick_sample", **private)  # fmt: skip
    heavy: dict[str, Any] = {"api_visibility": "private", **DRIFT_EVENTS}
    v.flips_run.click(_flips_page, summary, [v.flips_note, v.flips_table], api_name="page_flips", **heavy)
    v.flips_table.select(_pick_flip, [summary, v.top_k, v.invert], [v.sample, *pred_outputs],
                         api_name="page_pick_flip", **private)  # fmt: skip
    score_outputs = [v.score_note, v.score_plot, v.score_table, v.score_classes]
    v.score_run.click(_scorecard_page, [summary, v.test_set, v.runs], score_outputs, api_name="page_scorecard",
                      **heavy)  # fmt: skip
    # A new folder's flips and scores are not the old one's: clear them until the user runs them.
    summary.change(
        lambda: ("", pd.DataFrame(), gr.Markdown("", elem_classes=[]), None, pd.DataFrame(), pd.DataFrame()),
        None, [v.flips_note, v.flips_table, *score_outputs], api_name="page_compare_clear",
        api_visibility="private",
    )  # fmt: skip

    source = gr.JSON(visible=False)
    number, k = gr.Number(value=0, visible=False), gr.Number(value=DEFAULT_TOP_K, visible=False)
    image = gr.Image(type="filepath", visible=False)
    choice, folder = gr.Textbox(value="auto", visible=False), gr.Textbox(visible=False)
    limit, count = gr.Number(value=FLIPS_SHOWN, visible=False), gr.Number(value=DEFAULT_RUNS, visible=False)
    out = gr.JSON(visible=False)
    gr.Button(visible=False).click(_api(predict_api), [source, number, image, k, choice], out, api_name="predict",
                                   **INSPECT_EVENTS)  # fmt: skip
    gr.Button(visible=False).click(_api(flips_api), [source, limit], out, api_name="flips", **DRIFT_EVENTS)
    gr.Button(visible=False).click(_api(scorecard_api), [source, folder, count], out, api_name="scorecard",
                                   **DRIFT_EVENTS)  # fmt: skip
