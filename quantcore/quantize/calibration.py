"""Calibration images and calibration reuse.

A ``CalibrationSet`` is model input made through the one input path (the
folder's samples, or a test set, fitted to the float variant's input spec),
named by a fingerprint of the very tensors. Calibration ranges are computed
by onnxruntime itself and kept in its own JSON cache
(``quantize_static(calibration_cache_path=...)``), one file per (float model,
calibration options, calibration set): a recipe that changes only weight
options, per-channel, symmetry or excluded layers reuses it and does not run
the model again.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantcore.data.datasets import stratified_split
from quantcore.deadline import check_deadline
from quantcore.errors import DatasetError, RecipeError
from quantcore.evaluate.inputs import folder_samples, load_test_set, to_model_input, variant_spec
from quantcore.load import ModelVariants, VariantKey
from quantcore.quantize.recipe import CalibrationDraw

logger = logging.getLogger(__name__)

READER_BATCH = 50  # images per calibration run; MinMax and histograms merge over batches alike


@dataclass(frozen=True)
class CalibrationSet:
    """Model input for calibration and how it was made.

    Attributes:
        inputs: float model input (N, ...), as the float variant takes it.
        description: what a person reads (``samples.npz, first 200 images``).
        origin: how to make it again (``{"kind": "samples", "images": 200}``).
        fingerprint: sha256 of the tensors' dtype, shape and bytes.
        batch: the batch the graph fixes, if it fixes one.
    """

    inputs: np.ndarray = field(repr=False)
    description: str
    origin: dict[str, Any]
    fingerprint: str
    batch: int | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, **self.origin, "count": len(self),
                "shape": list(self.inputs.shape[1:]), "dtype": str(self.inputs.dtype),
                "sha256": self.fingerprint}  # fmt: skip


def fingerprint(inputs: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes: two sets with this equal calibrate alike."""
    digest = hashlib.sha256(f"{inputs.dtype.str}{list(inputs.shape)}".encode())
    digest.update(np.ascontiguousarray(inputs).tobytes())
    return digest.hexdigest()


def calibration_from_inputs(
    inputs: np.ndarray, description: str, origin: dict[str, Any] | None = None, *, batch: int | None = None
) -> CalibrationSet:
    """A calibration set of model input made elsewhere (the bundled build's own draw, for one)."""
    inputs = np.ascontiguousarray(inputs)
    return CalibrationSet(inputs, description, dict(origin or {"kind": "given"}), fingerprint(inputs), batch)


def calibration_set(
    variants: ModelVariants, *, images: int, test_set: str | None = None, draw: CalibrationDraw | None = None
) -> CalibrationSet:
    """The first ``images`` of the folder's samples (or of ``test_set``, or of ``draw`` from it), as the float ONNX
    variant's input.

    Raises:
        RecipeError: no images to calibrate on.
        DatasetError, PathNotAllowedError: the test set cannot be read, or has too few images of a class to draw.
    """
    spec = variant_spec(variants, VariantKey.ONNX_FLOAT)
    if test_set:
        split = draw.split if draw else "test"
        samples = load_test_set(test_set, spec, split)
        origin: dict[str, Any] = {"kind": "test_set", "test_set": test_set, "images": images}
        what = f"test set {test_set}"
        if draw is not None:
            if samples.labels is None:
                raise RecipeError("a calibration draw picks images by class; this test set has no labels")
            drawn = f"{draw.split} split, {draw.per_class} per class drawn with seed {list(draw.seed)}"
            picked, _ = stratified_split(samples.labels, draw.per_class, np.random.default_rng(list(draw.seed)))
            samples = samples.subset(picked, drawn)
            origin["draw"] = draw.as_dict()
            what += ", " + drawn
    else:
        samples, notes = folder_samples(variants, spec)
        if samples is None:
            raise RecipeError("nothing to calibrate on: " + "; ".join(notes) + " (name a test set instead)")
        origin = {"kind": "samples", "images": images}
        what = "samples.npz"
    count = min(images, len(samples))
    if count == 0:
        raise RecipeError("the calibration set is empty")
    try:
        inputs = to_model_input(samples.pixels(0, count), spec)
    except (ValueError, DatasetError) as exc:
        raise RecipeError(f"calibration images do not fit the float model: {exc}") from None
    return calibration_from_inputs(inputs, f"{what}, first {count} images", origin, batch=spec.batch)


class CalibrationReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over a calibration set (``get_next``, ``rewind``, iteration)."""

    def __init__(self, calibration: CalibrationSet, input_name: str) -> None:
        size = calibration.batch or READER_BATCH
        data = calibration.inputs
        self._batches = [{input_name: data[i : i + size]} for i in range(0, len(data), size)]
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._batches)
        self.served = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        check_deadline()  # ORT's calibrator runs its own session: the request's deadline is kept between batches
        batch = next(self._iter, None)
        self.served += batch is not None
        return batch

    def rewind(self) -> None:
        self._iter = iter(self._batches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


# ------------------------------------------------------------------- the cache

_LOCK = threading.Lock()
_KEY_LOCKS: dict[str, threading.Lock] = {}
_STATE: dict[str, Any] = {"dir": None, "runs": 0}


def cache_dir() -> Path:
    """This process's folder of prepared models and calibration ranges (a temp dir, removed at exit)."""
    with _LOCK:
        if _STATE["dir"] is None:
            path = Path(tempfile.mkdtemp(prefix="quantcore-calibration-"))
            atexit.register(shutil.rmtree, path, ignore_errors=True)
            _STATE["dir"] = path
        return Path(_STATE["dir"])


def key_lock(key: str) -> threading.Lock:
    """One lock per cache entry: two recipes sharing a calibration compute it once."""
    with _LOCK:
        return _KEY_LOCKS.setdefault(key, threading.Lock())


def calibration_key(model_sha256: str, options: dict[str, Any], calibration: CalibrationSet) -> str:
    """The cache entry for (float model, calibration options, calibration set)."""
    text = json.dumps([model_sha256, options, calibration.fingerprint], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def ranges_path(key: str) -> Path:
    return cache_dir() / f"ranges-{key}.json"


def count_run() -> None:
    with _LOCK:
        _STATE["runs"] += 1


def calibration_runs() -> int:
    """How many times this process ran a model to calibrate (cache misses)."""
    return int(_STATE["runs"])


def clear_calibration_cache() -> None:
    """Forget every cached range (the next recipe calibrates again)."""
    folder = cache_dir()
    with _LOCK:
        for path in folder.glob("ranges-*.json"):
            path.unlink(missing_ok=True)
