"""The pipelining backend: pipelined backprop under torch.distributed.pipelining (PipelineStage and the
schedule the method's `schedule` option names, any of bench/exec/pp_schedules.py), K layer groups as K
pipeline stages: one per worker, or `stages_per_rank` per worker for the multi-stage schedules, placed as
torch expects (looped, or in a V).

A method run by this backend declares three options: `microbatches`, `schedule` and `stages_per_rank`. Its
rules are used for their groups' bodies and optimisers; torch's schedule does the forward and backward
passes of every micro-batch. The loss is the mean cross-entropy of each micro-batch (image models only).

Precision: bf16 runs under the loop's autocast, every boundary tensor (activation forward, gradient back)
crossing as bf16. fp16 is refused: the schedule runs the backward itself, so a GradScaler cannot scale the
loss before it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.pipelining import PipelineStage

from ..errors import BenchError
from . import pp_schedules
from .engine import WorkerEngine
from .meter import Meter


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


class _Wire(nn.Module):
    """A stage's body whose output is what its receiver allocated: the wire dtype (under autocast a group's
    last op may compute in either), contiguous (a channels_last activation too). The cast's backward casts
    the gradient that comes back; in fp32 both are no-ops."""

    def __init__(self, body: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.body, self.dtype = body, dtype

    def forward(self, x):
        return self.body(x).to(self.dtype).contiguous()


class PipelineWorkers(WorkerEngine):

    @classmethod
    def schedule_name(cls, dcfg, options):
        v = pp_schedules.stages_per_rank(options["schedule"], options["stages_per_rank"])
        return f"{options['schedule']}-m{options['microbatches']}" + (f"-v{v}" if v > 1 else "")

    own_schedule = "micro-batches"

    @classmethod
    def validate(cls, cfg, dcfg, method, options):
        super().validate(cfg, dcfg, method, options)
        if cfg.precision == "fp16":
            raise BenchError(f"{cfg.method} on real workers runs torch.distributed.pipelining's schedule, which runs "
                             f"the backward itself, so fp16 loss scaling cannot go in: use --precision bf16")
        pp_schedules.check(options["schedule"], cfg.groups, options["microbatches"], options["stages_per_rank"])

    @classmethod
    def workers(cls, cfg, options):
        return cfg.groups // pp_schedules.stages_per_rank(options["schedule"], options["stages_per_rank"])

    def setup(self) -> None:
        rules, opts = self.trainer.rules, self.trainer.rules[0].opts
        name, m = opts["schedule"], opts["microbatches"]
        self.own = pp_schedules.placement(name, len(rules), self.world)[self.rank]
        self.rules = [rules[i] for i in self.own]
        for rule in self.rules:
            self.place(rule.modules())
        stages = [self._stage(i, self.cfg.batch_size // m) for i in self.own]
        schedule = pp_schedules.available()[name]
        self.first, self.last = rules[0] in self.rules, rules[-1] in self.rules
        self.schedule = (schedule(stages, m, loss_fn=_loss) if pp_schedules.is_multi(name)
                         else schedule(stages[0], m, loss_fn=_loss))
        instrument(self.meter)

    def _stage(self, i: int, mb: int) -> PipelineStage:
        """Group i as a pipeline stage with static shapes: without them PipelineStage infers shapes by running
        the group on placeholder tensors in train mode, which put NaN into BatchNorm running statistics."""
        rules, wire = self.trainer.rules, self.run.wire_dtype
        ctx = rules[i].ctx
        example_in = (self.run.stream.batch(0)[0][:mb].to(self.device) if i == 0  # the input's own dtype
                      else torch.empty(mb, *rules[i - 1].ctx.out_shape, dtype=wire, device=self.device,
                                       requires_grad=True))
        if ctx.is_last:  # the logits go to the loss, not over a wire
            body, example_out = rules[i].body, torch.empty(mb, self.run.data.num_classes, device=self.device)
        else:
            body, example_out = _Wire(rules[i].body, wire), torch.empty(mb, *ctx.out_shape, dtype=wire,
                                                                        device=self.device)
        return PipelineStage(body, i, len(rules), self.device, group=self.comms.fwd,
                             input_args=example_in, output_args=example_out.requires_grad_())

    def steps(self, start, end, on_step):
        for step in range(start, end):
            x, y = self.run.stream.batch(step)
            waited = self.meter.wait_s
            with self.clock.region("forward"):
                for rule in self.rules:
                    rule.set_step(step)
                    rule.body_opt.zero_grad(set_to_none=True)
                args = (x.to(self.device),) if self.first else ()
                if self.last:
                    losses: list[torch.Tensor] = []
                    self.schedule.step(*args, target=y.to(self.device), losses=losses, return_outputs=False)
                    self.track(torch.stack(losses).mean())
                else:
                    self.schedule.step(*args)
                for rule in self.rules:
                    rule.body_opt.step()
            # forward and backward interleave: all compute counted as forward; the p2p waits are communication
            self.clock.add("forward", -(self.meter.wait_s - waited))
            on_step()
        self.meter.flush()

    def calibrate(self):
        if len(self.own) > 1:  # boundaries are not worker to worker: not estimated
            return None
        rules, b = self.trainer.rules, self.cfg.batch_size
        shape = lambda j: (b, *rules[j].ctx.out_shape)  # noqa: E731 (the gradient is shaped like the activation)
        return self.time_boundaries(shape, lambda j: (shape(j), self.run.wire_dtype))


def instrument(meter: Meter) -> None:
    """Count the bytes of torch.distributed.pipelining's p2p ops and time its waits (private helpers
    of torch 2.x schedules; if they move, the counters stay at zero rather than break the run)."""
    from torch.distributed.pipelining import schedules

    batch, wait = getattr(schedules, "_batch_p2p", None), getattr(schedules, "_wait_batch_p2p", None)
    if batch is None or wait is None:
        return

    peers: list[int] = []

    def counted_batch(ops, *args, **kwargs):
        peers[:] = sorted({op.peer for op in ops})
        for op in ops:
            n = op.tensor.numel() * op.tensor.element_size()
            if "isend" in getattr(op.op, "__name__", ""):
                meter.bytes_sent += n
            else:
                meter.bytes_recv += n
        return batch(ops, *args, **kwargs)

    def timed_wait(works):
        what = f"torch.distributed.pipelining p2p with rank {', '.join(map(str, peers))}"
        for work in works if isinstance(works, (list, tuple)) else [works]:
            meter.wait(work, what)

    schedules._batch_p2p, schedules._wait_batch_p2p = counted_batch, timed_wait
