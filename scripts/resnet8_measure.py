"""Measure a written ResNet8 folder: reload every file, score it on the test set and samples, time it, and
write the card's figures and README. Also the folder's layout and the targets its card is held to.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quantcore import evaluate
from quantcore.backends import predictor_for
from quantcore.data import datasets
from quantcore.data.datasets import LabelledImages
from quantcore.load import load_onnx_model, load_pytorch_model
from quantcore.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

STEM = "resnet8"
DEFAULT_OUT = PROJECT_ROOT / "models" / STEM
VARIANT_FILES = {
    "onnx_float": f"{STEM}.onnx",
    "onnx_int8": f"{STEM}_int8.onnx",
    "onnx_uint8": f"{STEM}_uint8.onnx",
    "pytorch_float": f"{STEM}.pt",
    "pytorch_int8": f"{STEM}_int8.pt",
}
QUANTIZED = ("onnx_int8", "onnx_uint8", "pytorch_int8")
FLOAT_REFERENCE = "onnx_float"  # the model ORT quantized: what "agreement with float" compares to
THREADS = 2
BENCH_BATCH_SIZES = (1, 64)
BENCH_ROUNDS, BENCH_WARMUP = 5, 2  # variants take turns in 5 blocks, each after 2 untimed runs
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
TARGET_FLOAT_ACCURACY = 0.90
TARGET_MAX_DROP_POINTS = 1.0
COMMANDS = {
    "build": "python -m scripts.build_resnet8",
    "evaluate": "python -m scripts.build_resnet8 --evaluate-only",
}


def load_written(folder: Path) -> dict[str, Any]:
    """Every variant file in ``folder`` read back through quantcore's loaders, as a user would load it."""
    return {
        key: (load_onnx_model if name.endswith(".onnx") else load_pytorch_model)(folder / name)
        for key, name in VARIANT_FILES.items()
    }


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scores(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    correct = int(np.sum(np.argmax(logits, axis=1) == labels))
    return {
        "images": len(labels),
        "correct": correct,
        "accuracy": round(correct / len(labels), 4) if len(labels) else 0.0,
        "agreement_with_float": round(evaluate.agreement(logits, reference), 4),
    }


def measure_folder(folder: Path, test: LabelledImages, samples: LabelledImages, runs: int) -> dict[str, Any]:
    """Accuracy (test set and samples), agreement with float, and speed of every variant file in ``folder``."""
    variants = load_written(folder)
    test_x, samples_x = datasets.preprocess(test.images), datasets.preprocess(samples.images)
    predictors = {key: predictor_for(v, threads=THREADS) for key, v in variants.items()}
    test_logits = {k: evaluate.predict_logits(p, test_x) for k, p in predictors.items()}
    samples_logits = {k: evaluate.predict_logits(p, samples_x) for k, p in predictors.items()}
    speeds = {
        f"batch_{b}": evaluate.compare_throughput(
            predictors, samples_x, batch_size=b, runs=runs, rounds=min(BENCH_ROUNDS, runs), warmup_runs=BENCH_WARMUP
        )
        for b in BENCH_BATCH_SIZES
    }
    results: dict[str, Any] = {}
    for key in predictors:
        path = folder / VARIANT_FILES[key]
        speed = {batch: round(by_key[key].best_images_per_second, 1) for batch, by_key in speeds.items()}
        median_speed = {batch: round(by_key[key].images_per_second, 1) for batch, by_key in speeds.items()}
        results[key] = {
            "file": path.name,
            "bytes": path.stat().st_size,
            "sha256": sha256_of(path),
            "test": _scores(test_logits[key], test.labels, test_logits[FLOAT_REFERENCE]),
            "samples": _scores(samples_logits[key], samples.labels, samples_logits[FLOAT_REFERENCE]),
            "images_per_second": speed,
            "images_per_second_median_run": median_speed,
        }
        log.info(
            "%-13s test %.4f  samples %.4f  agree %.4f  %s img/s",
            key,
            results[key]["test"]["accuracy"],
            results[key]["samples"]["accuracy"],
            results[key]["test"]["agreement_with_float"],
            speed,
        )
    return results


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    # Keras (the MLPerf Tiny reference) counts BatchNorm running statistics as parameters too.
    trainable = sum(p.numel() for p in model.parameters())
    statistics = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return {"parameters": trainable + statistics, "trainable_parameters": trainable}


def fastest_variants(results: dict[str, Any]) -> dict[str, str]:
    return {
        f"batch_{b}": max(results, key=lambda k: results[k]["images_per_second"][f"batch_{b}"])
        for b in BENCH_BATCH_SIZES
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def targets_met(results: dict[str, Any]) -> dict[str, Any]:
    float_acc = results[FLOAT_REFERENCE]["test"]["accuracy"]
    drops = {k: round(100 * (float_acc - results[k]["test"]["accuracy"]), 2) for k in QUANTIZED}
    return {
        "float_test_accuracy_min": TARGET_FLOAT_ACCURACY,
        "max_quantized_drop_points": TARGET_MAX_DROP_POINTS,
        "quantized_drop_points": drops,
        "met": float_acc >= TARGET_FLOAT_ACCURACY and all(d <= TARGET_MAX_DROP_POINTS for d in drops.values()),
    }


# ---------------------------------------------------------------- the card


def readme_text(card: dict[str, Any], recipes: Sequence[str] = ()) -> str:
    """The folder's README.md from its card; ``recipes``: the ONNX variants' recipe.json files, if written."""
    arch, data, pre, bench = card["architecture"], card["dataset"], card["preprocessing"], card["benchmark"]
    training, calibration = card["training"], card["calibration"]
    shipped = ""
    if recipes:
        listed = " and ".join(f"`{r}`" for r in recipes)
        folder = f"models/{card['model']}"
        shipped = (f"The ONNX variants' own recipes: {listed}, with no second copy of the models;\n"
                   f"`python -m quantcore quantize {folder} --recipe {folder}/{recipes[0]} -o out/`\n"
                   "makes the same graph and weights again.\n")  # fmt: skip
    rows = "\n".join(
        f"| `{r['file']}` | {key} | {r['bytes']:,} | {100 * r['test']['accuracy']:.2f} % "
        f"| {100 * r['samples']['accuracy']:.1f} % | {100 * r['test']['agreement_with_float']:.2f} % "
        f"| {r['images_per_second']['batch_1']:,.0f} | {r['images_per_second']['batch_64']:,.0f} |"
        for key, r in card["variants"].items()
    )
    return f"""# ResNet8 on {data["name"]}

The MLPerf Tiny ResNet8 topology ({arch["parameters"]:,} parameters, {arch["trainable_parameters"]:,} trainable),
trained on {data["name"]} ({data["licence"]} licence) and quantized to int8 for ONNX Runtime and PyTorch.
`model_card.json` holds every figure below, the full recipe and a sha256 per file; each ONNX file
also carries its labels and preprocessing as JSON in `metadata_props`.

- **Input:** {pre["layout"]} {pre["dtype"]} {pre["shape"]}, `{pre["formula"]}`, no mean/std subtraction;
  {pre["pixels"]}.
- **Labels:** {", ".join(card["labels"])}.
- **samples.npz:** {card["samples"]["images"]:,} test images ({card["samples"]["per_class"]} per class) with labels,
  {card["samples"]["arrays"]}.

| file | variant | bytes | test accuracy ({data["test_images"]:,}) | samples.npz ({card["samples"]["images"]:,}) \
| top-1 agreement with float | img/s batch 1 | img/s batch 64 |
|---|---|---:|---:|---:|---:|---:|---:|
{rows}

Speed: best of {bench["runs"]} timed runs per variant and batch size, {bench["threads"]} threads, {bench["cpu"]},
onnxruntime {bench["onnxruntime"]}, torch {bench["torch"]}. The machine was shared (1-minute load average
{bench["load_average_1min"]["before"]} before, {bench["load_average_1min"]["after"]} after): read it as a ranking;
median runs are in the card.
Fastest: {card["fastest"]["batch_1"]} at batch 1, {card["fastest"]["batch_64"]} at batch 64.

Training: {training["epochs"]} epochs, batch {training["batch_size"]}, {training["optimizer"]}, {training["schedule"]};
{training["augmentation"]}; seed {training["seed"]}.
Quantization: ONNX Runtime `quantize_static`, {calibration["method"]} calibration on {calibration["images"]}
training images ({calibration["per_class"]} per class); `resnet8_int8.onnx` is S8S8, `resnet8_uint8.onnx` U8S8,
both QDQ with per-channel int8 weights. `resnet8_int8.pt` is torch.ao FX int8 (x86), saved as TorchScript.
{shipped}
- Rebuild everything: `{card["reproduce"]["build"]}`
- Re-measure these files against the card: `{card["reproduce"]["evaluate"]}`
"""
