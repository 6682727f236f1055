"""Decoupled neural interfaces with synthetic gradients (Jaderberg et al. 2017), and cDNI.

Group i < K has a synthesizer M_i that predicts dL/dh_i from h_i (cDNI: and the label).
- forward: the group is updated at once with h_i.backward(M_i(h_i)); the gradient this leaves on
  the group's input, J^T M_i(h_i), is what the previous group's synthesizer learns from
  (bootstrapping); h_i goes to the next group.
- backward: when the next group sends dL/dh_i (its bootstrapped input gradient, the true one
  from the last group), M_i is trained by Adam on the squared error between its prediction and that
  target: per sample the squared norm, averaged over the batch, as Jaderberg et al. and dni-pytorch
  (whose update is 2/B (M(h) - target)); `synth_loss=element` takes the mean over every element instead
  (F.mse_loss), B*C*H*W times smaller, which with Adam at 1e-4 leaves the first gradients (~1e-8) at
  Adam's epsilon.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.models.heads import Synthesizer

from .registry import register_method
from .base import L2_OPTION, Backend, Feedback, GroupRule, Look, Option


@register_method("dni")
class SyntheticGradient(GroupRule):
    description = "DNI: groups follow synthetic gradients, synthesizers regress the next group's gradient"
    feedback = Feedback.GRADIENT
    updates_in_forward = True
    backend = Backend.STAGES
    local_gradients = True
    loss_scaling = True
    min_groups = 2
    options = {"l2": L2_OPTION,
               "synth_loss": Option("sample", "the synthesizer's regression: sample = squared norm per sample, "
                                    "mean over the batch (DNI, dni-pytorch); element = mean over every element",
                                    choices=("sample", "element"))}
    look = Look("DNI", "#d95f02", 20, suffix="n")
    condition_on_labels = False

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if not ctx.is_last:
            self.synth = Synthesizer(ctx.family, ctx.out_shape, ctx.num_classes, self.condition_on_labels,
                                     ctx.width)
            self.synth_opt = torch.optim.Adam(self.synth.parameters(), lr=ctx.hyper.aux_lr)
            if options["l2"] == "authors":
                self._authors_l2()

    def modules(self):
        mods = super().modules()
        if not self.ctx.is_last:
            mods["synth"] = self.synth
        return mods

    def optimizers(self):
        opts = super().optimizers()
        if not self.ctx.is_last:
            opts["synth"] = self.synth_opt
        return opts

    def forward(self, step, x, y):
        if self.ctx.is_last:
            self._last_forward(x, y)
            return None
        self.x = self._input(x)
        h = self.body(self.x)
        synthetic = self.synth(h.detach(), y)
        self.body_opt.zero_grad(set_to_none=True)
        self._backward_from(h, synthetic.detach())
        if self.opts["l2"] == "authors":
            self.scaling.unscale_(self.body_opt)
            self._add_authors_l2(synthetic)
        self._step()
        self.pending[step] = (synthetic, self._input_grad())
        return h.detach()

    def backward(self, step, feedback):
        if self.ctx.is_last:
            self._last_backward()
            return self._input_grad()
        synthetic, input_grad = self.pending.pop(step)
        if self.opts["synth_loss"] == "element":
            synth_loss = F.mse_loss(synthetic, feedback.detach())
        else:
            synth_loss = (synthetic - feedback.detach()).pow(2).flatten(1).sum(1).mean()
        self.synth_opt.zero_grad(set_to_none=True)
        self._scaled(synth_loss, self.synth_opt).backward()
        self._step(self.synth_opt)
        self.stats["synth_mse"] = synth_loss.detach()
        return input_grad

    def local_grads(self, x, y):
        if self.ctx.is_last:
            return None
        h = self.body(x)
        with torch.no_grad():
            synthetic = self.synth(h, y)
        return list(torch.autograd.grad(h, list(self.body.parameters()), grad_outputs=synthetic))


@register_method("cdni")
class ConditionedSyntheticGradient(SyntheticGradient):
    description = "cDNI: DNI whose synthesizers also see the one-hot label"
    look = Look("cDNI", "#e6ab02", 30, suffix="n")
    condition_on_labels = True
