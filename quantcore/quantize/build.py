"""Make a recipe variant: onnxruntime's ``quant_pre_process`` and ``quantize_static``, nothing hand-written.

The float ONNX variant is pre-processed once (shape inference and graph
optimisation, as onnxruntime asks before quantizing), calibrated once per
calibration key (``calibration``), then quantized with the recipe's options.
The result carries its ``recipe.json``: every onnxruntime option as passed,
the calibration set's fingerprint, the float model's sha256 and the versions
of onnxruntime and onnx — enough to make the same file again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantcore.backends import backend_for
from quantcore.errors import QuantcoreError, RecipeError
from quantcore.load import ModelVariants, RecipeKey, Status, VariantKey, VariantRecord
from quantcore.quantize import calibration as calib
from quantcore.quantize.calibration import CalibrationReader, CalibrationSet
from quantcore.quantize.graph import resolve_layers
from quantcore.quantize.recipe import Recipe, quant_type

logger = logging.getLogger(__name__)

RECIPE_FORMAT = "quantcore.recipe/1"
PRE_PROCESS: dict[str, Any] = {"skip_optimization": False, "skip_onnx_shape": False, "skip_symbolic_shape": False}


@dataclass(frozen=True)
class RecipeResult:
    """One recipe made: the quantized model, its bytes, its ``recipe.json``, and what it cost."""

    recipe: Recipe
    model: Any = field(repr=False)  # onnx.ModelProto
    data: bytes = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)
    calibrated: bool  # this run calibrated (False: the ranges came from the cache)
    seconds: float
    calibration_key: str = ""  # the entry of the calibration cache its ranges are in

    @property
    def key(self) -> RecipeKey:
        return RecipeKey(self.recipe.name)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def record(self) -> VariantRecord:
        """The variant record it joins a loaded set with (``ModelVariants.with_recipes``)."""
        return VariantRecord(self.key, Status.LOADED, file=f"recipes/{self.recipe.name}/model.onnx", model=self.model,
                             bytes=len(self.data), sha256=self.sha256, storage="onnx",
                             details={**backend_for(self.model).describe(self.model),
                                      "recipe": self.recipe.as_dict()})  # fmt: skip


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepared_model(float_model: Any) -> tuple[Path, str]:
    """The float model after ``quant_pre_process``, made once per float model; (its path, the float's sha256)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    data = float_model.SerializeToString()
    sha = _sha(data)
    path = calib.cache_dir() / f"prepared-{sha[:32]}.onnx"
    with calib.key_lock("prepare-" + sha):
        if not path.is_file():
            with tempfile.TemporaryDirectory(dir=calib.cache_dir()) as tmp:
                source = Path(tmp) / "float.onnx"
                source.write_bytes(data)
                made = Path(tmp) / "prepared.onnx"
                try:
                    quant_pre_process(str(source), str(made), **PRE_PROCESS)
                except Exception as exc:  # onnxruntime's own failure, in its words
                    raise RecipeError(f"onnxruntime's quant_pre_process failed: {exc}") from exc
                made.replace(path)
    return path, sha


def input_name(model: Any) -> str:
    """The graph's first input that is not an initializer (what calibration feeds)."""
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    if len(names) != 1:
        raise RecipeError(f"calibration feeds one input; the float model has {len(names)}")
    return names[0]


def ort_arguments(recipe: Recipe, prepared: Any) -> dict[str, Any]:
    """``quantize_static``'s keyword arguments for ``recipe`` on the pre-processed float graph.

    Raises:
        RecipeError: a layer named in ``exclude`` or ``overrides`` is not in the graph.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat

    extra: dict[str, Any] = {"ActivationSymmetric": recipe.symmetric_activations}
    if recipe.symmetric_weights is not None:
        extra["WeightSymmetric"] = recipe.symmetric_weights
    extra.update({k: v for k, v in recipe.calibration_options().items() if k != "method"})
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name, override in recipe.overrides.items():
        node = resolve_layers(prepared, [name])[0]
        if override.weight is not None:
            entry: dict[str, Any] = {"quant_type": quant_type(str(override.weight))}
            if recipe.per_channel:
                entry["axis"] = node.channel_axis
            overrides[node.weight] = [entry]
        if override.activation is not None:
            overrides[node.output] = [{"quant_type": quant_type(str(override.activation))}]
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    return {
        "quant_format": QuantFormat.QDQ if recipe.format.value == "QDQ" else QuantFormat.QOperator,
        "activation_type": quant_type(str(recipe.activation)),
        "weight_type": quant_type(str(recipe.weight)),
        "per_channel": recipe.per_channel,
        "reduce_range": recipe.reduce_range,
        "calibrate_method": getattr(CalibrationMethod, str(recipe.calibration)),
        "nodes_to_exclude": [n.node for n in resolve_layers(prepared, recipe.exclude)],
        "nodes_to_quantize": [n.node for n in resolve_layers(prepared, recipe.only)],
        "extra_options": extra,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value).split(".")[-1]  # QuantType.QInt8 -> "QInt8", CalibrationMethod.MinMax -> "MinMax"


def quantize_recipe(
    float_model: Any, recipe: Recipe, calibration: CalibrationSet, *, float_file: str | None = None
) -> RecipeResult:
    """Quantize ``float_model`` (an ``onnx.ModelProto``) by ``recipe`` with onnxruntime, calibrating at most once.

    Args:
        float_model: the float ONNX model.
        recipe: the options.
        calibration: the calibration set (model input).
        float_file: the float model's file name, for ``recipe.json``.

    Returns:
        The quantized model and its ``recipe.json``.

    Raises:
        RecipeError: the recipe does not fit the model, or onnxruntime refused it (its message says why).
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import quantize_static

    started = time.perf_counter()
    path, float_sha = prepared_model(float_model)
    prepared = onnx.load(str(path))
    arguments = ort_arguments(recipe, prepared)
    key = calib.calibration_key(float_sha, recipe.calibration_options(), calibration)
    ranges = calib.ranges_path(key)
    reader = CalibrationReader(calibration, input_name(prepared))
    with calib.key_lock(key):  # recipes sharing a calibration wait for the first to write it
        calibrated = not ranges.is_file()
        with tempfile.TemporaryDirectory(dir=calib.cache_dir()) as tmp:
            out = Path(tmp) / "model.onnx"
            try:
                quantize_static(str(path), str(out), reader, calibration_cache_path=str(ranges), **arguments)
            except QuantcoreError:  # ours, e.g. the request's deadline passing between calibration batches
                raise
            except Exception as exc:  # onnxruntime raises plain errors for what it refuses
                raise RecipeError(f"onnxruntime could not quantize with this recipe: {exc}") from exc
            data = out.read_bytes()
        if calibrated:
            calib.count_run()
    model = onnx.load_from_string(data)
    manifest = {
        "format": RECIPE_FORMAT,
        "name": recipe.name,
        "recipe": recipe.as_dict(),
        "onnxruntime": {
            "quant_pre_process": PRE_PROCESS,
            "quantize_static": _jsonable(arguments),
            "calibration_data_reader": {
                "input": input_name(prepared),
                "batch": calibration.batch or calib.READER_BATCH,
            },
        },
        "calibration": calibration.as_dict(),
        "float_model": {"file": float_file, "sha256": float_sha},
        "model": {"sha256": _sha(data), "bytes": len(data)},
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
    }
    seconds = time.perf_counter() - started
    logger.info("recipe %s made in %.2fs (%s)", recipe.name, seconds, "calibrated" if calibrated else "ranges reused")
    return RecipeResult(recipe, model, data, manifest, calibrated, seconds, key)


def float_source(variants: ModelVariants) -> tuple[Any, str | None]:
    """The float ONNX model recipes start from, and its file name.

    Raises:
        RecipeError: the folder has no loaded float ONNX variant.
    """
    record = variants.records.get(VariantKey.ONNX_FLOAT)
    if record is None or record.status is not Status.LOADED:
        raise RecipeError("recipes start from the folder's float ONNX variant, and this folder has none loaded")
    return record.model, record.file


def make_recipe(variants: ModelVariants, recipe: Recipe, *, calibration: CalibrationSet | None = None) -> RecipeResult:
    """``recipe`` applied to the folder's float ONNX variant, calibrated on its samples (or the recipe's test set).

    Raises:
        RecipeError, DatasetError: as ``quantize_recipe`` and ``calibration_set``.
    """
    model, file = float_source(variants)
    calibration = calibration or calib.calibration_set(variants, images=recipe.calibration_images,
                                                       test_set=recipe.test_set,
                                                       draw=recipe.calibration_draw)  # fmt: skip
    return quantize_recipe(model, recipe, calibration, float_file=file)


def with_results(variants: ModelVariants, results: Iterable[RecipeResult]) -> ModelVariants:
    """The loaded set with these recipe variants beside the five (the cached folder untouched)."""
    return variants.with_recipes({r.key: r.record() for r in results})


def manifest_text(result: RecipeResult) -> str:
    """``recipe.json`` as written to disk."""
    return json.dumps(result.manifest, indent=2, sort_keys=False) + "\n"
