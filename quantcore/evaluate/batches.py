"""Inputs for runs over many images: the folder's samples, generated pixels, or model input made elsewhere,
handed out a batch at a time (each variant converts pixels with ``inputs.to_model_input``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from quantcore import settings
from quantcore.evaluate.inputs import SampleSet, folder_samples, sample_noun
from quantcore.load import SAMPLES_NAME, ModelVariants
from quantcore.load.input_spec import InputSpec, Layout


@dataclass(frozen=True)
class InputBatches:
    """Model pixels made a batch at a time from samples, or generated: what every run over many images takes.

    Without samples, uniformly random pixels (seeded) are made in the spec's
    shape (for a model taking no images: standard normal arrays). Each variant
    then turns the pixels into its own input with ``to_model_input``.
    """

    description: str
    count: int
    spec: InputSpec
    labels: np.ndarray | None = field(default=None, repr=False)
    samples: SampleSet | None = field(default=None, repr=False)
    seed: int = 0
    prepared: np.ndarray | None = field(default=None, repr=False)  # model input as it is, for every variant

    @property
    def as_model_input(self) -> bool:
        """Whether the batches are already model input (``prepared_inputs``), to be fed unchanged."""
        return self.prepared is not None

    def take(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(model pixels or arrays, labels or None) of inputs ``start`` to ``stop``; generated ones are the
        same whichever batches they are taken in."""
        stop = min(stop, self.count)
        labels = self.labels[start:stop] if self.labels is not None else None
        if self.prepared is not None:
            return np.ascontiguousarray(self.prepared[start:stop]), labels
        if self.samples is not None:
            return self.samples.pixels(start, stop), labels
        made = [np.random.default_rng((self.seed, i)) for i in range(start, stop)]
        if self.spec.is_image:
            shape = self.spec.pixel_shape
            pixels = [rng.integers(0, 256, shape, dtype=np.uint8) for rng in made]
        else:
            pixels = [rng.standard_normal(self.spec.shape, dtype=np.float32) for rng in made]
        empty = np.empty((0, *self.spec.pixel_shape), dtype=np.uint8 if self.spec.is_image else np.float32)
        return (np.stack(pixels) if pixels else empty), labels

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(model pixels or arrays, labels or None), ``batch_size`` at a time."""
        for start in range(0, self.count, batch_size):
            yield self.take(start, start + batch_size)


def fitting_batch(requested: int, per_image: float, budget: int, notes: list[str], *, multiple: int = 1) -> int:
    """The largest batch up to ``requested`` whose working set, ``per_image`` bytes an image, fits ``budget``.

    ``multiple``: the batch a graph fixes; the answer is a whole number of them, at least one, even when one
    alone is over the budget. A batch smaller than asked for is said in ``notes``, with the reason.
    """
    whole = max(multiple, requested - requested % multiple)
    fitting = int(budget // max(per_image, 1.0))
    size = min(whole, max(multiple, fitting - fitting % multiple))
    if size < whole or size > fitting:
        why = f"one image's activations take {per_image / 2**20:.1f} MB, and the budget is {budget / 2**20:.0f} MB"
        if size > fitting:
            alone = "one image" if multiple == 1 else f"the {multiple} images the graph fixes as its batch"
            why += f"; {alone} alone is over it"
        notes.append(f"batches of {size} (not {requested}): {why} (QP_MAX_ACTIVATION_MB)")
    return size


def prepared_inputs(
    values: np.ndarray, *, labels: np.ndarray | None = None, description: str = "given inputs"
) -> InputBatches:
    """Model input made elsewhere (float, in the model's layout and range), fed to every variant as it is.

    For comparisons with another tool fed the very same tensors; the folder's
    own runs use samples or generated pixels, which each variant converts.
    """
    spec = InputSpec(tuple(values.shape[1:]), layout=Layout.NC if values.ndim == 2 else Layout.NCL)
    if values.ndim >= 4:
        spec = InputSpec(tuple(values.shape[1:]))  # only the geometry matters here: nothing is converted
    return InputBatches(description, len(values), spec, labels, prepared=np.asarray(values))


def generated_inputs(spec: InputSpec, count: int, *, seed: int = 0) -> InputBatches:
    """``count`` random inputs (seeded) in the model's input shape."""
    what = "uniform random pixels" if spec.is_image else "standard normal arrays"
    return InputBatches(f"generated {what} ({count}, seed {seed})", count, spec, seed=seed)


def sample_inputs(
    variants: ModelVariants, spec: InputSpec, *, images: int, seed: int = 0
) -> tuple[InputBatches, list[str]]:
    """The first ``images`` of the folder's ``samples.npz``, or generated inputs when it has none that fit.

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
        made = generated_inputs(spec, images, seed=seed)
        return made, [*notes, f"{made.description.split(' (')[0]} used instead"]
    count = min(images, len(samples))
    if count < images:
        notes.append(f"{SAMPLES_NAME} holds {len(samples)} {sample_noun(spec)}; all of them used")
    labels = samples.labels[:count] if samples.labels is not None else None
    return InputBatches(f"{SAMPLES_NAME} ({count} {sample_noun(spec)})", count, spec, labels, samples), notes
