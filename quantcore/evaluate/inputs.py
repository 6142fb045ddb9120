"""The one input path: samples, test sets, uploads and generated images all become model input here.

Stored images are uint8 of any size and channel count, as (N, H, W),
(N, H, W, C) or (N, C, H, W). ``fit_pixels`` turns them into the model's
pixels, (N, C, H, W) in its input's size and channels — zero-padded when a
thin border makes up the difference (Fashion-MNIST's 28x28 in 32x32), else
resized; grey repeated to colour, colour made grey — and says exactly what it
did. ``to_model_input`` then makes the variant's input: pixels mapped to its
range, normalised by its mean/std, in its layout and dtype (``InputSpec``,
read when the folder loaded: ``quantcore.load.input_spec``). Models that take
no images (features ``[N, F]``, signals ``[N, C, L]``) take float arrays
from ``samples.npz`` as they are.

Sample sets convert a batch at a time (``SampleSet.pixels``), so a 224x224
model over a 10,000-image test set never holds them all converted at once;
``batches`` hands runs over many images their inputs that way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

import numpy as np

from quantcore.data import datasets
from quantcore.data.test_sets import read_test_set
from quantcore.errors import DatasetError
from quantcore.load import SAMPLES_NAME, Key, ModelVariants
from quantcore.load.input_spec import InputSpec, Layout, OutputKind
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

DEFAULT_SPEC = InputSpec((3, 32, 32), notes=("no loaded variant says what it takes: assumed 3x32x32 images",))
# A border of at most this fraction of a side is padded with zeros; a bigger difference is resized.
PAD_FRACTION = 1 / 8

__all__ = [
    "FolderInputs",
    "InputSpec",
    "Layout",
    "OutputKind",
    "SampleSet",
    "fit_pixels",
    "fixed_batch_size",
    "folder_inputs",
    "folder_samples",
    "input_spec",
    "load_test_set",
    "sample_noun",
    "to_model_input",
    "variant_spec",
]


def input_spec(variants: ModelVariants) -> InputSpec:
    """The folder's input: its float reference's spec (what samples are fitted to and shown as)."""
    return variants.input_spec or DEFAULT_SPEC


def variant_spec(variants: ModelVariants, key: Key) -> InputSpec:
    """What one variant takes: its own spec (a PyTorch int8 model may take 0–255 where the others take [0, 1])."""
    return variants.spec(key) or input_spec(variants)


def fixed_batch_size(variants: ModelVariants, key: Key) -> int | None:
    """The batch size a variant's input fixes, if it fixes one (graphs exported for devices often say 1)."""
    return variant_spec(variants, key).batch


# ----------------------------------------------------------------- pixels


def _as_nchw(images: np.ndarray) -> np.ndarray:
    """Stored uint8 images as (N, C, H, W), from (N, H, W), (N, H, W, C) or (N, C, H, W)."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[1] in (1, 3, 4):
        return images
    if images.ndim == 4 and images.shape[3] in (1, 3, 4):
        return images.transpose(0, 3, 1, 2)
    raise DatasetError(f"cannot read images of shape {list(images.shape[1:])}: expected (H, W), (H, W, C) or (C, H, W)")


def _channels(images: np.ndarray, channels: int, notes: list[str]) -> np.ndarray:
    have = images.shape[1]
    if have == channels:
        return images
    if have == 4 and channels == 3:
        notes.append("alpha dropped")
        return images[:, :3]
    if have == 1:
        notes.append(f"grey repeated to {channels} channels")
        return np.repeat(images, channels, axis=1)
    if channels == 1 and have in (3, 4):
        notes.append("made grey (ITU-R 601 luma)")
        rgb = images[:, :3].astype(np.float32)
        return np.rint(rgb[:, 0] * 0.299 + rgb[:, 1] * 0.587 + rgb[:, 2] * 0.114)[:, None].astype(np.uint8)
    raise DatasetError(f"cannot make {channels}-channel input from {have}-channel images")


def _size(images: np.ndarray, spec: InputSpec, notes: list[str]) -> np.ndarray:
    from PIL import Image

    _, height, width = spec.pixel_shape
    have_h, have_w = images.shape[2:]
    if (have_h, have_w) == (height, width):
        return images
    dh, dw = height - have_h, width - have_w
    thin = 0 <= dh <= height * PAD_FRACTION and 0 <= dw <= width * PAD_FRACTION and dh % 2 == 0 and dw % 2 == 0
    if thin or (spec.pad and (have_h, have_w) == spec.inner_size):
        notes.append(f"{have_h}x{have_w} zero-padded by {dh // 2} px to {height}x{width}")
        return np.pad(images, ((0, 0), (0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2)))
    notes.append(f"{have_h}x{have_w} resized to {height}x{width} (bilinear)")
    out = np.empty((len(images), images.shape[1], height, width), dtype=np.uint8)
    for i, image in enumerate(images):
        for c, plane in enumerate(image):
            out[i, c] = np.asarray(Image.fromarray(plane).resize((width, height), Image.Resampling.BILINEAR))
    return out


def fit_pixels(images: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, list[str]]:
    """Stored uint8 images as the model's pixels (N, C, H, W), and what was done to them.

    Raises:
        DatasetError: the model takes no images, or these cannot be made into its channels.
    """
    if not spec.is_image:
        raise DatasetError(f"the model takes {spec.layout} input {list(spec.shape)}, not images")
    if images.dtype != np.uint8:
        raise DatasetError(f"images must be uint8 pixels, not {images.dtype}")
    notes: list[str] = []
    pixels = _size(_channels(_as_nchw(images), spec.channels, notes), spec, notes)
    return np.ascontiguousarray(pixels), notes


def to_model_input(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One variant's input for model pixels (N, C, H, W) — or, for a model taking no images, its float arrays.

    Pixels map linearly from 0..255 to the spec's range (``pixels / 255`` for
    [0, 1]), then ``(x - mean) / std`` per channel, then into the model's
    layout and dtype.

    Raises:
        ValueError: the pixels are not of the spec's shape.
    """
    expected = spec.pixel_shape
    if tuple(pixels.shape[1:]) != expected:
        raise ValueError(f"input must be (N, {', '.join(map(str, expected))}), got {tuple(pixels.shape)}")
    if not spec.is_image:
        return np.ascontiguousarray(pixels, dtype=spec.dtype)
    if np.issubdtype(np.dtype(spec.dtype), np.integer):
        x = pixels  # a model taking uint8 pixels gets them as they are
    else:
        x = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
        low, high = spec.range
        if (low, high) != (0.0, 1.0):
            x = x * np.float32(high - low) + np.float32(low)
        if spec.mean is not None and spec.std is not None:
            channels = (1, -1, 1, 1)
            x = (x - np.asarray(spec.mean, np.float32).reshape(channels)) / np.asarray(spec.std, np.float32).reshape(
                channels
            )
    if spec.layout is Layout.NHWC:
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=spec.dtype)


# ----------------------------------------------------------------- samples


@dataclass(frozen=True)
class SampleSet:
    """Labelled images (or, for a model taking no images, float arrays), converted to the model a batch at a time.

    ``stored`` is what the file holds; ``pixels(start, stop)`` is that range as
    the model's pixels. ``key`` names exactly these samples as fitted to this
    spec, for caching.
    """

    stored: np.ndarray = field(repr=False)
    labels: np.ndarray | None
    label_names: tuple[str, ...]
    description: str
    key: Hashable = field(compare=False)
    spec: InputSpec = field(compare=False, repr=False, default=DEFAULT_SPEC)
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.stored)

    def pixels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``start`` to ``stop`` as the model's pixels (or arrays)."""
        chunk = self.stored[start:stop]
        return fit_pixels(chunk, self.spec)[0] if self.spec.is_image else chunk

    @property
    def images(self) -> np.ndarray:
        """Every sample as the model's pixels, at once: for small sets (use ``pixels`` for large ones)."""
        return self.pixels()

    def picture(self, index: int) -> np.ndarray:
        """One sample's pixels (C, H, W), for display and single-image prediction."""
        return self.pixels(index, index + 1)[0]

    def subset(self, indices: np.ndarray, what: str) -> SampleSet:
        """The samples at ``indices``, in that order (``what`` says how they were picked, for the key)."""
        labels = None if self.labels is None else self.labels[indices]
        return replace(self, stored=self.stored[indices], labels=labels, description=f"{self.description}, {what}",
                       key=(self.key, what, len(indices)))  # fmt: skip


def _conversion_notes(stored: np.ndarray, spec: InputSpec) -> tuple[str, ...]:
    if not spec.is_image:
        return ()
    return tuple(fit_pixels(stored[:1], spec)[1]) if len(stored) else ()


def make_samples(
    data: datasets.LabelledImages, spec: InputSpec, description: str, key: Hashable
) -> tuple[SampleSet | None, list[str]]:
    """Labelled data as samples for a model, or None and why they cannot feed it (checked before any run)."""
    arrays = data.images
    if spec.is_image:
        if arrays.dtype != np.uint8:
            return None, [f"{description} holds {arrays.dtype} arrays, not images; the model takes images"]
        try:
            notes = _conversion_notes(arrays, spec)
        except DatasetError as exc:
            return None, [f"{description}: {exc}"]
    else:
        if tuple(arrays.shape[1:]) != spec.shape:
            what = "images" if arrays.dtype == np.uint8 else f"arrays of shape {list(arrays.shape[1:])}"
            return None, [f"{description} holds {what}; the model takes {spec.layout} input {list(spec.shape)}"]
        notes = ()
    fitted = (*key, spec.pixel_shape, spec.pad) if isinstance(key, tuple) else (key, spec.pixel_shape, spec.pad)
    return SampleSet(arrays, data.labels, data.label_names, description, fitted, spec, notes), []


def folder_samples(variants: ModelVariants, spec: InputSpec) -> tuple[SampleSet | None, list[str]]:
    """The folder's ``samples.npz``, fitted to the model's input (images of any size, or float arrays).

    Returns:
        The samples (None when there are none that can feed the model) and notes saying what was done, or why not.
    """
    path = variants.sidecar(SAMPLES_NAME)
    if path is None:
        refusal = variants.sidecar_refusal(SAMPLES_NAME)
        return None, [f"{SAMPLES_NAME} ignored: {refusal}" if refusal else f"no {SAMPLES_NAME} in this folder"]
    try:
        stat = path.stat()
        data = datasets.load_samples(path, roots=[variants.confine_root])
    except (DatasetError, OSError) as exc:
        return None, [f"{SAMPLES_NAME} unreadable: {exc}"]
    samples, notes = make_samples(data, spec, SAMPLES_NAME, ("samples", str(path), stat.st_size, stat.st_mtime_ns))
    if samples is None:
        return None, notes
    description = f"{SAMPLES_NAME} ({len(samples)} {sample_noun(spec)})"
    return SampleSet(samples.stored, samples.labels, samples.label_names, description, samples.key, spec,
                     samples.notes), [f"{SAMPLES_NAME}: {n}" for n in samples.notes]  # fmt: skip


def load_test_set(folder: str | os.PathLike[str], spec: InputSpec, split: datasets.Split = "test") -> SampleSet:
    """The test split (or ``split``) of a Fashion-MNIST or CIFAR-10 folder, fitted to this model's input.

    Args:
        folder: the test-set folder (absolute, or relative to the models root).
        spec: the model's input.
        split: which split.

    Returns:
        The labelled images, keyed by the folder and its files' sizes and times.

    Raises:
        PathNotAllowedError, ModelNotFoundError: as ``test_sets.resolve_test_set``.
        DatasetError: unreadable files, or a model that takes no images (refused before reading them).
    """
    if not spec.is_image:
        raise DatasetError(f"the model takes {spec.layout} input {list(spec.shape)}: an image test set cannot feed it")
    data, description, key = read_test_set(folder, split)
    samples, notes = make_samples(data, spec, description, key)
    if samples is None:
        raise DatasetError("; ".join(notes))
    return samples


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
        return FolderInputs(spec, samples, (*spec.notes, *variants.loaded.input_notes, *notes))

    return cached(variants, "model_input", (), describe)[0]


def sample_noun(spec: InputSpec) -> str:
    """What one of ``spec``'s inputs is called on the page: an image, or a sample of features or signal."""
    return "images" if spec.is_image else "samples"
