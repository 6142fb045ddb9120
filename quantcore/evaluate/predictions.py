"""What each variant predicts: its outputs over a sample set, and top-k for one image side by side.

Every loaded variant runs through its backend's cached predictor. Logits over
a sample set are cached per (folder fingerprint, variant, samples, batch size)
in the results cache, so the flip list and the accuracy table share one run of
each variant.

A quantized variant is compared with its float reference: the float model of
its own format, else the other float (``quantcore.load.reference_key``), so
``onnx_int8`` answers to ``onnx_float`` and ``pytorch_int8`` to ``pytorch_float``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantcore import settings
from quantcore.backends import Predictor, predictor_for
from quantcore.errors import RunTimeoutError
from quantcore.evaluate.failures import failure_note
from quantcore.evaluate.inputs import InputSpec, OutputKind, SampleSet, to_model_input, variant_spec
from quantcore.evaluate.progress import Progress
from quantcore.load import Key, ModelVariants, Status, VariantKey, reference_key
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 3
MAX_TOP_K = 10
ProgressFn = Callable[[float, str], None]


def runnable(variants: ModelVariants) -> tuple[list[Key], list[str]]:
    """The loaded variants, in key order, and a note for each one that is not.

    Returns:
        The keys to run, and notes such as ``"onnx_uint8: missing — skipped"``.
    """
    keys, notes = [], []
    for key, record in variants.records.items():
        if record.status is Status.LOADED:
            keys.append(key)
        elif record.status is Status.MISSING and record.error is None:
            notes.append(f"{key}: missing — skipped")
        else:
            notes.append(f"{key}: {record.status} ({record.error or 'no reason given'}) — skipped")
    return keys, notes


# ---------------------------------------------------------------- logits


@dataclass(frozen=True)
class VariantOutputs:
    """Logits (N, classes) of every variant that ran over one sample set, and notes on the rest."""

    logits: dict[Key, np.ndarray]
    seconds: dict[Key, float]
    notes: tuple[str, ...] = ()

    def references(self) -> dict[Key, VariantKey]:
        """Each variant that has a float reference among those that ran, mapped to it."""
        ran = list(self.logits)
        return {k: ref for k in ran if (ref := reference_key(k, ran)) is not None}


def _run_one(
    predictor: Predictor, samples: SampleSet, spec: InputSpec, batch_size: int, report: Callable[[int], None]
) -> np.ndarray:
    """One variant over every sample, ``batch_size`` at a time: converted, run and kept per batch."""
    batches = []
    for start in range(0, len(samples), batch_size):
        stop = min(start + batch_size, len(samples))
        batches.append(np.asarray(predictor(to_model_input(samples.pixels(start, stop), spec))))
        report(stop)
    return np.concatenate(batches) if batches else np.empty((0, 0), dtype=np.float32)


def runnable_with(variants: ModelVariants, spec: InputSpec) -> tuple[list[Key], list[str]]:
    """The loaded variants that take pixels of ``spec``'s shape, and a note for each one that does not."""
    keys, notes = runnable(variants)
    fits = []
    for key in keys:
        own = variant_spec(variants, key)
        if own.pixel_shape != spec.pixel_shape:
            notes.append(f"{key}: takes {list(own.pixel_shape)}, not the {list(spec.pixel_shape)} of the others — "
                         "skipped")  # fmt: skip
        else:
            fits.append(key)
    return fits, notes


def variant_logits(
    variants: ModelVariants,
    samples: SampleSet,
    spec: InputSpec,
    *,
    batch_size: int | None = None,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> VariantOutputs:
    """Logits of every loaded variant over ``samples``, each cached once computed.

    A variant that is missing, failed to load, or fails while running is left
    out with a note; this does not raise for its sake.

    Args:
        variants: a loaded folder.
        samples: the samples (``folder_samples`` or a test set), fitted to ``spec``.
        spec: the folder's input (the pixels every variant is fed; each makes its own input of them).
        batch_size: images per call (default: the configured evaluation batch size).
        threads: intra-op threads per variant (default: the configured threads).
        progress: called with (fraction done, message) after every batch.

    Returns:
        A ``VariantOutputs`` with one logits array per variant that ran.

    Raises:
        ValueError: ``batch_size`` is not positive.
    """
    current = settings.current()
    batch_size = current.eval_batch_size if batch_size is None else batch_size
    threads = current.threads if threads is None else threads
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    keys, notes = runnable_with(variants, spec)
    logits: dict[Key, np.ndarray] = {}
    seconds: dict[Key, float] = {}
    count = len(samples)
    # One bar over every variant's images, with the time left once it can be told.
    overall = Progress(count * max(len(keys), 1), progress)
    for position, key in enumerate(keys):

        def report(done: int, position: int = position, key: Key = key) -> None:
            overall(position * count + done, str(key))

        own = variant_spec(variants, key)

        def compute(key: Key = key, own: InputSpec = own, report: Callable[[int], None] = report) -> tuple:
            predictor = predictor_for(variants.model(key), threads=threads)
            started = time.perf_counter()
            out = _run_one(predictor, samples, own, own.batch or batch_size, report)
            return out, time.perf_counter() - started

        try:
            view_settings = (str(key), samples.key, batch_size, threads, own)
            (logits[key], seconds[key]), _ = cached(variants, "logits", view_settings, compute)
        except RunTimeoutError:  # the request's time is up: it ends, for every variant
            raise
        except Exception as exc:  # one failing variant must not end the others' run
            logger.warning("running %s over %s failed: %s", key, samples.description, exc)
            notes.append(failure_note(key, exc))
            continue
        if logits[key].ndim != 2 or len(logits[key]) != count:
            notes.append(f"{key}: gave output of shape {logits[key].shape}, not (images, classes) — skipped")
            del logits[key], seconds[key]
    return VariantOutputs(logits, seconds, tuple(notes))


# ------------------------------------------------------------ one image


def probabilities(outputs: np.ndarray, kind: OutputKind = OutputKind.LOGITS) -> np.ndarray:
    """Class probabilities from a model's outputs, as its kind says: softmax of logits, exp of
    log-probabilities, and probabilities as the model gave them (a quantized softmax need not sum to 1:
    they are shown as computed, never put through a second softmax)."""
    values = np.asarray(outputs, dtype=np.float64)
    if kind is OutputKind.PROBABILITIES:
        return values
    if kind is OutputKind.LOG_PROBABILITIES:
        return np.exp(values)
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class VariantPrediction:
    """One variant's top-k for one image, and whether its top-1 is its float reference's."""

    variant: Key
    top: tuple[ClassScore, ...]
    reference: VariantKey | None = None
    agrees: bool | None = None  # None: no reference (a float model, or no float loaded)


@dataclass(frozen=True)
class Prediction:
    """Every variant's top-k for one image."""

    source: str
    pixels: np.ndarray = field(repr=False)  # uint8 (C, H, W): what the models saw
    label: int | None
    label_name: str | None
    variants: tuple[VariantPrediction, ...]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the image's source and label, and every variant's top-k."""
        return {
            "source": self.source,
            "label": self.label,
            "label_name": self.label_name,
            "variants": {
                str(p.variant): {
                    "top_k": [
                        {"class": s.index, "name": s.name, "probability": round(s.probability, 6)} for s in p.top
                    ],
                    "reference": str(p.reference) if p.reference else None,
                    "agrees_with_float": p.agrees,
                }
                for p in self.variants
            },
            "notes": list(self.notes),
        }


def predict_image(
    variants: ModelVariants,
    pixels: np.ndarray,
    spec: InputSpec,
    *,
    k: int = DEFAULT_TOP_K,
    label: int | None = None,
    label_names: tuple[str, ...] | None = None,
    source: str = "image",
) -> Prediction:
    """Top-k classes of every loaded variant for one image, and whether each agrees with float.

    Args:
        variants: a loaded folder.
        pixels: uint8 (C, H, W) of the folder's input (a sample, or ``image_to_pixels``).
        spec: the folder's input; each variant makes its own input of the pixels.
        k: how many classes per variant (1 to ``MAX_TOP_K``).
        label: the true class, when known.
        label_names: class names (default: the recorded ones, else ``class i``).
        source: what the image is, for display.

    Returns:
        A ``Prediction``; variants that are missing or fail are skipped with a note.

    Raises:
        ValueError: ``k`` is out of range or ``pixels`` is not of the input shape.
    """
    if not 1 <= k <= MAX_TOP_K:
        raise ValueError(f"k must be between 1 and {MAX_TOP_K}, got {k}")
    if tuple(pixels.shape) != spec.pixel_shape or (spec.is_image and pixels.dtype != np.uint8):
        raise ValueError(f"pixels must be uint8 {spec.pixel_shape}, got {pixels.dtype} {tuple(pixels.shape)}")
    keys, notes = runnable_with(variants, spec)
    top1: dict[Key, int] = {}
    scores: dict[Key, tuple[ClassScore, ...]] = {}
    for key in keys:
        own = variant_spec(variants, key)
        try:
            batch = to_model_input(pixels[None], own)
            if own.batch and own.batch > 1:  # a graph that fixes its batch gets one; the first row is ours
                batch = np.repeat(batch, own.batch, axis=0)
            outputs = np.asarray(predictor_for(variants.model(key))(batch))[:1]
        except RunTimeoutError:  # the request's time is up: it ends, for every variant
            raise
        except Exception as exc:  # one failing variant must not hide the others
            logger.warning("running %s on one image failed: %s", key, exc)
            notes.append(failure_note(key, exc))
            continue
        probs = probabilities(outputs.reshape(1, -1), own.output)[0]
        names = label_names if label_names is not None and len(label_names) == len(probs) else spec.names(len(probs))
        order = np.argsort(-probs, kind="stable")[: min(k, len(probs))]
        scores[key] = tuple(ClassScore(int(i), names[int(i)], float(probs[i])) for i in order)
        top1[key] = int(order[0])
    ran = list(scores)
    results = []
    for key in ran:
        ref = reference_key(key, ran)
        # onnx_float answers to pytorch_float: export fidelity, shown like any other agreement.
        results.append(VariantPrediction(key, scores[key], ref, None if ref is None else top1[key] == top1[ref]))
    label_name = None
    if label is not None:
        names = label_names or spec.class_names or ()
        label_name = names[label] if 0 <= label < len(names) else f"class {label}"
    return Prediction(source, pixels, label, label_name, tuple(results), tuple(notes))
