"""Signal-to-quantization-noise ratio, as one number or as running sums over many batches.

    SQNR = 10 · log10( Σ x² / Σ (x − x̂)² )  dB,   x: float reference, x̂: quantized variant.

Higher is better; every 6 dB is about one bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def sqnr_db(signal: np.ndarray, noisy: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``noisy`` against ``signal``, in dB.

    Args:
        signal: the reference values (float model).
        noisy: the same values as the quantized model computes them.

    Returns:
        ``10·log10(Σx² / Σ(x−y)²)``; ``inf`` when the two are identical.

    Raises:
        ValueError: the arrays differ in size.
    """
    accumulator = SqnrAccumulator()
    accumulator.update(signal, noisy)
    return accumulator.db if accumulator.db is not None else math.nan


@dataclass
class SqnrAccumulator:
    """Running sums for one SQNR over many batches: memory does not grow with the data."""

    signal_power: float = 0.0
    noise_power: float = 0.0
    elements: int = 0

    def update(self, reference: np.ndarray, test: np.ndarray) -> None:
        """Add one batch.

        Raises:
            ValueError: the arrays differ in size.
        """
        ref = np.ascontiguousarray(reference, dtype=np.float32).reshape(-1)
        out = np.ascontiguousarray(test, dtype=np.float32).reshape(-1)
        if ref.size != out.size:
            raise ValueError(f"{ref.size} reference values against {out.size}")
        diff = ref - out
        # float64 sums of float32 dot products: exact enough for dB, and BLAS-fast.
        self.signal_power += float(np.dot(ref, ref))
        self.noise_power += float(np.dot(diff, diff))
        self.elements += ref.size

    @property
    def db(self) -> float | None:
        """The SQNR so far (None before any data; ``inf`` with no noise; ``-inf`` with no signal)."""
        if not self.elements:
            return None
        if self.noise_power == 0.0:
            return math.inf if self.signal_power > 0 else math.nan
        if self.signal_power == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal_power / self.noise_power)
