"""``python -m quantcore quantize``, recipes saved to a folder and read back, and the session's recipe store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import quantcore
from quantcore.__main__ import main
from quantcore.data import datasets
from quantcore.errors import PathNotAllowedError
from quantcore.load import RecipeKey, Status
from quantcore.quantize import Recipe, clear_calibration_cache, make_recipe, store
from quantcore.quantize.saved import save_to_folder, saved_recipes


@pytest.fixture
def folder(variant_folder: Path) -> Path:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    datasets.save_samples(variant_folder / "samples.npz", datasets.LabelledImages(
        images, np.arange(12, dtype=np.int64) % 10, tuple(f"c{i}" for i in range(10))))  # fmt: skip
    clear_calibration_cache()
    store.clear()
    return variant_folder


def test_cli_writes_model_and_recipe_json_that_rebuilds_it(folder: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "out"
    code = main(["quantize", str(folder), "--activation", "uint8", "--per-channel", "--calibration", "entropy",
                 "--exclude", "stack3.conv2", "--calibration-images", "8", "-o", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    shown = json.loads(printed)  # onnxruntime's own progress lines went to stderr
    made = out / "u8s8-entropy-pc-float1"
    assert shown["recipe"] == "recipe:u8s8-entropy-pc-float1" and Path(shown["folder"]) == made
    data = (made / "model.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == shown["sha256"]
    manifest = json.loads((made / "recipe.json").read_text())
    assert manifest["onnxruntime"]["quantize_static"]["nodes_to_exclude"] == ["/stack3/conv2/Conv"]
    assert manifest["onnxruntime"]["quantize_static"]["calibrate_method"] == "Entropy"
    model = onnx.load_from_string(data)
    conv = next(n for n in model.graph.node if n.name == "/stack3/conv2/Conv")
    assert conv.input[1] in {t.name for t in model.graph.initializer}  # kept float: no DequantizeLinear before it

    # The recipe.json alone makes the same file again, calibration and all.
    clear_calibration_cache()
    again = tmp_path / "again"
    assert main(["quantize", str(folder), "--recipe", str(made / "recipe.json"), "-o", str(again)]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == shown["sha256"]
    # A flag over a recipe.json changes the recipe, and its name follows.
    assert main(["quantize", str(folder), "--recipe", str(made / "recipe.json"), "--weight", "int4",
                 "-o", str(again)]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["recipe"] == "recipe:u8s4-entropy-pc-float1"


def test_cli_refuses_unknown_layers_and_bad_overrides(folder: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "out"
    assert main(["quantize", str(folder), "--exclude", "nope", "-o", str(out)]) == 2
    assert "no weighted layer named 'nope'" in capsys.readouterr().err
    assert main(["quantize", str(folder), "--override", "conv1=bits:4", "-o", str(out)]) == 2
    assert "weight:TYPE or activation:TYPE" in capsys.readouterr().err
    assert main(["quantize", str(folder), "--format", "QOperator", "--weight", "int4", "-o", str(out)]) == 2
    assert "QOperator takes 8-bit" in capsys.readouterr().err
    assert not out.exists()


def test_saved_recipes_load_as_recipe_variants_next_time(folder: Path) -> None:
    variants = quantcore.load_model_variants(folder)
    result = make_recipe(variants, Recipe(name="kept", weight="int4", calibration_images=8))
    written = save_to_folder(variants, result)
    assert written == folder / "recipes" / "kept"
    quantcore.cache_clear()
    records, notes = saved_recipes(quantcore.load_model_variants(folder))
    assert notes == [] and list(records) == [RecipeKey("kept")]
    record = records[RecipeKey("kept")]
    assert record.status is Status.LOADED and record.sha256 == result.sha256
    assert record.details["recipe"]["weight"] == "int4"
    joined, notes = store.with_recipes(quantcore.load_model_variants(folder))
    assert joined.model(RecipeKey("kept")) is not None
    assert quantcore.get_model_summary(joined)["recipes"] == 1

    # A broken saved recipe is a note; the others still load.
    (folder / "recipes" / "broken").mkdir()
    (folder / "recipes" / "broken" / "recipe.json").write_text("{}")
    (folder / "recipes" / "broken" / "model.onnx").write_bytes(b"not onnx")
    records, notes = saved_recipes(quantcore.load_model_variants(folder))
    assert list(records) == [RecipeKey("kept")] and len(notes) == 1 and "broken" in notes[0]


def test_session_recipes_by_name_and_untrusted_folders_cannot_save(folder: Path, tmp_path: Path) -> None:
    variants = quantcore.load_model_variants(folder)
    result = make_recipe(variants, Recipe(name="mine", calibration_images=8))
    store.remember(variants, result)
    joined, notes = store.with_recipes(variants, ["mine", "gone"])
    assert joined.model(RecipeKey("mine")) is result.model
    assert notes == ["recipe 'gone' is no longer kept in this server; make it again"]

    outside = Path(tmp_path / "elsewhere")
    outside.mkdir()
    for item in folder.iterdir():
        if item.is_file():
            (outside / item.name).write_bytes(item.read_bytes())
    untrusted = quantcore.load_model_variants(outside, trusted=False)
    with pytest.raises(PathNotAllowedError, match="trusted local folders"):
        save_to_folder(untrusted, make_recipe(untrusted, Recipe(name="x", calibration_images=8)))
    assert not (outside / "recipes").exists()
