"""Model architectures that state_dict checkpoints are rebuilt into.

ResNet8 follows the MLPerf Tiny image-classification reference (32x32x3 input,
three residual stacks of 16/32/64 filters, 78,666 parameters). New
architectures join through ``ARCHITECTURES``; a checkpoint names its
architecture with an ``"arch"`` key, or is matched by its state_dict keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResNet8Config:
    in_channels: int = 3
    num_classes: int = 10
    widths: tuple[int, int, int] = (16, 32, 64)


class ResidualStack(nn.Module):
    """Two 3x3 convs with a skip; a strided 1x1 conv on the skip when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride) if stride != 1 else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class ResNet8(nn.Module):
    def __init__(self, config: ResNet8Config = ResNet8Config()) -> None:
        super().__init__()
        w1, w2, w3 = config.widths
        self.config = config
        self.conv1 = nn.Conv2d(config.in_channels, w1, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU()
        self.stack1 = ResidualStack(w1, w1, 1)
        self.stack2 = ResidualStack(w1, w2, 2)
        self.stack3 = ResidualStack(w2, w3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stack3(self.stack2(self.stack1(x)))
        return self.fc(self.flatten(self.pool(x)))


def _classes(state_dict: Mapping[str, object]) -> int:
    weight = state_dict.get("fc.weight")
    if weight is None:  # a quantized Linear keeps (weight, bias) packed
        weight = state_dict["fc._packed_params._packed_params"][0]  # type: ignore[index]
    return int(weight.shape[0])  # type: ignore[union-attr]


def build_resnet8(state_dict: Mapping[str, torch.Tensor] | None = None) -> ResNet8:
    """A float ResNet8 sized to fit ``state_dict`` (input channels and classes read from it)."""
    if state_dict is None:
        return ResNet8()
    channels = int(state_dict["conv1.weight"].shape[1])
    return ResNet8(ResNet8Config(in_channels=channels, num_classes=_classes(state_dict)))


def is_quantized_state_dict(state_dict: Mapping[str, object]) -> bool:
    return any(isinstance(v, torch.Tensor) and v.is_quantized for v in state_dict.values())


def quantize_fx(model: nn.Module, calibration: torch.Tensor, backend: str = "x86") -> nn.Module:
    """Post-training static int8 quantization (torch.ao FX) calibrated on ``calibration``."""
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = backend
    with warnings.catch_warnings():  # torch.ao warns it is deprecated; it is what torch 2.13 ships
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping(backend), (calibration[:1],))
        with torch.no_grad():
            prepared(calibration)
        return convert_fx(prepared)


# name -> builder of the float module sized to fit a state_dict.
ARCHITECTURES: dict[str, Callable[[Mapping[str, torch.Tensor] | None], nn.Module]] = {
    "resnet8": build_resnet8,
}


def rebuild(state_dict: Mapping[str, torch.Tensor], arch: str | None = None) -> tuple[str, nn.Module]:
    """The first registered architecture (or ``arch``) that takes ``state_dict`` exactly, loaded.

    An int8 state_dict gets an int8 skeleton (FX, x86) of the architecture to load into.

    Raises:
        LookupError: no registered architecture fits.
    """
    candidates = [arch] if arch in ARCHITECTURES else list(ARCHITECTURES)
    for name in candidates:
        try:
            model = ARCHITECTURES[name](state_dict)
            if is_quantized_state_dict(state_dict):
                channels = int(state_dict["conv1.weight"].shape[1])
                model = quantize_fx(model, torch.zeros(2, channels, 32, 32))
            model.load_state_dict(state_dict)
        except (KeyError, IndexError, AttributeError, TypeError, RuntimeError):
            continue
        return name, model
    raise LookupError(f"fits none of: {', '.join(candidates)}")
