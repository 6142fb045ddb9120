"""Sensitivity sweep: a layer made fragile on purpose ranks first, every number matches the recipe made and run
directly, calibration runs once, and the local pool and a real local Ray head give the very same table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import quantcore
from quantcore.__main__ import main
from quantcore.data import datasets
from quantcore.errors import RecipeError
from quantcore.load import results_cache
from quantcore.quantize import Recipe, calibration_runs, clear_calibration_cache, make_recipe, weighted_nodes
from quantcore.quantize.executors import InProcess, LocalPool, RayCluster, disconnect_ray
from quantcore.quantize.sweep import cached_sweep, keep_worst_in_float, sensitivity_sweep
from quantcore.quantize.sweep_job import output_sqnr_db
from quantcore.report import figures
from quantcore.report.contents import computed_report
from quantcore.report.quantize_tables import sweep_json, sweep_rows
from tests.ray_head import ray_head
from tests.test_recipe_variants import recipe_record

FRAGILE = "stack2.conv1"
IMAGES = 16


def make_fragile(folder: Path) -> None:
    """Output channel 0 of ``stack2.conv1`` gets 100x weights and a bias that keeps it below zero (ReLU makes it
    0, in float and quantized alike): per-tensor int8 weights then take their scale from that channel and
    leave the other channels a few levels. Only this layer's weights are hurt; no activation range changes."""
    path = folder / "tiny.onnx"
    model = onnx.load(str(path))
    node = next(n for n in weighted_nodes(model) if n.layer == FRAGILE)
    conv = next(n for n in model.graph.node if n.name == node.node)
    inits = {t.name: t for t in model.graph.initializer}
    weights = numpy_helper.to_array(inits[node.weight]).copy()
    weights[0] *= 100
    bias = numpy_helper.to_array(inits[conv.input[2]]).copy()
    bias[0] = -1e4
    inits[node.weight].CopyFrom(numpy_helper.from_array(weights, node.weight))
    inits[conv.input[2]].CopyFrom(numpy_helper.from_array(bias, conv.input[2]))
    onnx.save(model, str(path))


@pytest.fixture
def folder(variant_folder: Path) -> Path:
    make_fragile(variant_folder)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (IMAGES, 3, 32, 32), dtype=np.uint8)
    datasets.save_samples(variant_folder / "samples.npz", datasets.LabelledImages(
        images, np.arange(IMAGES, dtype=np.int64) % 10, tuple(f"c{i}" for i in range(10))))  # fmt: skip
    clear_calibration_cache()
    return variant_folder


RECIPE = Recipe(name="sweep-base", calibration_images=8, per_channel=False)


def test_the_fragile_layer_ranks_first(folder: Path) -> None:
    variants = quantcore.load_model_variants(folder)
    before = calibration_runs()
    report = sensitivity_sweep(variants, RECIPE, images=IMAGES, executor=InProcess())
    assert calibration_runs() == before + 1  # once for the base; the 21 jobs read its ranges
    assert report.rows[0].layer == FRAGILE and len(report.rows) == 10
    assert report.rows[0].alone.output_sqnr_db < min(r.alone.output_sqnr_db for r in report.rows[1:]) - 6
    mixed = keep_worst_in_float(report, 1)
    assert mixed.exclude == (FRAGILE,) and mixed.name == "sweep-base-worst1-float"
    rows = sweep_rows(report)
    assert rows[0]["layer"] == FRAGILE and rows[0]["rank"] == 1
    assert sweep_json(report)["images"] == IMAGES
    assert len(figures.sweep_figure(report).data) == 2


def test_a_sweep_is_kept_and_goes_into_the_report_after_a_recipe_joins(folder: Path) -> None:
    results_cache.cache_clear()
    variants = quantcore.load_model_variants(folder)
    assert not [s for s in computed_report(variants).sections if s.key.startswith("sweep")]
    report, hit = cached_sweep(variants, RECIPE, images=IMAGES, executor=InProcess())
    again, hit_again = cached_sweep(variants, RECIPE, images=IMAGES, executor=InProcess())
    assert (hit, hit_again) == (False, True) and again is report
    other, hit_other = cached_sweep(variants, RECIPE, images=IMAGES // 2, executor=InProcess())
    assert not hit_other and other.images == IMAGES // 2

    # A recipe variant joining the set (the worst layers kept in float, say) leaves the sweeps in the report.
    joined = variants.with_recipes(recipe_record(folder, "joined", "tiny_uint8.onnx"))
    sections = [s for s in computed_report(joined).sections if s.key.startswith("sweep")]
    assert [s.title for s in sections] == ["Sensitivity sweep of sweep-base"] * 2
    by_images = {s.key: s for s in sections}
    shown = by_images[f"sweep_sweep-base_{IMAGES}"]
    assert shown.tables[0].rows == sweep_rows(report) and shown.tables[0].rows[0]["layer"] == FRAGILE
    assert len(shown.figures) == 1 and len(shown.figures[0].data) == 2
    assert shown.notes[0].startswith(f"sweep-base: {len(report.rows)} layers on {IMAGES} images")
    assert by_images[f"sweep_sweep-base_{IMAGES // 2}"].tables[0].rows == sweep_rows(other)


def test_sweep_numbers_are_the_recipes_made_and_run_directly(folder: Path) -> None:
    import onnxruntime as ort

    variants = quantcore.load_model_variants(folder)
    report = sensitivity_sweep(variants, RECIPE, images=IMAGES, executor=InProcess())
    inputs = datasets.preprocess(datasets.load_samples(folder / "samples.npz").images)
    labels = datasets.load_samples(folder / "samples.npz").labels

    def run(data: bytes) -> np.ndarray:
        return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": inputs})[0]

    floats = run((folder / "tiny.onnx").read_bytes())
    row = next(r for r in report.rows if r.layer == "stack3.conv1")
    for recipe, score in ((replace(RECIPE, name="a", only=("stack3.conv1",)), row.alone),
                          (replace(RECIPE, name="k", exclude=("stack3.conv1",)), row.kept_float),
                          (RECIPE, report.base)):  # fmt: skip
        logits = run(make_recipe(variants, recipe).data)
        assert score.output_sqnr_db == pytest.approx(output_sqnr_db(floats, logits), abs=1e-6)
        assert score.accuracy == pytest.approx(np.mean(logits.argmax(1) == labels))
        assert score.agreement == pytest.approx(np.mean(logits.argmax(1) == floats.argmax(1)))
    # "Only this layer" is onnxruntime's nodes_to_quantize: one Conv has a quantized weight.
    alone = onnx.load_from_string(make_recipe(variants, replace(RECIPE, name="a", only=("stack3.conv1",))).data)
    dq_outputs = {n.output[0] for n in alone.graph.node if n.op_type == "DequantizeLinear"}
    assert [n.name for n in alone.graph.node if n.op_type == "Conv" and n.input[1] in dq_outputs] == \
        ["/stack3/conv1/Conv"]  # fmt: skip


def test_local_pool_and_a_real_ray_head_give_the_same_table(folder: Path) -> None:
    variants = quantcore.load_model_variants(folder)
    here = sensitivity_sweep(variants, RECIPE, images=IMAGES, executor=InProcess())
    pool = sensitivity_sweep(variants, RECIPE, images=IMAGES, executor=LocalPool(2))
    assert pool.rows == here.rows and pool.base == here.base
    assert pool.executor == "a local pool of 2 worker processes"
    with ray_head(cpus=2) as address:
        try:
            on_ray = sensitivity_sweep(variants, RECIPE, images=IMAGES, executor=RayCluster(address))
        finally:
            disconnect_ray()
    assert on_ray.rows == pool.rows and on_ray.base == pool.base
    assert on_ray.executor == f"the Ray cluster at {address}" and on_ray.rows[0].layer == FRAGILE


def test_sweep_cli_ranks_and_keeps_the_worst_in_float(folder: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "out"
    code = main(["sweep", str(folder), "--name", "cli", "--calibration-images", "8", "--images", str(IMAGES),
                 "--no-per-channel",
                 "--workers", "1", "--keep-worst", "1", "-o", str(out)])  # fmt: skip
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["table"][0]["layer"] == FRAGILE and shown["executor"] == "a local pool of 1 worker process"
    assert shown["kept_worst"]["exclude"] == [FRAGILE]
    assert (out / "cli-worst1-float" / "recipe.json").is_file()
    assert main(["sweep", str(folder), "--keep-worst", "1"]) == 2
    assert "give -o DIR" in capsys.readouterr().err


def _slow_job(shared: dict, job: dict) -> dict:
    import time

    if job.get("fail"):
        raise RecipeError(f"job {job['n']} refused")
    time.sleep(shared["sleep"])
    return {"n": job["n"], "pid": __import__("os").getpid(), "seen": shared["token"]}


def test_the_kept_pool_reads_each_sweeps_shared_data_and_keeps_the_requests_deadline() -> None:
    import os
    import time

    from quantcore.deadline import run_deadline
    from quantcore.errors import RunTimeoutError

    pool = LocalPool(2)
    first = pool.run(_slow_job, {"sleep": 0.0, "token": "a"}, [{"n": i} for i in range(6)])
    second = pool.run(_slow_job, {"sleep": 0.0, "token": "b"}, [{"n": i} for i in range(6)])
    assert [r["n"] for r in first] == list(range(6)) and {r["seen"] for r in first} == {"a"}
    assert {r["seen"] for r in second} == {"b"}, "a new sweep's shared data replaces the last one's"
    workers = {r["pid"] for r in first + second}
    assert os.getpid() not in workers and len(workers) <= 2, "the same two worker processes serve both sweeps"

    with pytest.raises(RecipeError, match="job 3 refused"):
        pool.run(_slow_job, {"sleep": 0.0, "token": "c"}, [{"n": i, "fail": i == 3} for i in range(6)])

    started = time.monotonic()
    with run_deadline(1.0), pytest.raises(RunTimeoutError, match="QP_RUN_TIMEOUT_S"):
        pool.run(_slow_job, {"sleep": 0.4, "token": "d"}, [{"n": i} for i in range(40)])
    assert time.monotonic() - started < 4, "the jobs not started were dropped, not run"
    assert len(pool.run(_slow_job, {"sleep": 0.0, "token": "e"}, [{"n": 0}])) == 1, "the pool serves again"
