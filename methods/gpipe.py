"""Pipelined backprop (GPipe, Huang et al. 2019): the batch is cut into m micro-batches.

Every group runs each micro-batch separately (so BatchNorm normalises per micro-batch, as in a
real pipeline), backpropagates each micro-batch's mean loss on its own, accumulates the gradients
and divides them by m before one update: the gradient of the batch's mean loss, computed as
torch.distributed.pipelining computes it (feedback between groups is the sum over micro-batches,
each group scales its own gradients). This is the in-process rule; on the distributed executor the
same stages run under PipelineStage + ScheduleGPipe (or Schedule1F1B), which overlaps the
micro-batches of different groups. Option `microbatches` (default 4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.models import IMAGE_MODELS

from . import register_method
from .bp import BackpropStage


@register_method("gpipe")
class GPipeStage(BackpropStage):
    description = "pipelined backprop (GPipe): m micro-batches, gradients accumulated"
    supported_models = IMAGE_MODELS  # a stateful LSTM cannot be cut into micro-batches

    def __init__(self, ctx):
        super().__init__(ctx)
        self.microbatches = int(ctx.options.get("microbatches", 4))

    def _chunks(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(t) % self.microbatches:
            raise BenchError(f"gpipe: batch of {len(t)} is not divisible into {self.microbatches} micro-batches")
        return t.chunk(self.microbatches)

    def forward(self, step, x, y):
        self.x = self._input(x)
        self.outs = [self.body(c) for c in self._chunks(self.x)]
        if not self.ctx.is_last:
            return torch.cat(self.outs).detach()
        self.losses = [F.cross_entropy(o, t) for o, t in zip(self.outs, self._chunks(y))]
        self.stats["loss"] = torch.stack(self.losses).detach().mean()
        return None

    def backward(self, step, feedback):
        self.body_opt.zero_grad(set_to_none=True)
        grads = [None] * self.microbatches if self.ctx.is_last else self._chunks(feedback)
        for out, grad in zip(self.losses if self.ctx.is_last else self.outs, grads):
            out.backward(grad)  # one micro-batch at a time, like the pipeline
        for p in self.body.parameters():
            if p.grad is not None:
                p.grad.div_(self.microbatches)
        self.body_opt.step()
        return self._input_grad()
