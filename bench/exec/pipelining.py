"""The pipelining backend: pipelined backprop under torch.distributed.pipelining (PipelineStage and the
schedule the method's `schedule` option names), one worker per layer group.

A method run by this backend declares two options: `microbatches` and `schedule`. Its rule is used for
its group's body and optimiser; torch's schedule does the forward and backward passes of every
micro-batch. The loss is the mean cross-entropy of each micro-batch (image models only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from bench.errors import BenchError

from .engine import WorkerEngine
from .meter import Meter

SCHEDULE_CLASSES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


class PipelineWorkers(WorkerEngine):

    @classmethod
    def schedule_name(cls, dcfg, options):
        return f"{options['schedule']}-m{options['microbatches']}"

    own_schedule = "micro-batches"

    @classmethod
    def validate(cls, cfg, dcfg, method, options):
        super().validate(cfg, dcfg, method, options)
        if options["schedule"] == "1f1b" and options["microbatches"] < cfg.groups:
            raise BenchError(f"1f1b needs at least as many micro-batches as groups ({cfg.groups})")

    def setup(self) -> None:
        rules, i, k = self.trainer.rules, self.rank, self.world
        self.own, self.rule = [i], rules[i]
        self.place(self.rule.modules())
        opts = self.rule.opts
        # Static shapes: without them PipelineStage infers shapes by running the group on placeholder
        # tensors in train mode, which put NaN into BatchNorm running statistics of later groups.
        mb = self.cfg.batch_size // opts["microbatches"]
        shape_out = (self.run.data.num_classes,) if self.rule.ctx.is_last else self.rule.ctx.out_shape
        example_in = (self.run.stream.batch(0)[0][:mb].to(self.device) if i == 0  # the input's own dtype
                      else torch.empty(mb, *rules[i - 1].ctx.out_shape, device=self.device, requires_grad=True))
        example_out = torch.empty(mb, *shape_out, device=self.device, requires_grad=True)
        stage = PipelineStage(self.rule.body, i, k, self.device, group=self.comms.fwd,
                              input_args=example_in, output_args=example_out)
        self.schedule = SCHEDULE_CLASSES[opts["schedule"]](stage, opts["microbatches"],
                                                           loss_fn=lambda out, y: F.cross_entropy(out, y))
        instrument(self.meter)

    def steps(self, start, end, on_step):
        rule = self.rule
        for step in range(start, end):
            x, y = self.run.stream.batch(step)
            rule.set_step(step)
            t0, waited = self.now(), self.meter.wait_s
            rule.body_opt.zero_grad(set_to_none=True)
            if rule.ctx.is_first:
                self.schedule.step(x.to(self.device))
            elif rule.ctx.is_last:
                losses: list[torch.Tensor] = []
                self.schedule.step(target=y.to(self.device), losses=losses, return_outputs=False)
                self.track(torch.stack(losses).mean())
            else:
                self.schedule.step()
            rule.body_opt.step()
            # forward and backward interleave: all compute counted as forward; the p2p waits are communication
            self.fwd_s += self.now() - t0 - (self.meter.wait_s - waited)
            on_step()
        self.meter.flush()

    def calibrate(self):
        rules, b = self.trainer.rules, self.cfg.batch_size
        shape = lambda j: (b, *rules[j].ctx.out_shape)  # noqa: E731 (the gradient has the activation's shape)
        return self.time_boundaries(shape, shape)


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
