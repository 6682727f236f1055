"""Bottleneck ResNets as units (stem, one unit per block, classifier last): the paper's plain ResNets and
the pre-activation ResNets ResIST decomposes.

Plain (He et al. 2016): 1x1 reduce, 3x3, 1x1 expand (x4), projection shortcut where the shape changes;
ResNet-182 is the paper's "ten more bottleneck blocks in conv4 than ResNet-152".
Pre-activation (He et al. 2016, "Identity Mappings in Deep Residual Networks"; Dun et al.,
seeds/resist-paper.txt): a block computes x + scale * F(BN-ReLU-conv x3), with no activation after the
addition, so a block that is switched off (``active = False``) is exactly the identity and a shallower
sub-ResNet stays a valid network. ``scale`` multiplies the residual branch; ResIST sets it to the chance
that a sub-ResNet holds the block when the whole network is evaluated (stochastic-depth style activation
scaling). Same widths (64-128-256-512 x width, x4 expansion) and stems; the classifier unit starts with
the final BN-ReLU that pre-activation networks need.

A ResNet's four *sections* (conv2_* .. conv5_*) are runs of blocks at one resolution (He et al. call them
stages); the layer groups of a split are something else.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.errors import BenchError

from .unit import UnitModel

# Blocks per section of the bottleneck ResNets (He et al. 2016). ResNet-182 is the paper's
# "ten more bottleneck blocks in conv4 than ResNet-152" ([3, 8, 36, 3] -> [3, 8, 46, 3]).
RESNET_SECTIONS = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnet182": (3, 8, 46, 3),
    # the network of the authors' LCT_n3.py: ResNet-101 with 8 + 8 + 5 = 21 conv4 blocks (not 23)
    "resnet95": (3, 4, 21, 3),
}
CLASSIFIERS = ("pool", "flatten")  # global average pooling (He et al.), or the authors' flatten into the FC layer
PREACT_MODELS = ("preact_resnet50", "preact_resnet101", "preact_resnet95")


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
        self.changes_shape = stride != 1 or in_ch != out_ch
        self.shortcut = self._projection(in_ch, out_ch, stride) if self.changes_shape else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def project(self) -> None:
        """A projection shortcut even where the shape does not change (the authors' first block of a group)."""
        if not self.changes_shape:
            self.shortcut = self._projection(self.conv1.in_channels, self.conv3.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def bottleneck_units(block: type[nn.Module], sections: tuple[int, ...], in_ch: int, width: float
                     ) -> tuple[list[nn.Module], list[str], list[int], int]:
    """One unit per bottleneck block of `sections` (blocks per section), widths 64-128-256-512 x width, stride
    2 at the start of every section but the first: (units, names conv{section}_{block}, weight layers, out
    channels)."""
    units, names, layers = [], [], []
    for section, blocks in enumerate(sections):
        mid = _channels(64 * 2**section, width)
        for b in range(blocks):
            units.append(block(in_ch, mid, 2 if section > 0 and b == 0 else 1))
            in_ch = mid * block.expansion
            names.append(f"conv{section + 2}_{b + 1}")
            layers.append(3)
    return units, names, layers, in_ch


STEMS = ("cifar", "imagenet")


def resnet(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0, stem: str = "cifar",
           classifier: str = "pool", size: int = 32) -> UnitModel:
    """Bottleneck ResNet; widths 64-128-256-512 x width. Stem "cifar": 3x3 conv, no max-pool; stem
    "imagenet": 7x7/2 conv + 3x3/2 max-pool (He et al. 2016), and the ImageNet critic shape."""
    if stem not in STEMS:
        raise BenchError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
    sections = RESNET_SECTIONS[name]
    stem_ch = _channels(64, width)
    if stem == "imagenet":
        units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 7, stride=2, padding=3, bias=False),
                               nn.BatchNorm2d(stem_ch), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, stride=2, padding=1))]
    else:
        units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 3, padding=1, bias=False),
                               nn.BatchNorm2d(stem_ch), nn.ReLU(inplace=True))]
    blocks, block_names, block_layers, in_ch = bottleneck_units(Bottleneck, sections, stem_ch, width)
    units += blocks
    units.append(classifier_unit(in_ch, num_classes, classifier, final_size(size, stem), []))
    names, layers = ["stem"] + block_names + ["fc"], [1] + block_layers + [1]
    family = "resnet_imagenet" if stem == "imagenet" else "resnet"
    return UnitModel(name, family, nn.ModuleList(units), names, layers, width)


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
        self.changes_shape = stride != 1 or in_ch != out_ch
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if self.changes_shape else None
        self.relu = nn.ReLU()
        self.active = True   # False: the block is left out of this (sub-)network: identity
        self.scale = 1.0     # multiplier of the residual branch (ResIST's test-time scaling)

    @property
    def identity_capable(self) -> bool:
        """Whether the block may be switched off (same shape in and out, an identity shortcut)."""
        return self.shortcut is None

    def project(self) -> None:
        """A projection shortcut even where the shape does not change (the authors' first block of a group)."""
        if not self.changes_shape:
            self.shortcut = nn.Conv2d(self.conv1.in_channels, self.conv3.out_channels, 1, bias=False)

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
                  stem: str = "cifar", classifier: str = "pool", size: int = 32) -> UnitModel:
    """`preact_resnet50` / `preact_resnet101` / ...: the depths of RESNET_SECTIONS."""
    sections = RESNET_SECTIONS[name.removeprefix(PREACT_PREFIX)]
    stem_ch = _channels(64, width)
    if stem == "imagenet":
        units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 7, stride=2, padding=3, bias=False),
                               nn.MaxPool2d(3, stride=2, padding=1))]
    else:
        units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 3, padding=1, bias=False))]
    blocks, block_names, block_layers, in_ch = bottleneck_units(PreActBottleneck, sections, stem_ch, width)
    units += blocks
    units.append(classifier_unit(in_ch, num_classes, classifier, final_size(size, stem),
                                 [nn.BatchNorm2d(in_ch), nn.ReLU()]))
    names, layers = ["stem"] + block_names + ["fc"], [1] + block_layers + [1]
    family = "resnet_imagenet" if stem == "imagenet" else "resnet"
    return UnitModel(name, family, nn.ModuleList(units), names, layers, width)


def partitionable_blocks(units) -> list[int]:
    """Positions (in the unit list) of the blocks ResIST partitions: the third section (conv4_*) without
    its first, strided block, which changes the shape and so cannot be left out. Sections are found by
    their shape-changing blocks (conv2_1, conv3_1, conv4_1, conv5_1), so no unit names are needed."""
    out, section = [], 0
    for i, u in enumerate(units):
        if isinstance(u, PreActBottleneck):
            if u.changes_shape:
                section += 1
            elif section == 3 and u.identity_capable:
                out.append(i)
    return out


def final_size(size: int, stem: str) -> int:
    """Side of the last section's feature map for an input of `size` pixels (stride-2 3x3 convs, padded,
    give ceil(size / 2); the ImageNet stem halves twice more)."""
    for _ in range(3 + (2 if stem == "imagenet" else 0)):
        size = (size + 1) // 2
    return size


def classifier_unit(in_ch: int, num_classes: int, how: str, side: int, pre: list[nn.Module]) -> nn.Module:
    """The classifier unit: `pre` (the pre-activation ResNets' final BN-ReLU), then global average pooling and
    the FC layer, or (the authors' code) the whole side x side map flattened into the FC layer."""
    if how == "flatten":
        return nn.Sequential(*pre, nn.Flatten(), nn.Linear(in_ch * side * side, num_classes))
    return nn.Sequential(*pre, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes))
