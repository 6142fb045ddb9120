"""The samples on which a quantized variant flips its float reference's top-1 prediction."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from quantcore.evaluate.inputs import InputSpec, SampleSet
from quantcore.evaluate.kernels import check_kernels
from quantcore.evaluate.predictions import ProgressFn, VariantOutputs, variant_logits
from quantcore.load import Key, ModelVariants, VariantKey, key_order


@dataclass(frozen=True)
class Flip:
    """A sample on which a quantized variant's top-1 differs from its float reference's."""

    sample: int
    variant: Key
    reference: VariantKey
    reference_class: int
    variant_class: int
    label: int | None

    @property
    def effect(self) -> str:
        """What the flip did to correctness ("now wrong", "now right", "both wrong", or "no label")."""
        if self.label is None:
            return "no label"
        if self.reference_class == self.label:
            return "now wrong"
        return "now right" if self.variant_class == self.label else "both wrong"


@dataclass(frozen=True)
class FlipReport:
    """Every flip over a sample set, per quantized variant."""

    flips: tuple[Flip, ...]
    images: int
    source: str
    class_names: tuple[str, ...]
    compared: dict[Key, VariantKey]  # variant -> its reference
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """Flips per compared variant (zero included)."""
        counts = {str(k): 0 for k in self.compared}
        for flip in self.flips:
            counts[str(flip.variant)] += 1
        return counts

    def samples(self) -> list[int]:
        """The flipped sample indices, each once, in order."""
        return sorted({f.sample for f in self.flips})


def find_flips(
    outputs: VariantOutputs, samples: SampleSet, *, class_names: tuple[str, ...] | None = None
) -> FlipReport:
    """The samples on which each quantized variant's top-1 differs from its float reference's.

    Args:
        outputs: logits of the variants over ``samples`` (``variant_logits``).
        samples: the sample set (its labels say whether a flip broke or fixed a prediction).
        class_names: display names of the classes (default: the samples').

    Returns:
        A ``FlipReport``, flips ordered by sample then variant.
    """
    notes = list(outputs.notes)
    compared = {k: ref for k, ref in outputs.references().items() if k.is_quantized}
    for key in outputs.logits:
        if key.is_quantized and key not in compared:
            notes.append(f"{key}: no float variant to compare it with — skipped")
    top = {k: np.argmax(v, axis=1) for k, v in outputs.logits.items()}
    flips: list[Flip] = []
    for key, ref in compared.items():
        for i in np.flatnonzero(top[key] != top[ref]):
            label = int(samples.labels[i]) if samples.labels is not None else None
            flips.append(Flip(int(i), key, ref, int(top[ref][i]), int(top[key][i]), label))
    flips.sort(key=lambda f: (f.sample, key_order(f.variant)))
    width = next((v.shape[1] for v in outputs.logits.values()), 0)
    names = class_names or samples.label_names
    if len(names) != width:
        names = tuple(f"class {i}" for i in range(width))
    return FlipReport(tuple(flips), len(samples), samples.description, names, compared, tuple(dict.fromkeys(notes)))


def folder_flips(
    variants: ModelVariants, samples: SampleSet, spec: InputSpec, *, progress: ProgressFn | None = None
) -> FlipReport:
    """The flips of every loaded variant over ``samples``, with a note wherever this CPU's integer kernels, not
    the quantization itself, change answers (``quantcore.evaluate.kernels``)."""
    outputs = variant_logits(variants, samples, spec, progress=progress)
    report = find_flips(outputs, samples)
    kernel_notes = [n for check in check_kernels(variants, samples, outputs.logits) if (n := check.note()) is not None]
    return replace(report, notes=tuple(dict.fromkeys([*report.notes, *kernel_notes])))
