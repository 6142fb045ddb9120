"""Rebuild the bundled ResNet8 variant folder from real data, reproducibly.

    python -m scripts.build_resnet8                  # Fashion-MNIST (Debian's dataset-fashion-mnist) -> models/resnet8
    python -m scripts.build_resnet8 --cifar10 DIR    # from a cifar-10-batches-py folder instead
    python -m scripts.build_resnet8 --evaluate-only  # re-measure the folder's files against its model_card.json

On a CPU shared with other work, prefix ``OMP_WAIT_POLICY=PASSIVE``: spinning
OpenMP threads steal the time their partner needs (2-thread training ran 4-5x
slower); passive waits change nothing but speed (same files, bit for bit).

Stages: train the core's ResNet8 (seeded, one-cycle schedule, light
augmentation) -> export float ONNX -> ORT static QDQ quantization to S8S8 and
U8S8 -> state_dict checkpoint -> torch.ao FX int8 saved as TorchScript ->
reload every written file and measure it -> model_card.json and README.md.
Every figure in the card comes from the run that wrote the files.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from quantcore import evaluate
from quantcore.backends import predictor_for
from quantcore.data import datasets
from quantcore.data.datasets import LabelledImages
from quantcore.errors import DatasetError
from quantcore.load import CARD_NAME, SAMPLES_NAME, load_onnx_model, load_pytorch_model
from quantcore.models.resnet8 import build_resnet8
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


@dataclass(frozen=True)
class DataSource:
    """The data a build draws on, and what the card should say about it."""

    name: str
    licence: str
    origin: str
    pixels: str  # how the stored images became 3x32x32 uint8
    load: Callable[[datasets.Split], LabelledImages]  # read on demand: --evaluate-only needs no train split


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    max_lr: float = 4e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.2
    shift_pixels: int = 2
    hflip: bool = True


# ---------------------------------------------------------------- data


FASHION_MNIST_PIXELS = "28x28 grey zero-padded by 2 px on every side to 32x32, repeated to 3 identical channels"


def load_source(args: argparse.Namespace) -> DataSource:
    """The train/test data named on the command line (Fashion-MNIST unless told otherwise)."""
    if args.cifar10:
        return DataSource(
            name="CIFAR-10",
            licence="no licence stated by its authors; see https://www.cs.toronto.edu/~kriz/cifar.html",
            origin=f"cifar-10-batches-py folder {args.cifar10}",
            pixels="32x32 RGB as stored",
            load=lambda split: datasets.load_cifar10(args.cifar10, split),
        )
    if args.from_samples:
        # For smoke builds where Debian's package is absent: split the shipped subset in two.
        subset = datasets.load_samples(args.from_samples)
        per_class = int(np.bincount(subset.labels).min()) // 2
        train_idx, test_idx = datasets.stratified_split(subset.labels, per_class, _rng(args.seed, "split"))
        halves = {"train": train_idx, "test": test_idx}
        return DataSource(
            name="Fashion-MNIST (samples subset)",
            licence="MIT",
            origin=f"{args.from_samples}, split in two stratified halves",
            pixels=FASHION_MNIST_PIXELS,
            load=lambda split: subset.take(halves[split]),
        )
    root = Path(args.fashion_mnist)
    return DataSource(
        name="Fashion-MNIST",
        licence="MIT",
        origin=f"Debian package dataset-fashion-mnist ({root})",
        pixels=FASHION_MNIST_PIXELS,
        load=lambda split: datasets.load_fashion_mnist(split, root),
    )


_DRAWS = ("train", "test", "samples", "calibration", "split")


def _rng(seed: int, draw: str) -> np.random.Generator:
    # One stream per draw, so --evaluate-only can redo the test draw alone.
    return np.random.default_rng([seed, _DRAWS.index(draw)])


def _limit(data: LabelledImages, per_class: int | None, seed: int, draw: str) -> LabelledImages:
    if per_class is None:
        return data
    picked, _ = datasets.stratified_split(data.labels, per_class, _rng(seed, draw))
    return data.take(picked)


def _preprocessing(source: DataSource) -> dict[str, Any]:
    return {**datasets.PREPROCESSING, "pixels": source.pixels}


# ---------------------------------------------------------------- training


def _augment(images: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    # Random shifts with zero fill (a padded random crop) and left-right flips: clothes stay clothes.
    s = config.shift_pixels
    if s:
        padded = F.pad(images, (s, s, s, s))
        offsets = torch.randint(0, 2 * s + 1, (len(images), 2), generator=generator).tolist()
        images = torch.stack([padded[i, :, dy : dy + 32, dx : dx + 32] for i, (dy, dx) in enumerate(offsets)])
    if config.hflip:
        flip = torch.rand(len(images), generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images


def train(data: LabelledImages, config: TrainConfig) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """A ResNet8 trained on ``data`` with AdamW and a one-cycle schedule; returns it and per-epoch stats."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_resnet8()
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * steps_per_epoch
    warmup = config.warmup_fraction
    if math.isclose(warmup * total_steps, 1.0):  # OneCycleLR divides by (warm-up steps - 1): smoke runs only
        warmup = 1.5 / total_steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.max_lr, total_steps=total_steps, pct_start=warmup)
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        start, loss_sum, correct = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(data), generator=generator)
        for first in range(0, len(data), config.batch_size):
            idx = order[first : first + config.batch_size]
            x = _augment(images[idx], config, generator).float().div_(255.0)  # == datasets.preprocess
            logits = model(x)
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        stats = {
            "epoch": epoch,
            "train_loss": round(loss_sum / len(data), 4),
            "train_accuracy": round(correct / len(data), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        history.append(stats)
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.4f  %.0f s",
            epoch,
            config.epochs,
            stats["train_loss"],
            stats["train_accuracy"],
            stats["seconds"],
        )
    return model.eval(), history


# ---------------------------------------------------------------- writing the variants


def _onnx_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    keep = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=json.dumps(value))


def export_onnx(model: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """Float ONNX (opset 17) with a dynamic batch axis, named input and output, and ``metadata``."""
    example = torch.zeros(1, *datasets.IMAGE_SHAPE)
    with warnings.catch_warnings():
        # The TorchScript exporter is the one chosen here (the dynamo one needs onnxscript).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    proto = onnx.load(path)
    _onnx_metadata(proto, metadata)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


class _BatchReader(CalibrationDataReader):
    """Feeds calibration images to ORT in batches; MinMax over batches equals MinMax over images."""

    def __init__(self, inputs: np.ndarray, batch_size: int = 50) -> None:
        self._batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
        self._iter: Iterator[np.ndarray] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize_onnx(
    float_path: Path, out_path: Path, calibration: np.ndarray, activations: QuantType, metadata: dict[str, Any]
) -> None:
    """Static QDQ quantization with MinMax calibration: int8 per-channel weights, ``activations`` as given."""
    quantize_static(
        str(float_path),
        str(out_path),
        _BatchReader(calibration),
        quant_format=QuantFormat.QDQ,
        calibrate_method=CalibrationMethod.MinMax,
        activation_type=activations,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    proto = onnx.load(out_path)
    _onnx_metadata(proto, metadata)
    onnx.save(proto, out_path)


def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """A state_dict checkpoint of plain types only, so ``torch.load(weights_only=True)`` reads it."""
    torch.save({"arch": STEM, "state_dict": model.state_dict(), **metadata}, path)


def save_torch_int8(model: torch.nn.Module, path: Path, calibration: np.ndarray, metadata: dict[str, Any]) -> None:
    """Post-training int8 via torch.ao FX (x86 backend), traced and saved as TorchScript.

    TorchScript because a pickled FX int8 GraphModule does not load back;
    the metadata travels inside the archive as ``metadata.json``.
    """
    torch.backends.quantized.engine = "x86"
    example = torch.from_numpy(calibration[:1])
    with warnings.catch_warnings():
        # torch.ao warns that it is deprecated at every step; it still is the in-tree PTQ.
        warnings.filterwarnings("ignore", module=r"torch\.ao\.")
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization")
        # Tracing bakes scales and zero points in as constants, which is what we want.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (example,))
        with torch.no_grad():
            for first in range(0, len(calibration), 50):
                prepared(torch.from_numpy(calibration[first : first + 50]))
            quantized = convert_fx(prepared)
            scripted = torch.jit.trace(quantized, example)
    torch.jit.save(scripted, str(path), _extra_files={"metadata.json": json.dumps(metadata)})


# ---------------------------------------------------------------- measuring


def load_written(folder: Path) -> dict[str, Any]:
    """Every variant file in ``folder`` read back through quantcore's loaders, as a user would load it."""
    return {
        key: (load_onnx_model if name.endswith(".onnx") else load_pytorch_model)(folder / name)
        for key, name in VARIANT_FILES.items()
    }


def _sha256(path: Path) -> str:
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
            "sha256": _sha256(path),
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


def _parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    # Keras (the MLPerf Tiny reference) counts BatchNorm running statistics as parameters too.
    trainable = sum(p.numel() for p in model.parameters())
    statistics = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return {"parameters": trainable + statistics, "trainable_parameters": trainable}


def _fastest(results: dict[str, Any]) -> dict[str, str]:
    return {
        f"batch_{b}": max(results, key=lambda k: results[k]["images_per_second"][f"batch_{b}"])
        for b in BENCH_BATCH_SIZES
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    float_acc = results[FLOAT_REFERENCE]["test"]["accuracy"]
    drops = {k: round(100 * (float_acc - results[k]["test"]["accuracy"]), 2) for k in QUANTIZED}
    return {
        "float_test_accuracy_min": TARGET_FLOAT_ACCURACY,
        "max_quantized_drop_points": TARGET_MAX_DROP_POINTS,
        "quantized_drop_points": drops,
        "met": float_acc >= TARGET_FLOAT_ACCURACY and all(d <= TARGET_MAX_DROP_POINTS for d in drops.values()),
    }


# ---------------------------------------------------------------- the card


def _readme(card: dict[str, Any]) -> str:
    arch, data, pre, bench = card["architecture"], card["dataset"], card["preprocessing"], card["benchmark"]
    training, calibration = card["training"], card["calibration"]
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

- Rebuild everything: `{card["reproduce"]["build"]}`
- Re-measure these files against the card: `{card["reproduce"]["evaluate"]}`
"""


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Run every stage into ``args.out`` and return the model card written there."""
    build_started = time.perf_counter()
    source = load_source(args)
    train_data = _limit(source.load("train"), args.train_per_class, args.seed, "train")
    test_data = _limit(source.load("test"), args.test_per_class, args.seed, "test")
    out = Path(args.out)  # made only once the data has loaded
    out.mkdir(parents=True, exist_ok=True)
    log.info("data: %s, %d train / %d test images", source.name, len(train_data), len(test_data))

    samples_idx, _ = datasets.stratified_split(test_data.labels, args.samples_per_class, _rng(args.seed, "samples"))
    samples = test_data.take(samples_idx)
    datasets.save_samples(out / SAMPLES_NAME, samples)
    calibration_idx, _ = datasets.stratified_split(
        train_data.labels, args.calibration_per_class, _rng(args.seed, "calibration")
    )
    calibration = datasets.preprocess(train_data.images[calibration_idx])

    config = TrainConfig(seed=args.seed, epochs=args.epochs)
    started = time.perf_counter()
    model, history = train(train_data, config)
    train_seconds = round(time.perf_counter() - started, 1)

    preprocessing = _preprocessing(source)
    labels = list(train_data.label_names)
    dataset = {"name": source.name, "licence": source.licence}
    common = {"labels": labels, "preprocessing": preprocessing, "dataset": dataset}
    onnx_quant = {
        "format": "QDQ",
        "calibration": "MinMax",
        "calibration_images": len(calibration),
        "weights": "int8, per channel",
    }
    export_onnx(model, out / VARIANT_FILES["onnx_float"], common)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # shape-inferred copy, as ORT asks for before quantizing
        quant_pre_process(out / VARIANT_FILES["onnx_float"], prepared)
        quantize_onnx(
            prepared,
            out / VARIANT_FILES["onnx_int8"],
            calibration,
            QuantType.QInt8,
            {**common, "quantization": {**onnx_quant, "activations": "int8"}},
        )
        quantize_onnx(
            prepared,
            out / VARIANT_FILES["onnx_uint8"],
            calibration,
            QuantType.QUInt8,
            {**common, "quantization": {**onnx_quant, "activations": "uint8"}},
        )
    save_checkpoint(model, out / VARIANT_FILES["pytorch_float"], common)
    save_torch_int8(model, out / VARIANT_FILES["pytorch_int8"], calibration, common)
    log.info("wrote %s; measuring", ", ".join(VARIANT_FILES.values()))

    load_before = os.getloadavg()[0]
    results = measure_folder(out, test_data, samples, args.benchmark_runs)
    load_after = os.getloadavg()[0]
    card = {
        "model": STEM,
        "architecture": {
            "name": "ResNet8 (MLPerf Tiny image classification topology)",
            **_parameter_counts(model),
            "input_shape": [1, *datasets.IMAGE_SHAPE],
        },
        "dataset": {
            **dataset,
            "origin": source.origin,
            "train_images": len(train_data),
            "test_images": len(test_data),
            "per_class_limit": {"train": args.train_per_class, "test": args.test_per_class},
        },
        "labels": labels,
        "preprocessing": preprocessing,
        "training": {
            **asdict(config),
            "optimizer": f"AdamW (weight decay {config.weight_decay})",
            "schedule": f"OneCycleLR, peak {config.max_lr}, {config.warmup_fraction:.0%} warm-up, cosine anneal",
            "augmentation": f"random shift up to {config.shift_pixels} px (zero fill), horizontal flip p=0.5",
            "loss": "cross-entropy",
            "seconds": train_seconds,
            "history": history,
        },
        "calibration": {
            "method": "MinMax",
            "images": len(calibration),
            "per_class": args.calibration_per_class,
            "drawn_from": "training split, stratified by class",
            "onnx": "onnxruntime.quantization.quantize_static, QDQ, per-channel int8 weights; "
            "resnet8_int8.onnx S8S8, resnet8_uint8.onnx U8S8",
            "pytorch": "torch.ao.quantization FX, get_default_qconfig_mapping('x86') "
            "(histogram activation observers), same images",
        },
        "samples": {
            "file": SAMPLES_NAME,
            "images": len(samples),
            "per_class": args.samples_per_class,
            "drawn_from": "test split, stratified by class",
            "arrays": "images uint8 (N,3,32,32), labels int64 (N,), label_names str",
        },
        "benchmark": {
            "cpu": _cpu_model(),
            "threads": THREADS,
            "runs": args.benchmark_runs,
            "schedule": f"variants take turns in {min(BENCH_ROUNDS, args.benchmark_runs)} blocks of runs, "
            f"each block after {BENCH_WARMUP} untimed runs",
            "statistic": "images_per_second = batch size / fastest run's seconds (the machine is shared: "
            "slower runs are mostly other work); images_per_second_median_run for the typical run",
            "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP default: spin)"),
        },
        "seed": args.seed,
        "build_seconds": round(time.perf_counter() - build_started, 1),
        "variants": results,
        "accuracy_reference": f"agreement_with_float compares top-1 with {FLOAT_REFERENCE}",
        "fastest": _fastest(results),
        "targets": _targets(results),
        "reproduce": COMMANDS,
    }
    (out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    (out / "README.md").write_text(_readme(card))
    log.info("targets met: %s; fastest %s", card["targets"]["met"], card["fastest"])
    return card


def evaluate_only(args: argparse.Namespace) -> bool:
    """Re-measure the folder's files; True when every accuracy matches its card exactly."""
    out = Path(args.out)
    card = json.loads((out / CARD_NAME).read_text())
    args.seed = card["seed"]  # redo the build's own draws, whatever the command line says
    test = _limit(load_source(args).load("test"), card["dataset"]["per_class_limit"]["test"], args.seed, "test")
    samples = datasets.load_samples(out / SAMPLES_NAME)
    results = measure_folder(out, test, samples, args.benchmark_runs)
    ok = True
    for key, fresh in results.items():
        recorded = card["variants"][key]
        if fresh["sha256"] != recorded["sha256"]:
            ok = False
            log.warning("%s: %s is not the file the card describes", key, fresh["file"])
        for split in ("test", "samples"):
            same = fresh[split]["correct"] == recorded[split]["correct"]
            ok &= same
            log.info(
                "%-13s %-7s %.4f (card %.4f) %s",
                key,
                split,
                fresh[split]["accuracy"],
                recorded[split]["accuracy"],
                "ok" if same else "DIFFERS",
            )
    log.info("fastest now: %s (card: %s)", _fastest(results), card["fastest"])
    return ok


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.build_resnet8",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", default=DEFAULT_OUT, help="variant folder to write (default: %(default)s)"
    )
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--fashion-mnist",
        type=Path,
        metavar="DIR",
        default=datasets.FASHION_MNIST_DIR,
        help="folder of Fashion-MNIST .gz IDX files (default: %(default)s)",
    )
    data.add_argument("--cifar10", type=Path, metavar="DIR", help="build from a cifar-10-batches-py folder instead")
    data.add_argument(
        "--from-samples", type=Path, metavar="NPZ", help="smoke builds only: split a samples.npz into train/test"
    )
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-measure the files in --out against their model_card.json; write nothing",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--train-per-class", type=int, help="train on this many images per class (smoke builds)")
    parser.add_argument("--test-per-class", type=int, help="test on this many images per class (smoke builds)")
    parser.add_argument("--samples-per-class", type=int, default=100)
    parser.add_argument("--calibration-per-class", type=int, default=20)
    parser.add_argument("--benchmark-runs", type=int, default=100, help="timed runs per variant and batch size")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(THREADS)
    try:
        if args.evaluate_only:
            return 0 if evaluate_only(args) else 1
        card = build(args)
        if not card["targets"]["met"]:
            log.warning("targets missed: %s", card["targets"])
        return 0
    except DatasetError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
