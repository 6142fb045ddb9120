"""quantcore: load, summarise and compare float and quantized model variants.

No UI code lives here; the Gradio app and scripts both use this API.
Importing it is cheap: torch and onnxruntime load on first use.
"""

from quantcore.errors import QuantcoreError
from quantcore.hub import PulledVariants, pull_model_variants
from quantcore.loaders import load_onnx_model, load_pytorch_model
from quantcore.summary import get_model_summary
from quantcore.variants import (
    ModelVariants,
    Status,
    VariantKey,
    cache_clear,
    cache_info,
    load_model_variants,
)

__all__ = [
    "ModelVariants",
    "PulledVariants",
    "QuantcoreError",
    "Status",
    "VariantKey",
    "cache_clear",
    "cache_info",
    "get_model_summary",
    "load_model_variants",
    "load_onnx_model",
    "load_pytorch_model",
    "pull_model_variants",
]
