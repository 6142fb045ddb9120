"""The Quantize tab: make a recipe variant from the folder's float ONNX model with onnxruntime, see it in
every tab, rank the session's recipes on a board, sweep a recipe's layers for the ones that cost the most
and keep the worst k in float in one click, save a recipe into its folder or download it, and make one of
the folder's own variants again from the recipe.json it ships.

API: ``/quantize (source, recipe)`` -> the recipe variant, its ``recipe.json``, its board entry and the
source that shows it; ``/recipe_board (source)`` -> the ranked board of the source's recipes;
``/sweep (source, recipe, images, keep_worst)`` -> the ranked sweep table (and, with ``keep_worst`` k, the
recipe variant with the worst k layers kept in float, as ``/quantize`` answers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app import render
from gradio_app.common import (
    HEAVY_EVENTS,
    PRIVATE,
    VIEW_EVENTS,
    Page,
    api,
    download_folder,
    hidden_endpoint,
    note,
    on_failure,
    variants_for,
    whole_number,
)
from quantcore import Source, get_model_summary, settings
from quantcore.errors import NothingLoadedError, RecipeError
from quantcore.load import ModelVariants, RecipeKey
from quantcore.quantize import (
    ActivationType,
    CalibrationMethodName,
    QuantFormatName,
    Recipe,
    WeightType,
    float_source,
    make_recipe,
    manifest_text,
    store,
    weighted_nodes,
)
from quantcore.quantize.board import BoardEntry, ranked, score_recipe
from quantcore.quantize.cli import parse_overrides
from quantcore.quantize.saved import save_to_folder, variant_recipes
from quantcore.quantize.sweep import DEFAULT_IMAGES, SweepReport, cached_sweep, keep_worst_in_float
from quantcore.report import figures, quantize_tables

HINT = "Load a folder with a float ONNX variant above, pick a recipe and quantize it with onnxruntime."
SYMMETRY = {"onnxruntime's default": None, "symmetric": True, "asymmetric": False}
MAX_SWEEP_IMAGES = 1000
SWEEP_HINT = "Sweep the recipe above: each weighted layer kept in float in turn, and quantized alone."


@dataclass(frozen=True)
class QuantizeTab:
    name: gr.Textbox
    format: gr.Radio
    activation: gr.Dropdown
    weight: gr.Dropdown
    per_channel: gr.Checkbox
    reduce_range: gr.Checkbox
    symmetric_activations: gr.Checkbox
    symmetric_weights: gr.Dropdown
    calibration: gr.Dropdown
    percentile: gr.Number
    images: gr.Slider
    test_set: gr.Textbox
    exclude: gr.Dropdown
    overrides: gr.Textbox
    run: gr.Button
    note: gr.Markdown
    board: gr.Dataframe
    pick: gr.Dropdown
    save: gr.Button
    files: gr.File
    sweep_images: gr.Slider
    sweep: gr.Button
    sweep_note: gr.Markdown
    sweep_plot: gr.Plot
    sweep_table: gr.Dataframe
    keep_k: gr.Number
    keep: gr.Button
    made_by: gr.Dropdown
    rebuild: gr.Button
    swept: gr.State  # the page's last sweep: (the folder's source, its report)

    @property
    def options(self) -> list[Any]:
        return [self.name, self.format, self.activation, self.weight, self.per_channel, self.reduce_range,
                self.symmetric_activations, self.symmetric_weights, self.calibration, self.percentile, self.images,
                self.test_set, self.exclude, self.overrides]  # fmt: skip


def recipe_from_page(name: Any, fmt: Any, activation: Any, weight: Any, per_channel: Any, reduce_range: Any,
                     symmetric_activations: Any, symmetric_weights: Any, calibration: Any, percentile: Any,
                     images: Any, test_set: Any, exclude: Any, overrides: Any) -> Recipe:  # fmt: skip
    """The recipe the page's controls describe.

    Raises:
        RecipeError, ValueError: a control's value is not usable.
    """
    lines = [line for line in str(overrides or "").replace(";", "\n").splitlines() if line.strip()]
    return Recipe.from_dict({
        "name": str(name or "").strip(), "format": fmt, "activation": activation, "weight": weight,
        "per_channel": bool(per_channel), "reduce_range": bool(reduce_range),
        "symmetric_activations": bool(symmetric_activations),
        "symmetric_weights": SYMMETRY.get(symmetric_weights) if symmetric_weights in SYMMETRY else None,
        "calibration": calibration, "percentile": percentile if percentile not in (None, "") else 99.999,
        "calibration_images": images if images not in (None, "") else 200,
        "test_set": str(test_set).strip() or None if test_set else None,
        "exclude": list(exclude or []), "overrides": parse_overrides(lines),
    })  # fmt: skip


def board_entries(variants: ModelVariants) -> list[BoardEntry]:
    """Every recipe variant of the set, scored once per file, best first."""
    entries = []
    for key, record in variants.records.items():
        if not isinstance(key, RecipeKey):
            continue
        entry = store.score(variants, key.name, record.sha256)
        if entry is None:
            entry = score_recipe(variants, key)
            store.keep_score(variants, record.sha256 or "", entry)
        entries.append(entry)
    return ranked(entries)


def _files(variants: ModelVariants, name: str) -> list[str]:
    """The recipe's model and recipe.json in a temp folder, for download."""
    result = store.made(variants, name)
    if result is None:
        return []
    folder = download_folder("recipe")
    (folder / f"{name}.onnx").write_bytes(result.data)
    (folder / "recipe.json").write_text(manifest_text(result))
    return [str(folder / f"{name}.onnx"), str(folder / "recipe.json")]


def quantize(source: Any, recipe: Recipe) -> tuple[Source, ModelVariants, BoardEntry, Any]:
    """Make ``recipe`` for the source's folder, keep it for the session, score it; the source that shows it."""
    resolved = Source.from_client(source)
    if resolved is None:
        raise NothingLoadedError("nothing is loaded yet")
    variants = variants_for(resolved)
    result = make_recipe(variants, recipe)
    store.remember(variants, result)
    shown = resolved.with_recipe(result.recipe.name)
    joined = variants_for(shown)
    entry = store.score(joined, result.recipe.name, result.sha256)
    if entry is None:
        entry = score_recipe(joined, result.key)
        store.keep_score(joined, result.sha256, entry)
    return shown, joined, entry, result


def quantize_api(source: Any, recipe: Any) -> dict[str, Any]:
    """Make a recipe variant (API: /quantize); ``recipe`` is an object of ``Recipe`` options (or its JSON)."""
    options = json.loads(recipe) if isinstance(recipe, str) else recipe
    shown, joined, entry, result = quantize(source, Recipe.from_dict(options or {}))
    return {
        "recipe": str(result.key),
        "calibrated": result.calibrated,
        "seconds": round(result.seconds, 3),
        "recipe_json": result.manifest,
        "board_entry": quantize_tables.board_rows([entry])[0],
        "source": shown.as_dict(),
        "variants": [str(k) for k in joined.records],
    }


def board_api(source: Any) -> dict[str, Any]:
    """The ranked board of the source's recipe variants (API: /recipe_board)."""
    return quantize_tables.board_json(board_entries(variants_for(source)))


def sweep(source: Any, recipe: Recipe, images: int) -> tuple[Source, SweepReport, bool]:
    """Sweep ``recipe``'s layers on the source's folder (the app's executor: local pool, or Ray when set), once
    per folder, recipe and images; and whether it was swept before (the results cache)."""
    resolved = Source.from_client(source)
    if resolved is None:
        raise NothingLoadedError("nothing is loaded yet")
    report, hit = cached_sweep(variants_for(resolved), recipe, images=images)
    return resolved, report, hit


def sweep_api(source: Any, recipe: Any, images: Any = None, keep_worst: Any = None) -> dict[str, Any]:
    """Sweep a recipe's layers (API: /sweep); with ``keep_worst`` k, also make it with the worst k in float."""
    options = json.loads(recipe) if isinstance(recipe, str) else recipe
    count = whole_number(images, DEFAULT_IMAGES, 1, MAX_SWEEP_IMAGES, "images")
    k = whole_number(keep_worst, 0, 0, 1000, "keep_worst")
    resolved, report, hit = sweep(source, Recipe.from_dict(options or {}), count)
    answer = {**quantize_tables.sweep_json(report), "from_cache": hit}
    if k:
        answer["kept_worst"] = quantize_api(resolved, keep_worst_in_float(report, k).as_dict())
    return answer


def _failed(message: str) -> tuple[Any, ...]:
    return (message, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())


def _made(source: Any, recipe: Recipe, progress: gr.Progress, again: Any = None) -> tuple[Any, ...]:
    """Make ``recipe`` and show it: the note, the board, the recipe picker, the files, the summary, the source
    (``again``: the ``VariantRecipe`` it was read from, whose variant it is compared with)."""
    shown, joined, entry, result = quantize(source, recipe)
    progress(0.8, desc="Scoring the session's recipes")
    entries = board_entries(joined)
    summary = render.display_summary({**get_model_summary(joined), "source": shown.as_dict()},
                                     root=Path(os.path.realpath(settings.current().models_root)))  # fmt: skip
    calibrated = "calibrated on" if result.calibrated else "calibration ranges reused for"
    row = quantize_tables.board_rows([entry])[0]
    kept = f" Kept in float: {', '.join(recipe.exclude)}." if recipe.exclude else ""
    lines = [f"{result.key}: {calibrated} {result.manifest['calibration']['description']}, "
             f"{len(result.data) / 1024:.1f} KB, made in {result.seconds:.2f} s.{kept}",
             f"Accuracy {row['accuracy (%)']} % on {entry.images} images, "
             f"worst layer {entry.worst_layer} at {row['worst layer SQNR (dB)']} dB.",
             "It now shows in every tab beside the five variants."]  # fmt: skip
    if again is not None:
        same = again.reproduced_by(result.model, joined)
        lines.insert(1, f"Made again from {again.file}: its graph and weights "
                        f"{'are' if same else 'are NOT'} {again.key}'s own, node for node.")  # fmt: skip
    names = [str(k) for k in joined.records if isinstance(k, RecipeKey)]
    return (
        note(lines, "Recipe variant made"),
        gr.Dataframe(value=pd.DataFrame(quantize_tables.board_rows(entries)), visible=True),
        gr.Dropdown(choices=names, value=str(result.key)),
        _files(joined, result.recipe.name),
        summary,
        shown,
    )


@on_failure("quantizing", _failed)
def _quantize_page(source: Any, *options: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    progress(0.1, desc="Calibrating and quantizing with onnxruntime")
    return _made(source, recipe_from_page(*options), progress)


def _sweep_failed(message: str) -> tuple[Any, ...]:
    return (message, gr.Plot(value=None, visible=False), gr.Dataframe(value=None, visible=False), None)


@on_failure("the sensitivity sweep", _sweep_failed)
def _sweep_page(source: Any, images: Any, *options: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    progress(0.05, desc="Calibrating once, then quantizing and scoring each layer kept in float and alone")
    count = whole_number(images, DEFAULT_IMAGES, 1, MAX_SWEEP_IMAGES, "sweep images")
    resolved, report, hit = sweep(source, recipe_from_page(*options), count)
    lines = quantize_tables.sweep_lines(report)
    if hit:
        lines.insert(0, "Swept before with this recipe and these images: the results kept from then.")
    return (
        note(lines, "Sensitivity sweep"),
        gr.Plot(value=figures.sweep_figure(report), visible=True),
        gr.Dataframe(value=pd.DataFrame(quantize_tables.sweep_rows(report)), visible=True),
        (replace(resolved, recipes=()).as_dict(), report),
    )


@on_failure("keeping the worst layers in float", _failed)
def _keep_worst_page(source: Any, swept: Any, k: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    resolved = Source.from_client(source)
    if not swept or resolved is None or replace(resolved, recipes=()).as_dict() != swept[0]:
        raise ValueError("sweep this folder's layers first (the sweep above is of another folder, or not run)")
    report: SweepReport = swept[1]
    count = whole_number(k, 1, 1, len(report.rows), "k (layers kept in float)")
    progress(0.1, desc=f"Quantizing with the worst {count} in float (calibration reused)")
    return _made(resolved, keep_worst_in_float(report, count), progress)


@on_failure("making the variant again", _failed)
def _rebuild_page(source: Any, picked: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
    shipped = {str(r.key): r for r in variant_recipes(variants_for(source))}
    if picked not in shipped:
        raise ValueError("pick one of the folder's variants that ships its recipe.json")
    if not shipped[picked].current:
        raise RecipeError(f"{shipped[picked].file} describes {picked} as it was made; its file has changed since")
    progress(0.1, desc=f"Making {picked} again from {shipped[picked].file}")
    return _made(source, shipped[picked].recipe, progress, again=shipped[picked])


@on_failure("the variants' own recipes", lambda message: (gr.Dropdown(visible=False), gr.Button(visible=False)))
def _made_by_choices(source: Any) -> tuple[Any, Any]:
    found = [] if source is None else [r for r in variant_recipes(variants_for(source)) if r.current]
    choices = [(f"{r.key} ({r.file})", str(r.key)) for r in found]
    return (gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, visible=bool(choices)),
            gr.Button(visible=bool(choices)))  # fmt: skip


@on_failure("saving the recipe", lambda message: message)
def _save_page(source: Any, picked: Any) -> str:
    if not isinstance(picked, str) or not picked.startswith(RecipeKey.PREFIX):
        raise ValueError("pick a recipe made in this session to save")
    variants = variants_for(source)
    result = store.made(variants, picked[len(RecipeKey.PREFIX) :])
    if result is None:
        raise RecipeError(f"{picked} was not made in this session (saved recipes are in the folder already)")
    folder = save_to_folder(variants, result)
    relative = folder.relative_to(Path(os.path.realpath(settings.current().models_root)))
    return note([f"Saved as {relative}/model.onnx and recipe.json; it loads with the folder from now on."],
                "Saved")  # fmt: skip


@on_failure("the layer list", lambda message: gr.Dropdown(choices=[], value=[]))
def _layer_choices(source: Any) -> Any:
    if source is None:
        return gr.Dropdown(choices=[], value=[])
    model, _ = float_source(variants_for(source))
    return gr.Dropdown(choices=[n.layer for n in weighted_nodes(model)], value=[])


def build() -> QuantizeTab:
    """The tab's components (call inside its ``gr.Tab``)."""
    with gr.Row():
        name = gr.Textbox(label="Recipe name (default: from its options)", elem_id="qp-q-name", scale=2)
        fmt = gr.Radio([m.value for m in QuantFormatName], value="QDQ", label="Format", elem_id="qp-q-format")
        activation = gr.Dropdown([m.value for m in ActivationType], value="uint8", label="Activations",
                                 elem_id="qp-q-activation")  # fmt: skip
        weight = gr.Dropdown([m.value for m in WeightType], value="int8", label="Weights", elem_id="qp-q-weight")
    with gr.Row():
        per_channel = gr.Checkbox(value=True, label="Per-channel weights")
        reduce_range = gr.Checkbox(value=False, label="Reduce range (7-bit weights)")
        symmetric_activations = gr.Checkbox(value=False, label="Symmetric activations")
        symmetric_weights = gr.Dropdown(list(SYMMETRY), value="onnxruntime's default", label="Weight symmetry")
    with gr.Row():
        calibration = gr.Dropdown([m.value for m in CalibrationMethodName], value="MinMax", label="Calibration",
                                  elem_id="qp-q-calibration")  # fmt: skip
        percentile = gr.Number(value=99.999, label="Percentile (Percentile calibration)")
        images = gr.Slider(1, 1000, value=200, step=1, label="Calibration images", elem_id="qp-q-images")
        test_set = gr.Textbox(label="Calibrate on a test set folder (default: samples.npz)")
    with gr.Row():
        exclude = gr.Dropdown(choices=[], value=[], multiselect=True, label="Layers kept in float",
                              elem_id="qp-q-exclude", scale=2)  # fmt: skip
        overrides = gr.Textbox(label="Per-layer types, one per line (conv1=weight:int8)", lines=2, scale=2)
        run = gr.Button("Quantize", variant="primary", elem_id="qp-q-run", scale=1)
    view_note = gr.Markdown(HINT, elem_id="qp-q-note")
    board = gr.Dataframe(label="Recipe board (best first)", interactive=False, elem_id="qp-q-board", visible=False)
    with gr.Row():
        pick = gr.Dropdown(choices=[], label="Recipe", elem_id="qp-q-pick", scale=2)
        save = gr.Button("Save to folder", elem_id="qp-q-save", scale=1)
    files = gr.File(label="Download: model and recipe.json", file_count="multiple", elem_id="qp-q-files")
    with gr.Row():
        made_by = gr.Dropdown(choices=[], label="A variant of this folder, made again from its own recipe.json",
                              elem_id="qp-q-made-by", visible=False, scale=2)  # fmt: skip
        rebuild = gr.Button("Make it again", elem_id="qp-q-rebuild", visible=False, scale=1)
    with gr.Accordion("Sensitivity sweep: which layers cost the most", open=True, elem_id="qp-q-sweep-section"):
        with gr.Row():
            sweep_images = gr.Slider(1, MAX_SWEEP_IMAGES, value=DEFAULT_IMAGES, step=1, scale=2,
                                     label="Images to score each layer on", elem_id="qp-q-sweep-images")  # fmt: skip
            sweep_button = gr.Button("Sweep this recipe's layers", elem_id="qp-q-sweep", scale=1)
        sweep_note = gr.Markdown(SWEEP_HINT, elem_id="qp-q-sweep-note")
        sweep_plot = gr.Plot(label="Output SQNR per layer", elem_id="qp-q-sweep-plot", visible=False)
        sweep_table = gr.Dataframe(label="Layers, costliest first", interactive=False, elem_id="qp-q-sweep-table",
                                   visible=False)  # fmt: skip
        with gr.Row():
            keep_k = gr.Number(value=1, precision=0, minimum=1, label="k", elem_id="qp-q-keep-k", scale=1)
            keep = gr.Button("Keep the worst k in float (makes the mixed recipe)", elem_id="qp-q-keep", scale=2)
    return QuantizeTab(name, fmt, activation, weight, per_channel, reduce_range, symmetric_activations,
                       symmetric_weights, calibration, percentile, images, test_set, exclude, overrides, run,
                       view_note, board, pick, save, files, sweep_images, sweep_button, sweep_note, sweep_plot,
                       sweep_table, keep_k, keep, made_by, rebuild, gr.State(None))  # fmt: skip


def wire(page: Page, v: QuantizeTab) -> None:
    """Page events (private) and the /quantize and /recipe_board endpoints."""
    outputs = [v.note, v.board, v.pick, v.files, page.summary, page.source]
    v.run.click(_quantize_page, [page.source, *v.options], outputs, api_name="page_quantize", **PRIVATE,
                **HEAVY_EVENTS)  # fmt: skip
    sweep_outputs = [v.sweep_note, v.sweep_plot, v.sweep_table, v.swept]
    v.sweep.click(_sweep_page, [page.source, v.sweep_images, *v.options], sweep_outputs, api_name="page_sweep",
                  **PRIVATE, **HEAVY_EVENTS)  # fmt: skip
    v.keep.click(_keep_worst_page, [page.source, v.swept, v.keep_k], outputs, api_name="page_keep_worst",
                 **PRIVATE, **HEAVY_EVENTS)  # fmt: skip
    v.save.click(_save_page, [page.source, v.pick], v.note, api_name="page_recipe_save", **PRIVATE, **VIEW_EVENTS)
    v.rebuild.click(_rebuild_page, [page.source, v.made_by], outputs, api_name="page_rebuild_variant", **PRIVATE,
                    **HEAVY_EVENTS)  # fmt: skip
    page.summary.change(_made_by_choices, page.source, [v.made_by, v.rebuild], api_name="page_variant_recipes",
                        **PRIVATE, **VIEW_EVENTS)  # fmt: skip
    page.summary.change(_layer_choices, page.source, v.exclude, api_name="page_quantize_layers", **PRIVATE,
                        **VIEW_EVENTS)  # fmt: skip
    source, recipe, out = gr.JSON(visible=False), gr.JSON(visible=False), gr.JSON(visible=False)
    hidden_endpoint(api(quantize_api), [source, recipe], out, "quantize", HEAVY_EVENTS)
    board_source, board_out = gr.JSON(visible=False), gr.JSON(visible=False)
    hidden_endpoint(api(board_api), [board_source], board_out, "recipe_board", HEAVY_EVENTS)
    sweep_in = [gr.JSON(visible=False) for _ in range(4)]
    hidden_endpoint(api(sweep_api), sweep_in, gr.JSON(visible=False), "sweep", HEAVY_EVENTS)
