"""Decoupled greedy local learning (Belilovsky, Eickenberg & Oyallon, ICML 2020), a.k.a. local parallelism
(Laskin et al. 2020, seeds/related-abstracts.txt): every group learns only from its own auxiliary head.

Group i < K has an auxiliary classifier a_i on its output h_i (the same shape as LCT's critic, so that
f_1..f_i + a_i is sub-model i). Per batch:
- forward: group i and its head are updated together, at once, by SGD on mean CE(a_i(h_i), y);
  h_i (detached: no gradient ever crosses a boundary) goes to the next group;
- the last group is trained by backprop of the main loss;
- backward: nothing. No group waits for anything from a later group, and nothing is sent back.
This is LCT without the critic cascade (LCT's c_i is trained to match l_{i+1}; a_i here is just a
classifier of h_i), so `greedy` vs `lct` at the same K shows what the cascade buys, with one more
difference: as in Belilovsky et al., the head learns with the group's optimiser (SGD, the run's lr schedule
and L2), where LCT's critics use Adam at 1e-4 without L2.
"""
from __future__ import annotations

import torch

from .registry import register_method
from .base import Backend, Feedback, GroupRule, Look


@register_method("greedy")
class GreedyLocal(GroupRule):
    description = "decoupled greedy learning: each group (and its head) follows only its own head's CE"
    feedback = Feedback.NONE
    updates_in_forward = True
    backend = Backend.STAGES
    local_gradients = True
    min_groups = 2
    look = Look("greedy", "#a6761d", 81)

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self._attach_head()  # the head is part of the sub-model: same optimiser, lr schedule and L2 as the group

    def forward(self, step, x, y):
        h = self.body(x.detach())  # the previous group's output arrives cut from its graph
        logits = h if self.ctx.is_last else self.head(h)
        loss = self.ctx.per_sample_loss(logits, y).mean()
        self.body_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.body_opt.step()
        self.stats["loss" if self.ctx.is_last else "head_ce"] = loss.detach()
        return None if self.ctx.is_last else h.detach()

    def backward(self, step, feedback):
        return None

    def local_grads(self, x, y):
        if self.ctx.is_last:
            return None
        loss = self.ctx.per_sample_loss(self.head(self.body(x)), y).mean()
        return list(torch.autograd.grad(loss, list(self.body.parameters())))
