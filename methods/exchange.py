"""Methods whose step is, group by group, either a neighbour exchange or a serial pass: the base of `auxnet`.

Each group k has a *share* of the step (`Share`), the same code in process and on real workers
(bench/exec/exchange.py runs one share per worker):
- a parallel step (`serial(step)` False): every share computes what it sends to its two neighbours from
  the batch alone (`outgoing`), the messages cross every boundary at once, then every share updates on its
  own from what it received (`update`). No group waits for a chain of other groups.
- a serial step (`serial(step)` True): backprop through the chain, `forward` from the first group to the
  last (each gets the previous group's activation), then `backward` from the last to the first (each gets
  the gradient of the main loss w.r.t. its output).
Every message, either way, has the shape of the boundary activation it crosses (a batch of it).
In process, `ExchangeMethod.step` routes the messages between the K shares; all shares compute their
outgoing messages before any updates, so both executors compute the same numbers.
"""
from __future__ import annotations

import torch

from .base import Backend, GroupContext, WholeStepRule


class Share:
    """Group k's share of a step (a subclass defines the rule)."""

    def __init__(self, ctx: GroupContext):
        self.ctx = ctx
        self.is_first, self.is_last = ctx.is_first, ctx.is_last
        self.loss: torch.Tensor | None = None  # the last group's: the step's loss for the record

    # parallel steps
    def outgoing(self, step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(to the previous group, to the next group) from the batch; None where there is no neighbour."""
        raise NotImplementedError

    def update(self, step: int, x: torch.Tensor, y: torch.Tensor, from_prev: torch.Tensor | None,
               from_next: torch.Tensor | None) -> None:
        raise NotImplementedError

    # serial steps
    def forward(self, step: int, x: torch.Tensor, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """h: the previous group's activation (x at the first); -> the activation for the next (None at the last)."""
        raise NotImplementedError

    def backward(self, step: int, grad: torch.Tensor | None) -> torch.Tensor | None:
        """grad: d loss / d output (None at the last); -> d loss / d input (None at the first)."""
        raise NotImplementedError

    def extras(self) -> dict:
        """This share's own facts for the record (every worker's are gathered)."""
        return {}


class ExchangeMethod(WholeStepRule):
    """A whole-step rule made of K shares (`self.shares`, built by the subclass)."""

    backend = Backend.EXCHANGE
    shares: list[Share]

    @staticmethod
    def is_serial(options: dict, step: int) -> bool:
        """Whether `step` is a serial pass, from the resolved options alone (every share, every worker and the cost
        model ask the same)."""
        raise NotImplementedError

    def serial(self, step: int) -> bool:
        return self.is_serial(self.opts, step)

    def step(self, step, x, y):
        self.set_lr(step)
        shares = self.shares
        if self.serial(step):
            h = x
            for s in shares:
                h = s.forward(step, x, h, y)
            grad = None
            for s in reversed(shares):
                grad = s.backward(step, grad)
        else:
            sent = [s.outgoing(step, x, y) for s in shares]
            for k, s in enumerate(shares):
                s.update(step, x, y, sent[k - 1][1] if k > 0 else None, sent[k + 1][0] if k + 1 < len(shares) else None)
        return shares[-1].loss

    def extras(self) -> dict:
        return self.merge([s.extras() for s in self.shares])

    def merge(self, facts: list[dict]) -> dict:
        """The record's facts from every share's own (in process, or gathered from the workers)."""
        return {}
