"""A network as an ordered list of units, ready to be cut into layer groups.

A *unit* is the smallest piece a split may cut at: the stem, one residual block, one dense or LSTM
layer. The classifier is the last unit and always rides with the last group. Each unit records how
many weight layers it holds, which is what the paper's split rule balances.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class UnitModel:
    """A network as consecutive units; running them in order is the full forward pass."""

    name: str
    family: str  # "resnet", "resnet_imagenet", "mlp" or "lstm": decides the shape of critics, exits and synthesizers
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
