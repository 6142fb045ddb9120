"""``get_model_summary``: a loaded folder as a JSON-ready dict.

The top level keeps the original contract: ``total_loaded``, and
``onnx_available`` / ``pytorch_available`` as the lists of precisions loaded
in that format (e.g. ``["float", "int8", "uint8"]``); per-variant detail sits
under ``variants``. No key is called ``path``: gradio_client would take such a
dict for a file to download.
"""

from __future__ import annotations

from typing import Any

from quantcore.load.folder import ModelVariants
from quantcore.load.keys import Key, ModelFormat, Status, VariantKey, VariantRecord


def _variant_summary(record: VariantRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "status": str(record.status),
        "file": record.file,
        "format": str(record.key.format),
    }
    if record.status is Status.LOADED:
        summary.update(bytes=record.bytes, sha256=record.sha256, storage=record.storage, **record.details)
    if record.error:
        summary["error"] = record.error
    return summary


def _with_input(summary: dict[str, Any], variants: ModelVariants, key: Key) -> dict[str, Any]:
    """A variant's summary with what it takes as input and gives as output (``quantcore.load.input_spec``)."""
    spec = variants.spec(key)
    return {**summary, "input": spec.as_dict()} if spec is not None else summary


def _precisions(loaded: list[VariantRecord], fmt: ModelFormat) -> list[str]:
    return [str(r.key.precision) for r in loaded if isinstance(r.key, VariantKey) and r.key.format is fmt]


def get_model_summary(variants: ModelVariants) -> dict[str, Any]:
    """Summarise a ``load_model_variants`` result.

    Returns:
        ``{"total_loaded", "onnx_available", "pytorch_available", "folder",
        "stem", "trusted", "cache_hit", "load_seconds", "counts", "notes",
        "warnings", "variants": {key: {...}}}`` — every value JSON-serialisable.
        ``warnings`` say where a file disagrees with what describes it (e.g. the
        graph's input shape vs ``model_card.json``). The top-level counts are of
        the five contract variants; recipe variants (``recipe:<name>``) are extra
        entries under ``variants``, counted in ``recipes``. Each loaded variant's
        ``input`` says what it takes and gives and where each field was read;
        ``input_notes`` name variants whose input cannot be fed or disagrees.
    """
    records = variants.records
    five = [r for k, r in records.items() if isinstance(k, VariantKey)]
    loaded = [r for r in five if r.status is Status.LOADED]
    counts = {str(s): sum(r.status is s for r in five) for s in Status}
    return {
        "total_loaded": len(loaded),
        "onnx_available": _precisions(loaded, ModelFormat.ONNX),
        "pytorch_available": _precisions(loaded, ModelFormat.PYTORCH),
        "folder": str(variants.folder),
        "stem": variants.loaded.stem,
        "trusted": variants.loaded.trusted,
        "cache_hit": variants.cache_hit,
        "load_seconds": round(variants.loaded.load_seconds, 4),
        "counts": counts,
        "notes": list(variants.loaded.notes),
        "warnings": list(variants.loaded.warnings),
        "variants": {str(k): _with_input(_variant_summary(r), variants, k) for k, r in records.items()},
        "recipes": len(records) - len(five),
        "input_notes": list(variants.loaded.input_notes),
    }
