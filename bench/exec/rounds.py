"""The rounds backend: S workers for the round-based methods (resist, localsgd; methods/rounds.py).

    python -m bench run --method resist --model preact_resnet50 --groups 4 --executor distributed

Every rank builds what the in-process executor builds (same seed, same initial weights, same batches),
keeps one worker of the method's rounds (`make_rounds(ranks=[rank])`: its own shard of every batch,
the sub-model it holds this round) and, at the end of each round, aggregates with collectives, as the
ResIST authors did (Section 2.5) and with the same primitives for both methods:
- units every worker holds: one all-reduce of all of them, flattened (local SGD: the whole model);
- a partitioned block: reduce to the lowest-ranked holder within the holders' process group, which
  averages it, then broadcast from there to the workers that hold the block next round (process groups
  are made once per set of ranks and reused). No worker needs the whole model, except rank 0 when it
  evaluates: before an evaluation the blocks it lacks are sent to it (evaluation traffic, not counted).

Measured: per worker the time spent inside the aggregation's collectives (waiting for the slowest worker
included) and the bytes it sent by the collectives' accounting (ring all-reduce: 2 (S-1)/S x N each;
reduce: N per non-root holder; broadcast: N per receiver, sent by the root); beside it the
ResIST-Table-1 bytes per round (the same number as the in-process record). Evaluations happen at round ends.
What the collectives move is parameters (and float buffers), which stay float32 under autocast: nothing
here depends on the run's precision.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist

from bench.errors import BenchError
from methods.rounds import LocalRounds, float_tensors

from .engine import WorkerEngine
from .meter import Meter


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def _unflat(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


class Collectives:
    """The aggregation of one round on this rank, and the evaluation sync to rank 0."""

    def __init__(self, rounds: LocalRounds, rank: int, world: int, meter: Meter):
        self.rounds, self.rank, self.world, self.meter = rounds, rank, world, meter
        self.comms: dict[tuple[int, ...], object] = {}
        self.fresh = [True] * len(rounds.units)  # whether this rank's copy of the global unit is current

    def comm(self, ranks) -> object:
        """The process group of `ranks` (every rank calls this, in the same order: new_group is collective)."""
        key = tuple(sorted(ranks))
        if len(key) == self.world:
            return dist.group.WORLD
        if key not in self.comms:
            self.comms[key] = dist.new_group(list(key))
        return self.comms[key]

    def _timed(self, fn, *args, **kwargs):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        self.meter.wait_s += time.perf_counter() - t0

    def aggregate(self) -> None:
        """End of the current round: average over holders; hand partitioned blocks to next round's holders."""
        ro, me, S = self.rounds, self.rank, self.world
        replica, holders = ro.replicas[me], ro.holders
        nxt = ro.holdings(ro.round + 1)
        shared = [j for j, hs in enumerate(holders) if len(hs) == S]
        tensors = [t for j in shared for t in float_tensors(replica[j])]
        flat = _flat(tensors)
        if S > 1:
            self._timed(dist.all_reduce, flat)
            flat /= S
            moved = int(2 * (S - 1) / S * flat.numel() * flat.element_size())
            self.meter.bytes_sent += moved
            self.meter.bytes_recv += moved
        _unflat(flat, tensors)
        for j in shared:
            self._to_global(j)
        for j in ro.partitioned:
            hs, root = holders[j], min(holders[j])
            dests = sorted(set(nxt[j]) | {root})
            g_hold, g_dest = self.comm(hs), self.comm(dests)
            tensors = float_tensors(replica[j])
            flat = _flat(tensors)
            n = flat.numel() * flat.element_size()
            if len(hs) > 1 and me in hs:
                self._timed(dist.reduce, flat, dst=root, group=g_hold)
                if me == root:
                    flat /= len(hs)
                    self.meter.bytes_recv += (len(hs) - 1) * n
                else:
                    self.meter.bytes_sent += n
            if len(dests) > 1 and me in dests:
                self._timed(dist.broadcast, flat, src=root, group=g_dest)
                if me == root:
                    self.meter.bytes_sent += (len(dests) - 1) * n
                else:
                    self.meter.bytes_recv += n
            if me in dests:
                _unflat(flat, tensors)
                self._to_global(j)
            else:
                self.fresh[j] = False

    def _to_global(self, j: int) -> None:
        with torch.no_grad():
            for g, r in zip(float_tensors(self.rounds.units[j]), float_tensors(self.rounds.replicas[self.rank][j])):
                g.copy_(r)
        self.fresh[j] = True

    def sync_for_eval(self) -> None:
        """Rank 0 gets every partitioned block it does not have from the block's root (not timed here)."""
        gathered = [None] * self.world
        dist.all_gather_object(gathered, [j for j, f in enumerate(self.fresh) if f])
        have0 = set(gathered[0])
        for j in self.rounds.partitioned:
            if j in have0:
                continue
            src = min(r for r in range(self.world) if j in gathered[r])
            tensors = float_tensors(self.rounds.units[j])
            flat = _flat(tensors)
            if self.rank == src:
                dist.send(flat, dst=0)
            elif self.rank == 0:
                dist.recv(flat, src=src)
                _unflat(flat, tensors)
                self.fresh[j] = True


class RoundsWorkers(WorkerEngine):
    own_schedule = "rounds"

    @classmethod
    def validate(cls, cfg, dcfg, method, options):
        super().validate(cfg, dcfg, method, options)
        if cfg.device != "cpu":
            raise BenchError(f"{cfg.method} on real workers runs on cpu (gloo) for now, not {cfg.device}")

    def setup(self) -> None:
        self.own = list(range(len(self.trainer.parts)))
        self.rounds = self.trainer.rounds = self.trainer.make_rounds(ranks=[self.rank])
        self.collectives = Collectives(self.rounds, self.rank, self.world, self.meter)
        l, steps = self.rounds.l, self.cfg.steps
        self.round_ends = sorted({min(steps, e) for e in range(l, steps + l, l)})

    def align(self, step: int) -> int:
        """Evaluations wait for the end of the round they fall in."""
        return next(e for e in self.round_ends if e >= step)

    def steps(self, start, end, on_step):
        ends = set(self.round_ends)
        for step in range(start, end):
            x, y = self.run.stream.batch(step)
            self.track(self.rounds.step(step, x, y))
            if step + 1 in ends:
                self.collectives.aggregate()
            on_step()

    def gather(self) -> None:
        self.collectives.sync_for_eval()

    def start_timing(self) -> None:
        super().start_timing()
        self.rounds.compute_s[self.rank] = 0.0

    def worker_stats(self, train_time, timed_steps):
        self.clock.seconds["forward"] = self.rounds.compute_s[self.rank]  # local iterations: forward and backward
        stats = super().worker_stats(train_time, timed_steps)
        summary = self.rounds.summary()
        summary.pop("worker_compute_s", None)
        n_rounds, workers = len(self.round_ends), stats["workers"]
        summary.update(rounds=n_rounds, simulated=False,
                       wire_bytes_per_round=sum(w["bytes_sent"] for w in workers) / n_rounds,
                       aggregation_s_per_round=max(w["comm_wait_s"] for w in workers) / n_rounds)
        return {**stats, "comm": summary}
