"""Backprop with joint early-exit losses (Table IV, BranchyNet-style).

Same structure as LCT: an exit head (shaped like a critic) after every group but the last. The
main loss and every exit's cross-entropy are summed with equal weights and backpropagated
through the whole network; heads are trained by SGD like the main network.
"""
from __future__ import annotations

import torch

from .base import Look, Option
from .bp import Backprop
from .registry import register_method


@register_method("joint")
class JointExits(Backprop):
    description = "backprop of main loss + early-exit losses (Table IV)"
    min_groups = 2
    options = {"head_lr": Option(None, "learning rate of the exit heads at step 0, following the run's schedule "
                                 "(default: the network's)", kind=float, minimum=0)}
    look = Look("BP+joint", "#7570b3", 50, suffix="K")

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self._attach_head()

    def set_step(self, step):
        super().set_step(step)
        if self.head is not None and self.opts["head_lr"] is not None:
            self.body_opt.param_groups[1]["lr"] = self.opts["head_lr"] * self.hyper.lr_at(step) / self.hyper.lr

    def forward(self, step, x, y):
        out = super().forward(step, x, y)
        if not self.ctx.is_last:
            self.exit_loss = self.ctx.per_sample_loss(self.head(self.out), y).mean()
            self.stats["exit_loss"] = self.exit_loss.detach()
        return out

    def _backpropagate(self, feedback) -> None:
        torch.autograd.backward([self._scaled(self.exit_loss), self.out],
                                [None, self._scaled(feedback).to(self.out.dtype)])
