"""The playground's costs against doing the same work with onnxruntime by hand, side by side in one run.

    python benchmarks/bench_quantize.py [--folder models/resnet8] [--repeats 3] [--sweep-repeats 2] [--no-ray]

(a) One recipe end to end, cold (no prepared model, no calibration ranges, no cached results): the
    calibration set drawn from the folder's samples (256 images), ``make_recipe`` (onnxruntime's
    ``quant_pre_process`` + ``quantize_static``), the per-layer SQNR against float on 256 images as the
    recipe board runs it (``layer_drift`` on the layer table cut to float and the recipe), and top-1
    accuracy on the folder's 1,000 samples. Against plain onnxruntime doing the same: ``quant_pre_process``
    and ``quantize_static`` with the same options and images, then ``session.run`` of the float and the
    quantized model on the 256 images (output SQNR) and of the quantized model on the 1,000 samples.
    Target: ours <= 1.3x plain.
(b) A second recipe changing only weight options (per-tensor instead of per-channel weights), after
    (a)'s: its calibration ranges are reused. Target: making it >= 3x faster than making the first;
    the same stages as (a) end to end are printed beside it.
(c) The sensitivity sweep of the recipe (ten weighted layers: 21 recipes, each made and run on 256
    images) on a local pool of 1 and of 2 worker processes, and on a real local Ray head with 1 and with
    2 CPUs (started here on 127.0.0.1). Target: 2 workers >= 1.6x faster than 1, on each.

Runs alternate between the two sides of each comparison; medians are compared. Exits non-zero when a
target is missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
from common import model_folder  # noqa: E402

import quantcore  # noqa: E402
from quantcore import settings  # noqa: E402
from quantcore.evaluate.batches import sample_inputs  # noqa: E402
from quantcore.evaluate.inputs import to_model_input, variant_spec  # noqa: E402
from quantcore.evaluate.metrics import accuracy, predict_logits  # noqa: E402
from quantcore.inspect.drift import layer_drift  # noqa: E402
from quantcore.inspect.layer_table import layer_table  # noqa: E402
from quantcore.load import VariantKey, results_cache  # noqa: E402
from quantcore.quantize import Recipe, calibration_set, make_recipe, with_results  # noqa: E402
from quantcore.quantize import calibration as calib  # noqa: E402
from quantcore.quantize.build import PRE_PROCESS, ort_arguments  # noqa: E402
from quantcore.quantize.executors import LocalPool, RayCluster, disconnect_ray  # noqa: E402
from quantcore.quantize.sweep import sensitivity_sweep  # noqa: E402
from quantcore.quantize.sweep_job import output_sqnr_db  # noqa: E402

END_TO_END_TARGET = 1.3
REUSE_TARGET = 3.0
SWEEP_TARGET = 1.6
CALIBRATION_IMAGES = 256
SQNR_IMAGES = 256
ACCURACY_IMAGES = 1000
RECIPE = Recipe(name="bench", activation="uint8", weight="int8", per_channel=True, calibration="MinMax",
                calibration_images=CALIBRATION_IMAGES)  # fmt: skip
WEIGHT_ONLY = replace(RECIPE, name="bench-pt", per_channel=False)


def _cold() -> None:
    """Forget every prepared model, calibration range and cached result: the first recipe of a session."""
    calib.clear_calibration_cache()
    for path in calib.cache_dir().glob("prepared-*.onnx"):
        path.unlink()
    results_cache.cache_clear()


def _timed(fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    started = time.perf_counter()
    stages = fn()
    return {**stages, "total": time.perf_counter() - started}


class Folder:
    """The folder's float model, its samples as model input, and its labels."""

    def __init__(self, folder: Path) -> None:
        settings.configure(models_root=folder.parent)
        self.variants = quantcore.load_model_variants(folder)
        record = self.variants.records[VariantKey.ONNX_FLOAT]
        self.float_path = folder / str(record.file)
        self.spec = variant_spec(self.variants, VariantKey.ONNX_FLOAT)
        inputs, _ = sample_inputs(self.variants, self.spec, images=ACCURACY_IMAGES)
        pixels, self.labels = inputs.take(0, inputs.count)
        self.inputs = to_model_input(pixels, self.spec)
        self.count = inputs.count


# ------------------------------------------------------------------ (a), (b)


def ours(data: Folder, recipe: Recipe) -> dict[str, float]:
    """The playground's path: calibration set, recipe, per-layer SQNR as the board runs it, accuracy."""
    stages: dict[str, float] = {}
    started = time.perf_counter()
    calibration = calibration_set(data.variants, images=CALIBRATION_IMAGES)
    result = make_recipe(data.variants, recipe, calibration=calibration)
    stages["make recipe"] = time.perf_counter() - started
    started = time.perf_counter()
    joined = with_results(data.variants, [result])
    full = layer_table(joined)
    keep = (VariantKey.ONNX_FLOAT, result.key)
    rows = tuple(replace(r, layers={k: v for k, v in r.layers.items() if k in keep}) for r in full.rows
                 if result.key in r.layers and VariantKey.ONNX_FLOAT in r.layers)  # fmt: skip
    table = replace(full, skeleton=VariantKey.ONNX_FLOAT, variants=keep, rows=rows)
    inputs, _ = sample_inputs(joined, data.spec, images=SQNR_IMAGES)
    report = layer_drift(joined, table=table, inputs=inputs)
    assert report.variants and len(report.variants[0].sqnr_db) == 10, report.notes
    stages["per-layer SQNR"] = time.perf_counter() - started
    started = time.perf_counter()
    accuracy(predict_logits(result.model, data.inputs), data.labels)
    stages["accuracy"] = time.perf_counter() - started
    return stages


class _Reader:
    """onnxruntime's CalibrationDataReader over fixed batches."""

    def __init__(self, inputs: np.ndarray, name: str, batch: int = calib.READER_BATCH) -> None:
        self.batches = [{name: inputs[i : i + batch]} for i in range(0, len(inputs), batch)]
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.batches)


def plain(data: Folder, recipe: Recipe, scratch: Path) -> dict[str, float]:
    """onnxruntime by hand: pre-process, quantize_static with the same options, then session.run."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    stages: dict[str, float] = {}
    started = time.perf_counter()
    prepared, out = scratch / "plain-prepared.onnx", scratch / "plain-quantized.onnx"
    quant_pre_process(str(data.float_path), str(prepared), **PRE_PROCESS)
    arguments = ort_arguments(recipe, onnx.load(str(prepared)))
    calibration = data.inputs[:CALIBRATION_IMAGES]
    quantize_static(str(prepared), str(out), _Reader(calibration, "input"), **arguments)
    stages["make recipe"] = time.perf_counter() - started
    started = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.current().threads
    floats = ort.InferenceSession(str(data.float_path), options, providers=["CPUExecutionProvider"])
    quantized = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    head = data.inputs[:SQNR_IMAGES]
    output_sqnr_db(floats.run(None, {"input": head})[0], quantized.run(None, {"input": head})[0])
    stages["per-layer SQNR"] = time.perf_counter() - started  # plain: the output SQNR only
    started = time.perf_counter()
    logits = np.concatenate([quantized.run(None, {"input": data.inputs[i : i + 250]})[0]
                             for i in range(0, len(data.inputs), 250)])  # fmt: skip
    accuracy(logits, data.labels)
    stages["accuracy"] = time.perf_counter() - started
    return stages


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _stages(label: str, medians: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v:.3f}" for k, v in medians.items() if k != "total")
    return f"  {label:<34} {medians['total']:.3f} s  ({parts})"


def recipes(data: Folder, repeats: int, scratch: Path) -> tuple[bool, bool]:
    ours(data, RECIPE)  # warm-up: imports, the float session, the page cache
    plain(data, RECIPE, scratch)
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "plain": [], "second": []}
    for _ in range(repeats):
        _cold()
        runs["ours"].append(_timed(lambda: ours(data, RECIPE)))
        runs["second"].append(_timed(lambda: ours(data, WEIGHT_ONLY)))  # the first's ranges are in the cache
        runs["plain"].append(_timed(lambda: plain(data, RECIPE, scratch)))
    first, second, by_hand = _median(runs["ours"]), _median(runs["second"]), _median(runs["plain"])
    print(f"(a) one recipe ({RECIPE.name}: u8s8 MinMax per-channel), {CALIBRATION_IMAGES} calibration images, "
          f"per-layer SQNR on {SQNR_IMAGES}, accuracy on {data.count}; median of {repeats} (seconds):")  # fmt: skip
    print(_stages("playground, cold", first))
    print(_stages("plain onnxruntime", by_hand))
    ratio_a = first["total"] / by_hand["total"]
    ok_a = ratio_a <= END_TO_END_TARGET
    print(f"  ratio playground / plain = {ratio_a:.2f} (target <= {END_TO_END_TARGET}) -> {'OK' if ok_a else 'OVER'}")
    print(f"(b) a second recipe changing only weight options ({WEIGHT_ONLY.name}: per-tensor weights):")
    print(_stages("second recipe, ranges reused", second))
    ratio_b = first["make recipe"] / second["make recipe"]
    ok_b = ratio_b >= REUSE_TARGET
    print(f"  making it: {first['make recipe']:.3f} s first / {second['make recipe']:.3f} s second = {ratio_b:.2f}x "
          f"(target >= {REUSE_TARGET}) -> {'OK' if ok_b else 'UNDER'}")  # fmt: skip
    print(f"  end to end: {first['total']:.3f} s / {second['total']:.3f} s = {first['total'] / second['total']:.2f}x "
          "(per-layer SQNR and accuracy are run again for the new model)")  # fmt: skip
    return ok_a, ok_b


# ----------------------------------------------------------------------- (c)


def _sweep_seconds(data: Folder, executor: Any) -> float:
    started = time.perf_counter()
    report = sensitivity_sweep(data.variants, RECIPE, images=SQNR_IMAGES, executor=executor)
    assert len(report.rows) == 10
    return time.perf_counter() - started


def sweeps(data: Folder, repeats: int, use_ray: bool) -> bool:
    make_recipe(data.variants, RECIPE)  # the sweep's base calibration, once (as after a recipe was made)
    ok = True
    print(f"(c) sensitivity sweep of {RECIPE.name}: 10 layers, 21 recipes made and run on {SQNR_IMAGES} images, "
          f"median of {repeats} (seconds):")  # fmt: skip
    pools = {1: LocalPool(1), 2: LocalPool(2)}
    times: dict[int, list[float]] = {1: [], 2: []}
    for pool in pools.values():
        _sweep_seconds(data, pool)  # warm-up: each pool's workers start and import onnxruntime once
    for _ in range(repeats):
        for workers, pool in pools.items():
            times[workers].append(_sweep_seconds(data, pool))
    ok &= _sweep_line("local pool", times)
    if not use_ray:
        print("  Ray: skipped (--no-ray)")
        return ok
    try:
        from tests.ray_head import ray_head
    except ImportError as exc:
        print(f"  Ray: not run ({exc}); pip install -r requirements-ray.txt")
        return False
    times = {1: [], 2: []}
    for cpus in (1, 2):
        with ray_head(cpus=cpus) as address:
            try:
                cluster = RayCluster(address)
                _sweep_seconds(data, cluster)  # warm-up: Ray's workers start and import quantcore
                for _ in range(repeats):
                    times[cpus].append(_sweep_seconds(data, cluster))
            finally:
                disconnect_ray()
    ok &= _sweep_line("Ray head on 127.0.0.1 (1 vs 2 CPUs)", times)
    return ok


def _sweep_line(label: str, times: dict[int, list[float]]) -> bool:
    one, two = statistics.median(times[1]), statistics.median(times[2])
    ratio = one / two
    ok = ratio >= SWEEP_TARGET
    runs = "; ".join(f"{k}: {', '.join(f'{t:.2f}' for t in v)}" for k, v in times.items())
    print(f"  {label}: 1 worker {one:.2f} s, 2 workers {two:.2f} s = {ratio:.2f}x (target >= {SWEEP_TARGET}) -> "
          f"{'OK' if ok else 'UNDER'}  [runs {runs}]")  # fmt: skip
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-repeats", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray half of (c)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as scratch:
        folder, origin = model_folder(args.folder, Path(scratch), samples=ACCURACY_IMAGES)
        print(f"folder: {origin}")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start; "
              f"ORT threads {settings.current().threads}")  # fmt: skip
        data = Folder(folder)
        ok_a, ok_b = recipes(data, args.repeats, Path(scratch))
        ok_c = sweeps(data, args.sweep_repeats, not args.no_ray)
        print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not (ok_a and ok_b and ok_c):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
