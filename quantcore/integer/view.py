"""The integer view of a folder: every quantized variant's conv/dense layers as integer kernels, on the samples.

One onnxruntime run per batch taps every integer tensor the variant's steps
read and write (the tensors its fused kernels produce); the per-layer figures
(``layers.LayerStats``) and two whole-network integer runs (``network``: float
requantization and fixed-point) are fed from that one capture.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from quantcore import settings
from quantcore.backends import INTEGER_KERNELS, Tapper, integer_graph_for, integer_tapper_for, kernel_ops, to_integers
from quantcore.backends.integer_graph import IntegerGraph
from quantcore.errors import RunTimeoutError
from quantcore.evaluate.batches import fitting_batch, sample_inputs
from quantcore.evaluate.failures import failure_note
from quantcore.evaluate.inputs import InputSpec, input_spec, to_model_input, variant_spec
from quantcore.evaluate.progress import Progress
from quantcore.integer.layers import LayerInteger, LayerStats
from quantcore.integer.network import NetworkRun, NetworkRunner
from quantcore.load import Key, ModelVariants
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

DEFAULT_IMAGES = 256
DEFAULT_BATCH_SIZE = 64
ProgressFn = Callable[[float, str], None]
_Run = tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class VariantInteger:
    """One quantized variant's integer layers and its whole-network integer runs."""

    variant: Key
    graph: IntegerGraph
    layers: tuple[LayerInteger, ...]
    network_float: NetworkRun | None  # onnxruntime's float requantization everywhere (when asked for)
    network_fixed: NetworkRun | None  # fixed-point M0/shift everywhere: what a microcontroller computes
    kernels: dict[str, str]  # layer output tensor -> the runtime's op that makes it (after onnxruntime's fusions)
    batch_size: int = DEFAULT_BATCH_SIZE  # images per run, after the activation budget (QP_MAX_ACTIVATION_MB)

    @property
    def runtime(self) -> str:
        """What the layers are checked against: "onnxruntime", or torch and its quantized engine."""
        return self.graph.runtime

    def kernel(self, layer: LayerInteger) -> str | None:
        """The runtime's op computing ``layer`` on this CPU (None when it cannot be told)."""
        return self.kernels.get(layer.output.name)

    def runs_float(self, layer: LayerInteger) -> bool:
        """onnxruntime leaves this layer in float here (not fused into an integer kernel): its results then
        differ from any integer kernel's by float rounding, up to 1 LSB. torch's quantized ops are all integer
        kernels."""
        kernel = self.kernel(layer)
        return self.runtime == "onnxruntime" and kernel is not None and kernel not in INTEGER_KERNELS


@dataclass(frozen=True)
class IntegerReport:
    """The integer view of every quantized variant a folder has that can be read as integer steps."""

    variants: tuple[VariantInteger, ...]
    images: int
    source: str
    seconds: float
    notes: tuple[str, ...]

    def variant(self, key: Key | str) -> VariantInteger | None:
        return next((v for v in self.variants if str(v.variant) == str(key)), None)


# What an image costs while its batch is worked on, as measured (benchmarks/bench_integer.py's 224x224 run: the
# peak RSS growth within the budget + 20 %). Per integer value tapped: the tap, the reference's two outputs kept
# for the network run, the network run's own tensors. Per value of the largest layer output: one layer's
# arithmetic (its input and accumulator in float, the scaled and rounded copies, the outputs and their
# differences) and the runtime arenas holding them.
BYTES_PER_TAPPED_VALUE = 28
BYTES_PER_LAYER_VALUE = 64


def working_bytes(values: dict[str, np.ndarray], graph: IntegerGraph, images: int) -> float:
    """Bytes one image of this batch takes while the integer view works on it (see ``BYTES_PER_*``)."""
    largest = max((values[s.output.name].size for s in graph.layers if s.output.name in values), default=0)
    tapped = sum(v.size for v in values.values())
    return (BYTES_PER_TAPPED_VALUE * tapped + BYTES_PER_LAYER_VALUE * largest) / max(images, 1)


def _runs(tapper: Tapper, spec: InputSpec, pixels: np.ndarray, convert: bool) -> Iterator[_Run]:
    """The variant's own input for ``pixels`` run through ``tapper``, in the batch its graph fixes (if it fixes
    one): (model input, integer taps, output) per run. A short last run is filled up with copies of its first
    row, and the extra rows are dropped from what it hands back."""
    x = to_model_input(pixels, spec) if convert else pixels
    fixed = spec.batch or len(x)
    for start in range(0, len(x), fixed):
        chunk = x[start : start + fixed]
        keep = len(chunk)
        if keep < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], fixed - keep, axis=0)])
        capture = tapper(chunk)
        values = {t: to_integers(v) for t, v in capture.values.items()}
        if keep == fixed:
            yield chunk, values, np.asarray(capture.output)
        else:  # every tensor of a graph that fixes its batch holds it first
            yield chunk[:keep], {t: v[:keep] for t, v in values.items()}, np.asarray(capture.output)[:keep]


def integer_view(
    variants: ModelVariants,
    *,
    images: int = DEFAULT_IMAGES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    float_network: bool = False,
    progress: ProgressFn | None = None,
) -> IntegerReport:
    """Per-layer integer figures and whole-network integer runs of every quantized variant.

    A variant that is not quantized, cannot be read as integer steps, or fails
    while running is left out with a note; this does not raise for its sake.

    Args:
        variants: a folder's variants from ``load_model_variants``.
        images: how many of the folder's samples (generated inputs when it has none).
        batch_size: images per onnxruntime run, at most: fewer when their activations would not fit
            ``QP_MAX_ACTIVATION_MB`` (said in the notes).
        float_network: also run the whole network with onnxruntime's float requantization (the fixed-point
            run, what a microcontroller computes, always runs).
        progress: called with (fraction done, message) after every batch.

    Returns:
        An ``IntegerReport``.

    Raises:
        ValueError: ``images`` or ``batch_size`` is out of range.
        RunTimeoutError: the request's deadline passed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    started = time.perf_counter()
    notes: list[str] = []
    plans: list[tuple[Key, IntegerGraph, InputSpec]] = []
    for key, record in variants.records.items():
        if record.model is None or not key.is_quantized:
            continue
        graph = integer_graph_for(record.model)
        if graph is None:
            notes.append(
                f"{key}: integer steps are read from ONNX graphs, FX int8 GraphModules and TorchScript "
                f"int8 models; this is a {type(record.model).__name__}"
            )
            continue
        notes.extend(f"{key}: {n}" for n in graph.notes)
        if not graph.layers:
            notes.append(f"{key}: no quantized conv or dense layer with integer weights")
            continue
        plans.append((key, graph, variant_spec(variants, key)))
    inputs, input_notes = sample_inputs(variants, input_spec(variants), images=images)
    notes.extend(input_notes)

    results: list[VariantInteger] = []
    budget = settings.current().max_activation_bytes
    report = Progress(inputs.count * max(len(plans), 1), progress)
    done_all = 0
    for key, graph, spec in plans:
        stats = [LayerStats(step) for step in graph.layers]
        networks = [NetworkRunner(graph, fixed=True)] + ([NetworkRunner(graph, fixed=False)] if float_network else [])
        taps = sorted({t.name for s in graph.layers for t in (*s.inputs, s.output)} | set(networks[0].taps))
        run_size = spec.batch or 1
        try:
            tapper = integer_tapper_for(variants.model(key), taps)
            # One run of the first image (or of the batch a graph fixes) measures what an image costs, and the
            # batch is set to fit the budget; the batches then start again from the first image, all of one size.
            probe, _ = inputs.take(0, min(run_size, inputs.count))
            _, values, _ = next(_runs(tapper, spec, probe, not inputs.as_model_input))
            sized: list[str] = []
            size = fitting_batch(batch_size, working_bytes(values, graph, len(probe)), budget, sized,
                                 multiple=run_size)  # fmt: skip
            notes.extend(f"{key}: {n}" for n in sized)
            del values
            for start in range(0, inputs.count, size):
                pixels, _labels = inputs.take(start, min(start + size, inputs.count))
                for x, values, output in _runs(tapper, spec, pixels, not inputs.as_model_input):
                    by_mode: dict[bool, dict[str, np.ndarray]] = {True: {}, False: {}}
                    for layer in stats:
                        name = layer.step.name
                        by_mode[False][name], by_mode[True][name] = layer.update(
                            values[layer.step.inputs[0].name], values[layer.step.output.name]
                        )
                    for network in networks:
                        network.update(x, values, output, by_mode[network.fixed])
                done_all += len(pixels)
                report(done_all, f"{key}: integer reference")
        except RunTimeoutError:
            raise
        except Exception as exc:  # one variant failing leaves the others' views
            logger.warning("integer view of %s failed: %s", key, exc)
            notes.append(failure_note(key, exc, what="its integer view failed"))
            continue
        net_fixed = networks[0].result()
        net_float = networks[1].result() if float_network else None
        try:
            kernels = _kernels(variants.model(key), graph)
        except Exception as exc:  # what ORT fused is a note on the rows, not a reason to drop the view
            notes.append(f"{key}: which layers onnxruntime fuses into integer kernels is unknown ({exc})")
            kernels = {}
        layers = tuple(s.result() for s in stats)
        notes.extend(f"{key}: {n}" for n in _runtime_notes(graph, layers))
        results.append(VariantInteger(key, graph, layers, net_float, net_fixed, kernels, size))
    seconds = time.perf_counter() - started
    logger.info("integer view: %d variant(s), %d image(s), %.2fs", len(results), inputs.count, seconds)
    return IntegerReport(tuple(results), inputs.count, inputs.description, seconds, tuple(dict.fromkeys(notes)))


def _kernels(model: object, graph: IntegerGraph) -> dict[str, str]:
    """Each layer's kernel: onnxruntime's op after its fusions, or the torch quantized op the graph calls."""
    if graph.runtime == "onnxruntime":
        return kernel_ops(model, [s.output.name for s in graph.layers])
    return {s.output.name: s.op for s in graph.layers}


def _runtime_notes(graph: IntegerGraph, layers: tuple[LayerInteger, ...]) -> list[str]:
    """What the runtime's own kernels do that an int32 kernel does not, where the samples reach it."""
    if not graph.runtime.startswith("torch"):
        return []
    import torch

    from quantcore.backends.torch_integer import fbgemm_pairs_saturate, pair_overflow_note

    unsigned = [la for la in layers if la.input.dtype == "uint8" and la.step.weight is not None]
    note = pair_overflow_note([(la.step.name, la.input_seen, la.step.weight) for la in unsigned],
                              torch.backends.quantized.engine, saturates=fbgemm_pairs_saturate())  # fmt: skip
    if note is None:
        return []
    largest = max(la.float_mismatch.max_lsb for la in unsigned)
    return [f"{note}; the largest mismatch of these layers on the samples is {largest} LSB"]


def cached_integer_view(
    variants: ModelVariants, *, images: int = DEFAULT_IMAGES, progress: ProgressFn | None = None
) -> IntegerReport:
    """``integer_view`` over the folder's samples, computed once per folder fingerprint and image count."""
    return cached(variants, "integer", (images,), lambda: integer_view(variants, images=images,
                                                                        progress=progress))[0]  # fmt: skip
