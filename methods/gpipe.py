"""Pipelined backprop (GPipe, Huang et al. 2019): the batch is cut into m micro-batches.

Every group runs each micro-batch separately (so BatchNorm normalises per micro-batch, as in a
real pipeline), backpropagates each micro-batch's mean loss on its own, accumulates the gradients
and divides them by m before one update: the gradient of the batch's mean loss, computed as
torch.distributed.pipelining computes it (feedback between groups is the sum over micro-batches,
each group scales its own gradients). This is the in-process rule; on real workers the same groups
run under PipelineStage and the schedule named by the `schedule` option, which overlaps the
micro-batches of different groups: any schedule the installed torch has (bench/exec/pp_schedules.py;
torch 2.13: gpipe, 1f1b, and the multi-stage interleaved1f1b, loopedbfs, interleavedzerobubble,
zbvzerobubble, dualpipev, which run `stages_per_rank` groups on each of K / stages_per_rank workers).
Every schedule computes the same gradients; only the order of the micro-batches' passes differs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.exec import pp_schedules
from bench.models import IMAGE_MODELS

from .registry import register_method
from .base import Backend, Look, Option
from .bp import Backprop


@register_method("gpipe")
class GPipe(Backprop):
    description = "pipelined backprop (GPipe): m micro-batches, gradients accumulated"
    backend = Backend.PIPELINING
    supported_models = IMAGE_MODELS  # a stateful LSTM cannot be cut into micro-batches
    options = {
        "microbatches": Option(4, "micro-batches per batch (--microbatches)", minimum=1),
        "schedule": Option("gpipe", "torch.distributed.pipelining schedule on real workers (--pp-schedule): gpipe, "
                                    "1f1b, interleaved1f1b, loopedbfs, interleavedzerobubble, zbvzerobubble, dualpipev, "
                                    "... as this torch has them"),
        "stages_per_rank": Option(None, "groups (pipeline stages) per worker: 1 for gpipe and 1f1b, 2 by default for "
                                        "the multi-stage schedules", kind=int, minimum=1),
    }
    look = Look("pipelined BP (GPipe)", "#e7298a", 60, suffix="K", short="GPipe")

    @classmethod
    def check(cls, model, groups, batch_size, options):
        super().check(model, groups, batch_size, options)
        if batch_size % options["microbatches"]:
            raise BenchError(f"gpipe: batch of {batch_size} is not divisible into {options['microbatches']} "
                             f"micro-batches")
        pp_schedules.check_name(options["schedule"])  # the shape is checked for real workers (bench/exec/pipelining.py)

    def _chunks(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return t.chunk(self.opts["microbatches"])

    def forward(self, step, x, y):
        self.x = self._input(x)
        self.outs = [self.body(c) for c in self._chunks(self.x)]
        if not self.ctx.is_last:
            return torch.cat(self.outs).detach()
        self.losses = [F.cross_entropy(o, t) for o, t in zip(self.outs, self._chunks(y))]
        self.stats["loss"] = torch.stack(self.losses).detach().mean()
        return None

    def backward(self, step, feedback):
        m = self.opts["microbatches"]
        self.body_opt.zero_grad(set_to_none=True)
        grads = [None] * m if self.ctx.is_last else self._chunks(feedback)
        for out, grad in zip(self.losses if self.ctx.is_last else self.outs, grads):
            self._backward_from(out, grad)  # one micro-batch at a time, like the pipeline
        for p in self.body.parameters():
            if p.grad is not None:
                p.grad.div_(m)
        self._step()
        return self._input_grad()
