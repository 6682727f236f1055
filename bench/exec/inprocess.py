"""The in-process executor: every group in this process, one step at a time.

This is the reference semantics (the paper's TensorFlow code computed one synchronous step like this):
for a group rule, forward through the groups, then each group's feedback back through them; for a
whole-step rule, its own `step`. Its wall-clock is *simulated* model parallelism: the groups run one
after another, and every record says so.
"""
from __future__ import annotations

import math
import time

import torch

from .phase import Phase


class GroupChain:
    """The trainer of a group rule: its K rules driven in lockstep."""

    def __init__(self, rules):
        self.rules = rules

    @property
    def parts(self) -> list[dict]:
        return [r.modules() for r in self.rules]

    @property
    def optims(self) -> list[dict]:
        return [r.optimizers() for r in self.rules]

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.take_input(x)
        for rule in self.rules:
            rule.set_step(step)
            x = rule.forward(step, x, y)
        feedback = None
        for rule in reversed(self.rules):
            feedback = rule.backward(step, feedback)
        return self.rules[-1].stats["loss"]

    def take_input(self, x: torch.Tensor) -> None:
        """The network's input to every rule that declares it needs it (InfoPro's reconstruction target)."""
        for rule in self.rules:
            if rule.needs_input:
                rule.take_input(x)

    def network(self):
        return [(r.body, None if r.ctx.is_last else r.head) for r in self.rules]

    def local_grads(self, k: int, x: torch.Tensor, y: torch.Tensor):
        return self.rules[k].local_grads(x, y)

    def extras(self) -> dict:
        return {}

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
        """Train steps [start, end); stops at the first non-finite loss."""
        total, seconds, stream = 0.0, 0.0, self.run.stream
        for step in range(start, end):
            x, y = stream.batch(step)
            t0 = time.perf_counter()
            loss = self.trainer.step(step, x, y).item()  # also waits for the device: the step is done
            seconds += time.perf_counter() - t0
            if not math.isfinite(loss):
                return Phase(step - start, seconds, total, diverged=f"loss {loss} at step {step}")
            total += loss
            on_step()
        return Phase(end - start, seconds, total)

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
