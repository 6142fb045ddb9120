"""The torch architectures of the test zoo (``tests.zoo``): tiny, one per model class."""

from __future__ import annotations

import torch
from torch import nn


class GreyNet(nn.Module):
    """1x28x28 grey input (Fashion-MNIST as it comes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class ResidualNet(nn.Module):
    """A ResNet-ish block with a 1x1 shortcut: two same-depth sibling convs, BatchNorm after each conv."""

    def __init__(self, channels: int = 3, width: int = 8, classes: int = 10, softmax: bool = False) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width)
        self.conv3, self.bn3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)
        self.shortcut = nn.Conv2d(width, 2 * width, 1, stride=2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)
        self.softmax = nn.Softmax(dim=1) if softmax else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(x)))
        y = self.bn3(self.conv3(y))
        x = self.relu(y + self.shortcut(x))
        x = self.fc(torch.flatten(self.pool(x), 1))
        return self.softmax(x) if self.softmax is not None else x


class TinyStrided(nn.Module):
    """A 224x224 input brought down fast: strided convs, a global pool, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 7, stride=4, padding=3)
        self.conv2 = nn.Conv2d(4, 8, 5, stride=4, padding=2)
        self.conv3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class MLP(nn.Module):
    def __init__(self, features: int = 20, classes: int = 5) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(features, 32), nn.Linear(32, 16), nn.Linear(16, classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


class Conv1dNet(nn.Module):
    def __init__(self, channels: int = 4, classes: int = 6) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(channels, 8, 5, padding=2), nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 16, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class Conv3dNet(nn.Module):
    def __init__(self, channels: int = 2, classes: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv3d(channels, 4, 3, padding=1), nn.BatchNorm3d(4)
        self.conv2 = nn.Conv3d(4, 8, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class PadConvNet(nn.Module):
    """Convs wrapped as onnx2torch writes them: ``Sequential(pad, Conv2d)`` for an asymmetric ONNX pad."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv_0 = nn.Sequential(nn.ConstantPad2d((0, 1, 0, 1), 0.0), nn.Conv2d(3, 8, 3, stride=2))
        self.Relu_0 = nn.ReLU()
        self.Conv_1 = nn.Sequential(nn.ConstantPad2d((1, 1, 1, 1), 0.0), nn.Conv2d(8, 16, 3))
        self.Relu_1 = nn.ReLU()
        self.Identity_0 = nn.Identity()
        self.GlobalAveragePool_0 = nn.AdaptiveAvgPool2d(1)
        self.Flatten_0 = nn.Flatten()
        self.Gemm_0 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Relu_0(self.Conv_0(x))
        x = self.Identity_0(self.Relu_1(self.Conv_1(x)))
        return self.Gemm_0(self.Flatten_0(self.GlobalAveragePool_0(x)))
