"""A calibration: what one device spends on each piece of a training step, measured by the suite and
saved as JSON (`python -m bench calibrate`), the cost model's only source of compute times.

`measure()` times, on the run's own device and threads and on a real training batch:
- per unit (stem, residual block, LSTM layer, classifier): the forward and the backward seconds at several
  batch sizes (the full batch, and the smaller ones that micro-batches and data-parallel shards see),
  the fastest of a few passes, run in a chain as the groups run them (bench.models.split.unit_times, the
  timed split's own measurement); the optimiser step over the unit's weights; its weights (what data
  parallelism all-reduces) and its output per sample (what crosses a boundary after it), in bytes;
- the critic's forward and backward after every unit (`head_s`, what the timed split prices);
- per method with a stage-backend group rule, at every boundary j (after unit j): the seconds the
  method's own rule spends in its forward and in its backward besides the group's body (its critic,
  synthesizer or exit head and their optimisers), and the bytes of the feedback it sends back. They
  are measured by running the method's rule on a one-weight body (x * w) whose input is unit j's real
  output; the rule's fixed cost per call (an optimiser step over one weight, the x * w) is included,
  tens of microseconds.
Nothing is estimated: where the model needs a cost a calibration lacks, it says so in one line.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from methods import Backend, Feedback, GroupContext, GroupRule

from ..errors import BenchError
from ..models.split import unit_times
from ..models.unit import UnitModel
from ..train.records import atomic_write_text

SCHEMA = 1
KIND = "lctbench-calibration"
BOUNDARY_REPS = 5  # passes of a method's rule per boundary (the fastest counts), after one warm-up
DIVISORS = (1, 2, 4, 8, 16)  # batch sizes measured: batch / d, for micro-batches and data-parallel shards


@dataclass
class BoundaryCosts:
    """One method's rule at every boundary j (after unit j, j < units - 1)."""

    forward_s: list[float]
    backward_s: list[float]
    feedback_bytes: list[int]


@dataclass
class Calibration:
    setting: dict                      # model, data, profile, width, batch_size, threads, device, hidden, bptt
    units: list[str]
    params: list[int]                  # weights per unit (elements, float32)
    out_bytes: list[int]               # bytes of one sample's output after each unit
    batches: list[int]                 # batch sizes measured, descending (the run's batch first)
    forward_s: dict[int, list[float]]  # batch size -> per unit
    backward_s: dict[int, list[float]]
    optimizer_s: list[float]           # per unit
    head_s: list[float]                # index j: the critic after unit j - 1 (0 at both ends), like split's head_cost
    methods: dict[str, BoundaryCosts] = field(default_factory=dict)
    env: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.setting["batch_size"])

    @property
    def n(self) -> int:
        return len(self.units)

    def unit_s(self, kind: str, j: int, batch: float) -> float:
        """Seconds of unit j's forward ("forward") or backward ("backward") on `batch` samples: measured, or
        linear between the two measured sizes around it (beyond them, along the nearest two)."""
        table = self.forward_s if kind == "forward" else self.backward_s
        sizes = sorted(self.batches)
        if batch in table:
            return table[batch][j]
        if len(sizes) == 1:
            return table[sizes[0]][j] * batch / sizes[0]
        i = min(max(1, sum(s < batch for s in sizes)), len(sizes) - 1)
        lo, hi = sizes[i - 1], sizes[i]
        a, b = table[lo][j], table[hi][j]
        return max(0.0, a + (b - a) * (batch - lo) / (hi - lo))

    def boundary(self, method: str) -> BoundaryCosts:
        if method not in self.methods:
            have = ", ".join(sorted(self.methods)) or "none"
            raise BenchError(f"the calibration has no boundary costs of {method} (it has: {have}); calibrate "
                             f"with --methods {method}")
        return self.methods[method]

    # --- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["forward_s"] = {str(b): v for b, v in self.forward_s.items()}
        d["backward_s"] = {str(b): v for b, v in self.backward_s.items()}
        return {"schema": SCHEMA, "kind": KIND, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        if d.get("kind") != KIND or d.get("schema") != SCHEMA:
            raise BenchError(f"not a calibration of schema {SCHEMA} (kind {d.get('kind')!r}, "
                             f"schema {d.get('schema')!r})")
        try:
            return cls(setting=d["setting"], units=d["units"], params=d["params"], out_bytes=d["out_bytes"],
                       batches=[int(b) for b in d["batches"]],
                       forward_s={int(b): v for b, v in d["forward_s"].items()},
                       backward_s={int(b): v for b, v in d["backward_s"].items()},
                       optimizer_s=d["optimizer_s"], head_s=d["head_s"],
                       methods={m: BoundaryCosts(**c) for m, c in d.get("methods", {}).items()}, env=d.get("env", {}))
        except (KeyError, TypeError) as e:
            raise BenchError(f"calibration is missing or has a bad field: {e}") from None

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise BenchError(f"cannot read calibration {path}: {e}") from None


# ---------------------------------------------------------------------------------------------------
# Measuring


class _OneWeight(nn.Module):
    """The body a method's rule is timed on: x * w, so that what the rule costs besides its body remains."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.w


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _feedback(method, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """What the next group would send back, by the method's declaration: a gradient shaped like the
    activation, a per-sample loss vector (one per target: B, or B x T for sequences), or nothing."""
    if method.feedback is Feedback.GRADIENT:
        return torch.randn_like(out) * 1e-3
    if method.feedback is Feedback.LOSS:
        return torch.rand(y.numel(), device=out.device)
    return None


def boundary_costs(method, inputs: list[torch.Tensor], y: torch.Tensor,
                   context_for: Callable[[tuple, nn.Module], GroupContext], reps: int = BOUNDARY_REPS) -> BoundaryCosts:
    """The method's rule, as a middle group on a one-weight body, at each boundary's real activation."""
    fwd, bwd, fb_bytes = [], [], []
    device = y.device
    for x in inputs:
        ctx = context_for(tuple(x.shape[1:]), _OneWeight().to(device))
        rule = method(ctx, method.resolve_options({}))
        for m in rule.modules().values():
            m.to(device)
        best_f = best_b = float("inf")
        for rep in range(reps + 1):
            rule.set_step(rep)
            t0 = _clock(device)
            out = rule.forward(rep, x, y)
            t1 = _clock(device)
            fb = _feedback(method, out, y)
            t2 = _clock(device)
            back = rule.backward(rep, fb)
            t3 = _clock(device)
            if rep:
                best_f, best_b = min(best_f, t1 - t0), min(best_b, t3 - t2)
        fwd.append(best_f)
        bwd.append(best_b)
        fb_bytes.append(0 if back is None else back.numel() * back.element_size())
    return BoundaryCosts(fwd, bwd, fb_bytes)


def optimizer_seconds(model: UnitModel, make_optimizer, device: torch.device, reps: int) -> list[float]:
    """The optimiser step over each unit's weights (their gradients set), the fastest of `reps` after one."""
    out = []
    for unit in model.units:
        params = [p.detach().clone().to(device).requires_grad_(True) for p in unit.parameters()]
        if not params:
            out.append(0.0)
            continue
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt, best = make_optimizer(params), float("inf")
        for rep in range(reps + 1):
            t0 = _clock(device)
            opt.step()
            t1 = _clock(device)
            if rep:
                best = min(best, t1 - t0)
        out.append(best)
    return out


def stage_methods(methods: list) -> list:
    """The methods whose rules run per group on the stage backend: the ones with boundary costs."""
    return [m for m in methods if issubclass(m, GroupRule) and m.backend is Backend.STAGES]


def measure(model: UnitModel, batch: tuple[torch.Tensor, torch.Tensor], *, make_optimizer, context_for,
            head_for, methods: list, setting: dict, divisors=DIVISORS, reps: int = 10) -> Calibration:
    """Time everything the cost model composes (module docstring) on `batch`, on its device. Runs on copies
    (unit_times) and new rules: the model's weights are left as they are, and the global RNG too (the run's
    own critics are drawn after its split)."""
    x, y = batch
    device = x.device
    load_before = os.getloadavg()[0]
    sizes = sorted({max(1, len(x) // d) for d in divisors}, reverse=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        fwd, bwd, head = {}, {}, None
        for b in sizes:
            f, g, h = unit_times(model, (x[:b], y[:b]), head_for if b == sizes[0] else None, reps)
            fwd[b], bwd[b] = f, g
            head = head if head is not None else h
        with torch.no_grad():  # each boundary's real activation, from a copy (BatchNorm statistics move)
            outs, h = [], x
            for u in copy.deepcopy(model.units).to(device).train():
                h = u(h)
                outs.append(h.detach())
        costs = {m.name: boundary_costs(m, outs[:-1], y, context_for) for m in stage_methods(methods)}
        opt = optimizer_seconds(model, make_optimizer, device, reps)
    return Calibration(
        setting={**setting, "batch_size": len(x)}, units=list(model.unit_names),
        params=[sum(p.numel() for p in u.parameters()) for u in model.units],
        out_bytes=[o[0].numel() * o.element_size() for o in outs], batches=sizes, forward_s=fwd, backward_s=bwd,
        optimizer_s=opt, head_s=head, methods=costs,
        env={"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
             "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
             "load_before": load_before, "load_after": os.getloadavg()[0]})
