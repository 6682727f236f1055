"""The data-parallel backend: the whole network on every one of the K workers, each on 1/K of the batch,
gradients all-reduced by DistributedDataParallel. The method's rule (a GroupRule) is built once over
the whole network; the K groups of the run share its modules, so rank 0 evaluates them as they are.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from bench.errors import BenchError
from bench.models.split import Split
from bench.train.build import contexts

from .engine import WorkerEngine, time_allreduce
from .meter import Meter


class DataParallelWorkers(WorkerEngine):
    """Parameters and their gradients stay float32 under autocast, so the all-reduce moves float32 whatever
    the precision (fp16: a GradScaler's scaled gradients, unscaled by its step after the all-reduce)."""

    own_schedule = "allreduce"

    @classmethod
    def validate(cls, cfg, dcfg, method, options):
        super().validate(cfg, dcfg, method, options)
        if cfg.batch_size % cfg.groups:
            raise BenchError(f"{cfg.method}: batch size {cfg.batch_size} is not divisible by {cfg.groups} workers")

    def setup(self) -> None:
        run = self.run  # the run's own builder, on the whole network
        (whole,) = contexts(run.model, Split([0, len(run.model.units)]), run.data.input_shape, run.data.num_classes,
                            run.cfg.hyper())
        self.rule = run.method(whole, run.method.resolve_options(run.cfg.extra))
        self.own = list(range(len(self.trainer.parts)))
        self.place(self.rule.modules())
        for part in self.trainer.parts:
            self.place(part)
        self.rule.body = DDP(self.rule.body, device_ids=[self.device] if self.device.type == "cuda" else None,
                             process_group=self.comms.fwd, broadcast_buffers=False)
        self.tail = _BlockedTail(self.meter, self.world, self.comms.fwd)
        self.rule.body.register_comm_hook(self.tail, _timed_allreduce)

    def steps(self, start, end, on_step):
        rule, k = self.rule, self.world
        for step in range(start, end):
            x, y = self.run.stream.batch(step)
            x, y = x.chunk(k)[self.rank].to(self.device), y.chunk(k)[self.rank].to(self.device)
            rule.set_step(step)
            with self.clock.region("forward"):
                rule.forward(step, x, y)
            with self.clock.region("backward"):
                rule.backward(step, None)
            self.clock.add("backward", -self.tail.end_step())  # the all-reduce tail is communication
            self.track(rule.stats["loss"])
            on_step()

    def gather(self) -> None:
        """Every worker holds the whole network: rank 0's copy is the model."""
        if self.rank == 0:
            self.gathered = [{"modules": {k: m.state_dict() for k, m in part.items()},
                              "grads": [p.grad for p in part["body"].parameters()]} for part in self.trainer.parts]

    def after_evaluation(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def calibrate(self) -> float:
        """One all-reduce of every parameter: the paper's style of estimate for data parallelism."""
        n = sum(p.numel() for p in self.rule.body.parameters())
        return time_allreduce(self.comms, n, self.device, group=self.comms.fwd)


class _BlockedTail:
    """DDP overlaps its all-reduces with the backward pass; the time the step is blocked is the tail
    from the last bucket's launch (the end of the gradient computation) to the last bucket's result."""

    def __init__(self, meter: Meter, world: int, group):
        self.meter, self.world, self.group = meter, world, group
        self.last_launch = self.last_done = 0.0

    def end_step(self) -> float:
        """Count this step's blocked tail as communication; returns it."""
        tail = max(0.0, self.last_done - self.last_launch)
        self.meter.wait_s += tail
        self.last_launch = self.last_done = 0.0
        return tail


def _timed_allreduce(state: _BlockedTail, bucket):
    buf = bucket.buffer()
    ring = 2 * (state.world - 1) / state.world  # bytes each worker sends (and receives) in a ring all-reduce
    state.meter.bytes_sent += int(ring * buf.numel() * buf.element_size())
    state.meter.bytes_recv += int(ring * buf.numel() * buf.element_size())
    state.last_launch = time.perf_counter()
    fut = dist.all_reduce(buf.div_(state.world), group=state.group, async_op=True).get_future()

    def done(f):
        state.last_done = max(state.last_done, time.perf_counter())
        return f.value()[0]

    return fut.then(done)
