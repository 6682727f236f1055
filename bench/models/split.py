"""Cut a UnitModel into K consecutive layer groups.

Three rules:
- ``paper``: the authors' own cut where their code gives one (hjdw2/Local-critic-training):
  ResNet-50 with K=4 at the section boundaries, stem+conv2 | conv3 | conv4 | conv5 + fc (LC(3).py;
  it is also what the parameter counts of the paper's Table VIII add up to); ResNet-101 with K=2
  after conv4_10 (LCT_n1.py); ResNet-101 with K=4 stem+conv2+conv3 (7 blocks) | 8 conv4 | 8 conv4 |
  7 conv4 + conv5 + fc: LCT_n3.py's cuts, but its own network has 21 conv4 blocks, so its last group
  holds 5 of them (that network is `resnet95`, which the same cuts split exactly as LCT_n3.py does);
  ResNet-32/110 with K = 2, 3, 4, 8, 16 as the InfoPro authors cut them (their DGL and InfoPro numbers
  are on these cuts). Everywhere else the paper's "layers as even as possible": the stem and the residual
  blocks are the units a group counts, the first K-1 groups get floor(U/K) units each and the last group
  takes the rest plus the classifier.
- ``balanced``: minimise the most expensive group, cost = forward FLOPs of the group's units
  plus those of the head placed after it, measured with torch.utils.flop_counter on one sample.
- ``timed``: the same minimisation, cost = measured seconds of forward + backward of each unit
  and head on a training batch of the run, on the run's device and threads. FLOPs are a poor proxy
  for time where tensors are small (a CPU-profile ResNet on 8x8 digits: the deep blocks work on
  2x2 and 1x1 maps, and their time is per-operation overhead). Timings vary from run to run, so
  the runner measures once and keeps the cut in the config (``split_bounds``): a resumed run and
  every worker of a distributed run use that cut, never a new measurement.
The balanced and timed rules price the head after a group as an LCT critic for every method, so
that every method with K groups (bp, gpipe, dni, ...) gets the same cut.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.errors import BenchError

from .unit import UnitModel

SPLIT_RULES = ("paper", "balanced", "timed")
TIMING_REPS = 10  # timed rule: the fastest of this many forward + backward passes per unit, after one warm-up


@dataclass
class Split:
    """Group k holds units[bounds[k]:bounds[k+1]]."""

    bounds: list[int]

    @property
    def sizes(self) -> list[int]:
        return [b - a for a, b in zip(self.bounds, self.bounds[1:])]

    def groups(self, model: UnitModel) -> list[nn.Sequential]:
        return [nn.Sequential(*model.units[a:b]) for a, b in zip(self.bounds, self.bounds[1:])]

    def names(self, model: UnitModel) -> list[list[str]]:
        return [model.unit_names[a:b] for a, b in zip(self.bounds, self.bounds[1:])]


def check_groups(model: UnitModel, k: int) -> None:
    """One-line error for a split that cannot exist (before anything is built or written)."""
    check_count(model.name, len(model.units), k)


def check_count(name: str, units: int, k: int) -> None:
    """check_groups for a network known by its name and number of units."""
    cuttable = units - 1  # the classifier never stands alone
    if k < 1:
        raise BenchError(f"--groups must be >= 1, got {k}")
    if k > cuttable:
        raise BenchError(f"{name} has {cuttable} blocks to split; cannot make {k} groups")


# The authors' cuts (see the module docstring): (network, K) -> the first unit of every group after the first.
# The pre-activation ResNets (the authors' own blocks) share them.
AUTHORS_CUTS = {
    ("resnet50", 4): ("conv3_1", "conv4_1", "conv5_1"),    # LC(3).py
    ("resnet101", 2): ("conv4_11",),                       # LCT_n1.py
    ("resnet101", 4): ("conv4_1", "conv4_9", "conv4_17"),  # LCT_n3.py's cuts on ResNet-101's 23 conv4 blocks
    ("resnet95", 4): ("conv4_1", "conv4_9", "conv4_17"),   # LCT_n3.py's own network: 8 + 8 + 5 conv4 blocks
}

# The InfoPro authors' cuts of ResNet-32/110 (blackfeather-wang/InfoPro-Pytorch, networks/configs.py, `InfoPro`),
# which their DGL and InfoPro numbers use: each [stage, layer] ends a local module after block `layer`
# (0-based) of `stage` (1..3; stage 0 is the stem).
INFOPRO_CUTS = {
    ("resnet32", 2): [[2, 1]],
    ("resnet32", 3): [[1, 4], [2, 4]],
    ("resnet32", 4): [[1, 2], [2, 1], [3, 0]],
    ("resnet32", 8): [[1, 0], [1, 2], [1, 4], [2, 1], [2, 3], [3, 0], [3, 2]],
    ("resnet32", 16): [[0, 0], [1, 0], [1, 1], [1, 2], [1, 3], [1, 4], [2, 0], [2, 1], [2, 2], [2, 3], [2, 4],
                       [3, 0], [3, 1], [3, 2], [3, 3]],
    ("resnet110", 2): [[2, 8]],
    ("resnet110", 3): [[1, 17], [2, 17]],
    ("resnet110", 4): [[1, 11], [2, 7], [3, 3]],
    ("resnet110", 8): [[1, 4], [1, 11], [2, 0], [2, 7], [2, 14], [3, 3], [3, 10]],
    ("resnet110", 16): [[1, 1], [1, 4], [1, 7], [1, 10], [1, 13], [1, 16], [2, 1], [2, 4], [2, 7], [2, 11],
                        [2, 15], [3, 1], [3, 5], [3, 9], [3, 13]],
}


def _first_after(stage: int, layer: int, blocks: int) -> str:
    """The unit that starts the next group after InfoPro's [stage, layer] (blocks per section)."""
    if stage == 0:
        return "conv2_1"
    return f"conv{stage + 1}_{layer + 2}" if layer + 1 < blocks else f"conv{stage + 2}_1"


AUTHORS_CUTS.update({(name, k): tuple(_first_after(s, l, 5 if name == "resnet32" else 18) for s, l in cuts)
                     for (name, k), cuts in INFOPRO_CUTS.items()})


def paper_split(model: UnitModel, k: int) -> Split:
    return Split(paper_bounds(model.name, model.unit_names, k))


def paper_bounds(name: str, unit_names: list[str], k: int) -> list[int]:
    """The paper rule's cut of a network known by its name and unit names (no weights needed)."""
    n = len(unit_names)
    check_count(name, n, k)
    cuts = AUTHORS_CUTS.get((name.removeprefix("preact_"), k))
    if cuts is not None:
        return [0] + [unit_names.index(unit) for unit in cuts] + [n]
    per = (n - 1) // k
    return [per * i for i in range(k)] + [n]


def unit_flops(model: UnitModel, input_shape: tuple[int, ...]) -> tuple[list[int], list[tuple[int, ...]]]:
    """Forward FLOPs of each unit on one sample, and each unit's output shape (without batch)."""
    flops, shapes = [], []
    x = torch.zeros(1, *input_shape)
    was_training = [u.training for u in model.units]
    with torch.no_grad():
        for unit in model.units:
            unit.eval()
            with FlopCounterMode(display=False) as counter:
                x = unit(x)
            flops.append(counter.get_total_flops())
            shapes.append(tuple(x.shape[1:]))
    for unit, mode in zip(model.units, was_training):
        unit.train(mode)
    return flops, shapes


def module_flops(module: nn.Module, in_shape: tuple[int, ...], *extra: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, *in_shape), *extra)
    return counter.get_total_flops()


def min_max_partition(costs: list[float], head_cost: list[float], k: int) -> Split:
    """Contiguous partition of units with costs[j] into k groups minimising the largest group cost, where a
    group ending before unit b < n also pays head_cost[b] (its head); the last group owns the classifier
    and never holds it alone (dynamic programme over cuts)."""
    n = len(costs)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)

    def cost(a: int, b: int) -> float:
        return prefix[b] - prefix[a] + (head_cost[b] if b < n else 0)

    inf = float("inf")
    # best[g][b]: smallest max-cost covering units[:b] with g groups; the last group must own the classifier
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for g in range(1, k + 1):
        for b in range(g, n + 1):
            for a in range(g - 1, b):
                if g == k and (b != n or a > n - 2):  # last group: to the end, never the classifier alone
                    continue
                value = max(best[g - 1][a], cost(a, b))
                if value < best[g][b]:
                    best[g][b], cut[g][b] = value, a
    bounds = [n]
    for g in range(k, 0, -1):
        bounds.append(cut[g][bounds[-1]])
    bounds.reverse()
    return Split(bounds)


def balanced_split(model: UnitModel, k: int, input_shape: tuple[int, ...],
                   head_for: Callable[[tuple[int, ...]], nn.Module] | None = None) -> Split:
    """Minimise the largest group cost in forward FLOPs (units + the head after the group)."""
    check_groups(model, k)
    flops, shapes = unit_flops(model, input_shape)
    n = len(model.units)
    head_cost = [0] * (n + 1)  # cost of the head that would sit after unit j-1 (a group ending at j < n)
    if head_for is not None:
        for j in range(1, n):
            head_cost[j] = module_flops(head_for(shapes[j - 1]), shapes[j - 1])
    return min_max_partition(flops, head_cost, k)


def clock(device: torch.device) -> float:
    """Seconds now, after the device's queued work (the timed split's and the calibration's timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def flat_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with any leading axes (a sequence model predicts at every time step)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def unit_seconds(model: UnitModel, batch: tuple[torch.Tensor, torch.Tensor],
                 head_for: Callable[[tuple[int, ...]], nn.Module] | None = None) -> tuple[list[float], list[float]]:
    """Measured seconds of forward + backward of every unit, run as the groups run them: in a chain on a real
    training batch, each unit's input cut from the graph so that its backward is its own; and head_cost[j],
    the forward, cross-entropy and backward of the head after unit j-1 on that unit's real output. The
    fastest of TIMING_REPS passes after a warm-up (other load only ever adds time). Runs on copies, on the
    batch's device: the model's weights and BatchNorm statistics are left as they are. (A batch of zeros
    is no stand-in: on CPU it ran some blocks three times slower than real activations.)"""
    fwd, bwd, head_cost = unit_times(model, batch, head_for)
    return [f + b for f, b in zip(fwd, bwd)], head_cost


def unit_times(model: UnitModel, batch: tuple[torch.Tensor, torch.Tensor],
               head_for: Callable[[tuple[int, ...]], nn.Module] | None = None,
               reps: int = TIMING_REPS, statistic: Callable[[list[float]], float] = min
               ) -> tuple[list[float], list[float], list[float]]:
    """unit_seconds with forward and backward apart: (forward seconds, backward seconds, head_cost), the
    `statistic` of `reps` passes each (the fastest for the timed split, which compares units; the mean for the
    cost model of bench/predict, which predicts a run's mean step and needs them apart)."""
    x, y = batch
    device = x.device
    # the heads built here must not move the global RNG: the run's own critics are drawn after the split
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        fwd, bwd, head = _unit_times(model, x, y, head_for, reps)
    head_cost = [statistic(h) if h else 0.0 for h in head]
    return [statistic(t) for t in fwd], [statistic(t) for t in bwd], head_cost


def chain_forward(units: nn.ModuleList, x: torch.Tensor):
    """The units' forward in a chain, as the groups run them (each unit's input cut from the graph, so that its
    backward is its own): (inputs, outputs, forward seconds) per unit."""
    inputs, outputs, fwd, h = [], [], [], x
    for j, unit in enumerate(units):
        inp = h if j == 0 else h.detach().requires_grad_(True)
        t0 = clock(x.device)
        h = unit(inp)
        t1 = clock(x.device)
        inputs.append(inp)
        outputs.append(h)
        fwd.append(t1 - t0)
    return inputs, outputs, fwd


def chain_pass(units: nn.ModuleList, x: torch.Tensor, y: torch.Tensor):
    """One timed pass of the units in a chain (chain_forward, then each unit's backward from the loss or the
    next unit's input gradient): (inputs, outputs, forward seconds, backward seconds) per unit."""
    device = x.device
    inputs, outputs, fwd = chain_forward(units, x)
    bwd, grad = [0.0] * len(units), None
    for j in reversed(range(len(units))):
        t0 = clock(device)
        if grad is None:
            flat_ce(outputs[j], y).backward()
        else:
            outputs[j].backward(grad)
        t1 = clock(device)
        grad = inputs[j].grad
        bwd[j] = t1 - t0
    return inputs, outputs, fwd, bwd


def _unit_times(model, x, y, head_for, reps):
    """Every pass's seconds, after one warm-up: per unit forward and backward, and per boundary the head."""
    device = x.device
    units = copy.deepcopy(model.units).to(device).train()
    n = len(units)
    heads: dict[int, nn.Module] = {}
    fwd, bwd, head = [[] for _ in range(n)], [[] for _ in range(n)], [[] for _ in range(n + 1)]
    for rep in range(reps + 1):
        _, outputs, f, g = chain_pass(units, x, y)
        if rep:
            for j in range(n):
                fwd[j].append(f[j])
                bwd[j].append(g[j])
        if head_for is None:
            continue
        for j in range(1, n):
            out = outputs[j - 1].detach().requires_grad_(True)
            if j not in heads:
                heads[j] = head_for(tuple(out.shape[1:])).to(device)
            t0 = clock(device)
            flat_ce(heads[j](out), y).backward()
            t1 = clock(device)
            if rep:
                head[j].append(t1 - t0)
    return fwd, bwd, head


def timed_split(model: UnitModel, k: int, batch: tuple[torch.Tensor, torch.Tensor],
                head_for: Callable[[tuple[int, ...]], nn.Module] | None = None) -> Split:
    """Minimise the largest group cost in measured seconds (forward + backward of units and head)."""
    check_groups(model, k)
    unit_cost, head_cost = unit_seconds(model, batch, head_for)
    return min_max_partition(unit_cost, head_cost, k)


def explicit_split(model: UnitModel, k: int, bounds: list[int]) -> Split:
    """A cut given as unit indices [0, b_1, ..., len(units)] (e.g. a timed split kept in a run's config)."""
    check_groups(model, k)
    n = len(model.units)
    bounds = [int(b) for b in bounds]
    if (len(bounds) != k + 1 or bounds[0] != 0 or bounds[-1] != n or any(a >= b for a, b in zip(bounds, bounds[1:]))
            or bounds[-2] > n - 2):
        raise BenchError(f"split bounds {bounds} do not cut {model.name}'s {n} units into {k} groups "
                         f"(0 first, {n} last, increasing, the classifier never alone)")
    return Split(bounds)


def make_split(rule: str, model: UnitModel, k: int, input_shape: tuple[int, ...],
               head_for: Callable[[tuple[int, ...]], nn.Module] | None = None, bounds: list[int] | None = None,
               batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> Split:
    """The split of `rule`; given `bounds` (a cut measured earlier), that cut, whatever the rule. The timed
    rule measures on `batch` (a training batch of the run, on its device)."""
    if rule not in SPLIT_RULES:
        raise BenchError(f"unknown split rule {rule!r}; valid rules: {', '.join(SPLIT_RULES)}")
    if bounds is not None:
        return explicit_split(model, k, bounds)
    if rule == "paper":
        return paper_split(model, k)
    if rule == "balanced":
        return balanced_split(model, k, input_shape, head_for)
    if batch is None:
        raise ValueError("the timed split rule needs a training batch to measure on")
    return timed_split(model, k, batch, head_for)
