"""ResNet8 as the MLPerf Tiny image-classification reference has it.

32x32x3 input, three residual stacks of 16/32/64 filters, 78,666 parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
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
