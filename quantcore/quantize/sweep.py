"""Sensitivity sweep: which layers a recipe hurts most.

For a recipe, every weighted layer is in turn kept in float (the rest as the
recipe says) and, the reverse, quantized alone (``nodes_to_quantize``); each
such recipe is made by onnxruntime from the one calibration the base recipe
computed, run on the same images, and scored against the float model:
accuracy, agreement with float, output SQNR. Layers rank by the output SQNR
they leave when quantized alone (lowest first: the layer that costs the most),
then by what keeping them in float gains. Jobs are plain functions
(``sweep_job.run_job``) run by an executor: the local pool by default, Ray
when an address is given.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from quantcore.backends import predictor_for
from quantcore.errors import RecipeError
from quantcore.evaluate.batches import sample_inputs
from quantcore.evaluate.inputs import to_model_input, variant_spec
from quantcore.load import ModelVariants, VariantKey, results_cache
from quantcore.quantize import calibration as calib
from quantcore.quantize.build import float_source, input_name, make_recipe, prepared_model
from quantcore.quantize.executors import Executor, default_executor
from quantcore.quantize.graph import weighted_nodes
from quantcore.quantize.recipe import Recipe
from quantcore.quantize.sweep_job import run_job

DEFAULT_IMAGES = 256
MAX_LAYERS = 200  # jobs of one sweep are twice this at most


@dataclass(frozen=True)
class Score:
    """One quantized model on the sweep's images."""

    accuracy: float | None
    agreement: float
    output_sqnr_db: float

    @classmethod
    def of(cls, result: dict[str, Any]) -> Score:
        return cls(result["accuracy"], result["agreement"], result["output_sqnr_db"])


@dataclass(frozen=True)
class SweepRow:
    """One weighted layer: the recipe with it kept in float, and with only it quantized."""

    layer: str
    node: str
    kept_float: Score
    alone: Score

    @property
    def float_gain_db(self) -> float:
        """What keeping this layer in float adds to the output SQNR (filled in against the base by the report)."""
        return self.kept_float.output_sqnr_db


@dataclass(frozen=True)
class SweepReport:
    """The ranked layers of one recipe's sweep (worst first)."""

    recipe: Recipe
    base: Score
    rows: tuple[SweepRow, ...]
    images: int
    executor: str
    seconds: float
    notes: tuple[str, ...] = ()

    def gain_db(self, row: SweepRow) -> float:
        """Output SQNR gained by keeping ``row``'s layer in float, against the whole recipe."""
        return row.kept_float.output_sqnr_db - self.base.output_sqnr_db

    def worst(self, k: int) -> list[str]:
        """The ``k`` layers that cost the most."""
        return [row.layer for row in self.rows[: max(0, k)]]


def _rank_key(row: SweepRow) -> tuple[float, float, str]:
    alone = row.alone.output_sqnr_db
    kept = row.kept_float.output_sqnr_db

    def finite(v: float) -> float:
        return v if not math.isnan(v) else math.inf

    return (finite(alone), -finite(kept), row.layer)


def sweep_jobs(recipe: Recipe, layers: list[str]) -> list[dict[str, Any]]:
    """The base recipe, then per layer: kept in float, and quantized alone."""
    base = recipe.as_dict()
    jobs = [{"layer": None, "mode": "base", "recipe": base}]
    for layer in layers:
        jobs.append({"layer": layer, "mode": "kept_float",
                     "recipe": {**base, "exclude": [*recipe.exclude, layer], "name": ""}})  # fmt: skip
        jobs.append({"layer": layer, "mode": "alone", "recipe": {**base, "only": [layer], "exclude": [], "name": ""}})
    return jobs


def sensitivity_sweep(
    variants: ModelVariants,
    recipe: Recipe,
    *,
    images: int = DEFAULT_IMAGES,
    executor: Executor | None = None,
) -> SweepReport:
    """Sweep ``recipe`` over the folder's weighted layers on its first ``images`` samples.

    Raises:
        RecipeError: no float ONNX variant, or a recipe onnxruntime refuses.
        ValueError: ``images`` out of range.
    """
    started = time.perf_counter()
    executor = executor or default_executor()
    model, _ = float_source(variants)
    base = make_recipe(variants, recipe)  # calibrates once; every job reads these ranges
    path, _ = prepared_model(model)
    import onnx

    prepared = onnx.load(str(path))
    nodes = [n for n in weighted_nodes(prepared) if n.layer not in recipe.exclude and n.node not in recipe.exclude]
    if not nodes:
        raise RecipeError("the recipe leaves no weighted layer quantized: nothing to sweep")
    if len(nodes) > MAX_LAYERS:
        raise RecipeError(f"the model has {len(nodes)} weighted layers; a sweep takes {MAX_LAYERS} at most")
    spec = variant_spec(variants, VariantKey.ONNX_FLOAT)
    inputs, notes = sample_inputs(variants, spec, images=images)
    pixels, labels = inputs.take(0, inputs.count)
    model_input = pixels if inputs.as_model_input else to_model_input(pixels, spec)
    float_logits = np.concatenate([predictor_for(model, threads=1)(model_input[i : i + 250])
                                   for i in range(0, len(model_input), 250)])  # fmt: skip
    shared = {
        "prepared": path.read_bytes(),
        "ranges": calib.ranges_path(base.calibration_key).read_text(),
        "input_name": input_name(prepared),
        "inputs": np.ascontiguousarray(model_input),
        "labels": labels,
        "float_logits": float_logits,
    }
    results = executor.run(run_job, shared, sweep_jobs(replace(recipe, name=recipe.name), [n.layer for n in nodes]))
    base_score = Score.of(results[0])
    by = {(r["layer"], r["mode"]): r for r in results[1:]}
    rows = [SweepRow(n.layer, n.node, Score.of(by[(n.layer, "kept_float")]), Score.of(by[(n.layer, "alone")]))
            for n in nodes]  # fmt: skip
    return SweepReport(recipe, base_score, tuple(sorted(rows, key=_rank_key)), inputs.count, executor.description,
                       time.perf_counter() - started, tuple(notes))  # fmt: skip


def cached_sweep(
    variants: ModelVariants,
    recipe: Recipe,
    *,
    images: int = DEFAULT_IMAGES,
    executor: Executor | None = None,
) -> tuple[SweepReport, bool]:
    """``sensitivity_sweep``, computed once per folder, recipe and images; and whether it came from the cache.

    Cached under the folder's own variants: recipe variants made since (the worst layers kept in float, say)
    do not change what a sweep of its float model measures, and the report still finds the sweep.
    """
    settings = (json.dumps(recipe.as_dict(), sort_keys=True), images)

    def compute() -> SweepReport:
        return sensitivity_sweep(variants, recipe, images=images, executor=executor)

    return results_cache.cached(variants.with_recipes({}), "sweep", settings, compute)


def computed_sweeps(variants: ModelVariants) -> list[tuple[Recipe, int]]:
    """The (recipe, images) of every sweep computed for this folder so far, oldest first."""
    done = results_cache.computed(variants.with_recipes({}))
    return [(Recipe.from_dict(json.loads(s[0])), int(s[1])) for view, s in done if view == "sweep"]


def keep_worst_in_float(report: SweepReport, k: int) -> Recipe:
    """The sweep's recipe with its ``k`` costliest layers kept in float (named ``<recipe>-float<k>worst``).

    Raises:
        RecipeError: ``k`` is not between 1 and the number of layers swept.
    """
    if not 1 <= k <= len(report.rows):
        raise RecipeError(f"k must be between 1 and {len(report.rows)}, got {k}")
    exclude = (*report.recipe.exclude, *report.worst(k))
    return replace(report.recipe, name=f"{report.recipe.name}-worst{k}-float"[:64], exclude=exclude)
