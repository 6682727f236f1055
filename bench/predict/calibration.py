"""A calibration: what one device spends on each piece of a training step, measured by the suite and
saved as JSON (`python -m bench calibrate`), the cost model's only source of compute times.

`measure()` times, on the run's own device and threads and on a real training batch:
- per unit (stem, residual block, LSTM layer, classifier): the forward and the backward seconds at several
  batch sizes (the full batch, and the smaller ones that micro-batches and data-parallel shards see),
  run in a chain as the groups run them (bench.models.split.chain_pass, the timed split's own pass), the
  sizes in turns, the mean of REPS turns after a warm-up (interleaved_times). The mean, not the fastest: a
  run's throughput is its mean step, and on a shared machine the fastest pass is not the typical one (here
  the same step took 80 ms or 118 ms by turns, and the fastest of each unit summed 17 % under the mean);
- at the micro-batch sizes, the two halves of a zero-bubble pipeline's backward (split_pass);
- the optimiser step over each unit's weights; its weights (what data parallelism all-reduces) and its
  output per sample (what crosses a boundary after it), in bytes;
- the critic's forward and backward after every unit (`head_s`, what the timed split prices);
- per method with a stage-backend group rule, at every boundary j (after unit j): the seconds the
  method's own rule spends in its forward and in its backward besides the group's body (its critic,
  synthesizer or exit head and their optimisers), and the bytes of the feedback it sends back. They
  are measured by running the method's rule on a one-weight body (x * w) whose input is unit j's real
  output; the rule's fixed cost per call (an optimiser step over one weight, the x * w) is included,
  tens of microseconds;
- per method of the exchange backend, at every boundary: what its shares spend besides their bodies, on
  either side of the boundary, in each of their calls (shares.py).
Nothing is estimated: where the model needs a cost a calibration lacks, it says so in one line.
"""
from __future__ import annotations

import copy
import json
import os
import platform
from statistics import fmean, median
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from methods import Backend, Feedback, GroupContext, GroupRule

from ..errors import BenchError
from ..models.split import chain_forward, chain_pass, clock, flat_ce, unit_times
from ..models.unit import UnitModel
from ..train.records import atomic_write_text
from .shares import PARTS, ShareCosts, exchange_methods, share_costs

SCHEMA = 1
KIND = "lctbench-calibration"
REPS = 30  # passes of every timing (their mean counts), after one warm-up
HEAD_REPS = 5  # passes of the critics after every unit (what the timed split prices)
BOUNDARY_REPS = 5  # passes of a method's rule per boundary (their mean counts), after one warm-up
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
    # a zero-bubble pipeline's backward halves (split_pass), at the micro-batch sizes: batch -> per unit
    backward_input_s: dict[int, list[float]] = field(default_factory=dict)
    backward_weight_s: dict[int, list[float]] = field(default_factory=dict)
    shares: dict[str, ShareCosts] = field(default_factory=dict)  # exchange-backend methods (shares.py)

    @property
    def batch_size(self) -> int:
        return int(self.setting["batch_size"])

    @property
    def n(self) -> int:
        return len(self.units)

    def unit_s(self, kind: str, j: int, batch: float) -> float:
        """Seconds of unit j's "forward", "backward", or a zero-bubble backward's "input" or "weight" half, on
        `batch` samples: measured, or linear between the two measured sizes around it (beyond them, along the
        nearest two)."""
        table = {"forward": self.forward_s, "backward": self.backward_s, "input": self.backward_input_s,
                 "weight": self.backward_weight_s}[kind]
        if not table:
            what = f"{kind} halves of the backward" if kind in ("input", "weight") else f"{kind} times"
            raise BenchError(f"the calibration has no {what} (an older one?); calibrate again")
        sizes = sorted(table)
        if batch in table:
            return table[batch][j]
        if len(sizes) == 1:
            return table[sizes[0]][j] * batch / sizes[0]
        i = min(max(1, sum(s < batch for s in sizes)), len(sizes) - 1)
        lo, hi = sizes[i - 1], sizes[i]
        a, b = table[lo][j], table[hi][j]
        return max(0.0, a + (b - a) * (batch - lo) / (hi - lo))

    def boundary(self, method: str) -> BoundaryCosts:
        return _measured(self.methods, method, "boundary")

    def share(self, method: str) -> ShareCosts:
        return _measured(self.shares, method, "share")

    # --- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["forward_s"] = {str(b): v for b, v in self.forward_s.items()}
        for name in ("backward_s", "backward_input_s", "backward_weight_s"):
            d[name] = {str(b): v for b, v in getattr(self, name).items()}
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
                       methods={m: BoundaryCosts(**c) for m, c in d.get("methods", {}).items()}, env=d.get("env", {}),
                       backward_input_s={int(b): v for b, v in d.get("backward_input_s", {}).items()},
                       backward_weight_s={int(b): v for b, v in d.get("backward_weight_s", {}).items()},
                       shares={m: ShareCosts(**c) for m, c in d.get("shares", {}).items()})
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


def _measured(table: dict, method: str, what: str):
    """A method's costs from one of the calibration's tables, or a one-line error naming how to measure them."""
    if method not in table:
        have = ", ".join(sorted(table)) or "none"
        raise BenchError(f"the calibration has no {what} costs of {method} (it has: {have}); calibrate with "
                         f"--methods {method}")
    return table[method]


def median_of(cals: list[Calibration]) -> Calibration:
    """One calibration from several of the same setting, every time the median of theirs (a speed benchmark
    calibrates before each of its rounds; its runs' median is compared with these calibrations' median)."""
    first = cals[0]
    if any(c.setting != first.setting or c.units != first.units for c in cals):
        raise BenchError("calibrations of different settings cannot be combined")

    def per_batch(name):
        tables = [getattr(c, name) for c in cals]
        common = set.intersection(*(set(t) for t in tables))
        return {b: [median(v) for v in zip(*(t[b] for t in tables))] for b in sorted(common, reverse=True)}

    methods = {}
    for m in set.intersection(*(set(c.methods) for c in cals)):
        got = [c.methods[m] for c in cals]
        methods[m] = BoundaryCosts([median(v) for v in zip(*(g.forward_s for g in got))],
                                   [median(v) for v in zip(*(g.backward_s for g in got))], got[0].feedback_bytes)

    def side(tables):  # per boundary, per part, the median over the calibrations
        return [{p: median(t[j][p] for t in tables) for p in PARTS} for j in range(len(tables[0]))]

    shares = {m: ShareCosts(side([c.shares[m].before for c in cals]), side([c.shares[m].after for c in cals]))
              for m in set.intersection(*(set(c.shares) for c in cals))}
    return Calibration(
        setting=first.setting, units=first.units, params=first.params, out_bytes=first.out_bytes,
        batches=first.batches, forward_s=per_batch("forward_s"), backward_s=per_batch("backward_s"),
        optimizer_s=[median(v) for v in zip(*(c.optimizer_s for c in cals))],
        head_s=[median(v) for v in zip(*(c.head_s for c in cals))], methods=methods,
        env={**first.env, "combined": len(cals), "load_before": min(c.env.get("load_before", 0) for c in cals),
             "load_after": max(c.env.get("load_after", 0) for c in cals)},
        backward_input_s=per_batch("backward_input_s"), backward_weight_s=per_batch("backward_weight_s"), shares=shares)


# ---------------------------------------------------------------------------------------------------
# Measuring


class OneWeight(nn.Module):
    """The body a method's rule is timed on (and the link probe's pipeline stage): x * w, so that what the rule
    (or torch's runtime) costs besides its body remains."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.w


def _feedback(method, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """What the next group would send back, by the method's declaration: a gradient shaped like the
    activation, a per-sample loss vector (one per target: B, or B x T for sequences), or nothing."""
    if method.feedback is Feedback.GRADIENT:
        return torch.randn_like(out) * 1e-3
    if method.feedback is Feedback.LOSS:
        return torch.rand(y.numel(), device=out.device)
    return None


def boundary_costs(method, inputs: list[torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor],
                   context_for: Callable[..., GroupContext], reps: int = BOUNDARY_REPS) -> BoundaryCosts:
    """The method's rule, as a middle group on a one-weight body, at each boundary's real activation (and
    given the network's input batch, as the executors give it, where the rule declares needs_input)."""
    image, y = batch
    fwd, bwd, fb_bytes = [], [], []
    device = y.device
    for x in inputs:
        shape = tuple(x.shape[1:])
        ctx = context_for(1, 3, OneWeight().to(device), shape, shape)  # a middle group at this boundary
        rule = method(ctx, method.resolve_options({}))
        for m in rule.modules().values():
            m.to(device)
        f_s, b_s = [], []
        for rep in range(reps + 1):
            rule.set_step(rep)
            if rule.needs_input:
                rule.take_input(image)
            t0 = clock(device)
            out = rule.forward(rep, x, y)
            t1 = clock(device)
            fb = _feedback(method, out, y)
            t2 = clock(device)
            back = rule.backward(rep, fb)
            t3 = clock(device)
            if rep:
                f_s.append(t1 - t0)
                b_s.append(t3 - t2)
        fwd.append(fmean(f_s))
        bwd.append(fmean(b_s))
        fb_bytes.append(0 if back is None else back.numel() * back.element_size())
    return BoundaryCosts(fwd, bwd, fb_bytes)


def optimizer_seconds(model: UnitModel, make_optimizer, device: torch.device, reps: int) -> list[float]:
    """The optimiser step over each unit's weights (their gradients set), the mean of `reps` after one."""
    out = []
    for unit in model.units:
        params = [p.detach().clone().to(device).requires_grad_(True) for p in unit.parameters()]
        if not params:
            out.append(0.0)
            continue
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt, times = make_optimizer(params), []
        for rep in range(reps + 1):
            t0 = clock(device)
            opt.step()
            t1 = clock(device)
            if rep:
                times.append(t1 - t0)
        out.append(fmean(times))
    return out


def split_pass(units: nn.ModuleList, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """One pass of the two halves of a zero-bubble schedule's backward per unit, timed with the functions
    torch.distributed.pipelining's stages run: the input gradient (stage_backward_input; 0 for the first unit,
    whose stage skips it) and then the weight gradient (stage_backward_weight; the whole backward for the first
    unit, as its stage does it)."""
    from torch.distributed.pipelining._backward import stage_backward_input, stage_backward_weight

    inputs, outputs, _ = chain_forward(units, x)
    in_s, w_s, grad = [0.0] * len(units), [0.0] * len(units), None
    for j in reversed(range(len(units))):
        out = [flat_ce(outputs[j], y)] if grad is None else [outputs[j]]
        grads = None if grad is None else [grad]
        t0 = clock(x.device)
        if j:
            _, groups = stage_backward_input(out, grads, [inputs[j]], units[j].parameters())
            t1 = clock(x.device)
            stage_backward_weight(units[j].parameters(), groups)
            grad = inputs[j].grad
        else:
            t1 = t0
            torch.autograd.backward(out, grads)
        in_s[j], w_s[j] = t1 - t0, clock(x.device) - t1
    return in_s, w_s


def interleaved_times(model: UnitModel, batch: tuple[torch.Tensor, torch.Tensor], sizes: list[int], halves: list[int],
                      reps: int) -> tuple[dict, dict, dict, dict]:
    """Per batch size, the mean forward and backward seconds of every unit (and at the `halves` sizes the
    zero-bubble halves), measured in turns: one pass of each size, then again, `reps` times after a warm-up
    turn, so that a slow spell of a shared machine reaches every size alike (measured one size after another,
    the micro-batch sizes came out 25 % apart between calibrations minutes apart)."""
    x, y = batch
    units = copy.deepcopy(model.units).to(x.device).train()
    runs = {b: ([], []) for b in sizes}
    split = {b: ([], []) for b in halves}
    for rep in range(reps + 1):
        for b in sizes:
            _, _, f, g = chain_pass(units, x[:b], y[:b])
            i_w = split_pass(units, x[:b], y[:b]) if b in split else None
            if rep:
                runs[b][0].append(f)
                runs[b][1].append(g)
                if i_w:
                    split[b][0].append(i_w[0])
                    split[b][1].append(i_w[1])
    mean = lambda passes: [fmean(t) for t in zip(*passes)]  # noqa: E731 (per unit, over the passes)
    return ({b: mean(r[0]) for b, r in runs.items()}, {b: mean(r[1]) for b, r in runs.items()},
            {b: mean(r[0]) for b, r in split.items()}, {b: mean(r[1]) for b, r in split.items()})


def stage_methods(methods: list) -> list:
    """The methods whose rules run per group on the stage backend: the ones with boundary costs."""
    return [m for m in methods if issubclass(m, GroupRule) and m.backend is Backend.STAGES]


def measure(model: UnitModel, batch: tuple[torch.Tensor, torch.Tensor], *, make_optimizer, context_for,
            head_for, methods: list, setting: dict, divisors=DIVISORS, reps: int = REPS) -> Calibration:
    """Time everything the cost model composes (module docstring) on `batch`, on its device. Runs on copies
    and new rules: the model's weights are left as they are, and the global RNG too (the run's
    own critics are drawn after its split)."""
    x, y = batch
    device = x.device
    load_before = os.getloadavg()[0]
    sizes = sorted({max(1, len(x) // d) for d in divisors}, reverse=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        halves = [b for b in sizes if b < len(x)] or sizes  # micro-batches: what the zero-bubble pipelines split
        fwd, bwd, bwd_in, bwd_w = interleaved_times(model, batch, sizes, halves, reps)
        head = unit_times(model, batch, head_for, HEAD_REPS, fmean)[2] if head_for else [0.0] * (len(model.units) + 1)
        with torch.no_grad():  # each boundary's real activation, from a copy (BatchNorm statistics move)
            outs, h = [], x
            for u in copy.deepcopy(model.units).to(device).train():
                h = u(h)
                outs.append(h.detach())
        costs = {m.name: boundary_costs(m, outs[:-1], (x, y), context_for) for m in stage_methods(methods)}
        shares = {m.name: share_costs(m, outs[:-1], outs[-1], (x, y), context_for) for m in exchange_methods(methods)}
        opt = optimizer_seconds(model, make_optimizer, device, reps)
    return Calibration(
        setting={**setting, "batch_size": len(x)}, units=list(model.unit_names),
        params=[sum(p.numel() for p in u.parameters()) for u in model.units],
        out_bytes=[o[0].numel() * o.element_size() for o in outs], batches=sizes, forward_s=fwd, backward_s=bwd,
        optimizer_s=opt, head_s=head, methods=costs, backward_input_s=bwd_in, backward_weight_s=bwd_w, shares=shares,
        env={"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
             "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
             "load_before": load_before, "load_after": os.getloadavg()[0]})
