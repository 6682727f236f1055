"""Local critic training (Lee, Hsieh & Lee, TNNLS 2022).

Group i < n+1 has a critic c_i on its output h_i; l_i = CE(c_i(h_i), y) per sample.
- forward: the group is updated at once with d mean(l_i) / d theta_i, the gradient passing
  through c_i into h_i without touching c_i's weights; h_i (pre-update) goes to the next group.
- backward: when l_{i+1} arrives from the next group (its critic's per-sample loss, or the main
  loss at the last group), c_i is trained by Adam on mean |l_i - l_{i+1}| over its own weights.
  Nothing crosses a boundary but h_i forward and a loss vector back.
The last group is trained by ordinary backprop of the main loss and sends its per-sample loss.
"""
from __future__ import annotations

import torch

from .registry import register_method
from .base import L2_OPTION, Backend, Feedback, GroupRule, Look


@register_method("lct")
class LocalCritic(GroupRule):
    description = "local critic training: groups follow their critic's loss, critics follow the next loss"
    feedback = Feedback.LOSS
    updates_in_forward = True
    backend = Backend.STAGES
    local_gradients = True
    loss_scaling = True
    min_groups = 2
    options = {"l2": L2_OPTION}
    look = Look("LCT", "#1b9e77", 40, suffix="n")

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self.pending: dict[int, torch.Tensor] = {}  # step -> l_i with its graph through c_i
        if not ctx.is_last:
            self.head = ctx.head_factory(ctx.out_shape)
            self.head_opt = torch.optim.Adam(self.head.parameters(), lr=ctx.hyper.aux_lr)
            if options["l2"] == "authors":
                self._authors_l2()

    def optimizers(self):
        opts = super().optimizers()
        if self.head is not None:
            opts["head"] = self.head_opt
        return opts

    def forward(self, step, x, y):
        if self.ctx.is_last:
            self._last_forward(x, y)
            return None
        h = self.body(x)
        h_cut = h.detach().requires_grad_(True)  # the critic's graph starts here: its loss cannot reach the body
        loss_vec = self.ctx.per_sample_loss(self.head(h_cut), y)
        (grad_h,) = torch.autograd.grad(self._scaled(loss_vec.mean()), h_cut, retain_graph=True)  # critic untouched
        self.body_opt.zero_grad(set_to_none=True)
        h.backward(grad_h)
        if self.opts["l2"] == "authors":
            self.scaling.unscale_(self.body_opt)
            self._add_authors_l2(self.scaling.unscaled(grad_h, self.body_opt))
        self._step()
        self.pending[step] = loss_vec
        self.stats["critic_ce"] = loss_vec.detach().mean()
        return h.detach()

    def backward(self, step, feedback):
        if self.ctx.is_last:
            self._last_backward()
            return self.loss_vec.detach()
        loss_vec = self.pending.pop(step)
        critic_loss = (loss_vec - feedback.detach()).abs().mean()
        self.head_opt.zero_grad(set_to_none=True)
        self._scaled(critic_loss, self.head_opt).backward()
        self._step(self.head_opt)
        self.stats["critic_l1"] = critic_loss.detach()
        return None if self.ctx.is_first else loss_vec.detach()

    def local_grads(self, x, y):
        if self.ctx.is_last:
            return None
        loss = self.ctx.per_sample_loss(self.head(self.body(x)), y).mean()
        return list(torch.autograd.grad(loss, list(self.body.parameters())))
