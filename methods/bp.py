"""Backprop (BP): each group waits for the gradient of the main loss w.r.t. its output.

Split into K groups and run in lockstep this is exactly autograd on the whole network; on real
workers it is the naive model-parallel baseline (one group busy at a time).
"""
from __future__ import annotations

from .registry import register_method
from .base import Backend, Feedback, GroupRule, Look


@register_method("bp")
class Backprop(GroupRule):
    description = "backprop of the main loss (the reference)"
    feedback = Feedback.GRADIENT
    backend = Backend.STAGES
    loss_scaling = True
    look = Look("BP", "#222222", 0)

    def forward(self, step, x, y):
        if self.ctx.is_last:
            self._last_forward(x, y)
            return None
        self.x = self._input(x)
        self.out = self.body(self.x)
        return self.out.detach()

    def backward(self, step, feedback):
        if self.ctx.is_last:
            self._last_backward()
        else:
            self.body_opt.zero_grad(set_to_none=True)
            self._backpropagate(feedback)
            self._step()
        return self._input_grad()

    def _backpropagate(self, feedback) -> None:
        """The group's gradient, given the gradient of the main loss w.r.t. its output."""
        self._backward_from(self.out, feedback)
