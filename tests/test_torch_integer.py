"""PyTorch int8 layers as integer steps, checked against torch's own quantized modules and numpy.

Small conv/linear models are quantized here with torch.ao FX (per channel and per tensor, with and without
bias); every figure the integer view shows for them is recomputed from the modules themselves: their
``weight().int_repr()``, scales and zero points, and their outputs on the very quantized inputs the view saw.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import MinMaxObserver, QConfig, QConfigMapping, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from quantcore.backends import integer_graph_for, integer_tapper_for, to_integers
from quantcore.integer import LayerStats, run_step

BATCH = 6
SPAN = 1.0


class Small(nn.Module):
    """conv (stride 2, pad 1) -> ReLU -> conv (pad 1) -> flatten -> linear: what a tiny CNN is made of."""

    def __init__(self, bias: bool, size: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=bias)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=bias)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6 * (size // 2) ** 2, 5, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.conv2(self.relu(self.conv1(x)))))


def _quantized(per_channel: bool, bias: bool, size: int = 10, span: float = SPAN) -> torch.fx.GraphModule:
    """``Small`` quantized by FX for x86, calibrated on inputs uniform in [0, ``span``)."""
    torch.manual_seed(1)
    torch.backends.quantized.engine = "x86"
    model = Small(bias, size).eval()
    if per_channel:
        mapping = get_default_qconfig_mapping("x86")  # per-channel symmetric int8 weights
    else:  # per-tensor affine int8 weights: a non-zero weight zero point
        weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_affine)
        activation = MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True)
        mapping = QConfigMapping().set_global(QConfig(activation=activation, weight=weight))
    calibration = torch.rand(16, 3, size, size) * span
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, mapping, (calibration[:1],))
        with torch.no_grad():
            prepared(calibration)
        return convert_fx(prepared)


CASES = [(pc, b) for pc in (True, False) for b in (True, False)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{'pc' if pc else 'pt'}-{'b' if b else 'nob'}" for pc, b in CASES])
def quantized(request: pytest.FixtureRequest) -> tuple[torch.fx.GraphModule, bool, bool]:
    return _quantized(*request.param), *request.param


def _batch(seed: int = 0, span: float = SPAN) -> np.ndarray:
    return (np.random.default_rng(seed).random((BATCH, 3, 10, 10), np.float32) * span).astype(np.float32)


def _pair_saturated_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, saturate: bool = True) -> np.ndarray:
    """Σ x·w as fbgemm's AVX2 u8·s8 kernel adds it: products in (kernel row, kernel column, channel) order,
    two at a time in int16 with saturation (``vpmaddubsw``), then in int32. Zero points 0 on both sides.
    ``saturate=False``: the exact sum (an int32 kernel's)."""
    n, c, h, wd = x.shape
    out, _, kh, kw = w.shape
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    cols = np.zeros((n, oh, ow, kh, kw, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
            cols[:, :, :, i, j, :] = np.moveaxis(window, 1, -1)
    cols = cols.reshape(n, oh, ow, -1)
    weights = np.moveaxis(w.astype(np.int64), 1, -1).reshape(out, -1)
    products = cols[..., None, :] * weights[None, None, None]
    if products.shape[-1] % 2:
        products = np.concatenate([products, np.zeros((*products.shape[:-1], 1), np.int64)], axis=-1)
    pairs = products[..., 0::2] + products[..., 1::2]
    if saturate:
        pairs = np.clip(pairs, -(2**15), 2**15 - 1)
    return np.moveaxis(pairs.sum(axis=-1), -1, 1)


def _module(gm: nn.Module, path: str) -> nn.Module:
    return dict(gm.named_modules())[path]


def _requantize_f32(acc: np.ndarray, m: np.ndarray, zero: int, low: int) -> np.ndarray:
    shape = (1, -1, *([1] * (acc.ndim - 2)))
    return np.clip(np.rint(acc.astype(np.float32) * m.reshape(shape)) + zero, low, 255)


def test_layers_are_read_from_the_modules(quantized) -> None:
    gm, per_channel, bias = quantized
    graph = integer_graph_for(gm)
    assert [s.name for s in graph.layers] == ["conv1", "conv2", "fc"]
    assert graph.notes == () and graph.runtime == "torch (x86 engine)"
    assert graph.input_q.scale == pytest.approx(float(gm.conv1_input_scale_0), rel=1e-7)
    assert graph.input_q.zero_point == int(gm.conv1_input_zero_point_0) and graph.input_q.dtype == "uint8"
    for step in graph.layers:
        module = _module(gm, step.name)
        weight = module.weight()
        assert np.array_equal(step.weight, weight.int_repr().numpy())
        if per_channel:
            assert weight.qscheme() == torch.per_channel_affine  # stored so, symmetric (zero points 0)
            assert np.array_equal(step.weight_scale, weight.q_per_channel_scales().numpy().astype(np.float32))
            assert np.all(step.weight_zero_point == 0)
        else:
            assert np.all(step.weight_scale == np.float32(weight.q_scale()))
            assert np.all(step.weight_zero_point == weight.q_zero_point())
        assert step.output.scale == pytest.approx(module.scale, rel=1e-7)
        assert step.output.zero_point == module.zero_point
        assert step.relu == (step.name == "conv1")  # the ReLU is fused into conv1 by FX
        if bias:
            b = module.bias().detach().numpy().astype(np.float64)
            exact = b / (np.float64(step.inputs[0].scale) * step.weight_scale.astype(np.float64))
            assert np.all(np.abs(step.bias - exact) <= 0.5 + 1e-3)  # round(bias / (s_in·s_w))
        else:
            assert step.bias is None
        if step.kind == "conv":
            assert step.attrs["strides"] == list(module.stride)
            assert step.attrs["pads"] == [*module.padding, *module.padding]
    # each layer's input is the tensor the previous integer step made (the quantized input for the first)
    by_output = {s.output.name: s for s in graph.steps}
    assert graph.layers[0].inputs[0] == graph.input_q
    assert by_output[graph.layers[1].inputs[0].name].name == "conv1"
    assert by_output[graph.layers[2].inputs[0].name].kind == "reshape"
    assert graph.output_q == graph.layers[-1].output


def test_reference_against_torchs_own_modules(quantized) -> None:
    """Per layer: the view's taps are what the module makes of its input, and every figure of ``LayerStats``
    equals numpy's recomputation from torch's integers."""
    gm, _, _ = quantized
    graph = integer_graph_for(gm)
    taps = sorted({t.name for s in graph.layers for t in (*s.inputs, s.output)})
    capture = integer_tapper_for(gm, taps)(_batch())
    values = {t: to_integers(v) for t, v in capture.values.items()}
    raw = capture.values
    with torch.no_grad():
        expected_output = gm(torch.from_numpy(_batch())).numpy()
    assert np.array_equal(capture.output, expected_output)
    for step in graph.layers:
        module = _module(gm, step.name)
        q_in = raw[step.inputs[0].name]
        assert (q_in.q_scale(), q_in.q_zero_point()) == pytest.approx((step.inputs[0].scale, step.inputs[0].zero_point))
        with torch.no_grad():
            theirs = module(q_in if step.kind == "conv" else q_in.reshape(len(q_in), -1)).int_repr().numpy()
        assert np.array_equal(values[step.output.name], theirs)

        stats = LayerStats(step)
        by_float, by_fixed = stats.update(values[step.inputs[0].name], theirs)
        result = stats.result()
        # numpy's own accumulator, in float64 (exact here), with the int32 bias
        x = values[step.inputs[0].name].astype(np.float64) - step.inputs[0].zero_point
        w = step.weight.astype(np.float64) - step.weight_zero_point.reshape(-1, *([1] * (step.weight.ndim - 1)))
        if step.kind == "conv":
            acc = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=step.attrs["strides"],
                           padding=step.attrs["pads"][:2]).numpy()  # fmt: skip
        else:
            acc = x.reshape(len(x), -1) @ w.T
        shape = (1, -1, *([1] * (acc.ndim - 2)))
        if step.bias is not None:
            acc = acc + step.bias.reshape(shape)
        axes = tuple(a for a in range(acc.ndim) if a != 1)
        assert np.array_equal(result.observed, np.abs(acc).max(axis=axes).astype(np.int64))
        assert np.all(result.observed <= result.bound)
        s_in, s_out = np.float32(step.inputs[0].scale), np.float32(step.output.scale)
        m = (s_in * step.weight_scale.astype(np.float32) / s_out).astype(np.float32)
        low = step.output.zero_point if step.relu else 0
        ours = _requantize_f32(acc, m, step.output.zero_point, low)
        assert np.array_equal(by_float, ours)
        diff = np.abs(ours - theirs)
        assert result.float_mismatch.count == np.count_nonzero(diff)
        assert result.float_mismatch.max_lsb == int(diff.max())
        assert result.float_mismatch.max_lsb <= 1  # the float bias, rounded to int32, tips a value by one at most
        assert result.fixed_mismatch.count == np.count_nonzero(by_fixed != theirs)
        assert result.saturation_max == pytest.approx(np.mean(theirs == 255))
        if step.bias is None:  # no bias to round: the int32 reference is torch's result exactly
            assert result.float_mismatch.count == 0, step.name


def test_fbgemms_float_bias_accounts_for_every_mismatch(quantized) -> None:
    """torch's x86 kernel (fbgemm) adds ``bias / (s_in·s_w)`` unrounded in float32, then multiplies by M and
    rounds: computed so here from torch's integers, it equals torch's outputs exactly. The reference's 1-LSB
    differences are that rounding of the bias to int32, nothing else."""
    gm, _, bias = quantized
    graph = integer_graph_for(gm)
    taps = sorted({t.name for s in graph.layers for t in (*s.inputs, s.output)})
    values = {t: to_integers(v) for t, v in integer_tapper_for(gm, taps)(_batch(3)).values.items()}
    for step in graph.layers:
        module = _module(gm, step.name)
        x = values[step.inputs[0].name].astype(np.float64) - step.inputs[0].zero_point
        w = step.weight.astype(np.float64) - step.weight_zero_point.reshape(-1, *([1] * (step.weight.ndim - 1)))
        if step.kind == "conv":
            raw = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=step.attrs["strides"],
                           padding=step.attrs["pads"][:2]).numpy()  # fmt: skip
        else:
            raw = x.reshape(len(x), -1) @ w.T
        shape = (1, -1, *([1] * (raw.ndim - 2)))
        product = (np.float32(step.inputs[0].scale) * step.weight_scale.astype(np.float32)).astype(np.float32)
        total = raw.astype(np.float32)
        if bias:
            total = total + (module.bias().detach().numpy().astype(np.float32) / product).reshape(shape)
        m = (product / np.float32(step.output.scale)).astype(np.float32)
        low = step.output.zero_point if step.relu else 0
        fbgemm = np.clip(np.rint(total * m.reshape(shape)) + step.output.zero_point, low, 255)
        assert np.array_equal(fbgemm, values[step.output.name]), step.name


def test_the_steps_between_layers_run_as_torch_runs_them() -> None:
    gm = _quantized(True, True)
    graph = integer_graph_for(gm)
    reshape = next(s for s in graph.steps if s.kind == "reshape")
    taps = [reshape.inputs[0].name, reshape.output.name]
    values = {t: to_integers(v) for t, v in integer_tapper_for(gm, taps)(_batch()).values.items()}
    ours = run_step(reshape, [values[reshape.inputs[0].name]], fixed=False)
    assert np.array_equal(ours, values[reshape.output.name])


def test_a_model_that_is_not_fx_or_torchscript_says_so() -> None:
    assert integer_graph_for(Small(True).eval()) is None


def test_a_tap_that_names_nothing_is_refused() -> None:
    from quantcore.errors import InvalidModelError

    with pytest.raises(InvalidModelError, match="no node named 'nowhere'"):
        integer_tapper_for(_quantized(True, False), ["nowhere"])


def test_an_fx_int8_state_dict_folder_gets_the_whole_view(tmp_path) -> None:
    """An int8 state_dict is rebuilt into an FX GraphModule on load: its layers, network run and export come
    through the view like the bundled TorchScript's."""
    from quantcore import load_model_variants
    from quantcore.integer import integer_view
    from quantcore.integer.export import write_exports
    from quantcore.models.registry import quantize_fx
    from quantcore.models.resnet8 import build_resnet8

    torch.manual_seed(0)
    model = quantize_fx(build_resnet8(None).eval(), torch.rand(16, 3, 32, 32))
    torch.save(model.state_dict(), tmp_path / "net_int8.pt")
    variants = load_model_variants(tmp_path)
    loaded = variants.model("pytorch_int8")
    assert isinstance(loaded, torch.fx.GraphModule)
    report = integer_view(variants, images=8, batch_size=4)
    result = report.variant("pytorch_int8")
    assert result is not None and result.runtime == "torch (x86 engine)"
    assert [layer.step.name for layer in result.layers][:3] == ["conv1", "stack1.conv1", "stack1.conv2"]
    assert len(result.layers) == 10 and all(layer.images == 8 for layer in result.layers)
    run = result.network_fixed
    assert run.stopped is None and run.images == 8
    for layer in result.layers:
        assert np.all(layer.observed <= layer.bound)
        assert layer.float_mismatch.max_lsb <= 1, layer.step.name
    written = write_exports([result], tmp_path / "out")
    assert sorted(p.name for p in written) == ["pytorch_int8.h", "pytorch_int8.json"]


def test_inputs_beyond_the_calibrated_range_overflow_fbgemms_int16_pairs() -> None:
    """Calibrated on [0, 0.6) and fed [0, 1): the quantized inputs pass 127 and pairs of u8·s8 products pass
    int16. On AVX2, fbgemm clips them: emulated so from torch's integers, conv1 equals torch's output exactly,
    the exact int32 reference differs by more than 1 LSB there, and the view says why. On AVX512-VNNI, fbgemm
    sums in int32: the exact sums give torch's output, the clipped pairs do not."""
    from quantcore.backends.torch_integer import fbgemm_pairs_saturate

    capability, saturates = torch.backends.cpu.get_cpu_capability(), fbgemm_pairs_saturate()
    if capability != "AVX2" and saturates is not False:
        pytest.skip(f"torch runs {capability} kernels on a CPU without AVX512-VNNI: the int16 pair saturation "
                    "emulated here is fbgemm's AVX2 path, and its pair order on AVX512 is not known here")  # fmt: skip
    gm = _quantized(True, False, span=0.6)
    graph = integer_graph_for(gm)
    conv1 = graph.layers[0]
    values = {t: to_integers(v) for t, v in integer_tapper_for(gm, [conv1.inputs[0].name, conv1.output.name])(
        _batch(span=1.0)).values.items()}  # fmt: skip
    x, theirs = values[conv1.inputs[0].name], values[conv1.output.name]
    assert x.max() > 127 and conv1.inputs[0].zero_point == 0 and np.all(conv1.weight_zero_point == 0)
    stride, pad = conv1.attrs["strides"][0], conv1.attrs["pads"][0]
    s_in, s_out = np.float32(conv1.inputs[0].scale), np.float32(conv1.output.scale)
    m = (s_in * conv1.weight_scale.astype(np.float32) / s_out).astype(np.float32)
    zero = conv1.output.zero_point
    clipped = _requantize_f32(_pair_saturated_conv(x, conv1.weight, stride, pad), m, zero, zero)
    exact = _requantize_f32(_pair_saturated_conv(x, conv1.weight, stride, pad, saturate=False), m, zero, zero)
    assert not np.array_equal(clipped, exact), "some pairs pass int16"
    if saturates is False:
        assert np.array_equal(exact, theirs) and not np.array_equal(clipped, theirs)
        return
    assert np.array_equal(clipped, theirs)

    stats = LayerStats(conv1)
    stats.update(x, theirs)
    result = stats.result()
    assert result.float_mismatch.max_lsb > 1
    assert result.input_seen == (int(x.min()), int(x.max()))
    from quantcore.backends.torch_integer import pair_overflow_note

    note = pair_overflow_note([("conv1", result.input_seen, conv1.weight)], "x86", saturates=True)
    assert note is not None and f"up to {x.max()}" in note and "conv1 " in note
    # 2·127·128 fits int16
    assert pair_overflow_note([("conv1", (0, 127), conv1.weight)], "x86", saturates=True) is None
    assert pair_overflow_note([("conv1", (0, 255), conv1.weight)], "qnnpack", saturates=True) is None


def test_which_cpus_sum_pairs_in_int16_and_the_note_says_so() -> None:
    from quantcore.backends.torch_integer import fbgemm_pairs_saturate, pair_overflow_note

    assert fbgemm_pairs_saturate("flags : fpu sse2 avx2 fma") is True
    assert fbgemm_pairs_saturate("flags : avx2 avx512f avx512bw") is True  # AVX512 without VNNI: vpmaddubsw
    assert fbgemm_pairs_saturate("flags : avx2 avx512f avx512bw avx512_vnni") is False
    assert fbgemm_pairs_saturate("flags : avx2 avx_vnni") is None
    assert fbgemm_pairs_saturate("Features : fp asimd") is None  # not x86
    assert fbgemm_pairs_saturate() in (True, False, None)
    weight = np.full((1, 4), 127, np.int8)
    notes = {cpu: pair_overflow_note([("fc", (0, 200), weight)], "x86", saturates=cpu) for cpu in (True, False, None)}
    assert all(n is not None and "fc 2 of 2" in n and "up to 200" in n for n in notes.values())
    assert notes[True].endswith("(this CPU has no VNNI, so torch's outputs here can differ so)")
    assert "torch's outputs here are an int32 kernel's" in notes[False]
    assert notes[None].endswith("(whether this CPU's kernels do is not known)")


def test_overflowing_pairs_are_counted_as_fbgemm_pairs_them() -> None:
    from quantcore.backends.torch_integer import overflowing_pairs

    # one output channel, 2 kernel positions x 2 channels: K order (kh, kw, c) pairs (0,0,0)+(0,0,1), (0,1,*)
    weight = np.array([[[[127, 0]], [[127, 0]]]], np.int8).reshape(1, 2, 1, 2)  # (O, C, KH, KW)
    # channel pairs at each kernel position: (127, 127) and (0, 0)
    assert overflowing_pairs(weight, (0, 129)) == (0, 2)  # 129·127·2 = 32766: fits
    assert overflowing_pairs(weight, (0, 128)) == (0, 2)
    assert overflowing_pairs(weight, (0, 130)) == (1, 2)
    # dense (out, in): pairs of adjacent inputs; an odd length pairs the last with zero
    assert overflowing_pairs(np.array([[-128, -128, 127]], np.int8), (0, 200)) == (1, 2)


def test_the_view_of_a_torchscript_folder_says_where_pairs_can_overflow(tmp_path) -> None:
    """A TorchScript int8 model saved here, calibrated on [0, 0.6), run by the view on generated [0, 1) pixels."""
    from quantcore import load_model_variants
    from quantcore.evaluate.batches import sample_inputs
    from quantcore.evaluate.inputs import input_spec, to_model_input, variant_spec
    from quantcore.integer import integer_view

    gm = _quantized(True, True, size=32, span=0.6)
    torch.jit.save(torch.jit.trace(gm, torch.zeros(1, 3, 32, 32)), tmp_path / "small_int8.pt")
    variants = load_model_variants(tmp_path, trusted=True)
    report = integer_view(variants, images=8)
    result = report.variant("pytorch_int8")
    assert [layer.step.name for layer in result.layers] == ["conv1", "conv2", "fc"]
    assert [s.kind for s in result.graph.steps] == ["conv", "conv", "reshape", "dense"]
    inputs, _ = sample_inputs(variants, input_spec(variants), images=8)
    pixels, _ = inputs.take(0, 8)
    x = to_model_input(pixels, variant_spec(variants, "pytorch_int8"))
    scale, zero = float(gm.conv1_input_scale_0), int(gm.conv1_input_zero_point_0)
    quantized = torch.quantize_per_tensor(torch.from_numpy(x), scale, zero, torch.quint8).int_repr().numpy()
    conv1 = result.layers[0]
    assert conv1.input_seen == (int(quantized.min()), int(quantized.max()))
    from quantcore.backends.torch_integer import overflowing_pairs

    risky, pairs = overflowing_pairs(conv1.step.weight, conv1.input_seen)
    assert risky > 0
    said = [n for n in report.notes if n.startswith("pytorch_int8: uint8 inputs of")]
    assert len(said) == 1 and f"conv1 {risky} of {pairs}" in said[0]
    largest = max(layer.float_mismatch.max_lsb for layer in result.layers)
    assert said[0].endswith(f"the largest mismatch of these layers on the samples is {largest} LSB")
    from quantcore.backends.torch_integer import fbgemm_pairs_saturate

    saturates = fbgemm_pairs_saturate()
    if saturates:  # and it did pass here
        assert largest > 1 and "this CPU has no VNNI" in said[0]
    elif saturates is False:  # VNNI sums in int32: only torch's own rounding differs
        assert largest <= 1 and "this CPU has AVX512-VNNI" in said[0]
    assert result.network_fixed.stopped is None and result.network_fixed.images == 8
