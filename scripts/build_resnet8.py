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
the two ONNX variants' recipes (``scripts/resnet8_recipes.py``, checked to
make the same graphs) -> reload every written file and measure it ->
model_card.json and README.md.
Every figure in the card comes from the run that wrote the files.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from quantcore.data import datasets
from quantcore.errors import DatasetError
from quantcore.load import CARD_NAME, SAMPLES_NAME
from scripts.resnet8_measure import (
    BENCH_ROUNDS,
    BENCH_WARMUP,
    COMMANDS,
    DEFAULT_OUT,
    FLOAT_REFERENCE,
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    STEM,
    THREADS,
    VARIANT_FILES,
    cpu_model,
    fastest_variants,
    measure_folder,
    parameter_counts,
    readme_text,
    targets_met,
)
from scripts.resnet8_recipes import NotReproducedError, write_bundled_recipes
from scripts.resnet8_train import (
    TrainConfig,
    draw_rng,
    limit_per_class,
    load_source,
    preprocessing_of,
    train,
)

log = logging.getLogger(__name__)


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


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Run every stage into ``args.out`` and return the model card written there."""
    build_started = time.perf_counter()
    source = load_source(args)
    train_data = limit_per_class(source.load("train"), args.train_per_class, args.seed, "train")
    test_data = limit_per_class(source.load("test"), args.test_per_class, args.seed, "test")
    out = Path(args.out)  # made only once the data has loaded
    out.mkdir(parents=True, exist_ok=True)
    log.info("data: %s, %d train / %d test images", source.name, len(train_data), len(test_data))

    samples_idx, _ = datasets.stratified_split(test_data.labels, args.samples_per_class, draw_rng(args.seed, "samples"))
    samples = test_data.take(samples_idx)
    datasets.save_samples(out / SAMPLES_NAME, samples)
    calibration_idx, _ = datasets.stratified_split(
        train_data.labels, args.calibration_per_class, draw_rng(args.seed, "calibration")
    )
    calibration = datasets.preprocess(train_data.images[calibration_idx])

    config = TrainConfig(seed=args.seed, epochs=args.epochs)
    started = time.perf_counter()
    model, history = train(train_data, config)
    train_seconds = round(time.perf_counter() - started, 1)

    preprocessing = preprocessing_of(source)
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
    log.info("wrote %s", ", ".join(VARIANT_FILES.values()))
    recipes: list[str] = []
    if args.train_per_class is None and source.folder is not None:
        written = write_bundled_recipes(out, source.folder, seed=args.seed, per_class=args.calibration_per_class)
        recipes = [p.relative_to(out).as_posix() for p in written]
    else:  # a draw from a cut-down or derived train split is not one a recipe can name
        log.info("no recipe.json for the ONNX int8/uint8 variants: calibrated on a limited or derived train split")
    log.info("measuring")

    load_before = os.getloadavg()[0]
    results = measure_folder(out, test_data, samples, args.benchmark_runs)
    load_after = os.getloadavg()[0]
    card = {
        "model": STEM,
        "architecture": {
            "name": "ResNet8 (MLPerf Tiny image classification topology)",
            **parameter_counts(model),
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
            "cpu": cpu_model(),
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
        "fastest": fastest_variants(results),
        "targets": targets_met(results),
        "reproduce": COMMANDS,
    }
    (out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    (out / "README.md").write_text(readme_text(card, recipes))
    log.info("targets met: %s; fastest %s", card["targets"]["met"], card["fastest"])
    return card


def evaluate_only(args: argparse.Namespace) -> bool:
    """Re-measure the folder's files; True when every accuracy matches its card exactly."""
    out = Path(args.out)
    card = json.loads((out / CARD_NAME).read_text())
    args.seed = card["seed"]  # redo the build's own draws, whatever the command line says
    per_class = card["dataset"]["per_class_limit"]["test"]
    test = limit_per_class(load_source(args).load("test"), per_class, args.seed, "test")
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
    log.info("fastest now: %s (card: %s)", fastest_variants(results), card["fastest"])
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
    except (DatasetError, NotReproducedError) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
