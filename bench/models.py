"""The paper's networks as ordered lists of units, ready to be cut into layer groups.

A *unit* is the smallest piece a split may cut at: the stem, one residual block, or one dense
layer. The classifier is the last unit and always rides with the last group. Each unit records
how many weight layers it holds, which is what the paper's split rule balances.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import BenchError

# Blocks per stage of the bottleneck ResNets (He et al. 2016). ResNet-182 is the paper's
# "ten more bottleneck blocks in conv4 than ResNet-152" ([3, 8, 36, 3] -> [3, 8, 46, 3]).
RESNET_STAGES = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnet182": (3, 8, 46, 3),
}
MLP_WIDTHS = (300, 150)  # Table III: dense 300-150-10 with ReLU
MODELS = tuple(RESNET_STAGES) + ("mlp",)


@dataclass
class UnitModel:
    """A network as consecutive units; running them in order is the full forward pass."""

    name: str
    family: str  # "resnet" or "mlp": decides the shape of critics, exits and synthesizers
    units: nn.ModuleList
    unit_names: list[str]
    unit_layers: list[int]  # weight layers per unit (convs and dense layers)
    width: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x

    @property
    def depth(self) -> int:
        return sum(self.unit_layers)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), projection shortcut where the shape changes."""

    expansion = 4

    def __init__(self, in_ch: int, mid_ch: int, stride: int):
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def resnet(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0) -> UnitModel:
    """Bottleneck ResNet with the CIFAR stem (3x3 conv, no max-pool); widths 64-128-256-512 x width."""
    stages = RESNET_STAGES[name]
    stem_ch = _channels(64, width)
    units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 3, padding=1, bias=False),
                           nn.BatchNorm2d(stem_ch), nn.ReLU(inplace=True))]
    names, layers = ["stem"], [1]
    in_ch = stem_ch
    for stage, blocks in enumerate(stages):
        mid = _channels(64 * 2**stage, width)
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            units.append(Bottleneck(in_ch, mid, stride))
            in_ch = mid * Bottleneck.expansion
            names.append(f"conv{stage + 2}_{b + 1}")
            layers.append(3)
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)))
    names.append("fc")
    layers.append(1)
    return UnitModel(name, "resnet", nn.ModuleList(units), names, layers, width)


def mlp(num_classes: int, in_features: int) -> UnitModel:
    """Table III's dense 300-150-10 network with ReLU; the input is flattened in the first unit."""
    units, names = [], []
    prev = in_features
    for i, w in enumerate(MLP_WIDTHS):
        first = [nn.Flatten()] if i == 0 else []
        units.append(nn.Sequential(*first, nn.Linear(prev, w), nn.ReLU(inplace=True)))
        names.append(f"dense{i + 1}")
        prev = w
    units.append(nn.Linear(prev, num_classes))
    names.append("fc")
    return UnitModel("mlp", "mlp", nn.ModuleList(units), names, [1] * len(units), 1.0)


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> UnitModel:
    """Build a model by name; unknown names raise a one-line BenchError listing the valid ones."""
    if name in RESNET_STAGES:
        return resnet(name, num_classes, input_shape[0], width)
    if name == "mlp":
        c, h, w = input_shape
        return mlp(num_classes, c * h * w)
    raise BenchError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
