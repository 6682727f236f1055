"""The CIFAR basic-block ResNets of He et al. (2016, Section 4.2) that DGL and InfoPro report on: ResNet-32
and ResNet-110, as units (stem, one unit per basic block, classifier last).

Stem: 3x3 conv to 16 channels, BN, ReLU. Three sections of n basic blocks (n = 5 for ResNet-32, 18 for
ResNet-110; 6n + 2 weight layers) at 16, 32 and 64 channels (times the width), the second and third
starting with a stride-2 block; global average pooling and one dense layer. A basic block is
3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut, then ReLU.

Shortcuts: where the shape changes (the first block of the second and third sections), a 1x1 strided
conv + BN projection, as in the InfoPro authors' code (blackfeather-wang/InfoPro-Pytorch, networks/resnet.py),
whose network gives the DGL and InfoPro numbers of report/paper.py. He et al. used parameter-free
zero-padding shortcuts there (their option A); the two projections add 2,752 parameters to the published
0.46 M (ResNet-32) and 1.7 M (ResNet-110), which are the rest of the network exactly (tests/test_cifar_resnet.py).
Blocks are named conv{section + 2}_{block} like the bottleneck ResNets' (conv2_1 is the first block of the
16-channel section; InfoPro's [stage s, layer l] is our block conv{s + 1}_{l + 1}). Convolutions start
from He et al.'s normal initialisation (fan-out), as in the authors' code; BatchNorm at (1, 0).
"""
from __future__ import annotations

import torch
from torch import nn

from .unit import UnitModel

# blocks per section
BASIC_SECTIONS = {"resnet32": (5, 5, 5), "resnet110": (18, 18, 18)}
BASE_CHANNELS = (16, 32, 64)


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut (a 1x1 projection where the shape changes), ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def cifar_resnet(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0) -> UnitModel:
    """`resnet32` or `resnet110` (BASIC_SECTIONS); channels 16-32-64 x width."""
    widths = [_channels(c, width) for c in BASE_CHANNELS]
    units = [nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                           nn.ReLU(inplace=True))]
    names, in_ch = ["stem"], widths[0]
    for section, (blocks, out_ch) in enumerate(zip(BASIC_SECTIONS[name], widths)):
        for b in range(blocks):
            units.append(BasicBlock(in_ch, out_ch, 2 if section > 0 and b == 0 else 1))
            names.append(f"conv{section + 2}_{b + 1}")
            in_ch = out_ch
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)))
    names.append("fc")
    for m in nn.ModuleList(units).modules():  # the authors' initialisation: He normal (fan-out) convolutions
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    layers = [1] + [2] * (len(units) - 2) + [1]
    return UnitModel(name, "resnet", nn.ModuleList(units), names, layers, width)
