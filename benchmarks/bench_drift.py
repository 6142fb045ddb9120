"""Per-layer SQNR vs plain inference of the same images through every variant, and its memory at two N.

    python benchmarks/bench_drift.py [--folder models/resnet8] [--images 256] [--repeats 5] [--memory 256 1024]
                                     [--large-images 256] [--budget-mb 64]

Time: in one process, alternately, (a) plain inference — each loaded
variant's predictor (``quantcore.evaluate``, as the app runs it) over the N
images, 32 at a time — and (b) ``layer_drift`` over the same N images (taps on
every matched layer, float references run once per batch, running sums).
Both warm up first. Target: median (b) / median (a) <= 3.

Memory: for each N, a fresh process warms up on 32 images, then runs
``layer_drift`` on N generated images while a thread samples its resident
memory; the growth over the pre-run RSS, and tracemalloc's peak of Python and
numpy allocations, must not grow with N (1,024 within 20 % or 8 MB of 256).

A 224x224 model (a small CNN built here, exported and quantized S8S8 and
U8S8 by onnxruntime): the same time comparison over ``--large-images``
generated images, target <= 1.5; and one run in a fresh process with
``QP_MAX_ACTIVATION_MB=--budget-mb``, where the batch shrinks to fit the
budget and the peak RSS growth must stay within the budget + 20 %.

Without a complete ``--folder`` the five tiny test variants are built in a
temp dir (said so in the output). Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from common import model_folder, peak_rss_growth  # noqa: E402

import quantcore  # noqa: E402
from quantcore import settings  # noqa: E402
from quantcore.backends import predictor_for  # noqa: E402
from quantcore.evaluate.batches import generated_inputs, sample_inputs  # noqa: E402
from quantcore.evaluate.inputs import input_spec, to_model_input, variant_spec  # noqa: E402
from quantcore.inspect.drift import layer_drift  # noqa: E402
from quantcore.inspect.layer_table import build_layer_table  # noqa: E402

logger = logging.getLogger("bench_drift")

TIME_TARGET = 3.0
LARGE_TIME_TARGET = 1.5
MEMORY_TOLERANCE = (1.2, 8.0)  # ratio, or MB: whichever is looser
BATCH_SIZE = 32


def _load(folder: Path) -> quantcore.ModelVariants:
    settings.configure(models_root=folder.parent)
    return quantcore.load_model_variants(folder)


# ------------------------------------------------------------------------ time


def time_ratio(folder: Path, images: int, repeats: int) -> dict[str, Any]:
    variants = _load(folder)
    loaded = [k for k in quantcore.VariantKey if variants[k] is not None]
    predictors = {k: predictor_for(variants[k]) for k in loaded}
    specs = {k: variant_spec(variants, k) for k in loaded}
    inputs, notes = sample_inputs(variants, input_spec(variants), images=images)
    table = build_layer_table(variants)

    def plain() -> None:
        # The same work the app does to feed a variant: its own input of the pixels, a batch at a time.
        for key, predict in predictors.items():
            for batch, _ in inputs.batches(BATCH_SIZE):
                predict(to_model_input(batch, specs[key]))

    def drift() -> None:
        layer_drift(variants, table=table, inputs=inputs, batch_size=BATCH_SIZE)

    plain()  # warm-up: sessions, TorchScript's first runs, page cache
    drift()
    timings: dict[str, list[float]] = {"plain": [], "drift": []}
    for _ in range(repeats):
        for name, run in (("plain", plain), ("drift", drift)):
            started = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - started)
    plain_s, drift_s = statistics.median(timings["plain"]), statistics.median(timings["drift"])
    return {
        "variants": [str(k) for k in loaded],
        "images": inputs.count,
        "source": inputs.description,
        "notes": notes,
        "plain_seconds": timings["plain"],
        "drift_seconds": timings["drift"],
        "plain_median": plain_s,
        "drift_median": drift_s,
        "ratio": drift_s / plain_s,
    }


# ---------------------------------------------------------------------- memory


def memory_child(folder: Path, images: int) -> dict[str, Any]:
    """Run in a fresh process: RSS growth and tracemalloc peak of one ``layer_drift`` over ``images``."""
    variants = _load(folder)
    table = build_layer_table(variants)
    spec = input_spec(variants)
    layer_drift(variants, table=table, inputs=generated_inputs(spec, BATCH_SIZE), batch_size=BATCH_SIZE)
    with peak_rss_growth() as rss:
        tracemalloc.start()
        report = layer_drift(variants, table=table, inputs=generated_inputs(spec, images, seed=1),
                             batch_size=BATCH_SIZE)  # fmt: skip
        batch = report.batch_size
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "images": report.images,
        "rss_before_mb": round(rss["before"], 1),
        "rss_growth_mb": round(rss["growth"], 1),
        "traced_peak_mb": round(traced_peak / 2**20, 2),
        "batch_size": batch,
    }


def memory(folder: Path, counts: list[int], budget_mb: int | None = None) -> list[dict[str, Any]]:
    results = []
    env = {**os.environ, **({"QP_MAX_ACTIVATION_MB": str(budget_mb)} if budget_mb else {})}
    for count in counts:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(count), "--folder", str(folder)],
            check=True, capture_output=True, text=True, env=env,
        )  # fmt: skip
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


# ---------------------------------------------------------- a 224x224 model


def build_large_model(folder: Path) -> Path:
    """A small CNN at 224x224 (as edge vision models are), exported to ONNX and quantized S8S8 and U8S8."""
    import numpy as np
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from torch import nn

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for ins, outs, stride in ((3, 16, 2), (16, 32, 2), (32, 64, 2), (64, 128, 2), (128, 128, 1)):
        layers += [nn.Conv2d(ins, outs, 3, stride, 1), nn.BatchNorm2d(outs), nn.ReLU()]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)).eval()
    float_path = folder / "large224.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(float_path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})  # fmt: skip
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (1, 3, 224, 224)).astype(np.float32) / 255 for _ in range(16)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"input": x} for x in calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    for name, activation in (("large224_int8.onnx", QuantType.QInt8), ("large224_uint8.onnx", QuantType.QUInt8)):
        quantize_static(str(float_path), str(folder / name), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=activation, weight_type=QuantType.QInt8)  # fmt: skip
    return folder


def _within(small: float, large: float) -> bool:
    ratio, slack = MEMORY_TOLERANCE
    return large <= max(small * ratio, small + slack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", type=int, nargs="*", default=[256, 1024])
    parser.add_argument("--large-images", type=int, default=256, help="images for the 224x224 model (0: skip it)")
    parser.add_argument("--budget-mb", type=int, default=64, help="QP_MAX_ACTIVATION_MB for the 224x224 memory run")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")

    if args.child is not None:
        print(json.dumps(memory_child(args.folder, args.child)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder, origin = model_folder(args.folder, Path(scratch))
        print(f"folder: {origin}")
        timing = time_ratio(folder, args.images, args.repeats)
        print(f"variants: {', '.join(timing['variants'])}; {timing['images']} images from {timing['source']}")
        print(f"plain inference, all variants: median {timing['plain_median']:.3f} s "
              f"(runs {', '.join(f'{t:.3f}' for t in timing['plain_seconds'])})")  # fmt: skip
        print(f"per-layer SQNR, all variants:  median {timing['drift_median']:.3f} s "
              f"(runs {', '.join(f'{t:.3f}' for t in timing['drift_seconds'])})")  # fmt: skip
        time_ok = timing["ratio"] <= TIME_TARGET
        print(f"ratio SQNR / plain = {timing['ratio']:.2f} (target <= {TIME_TARGET}) -> {'OK' if time_ok else 'OVER'}")
        memory_ok = True
        if len(args.memory) >= 2:
            rows = memory(folder, args.memory)
            for row in rows:
                print(f"N={row['images']:>5}: RSS before {row['rss_before_mb']} MB, growth during the run "
                      f"{row['rss_growth_mb']} MB, tracemalloc peak {row['traced_peak_mb']} MB")  # fmt: skip
            small, large = rows[0], rows[-1]
            memory_ok = _within(small["rss_growth_mb"], large["rss_growth_mb"]) and _within(
                small["traced_peak_mb"], large["traced_peak_mb"]
            )
            print(f"memory N={large['images']} vs N={small['images']}: "
                  f"{'independent of N -> OK' if memory_ok else 'GROWS with N'}")  # fmt: skip
        large_ok = True
        if args.large_images:
            large_ok = large_model(Path(scratch) / "large224", args.large_images, args.repeats, args.budget_mb)
    if not (time_ok and memory_ok and large_ok):
        raise SystemExit(1)


def large_model(folder: Path, images: int, repeats: int, budget_mb: int) -> bool:
    """The 224x224 model: time against plain inference, and peak RSS growth against the activation budget."""
    build_large_model(folder)
    timing = time_ratio(folder, images, repeats)
    print(f"224x224 model ({', '.join(timing['variants'])}), {timing['images']} images from {timing['source']}:")
    print(f"  plain inference median {timing['plain_median']:.3f} s, per-layer SQNR median "
          f"{timing['drift_median']:.3f} s")  # fmt: skip
    time_ok = timing["ratio"] <= LARGE_TIME_TARGET
    print(f"  ratio SQNR / plain = {timing['ratio']:.2f} (target <= {LARGE_TIME_TARGET}) -> "
          f"{'OK' if time_ok else 'OVER'}")  # fmt: skip
    row = memory(folder, [images], budget_mb)[0]
    limit = budget_mb * 1.2
    memory_ok = row["rss_growth_mb"] <= limit
    print(f"  QP_MAX_ACTIVATION_MB={budget_mb}: batches of {row['batch_size']}, RSS growth {row['rss_growth_mb']} MB "
          f"(budget + 20 % = {limit:.0f} MB) -> {'OK' if memory_ok else 'OVER'}")  # fmt: skip
    return time_ok and memory_ok


if __name__ == "__main__":
    main()
