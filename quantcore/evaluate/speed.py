"""How fast each variant runs: images/s at each batch size, measured with the variants taking turns,
and advice when a quantized variant is slower than float.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from quantcore import settings
from quantcore.backends import Predictor, predictor_for
from quantcore.errors import RunTimeoutError
from quantcore.evaluate.batches import generated_inputs
from quantcore.evaluate.failures import failure_note
from quantcore.evaluate.inputs import InputSpec, folder_samples, to_model_input, variant_spec
from quantcore.evaluate.predictions import runnable_with
from quantcore.load import SAMPLES_NAME, Key, ModelFormat, ModelVariants, reference_key
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

BATCH_SIZES: tuple[int, ...] = (1, 64)
DEFAULT_RUNS = 30
MAX_RUNS = 500
SPEED_ROUNDS, SPEED_WARMUP = 5, 2
# A quantized variant this much slower than its float reference is called slower: below it is noise.
SLOWER_MARGIN = 0.95
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class Throughput:
    """Speed of one predictor at one batch size, from ``runs`` timed calls.

    ``best`` is the fastest run: on a machine shared with other work it is the
    closest estimate of what the model itself costs (slower runs are mostly
    interference, as ``timeit`` reasons). ``median`` is the typical run.
    """

    batch_size: int
    runs: int
    warmup_runs: int
    median_seconds: float
    best_seconds: float

    @property
    def images_per_second(self) -> float:
        """Images per second of the median run."""
        return self.batch_size / self.median_seconds

    @property
    def best_images_per_second(self) -> float:
        """Images per second of the fastest run."""
        return self.batch_size / self.best_seconds


def _batch_of(inputs: np.ndarray, batch_size: int) -> np.ndarray:
    if batch_size < 1 or len(inputs) == 0:
        raise ValueError("need at least one image and a positive batch size")
    return np.ascontiguousarray(np.resize(inputs, (batch_size, *inputs.shape[1:])))


def _timed_runs(predictor: Predictor, batch: np.ndarray, runs: int, warmup_runs: int) -> list[float]:
    for _ in range(warmup_runs):
        predictor(batch)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor(batch)
        timings.append(time.perf_counter() - start)
    return timings


def measure_throughput(
    predictor: Predictor, inputs: np.ndarray, *, batch_size: int, runs: int, warmup_runs: int = 5
) -> Throughput:
    """Time ``runs`` calls of ``predictor`` on one batch of ``batch_size`` inputs, after ``warmup_runs``.

    The first ``batch_size`` inputs form the batch (repeated if there are fewer).
    """
    if runs < 1:
        raise ValueError("need at least one run")
    timings = _timed_runs(predictor, _batch_of(inputs, batch_size), runs, warmup_runs)
    return Throughput(batch_size, runs, warmup_runs, statistics.median(timings), min(timings))


def compare_throughput(
    predictors: Mapping[str, Predictor],
    inputs: np.ndarray | Mapping[str, np.ndarray],
    *,
    batch_size: int,
    runs: int,
    rounds: int = 5,
    warmup_runs: int = 2,
) -> dict[str, Throughput]:
    """``measure_throughput`` for several predictors that take turns, so they can be ranked.

    Each predictor's ``runs`` are split into ``rounds`` blocks and the blocks
    alternate between predictors: a burst of load from elsewhere on a shared
    machine then falls on all of them alike. Every block starts with
    ``warmup_runs`` untimed calls, since switching runtimes wakes other threads.
    ``inputs`` is one array for all, or one per predictor (each its own input).
    """
    if runs < rounds or rounds < 1:
        raise ValueError("need at least one run per round")
    own = inputs if isinstance(inputs, Mapping) else dict.fromkeys(predictors, inputs)
    batches = {name: _batch_of(own[name], batch_size) for name in predictors}
    timings: dict[str, list[float]] = {name: [] for name in predictors}
    for round_index in range(rounds):
        block = runs // rounds + (1 if round_index < runs % rounds else 0)
        for name, predictor in predictors.items():
            timings[name] += _timed_runs(predictor, batches[name], block, warmup_runs)
    return {
        name: Throughput(batch_size, runs, warmup_runs * rounds, statistics.median(t), min(t))
        for name, t in timings.items()
    }


# ---------------------------------------------------------------------- speed


@dataclass(frozen=True)
class Speeds:
    """images/s of every variant that ran, per batch size, measured in one run where the variants take turns.

    ``images_per_second`` is from each variant's fastest run: on a machine shared
    with other work it is the closest estimate of what the model itself costs
    (slower runs are mostly interference). ``median_images_per_second`` is the typical run.
    """

    images_per_second: dict[Key, dict[int, float]]
    median_images_per_second: dict[Key, dict[int, float]]
    runs: int
    threads: int
    source: str
    notes: tuple[str, ...] = ()


def _speed_pixels(variants: ModelVariants, spec: InputSpec, size: int) -> tuple[np.ndarray, str]:
    samples, _ = folder_samples(variants, spec)
    if samples is not None:
        return samples.pixels(0, size), f"the first {min(size, len(samples))} of {SAMPLES_NAME}"
    made = generated_inputs(spec, size)
    return next(made.batches(size))[0], made.description


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
        threads: intra-op threads per variant (default: the configured threads).
        progress: called with (fraction done, message) between batch sizes.

    Returns:
        ``Speeds``; a variant that fails (or whose graph fixes another batch size) is left out with a note.

    Raises:
        ValueError: ``runs`` is not between 1 and ``MAX_RUNS``.
    """
    if not 1 <= runs <= MAX_RUNS:
        raise ValueError(f"runs must be between 1 and {MAX_RUNS}, got {runs}")
    threads = settings.current().threads if threads is None else threads
    keys, notes = runnable_with(variants, spec)
    by_name = {str(k): k for k in keys}
    pixels, source = _speed_pixels(variants, spec, max(batch_sizes))
    best: dict[Key, dict[int, float]] = {k: {} for k in keys}
    median: dict[Key, dict[int, float]] = {k: {} for k in keys}
    for step, batch_size in enumerate(batch_sizes):
        if progress is not None:
            progress(step / len(batch_sizes), f"timing {len(keys)} variant(s) at batch {batch_size}, {runs} runs each")
        predictors: dict[str, Predictor] = {}
        inputs: dict[str, np.ndarray] = {}
        for key in keys:
            own = variant_spec(variants, key)
            if own.batch is not None and own.batch != batch_size:
                notes.append(f"{key}: its graph fixes batch {own.batch}; not timed at batch {batch_size}")
                continue
            try:
                inputs[str(key)] = to_model_input(np.resize(pixels, (batch_size, *pixels.shape[1:])), own)
                predictor = predictor_for(variants.model(key), threads=threads)
                predictor(inputs[str(key)])  # fails here, not inside the shared timing loop
            except RunTimeoutError:  # the request's time is up: it ends, for every variant
                raise
            except Exception as exc:  # one failing variant must not end the others' timing
                logger.warning("timing %s failed: %s", key, exc)
                failed = failure_note(key, exc, what=f"failed at batch {batch_size}")
                notes.append(failed.replace("— skipped", "— not timed"))
                continue
            predictors[str(key)] = predictor
        if not predictors:
            continue
        timed = compare_throughput(
            predictors, inputs, batch_size=batch_size, runs=runs, rounds=min(SPEED_ROUNDS, runs),
            warmup_runs=SPEED_WARMUP,
        )  # fmt: skip
        for name, throughput in timed.items():
            best[by_name[name]][batch_size] = throughput.best_images_per_second
            median[by_name[name]][batch_size] = throughput.images_per_second
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
    settings_key = (runs, tuple(batch_sizes), settings.current().threads)
    return cached(
        variants, "speed", settings_key,
        lambda: measure_speeds(variants, spec, runs=runs, batch_sizes=batch_sizes, progress=progress),
    )  # fmt: skip


# --------------------------------------------------------------------- advice


def activation_type(variants: ModelVariants, key: Key) -> str | None:
    quantization = variants.records[key].details.get("quantization") or {}
    return quantization.get("activation_type") if isinstance(quantization, dict) else None


@dataclass(frozen=True)
class SpeedAdvice:
    """A quantized variant slower than its float reference: what was measured, and what to do."""

    variant: Key
    finding: str
    suggestion: str | None = None

    def __str__(self) -> str:
        return f"{self.finding} {self.suggestion}" if self.suggestion else self.finding


def speed_advice(
    speeds: dict[Key, dict[int, float]], activation_types: dict[Key, str | None] | None = None
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
        if key.format is ModelFormat.ONNX and activation_types.get(key) == "int8":
            onnx_uint8 = (k for k in measured if k.format is ModelFormat.ONNX and activation_types.get(k) == "uint8")
            uint8 = next(onnx_uint8, None)
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
