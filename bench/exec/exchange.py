"""The exchange backend: one worker per layer group for the methods of methods/exchange.py (auxnet).

    python -m bench run --method auxnet --groups 2 --executor distributed

Every rank builds the whole rule (same seed, same weights) and runs its own group's share of each step:
- a parallel step: the share computes its two outgoing messages from the batch, sends them at once to
  both neighbours, waits for theirs (both are boundary activations, computed from the batch alone, so
  no worker waits for a chain of workers), then updates on its own;
- a serial step: backprop through the chain (activation from the previous worker, gradient from the
  next), as the stage backend's lockstep bp.
Why not the stage backend: there a group's message back is what its backward returns once the next
group's feedback has arrived, a serial chain; here the message back is ready before any feedback.
Every message has its boundary's activation shape, so both links know their shapes from the split, and
crosses as the run's wire dtype (its autocast dtype, or float32); receives are posted ahead so transfers
overlap compute. What is measured (blocked time, bytes, memory, the paper's estimate) is engine.py's, like
every backend.
"""
from __future__ import annotations

import torch.distributed as dist

from .engine import WorkerEngine
from .meter import Link

POST_AHEAD = 2


class ExchangeWorkers(WorkerEngine):
    own_schedule = "exchange"

    def setup(self) -> None:
        i, k, b = self.rank, self.world, self.cfg.batch_size
        self.own, self.share = [i], self.trainer.shares[i]
        self.place(self.trainer.parts[i])
        groups, fwd, bwd, m, d = self.trainer.groups, self.comms.fwd, self.comms.bwd, self.meter, self.device
        dt = self.run.wire_dtype
        self.from_prev = Link(m, i - 1, fwd, "activation", d, (b, *groups[i].in_shape), dt) if i > 0 else None
        self.from_next = Link(m, i + 1, bwd, "feedback", d, (b, *groups[i].out_shape), dt) if i < k - 1 else None

    def steps(self, start, end, on_step):
        share, trainer = self.share, self.trainer
        for step in range(start, end):
            x, y = self.run.stream.batch(step)
            x, y = x.to(self.device), y.to(self.device)
            for link in (self.from_prev, self.from_next):
                for ahead in range(step, min(end, step + 1 + POST_AHEAD)):
                    if link is not None:
                        link.post(ahead)
            trainer.set_lr(step)
            if trainer.serial(step):
                self._serial(step, x, y)
            else:
                with self.clock.region("forward"):
                    to_prev, to_next = share.outgoing(step, x, y)
                self._send(step, to_prev, to_next)
                from_prev = None if self.from_prev is None else self.from_prev.get(step)
                from_next = None if self.from_next is None else self.from_next.get(step)
                with self.clock.region("backward"):
                    share.update(step, x, y, from_prev, from_next)
            if share.is_last:
                self.track(share.loss)
            on_step()
        self.meter.flush()

    def _serial(self, step: int, x, y) -> None:
        share = self.share
        h = x if self.from_prev is None else self.from_prev.get(step)
        with self.clock.region("forward"):
            out = share.forward(step, x, h, y)
        self._send(step, None, out)
        grad = None if self.from_next is None else self.from_next.get(step)
        with self.clock.region("backward"):
            back = share.backward(step, grad)
        self._send(step, back, None)

    def _send(self, step: int, to_prev, to_next) -> None:
        dt = self.run.wire_dtype  # what the neighbour's link receives, whatever a share computed in
        if to_prev is not None:
            self.meter.isend(to_prev.detach().to(dt), self.rank - 1, self.comms.bwd, f"sending to rank {self.rank - 1} "
                             f"(step {step})")
        if to_next is not None:
            self.meter.isend(to_next.detach().to(dt), self.rank + 1, self.comms.fwd, f"sending to rank {self.rank + 1} "
                             f"(step {step})")

    def calibrate(self) -> float:
        groups, b = self.trainer.groups, self.cfg.batch_size
        shape = lambda j: (b, *groups[j].out_shape)  # noqa: E731 (one boundary activation each way)
        return self.time_boundaries(shape, lambda j: (shape(j), self.run.wire_dtype))

    def worker_stats(self, train_time, timed_steps):
        stats = super().worker_stats(train_time, timed_steps)
        facts = [None] * self.world  # each share's own facts, from the worker that ran it
        dist.all_gather_object(facts, self.share.extras(), group=self.comms.ctrl)
        return {**stats, **self.trainer.merge(facts)}
