"""Asynchronous model-parallel backprop (AMP; Gaunt et al. 2017, "AMPNet: Asynchronous Model-Parallel
Training for Dynamic Neural Networks", seeds/related-abstracts.txt; the asynchronous pipeline of PipeDream,
Narayanan et al. 2019): every group follows the true gradient of the main loss, applied when it arrives,
while the forwards of later batches go on with whatever weights the group holds.

Group i runs h_i^t = f_i(h_{i-1}^t; theta_i^{v(t)}), v(t) the weights it holds at the forward of batch t.
The gradient of batch t reaches it s_i(t) steps later (s_i(t) = forwards run in between, the staleness,
at most `max_stale`); it backpropagates
    g_i^t = d L^t / d theta_i,  evaluated at theta_i^{v(t)} (weight stashing) or at the weights held now,
sends d L^t / d h_{i-1}^t back, and every `min_update_frequency` gradients (AMPNet's minimum update
frequency) takes one step of its optimiser with their mean:  theta_i <- theta_i - lr * mean(g_i).
- `stash=True` (PipeDream's weight stashing): the backward uses the weights its forward saw, so the
  gradient is the true gradient at those weights, late. The forward's graph keeps a copy of every weight
  it saved (one copy per batch in flight; PipeDream's memory cost).
- `stash=False` (AMPNet): the backward uses the weights the group holds when the gradient arrives, with
  the activations of the forward: not the gradient of any one set of weights (PipeDream's objection).
  On the BatchNorm ResNets it diverges at our learning rates: BatchNorm's backward, with the statistics of
  the forward and weights that have moved, grew the gradient ~2-3x per residual block (smoke ResNet-50,
  lr 0.05: norm 150 at the first update, 2e7 at the second; a development check); the MLP trains.
  Autograd refuses a weight modified in place after it was saved; saved-tensor hooks hand it the live
  weight instead (and the BatchNorm running statistics, which a training-mode backward does not read);
  any other saved tensor keeps autograd's check (a forward whose activation changed raises).
- max_stale = 0: every group waits, which is backprop (tests/test_seed_methods.py checks the weights).
Where the delays come from:
- in process: a deterministic simulation (bench/exec/inprocess.py GroupChain): every group but the last
  gets the gradient of batch t after its forward of batch t + max_stale, the most the bound allows and
  what the overlapped stage schedule reaches when the groups run ahead (a balanced pipeline, PipeDream's
  1F1B steady state, would give group i min(max_stale, K-1-i)); phases end drained, as on real workers.
- on real workers: the stage backend's overlapped schedule (`--schedule overlapped --max-stale N`, equal
  to this option), where the gradient comes back when it comes; lockstep is max_stale = 0.
The staleness each group actually saw (counted per applied gradient, in forwards) goes into the record
(`group_stats`). Staleness is counted in steps, not updates: with min_update_frequency m, a gradient up
to max_stale steps late is up to ceil(max_stale / m) updates late. At the end of training a partly
accumulated update is not applied.
Assumption 1 is not measured: the gradient applied is the true one, only late; it has no local gradient
at the current weights to compare.
"""
from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from bench.models import IMAGE_MODELS

from .registry import register_method
from .base import Backend, Feedback, GroupRule, Look, Option


@register_method("asyncbp")
class AsyncBackprop(GroupRule):
    description = "asynchronous model-parallel backprop (AMPNet / PipeDream): true gradients applied late"
    feedback = Feedback.GRADIENT
    stale_feedback = True
    backend = Backend.STAGES
    loss_scaling = True
    supported_models = IMAGE_MODELS  # a late backward through a stateful LSTM's carried state: not tried
    min_groups = 2
    options = {
        "max_stale": Option(2, "most steps a gradient arrives after its forward (in process: exactly this, for "
                            "every group but the last; on real workers: --schedule overlapped --max-stale N)",
                            minimum=0),
        "min_update_frequency": Option(1, "gradients averaged into one update (AMPNet's minimum update frequency)",
                                       minimum=1),
        "stash": Option(True, "weight stashing: the backward uses the weights its forward saw (PipeDream)"),
    }
    look = Look("async BP", "#1f78b4", 65, suffix="K", short="async BP")

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # step -> (input leaf, output or loss)
        self.last_forward = -1
        self.accumulated = 0  # gradients in the body's .grad since the last update
        self.seen: dict[int, int] = {}  # staleness -> how many applied gradients had it

    @property
    def feedback_delay(self) -> int:
        return 0 if self.ctx.is_last else self.opts["max_stale"]

    def _saved(self) -> AbstractContextManager:
        """What the forward's graph keeps of a weight: a copy (stash) or the live weight (see the docstring)."""
        stash = self.opts["stash"]
        weights = {id(p) for p in self.body.parameters()}  # asked each time: moving to a device swaps buffers
        statistics = {id(b) for b in self.body.buffers()}

        def pack(t):
            base = t if t._base is None else t._base
            if id(base) in weights:
                return t.detach().clone() if stash else t
            return t if id(base) in statistics else (t, t._version)

        def unpack(saved):
            if not isinstance(saved, tuple):
                return saved
            t, version = saved
            if t._version != version:
                raise RuntimeError(f"asyncbp group {self.ctx.index}: a tensor the forward saved was modified in "
                                   f"place before its backward")
            return t

        return torch.autograd.graph.saved_tensors_hooks(pack, unpack)

    def forward(self, step, x, y):
        x = self._input(x)
        with self._saved():
            out = self.body(x)
            if self.ctx.is_last:
                out = self.ctx.per_sample_loss(out, y).mean()
                self.stats["loss"] = out.detach()
        self.pending[step] = (x, out)
        self.last_forward = step
        return None if self.ctx.is_last else out.detach()

    def backward(self, step, feedback):
        x, out = self.pending.pop(step)
        stale = self.last_forward - step
        self.seen[stale] = self.seen.get(stale, 0) + 1
        if self.accumulated == 0:
            self.body_opt.zero_grad(set_to_none=True)
        self._backward_from(out, feedback)  # the last group: out is its loss, feedback None
        self.accumulated += 1
        if self.accumulated == self.opts["min_update_frequency"]:
            for p in self.body.parameters():
                if p.grad is not None:
                    p.grad.div_(self.accumulated)
            self._step()
            self.accumulated = 0
        return None if self.ctx.is_first else self.scaling.unscaled(x.grad, self.body_opt)

    def extras(self) -> dict:
        n = sum(self.seen.values())
        if not n:
            return {}
        return {"staleness": {"mean": sum(s * c for s, c in self.seen.items()) / n, "max": max(self.seen),
                              "counts": {str(s): c for s, c in sorted(self.seen.items())}}}
