"""Rounds of local training and aggregation over S workers: the base of `resist` and `localsgd`.

A global model (the run's groups, unit by unit) is copied to S workers at the start of a round; worker
w trains its copy, or only the sub-network it holds this round, for l local iterations of SGD on its own
shard of every batch (the batch's w-th 1/S); then each global tensor becomes the average of that tensor
over the workers that held it (a unit nobody else held is simply copied back), and the next round starts.

- `localsgd` (Stich 2019; Lin et al. 2018): every worker holds every unit: periodic model averaging.
- `resist` (Dun et al., seeds/resist-paper.txt): the partitioned blocks are dealt out anew each round;
  a worker skips (identity) the blocks it does not hold.

Two ways to run the same rounds:
- in process (`LocalRounds`): the S workers one after another in one process (the reference semantics;
  wall-clock simulated). The global model is refreshed with the holders' average after every local
  iteration, so an evaluation at any step sees the model an aggregation at that step would give;
  that changes nothing in training, where workers only read the global model when a round starts.
- on S processes (bench/exec/rounds.py): the aggregation is real torch.distributed collectives.

Conventions:
- Momentum restarts every round (each worker's SGD state is cleared when its round starts), as the
  ResIST paper does; a checkpoint taken at a round boundary is therefore exact. A run resumed in the
  middle of a round starts a fresh, shorter round there.
- BatchNorm running statistics are averaged like parameters (num_batches_tracked is left local).
- Bytes per round (ResIST's Table 1 convention, with which local SGD moves 2 x S x model): every worker
  downloads the sub-model it holds when the round starts and uploads it when the round ends, so
  bytes_per_round = 2 x sum over workers of the bytes (float32 parameters and BN statistics) it holds.
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError

from .base import Backend, Option, WholeStepRule

# round index -> the partitioned units each worker holds (positions in the unit list); units not
# listed in `partitioned` are held by every worker
Partition = Callable[[int], list[list[int]]]

DEFAULT_LOCAL_ITERS = 10


def global_units(bodies) -> list[nn.Module]:
    """The global model as its units, in order (the groups' bodies are consecutive runs of units)."""
    return [u for body in bodies for u in body]


def float_tensors(module: nn.Module) -> list[torch.Tensor]:
    """What aggregation averages: parameters and floating-point buffers (BN running mean / var)."""
    return [t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()]


def nbytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in float_tensors(module))


class LocalRounds:
    """S workers simulated in one process (or, with `ranks=[rank]`, one worker of a real run)."""

    def __init__(self, bodies, hyper, num_workers: int, local_iters: int, partitioned: list[int] | None = None,
                 partition: Partition | None = None, eval_scale: float = 1.0, ranks: list[int] | None = None):
        if num_workers < 1 or local_iters < 1:
            raise ValueError("need at least one worker and one local iteration")
        self.units = global_units(bodies)
        self.hyper = hyper
        self.S, self.l = num_workers, local_iters
        self.partitioned = list(partitioned or [])
        self.partition = partition
        self.ranks = list(range(num_workers)) if ranks is None else list(ranks)
        self.replicas = {w: copy.deepcopy(nn.ModuleList(self.units)) for w in self.ranks}
        h = self.hyper
        self.opts = {w: torch.optim.SGD(self.replicas[w].parameters(), lr=h.lr, momentum=h.momentum,
                                        nesterov=h.nesterov, weight_decay=h.weight_decay) for w in self.ranks}
        for j in self.partitioned:  # the global model runs every block, scaled; workers run theirs unscaled
            self.units[j].scale = eval_scale
        self.eval_scale = eval_scale
        self.round: int | None = None
        self.last_step = -1
        self._plan, self._plan_round = [], None
        self.holders: list[list[int]] = []
        self.compute_s = {w: 0.0 for w in self.ranks}
        self.unit_bytes = [nbytes(u) for u in self.units]

    # --- who holds what ------------------------------------------------------------------------------
    def holdings(self, r: int) -> list[list[int]]:
        """Per unit, the workers that hold it in round r (every worker for an unpartitioned unit)."""
        everyone = list(range(self.S))
        holders = [everyone for _ in self.units]
        if self.partition is not None:
            parts = self.partition(r)
            for j in self.partitioned:
                holders[j] = [w for w in everyone if j in parts[w]]
        return holders

    def held_bytes(self, holders: list[list[int]]) -> list[int]:
        """Bytes of the sub-model each worker holds."""
        return [sum(b for b, hs in zip(self.unit_bytes, holders) if w in hs) for w in range(self.S)]

    def bytes_per_round(self) -> int:
        return 2 * sum(self.held_bytes(self.holders or self.holdings(0)))

    # --- one local iteration on every worker here ----------------------------------------------------
    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One local iteration; returns the mean training loss over the workers run here."""
        if len(x) < self.S:
            raise BenchError(f"a batch of {len(x)} cannot be shared by {self.S} workers")
        r = step // self.l
        if r != self.round:
            self.begin_round(r)
        self.last_step = step
        lr = self.hyper.lr_at(step)
        xs, ys = x.tensor_split(self.S), y.tensor_split(self.S)
        losses = []
        for w in self.ranks:
            t0 = time.perf_counter()
            replica, opt = self.replicas[w], self.opts[w]
            for group in opt.param_groups:
                group["lr"] = lr
            h = xs[w]
            for unit in replica:
                h = unit(h)
            loss = F.cross_entropy(h, ys[w])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()  # parameters without a gradient (blocks not held) are left alone
            losses.append(loss.detach())
            self.compute_s[w] += time.perf_counter() - t0
        if len(self.ranks) == self.S:
            self.publish()
        return torch.stack(losses).mean()

    def begin_round(self, r: int) -> None:
        """Deal the units for round r, give every worker the global model, restart its momentum."""
        self.round, self.holders = r, self.holdings(r)
        for w in self.ranks:
            self.load_replica(w)
            for j in self.partitioned:
                unit = self.replicas[w][j]
                unit.active, unit.scale = w in self.holders[j], 1.0
            self.opts[w].state.clear()

    def load_replica(self, w: int) -> None:
        with torch.no_grad():
            for g, mine in zip(self.units, self.replicas[w]):
                for a, b in zip(float_tensors(mine), float_tensors(g)):
                    a.copy_(b)

    def _publish_plan(self) -> list[tuple[list[torch.Tensor], list[list[torch.Tensor]]]]:
        """Per set of holders: the global tensors and, per holder, its copies of them (made once a round)."""
        by_holders: dict[tuple[int, ...], list[int]] = {}
        for j, hs in enumerate(self.holders):
            by_holders.setdefault(tuple(hs), []).append(j)
        return [([t for j in js for t in float_tensors(self.units[j])],
                 [[t for j in js for t in float_tensors(self.replicas[w][j])] for w in hs])
                for hs, js in by_holders.items()]

    @torch.no_grad()
    def publish(self) -> None:
        """Global tensor <- average of that tensor over the workers that hold it (in process)."""
        if self._plan_round != self.round:
            self._plan, self._plan_round = self._publish_plan(), self.round
        for dst, srcs in self._plan:
            torch._foreach_copy_(dst, srcs[0])
            for src in srcs[1:]:
                torch._foreach_add_(dst, src)
            if len(srcs) > 1:
                torch._foreach_div_(dst, float(len(srcs)))

    # --- what the record says ------------------------------------------------------------------------
    def summary(self) -> dict:
        held = self.held_bytes(self.holders or self.holdings(0))
        return {
            "workers": self.S, "local_iters": self.l, "rounds": self.last_step // self.l + 1,
            "bytes_per_round": 2 * sum(held), "model_bytes": sum(self.unit_bytes),
            "sub_model_bytes": held, "partitioned_units": len(self.partitioned),
            "eval_scale": self.eval_scale,
            "convention": "2 x sum over workers of the float32 parameters + BN statistics each holds "
                          "(sub-model down at the round's start, up at its end; ResIST Table 1)",
            "worker_compute_s": [self.compute_s[w] for w in self.ranks],
        }


class RoundsMethod(WholeStepRule):
    """A method trained in rounds: S = K workers, each on its own shard of every batch, aggregated every
    `local_iters` steps. Subclasses say who holds what (`make_rounds`); on real workers the rounds backend
    asks `make_rounds(ranks=[rank])` for its one worker."""

    backend = Backend.ROUNDS
    options = {"local_iters": Option(DEFAULT_LOCAL_ITERS, "local SGD iterations per round (l)", minimum=1)}

    def __init__(self, groups, options):
        super().__init__(groups, options)
        self.rounds: LocalRounds | None = None

    @classmethod
    def check(cls, model, groups, batch_size, options):
        super().check(model, groups, batch_size, options)
        if batch_size < groups:
            raise BenchError(f"{cls.name}: a batch of {batch_size} cannot be shared by {groups} workers")

    def make_rounds(self, ranks: list[int] | None = None) -> LocalRounds:
        return LocalRounds(self.bodies, self.hyper, len(self.groups), self.opts["local_iters"], ranks=ranks)

    def step(self, step, x, y):
        if self.rounds is None:
            self.rounds = self.make_rounds()
        return self.rounds.step(step, x, y)

    def extras(self) -> dict:
        return {"comm": self.rounds.summary()} if self.rounds is not None else {}
