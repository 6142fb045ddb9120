"""The weighted layers of every variant, matched across formats into one table.

Each loaded variant's backend reads its layers (``quantcore.backends``): every
conv and dense layer with its weights, their scale and zero point, the scale
and zero point of the activation going in and coming out, and where its
activation can be tapped.

Layers are then matched across variants by topology and order, not by name:
each list is put in a canonical order (depth in weighted layers from the
input, then position in the graph) and aligned to the table's rows by a
sequence alignment that only pairs layers of the same kind and weight shape,
using name likeness to break ties. What cannot be paired gets a row of its
own, so it is shown, never dropped. docs/INSPECT.md tells the whole story.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantcore.backends import Layer, backend_for
from quantcore.evaluate.failures import runtime_message
from quantcore.evaluate.inputs import to_model_input, variant_spec
from quantcore.inspect.sqnr import sqnr_db
from quantcore.load import FLOAT_KEYS, Key, ModelVariants, Status, VariantKey, key_order, reference_key
from quantcore.load.results_cache import cached

logger = logging.getLogger(__name__)

FOLDING_NOTE = (
    "BatchNorm after a conv is folded into the conv by the ONNX export and by PyTorch FX int8: "
    "weights are compared with it folded, and activations after it."
)


def extract_layers(model: Any, *, probe: np.ndarray | None = None) -> tuple[list[Layer], list[str]]:
    """The conv and dense layers of one loaded variant, in canonical order (depth, then position).

    Args:
        model: a loaded variant (any backend's model).
        probe: one float32 batch that reads a PyTorch int8 model's activation
            scales (None: leave them unknown).

    Returns:
        The layers and notes on anything that could not be read.

    Raises:
        TypeError: ``model`` is not a loaded variant.
    """
    layers, notes = backend_for(model).layers(model, probe=probe)
    return sorted(layers, key=lambda layer: (layer.depth, layer.order)), notes


# -------------------------------------------------------------------- matching


def _match_score(a: Layer, b: Layer) -> int:
    """0 when two layers cannot be the same one; higher the more alike they are."""
    if a.kind != b.kind:
        return 0
    same_name, same_depth = a.match_key == b.match_key, a.depth == b.depth
    if a.problem is not None or b.problem is not None:
        # An unreadable layer has no weight shape to go by: it pairs only where its depth or name agrees.
        return 1 + 2 * same_name + same_depth if same_name or same_depth else 0
    if a.weight_shape != b.weight_shape:
        return 0
    return 4 + 2 * same_name + same_depth


SAME_WEIGHTS_DB = 15.0  # two readings of one layer's weights agree far above this; two layers ~0 dB


def _likeness(a: Layer, b: Layer) -> int:
    """``_match_score``, raised when the two layers' weights are the same weights (float or quantized)."""
    score = _match_score(a, b)
    readable = score and a.problem is None and b.problem is None and a.weight.size
    if readable and sqnr_db(a.comparable_weight, b.comparable_weight) > SAME_WEIGHTS_DB:
        score += 8
    return score


def in_row_order(rows: list[Layer], layers: list[Layer]) -> list[Layer]:
    """``layers`` with each run of same-depth siblings put in the order of the rows they match.

    Quantizers and exporters reorder independent branches (a shortcut conv before or after its block's
    second conv); an order-keeping alignment would then split them across rows. Within one depth the
    siblings are paired with the rows of that depth by likeness (kind, shape, name, and above all equal
    weights), and ordered as their partners are; a sibling with no partner keeps its place after them.
    """
    out: list[Layer] = []
    start = 0
    while start < len(layers):
        depth = layers[start].depth
        stop = start
        while stop < len(layers) and layers[stop].depth == depth:
            stop += 1
        group = layers[start:stop]
        start = stop
        candidates = [i for i, r in enumerate(rows) if r.depth == depth]
        if len(group) < 2 or not candidates:
            out.extend(group)
            continue
        scored = sorted(
            ((score, -abs(i - j), i, j) for i in candidates for j, layer in enumerate(group)
             if (score := _likeness(rows[i], layer))),
            reverse=True,
        )  # fmt: skip
        partner: dict[int, int] = {}
        taken: set[int] = set()
        for _, _, i, j in scored:
            if j not in partner and i not in taken:
                partner[j] = i
                taken.add(i)
        order = sorted(range(len(group)), key=lambda j: (j not in partner, partner.get(j, 0), j))
        out.extend(group[j] for j in order)
    return out


def align(rows: list[Layer], layers: list[Layer]) -> list[tuple[int | None, int | None]]:
    """An order-keeping alignment of ``layers`` to ``rows`` that maximises the summed match scores.

    Returns:
        Pairs ``(row index, layer index)`` in order; ``None`` on one side marks a layer with no partner.
    """
    n, m = len(rows), len(layers)
    best = np.zeros((n + 1, m + 1), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            score = _match_score(rows[i], layers[j])
            diagonal = best[i, j] + score if score else -1
            best[i + 1, j + 1] = max(best[i, j + 1], best[i + 1, j], diagonal)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i or j:
        if i and j and (score := _match_score(rows[i - 1], layers[j - 1])) and best[i, j] == best[i - 1, j - 1] + score:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and best[i, j] == best[i - 1, j]:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


@dataclass(frozen=True)
class LayerRow:
    """One layer as every variant that has it sees it."""

    index: int
    layers: dict[Key, Layer]

    @property
    def primary(self) -> Layer:
        """The layer that names the row: the table's skeleton variant's, when it has one."""
        return next(iter(self.layers.values()))

    @property
    def label(self) -> str:
        return f"{self.index + 1}. {self.primary.name}"


@dataclass(frozen=True)
class LayerTable:
    """Every variant's layers, matched row by row.

    ``skeleton`` is the variant whose layers name the rows (``pytorch_float``,
    else ``onnx_float``, else the first loaded one). Rows hold a layer for each
    variant that has it; a layer no other variant has gets a row of its own.
    """

    skeleton: Key | None
    variants: tuple[Key, ...]
    rows: tuple[LayerRow, ...]
    notes: tuple[str, ...] = ()
    unreadable: dict[Key, str] = field(default_factory=dict)  # loaded variants whose layers could not be read

    def row(self, index: int) -> LayerRow:
        """Row ``index`` (0-based).

        Raises:
            IndexError: no such row.
        """
        if not 0 <= index < len(self.rows):
            raise IndexError(f"layer {index + 1} does not exist (the table has {len(self.rows)})")
        return self.rows[index]

    def reference(self, key: Key) -> VariantKey | None:
        """The float variant ``key``'s layers are compared against (see ``reference_key``)."""
        return reference_key(key, self.variants)

    def choices(self) -> list[tuple[str, int]]:
        """(label, row index) for every row: a layer picker's options."""
        return [(row.label, row.index) for row in self.rows]

    def matched(self) -> dict[str, dict[str, int]]:
        """Per variant: how many of its layers found a row shared with the skeleton."""
        counts: dict[str, dict[str, int]] = {}
        for key in self.variants:
            own = [r for r in self.rows if key in r.layers]
            shared = [r for r in own if key is self.skeleton or (self.skeleton in r.layers and len(r.layers) > 1)]
            counts[str(key)] = {"layers": len(own), "matched": len(shared)}
        for key, reason in self.unreadable.items():
            counts[str(key)] = {"layers": 0, "matched": 0, "unreadable": reason}
        return counts

    def detail(self, index: int) -> dict[str, Any]:
        """One layer across variants with every channel's scale and zero point (JSON-ready).

        Raises:
            IndexError: no such row.
        """
        row = self.row(index)
        variants: dict[str, Any] = {}
        for key in self.variants:
            layer = row.layers.get(key)
            if layer is None:
                variants[str(key)] = {"matched": False}
                continue
            variants[str(key)] = {
                "matched": True, "name": layer.name, "type": layer.op, "problem": layer.problem,
                "weight_shape": list(layer.weight_shape), "parameters": layer.parameters,
                "fused": list(layer.fused), "bn_folded_for_comparison": layer.folded_weight is not None,
                "fold_factor": [float(f) for f in layer.fold_factor] if layer.fold_factor is not None else None,
                "weight": layer.weight_q.full() if layer.weight_q else {"dtype": "float32"},
                "input": layer.input_q.full() if layer.input_q else None,
                "output": layer.output_q.full() if layer.output_q else None,
            }  # fmt: skip
        for key, reason in self.unreadable.items():
            variants[str(key)] = {"matched": False, "unreadable": reason}
        return {"layer": row.primary.name, "index": row.index, "variants": variants}


def build_layer_table(variants: ModelVariants) -> LayerTable:
    """Read every loaded variant's layers and match them into one table.

    A variant that is missing, failed to load, or cannot be read is skipped
    with a note; this never raises for a variant's sake.

    Args:
        variants: a folder's variants from ``load_model_variants``.

    Returns:
        The matched ``LayerTable``.
    """
    notes: list[str] = []
    unreadable: dict[Key, str] = {}
    raw: dict[Key, list[Layer]] = {}
    for key, record in variants.records.items():
        if record.status is not Status.LOADED:
            if record.status is not Status.MISSING:
                notes.append(f"{key}: skipped — {record.status}: {record.error or 'not loaded'}")
            continue
        try:
            raw[key], own = extract_layers(record.model)
        except Exception as exc:  # one unreadable variant must not take the table down
            logger.exception("reading the layers of %s failed", key)
            unreadable[key] = f"its layers could not be read: {runtime_message(exc)}"
            notes.append(f"{key}: not shown — {unreadable[key]}")
            continue
        notes.extend(f"{key}: {n}" for n in own)
        notes.extend(f"{key}: {layer.name}'s weights cannot be read — {layer.problem}"
                     for layer in raw[key] if layer.problem is not None)  # fmt: skip
    # PyTorch int8 models show their activation scales only when run: read them off one zero image.
    for key, layers in raw.items():
        if any(layer.quantized and layer.input_q is None for layer in layers):
            spec = variant_spec(variants, key)
            zeros = np.zeros((1, *spec.pixel_shape), dtype=np.uint8 if spec.is_image else np.float32)
            try:
                raw[key], own = extract_layers(variants.model(key), probe=to_model_input(zeros, spec))
            except Exception as exc:  # the layers stay, without their activation scales
                own = [f"activation scales unavailable: {runtime_message(exc)}"]
            notes.extend(f"{key}: {n}" for n in own)
    keys = sorted((k for k in raw if raw[k]), key=key_order)
    for key in sorted(raw, key=key_order):
        if not raw[key]:
            notes.append(f"{key}: no conv or dense layers found")
    if not keys:
        return LayerTable(None, (), (), tuple(notes), unreadable)
    skeleton = next((k for k in FLOAT_KEYS if k in keys), keys[0])
    rows: list[dict[Key, Layer]] = [{skeleton: layer} for layer in raw[skeleton]]
    order = [k for k in FLOAT_KEYS if k in keys and k is not skeleton] + [k for k in keys if k.is_quantized]
    for key in (k for k in order if k is not skeleton):
        primaries = [next(iter(r.values())) for r in rows]
        raw[key] = in_row_order(primaries, raw[key])
        pairs = align(primaries, raw[key])
        merged: list[dict[Key, Layer]] = []
        for i, j in pairs:
            row = rows[i] if i is not None else {}
            if j is not None:
                row[key] = raw[key][j]
            merged.append(row)
        unmatched = sum(1 for i, j in pairs if i is None and j is not None)
        if unmatched:
            notes.append(f"{key}: {unmatched} layer(s) matched no other variant's; shown on rows of their own")
        rows = merged
    ordered = [dict(sorted(r.items(), key=lambda kv: (kv[0] is not skeleton, key_order(kv[0]))))
               for r in rows]  # fmt: skip
    if any(key.is_quantized for key in keys) and VariantKey.PYTORCH_FLOAT in keys:
        notes.append(FOLDING_NOTE)
    return LayerTable(
        skeleton, tuple(keys), tuple(LayerRow(i, r) for i, r in enumerate(ordered)), tuple(dict.fromkeys(notes)),
        unreadable,
    )  # fmt: skip


def layer_table(variants: ModelVariants) -> LayerTable:
    """``build_layer_table`` for this folder, built once per folder fingerprint, then from the results cache."""
    return cached(variants, "layers", (), lambda: build_layer_table(variants))[0]
