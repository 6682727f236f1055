"""Backprop with joint early-exit losses (Table IV, BranchyNet-style).

Same structure as LCT: an exit head (shaped like a critic) after every group but the last. The
main loss and every exit's cross-entropy are summed with equal weights and backpropagated
through the whole network; heads are trained by SGD like the main network.
"""
from __future__ import annotations

import torch

from . import register_method
from .base import Stage


@register_method("joint")
class JointExitStage(Stage):
    description = "backprop of main loss + early-exit losses (Table IV)"

    def __init__(self, ctx):
        super().__init__(ctx)
        self._attach_head()

    def forward(self, step, x, y):
        if self.ctx.is_last:
            self._last_forward(x, y)
            return None
        self.x = self._input(x)
        self.out = self.body(self.x)
        self.exit_loss = self.ctx.per_sample_loss(self.head(self.out), y).mean()
        self.stats["exit_loss"] = self.exit_loss.detach()
        return self.out.detach()

    def backward(self, step, feedback):
        if self.ctx.is_last:
            self._last_backward()
        else:
            self.body_opt.zero_grad(set_to_none=True)
            torch.autograd.backward([self.exit_loss, self.out], [None, feedback])
            self.body_opt.step()
        return self._input_grad()
