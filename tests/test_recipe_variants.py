"""Recipe variants beside the five: every view takes them like any other quantized variant."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import quantcore
from quantcore.backends import backend_for
from quantcore.evaluate.batches import generated_inputs
from quantcore.evaluate.inputs import InputSpec
from quantcore.inspect.drift import layer_drift
from quantcore.inspect.layer_table import build_layer_table
from quantcore.load import RecipeKey, Status, VariantKey, VariantRecord, key_order, load_onnx_model, parse_key


def recipe_record(folder: Path, name: str, file: str) -> dict[RecipeKey, VariantRecord]:
    """``folder/file`` as the recipe variant ``recipe:name``, ready for ``ModelVariants.with_recipes``."""
    path = folder / file
    model = load_onnx_model(path)
    key = RecipeKey(name)
    record = VariantRecord(key, Status.LOADED, file=file, model=model, bytes=path.stat().st_size,
                           sha256=hashlib.sha256(path.read_bytes()).hexdigest(), storage="onnx",
                           details=backend_for(model).describe(model))  # fmt: skip
    return {key: record}


def test_keys_parse_order_and_compare_with_onnx_float() -> None:
    assert parse_key("recipe:u8s8-entropy") == RecipeKey("u8s8-entropy")
    assert str(RecipeKey("a")) == "recipe:a" and parse_key("onnx_int8") is VariantKey.ONNX_INT8
    keys = [RecipeKey("b"), VariantKey.PYTORCH_INT8, RecipeKey("a"), VariantKey.ONNX_FLOAT]
    assert sorted(keys, key=key_order) == [VariantKey.ONNX_FLOAT, VariantKey.PYTORCH_INT8, RecipeKey("a"),
                                           RecipeKey("b")]  # fmt: skip
    assert quantcore.load.reference_key(RecipeKey("a"), [VariantKey.ONNX_FLOAT]) is VariantKey.ONNX_FLOAT


def test_a_recipe_variant_joins_the_summary_layers_and_per_layer_error(variant_folder: Path) -> None:
    variants = quantcore.load_model_variants(variant_folder)
    with_recipe = variants.with_recipes(recipe_record(variant_folder, "same-as-uint8", "tiny_uint8.onnx"))
    key = RecipeKey("same-as-uint8")

    # The five keys of the contract stay as they are; the recipe is an extra entry.
    assert list(with_recipe) == list(variants) and with_recipe.model(key) is not None
    summary = quantcore.get_model_summary(with_recipe)
    assert summary["total_loaded"] == 5 and summary["recipes"] == 1
    assert summary["variants"]["recipe:same-as-uint8"]["quantization"]["activation_type"] == "uint8"
    assert "recipe:same-as-uint8" not in quantcore.get_model_summary(variants)["variants"]  # the cache is untouched

    table = build_layer_table(with_recipe)
    assert table.variants[-1] == key
    assert all(key in row.layers for row in table.rows)

    spec = InputSpec((3, 32, 32))
    report = layer_drift(with_recipe, table=table, inputs=generated_inputs(spec, 8), batch_size=8)
    by_variant = {d.variant: d for d in report.variants}
    # The same file as onnx_uint8, against the same reference: the same SQNR at every layer.
    assert by_variant[key].reference is VariantKey.ONNX_FLOAT
    np.testing.assert_allclose(by_variant[key].sqnr_db, by_variant[VariantKey.ONNX_UINT8].sqnr_db)
