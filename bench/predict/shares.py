"""What the shares of an exchange-backend method (methods/exchange.py: auxnet) cost besides their groups'
bodies, at every boundary: the calibration's part for the exchange backend.

A share's four calls (PARTS) are timed, like a stage rule's boundary costs, on stand-in bodies that cost next to
nothing: at boundary j the method is built for two groups, the first one's body returning unit j's real
activation and the second one's body returning logits (both pass a zero gradient back to their input, so every
gradient the share takes exists). What the first share spends is the cost of a group whose output boundary is
j (`before`: its local loss against the next group's message), what the second spends that of a group whose
input boundary is j (`after`: for auxnet, its AuxNet's forward and fit). A middle group of K > 2 is charged
both sides; the stand-ins' own work (an optimiser step over one weight, a product) is included, tens of
microseconds per call, and so is the last share's loss on the stand-in logits.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Callable

import torch
from torch import nn

from methods import Backend

from ..models.split import clock

PARTS = ("outgoing", "update", "forward", "backward")  # parallel step: two calls; serial step: two calls
REPS = 5  # passes per boundary (their mean counts), after one warm-up


@dataclass
class ShareCosts:
    """One exchange method's share costs at every boundary j (after unit j, j < units - 1): seconds per part."""

    before: list[dict[str, float]]  # the group whose output boundary is j
    after: list[dict[str, float]]   # the group whose input boundary is j

    def extra_s(self, part: str, a: int, b: int, units: int) -> float:
        """Group [a, b)'s seconds of `part` besides its body: its output side (unless it is last) and its input
        side (unless it is first)."""
        return (self.before[b - 1][part] if b < units else 0.0) + (self.after[a - 1][part] if a > 0 else 0.0)


class _StandIn(nn.Module):
    """A body that returns `out` (a real activation, or logits) for next to no work, with a zero gradient to its
    input; `out` is no buffer, so a share that saves and restores its body's buffers has none to copy."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(torch.ones((), device=out.device))
        self.out = out

    def forward(self, z):
        return self.out * self.w + z.mean() * 0


def _one_pass(shares, step: int, x, y, device) -> list[dict[str, float]]:
    """A parallel step and then a serial step of the two shares, as the exchange workers run them; each call
    timed."""
    first, second = shares
    times: list[dict[str, float]] = [{}, {}]

    def timed(k, part, call, *args):
        t0 = clock(device)
        out = call(*args)
        times[k][part] = clock(device) - t0
        return out

    _, h = timed(0, "outgoing", first.outgoing, step, x, y)
    z, _ = timed(1, "outgoing", second.outgoing, step, x, y)
    timed(0, "update", first.update, step, x, y, None, z)
    timed(1, "update", second.update, step, x, y, h, None)
    h = timed(0, "forward", first.forward, step, x, x, y)
    timed(1, "forward", second.forward, step, x, h, y)
    grad = timed(1, "backward", second.backward, step, None)
    timed(0, "backward", first.backward, step, grad)
    return times


def share_costs(method, activations: list[torch.Tensor], logits: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor],
                context_for: Callable, reps: int = REPS) -> ShareCosts:
    """The method's two shares at each boundary's real activation (the module docstring)."""
    x, y = batch
    data_shape = tuple(x.shape[1:])
    before, after = [], []
    for a in activations:
        shape = tuple(a.shape[1:])
        groups = [context_for(0, 2, _StandIn(a), data_shape, shape), context_for(1, 2, _StandIn(logits), shape, None)]
        rule = method(groups, method.resolve_options({}))
        for part in rule.parts:
            for m in part.values():
                m.to(x.device)
        passes = [_one_pass(rule.shares, rep, x, y, x.device) for rep in range(reps + 1)][1:]
        mean = [{p: fmean(t[k][p] for t in passes) for p in PARTS} for k in (0, 1)]
        before.append(mean[0])
        after.append(mean[1])
    return ShareCosts(before, after)


def exchange_methods(methods: list) -> list:
    """The methods run by the exchange backend: the ones with share costs."""
    return [m for m in methods if m.backend is Backend.EXCHANGE]
