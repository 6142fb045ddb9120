"""The playground's quantizer: recipes mapped onto onnxruntime's ``quantize_static``, with calibration reuse."""

from quantcore.quantize import store
from quantcore.quantize.build import (
    RecipeResult,
    float_source,
    make_recipe,
    manifest_text,
    ort_arguments,
    quantize_recipe,
    with_results,
)
from quantcore.quantize.calibration import (
    CalibrationSet,
    calibration_from_inputs,
    calibration_runs,
    calibration_set,
    clear_calibration_cache,
)
from quantcore.quantize.graph import WeightedNode, resolve_layers, weighted_nodes
from quantcore.quantize.recipe import (
    ActivationType,
    CalibrationMethodName,
    LayerOverride,
    QuantFormatName,
    Recipe,
    WeightType,
)

__all__ = [
    "ActivationType",
    "CalibrationMethodName",
    "CalibrationSet",
    "LayerOverride",
    "QuantFormatName",
    "Recipe",
    "RecipeResult",
    "WeightType",
    "WeightedNode",
    "calibration_from_inputs",
    "calibration_runs",
    "calibration_set",
    "clear_calibration_cache",
    "float_source",
    "make_recipe",
    "manifest_text",
    "ort_arguments",
    "quantize_recipe",
    "resolve_layers",
    "store",
    "weighted_nodes",
    "with_results",
]
