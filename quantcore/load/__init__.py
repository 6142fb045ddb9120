"""Load model files and folders: file loaders and their registry, discovery, manifest and card, summary, Hub pulls."""

from quantcore.load.discover import CARD_NAME, MANIFEST_NAME, MODEL_SUFFIXES, SAMPLES_NAME, discover_variant_files
from quantcore.load.files import Storage, load_onnx_model, load_pytorch_model
from quantcore.load.folder import ModelVariants, cache_clear, cache_info, load_model_variants
from quantcore.load.keys import (
    FLOAT_KEYS,
    Key,
    ModelFormat,
    Precision,
    RecipeKey,
    Status,
    VariantKey,
    VariantRecord,
    key_order,
    parse_key,
    reference_key,
)
from quantcore.load.pulled import PulledVariants
from quantcore.load.summary import get_model_summary

__all__ = [
    "CARD_NAME",
    "FLOAT_KEYS",
    "MANIFEST_NAME",
    "MODEL_SUFFIXES",
    "SAMPLES_NAME",
    "Key",
    "ModelFormat",
    "ModelVariants",
    "Precision",
    "PulledVariants",
    "RecipeKey",
    "Status",
    "Storage",
    "VariantKey",
    "VariantRecord",
    "cache_clear",
    "cache_info",
    "discover_variant_files",
    "get_model_summary",
    "key_order",
    "load_model_variants",
    "load_onnx_model",
    "load_pytorch_model",
    "parse_key",
    "reference_key",
]
