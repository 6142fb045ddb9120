"""Read each variant's ``InputSpec`` from what the folder declares and what the model is.

Field by field, the first source that says wins (see ``quantcore.load.input_spec``
for the list); what makes no sense is named in a note and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from quantcore.backends import TensorSpec, backend_for, predictor_for
from quantcore.load.input_declared import (
    Declared,
    DeclaredFields,
    card_declarations,
    metadata_declarations,
    parse_json,
    read_declared,
)
from quantcore.load.input_spec import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_RANGE,
    WIDE_RANGE,
    InputSpec,
    Layout,
    OutputKind,
)
from quantcore.load.keys import FLOAT_KEYS, Key, ModelFormat, Status, VariantKey, VariantRecord, key_order

logger = logging.getLogger(__name__)

_COLOUR_CHANNELS = (1, 3, 4)


# ------------------------------------------------------------------ the model


def _guess_layout(dims: tuple[int | None, ...]) -> tuple[Layout, str | None]:
    """A layout for a declared sample shape (no batch axis), and a note when it is a guess."""
    if len(dims) == 1:
        return Layout.NC, None
    if len(dims) == 2:
        return Layout.NCL, None
    if len(dims) == 3:
        first, last = dims[0], dims[2]
        if last in _COLOUR_CHANNELS and first not in _COLOUR_CHANNELS:
            return Layout.NHWC, None
        if first in _COLOUR_CHANNELS or first is None:
            return Layout.NCHW, None
        return Layout.NCHW, f"input {list(dims)} read as NCHW (declare the layout if it is NHWC)"
    if len(dims) == 4:
        return Layout.NCDHW, None
    raise ValueError(f"a {len(dims) + 1}-D input is not supported")


def _output_kind(model: Any) -> OutputKind | None:
    kind = backend_for(model).output_kind(model)
    return OutputKind(kind) if kind else None


def _quantization_range(model: Any) -> tuple[float, float] | None:
    """The input range a quantized model's input quantization covers, if it quantizes its input."""
    q = backend_for(model).input_quantization(model)
    if q is None or q.per_channel:
        return None
    low, high = q.limits
    scale, zero = float(q.scale.reshape(-1)[0]), float(q.zero_point.reshape(-1)[0])
    return (scale * (low - zero), scale * (high - zero))


def _probe_layout(model: Any, channels: int, size: int) -> tuple[Layout, str] | None:
    """Run one zero image as NCHW, then NHWC: the first that runs is the layout."""
    predict = predictor_for(model, threads=1)
    for layout, shape in ((Layout.NCHW, (1, channels, size, size)), (Layout.NHWC, (1, size, size, channels))):
        try:
            predict(np.zeros(shape, dtype=np.float32))
        except Exception:  # the wrong layout fails inside the model: try the other
            continue
        return layout, f"probe ({layout} ran)"
    return None


def _first_channels(model: Any) -> int | None:
    try:
        layers, _ = backend_for(model).layers(model)
    except Exception:  # an unreadable model still gets a spec from its declarations
        return None
    first = min(layers, key=lambda layer: (layer.depth, layer.order), default=None)
    return first.weight_shape[1] if first is not None and len(first.weight_shape) > 1 else None


# --------------------------------------------------------------- one variant


def _from_graph(fields: DeclaredFields, model: Any, record: VariantRecord) -> tuple[int | None, ...] | None:
    """What the model itself declares; returns the declared sample dims (None where symbolic)."""
    backend = backend_for(model)
    declared: tuple[TensorSpec, ...] = backend.inputs(model)
    where = f"{record.file} (graph)"
    dims = None
    if declared:
        first = declared[0]
        dims = first.dims[1:]
        if first.fixed_batch is not None:
            fields.offer("batch", first.fixed_batch, where)
        if first.dtype and first.dtype != "unknown":
            fields.offer("dtype", first.dtype, where)
        if len(declared) > 1:
            fields.notes.append(f"the model takes {len(declared)} inputs; only the first ({first.name}) is fed")
    kind = _output_kind(model)
    if kind is not None:
        graph_kind = fields.get("output")
        if graph_kind is not None and graph_kind is not kind:
            fields.notes.append(f"the graph ends in {kind} but {fields.sources['output']} says {graph_kind}")
        fields.offer("output", kind, where)
    covered = _quantization_range(model)
    if covered is not None and covered[1] > WIDE_RANGE:
        fields.offer("range", (0.0, 255.0), f"{record.file} (its input quantization covers "
                     f"{covered[0]:.3g} to {covered[1]:.3g})")  # fmt: skip
    return dims


def _shape_and_layout(
    fields: DeclaredFields, dims: tuple[int | None, ...] | None, model: Any, sibling: InputSpec | None, may_probe: bool
) -> tuple[tuple[int, ...], Layout]:
    layout: Layout | None = fields.get("layout")
    if dims is not None and len(dims) > 0:
        guessed, note = _guess_layout(dims)
        if layout is not None and layout != guessed and layout.is_image and len(dims) == 3:
            channels = dims[0] if layout is Layout.NCHW else dims[2]
            if channels not in _COLOUR_CHANNELS:
                fields.notes.append(f"{fields.sources['layout']} says {layout}, which reads the graph's input "
                                    f"{list(dims)} as {channels} channels: it looks like {guessed}")  # fmt: skip
        if layout is None:
            layout = guessed
            fields.sources["layout"] = "graph" if note is None else "guessed from the graph"
            if note:
                fields.notes.append(note)
        if all(dims):
            fields.sources["shape"] = "graph"
            return tuple(int(d) for d in dims), layout  # type: ignore[arg-type]
    if fields.get("shape") is not None:
        return fields.get("shape"), layout or _guess_layout(fields.get("shape"))[0]
    if sibling is not None and dims is None and layout is None and fields.get("size") is None:
        fields.sources.update(shape=sibling.sources.get("shape", "onnx sibling"), layout="onnx sibling")
        return sibling.shape, sibling.layout
    channels = fields.get("channels") or (dims[0] if dims and layout is Layout.NCHW else None)
    channels = channels or (dims[-1] if dims and layout is Layout.NHWC else None) or _first_channels(model) or 3
    size = fields.get("size")
    if size is None and dims is not None and len(dims) == 3:
        known = (dims[1], dims[2]) if layout is not Layout.NHWC else (dims[0], dims[1])
        size = known if all(known) else None
    if size is None:
        size = sibling.pixel_shape[1:] if sibling is not None and sibling.is_image else (DEFAULT_IMAGE_SIZE,) * 2
        fields.notes.append(f"input size unknown: assumed {size[0]}x{size[1]}")
    if layout is None:
        probed = _probe_layout(model, channels, size[0]) if may_probe and size[0] == size[1] else None
        layout = probed[0] if probed else Layout.NCHW
        fields.sources["layout"] = probed[1] if probed else "default"
    fields.sources.setdefault("shape", "channels and size")
    if layout is Layout.NHWC:
        return (size[0], size[1], channels), layout
    return (channels, size[0], size[1]), layout


def variant_spec(
    record: VariantRecord,
    declared: list[Declared],
    *,
    sibling: InputSpec | None = None,
    class_names: tuple[str, ...] | None = None,
    may_probe: bool = False,
) -> InputSpec:
    """The input spec of one loaded variant.

    Args:
        record: the loaded variant.
        declared: what the page, the manifest, the card and the file say, highest first.
        sibling: the spec of the folder's ONNX variant, for a PyTorch model that declares nothing.
        class_names: the folder's class names, if recorded.
        may_probe: whether a zero image may be run through the model to find its layout.

    Raises:
        ValueError: the model's input is of a kind no view can feed (e.g. 5-D).
    """
    fields = DeclaredFields()
    for say in declared:
        read_declared(fields, say)
    for say in metadata_declarations(record):
        read_declared(fields, say)
    dims = _from_graph(fields, record.model, record)
    if sibling is not None and dims is None:
        for name in ("range", "mean", "std", "grey", "pad"):
            fields.offer(name, getattr(sibling, name), f"onnx sibling ({sibling.sources.get(name, 'default')})")
    shape, layout = _shape_and_layout(fields, dims, record.model, sibling, may_probe)
    expected_rank = {Layout.NC: 1, Layout.NCL: 2, Layout.NCDHW: 4}.get(layout, 3)
    if len(shape) != expected_rank:
        raise ValueError(f"a {layout} input cannot have the shape {list(shape)}")
    spec = InputSpec(
        shape=shape, layout=layout, dtype=fields.get("dtype", "float32"), range=fields.get("range", DEFAULT_RANGE),
        mean=fields.get("mean"), std=fields.get("std"), batch=fields.get("batch"),
        output=fields.get("output", OutputKind.LOGITS), class_names=class_names,
        grey=bool(fields.get("grey", layout.is_image and shape[0 if layout is Layout.NCHW else 2] == 1)),
        pad=int(fields.get("pad", 0)),
    )  # fmt: skip
    if spec.is_image and "range" not in fields.sources:
        fields.notes.append("no pixel range recorded (variants.json, model card, ONNX metadata): assumed pixels / 255")
    return _checked(spec, fields)


def _checked(spec: InputSpec, fields: DeclaredFields) -> InputSpec:
    """The spec with what does not fit it dropped, each with a note."""
    changes: dict[str, Any] = {}
    if spec.is_image:
        for name in ("mean", "std"):
            value = getattr(spec, name)
            if value is not None and len(value) not in (1, spec.channels):
                fields.notes.append(f"{name} has {len(value)} values for {spec.channels} channels: ignored")
                changes[name] = None
        if spec.pad and 2 * spec.pad >= min(spec.pixel_shape[1:]):
            fields.notes.append(f"a {spec.pad} px border does not fit a {spec.pixel_shape} input: ignored")
            changes["pad"] = 0
    if (spec.mean is None) != (spec.std is None) and not changes.keys() & {"mean", "std"}:
        fields.notes.append("mean and std must be given together: both ignored")
        changes.update(mean=None, std=None)
    return replace(spec, **changes, sources=dict(fields.sources), notes=tuple(dict.fromkeys(fields.notes)))


# ------------------------------------------------------------------ a folder


def _share_inferred_range(specs: dict[Key, InputSpec], notes: list[str]) -> None:
    """A variant that says nothing of its range takes one its quantized siblings' input quantization shows.

    They were quantized from the float model, calibrated on its inputs: when they
    all cover 0–255, the float model takes 0–255 too.
    """
    inferred = {k: s.sources["range"] for k, s in specs.items() if "input quantization" in s.sources.get("range", "")}
    ranges = {specs[k].range for k in inferred}
    if len(ranges) != 1:
        return
    (shared,) = ranges
    witness = next(iter(inferred))
    for key, spec in list(specs.items()):
        defaulted = spec.sources.get("range", "onnx sibling (default)") == "onnx sibling (default)"
        if spec.is_image and defaulted:
            where = f"as {witness}'s input quantization shows (declare the range to be sure)"
            kept = tuple(n for n in spec.notes if not n.startswith("no pixel range recorded"))
            specs[key] = replace(spec, range=shared, sources={**spec.sources, "range": where}, notes=kept)
            notes.append(f"{key}: takes pixels in {shared[0]:g}..{shared[1]:g}, {where}")


def _labels(records: Mapping[Key, VariantRecord], card: Mapping[str, Any]) -> tuple[str, ...] | None:
    for record in records.values():
        if record.status is Status.LOADED:
            labels = parse_json(record.details.get("metadata", {}).get("labels"))
            if isinstance(labels, list) and labels:
                return tuple(str(n) for n in labels)
    labels = card.get("labels")
    return tuple(str(n) for n in labels) if isinstance(labels, list) and labels else None


def read_input_specs(
    records: Mapping[Key, VariantRecord],
    *,
    card: Mapping[str, Any],
    manifest: Mapping[Key, Declared],
    override: Mapping[str, Any] | None = None,
    trusted: bool = True,
) -> tuple[dict[Key, InputSpec], list[str]]:
    """The input spec of every loaded variant, and notes on any that cannot be fed.

    Args:
        records: the folder's variants.
        card: its model card.
        manifest: per variant, what ``variants.json`` declares.
        override: the page's: ``{"*": {...}, "<key>": {...}}`` with ``input`` fields and ``"output"``.
        trusted: whether a PyTorch model may be run once to find its layout (eager
            modules rebuilt from state_dicts always may: they run no loaded code).
    """
    override = override or {}
    card_says = card_declarations(card)
    labels = _labels(records, card)
    specs: dict[Key, InputSpec] = {}
    notes: list[str] = []
    onnx_first = sorted(records, key=lambda k: (k.format is not ModelFormat.ONNX, key_order(k)))
    for key in onnx_first:
        record = records[key]
        if record.status is not Status.LOADED:
            continue
        page = [Declared(f"the page (for {where})", dict(value), value.get("output"))
                for where, value in ((str(key), override.get(str(key))), ("all", override.get("*")))
                if isinstance(value, Mapping)]  # fmt: skip
        declared = [*page, *([manifest[key]] if key in manifest else []), *card_says]
        sibling = next((specs[k] for k in (VariantKey.ONNX_FLOAT, *specs) if k in specs), None)
        try:
            specs[key] = variant_spec(
                record, declared, sibling=sibling if key.format is ModelFormat.PYTORCH else None,
                class_names=labels, may_probe=trusted or record.storage == "state_dict",
            )  # fmt: skip
        except ValueError as exc:
            notes.append(f"{key}: {exc}")
    _share_inferred_range(specs, notes)
    shapes = {k: s.pixel_shape for k, s in specs.items()}
    reference = next((shapes[k] for k in FLOAT_KEYS if k in shapes), next(iter(shapes.values()), None))
    for key, shape in shapes.items():
        if shape != reference:
            notes.append(f"{key} takes {list(shape)} where the others take {list(reference or ())}")
    return dict(sorted(specs.items(), key=lambda kv: key_order(kv[0]))), notes
