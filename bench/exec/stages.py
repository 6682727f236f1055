"""The stage backend: one worker per layer group, driving its group rule (methods.base.GroupRule).

Activations go forward with isend/irecv; each method's feedback comes back (whatever it declares:
a per-sample loss vector for lct, a gradient for dni/bp, nothing for greedy).
- lockstep: after forward(t) the worker waits for the feedback of step t (the paper's step);
- overlapped: it goes on with forward(t+1) at once and applies feedback when it has arrived, at most
  `max_stale` forwards late (staleness recorded). Legal only for rules whose forward already updates
  the group (`updates_in_forward`) or that get no feedback. Equal bounds on every rank make it
  deadlock-free (the proof is at the wait in `steps`).

Activations cross as the run's wire dtype (its autocast dtype, or float32). With --share-gpu (several
workers on one GPU, on gloo) every link stages its messages through host memory.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.distributed as dist

from bench.errors import BenchError
from methods import Backend, Feedback, create_method, list_methods

from .engine import WorkerEngine
from .inprocess import GroupChain
from .meter import Link, PeerError

POST_AHEAD = 2  # activation receives posted ahead of use, so transfers overlap compute


class StageWorkers(WorkerEngine):
    shares_gpu = True

    @classmethod
    def validate(cls, cfg, dcfg, method, options):
        overlapped = dcfg.schedule == "overlapped"
        if overlapped and method.feedback is not Feedback.NONE and not (method.updates_in_forward
                                                                       or method.stale_feedback):
            pipelined = [n for n in list_methods() if create_method(n).backend is Backend.PIPELINING]
            stale = [n for n in list_methods() if create_method(n).stale_feedback]
            raise BenchError(f"--schedule overlapped needs a method that updates each group without waiting "
                             f"(one that declares updates_in_forward or stale_feedback); {cfg.method} would apply "
                             f"feedback to weights that have moved on: for pipelined backprop use "
                             f"{' or '.join(pipelined)}, for backprop with stale gradients {' or '.join(stale)}")
        bound = options.get("max_stale") if method.stale_feedback else None
        if bound is not None and bound != (dcfg.max_stale if overlapped else 0):
            want = f"--schedule overlapped --max-stale {bound}" if bound else "--schedule lockstep"
            raise BenchError(f"{cfg.method} with max_stale={bound} runs on real workers with {want} (the schedule "
                             f"is what makes feedback late there), not --schedule {dcfg.schedule}"
                             + (f" --max-stale {dcfg.max_stale}" if overlapped else ""))

    def setup(self) -> None:
        i, k, b = self.rank, self.world, self.cfg.batch_size
        rules = self.trainer.rules
        self.own, self.rule = [i], rules[i]
        self.place(self.rule.modules())
        fwd, bwd, m, d, wire = self.comms.fwd, self.comms.bwd, self.meter, self.device, self.wire
        act = dict(dtype=self.run.wire_dtype, wire=wire)
        self.act_in = Link(m, i - 1, fwd, "activation", d, (b, *rules[i - 1].ctx.out_shape), **act) if i else None
        self.act_out = Link(m, i + 1, fwd, "activation", d, (b, *self.rule.ctx.out_shape), **act) if i < k - 1 else None
        self.fb_in = Link(m, i + 1, bwd, "feedback", d, wire=wire) if self.rule.waits_for_feedback else None
        self.fb_out = (Link(m, i - 1, bwd, "feedback", d, wire=wire) if i > 0 and rules[i - 1].waits_for_feedback
                       else None)
        self.bound = 0 if self.dcfg.schedule == "lockstep" else self.dcfg.max_stale
        self.pending: list[int] = []  # steps whose feedback is not applied yet, oldest first
        self.last_forward = -1
        self.staleness: list[int] = []
        self.stash = self._weight_stash()

    def _weight_stash(self):
        """Overlapped: a critic/synthesizer is updated (in place) between the forward of step t and the
        backward of step t, whose graph saved its weights; keep copies of those saved weights, so the
        update of step t uses the gradient at the weights its forward used (weight stashing)."""
        aux = {id(p) for name, m in self.rule.modules().items() if name != "body" for p in m.parameters()}

        def pack(t):
            base = t._base if t._base is not None else t
            return t.detach().clone() if id(base) in aux else t

        if not (self.bound and aux):
            return nullcontext
        return lambda: torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)

    def steps(self, start: int, end: int, on_step) -> None:
        rule = self.rule
        for step in range(start, end):
            image, y = self.run.stream.batch(step)  # every worker draws the step's batch
            y = y.to(self.device)
            if self.act_in is None:
                x = image = image.to(self.device)
            else:
                x = self.act_in.get(step)
                for ahead in range(step + 1, min(end, step + 1 + POST_AHEAD)):
                    self.act_in.post(ahead)  # posted before any blocking wait below
            rule.set_step(step)
            if rule.needs_input:
                rule.take_input(image.to(self.device))
            with self.clock.region("forward"), self.stash():
                out = rule.forward(step, x, y)
            self.last_forward = step
            if self.act_out is not None:
                self.act_out.send(out, step)
            if self.fb_in is None:  # never waits: the last group, or a method without feedback
                self._backward(step, None)
            else:
                self._await_feedback(step, first=start == 0 and step == start)
            if rule.ctx.is_last:
                self.track(rule.stats["loss"])
            on_step()
        while self.pending:
            self._apply_feedback()
        self.meter.flush()

    def _await_feedback(self, step: int, first: bool) -> None:
        self.fb_in.post(step)
        self.pending.append(step)
        bound = 0 if first else self.bound  # the first step is always lockstep: it carries the feedback's shape
        while self.pending and self.fb_in.ready():
            self._apply_feedback()
        # Deadlock-free: blocking here on step s-D (D = bound), this worker has sent every activation up to
        # s; the next worker, unless it also blocks here, waits only for those activations, and it has at
        # most D pending steps itself, so its feedback up to s-D is sent. The last worker never blocks
        # here, so the chain always moves.
        while len(self.pending) > bound:
            self._apply_feedback()

    def _apply_feedback(self) -> None:
        step = self.pending.pop(0)
        feedback = self.fb_in.get(step)
        self.staleness.append(self.last_forward - step)
        self._backward(step, feedback)

    def _backward(self, step: int, feedback) -> None:
        with self.clock.region("backward"):
            back = self.rule.backward(step, feedback)
        if self.fb_out is not None:
            if back is None:
                raise PeerError(f"rank {self.rank}: {self.cfg.method} group {self.rank} returned no feedback for "
                                f"step {step}, but group {self.rank - 1} waits for it")
            self.fb_out.send(back, step)

    def start_timing(self) -> None:
        super().start_timing()
        self.staleness.clear()

    def calibrate(self) -> float:
        rules, b = self.trainer.rules, self.cfg.batch_size
        fb = self.fb_out  # this worker's feedback: the shape and dtype its link learned from the first message
        return self.time_boundaries(lambda j: (b, *rules[j].ctx.out_shape),
                                    lambda j: None if fb is None or fb.shape is None else (fb.shape, fb.dtype))

    def worker_stats(self, train_time, timed_steps):
        stats = super().worker_stats(train_time, timed_steps)
        facts = [None] * self.world  # each group's own facts, from the worker that trained it
        dist.all_gather_object(facts, self.rule.extras(), group=self.comms.ctrl)
        return {**stats, **GroupChain.collect(facts)}

    def extra_stats(self) -> dict:
        if self.dcfg.schedule != "overlapped" or not self.staleness:
            return {}
        return {"staleness_mean": sum(self.staleness) / len(self.staleness), "staleness_max": max(self.staleness)}
