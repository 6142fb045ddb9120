"""quantcore: load, summarise, inspect and compare float and quantized model variants.

No UI code lives here; the Gradio app and scripts both use this API.
Importing it is cheap: torch and onnxruntime load on first use.

Loading: ``load_model_variants``, ``pull_model_variants``, ``get_model_summary``,
``open_source``. Views: ``build_layer_table``, ``compare_weights``,
``layer_drift``, ``predict_image``, ``find_flips``, ``build_scorecard`` and
their inputs (``input_spec``, ``folder_samples``, ``load_test_set``).
"""

import os

# onnxruntime otherwise keeps a device id and usage database under
# ~/.cache/Microsoft/DeveloperTools/, outside the project's folders. It reads
# this when it is first imported, so it is set before any quantcore module runs.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from quantcore.data.test_sets import find_test_sets
from quantcore.errors import QuantcoreError
from quantcore.evaluate import (
    InputSpec,
    SampleSet,
    build_scorecard,
    find_flips,
    folder_samples,
    image_to_pixels,
    input_spec,
    load_test_set,
    predict_image,
    variant_logits,
)
from quantcore.inspect import build_layer_table, compare_weights, histogram, layer_drift
from quantcore.load import (
    ModelVariants,
    PulledVariants,
    Status,
    VariantKey,
    cache_clear,
    cache_info,
    get_model_summary,
    load_model_variants,
    load_onnx_model,
    load_pytorch_model,
)
from quantcore.load.hub import pull_model_variants
from quantcore.load.source import Source, open_source

__all__ = [
    "InputSpec",
    "ModelVariants",
    "PulledVariants",
    "QuantcoreError",
    "SampleSet",
    "Source",
    "Status",
    "VariantKey",
    "build_layer_table",
    "build_scorecard",
    "cache_clear",
    "cache_info",
    "compare_weights",
    "find_flips",
    "find_test_sets",
    "folder_samples",
    "get_model_summary",
    "histogram",
    "image_to_pixels",
    "input_spec",
    "layer_drift",
    "load_model_variants",
    "load_onnx_model",
    "load_pytorch_model",
    "load_test_set",
    "open_source",
    "predict_image",
    "pull_model_variants",
    "variant_logits",
]
