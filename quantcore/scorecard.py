"""How good and how fast each variant is: one table of accuracy, per-class accuracy, agreement with float,
file size and images/s at batch 1 and 64 — and advice when a quantized variant is slower than float.

Accuracy runs on the folder's ``samples.npz`` or on a full test set the user
names: a Fashion-MNIST folder of gzipped IDX files or a ``cifar-10-batches-py``
folder, inside the allowed data roots only (``data_roots()``). Logits come
from ``quantcore.predictions.variant_logits`` (cached per variant); speeds are
measured with ``quantcore.evaluate.compare_throughput`` — every variant takes
turns, so a burst of load elsewhere falls on all of them — and cached per
folder and settings. Nothing here is a recorded figure: every number is measured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore import datasets, paths, results_cache, settings
from quantcore.cache import SingleFlightLRU
from quantcore.datasets import SAMPLES_NAME
from quantcore.errors import DatasetError, ModelNotFoundError, PathNotAllowedError
from quantcore.layers import reference_key
from quantcore.model_input import InputSpec, SampleSet, folder_samples, to_model_input
from quantcore.predictions import VariantOutputs, fixed_batch_size, predictor_for, runnable, variant_logits
from quantcore.variants import ModelVariants, VariantKey

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from quantcore import evaluate

logger = logging.getLogger(__name__)

# Folders a user may point at for a full test set, besides the models root. Debian installs
# its data set packages (dataset-fashion-mnist) here.
SYSTEM_DATA_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
BATCH_SIZES: tuple[int, ...] = (1, 64)
DEFAULT_RUNS = 30
MAX_RUNS = 500
SPEED_ROUNDS, SPEED_WARMUP = 5, 2
# A quantized variant this much slower than its float reference is called slower: below it is noise.
SLOWER_MARGIN = 0.95
MAX_SCAN_DEPTH = 2
ProgressFn = Callable[[float, str], None]


def _evaluate() -> Any:
    # Imported on use: it brings in torch and onnxruntime, seconds the app must not spend starting up.
    from quantcore import evaluate

    return evaluate


def data_roots() -> list[Path]:
    """Where a full test set may be read from: the models root and the system data roots."""
    return [settings.current().models_root, *SYSTEM_DATA_ROOTS]


# ------------------------------------------------------------------ test sets


class TestSetKind(StrEnum):
    """The test-set layouts that can be read."""

    FASHION_MNIST = "Fashion-MNIST (gzipped IDX)"
    CIFAR10 = "CIFAR-10 (cifar-10-batches-py)"


_TEST_FILES = {
    TestSetKind.FASHION_MNIST: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    TestSetKind.CIFAR10: ("batches.meta", "test_batch"),
}
_TEST_SETS: SingleFlightLRU[datasets.LabelledImages] = SingleFlightLRU(2)


def test_set_kind(folder: Path) -> TestSetKind | None:
    """Which test-set layout ``folder`` holds, if any."""
    for kind, names in _TEST_FILES.items():
        if all((folder / name).is_file() for name in names):
            return kind
    return None


def find_test_sets() -> list[Path]:
    """Folders inside the allowed data roots (up to two levels down) that hold a readable test set."""
    found: list[Path] = []
    for root in data_roots():
        level = [Path(os.path.realpath(root))]
        for _ in range(MAX_SCAN_DEPTH + 1):
            below: list[Path] = []
            for folder in level:
                if test_set_kind(folder) is not None:
                    found.append(folder)
                try:
                    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    continue
                below += [p for p in children if paths.is_within(p, root)]  # a link out of the root is not followed
            level = below
    return list(dict.fromkeys(found))


def resolve_test_set(folder: str | os.PathLike[str]) -> tuple[Path, TestSetKind]:
    """The allowed, existing test-set folder a user named (absolute, or relative to the models root).

    Raises:
        PathNotAllowedError: outside every allowed data root (after resolving links), or malformed.
        ModelNotFoundError: no such folder.
        DatasetError: the folder holds no test set this module reads.
    """
    text = os.fspath(folder)
    if not isinstance(text, str) or "\x00" in text or len(text) > paths.MAX_PATH_CHARS:
        raise PathNotAllowedError("not a usable folder path")
    candidate = Path(text.strip())
    if not candidate.is_absolute():
        candidate = settings.current().models_root / candidate
    resolved = paths.require_within(candidate, data_roots(), what="test set folder")
    if not resolved.is_dir():
        raise ModelNotFoundError("test set folder does not exist")
    kind = test_set_kind(resolved)
    if kind is None:
        expected = "; or ".join(", ".join(names) for names in _TEST_FILES.values())
        raise DatasetError(f"no test set in that folder: expected {expected}")
    return resolved, kind


def load_test_set(folder: str | os.PathLike[str], spec: InputSpec) -> SampleSet:
    """The test split of a Fashion-MNIST or CIFAR-10 folder, as samples for this model.

    CIFAR-10 batches are pickles: they are read with ``datasets``' array-only unpickler.

    Args:
        folder: the test-set folder (absolute, or relative to the models root).
        spec: the model's input (the images must have its shape).

    Returns:
        The labelled images, keyed by the folder and its files' sizes and times.

    Raises:
        PathNotAllowedError, ModelNotFoundError: as ``resolve_test_set``.
        DatasetError: unreadable files, or images that are not the model's input shape.
    """
    resolved, kind = resolve_test_set(folder)
    stats = tuple((n, (resolved / n).stat().st_size, (resolved / n).stat().st_mtime_ns) for n in _TEST_FILES[kind])
    cifar_batches = tuple(sorted(p.name for p in resolved.glob("data_batch_*")))  # not read; only the test split

    def load() -> datasets.LabelledImages:
        if kind is TestSetKind.FASHION_MNIST:
            return datasets.load_fashion_mnist("test", resolved)
        return datasets.load_cifar10(resolved, "test")

    data, _ = _TEST_SETS.get(str(resolved), (kind, stats, cifar_batches), load)
    if data.images.shape[1:] != spec.shape:
        raise DatasetError(f"the test set holds {data.images.shape[1:]} images; the model takes {spec.shape}")
    return SampleSet(data.images, data.labels, data.label_names, f"{kind} test split, {len(data):,} images "
                     f"({resolved.name})", ("test set", str(resolved), kind.value, stats))  # fmt: skip


# ---------------------------------------------------------------------- speed


@dataclass(frozen=True)
class Speeds:
    """images/s of every variant that ran, per batch size, measured in one run where the variants take turns.

    ``images_per_second`` is from each variant's fastest run: on a machine shared
    with other work it is the closest estimate of what the model itself costs
    (slower runs are mostly interference). ``median_images_per_second`` is the typical run.
    """

    images_per_second: dict[VariantKey, dict[int, float]]
    median_images_per_second: dict[VariantKey, dict[int, float]]
    runs: int
    threads: int
    source: str
    notes: tuple[str, ...] = ()


def _speed_inputs(variants: ModelVariants, spec: InputSpec, size: int) -> tuple[np.ndarray, str]:
    samples, _ = folder_samples(variants, spec)
    if samples is not None:
        return to_model_input(samples.images[:size], spec), f"the first {min(size, len(samples))} of {SAMPLES_NAME}"
    rng = np.random.default_rng(0)
    return rng.random((size, *spec.shape), dtype=np.float32), "generated uniform [0, 1) inputs"


def measure_speeds(
    variants: ModelVariants,
    spec: InputSpec,
    *,
    runs: int = DEFAULT_RUNS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> Speeds:
    """images/s of every loaded variant at each batch size, the variants taking turns (fastest and median run).

    Args:
        variants: a loaded folder.
        spec: the folder's input description.
        runs: timed runs per variant and batch size.
        batch_sizes: the batch sizes to time.
        threads: intra-op threads per variant (default: ``evaluate.DEFAULT_THREADS``).
        progress: called with (fraction done, message) between batch sizes.

    Returns:
        ``Speeds``; a variant that fails (or whose graph fixes another batch size) is left out with a note.

    Raises:
        ValueError: ``runs`` is not between 1 and ``MAX_RUNS``.
    """
    if not 1 <= runs <= MAX_RUNS:
        raise ValueError(f"runs must be between 1 and {MAX_RUNS}, got {runs}")
    evaluate = _evaluate()
    threads = evaluate.DEFAULT_THREADS if threads is None else threads
    keys, notes = runnable(variants)
    inputs, source = _speed_inputs(variants, spec, max(batch_sizes))
    best: dict[VariantKey, dict[int, float]] = {k: {} for k in keys}
    median: dict[VariantKey, dict[int, float]] = {k: {} for k in keys}
    for step, batch_size in enumerate(batch_sizes):
        if progress is not None:
            progress(step / len(batch_sizes), f"timing {len(keys)} variant(s) at batch {batch_size}, {runs} runs each")
        predictors: dict[str, evaluate.Predictor] = {}
        for key in keys:
            fixed = fixed_batch_size(variants[key])
            if fixed is not None and fixed != batch_size:
                notes.append(f"{key}: its graph fixes batch {fixed}; not timed at batch {batch_size}")
                continue
            try:
                predictor = predictor_for(variants[key], threads=threads)
                predictor(inputs[:batch_size])  # fails here, not inside the shared timing loop
            except Exception as exc:  # one failing variant must not end the others' timing
                logger.exception("timing %s failed", key)
                notes.append(f"{key}: failed at batch {batch_size} ({type(exc).__name__}); not timed")
                continue
            predictors[str(key)] = predictor
        if not predictors:
            continue
        timed = evaluate.compare_throughput(
            predictors, inputs, batch_size=batch_size, runs=runs, rounds=min(SPEED_ROUNDS, runs),
            warmup_runs=SPEED_WARMUP,
        )  # fmt: skip
        for name, throughput in timed.items():
            best[VariantKey(name)][batch_size] = throughput.best_images_per_second
            median[VariantKey(name)][batch_size] = throughput.images_per_second
    if progress is not None:
        progress(1.0, "timing done")
    timed = [k for k in keys if best[k]]
    return Speeds({k: best[k] for k in timed}, {k: median[k] for k in timed}, runs, threads, source,
                  tuple(dict.fromkeys(notes)))  # fmt: skip


def cached_speeds(
    variants: ModelVariants,
    spec: InputSpec,
    *,
    runs: int = DEFAULT_RUNS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    progress: ProgressFn | None = None,
) -> tuple[Speeds, bool]:
    """``measure_speeds`` through the results cache (per folder fingerprint, runs and batch sizes).

    Returns:
        The speeds and whether they came from the cache.
    """
    settings_key = (runs, tuple(batch_sizes), _evaluate().DEFAULT_THREADS)
    return results_cache.cached(
        variants, "speed", settings_key,
        lambda: measure_speeds(variants, spec, runs=runs, batch_sizes=batch_sizes, progress=progress),
    )  # fmt: skip


# --------------------------------------------------------------------- advice


def _activation_type(variants: ModelVariants, key: VariantKey) -> str | None:
    quantization = variants.records[key].details.get("quantization") or {}
    return quantization.get("activation_type") if isinstance(quantization, dict) else None


@dataclass(frozen=True)
class SpeedAdvice:
    """A quantized variant slower than its float reference: what was measured, and what to do."""

    variant: VariantKey
    finding: str
    suggestion: str | None = None

    def __str__(self) -> str:
        return f"{self.finding} {self.suggestion}" if self.suggestion else self.finding


def speed_advice(
    speeds: dict[VariantKey, dict[int, float]], activation_types: dict[VariantKey, str | None] | None = None
) -> list[SpeedAdvice]:
    """Advice for every quantized variant that runs slower than its float reference.

    A variant is slower at a batch size when its images/s is under ``SLOWER_MARGIN``
    times its reference's. An ONNX variant with int8 activations (S8S8) is told
    to use uint8 activations (U8S8), which onnxruntime runs fast on x86; any other
    is pointed at the fastest variant measured.

    Args:
        speeds: images/s per variant and batch size (``Speeds.images_per_second``).
        activation_types: per variant, ``"int8"``/``"uint8"``/None (from the loaded graph).

    Returns:
        One ``SpeedAdvice`` per slower variant (empty when none is).
    """
    activation_types = activation_types or {}
    measured = list(speeds)
    advice = []
    for key in measured:
        ref = reference_key(key, measured)
        if not key.is_quantized or ref is None:
            continue
        slower = [
            (b, ips, speeds[ref][b])
            for b, ips in sorted(speeds[key].items())
            if b in speeds[ref] and ips < SLOWER_MARGIN * speeds[ref][b]
        ]
        if not slower:
            continue
        where = " and ".join(f"batch {b} ({ips:,.0f} vs {ref_ips:,.0f} images/s)" for b, ips, ref_ips in slower)
        finding = f"{key} is slower than {ref} at {where}."
        batch = slower[-1][0]
        suggestion = None
        if key.format.value == "onnx" and activation_types.get(key) == "int8":
            uint8 = next((k for k in measured if k.format.value == "onnx" and activation_types.get(k) == "uint8"), None)
            suggestion = (
                "Its int8 activations (S8S8) run slowly in onnxruntime on x86 (it can leave convs in float): "
                "quantize with uint8 activations instead — U8S8, activation_type=QuantType.QUInt8"
            )
            if uint8 is not None and batch in speeds[uint8]:
                ratio = speeds[uint8][batch] / speeds[ref][batch]
                suggestion += f"; {uint8} runs at {speeds[uint8][batch]:,.0f} images/s here, {ratio:.2f}× float."
            else:
                suggestion += "."
        else:
            fastest = max((k for k in measured if batch in speeds[k]), key=lambda k: speeds[k][batch])
            if fastest.is_quantized and fastest is not key:
                suggestion = (f"The fastest variant measured at batch {batch} is {fastest} "
                              f"({speeds[fastest][batch]:,.0f} images/s): consider its scheme.")  # fmt: skip
            elif not fastest.is_quantized:
                suggestion = f"No quantized variant beats {fastest} at batch {batch} on this machine."
        advice.append(SpeedAdvice(key, finding, suggestion))
    return advice


# ---------------------------------------------------------------- scorecard


@dataclass(frozen=True)
class VariantScore:
    """One row of the table."""

    variant: VariantKey
    file: str | None
    bytes: int | None
    correct: int | None
    accuracy: float | None
    per_class: tuple[float | None, ...]
    reference: VariantKey | None
    agreement: float | None
    images_per_second: dict[int, float] = field(default_factory=dict)


def _pct(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(100 * value, digits)


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

    def records(self) -> list[dict[str, Any]]:
        """The table: one row per variant."""
        floats = {s.variant: s.images_per_second for s in self.scores}
        rows = []
        for s in self.scores:
            row: dict[str, Any] = {
                "variant": str(s.variant),
                "file": s.file,
                "size (KB)": round(s.bytes / 1024, 1) if s.bytes is not None else None,
                "accuracy (%)": _pct(s.accuracy),
                "correct": s.correct,
                "agreement with float (%)": _pct(s.agreement),
                "float reference": str(s.reference) if s.reference else None,
            }
            speed_ref = reference_key(s.variant, [k for k in floats if floats[k]])
            for batch in BATCH_SIZES:
                ips = s.images_per_second.get(batch)
                row[f"images/s @{batch}"] = round(ips, 1) if ips is not None else None
                ref_ips = floats.get(speed_ref, {}).get(batch) if speed_ref and s.variant.is_quantized else None
                row[f"× float @{batch}"] = round(ips / ref_ips, 2) if ips and ref_ips else None
            rows.append(row)
        return rows

    def per_class_records(self) -> list[dict[str, Any]]:
        """Per-class accuracy (%): one row per class, one column per variant."""
        rows = []
        for c, name in enumerate(self.class_names):
            row: dict[str, Any] = {"class": name, "images": self.class_counts[c]}
            for s in self.scores:
                row[str(s.variant)] = _pct(s.per_class[c]) if c < len(s.per_class) else None
            rows.append(row)
        return rows

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: everything the tab shows."""
        return {
            "images": self.images,
            "source": self.source,
            "table": self.records(),
            "per_class": self.per_class_records(),
            "speed": {"runs": self.speeds.runs, "threads": self.speeds.threads, "inputs": self.speeds.source,
                      "batch_sizes": list(BATCH_SIZES), "statistic": "fastest run; variants take turns",
                      "median_images_per_second": {str(k): {f"@{b}": round(ips, 1) for b, ips in v.items()}
                                                   for k, v in self.speeds.median_images_per_second.items()}},
            "advice": [str(a) for a in self.advice],
            "notes": list(self.notes),
        }  # fmt: skip


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, classes: int) -> tuple[float | None, ...]:
    """Accuracy within each true class (None for a class with no images)."""
    predicted = np.argmax(logits, axis=1)
    counts = np.bincount(labels, minlength=classes)
    hits = np.bincount(labels[predicted == labels], minlength=classes)
    return tuple(float(hits[c] / counts[c]) if counts[c] else None for c in range(classes))


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy, per-class accuracy and agreement of every variant that ran (no speeds yet)."""

    scores: tuple[VariantScore, ...]
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]
    notes: tuple[str, ...] = ()


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
        threads: intra-op threads per variant (default: ``evaluate.DEFAULT_THREADS``).
        progress: called with (fraction done, message) after every batch.

    Returns:
        An ``AccuracyResult``; skipped variants are in its notes, never raised.

    Raises:
        ValueError: the samples carry no labels.
    """
    if samples.labels is None:
        raise ValueError("accuracy needs labelled samples")
    evaluate = _evaluate()
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
        agreement = evaluate.agreement(logits, outputs.logits[ref]) if ref is not None else None
        correct = int(np.sum(np.argmax(logits, axis=1) == labels))
        scores.append(VariantScore(
            key, record.file, record.bytes, correct, evaluate.accuracy(logits, labels),
            per_class_accuracy(logits, labels, width), ref, agreement,
        ))  # fmt: skip
    counts = tuple(int(n) for n in np.bincount(labels, minlength=width)[:width])
    return AccuracyResult(tuple(scores), names, counts, tuple(notes))


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
    activation_types = {k: _activation_type(variants, k) for k in speeds.images_per_second}
    advice = speed_advice(speeds.images_per_second, activation_types)
    notes = tuple(dict.fromkeys([*accuracy.notes, *speeds.notes]))
    return Scorecard(scores, len(samples), samples.description, accuracy.class_names, accuracy.class_counts, speeds,
                     tuple(advice), notes)  # fmt: skip


# ---------------------------------------------------------------------- chart


def scorecard_figure(card: Scorecard) -> go.Figure:
    """One bar chart: accuracy and agreement (%) per variant on the left, images/s at each batch size on the right."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [str(s.variant) for s in card.scores]
    figure = make_subplots(rows=1, cols=2, subplot_titles=(f"Accuracy on {card.images:,} images (%)",
                                                           "Speed (images/s, fastest run)"))  # fmt: skip
    figure.add_trace(go.Bar(x=names, y=[_pct(s.accuracy) for s in card.scores], name="accuracy",
                            text=[f"{100 * s.accuracy:.1f}" if s.accuracy is not None else "" for s in card.scores],
                            textposition="outside"), row=1, col=1)  # fmt: skip
    figure.add_trace(go.Bar(x=names, y=[_pct(s.agreement) for s in card.scores], name="agreement with float"),
                     row=1, col=1)  # fmt: skip
    for batch in BATCH_SIZES:
        figure.add_trace(go.Bar(x=names, y=[s.images_per_second.get(batch) for s in card.scores],
                                name=f"batch {batch}"), row=1, col=2)  # fmt: skip
    accuracies = [100 * s.accuracy for s in card.scores if s.accuracy is not None]
    low = max(0.0, min(accuracies, default=0.0) - 5)
    figure.update_yaxes(range=[low, 101], title_text="%", row=1, col=1)
    figure.update_yaxes(title_text="images/s", row=1, col=2)
    figure.update_layout(barmode="group", title=f"Accuracy and speed — {card.source}", legend_title="bars",
                         margin={"l": 60, "r": 20, "t": 80, "b": 80})  # fmt: skip
    return figure
