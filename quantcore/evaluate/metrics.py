"""Scores over model outputs: accuracy, per-class accuracy, agreement, and batched prediction."""

from __future__ import annotations

from typing import Any

import numpy as np

from quantcore import settings
from quantcore.backends import is_model, predictor_for


def predict_logits(model: Any, inputs: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
    """Outputs (N, classes) for float32 ``inputs`` (N, ...), run ``batch_size`` at a time.

    Args:
        model: a loaded variant (its cached predictor runs it) or a predictor.
        inputs: the model input, batch axis first.
        batch_size: rows per call (default: the configured evaluation batch size).
    """
    predict = predictor_for(model) if is_model(model) else model
    batch_size = settings.current().eval_batch_size if batch_size is None else batch_size
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    batches = [predict(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(batches) if batches else np.empty((0, 0), dtype=np.float32)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest logit is at the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels)) if len(labels) else 0.0


def agreement(logits: np.ndarray, reference_logits: np.ndarray) -> float:
    """Fraction of rows where two models pick the same top-1 class."""
    if logits.shape[0] != reference_logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows against {reference_logits.shape[0]}")
    same = np.argmax(logits, axis=1) == np.argmax(reference_logits, axis=1)
    return float(np.mean(same)) if len(same) else 0.0


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, classes: int) -> tuple[float | None, ...]:
    """Accuracy within each true class (None for a class with no images)."""
    predicted = np.argmax(logits, axis=1)
    counts = np.bincount(labels, minlength=classes)
    hits = np.bincount(labels[predicted == labels], minlength=classes)
    return tuple(float(hits[c] / counts[c]) if counts[c] else None for c in range(classes))
