"""The in-process executor: every group in this process, one step at a time.

This is the reference semantics (the paper's TensorFlow code computed one synchronous step like this):
for a group rule, forward through the groups, then each group's feedback back through them; for a
whole-step rule, its own `step`. Its wall-clock is *simulated* model parallelism: the groups run one
after another, and every record says so.
"""
from __future__ import annotations

import time
from collections import deque

import torch

from .phase import Phase


class GroupChain:
    """The trainer of a group rule: its K rules driven in lockstep, or, for rules that declare a
    `feedback_delay`, as a deterministic stand-in for an overlapped pipeline: group i gets the feedback of
    step s after the forward of step s + d_i, d_i the largest delay of group i and the groups after it
    (a group cannot get feedback before the next group has sent it). `drain` applies what is still due."""

    def __init__(self, rules):
        self.rules = rules
        self.delay = [max(r.feedback_delay for r in rules[i:]) for i in range(len(rules))]
        self.waiting = [deque() for _ in rules]  # per group: steps forwarded whose feedback is not applied yet
        self.sent: dict[tuple[int, int], object] = {}  # (group, step) -> what it sent back, until taken

    @property
    def parts(self) -> list[dict]:
        return [r.modules() for r in self.rules]

    @property
    def optims(self) -> list[dict]:
        return [r.optimizers() for r in self.rules]

    @property
    def scalings(self) -> list:
        """(LossScaling, the optimisers it scales for, by name) per rule: fp16's scalers, for checkpoints."""
        return [(r.scaling, r.optimizers()) for r in self.rules]

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.take_input(x)
        for rule, waiting in zip(self.rules, self.waiting):
            rule.set_step(step)
            x = rule.forward(step, x, y)
            waiting.append(step)
        for i in reversed(range(len(self.rules))):
            while self.waiting[i] and self.waiting[i][0] <= step - self.delay[i]:
                self._backward(i)
        return self.rules[-1].stats["loss"]

    def take_input(self, x: torch.Tensor) -> None:
        """The network's input to every rule that declares it needs it (InfoPro's reconstruction target)."""
        for rule in self.rules:
            if rule.needs_input:
                rule.take_input(x)

    def _backward(self, i: int) -> None:
        step = self.waiting[i].popleft()
        back = self.rules[i].backward(step, self.sent.pop((i + 1, step), None))  # None at the last group
        if i > 0:
            self.sent[(i, step)] = back

    def drain(self) -> None:
        """Every feedback still due, oldest first (the end of a phase, as on real workers)."""
        for i in reversed(range(len(self.rules))):
            while self.waiting[i]:
                self._backward(i)

    def network(self):
        return [(r.body, None if r.ctx.is_last else r.head) for r in self.rules]

    def local_grads(self, k: int, x: torch.Tensor, y: torch.Tensor):
        return self.rules[k].local_grads(x, y)

    def extras(self) -> dict:
        return self.collect([r.extras() for r in self.rules])

    @staticmethod
    def collect(facts: list[dict]) -> dict:
        """The groups' own facts for the record, one dict per group (nothing where no group has any)."""
        return {"group_stats": facts} if any(facts) else {}

    def train(self, mode: bool = True) -> None:
        for rule in self.rules:
            rule.train(mode)


class InProcess:
    """The loop's engine for one process holding the whole run (bench.train.loop)."""

    writes_record = True
    checkpoints = True
    record_header = {"executor": "in-process", "parallel": "simulated"}

    def __init__(self, run):
        self.run, self.trainer = run, run.trainer

    def phase(self, start: int, end: int, on_step) -> Phase:
        """Train steps [start, end). The losses stay on the device until the phase ends (no host sync per
        step); a non-finite one ends the phase there, as diverged. Each step is timed from its batch on: on
        a CPU that is its compute; on a GPU the kernels run behind the host, so there the phase's time is
        its whole wall-clock, up to one synchronise at its end."""
        seconds, stream, losses = 0.0, self.run.stream, []
        began = time.perf_counter()
        for step in range(start, end):
            x, y = stream.batch(step)
            t0 = time.perf_counter()
            losses.append(self.trainer.step(step, x, y).detach())
            seconds += time.perf_counter() - t0
            on_step()
        if isinstance(self.trainer, GroupChain):  # a phase ends drained, as on real workers
            t0 = time.perf_counter()
            self.trainer.drain()
            seconds += time.perf_counter() - t0
        if self.run.device.type == "cuda":
            torch.cuda.synchronize(self.run.device)
            seconds = time.perf_counter() - began
        if not losses:
            return Phase(0, seconds, 0.0)
        values = torch.stack(losses).float().cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            i = int(bad[0])
            return Phase(i, seconds, float(values[:i].sum()), diverged=f"loss {float(values[i])} at step {start + i}")
        return Phase(end - start, seconds, float(values.sum()))

    def start_timing(self) -> None:
        pass

    def gather(self) -> None:
        pass

    def barrier(self) -> None:
        pass

    def after_evaluation(self) -> None:
        pass

    def worker_stats(self, train_time: float, timed_steps: int) -> dict:
        return {}
