"""The shape shared by the locally supervised rules (greedy / DGL, InfoPro): group i < K follows a loss of its
own, computed from its output h_i by modules that learn with it (its optimiser, lr schedule and L2), and the
last group follows the main loss. Per batch:
- forward: h_i = f_i(x_i) with x_i cut from the previous group's graph; the group and its modules are updated
  at once by SGD on `local_loss(h_i, y)` (the last group: the main cross-entropy); h_i, detached, goes on;
- backward: nothing. No group waits for anything from a later group, and nothing is sent back.
A subclass defines `local_loss`.
"""
from __future__ import annotations

import torch

from .base import Backend, Feedback, GroupRule


class LocallySupervised(GroupRule):
    feedback = Feedback.NONE
    updates_in_forward = True
    backend = Backend.STAGES
    local_gradients = True
    loss_scaling = True
    min_groups = 2

    def local_loss(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Group i's loss of its output h, and the terms to record (detached by the caller)."""
        raise NotImplementedError

    def forward(self, step, x, y):
        h = self.body(x.detach())  # the previous group's output arrives cut from its graph
        if self.ctx.is_last:
            loss, terms = self.ctx.per_sample_loss(h, y).mean(), {}
            self.stats["loss"] = loss.detach()
        else:
            loss, terms = self.local_loss(h, y)
        self.stats.update({k: v.detach() for k, v in terms.items()})
        self.body_opt.zero_grad(set_to_none=True)
        self._scaled(loss).backward()
        self._step()
        return None if self.ctx.is_last else h.detach()

    def backward(self, step, feedback):
        return None

    def local_grads(self, x, y):
        if self.ctx.is_last:
            return None
        return list(torch.autograd.grad(self.local_loss(self.body(x), y)[0], list(self.body.parameters())))
