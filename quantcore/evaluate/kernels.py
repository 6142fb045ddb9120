"""Does this CPU's onnxruntime compute what a QDQ graph specifies? The fused integer kernels against the
graph's own arithmetic, on the same samples.

onnxruntime fuses ``DequantizeLinear -> Conv -> QuantizeLinear`` into integer
kernels. For uint8 activations with int8 weights (U8S8) on x86 CPUs without
VNNI, those kernels add pairs of products in 16 bits, which saturate
(onnxruntime's quantization docs; the fix is ``reduce_range=True`` or int8
activations). The same file then scores differently on two machines — a
model card's figure from one is not what the other computes — and nothing
says why. Running the graph with its optimizations off computes each QDQ step
as written, in float: what the model specifies. Where the two disagree on a
top-1 answer, the scorecard says so, with both accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantcore import settings
from quantcore.backends.ort import make_session
from quantcore.evaluate.inputs import InputSpec, SampleSet, to_model_input, variant_spec
from quantcore.load import Key, ModelFormat, ModelVariants
from quantcore.load.results_cache import cached


@dataclass(frozen=True)
class KernelCheck:
    """One U8S8 variant's top-1 answers from onnxruntime's fused kernels against the graph's arithmetic."""

    variant: Key
    images: int
    changed: int  # samples whose top-1 answer differs between the two
    kernel_correct: int | None  # correct answers as this CPU's kernels compute them (what the scorecard shows)
    graph_correct: int | None  # correct answers as the graph specifies them (its QDQ steps run one by one)

    def note(self) -> str | None:
        """What the user should know, or None when the kernels agree with the graph on every sample."""
        if not self.changed:
            return None
        text = (
            f"{self.variant}: onnxruntime's integer kernels on this CPU change the top-1 answer on "
            f"{self.changed:,} of {self.images:,} samples against the graph's own quantized arithmetic"
        )
        if self.kernel_correct is not None and self.graph_correct is not None:
            text += (
                f" (accuracy {100 * self.kernel_correct / self.images:.1f} % here, "
                f"{100 * self.graph_correct / self.images:.1f} % as the graph specifies)"
            )
        return text + (
            ". uint8 activations with int8 weights (U8S8) saturate 16-bit sums on x86 CPUs without VNNI; "
            "figures measured on another machine will differ. For such CPUs quantize with reduce_range=True "
            "or int8 activations (S8S8)."
        )


def needs_check(variants: ModelVariants, key: Key) -> bool:
    """An ONNX QDQ variant with uint8 activations and int8 weights: the kernels that may saturate."""
    if key.format is not ModelFormat.ONNX or not key.is_quantized:
        return False
    quantization = variants.records[key].details.get("quantization") or {}
    return (
        isinstance(quantization, dict)
        and quantization.get("format") == "QDQ"
        and quantization.get("activation_type") == "uint8"
        and quantization.get("weight_type") == "int8"
    )


def graph_logits(variants: ModelVariants, key: Key, samples: SampleSet, *, batch_size: int | None = None) -> np.ndarray:
    """Outputs of ``key`` over ``samples`` with every graph optimization off: each QDQ step as written."""
    current = settings.current()
    own: InputSpec = variant_spec(variants, key)
    batch = own.batch or batch_size or current.eval_batch_size

    def compute() -> np.ndarray:
        session = make_session(variants.model(key), current.threads, optimize=False)
        name = session.get_inputs()[0].name
        parts = [
            session.run(None, {name: to_model_input(samples.pixels(start, min(start + batch, len(samples))), own)})[0]
            for start in range(0, len(samples), batch)
        ]
        return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)

    result, _ = cached(variants, "graph_logits", (str(key), samples.key, batch, own), compute)
    return result


def check_kernels(
    variants: ModelVariants, samples: SampleSet, logits: dict[Key, np.ndarray]
) -> tuple[KernelCheck, ...]:
    """A ``KernelCheck`` for every variant in ``logits`` whose kernels may differ from its graph.

    Args:
        variants: the loaded folder.
        samples: the samples ``logits`` were computed on (labels optional).
        logits: the fused-kernel outputs per variant (``variant_logits``).
    """
    checks = []
    for key, fused in logits.items():
        if not needs_check(variants, key):
            continue
        reference = graph_logits(variants, key, samples)
        kernel_top, graph_top = np.argmax(fused, axis=1), np.argmax(reference, axis=1)
        labels = samples.labels
        checks.append(KernelCheck(
            key, len(samples), int(np.sum(kernel_top != graph_top)),
            int(np.sum(kernel_top == labels)) if labels is not None else None,
            int(np.sum(graph_top == labels)) if labels is not None else None,
        ))  # fmt: skip
    return tuple(checks)
