"""The bundled int8 and uint8 ONNX variants ship their own recipes (``models/resnet8/recipes/<name>/recipe.json``,
no model beside them): the folder still loads its five and nothing more, and each recipe.json, made again
through the command line, gives the variant's graph and weights and its per-layer SQNR within 0.01 dB."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import quantcore
from quantcore import settings
from quantcore.__main__ import main
from quantcore.data import datasets
from quantcore.inspect.drift import layer_drift
from quantcore.load import RecipeKey, VariantKey
from quantcore.quantize import make_recipe, store, with_results
from quantcore.quantize.calibration import fingerprint
from quantcore.quantize.saved import read_manifest, saved_recipes, variant_recipes
from scripts.resnet8_measure import readme_text
from scripts.resnet8_recipes import NotReproducedError, write_bundled_recipes
from scripts.resnet8_train import draw_rng

BUNDLED = settings.PROJECT_ROOT / "models" / "resnet8"
SHIPPED = {VariantKey.ONNX_INT8: "resnet8_int8", VariantKey.ONNX_UINT8: "resnet8_uint8"}
IMAGES = 256


def _recipe_json(key: VariantKey) -> Path:
    return BUNDLED / "recipes" / SHIPPED[key] / "recipe.json"


def _weighted(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Conv/Gemm node name -> (the tensor it writes, that tensor after the Q/DQ pair after it, if any).

    onnxruntime drops a ReLU after a quantized conv (the quantized range clips at zero) and gives the conv
    the ReLU's output name, so the layer's value is the one after its QuantizeLinear/DequantizeLinear.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def after_qdq(tensor: str) -> str:
        for q in consumers.get(tensor, []):
            if q.op_type == "QuantizeLinear":
                dq = next(n for n in consumers[q.output[0]] if n.op_type == "DequantizeLinear")
                return dq.output[0]
        return tensor

    return {n.name: (n.output[0], after_qdq(n.output[0])) for n in model.graph.node if n.op_type in ("Conv", "Gemm")}


def _tapped(model: onnx.ModelProto, tensors: list[str], inputs: np.ndarray) -> dict[str, np.ndarray]:
    """``tensors`` of one plain onnxruntime run (each made a graph output)."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    have = {o.name for o in tapped.graph.output}
    tapped.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in have)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # each step as written
    session = ort.InferenceSession(tapped.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip(tensors, session.run(tensors, {"input": inputs}), strict=True))


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((reference - other) ** 2.0)))


def _per_layer_sqnr(float_model: onnx.ModelProto, model: onnx.ModelProto, inputs: np.ndarray) -> dict[str, float]:
    """Each weighted layer's value in the quantized graph against the same tensor of the float graph."""
    written = _weighted(model)
    # The quantized graph renames the tensor its last layer writes (the graph output follows its Q/DQ pair).
    same = {layer: raw.removesuffix("_QuantizeLinear_Input") for layer, (raw, _) in written.items()}
    floats = _tapped(float_model, list(same.values()), inputs)
    quantized = _tapped(model, [seen for _, seen in written.values()], inputs)
    return {layer: _sqnr_db(floats[same[layer]], quantized[seen]) for layer, (_, seen) in written.items()}


def _samples() -> np.ndarray:
    data = datasets.load_samples(BUNDLED / "samples.npz")
    return datasets.preprocess(data.images[:IMAGES])


def test_the_bundled_folder_loads_its_five_and_knows_their_recipes() -> None:
    variants = quantcore.load_model_variants(BUNDLED)
    joined, notes = store.with_recipes(variants)
    assert notes == [] and list(joined.records) == list(VariantKey)  # no recipe variant: the variants are the files
    assert quantcore.get_model_summary(joined)["total_loaded"] == 5
    records, notes = saved_recipes(variants)
    assert records == {} and notes == []
    made_by = {r.key: r for r in variant_recipes(variants)}
    assert set(made_by) == set(SHIPPED)
    for key, name in SHIPPED.items():
        assert made_by[key].current and made_by[key].file == f"recipes/{name}/recipe.json"
        assert made_by[key].recipe == read_manifest(_recipe_json(key))[0]
        assert sorted(p.name for p in _recipe_json(key).parent.iterdir()) == ["recipe.json"]  # no second model
        record = variants.records[key]
        assert made_by[key].manifest["variant"] == {"key": str(key), "file": record.file, "sha256": record.sha256,
                                                    "bytes": record.bytes, "note": made_by[key].manifest["variant"]
                                                    ["note"]}  # fmt: skip
        assert hashlib.sha256((BUNDLED / record.file).read_bytes()).hexdigest() == record.sha256


def test_each_shipped_recipe_calibrates_on_the_builds_own_draw() -> None:
    # The build (scripts/build_resnet8.py): the whole train split, stratified_split with the "calibration" stream.
    card = json.loads((BUNDLED / "model_card.json").read_text())
    assert datasets.FASHION_MNIST_DIR.is_dir(), "Debian's dataset-fashion-mnist is needed to rebuild the variants"
    train = datasets.load_fashion_mnist("train", datasets.FASHION_MNIST_DIR)
    picked, _ = datasets.stratified_split(train.labels, card["calibration"]["per_class"],
                                          draw_rng(card["seed"], "calibration"))  # fmt: skip
    expected = fingerprint(datasets.preprocess(train.images[picked]))
    for key in SHIPPED:
        recipe, manifest = read_manifest(_recipe_json(key))
        assert manifest["calibration"]["sha256"] == expected
        assert manifest["calibration"]["count"] == card["calibration"]["images"] == len(picked)
        assert str(recipe.calibration) == card["calibration"]["method"] and recipe.per_channel
        assert str(recipe.activation) == {VariantKey.ONNX_INT8: "int8", VariantKey.ONNX_UINT8: "uint8"}[key]


def test_rebuilding_each_recipe_json_reproduces_its_variant(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    float_model = onnx.load(BUNDLED / "resnet8.onnx")
    inputs = _samples()
    for key, name in SHIPPED.items():
        assert main(["quantize", str(BUNDLED), "--recipe", str(_recipe_json(key)), "-o", str(tmp_path)]) == 0
        shown = json.loads(capsys.readouterr().out)
        manifest = json.loads(_recipe_json(key).read_text())
        rebuilt_path = tmp_path / name / "model.onnx"
        assert shown["recipe"] == f"recipe:{name}" and shown["sha256"] == manifest["model"]["sha256"]
        rebuilt, bundled = onnx.load(rebuilt_path), onnx.load(BUNDLED / manifest["variant"]["file"])

        # The same weights and graph; the bundled file adds only the build's metadata.
        ours = {t.name: numpy_helper.to_array(t) for t in rebuilt.graph.initializer}
        theirs = {t.name: numpy_helper.to_array(t) for t in bundled.graph.initializer}
        assert ours.keys() == theirs.keys() and len(ours) > 30
        for tensor, value in ours.items():
            assert value.dtype == theirs[tensor].dtype and np.array_equal(value, theirs[tensor]), tensor
        assert [(n.op_type, list(n.input), list(n.output)) for n in rebuilt.graph.node] == [
            (n.op_type, list(n.input), list(n.output)) for n in bundled.graph.node]  # fmt: skip

        # Per-layer SQNR against float, from plain onnxruntime runs of the three files.
        mine, bundled_db = _per_layer_sqnr(float_model, rebuilt, inputs), _per_layer_sqnr(float_model, bundled, inputs)
        assert len(mine) == 10 and mine.keys() == bundled_db.keys()
        for layer, db in bundled_db.items():
            assert np.isfinite(db) and db > 15, (layer, db)  # a real quantization, not a copy of the float graph
            assert abs(mine[layer] - db) <= 0.01, (key, layer, mine[layer], db)


def test_the_app_shows_the_same_per_layer_sqnr_for_a_rebuilt_recipe() -> None:
    variants = quantcore.load_model_variants(BUNDLED)
    results = [make_recipe(variants, read_manifest(_recipe_json(key))[0]) for key in SHIPPED]
    joined = with_results(variants, results)
    report = layer_drift(joined, images=64, batch_size=64)
    by = {d.variant: d for d in report.variants}
    float_model, inputs = onnx.load(BUNDLED / "resnet8.onnx"), _samples()[:64]
    for key, name in SHIPPED.items():
        shown, bundled = np.array(by[RecipeKey(name)].sqnr_db, float), np.array(by[key].sqnr_db, float)
        assert np.all(np.isfinite(bundled)) and len(shown) == len(bundled) == 10
        np.testing.assert_allclose(shown, bundled, atol=0.01)
        assert abs(by[RecipeKey(name)].output_sqnr_db - by[key].output_sqnr_db) <= 0.01
        # What the app shows is what plain onnxruntime runs give (layer "/stack2/shortcut/Conv" is row
        # "5. stack2.shortcut").
        plain = _per_layer_sqnr(float_model, joined.model(RecipeKey(name)), inputs)
        rows = [label.split(". ", 1)[1] for label in report.layers]
        expected = [plain["/" + row.replace(".", "/") + ("/Gemm" if row == "fc" else "/Conv")] for row in rows]
        np.testing.assert_allclose(shown, expected, atol=0.01)
        logits = _tapped(variants.model(key), ["logits"], inputs)["logits"]
        output_db = _sqnr_db(_tapped(float_model, ["logits"], inputs)["logits"], logits)
        assert by[key].output_sqnr_db == pytest.approx(output_db, abs=0.01)


def test_the_script_writes_the_shipped_files_and_refuses_a_recipe_that_does_not_reproduce(models_root: Path) -> None:
    copy = Path(shutil.copytree(BUNDLED, models_root / "resnet8"))
    shutil.rmtree(copy / "recipes")
    card = json.loads((copy / "model_card.json").read_text())
    per_class = card["calibration"]["per_class"]
    written = write_bundled_recipes(copy, datasets.FASHION_MNIST_DIR, seed=card["seed"], per_class=per_class)
    assert [p.relative_to(copy) for p in written] == [_recipe_json(k).relative_to(BUNDLED) for k in SHIPPED]
    for key in SHIPPED:
        assert json.loads((copy / _recipe_json(key).relative_to(BUNDLED)).read_text()) == json.loads(
            _recipe_json(key).read_text())  # fmt: skip
    # The committed README names them as the build writes it.
    assert readme_text(card, [p.relative_to(copy).as_posix() for p in written]) == (BUNDLED / "README.md").read_text()

    # A variant file that is not what its recipe makes: the recipe.json now says so, and no new one is written.
    shutil.copyfile(copy / "resnet8_uint8.onnx", copy / "resnet8_int8.onnx")
    quantcore.cache_clear()
    _, notes = saved_recipes(quantcore.load_model_variants(copy))
    assert notes == ["recipes/resnet8_int8/recipe.json describes onnx_int8 as it was made; "
                     "onnx_int8's file has changed since"]  # fmt: skip
    with pytest.raises(NotReproducedError, match=r"does not make resnet8_int8\.onnx's graph"):
        write_bundled_recipes(copy, datasets.FASHION_MNIST_DIR, seed=card["seed"], per_class=per_class)
