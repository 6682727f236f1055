"""Cut a UnitModel into K consecutive layer groups.

Two rules:
- ``paper``: the stem and the residual blocks are the units a group counts; the first K-1 groups
  get floor(U/K) units each and the last group takes the rest plus the classifier. With
  ResNet-101 and K=4 this is exactly the authors' LCT_n3 split (LCT_n3.py): stem+conv2+conv3
  (7 blocks) | 8 conv4 blocks | 8 conv4 blocks | 7 conv4 blocks + conv5 + fc. (Their LCT_n1.py
  cuts ResNet-101 one block later than this rule, after conv4_10; every bottleneck block costs
  the same FLOPs, so the difference is one block in 33.)
- ``balanced``: minimise the most expensive group, cost = forward FLOPs of the group's units
  plus those of the head placed after it (critic, exit or synthesizer), measured with
  torch.utils.flop_counter on one sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import BenchError
from .models import UnitModel

SPLIT_RULES = ("paper", "balanced")


@dataclass
class Split:
    """Group k holds units[bounds[k]:bounds[k+1]]."""

    bounds: list[int]

    @property
    def sizes(self) -> list[int]:
        return [b - a for a, b in zip(self.bounds, self.bounds[1:])]

    def groups(self, model: UnitModel) -> list[nn.Sequential]:
        return [nn.Sequential(*model.units[a:b]) for a, b in zip(self.bounds, self.bounds[1:])]

    def names(self, model: UnitModel) -> list[list[str]]:
        return [model.unit_names[a:b] for a, b in zip(self.bounds, self.bounds[1:])]


def check_groups(model: UnitModel, k: int) -> None:
    """One-line error for a split that cannot exist (before anything is built or written)."""
    cuttable = len(model.units) - 1  # the classifier never stands alone
    if k < 1:
        raise BenchError(f"--groups must be >= 1, got {k}")
    if k > cuttable:
        raise BenchError(f"{model.name} has {cuttable} blocks to split; cannot make {k} groups")


def paper_split(model: UnitModel, k: int) -> Split:
    check_groups(model, k)
    cuttable = len(model.units) - 1
    per = cuttable // k
    return Split([per * i for i in range(k)] + [len(model.units)])


def unit_flops(model: UnitModel, input_shape: tuple[int, ...]) -> tuple[list[int], list[tuple[int, ...]]]:
    """Forward FLOPs of each unit on one sample, and each unit's output shape (without batch)."""
    flops, shapes = [], []
    x = torch.zeros(1, *input_shape)
    was_training = [u.training for u in model.units]
    with torch.no_grad():
        for unit in model.units:
            unit.eval()
            with FlopCounterMode(display=False) as counter:
                x = unit(x)
            flops.append(counter.get_total_flops())
            shapes.append(tuple(x.shape[1:]))
    for unit, mode in zip(model.units, was_training):
        unit.train(mode)
    return flops, shapes


def module_flops(module: nn.Module, in_shape: tuple[int, ...], *extra: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, *in_shape), *extra)
    return counter.get_total_flops()


def balanced_split(model: UnitModel, k: int, input_shape: tuple[int, ...],
                   head_for: Callable[[tuple[int, ...]], nn.Module] | None = None) -> Split:
    """Contiguous partition minimising the largest group cost (dynamic programme over cuts)."""
    check_groups(model, k)
    flops, shapes = unit_flops(model, input_shape)
    n = len(model.units)
    # cost of the head that would sit after unit j-1 (a group ending at j, for j < n)
    head_cost = [0] * (n + 1)
    if head_for is not None:
        for j in range(1, n):
            head_cost[j] = module_flops(head_for(shapes[j - 1]), shapes[j - 1])
    prefix = [0]
    for f in flops:
        prefix.append(prefix[-1] + f)

    def cost(a: int, b: int) -> int:
        return prefix[b] - prefix[a] + (head_cost[b] if b < n else 0)

    inf = float("inf")
    # best[g][b]: smallest max-cost covering units[:b] with g groups; the last group must own the classifier
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for g in range(1, k + 1):
        for b in range(g, n + 1):
            for a in range(g - 1, b):
                if g == k and (b != n or a > n - 2):  # last group: to the end, never the classifier alone
                    continue
                value = max(best[g - 1][a], cost(a, b))
                if value < best[g][b]:
                    best[g][b], cut[g][b] = value, a
    bounds = [n]
    for g in range(k, 0, -1):
        bounds.append(cut[g][bounds[-1]])
    bounds.reverse()
    return Split(bounds)


def make_split(rule: str, model: UnitModel, k: int, input_shape: tuple[int, ...],
               head_for: Callable[[tuple[int, ...]], nn.Module] | None = None) -> Split:
    if rule == "paper":
        return paper_split(model, k)
    if rule == "balanced":
        return balanced_split(model, k, input_shape, head_for)
    raise BenchError(f"unknown split rule {rule!r}; valid rules: {', '.join(SPLIT_RULES)}")
