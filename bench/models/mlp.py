"""Table III's dense 300-150-10 network with ReLU."""
from __future__ import annotations

from torch import nn

from .unit import UnitModel

MLP_WIDTHS = (300, 150)


def mlp(num_classes: int, in_features: int) -> UnitModel:
    """The input is flattened in the first unit."""
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
