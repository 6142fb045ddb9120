"""The Predictions tab: every variant's top-k for a sample or an uploaded image, and the samples a
quantized variant flips.

API: ``/predict (source, sample, image, k, invert)`` -> every variant's top-k for a sample or an uploaded image;
``/flips (source, limit)`` -> samples where a quantized variant flips float's top-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app.common import (
    HEAVY_EVENTS,
    PRIVATE,
    VIEW_EVENTS,
    Page,
    api,
    hidden_endpoint,
    note,
    on_failure,
    progress_reporter,
    variants_for,
    whole_number,
)
from gradio_app.uploads import RawImage
from quantcore.evaluate.flips import FlipReport, folder_flips
from quantcore.evaluate.images import image_to_pixels, pixels_to_picture
from quantcore.evaluate.inputs import FolderInputs, folder_inputs
from quantcore.evaluate.predictions import DEFAULT_TOP_K, MAX_TOP_K, Prediction, predict_image
from quantcore.load import ModelVariants
from quantcore.report import tables

GALLERY_SIZE = 40
FLIPS_SHOWN = 200
PICTURE_SCALE = 4
INVERT_CHOICES = ("auto", "yes", "no")
FLIP_CSS = "background-color: #fcd9dc; font-weight: 600"
SAMPLES_NOTE = "Pick a sample below, type its number, or upload an image."
HINT = "Load a folder above to see what every variant predicts for its samples, or for an image you upload."


@dataclass(frozen=True)
class PredictionsTab:
    note: gr.Markdown
    gallery: gr.Gallery
    sample: gr.Number
    predict: gr.Button
    upload: gr.Image
    top_k: gr.Slider
    invert: gr.Radio
    seen: gr.Image
    table: gr.Dataframe
    flips_run: gr.Button
    flips_note: gr.Markdown
    flips_table: gr.Dataframe


def _invert(choice: Any) -> bool | None:
    if choice in (None, "", "auto"):
        return None
    if choice in ("yes", True):
        return True
    if choice in ("no", False):
        return False
    raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}")


def _loaded(source: Any) -> tuple[ModelVariants, FolderInputs]:
    variants = variants_for(source)
    return variants, folder_inputs(variants)


def _predict(source: Any, sample: Any, image: Any, k: Any, invert: Any) -> Prediction:
    """One image's predictions: the uploaded ``image`` (a file path) if given, else sample number ``sample``."""
    variants, inputs = _loaded(source)
    top = whole_number(k, DEFAULT_TOP_K, 1, MAX_TOP_K, "k")
    if image:
        pixels, notes = image_to_pixels(str(image), inputs.spec, invert=_invert(invert))
        names = inputs.samples.label_names if inputs.samples is not None else None
        result = predict_image(variants, pixels, inputs.spec, k=top, label_names=names, source="uploaded image")
        return Prediction(result.source, result.pixels, None, None, result.variants, (*notes, *result.notes))
    samples = inputs.samples
    if samples is None:
        raise ValueError(f"this folder has no samples to pick from ({'; '.join(inputs.notes)}); upload an image")
    index = whole_number(sample, 0, 0, len(samples) - 1, "sample")
    label = int(samples.labels[index]) if samples.labels is not None else None
    return predict_image(
        variants, samples.picture(index), inputs.spec, k=top, label=label,
        label_names=samples.label_names, source=f"sample #{index}",
    )  # fmt: skip


def predict_api(source: Any, sample: Any = 0, image: Any = None, k: Any = DEFAULT_TOP_K, invert: Any = "auto") -> dict:
    """Every variant's top-k for a sample (by number) or an uploaded image (API: /predict)."""
    return _predict(source, sample, image, k, invert).as_dict()


def _flip_report(source: Any, progress: gr.Progress | None = None) -> FlipReport:
    variants, inputs = _loaded(source)
    if inputs.samples is None:
        raise ValueError(f"no samples to look for flips in ({'; '.join(inputs.notes)})")
    report = progress_reporter(progress) if progress is not None else None
    return folder_flips(variants, inputs.samples, inputs.spec, progress=report)


def flips_api(source: Any, limit: Any = FLIPS_SHOWN) -> dict:
    """The samples on which a quantized variant's top-1 differs from its float reference's (API: /flips)."""
    shown = whole_number(limit, FLIPS_SHOWN, 0, 100_000, "limit")
    return tables.flips_json(_flip_report(source), shown)


def flip_styler(frame: pd.DataFrame, result: Prediction) -> Any:
    """The side-by-side table with the agreement cell of every variant that flips marked."""
    flipped = {str(p.variant) for p in result.variants if p.agrees is False}

    def style(column: pd.Series) -> list[str]:
        return [FLIP_CSS if i == 0 and column.name in flipped else "" for i in range(len(column))]

    return frame.style.apply(style, axis=0)


def _prediction_outputs(result: Prediction) -> tuple[Any, Any, Any]:
    flipped = [str(p.variant) for p in result.variants if p.agrees is False]
    title = result.source + (f" — label: {result.label_name}" if result.label_name else "")
    if flipped:
        title += f" — flipped by {', '.join(flipped)}"
    elif any(p.agrees for p in result.variants):
        title += " — every variant agrees with float"
    frame = pd.DataFrame(tables.prediction_rows(result))
    return (
        note(list(result.notes), title),
        gr.Image(value=pixels_to_picture(result.pixels, scale=PICTURE_SCALE), visible=True),
        gr.Dataframe(value=flip_styler(frame, result) if len(frame) else frame, visible=len(frame) > 0),
    )


def _no_prediction(message: str) -> tuple[Any, ...]:
    return message, gr.Image(value=None, visible=False), gr.Dataframe(value=None, visible=False)


@on_failure("the predictions", _no_prediction)
def _prediction_page(source: Any, sample: Any, image: Any, k: Any, invert: Any,
                     progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 # fmt: skip
    progress(0.1, desc="Running every variant")
    return _prediction_outputs(_predict(source, sample, image, k, invert))


def _sample_page(source: Any, sample: Any, k: Any, invert: Any, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
    return _prediction_page(source, sample, None, k, invert, progress)


def _upload_page(source: Any, image: Any, k: Any, invert: Any, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
    if not image:
        return gr.skip(), gr.skip(), gr.skip()
    return _prediction_page(source, None, image, k, invert, progress)


def _no_gallery(message: str) -> tuple[Any, ...]:
    return (gr.Gallery(value=[], visible=False), *_no_prediction(message), gr.Number(value=0))


@on_failure("the samples", _no_gallery)
def _gallery_page(source: Any, link: Any = None) -> tuple[Any, ...]:
    """Thumbnails of the first samples, and the note saying how to pick one (or the sample a link asks for)."""
    _, inputs = _loaded(source)
    samples = inputs.samples
    if samples is None:
        return _no_gallery(note([*inputs.notes, "Upload an image to see every variant's prediction."], "No samples"))
    names = samples.label_names
    thumbs = [
        (pixels_to_picture(samples.picture(i), scale=2),
         f"#{i} {names[int(samples.labels[i])]}" if samples.labels is not None else f"#{i}")
        for i in range(min(GALLERY_SIZE, len(samples)))
    ]  # fmt: skip
    shown = note([*inputs.notes, f"{samples.description}; the first {len(thumbs)} are shown."], SAMPLES_NOTE)
    wanted = getattr(link, "sample", None)
    if wanted is not None:  # a link's sample: its predictions at once (an out-of-range one says so)
        predicted = _prediction_page(source, wanted, None, DEFAULT_TOP_K, "auto")
        return (gr.Gallery(value=thumbs, visible=True), *predicted,
                gr.Number(value=min(wanted, len(samples) - 1), maximum=len(samples) - 1))  # fmt: skip
    return (gr.Gallery(value=thumbs, visible=True), *_no_prediction(shown),
            gr.Number(value=0, maximum=len(samples) - 1))  # fmt: skip


def _pick_from_gallery(source: Any, k: Any, invert: Any, evt: gr.SelectData) -> tuple[Any, ...]:
    index = evt.index if isinstance(evt.index, int) else 0
    return (index, *_prediction_page(source, index, None, k, invert))


def _no_flips(message: str) -> tuple[Any, ...]:
    return message, gr.Dataframe(value=None, visible=False)


@on_failure("the flip search", _no_flips)
def _flips_page(source: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    report = _flip_report(source, progress)
    counts = ", ".join(f"{k} {n}" for k, n in report.counts().items()) or "nothing to compare"
    shown = min(len(report.flips), FLIPS_SHOWN)
    lines = [f"Flips per variant: {counts}.", *report.notes]
    if len(report.flips) > shown:
        lines.append(f"The first {shown} of {len(report.flips)} are listed.")
    if report.flips:
        lines.append("Click a row to see that sample's predictions.")
    title = f"{len(report.samples())} of {report.images} samples flipped by a quantized variant"
    return note(lines, title), gr.Dataframe(value=pd.DataFrame(tables.flip_rows(report, shown)),
                                            visible=bool(report.flips))  # fmt: skip


def _pick_flip(source: Any, k: Any, invert: Any, evt: gr.SelectData) -> tuple[Any, ...]:
    row = evt.row_value or []
    if not row:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return (row[0], *_prediction_page(source, row[0], None, k, invert))


def build() -> PredictionsTab:
    """The tab's components (call inside its ``gr.Tab``)."""
    pred_note = gr.Markdown(HINT, elem_id="qp-pred-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Samples (click one)", columns=6, height=320, allow_preview=False,
                                 format="png", elem_id="qp-pred-gallery", visible=False)  # fmt: skip
            with gr.Row():
                sample = gr.Number(label="Sample #", value=0, precision=0, minimum=0, elem_id="qp-pred-sample")
                top_k = gr.Slider(1, MAX_TOP_K, value=DEFAULT_TOP_K, step=1, label="Top-k")
                predict = gr.Button("Predict this sample", variant="primary", elem_id="qp-pred-run")
        with gr.Column(scale=2):
            upload = RawImage(label="…or upload an image", type="filepath", sources=["upload", "clipboard"],
                              height=200, elem_id="qp-pred-upload")  # fmt: skip
            invert = gr.Radio(list(INVERT_CHOICES), value="auto", label="Invert a light background")
    with gr.Row(equal_height=False):
        seen = gr.Image(label="What the models see", type="numpy", interactive=False, height=160,
                        elem_id="qp-pred-seen", scale=1, visible=False)  # fmt: skip
        table = gr.Dataframe(label="Top-k per variant, side by side", interactive=False, elem_id="qp-pred-table",
                             scale=4, visible=False)  # fmt: skip
    with gr.Row():
        flips_run = gr.Button("Find flipped predictions in the samples", elem_id="qp-flips-run")
    flips_note = gr.Markdown(elem_id="qp-flips-note")
    flips_table = gr.Dataframe(label="Samples where a quantized variant flips float's prediction (click a row)",
                               interactive=False, elem_id="qp-flips-table", max_height=360, visible=False)  # fmt: skip
    return PredictionsTab(pred_note, gallery, sample, predict, upload, top_k, invert, seen, table, flips_run,
                          flips_note, flips_table)  # fmt: skip


def wire(page: Page, v: PredictionsTab) -> None:
    """Page events (private) and the /predict and /flips endpoints."""
    light: dict[str, Any] = {**PRIVATE, **VIEW_EVENTS}
    outputs = [v.note, v.seen, v.table]
    page.summary.change(_gallery_page, [page.source, page.link], [v.gallery, *outputs, v.sample],
                        api_name="page_samples", **light)  # fmt: skip
    picked = [page.source, v.sample, v.top_k, v.invert]
    v.predict.click(_sample_page, picked, outputs, api_name="page_predict", **light)
    v.sample.submit(_sample_page, picked, outputs, api_name="page_predict_submit", **light)
    v.upload.upload(_upload_page, [page.source, v.upload, v.top_k, v.invert], outputs, api_name="page_upload",
                    **light)  # fmt: skip
    v.gallery.select(_pick_from_gallery, [page.source, v.top_k, v.invert], [v.sample, *outputs],
                     api_name="page_pick_sample", **light)  # fmt: skip
    v.flips_run.click(_flips_page, page.source, [v.flips_note, v.flips_table], api_name="page_flips", **PRIVATE,
                      **HEAVY_EVENTS)  # fmt: skip
    v.flips_table.select(_pick_flip, [page.source, v.top_k, v.invert], [v.sample, *outputs],
                         api_name="page_pick_flip", **light)  # fmt: skip
    # A new folder's flips are not the old one's: clear them until the user runs the search.
    page.summary.change(lambda: _no_flips(""), None, [v.flips_note, v.flips_table], api_name="page_flips_clear",
                        **PRIVATE)  # fmt: skip

    source, number = gr.JSON(visible=False), gr.Number(value=0, visible=False)
    k, image = gr.Number(value=DEFAULT_TOP_K, visible=False), RawImage(type="filepath", visible=False)
    choice, limit = gr.Textbox(value="auto", visible=False), gr.Number(value=FLIPS_SHOWN, visible=False)
    out = gr.JSON(visible=False)
    hidden_endpoint(api(predict_api), [source, number, image, k, choice], out, "predict", VIEW_EVENTS)
    hidden_endpoint(api(flips_api), [source, limit], out, "flips", HEAVY_EVENTS)
