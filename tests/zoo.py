"""A zoo of real model variant folders, built the way real ones are, for the tests (no pytest here).

Each ``build_*`` writes one folder of variants of one model class — exported
from torch (``torch.onnx.export(..., dynamo=False, opset_version=17)``) or
written with ``onnx.helper``, quantized by onnxruntime (``quant_pre_process``
then ``quantize_static`` over seeded calibration data; QDQ or QOperator,
per-tensor or per-channel, S8S8 or U8S8), PyTorch int8 by torch.ao FX saved as
TorchScript — and returns a ``ZooModel``: the files, the input the model
expects (layout, shape, value range, fixed batch, output kind), in-memory
eager modules where there are any, and seeded inputs to feed it.

Widths are tiny and calibration is a few batches, so a build takes well under
a second or two (the onnx model-zoo topologies excepted: see ``tests.zoo_light``).
Nothing built here is committed; build into a temporary folder.

Folder naming follows the contract: ``<stem>.onnx`` float, ``<stem>_int8.onnx``
(int8 activations), ``<stem>_uint8.onnx`` (uint8 activations), ``<stem>.pt``,
``<stem>_int8.pt``.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

STEM = "model"
FILES = {
    "onnx_float": f"{STEM}.onnx",
    "onnx_int8": f"{STEM}_int8.onnx",
    "onnx_uint8": f"{STEM}_uint8.onnx",
    "pytorch_float": f"{STEM}.pt",
    "pytorch_int8": f"{STEM}_int8.pt",
}
CALIBRATION_SEED = 1234
CALIBRATION_COUNT = 8


# ------------------------------------------------------------------ what a build returns


@dataclass(frozen=True)
class InputExpect:
    """The input a model expects and what it outputs.

    ``shape`` includes the batch axis (``None`` where it is symbolic); ``low``
    and ``high`` bound the values it was calibrated for; ``output`` is
    ``"logits"``, ``"probabilities"`` or ``"log_probabilities"``.
    """

    layout: str  # "NCHW", "NHWC", "NC" (features), "NCL" (1-D signal), "NCDHW"
    shape: tuple[int | None, ...]
    low: float = 0.0
    high: float = 1.0
    output: str = "logits"

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.shape[1:])  # type: ignore[arg-type]

    @property
    def channels(self) -> int | None:
        """Channels of an image input (None for non-image inputs)."""
        if self.layout == "NCHW":
            return self.sample_shape[0]
        if self.layout == "NHWC":
            return self.sample_shape[-1]
        return None

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) of an image input (None for non-image inputs)."""
        if self.layout == "NCHW":
            return self.sample_shape[1], self.sample_shape[2]
        if self.layout == "NHWC":
            return self.sample_shape[0], self.sample_shape[1]
        return None

    def card(self) -> dict[str, Any]:
        """What ``model_card.json`` would declare for this input (the issue's ``input``/``output`` keys)."""
        spec: dict[str, Any] = {"layout": self.layout, "range": [self.low, self.high]}
        if self.channels is not None:
            spec["channels"] = self.channels
            spec["size"] = list(self.size or ())
        else:
            spec["shape"] = list(self.sample_shape)
        return {"input": spec, "output": self.output}


@dataclass(frozen=True)
class ZooModel:
    """One built folder of variants of one model class."""

    name: str
    folder: Path
    files: dict[str, Path]  # variant key ("onnx_float"...) -> file
    expect: InputExpect
    schemes: dict[str, str] = field(default_factory=dict)  # variant key -> how it was made
    modules: dict[str, Any] = field(default_factory=dict, repr=False)  # eager modules, by variant key
    input_name: str = "input"

    def path(self, key: str) -> Path:
        return self.files[key]

    def inputs(self, count: int, *, seed: int = 0) -> np.ndarray:
        """``count`` seeded float32 inputs, uniform over the calibrated range, in the model's own layout."""
        return uniform(self.expect, count, seed=seed)

    def feeds(self, count: int, *, seed: int = 0, batch: int | None = None) -> list[dict[str, np.ndarray]]:
        """The same inputs as onnxruntime feeds, in batches the model accepts (its fixed batch, else ``batch``)."""
        x = self.inputs(count, seed=seed)
        size = self.expect.fixed_batch or batch or count
        return [{self.input_name: x[i : i + size]} for i in range(0, count, size)]

    def reader(self, count: int, *, seed: int = 0, batch: int | None = None) -> FeedReader:
        """A calibration-style reader over ``feeds`` (iterable too, as ``qdq_loss_debug`` wants)."""
        return FeedReader(self.feeds(count, seed=seed, batch=batch))

    def write_card(self, extra: dict[str, Any] | None = None) -> Path:
        """Write ``model_card.json`` declaring this model's input and output; returns its path."""
        import json

        path = self.folder / "model_card.json"
        path.write_text(json.dumps({**self.expect.card(), **(extra or {})}, indent=2), encoding="utf-8")
        return path


def uniform(expect: InputExpect, count: int, *, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(expect.low, expect.high, size=(count, *expect.sample_shape))
    return x.astype(np.float32)


class FeedReader(CalibrationDataReader):
    """onnxruntime feeds one at a time: ``get_next`` for calibration, ``__iter__`` for ``collect_activations``."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._next = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self._feeds)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)


def float_batches(values: np.ndarray, *, labels: np.ndarray | None = None, description: str = "zoo inputs") -> Any:
    """``values`` (float32 model inputs) as the ``InputBatches`` the views take, fed as they are.

    The views' own input path makes float input from uint8 pixels; these are
    already float in the model's layout and range, so nothing is converted.
    """
    from quantcore.evaluate.batches import prepared_inputs

    return prepared_inputs(values, labels=labels, description=description)


def load(model: ZooModel) -> Any:
    """The folder through ``quantcore.load_model_variants`` (trusted: the zoo's TorchScript and pickles load)."""
    import quantcore

    return quantcore.load_model_variants(model.folder, trusted=True)


def with_modules(variants: Any, modules: dict[str, Any]) -> Any:
    """``variants`` with some variants replaced by in-memory models (eager modules that no file can hold).

    Args:
        variants: a loaded ``ModelVariants``.
        modules: variant key ("pytorch_float", "pytorch_int8") -> a model any backend runs.
    """
    from dataclasses import replace

    from quantcore.backends import backend_for
    from quantcore.load import ModelVariants, Status, VariantKey, VariantRecord

    records = dict(variants.records)
    for name, module in modules.items():
        key = VariantKey.from_string(name)
        details = backend_for(module).describe(module)
        records[key] = VariantRecord(key, Status.LOADED, file=f"<in memory: {name}>", model=module, details=details)
    return ModelVariants(replace(variants.loaded, records=records), cache_hit=False)


# ------------------------------------------------------------------ quantizing


def quantize_onnx(
    float_path: Path,
    out_path: Path,
    calibration: Sequence[dict[str, np.ndarray]],
    *,
    fmt: str = "QDQ",
    activation: str = "int8",
    per_channel: bool = False,
    preprocess: bool = True,
    extra_options: dict[str, Any] | None = None,
) -> None:
    """onnxruntime static quantization as users run it: ``quant_pre_process`` then ``quantize_static``.

    Args:
        fmt: "QDQ" or "QOperator".
        activation: "int8" (S8S8) or "uint8" (U8S8); weights are int8.
        per_channel: per-channel weight scales.
        preprocess: run ``quant_pre_process`` first (folds BatchNorm and Mul/Add chains into convs).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="zoo-") as scratch:
        source = float_path
        if preprocess:
            source = Path(scratch) / "pre.onnx"
            quant_pre_process(str(float_path), str(source), skip_symbolic_shape=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(source), str(out_path), FeedReader(calibration),
                quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                activation_type=QuantType.QInt8 if activation == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8, per_channel=per_channel, calibrate_method=CalibrationMethod.MinMax,
                extra_options=extra_options or {},
            )  # fmt: skip


def scheme_text(fmt: str, activation: str, per_channel: bool) -> str:
    acts = "S8S8" if activation == "int8" else "U8S8"
    return f"{fmt} {acts} {'per-channel' if per_channel else 'per-tensor'}"


def torch_int8(module: Any, calibration: np.ndarray, path: Path | None) -> Any:
    """torch.ao FX int8 (x86) of ``module`` calibrated on ``calibration``; saved as TorchScript when ``path``.

    Returns the FX int8 GraphModule (an eager int8 model; it does not reload from a pickle, TorchScript does).
    """
    import torch

    from quantcore.models.registry import quantize_fx

    example = torch.from_numpy(calibration)
    quantized = quantize_fx(module, example)
    if path is not None:
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(quantized, example[:2]), str(path))
    return quantized


def _export(module: Any, example: np.ndarray, path: Path, *, fixed_batch: bool = False, **kwargs: Any) -> None:
    import torch

    dynamic = None if fixed_batch else {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (torch.from_numpy(example),), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"], dynamic_axes=dynamic, **kwargs,
        )  # fmt: skip


def _script(module: Any, example: np.ndarray, path: Path) -> None:
    import torch

    with torch.no_grad():
        torch.jit.save(torch.jit.trace(module.eval(), torch.from_numpy(example)), str(path))


def _onnx_variants(
    model: ZooModel,
    calibration: np.ndarray,
    *,
    fmt: str = "QDQ",
    per_channel: bool = False,
    keys: Sequence[str] = ("onnx_int8", "onnx_uint8"),
) -> ZooModel:
    """Quantize ``model``'s float ONNX into its int8 (S8S8) and uint8 (U8S8) variants."""
    batch = model.expect.fixed_batch or 2
    feeds = [{model.input_name: calibration[i : i + batch]} for i in range(0, len(calibration), batch)]
    for key in keys:
        activation = "int8" if key == "onnx_int8" else "uint8"
        path = model.folder / FILES[key]
        quantize_onnx(model.files["onnx_float"], path, feeds, fmt=fmt, activation=activation, per_channel=per_channel)
        model.files[key] = path
        model.schemes[key] = scheme_text(fmt, activation, per_channel)
    return model


def _torch_family(
    name: str,
    folder: Path,
    module: Any,
    expect: InputExpect,
    *,
    seed: int,
    per_channel: bool = False,
    fmt: str = "QDQ",
    torch_files: bool = True,
    export_kwargs: dict[str, Any] | None = None,
) -> ZooModel:
    """All five variants of a torch module: ONNX float + two quantized, TorchScript float, FX int8 TorchScript."""
    folder.mkdir(parents=True, exist_ok=True)
    calibration = uniform(expect, CALIBRATION_COUNT, seed=CALIBRATION_SEED + seed)
    example = calibration[: expect.fixed_batch or 2]
    files = {"onnx_float": folder / FILES["onnx_float"]}
    _export(module, example, files["onnx_float"], fixed_batch=expect.fixed_batch is not None, **(export_kwargs or {}))
    model = ZooModel(name, folder, files, expect, {"onnx_float": "float32 (torch.onnx.export)"})
    _onnx_variants(model, calibration, fmt=fmt, per_channel=per_channel)
    model.modules["pytorch_float"] = module.eval()
    if torch_files:
        _script(module, example, folder / FILES["pytorch_float"])
        files["pytorch_float"] = folder / FILES["pytorch_float"]
        model.schemes["pytorch_float"] = "float32 TorchScript (torch.jit.trace)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.modules["pytorch_int8"] = torch_int8(
            _clone(module), calibration, folder / FILES["pytorch_int8"] if torch_files else None
        )
    if torch_files:
        files["pytorch_int8"] = folder / FILES["pytorch_int8"]
        model.schemes["pytorch_int8"] = "torch.ao FX int8 (x86) TorchScript"
    return model


def _clone(module: Any) -> Any:
    import copy

    return copy.deepcopy(module).eval()


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


# ------------------------------------------------------------------ torch model classes


def _zoo_nets() -> Any:
    from tests import zoo_nets  # torch is imported on first use: onnx-only builds need none of it

    return zoo_nets


def _randomize_batchnorm(module: Any, seed: int) -> Any:
    """Give every BatchNorm non-trivial statistics, so folding it changes the weights (a fresh BN is identity)."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=generator))
                m.bias.copy_(0.2 * torch.randn(n, generator=generator))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.25 + torch.rand(n, generator=generator) * 2)
    return module.eval()


def build_batchnorm_float(folder: Path, *, per_channel: bool = False, seed: int = 1) -> ZooModel:
    """A float ONNX graph that keeps its ``BatchNormalization`` nodes (exported with training preserved).

    The quantized variants are made from it by ``quant_pre_process``, which
    folds each BatchNorm into its conv; the PyTorch variants are TorchScript
    (float: ``aten::batch_norm`` after each conv; int8: FX folded).
    """
    import torch

    _seeded(seed)
    module = _randomize_batchnorm(_zoo_nets().ResidualNet(), seed)
    expect = InputExpect("NCHW", (None, 3, 32, 32))
    model = _torch_family(
        "batchnorm_float", folder, module, expect, seed=seed, per_channel=per_channel,
        export_kwargs={"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False},
    )  # fmt: skip
    model.schemes["onnx_float"] = "float32, BatchNormalization kept"
    return model


def build_fixed_batch(folder: Path, *, per_channel: bool = False, seed: int = 2) -> ZooModel:
    """A model exported with a fixed batch of 1 at 224x224 (``[1,3,224,224]``), as model-zoo graphs are."""
    _seeded(seed)
    module = _zoo_nets().TinyStrided()
    return _torch_family("fixed_batch", folder, module, InputExpect("NCHW", (1, 3, 224, 224)), seed=seed,
                         per_channel=per_channel)  # fmt: skip


def build_grey(folder: Path, *, per_channel: bool = False, seed: int = 3) -> ZooModel:
    """A 1x28x28 grey-image model (``[N,1,28,28]``)."""
    _seeded(seed)
    module = _randomize_batchnorm(_zoo_nets().GreyNet(), seed)
    return _torch_family("grey", folder, module, InputExpect("NCHW", (None, 1, 28, 28)), seed=seed,
                         per_channel=per_channel)  # fmt: skip


def build_softmax(folder: Path, *, per_channel: bool = False, seed: int = 4) -> ZooModel:
    """A classifier whose graph ends in ``Softmax``: it outputs probabilities, not logits."""
    _seeded(seed)
    module = _randomize_batchnorm(_zoo_nets().ResidualNet(softmax=True), seed)
    expect = InputExpect("NCHW", (None, 3, 32, 32), output="probabilities")
    return _torch_family("softmax", folder, module, expect, seed=seed, per_channel=per_channel)


def build_pixels_255(folder: Path, *, per_channel: bool = False, seed: int = 5) -> ZooModel:
    """A model calibrated for raw 0-255 pixels (int8 input scale about 1 in ONNX, 2 in PyTorch; not 1/255)."""
    _seeded(seed)
    module = _randomize_batchnorm(_zoo_nets().ResidualNet(), seed)
    expect = InputExpect("NCHW", (None, 3, 32, 32), low=0.0, high=255.0)
    return _torch_family("pixels_255", folder, module, expect, seed=seed, per_channel=per_channel)


def build_mlp(folder: Path, *, per_channel: bool = False, seed: int = 6) -> ZooModel:
    """A multi-layer perceptron on 20 features (``[N,20]``): Gemm layers, no image anywhere."""
    _seeded(seed)
    module = _zoo_nets().MLP()
    expect = InputExpect("NC", (None, 20), low=-1.0, high=1.0)
    return _torch_family("mlp", folder, module, expect, seed=seed, per_channel=per_channel)


def build_conv1d(folder: Path, *, per_channel: bool = False, seed: int = 7) -> ZooModel:
    """A Conv1d net on 4-channel signals of length 64 (``[N,4,64]``)."""
    _seeded(seed)
    module = _randomize_batchnorm(_zoo_nets().Conv1dNet(), seed)
    expect = InputExpect("NCL", (None, 4, 64), low=-1.0, high=1.0)
    return _torch_family("conv1d", folder, module, expect, seed=seed, per_channel=per_channel)


def build_conv3d(folder: Path, *, per_channel: bool = False, seed: int = 8) -> ZooModel:
    """A Conv3d net on 2-channel 8x16x16 volumes (``[N,2,8,16,16]``)."""
    _seeded(seed)
    module = _randomize_batchnorm(_zoo_nets().Conv3dNet(), seed)
    expect = InputExpect("NCDHW", (None, 2, 8, 16, 16))
    return _torch_family("conv3d", folder, module, expect, seed=seed, per_channel=per_channel)


def build_pad_wrapped(folder: Path, *, per_channel: bool = False, seed: int = 9) -> ZooModel:
    """Convs wrapped in ``Sequential(ConstantPad2d, Conv2d)`` as onnx2torch writes them, in an FX GraphModule.

    The float ``.pt`` is the whole pickled GraphModule (what onnx2torch users
    save; it loads in a trusted folder, its classes being torch's own) whose
    graph calls each wrapper as one module; the int8 ``.pt`` is FX int8 as
    TorchScript. ``modules`` holds both in memory.
    """
    import torch
    from torch import nn

    class WrapperLeafTracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
            return isinstance(m, nn.Sequential) or super().is_leaf_module(m, qualified_name)

    _seeded(seed)
    eager = _zoo_nets().PadConvNet().eval()
    graph = WrapperLeafTracer().trace(eager)
    for node in graph.nodes:
        node.type = None  # string annotations (postponed evaluation) would not pickle
    graph_module = torch.fx.GraphModule(eager, graph)
    expect = InputExpect("NCHW", (None, 3, 32, 32))
    model = _torch_family("pad_wrapped", folder, graph_module, expect, seed=seed, per_channel=per_channel,
                          torch_files=False)  # fmt: skip
    torch.save(graph_module, folder / FILES["pytorch_float"])
    model.files["pytorch_float"] = folder / FILES["pytorch_float"]
    model.schemes["pytorch_float"] = "whole pickled FX GraphModule (onnx2torch style)"
    calibration = uniform(expect, CALIBRATION_COUNT, seed=CALIBRATION_SEED + seed)
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(model.modules["pytorch_int8"], torch.from_numpy(calibration[:2])),
                       str(folder / FILES["pytorch_int8"]))  # fmt: skip
    model.files["pytorch_int8"] = folder / FILES["pytorch_int8"]
    model.schemes["pytorch_int8"] = "torch.ao FX int8 (x86) TorchScript"
    return model


# ------------------------------------------------------------------ onnx.helper model classes


def _save(model: Any, path: Path) -> None:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _helper_model(nodes: list[Any], inits: list[Any], inputs: list[Any], outputs: list[Any], name: str) -> Any:
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="zoo")
    model.ir_version = 8
    return model


class _Graph:
    """A small graph-writing helper: seeded initializers and named nodes."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        return self.const(name, (self.rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def affine(self, x: str, channels: int, name: str) -> str:
        """BatchNorm as Keras exports keep it: ``Mul`` by a per-channel scale, then ``Add`` a per-channel shift."""
        scale = (0.5 + self.rng.random((channels, 1, 1))).astype(np.float32)
        shift = (0.2 * self.rng.normal(size=(channels, 1, 1))).astype(np.float32)
        x = self.node("Mul", [x, self.const(f"{name}/scale", scale)], f"{name}/mul")
        return self.node("Add", [x, self.const(f"{name}/shift", shift)], f"{name}/add")

    def conv(self, x: str, cin: int, cout: int, k: int, name: str, *, stride: int = 1, bias: bool = False) -> str:
        w = self.weight(f"{name}/kernel", (cout, cin, k, k), cin * k * k)
        inputs = [x, w]
        if bias:
            inputs.append(self.const(f"{name}/bias", (0.1 * self.rng.normal(size=cout)).astype(np.float32)))
        pad = k // 2
        return self.node("Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)


def build_keras_nhwc(folder: Path, *, per_channel: bool = False, seed: int = 10) -> ZooModel:
    """A Keras-style export (as tf2onnx writes them): NHWC input ``[N,32,32,3]``, a ``Transpose`` to NCHW,
    convs without bias each followed by BatchNorm kept as ``Mul``/``Add``, a residual block with a 1x1
    shortcut beside it, and a classifier of two ``MatMul``+``Add`` whose weights come through a
    ``Transpose`` and a ``Reshape`` of constants.

    ``quant_pre_process`` folds the Mul/Add into the convs (and the weight
    Transpose/Reshape into constants) in the quantized variants; the float graph keeps them.
    """
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    g = _Graph(seed)
    x = g.node("Transpose", ["input_1"], "model/transpose_nchw", perm=[0, 3, 1, 2])
    x = g.node("Relu", [g.affine(g.conv(x, 3, 8, 3, "model/conv1"), 8, "model/bn1")], "model/relu1")
    y = g.node("Relu", [g.affine(g.conv(x, 8, 16, 3, "model/conv2", stride=2), 16, "model/bn2")], "model/relu2")
    y = g.affine(g.conv(y, 16, 16, 3, "model/conv3"), 16, "model/bn3")
    s = g.affine(g.conv(x, 8, 16, 1, "model/shortcut", stride=2), 16, "model/bn_shortcut")
    x = g.node("Relu", [g.node("Add", [y, s], "model/add")], "model/relu3")
    x = g.node("GlobalAveragePool", [x], "model/pool")
    x = g.node("Reshape", [x, g.const("model/flatten/shape", np.array([-1, 16], np.int64))], "model/flatten")
    # dense1: the kernel stored transposed, as (out, in), and a Transpose in the graph.
    stored = (g.rng.normal(size=(16, 16)) * np.sqrt(2.0 / 16)).astype(np.float32)
    w1 = g.node("Transpose", [g.const("model/dense1/kernel_t", stored)], "model/dense1/kernel", perm=[1, 0])
    x = g.node("MatMul", [x, w1], "model/dense1/matmul")
    x = g.node("Relu", [g.node("Add", [x, g.const("model/dense1/bias", np.zeros(16, np.float32) + 0.05)],
                                "model/dense1/add")], "model/dense1/relu")  # fmt: skip
    # dense2: the kernel stored flat and reshaped in the graph.
    flat = (g.rng.normal(size=160) * np.sqrt(1.0 / 16)).astype(np.float32)
    w2 = g.node("Reshape", [g.const("model/dense2/kernel_flat", flat),
                            g.const("model/dense2/kernel_shape", np.array([16, 10], np.int64))],
                "model/dense2/kernel")  # fmt: skip
    x = g.node("MatMul", [x, w2], "model/dense2/matmul")
    g.nodes.append(helper.make_node("Add", [x, g.const("model/dense2/bias", np.zeros(10, np.float32))], ["dense_2"],
                                    name="model/dense2/add"))  # fmt: skip
    inputs = [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 32, 32, 3])]
    outputs = [helper.make_tensor_value_info("dense_2", TensorProto.FLOAT, ["N", 10])]
    path = folder / FILES["onnx_float"]
    _save(_helper_model(g.nodes, g.inits, inputs, outputs, "keras_nhwc"), path)
    expect = InputExpect("NHWC", (None, 32, 32, 3))
    model = ZooModel("keras_nhwc", folder, {"onnx_float": path}, expect, {"onnx_float": "float32 (onnx.helper)"},
                     input_name="input_1")  # fmt: skip
    return _onnx_variants(model, uniform(expect, CALIBRATION_COUNT, seed=CALIBRATION_SEED + seed),
                          per_channel=per_channel)  # fmt: skip


def build_qoperator(folder: Path, *, per_channel: bool = False, seed: int = 11) -> ZooModel:
    """QOperator variants (``QLinearConv``, ``QGemm``, ``QLinearMatMul``), per-tensor or per-channel.

    The float graph: Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm with
    its weight stored (in, out) (``transB=0``: what a Keras Dense becomes once
    MatMul+Add are fused) -> Relu -> MatMul. ``onnx_int8`` is QOperator S8S8,
    ``onnx_uint8`` QOperator U8S8.
    """
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    g = _Graph(seed)
    x = g.node("Relu", [g.conv("input", 3, 16, 3, "conv", bias=True)], "relu1")
    x = g.node("Relu", [g.conv(x, 16, 64, 3, "conv2", stride=2, bias=True)], "relu2")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "pool")], "flatten")
    w = g.weight("gemm/weight", (64, 10), 64)
    x = g.node("Relu", [g.node("Gemm", [x, w, g.const("gemm/bias", np.full(10, 0.05, np.float32))], "gemm")], "relu3")
    w2 = g.weight("matmul/weight", (10, 4), 10)
    g.nodes.append(helper.make_node("MatMul", [x, w2], ["output"], name="matmul"))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4])]
    path = folder / FILES["onnx_float"]
    _save(_helper_model(g.nodes, g.inits, inputs, outputs, "qoperator"), path)
    expect = InputExpect("NCHW", (None, 3, 16, 16))
    name = f"qoperator_{'per_channel' if per_channel else 'per_tensor'}"
    model = ZooModel(name, folder, {"onnx_float": path}, expect, {"onnx_float": "float32 (onnx.helper)"})
    calibration = uniform(expect, CALIBRATION_COUNT, seed=CALIBRATION_SEED + seed)
    return _onnx_variants(model, calibration, fmt="QOperator", per_channel=per_channel)


# ------------------------------------------------------------------ the onnx model-zoo topologies


def build_light(
    folder: Path,
    name: str,
    *,
    fmt: str = "QDQ",
    per_channel: bool = False,
    seed: int = 0,
    calibration_images: int = 2,
    keys: Sequence[str] = ("onnx_int8", "onnx_uint8"),
) -> ZooModel:
    """One onnx model-zoo topology (``zoo_light.LIGHT_MODELS``): seeded float weights, and its quantized variants.

    Input ``[1,3,224,224]`` (a fixed batch of 1); the graphs end in ``Softmax`` except DenseNet-121.
    ``keys``: which quantized variants to make (the large topologies take a minute or more each).
    """
    import onnx

    from tests.zoo_light import ends_in_softmax, seeded_light_model

    folder.mkdir(parents=True, exist_ok=True)
    model_proto = seeded_light_model(name, seed=seed)
    path = folder / FILES["onnx_float"]
    onnx.save(model_proto, str(path))
    input_name = model_proto.graph.input[0].name
    output = "probabilities" if ends_in_softmax(model_proto) else "logits"
    expect = InputExpect("NCHW", (1, 3, 224, 224), output=output)
    scheme = {"onnx_float": "float32, seeded weights (onnx model-zoo topology)"}
    model = ZooModel(f"light_{name}", folder, {"onnx_float": path}, expect, scheme, input_name=input_name)
    calibration = uniform(expect, calibration_images, seed=CALIBRATION_SEED + seed)
    return _onnx_variants(model, calibration, fmt=fmt, per_channel=per_channel, keys=keys)


# ------------------------------------------------------------------ every class, by name

BUILDERS = {
    "keras_nhwc": build_keras_nhwc,
    "batchnorm_float": build_batchnorm_float,
    "fixed_batch": build_fixed_batch,
    "grey": build_grey,
    "softmax": build_softmax,
    "pixels_255": build_pixels_255,
    "mlp": build_mlp,
    "conv1d": build_conv1d,
    "conv3d": build_conv3d,
    "qoperator": build_qoperator,
    "pad_wrapped": build_pad_wrapped,
}


def build(name: str, folder: Path, **options: Any) -> ZooModel:
    """``BUILDERS[name](folder, **options)``; ``light_<topology>`` builds one of ``zoo_light.LIGHT_MODELS``."""
    if name.startswith("light_"):
        return build_light(folder, name.removeprefix("light_"), **options)
    return BUILDERS[name](folder, **options)
