"""How good and how fast each variant is: one table of accuracy, per-class accuracy, agreement with float,
file size and images/s at batch 1 and 64 — and advice when a quantized variant is slower than float.

Accuracy runs on the folder's ``samples.npz`` or on a full test set the user
names: a Fashion-MNIST folder of gzipped IDX files or a ``cifar-10-batches-py``
folder, inside the allowed data roots only (``quantcore.data.test_sets``).
Logits come from ``predictions.variant_logits`` (cached per variant); speeds
from ``speed.cached_speeds`` — every variant takes turns, so a burst of load
elsewhere falls on all of them. Nothing here is a recorded figure: every
number is measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from quantcore.evaluate import metrics
from quantcore.evaluate.inputs import InputSpec, SampleSet
from quantcore.evaluate.kernels import KernelCheck, check_kernels
from quantcore.evaluate.predictions import VariantOutputs, variant_logits
from quantcore.evaluate.speed import (
    DEFAULT_RUNS,
    MAX_RUNS,
    SpeedAdvice,
    Speeds,
    activation_type,
    cached_speeds,
    speed_advice,
)
from quantcore.load import Key, ModelVariants, VariantKey

logger = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]


# ---------------------------------------------------------------- scorecard


@dataclass(frozen=True)
class VariantScore:
    """One row of the table."""

    variant: Key
    file: str | None
    bytes: int | None
    correct: int | None
    accuracy: float | None
    per_class: tuple[float | None, ...]
    reference: VariantKey | None
    agreement: float | None
    images_per_second: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scorecard:
    """Accuracy and speed of every variant, on one sample set."""

    scores: tuple[VariantScore, ...]
    images: int
    source: str
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]
    speeds: Speeds
    advice: tuple[SpeedAdvice, ...]
    notes: tuple[str, ...] = ()
    kernel_checks: tuple[KernelCheck, ...] = ()


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy, per-class accuracy and agreement of every variant that ran (no speeds yet)."""

    scores: tuple[VariantScore, ...]
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]
    notes: tuple[str, ...] = ()
    kernel_checks: tuple[KernelCheck, ...] = ()


def score_accuracy(
    variants: ModelVariants,
    samples: SampleSet,
    spec: InputSpec,
    *,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> AccuracyResult:
    """Accuracy, per-class accuracy, agreement with float and file size of every loaded variant.

    Args:
        variants: a loaded folder.
        samples: labelled images (``folder_samples`` or ``load_test_set``).
        spec: the folder's input description.
        threads: intra-op threads per variant (default: the configured threads).
        progress: called with (fraction done, message) after every batch.

    Returns:
        An ``AccuracyResult``; skipped variants are in its notes, never raised.

    Raises:
        ValueError: the samples carry no labels.
    """
    if samples.labels is None:
        raise ValueError("accuracy needs labelled samples")
    outputs: VariantOutputs = variant_logits(variants, samples, spec, threads=threads, progress=progress)
    notes = list(outputs.notes)
    width = max((v.shape[1] for v in outputs.logits.values()), default=len(samples.label_names))
    names = samples.label_names if len(samples.label_names) == width else spec.names(width)
    if len(samples.label_names) != width:
        notes.append(f"the samples name {len(samples.label_names)} classes; the models output {width}")
    labels = samples.labels
    references = outputs.references()
    scores = []
    for key, logits in outputs.logits.items():
        record, ref = variants.records[key], references.get(key)
        agreement = metrics.agreement(logits, outputs.logits[ref]) if ref is not None else None
        correct = int(np.sum(np.argmax(logits, axis=1) == labels))
        scores.append(VariantScore(
            key, record.file, record.bytes, correct, metrics.accuracy(logits, labels),
            metrics.per_class_accuracy(logits, labels, width), ref, agreement,
        ))  # fmt: skip
    counts = tuple(int(n) for n in np.bincount(labels, minlength=width)[:width])
    # What this CPU's kernels compute may not be what the graph specifies: say so where it changes answers.
    checks = check_kernels(variants, samples, outputs.logits)
    notes.extend(note for check in checks if (note := check.note()) is not None)
    return AccuracyResult(tuple(scores), names, counts, tuple(notes), checks)


def build_scorecard(
    variants: ModelVariants,
    samples: SampleSet,
    spec: InputSpec,
    *,
    runs: int = DEFAULT_RUNS,
    progress: ProgressFn | None = None,
) -> Scorecard:
    """Accuracy, per-class accuracy, agreement with float, file size and speed of every loaded variant.

    Args:
        variants: a loaded folder.
        samples: labelled images (``folder_samples`` or ``load_test_set``).
        spec: the folder's input description.
        runs: timed runs per variant and batch size.
        progress: called with (fraction done, message).

    Returns:
        The ``Scorecard``; skipped variants are in its notes, never raised.

    Raises:
        ValueError: the samples carry no labels, or ``runs`` is out of range.
    """
    if not 1 <= runs <= MAX_RUNS:
        raise ValueError(f"runs must be between 1 and {MAX_RUNS}, got {runs}")

    def part(start: float, span: float) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda fraction, message: progress(start + span * fraction, message)

    accuracy = score_accuracy(variants, samples, spec, progress=part(0.0, 0.6))
    speeds, _ = cached_speeds(variants, spec, runs=runs, progress=part(0.6, 0.4))
    scores = tuple(replace(s, images_per_second=speeds.images_per_second.get(s.variant, {})) for s in accuracy.scores)
    activation_types = {k: activation_type(variants, k) for k in speeds.images_per_second}
    advice = speed_advice(speeds.images_per_second, activation_types)
    notes = tuple(dict.fromkeys([*accuracy.notes, *speeds.notes]))
    return Scorecard(scores, len(samples), samples.description, accuracy.class_names, accuracy.class_counts, speeds,
                     tuple(advice), notes, accuracy.kernel_checks)  # fmt: skip
