"""What a folder's models take as input, and how to make it from samples or an uploaded image.

The input is described once per folder (``InputSpec``): its shape, the
preprocessing the files record (ONNX ``metadata_props``, else the folder's
``model_card.json``, else ``datasets.PREPROCESSING``), how the stored pixels
were made (e.g. Fashion-MNIST's 28x28 grey, zero-padded to 32x32 and repeated
to 3 channels) and the class names. Samples and uploads both become uint8
pixels in that shape first, so the page can show exactly what the model sees,
and then float input through one function.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantcore import settings
from quantcore.backends import Layer, backend_for
from quantcore.data import datasets
from quantcore.data.test_sets import read_test_set
from quantcore.errors import DatasetError
from quantcore.load import CARD_NAME, SAMPLES_NAME, ModelVariants, Status, VariantKey
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

DEFAULT_SHAPE = datasets.IMAGE_SHAPE
# "28x28 grey zero-padded by 2 px on every side to 32x32 ..." (what scripts/build_resnet8.py records).
_PADDED_GREY = re.compile(r"(\d+)\s*x\s*(\d+)\s+gr[ae]y\b.*?padded by\s+(\d+)\s*px", re.IGNORECASE)
_GREY = re.compile(r"\bgr[ae]y(scale)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class InputSpec:
    """One model input (without the batch axis) and how pixels become it.

    ``grey``: the stored images are grey (repeated to every channel).
    ``pad``: pixels of zero border around a ``shape - 2·pad`` image (a dark
    background: uploads with a light one are inverted when asked to, or on "auto").
    """

    shape: tuple[int, int, int]
    preprocessing: dict[str, Any]
    class_names: tuple[str, ...] | None
    grey: bool = False
    pad: int = 0
    notes: tuple[str, ...] = ()

    @property
    def inner_size(self) -> tuple[int, int]:
        """(height, width) of the image inside its zero border."""
        return self.shape[1] - 2 * self.pad, self.shape[2] - 2 * self.pad

    def names(self, count: int) -> tuple[str, ...]:
        """``count`` class names: the recorded ones when they fit, else ``class 0``, ``class 1``..."""
        if self.class_names is not None and len(self.class_names) == count:
            return self.class_names
        return tuple(f"class {i}" for i in range(count))


def _json_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _recorded(variants: ModelVariants) -> tuple[dict[str, Any], list[str] | None, str]:
    """Preprocessing and labels from the first ONNX variant that records them, else the model card."""
    for key in (VariantKey.ONNX_FLOAT, VariantKey.ONNX_INT8, VariantKey.ONNX_UINT8):
        record = variants.records[key]
        metadata = record.details.get("metadata", {}) if record.status is Status.LOADED else {}
        preprocessing = _json_value(metadata.get("preprocessing"))
        labels = _json_value(metadata.get("labels"))
        if isinstance(preprocessing, dict):
            return preprocessing, labels if isinstance(labels, list) else None, f"{key} metadata"
    card = variants.card  # read (confined to the folder) when it loaded
    if isinstance(card.get("preprocessing"), dict):
        labels = card.get("labels")
        return card["preprocessing"], labels if isinstance(labels, list) else None, CARD_NAME
    return dict(datasets.PREPROCESSING), None, "default"


def _shape(variants: ModelVariants) -> tuple[int, int, int] | None:
    try:
        shape = input_shape(variants)
    except Exception:  # a graph we cannot read leaves the shape to the other sources
        logger.exception("reading the input shape of %s failed", variants.folder)
        return None
    return tuple(shape[1:]) if shape is not None and len(shape) == 4 else None  # type: ignore[return-value]


def input_spec(variants: ModelVariants) -> InputSpec:
    """The input a folder's models take, read from its files.

    Args:
        variants: a loaded folder.

    Returns:
        An ``InputSpec``; what could not be read is defaulted and said in its notes.
    """
    notes: list[str] = []
    preprocessing, labels, origin = _recorded(variants)
    shape = _shape(variants)
    if shape is None:
        recorded = preprocessing.get("shape")
        if isinstance(recorded, list) and len(recorded) == 3 and all(isinstance(d, int) and d > 0 for d in recorded):
            shape = (recorded[0], recorded[1], recorded[2])
        else:
            shape = DEFAULT_SHAPE
            notes.append(f"input shape unknown: assumed {shape}")
    if origin == "default":
        notes.append("no preprocessing recorded (ONNX metadata or model card): assumed pixels / 255")
    pixels = str(preprocessing.get("pixels") or "")
    grey, pad = shape[0] == 1, 0
    padded = _PADDED_GREY.search(pixels)
    if padded is not None:
        inner, pad = int(padded.group(1)), int(padded.group(3))
        grey = True
        if inner + 2 * pad != shape[1]:
            pad = 0
            notes.append(f"recorded pixels ({pixels!r}) do not fit a {shape} input: padding ignored")
    elif _GREY.search(pixels):
        grey = True
    names = tuple(str(n) for n in labels) if labels else None
    return InputSpec(shape, preprocessing, names, grey, pad, tuple(notes))


def to_model_input(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Float32 model input for uint8 pixels (N, C, H, W), as the recorded preprocessing says.

    ``pixels / 255`` (``datasets.preprocess``), then ``(x - mean) / std`` per
    channel when the preprocessing records a mean and std.
    """
    x = datasets.preprocess(images)
    mean, std = spec.preprocessing.get("mean"), spec.preprocessing.get("std")
    if mean is not None and std is not None:
        channels = (1, -1, 1, 1)
        x = (x - np.asarray(mean, np.float32).reshape(channels)) / np.asarray(std, np.float32).reshape(channels)
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------- samples


@dataclass(frozen=True)
class SampleSet:
    """Labelled uint8 images in the model's input shape, and what identifies them for caching."""

    images: np.ndarray
    labels: np.ndarray | None
    label_names: tuple[str, ...]
    description: str
    key: Hashable = field(compare=False)

    def __len__(self) -> int:
        return len(self.images)


def folder_samples(variants: ModelVariants, spec: InputSpec) -> tuple[SampleSet | None, list[str]]:
    """The folder's ``samples.npz``, if it holds images of the model's input shape.

    Returns:
        The samples (None when there are none that fit) and notes saying why not.
    """
    path = variants.sidecar(SAMPLES_NAME)
    if path is None:
        return None, [f"no {SAMPLES_NAME} in this folder"]
    try:
        stat = path.stat()
        data = datasets.load_samples(path)
    except (DatasetError, OSError) as exc:
        return None, [f"{SAMPLES_NAME} unreadable: {exc}"]
    if data.images.shape[1:] != spec.shape:
        return None, [f"{SAMPLES_NAME} holds {data.images.shape[1:]} images; the model takes {spec.shape}"]
    description = f"{SAMPLES_NAME} ({len(data)} images)"
    key = ("samples", str(path), stat.st_size, stat.st_mtime_ns)
    return SampleSet(data.images, data.labels, data.label_names, description, key), []


# ResNet8 / MLPerf Tiny images: the probe size when no variant declares its input.
DEFAULT_IMAGE_SIZE = 32


def fixed_batch_size(model: Any) -> int | None:
    """The batch size a model's declared input fixes, if it fixes one (graphs exported for devices often say 1)."""
    declared = backend_for(model).inputs(model)
    return declared[0].fixed_batch if declared else None


def input_shape(
    variants: ModelVariants, layers: Mapping[VariantKey, list[Layer]] | None = None
) -> tuple[int, ...] | None:
    """The shape of one input (batch 1): from a variant's declared input, else from the first layer.

    A first conv with C input channels gives (1, C, 32, 32): the ResNet8 / MLPerf Tiny image size.
    """
    for key in VariantKey:
        model = variants[key]
        if model is None:
            continue
        declared = backend_for(model).inputs(model)
        # The batch axis may be symbolic; any other unknown axis leaves the shape to the layers.
        if declared and len(declared[0].dims) > 1:
            shape = declared[0].sample_shape
            if shape is not None:
                return (1, *shape)
            break
    for found in (layers or {}).values():
        if found:
            first = min(found, key=lambda layer: (layer.depth, layer.order))
            if first.kind == "conv":
                return (1, first.weight_shape[1]) + (DEFAULT_IMAGE_SIZE,) * (len(first.weight_shape) - 2)
            return (1, first.weight_shape[1])
    return None


def load_test_set(folder: str | os.PathLike[str], spec: InputSpec) -> SampleSet:
    """The test split of a Fashion-MNIST or CIFAR-10 folder, as samples for this model.

    Args:
        folder: the test-set folder (absolute, or relative to the models root).
        spec: the model's input (the images must have its shape).

    Returns:
        The labelled images, keyed by the folder and its files' sizes and times.

    Raises:
        PathNotAllowedError, ModelNotFoundError: as ``test_sets.resolve_test_set``.
        DatasetError: unreadable files, or images that are not the model's input shape.
    """
    data, description, key = read_test_set(folder)
    if data.images.shape[1:] != spec.shape:
        raise DatasetError(f"the test set holds {data.images.shape[1:]} images; the model takes {spec.shape}")
    return SampleSet(data.images, data.labels, data.label_names, description, key)


@dataclass(frozen=True)
class InputBatches:
    """Model input made a batch at a time from stored pixels, or from generated ones: every view's one path.

    ``pixels`` are uint8 in the model's input shape; without them, uniformly
    random pixels (seeded) are made. Either way they become model input
    through ``to_model_input``, as samples, uploads and test sets do.
    """

    description: str
    count: int
    spec: InputSpec
    labels: np.ndarray | None = field(default=None, repr=False)
    pixels: np.ndarray | None = field(default=None, repr=False)
    seed: int = 0

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(float32 model inputs, labels or None), ``batch_size`` at a time."""
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            labels = self.labels[start:stop] if self.labels is not None else None
            if self.pixels is not None:
                pixels = self.pixels[start:stop]
            else:
                pixels = rng.integers(0, 256, (stop - start, *self.spec.shape), dtype=np.uint8)
            yield to_model_input(pixels, self.spec), labels


def generated_inputs(spec: InputSpec, count: int, *, seed: int = 0) -> InputBatches:
    """``count`` uniformly random images (seeded) in the model's input shape."""
    return InputBatches(f"generated uniform random pixels ({count}, seed {seed})", count, spec, seed=seed)


def sample_inputs(
    variants: ModelVariants, spec: InputSpec, *, images: int, seed: int = 0
) -> tuple[InputBatches, list[str]]:
    """The first ``images`` of the folder's ``samples.npz``, or generated images when it has none that fit.

    Returns:
        The inputs and notes on what was used instead of what, and why.

    Raises:
        ValueError: ``images`` is not between 1 and the configured ``max_run_images``.
    """
    limit = settings.current().max_run_images
    if not 1 <= images <= limit:
        raise ValueError(f"images must be between 1 and {limit}, got {images}")
    samples, notes = folder_samples(variants, spec)
    if samples is None:
        return generated_inputs(spec, images, seed=seed), [*notes, "generated random pixels used instead"]
    count = min(images, len(samples))
    if count < images:
        notes.append(f"{SAMPLES_NAME} holds {len(samples)} images; all of them used")
    description = f"{SAMPLES_NAME} ({count} images)"
    return InputBatches(description, count, spec, samples.labels[:count], samples.images[:count]), notes


@dataclass(frozen=True)
class FolderInputs:
    """A loaded folder's input spec and samples (None when it has none that fit), and notes on both."""

    spec: InputSpec
    samples: SampleSet | None
    notes: tuple[str, ...]


def folder_inputs(variants: ModelVariants) -> FolderInputs:
    """The folder's ``input_spec`` and ``folder_samples``, read once per folder fingerprint."""

    def describe() -> FolderInputs:
        spec = input_spec(variants)
        samples, notes = folder_samples(variants, spec)
        return FolderInputs(spec, samples, (*spec.notes, *notes))

    return cached(variants, "model_input", (), describe)[0]
