"""Pre-activation bottleneck ResNets (He et al. 2016, "Identity Mappings in Deep Residual Networks").

The network ResIST (Dun et al., seeds/resist-paper.txt) decomposes: a block computes
x + scale * F(BN-ReLU-conv x3), with no activation after the addition, so a block that is switched
off (``active = False``) is exactly the identity and a shallower sub-ResNet stays a valid network.
``scale`` multiplies the residual branch; ResIST sets it to the chance that a sub-ResNet holds the
block when the whole network is evaluated (stochastic-depth style activation scaling).

Same units as bench.models (stem, one unit per block, classifier last), same widths
(64-128-256-512 x width, x4 expansion), same CIFAR / ImageNet stems; the classifier unit starts with
the final BN-ReLU that pre-activation networks need.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import RESNET_STAGES, UnitModel, _channels, bottleneck_units

PREACT_PREFIX = "preact_"


class PreActBottleneck(nn.Module):
    """BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (x4); projection shortcut on the pre-activated input."""

    expansion = 4

    def __init__(self, in_ch: int, mid_ch: int, stride: int):
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
        self.relu = nn.ReLU()
        self.active = True   # False: the block is left out of this (sub-)network: identity
        self.scale = 1.0     # multiplier of the residual branch (ResIST's test-time scaling)

    @property
    def identity_capable(self) -> bool:
        """Whether the block may be switched off (same shape in and out)."""
        return self.shortcut is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        out = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return shortcut + out * self.scale if self.scale != 1.0 else shortcut + out


def preact_resnet(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0,
                  stem: str = "cifar") -> UnitModel:
    """`preact_resnet50` / `preact_resnet101` / ...: the depths of bench.models.RESNET_STAGES."""
    stages = RESNET_STAGES[name.removeprefix(PREACT_PREFIX)]
    stem_ch = _channels(64, width)
    if stem == "imagenet":
        units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 7, stride=2, padding=3, bias=False),
                               nn.MaxPool2d(3, stride=2, padding=1))]
    else:
        units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 3, padding=1, bias=False))]
    blocks, block_names, block_layers, in_ch = bottleneck_units(PreActBottleneck, stages, stem_ch, width)
    units += blocks
    units.append(nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                               nn.Linear(in_ch, num_classes)))
    names, layers = ["stem"] + block_names + ["fc"], [1] + block_layers + [1]
    family = "resnet_imagenet" if stem == "imagenet" else "resnet"
    return UnitModel(name, family, nn.ModuleList(units), names, layers, width)


def partitionable_blocks(units) -> list[int]:
    """Positions (in the unit list) of the blocks ResIST partitions: the third section (conv4_*) without
    its first, strided block, which changes the shape and so cannot be left out. Sections are found by
    their projection blocks (conv2_1, conv3_1, conv4_1, conv5_1), so no unit names are needed."""
    out, section = [], 0
    for i, u in enumerate(units):
        if isinstance(u, PreActBottleneck):
            if not u.identity_capable:
                section += 1
            elif section == 3:
                out.append(i)
    return out
