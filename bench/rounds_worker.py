"""Real workers for the round-based methods (`resist`, `localsgd`): S processes over torch.distributed.

    python -m bench run --method resist --model preact_resnet50 --groups 4 --executor distributed

starts S = --groups processes on this machine (`python -m bench.rounds_worker`, gloo on CPU, one
thread each by default). Every rank builds what the in-process runner builds (bench.runner.Run: same
seed, same initial weights, same batches), keeps one worker of bench.local_rounds.LocalRounds (its own
shard of every batch, the sub-model it holds this round) and, at the end of each round, aggregates with
collectives, as the ResIST authors did (Section 2.5) and with the same primitives for both methods:
- units every worker holds: one all-reduce of all of them, flattened (local SGD: the whole model);
- a partitioned block: reduce to the lowest-ranked holder within the holders' group, which averages it,
  then broadcast from there to the workers that hold the block next round (subgroups are made once
  per set of ranks and reused). No worker needs the whole model, except rank 0 when it evaluates:
  before an evaluation the blocks it lacks are sent to it (evaluation traffic, not counted).

Measured: wall-clock of the training loop (evaluation apart), per worker the time spent inside the
aggregation's collectives (waiting for the slowest worker included) and the bytes it sent by the
collectives' accounting (ring all-reduce: 2 (S-1)/S x N each; reduce: N per non-root holder;
broadcast: N per receiver, sent by the root); beside it the ResIST-Table-1 bytes per round of
bench.local_rounds (the same number as the in-process record). Evaluations happen at round ends.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from .config import RunConfig
from .distributed import DistConfig, LocalJob, mark_failed_at, validate, watch
from .errors import BenchError
from .local_rounds import LocalRounds, float_tensors
from .records import add_evaluation, last_evaluation, new_record, write_record
from .worker import exit_failed, peak_rss_mb, reset_peak_rss, rss_mb


def record_path(cfg: RunConfig) -> Path:
    return Path(cfg.out) / f"{cfg.run_id}_dist-rounds.json"


# --- launch --------------------------------------------------------------------------------------
def _mark_failed(cfg: RunConfig, error: str) -> Path:
    return mark_failed_at(record_path(cfg), cfg, "rounds", error)


def run_rounds_distributed(cfg: RunConfig, dcfg: DistConfig, log_dir: Path | None = None) -> Path:
    """Start the S workers here, wait for them; the record's path, or BenchError if one failed."""
    cfg = validate(cfg, dcfg)  # also: the method supports the model
    if cfg.device != "cpu":
        raise BenchError(f"{cfg.method} on real workers runs on cpu (gloo) for now, not {cfg.device}")
    if dcfg.schedule != "lockstep":
        raise BenchError(f"{cfg.method} has its own schedule (rounds of local iterations): drop --schedule")
    watch(LocalJob(cfg, dcfg, log_dir, module="bench.rounds_worker"), lambda error: _mark_failed(cfg, error))
    return record_path(cfg)


# --- one worker ----------------------------------------------------------------------------------
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

    def __init__(self, rounds: LocalRounds, rank: int, world: int):
        self.rounds, self.rank, self.world = rounds, rank, world
        self.groups: dict[tuple[int, ...], object] = {}
        self.wait_s, self.bytes_sent, self.bytes_recv = 0.0, 0, 0
        self.fresh = [True] * len(rounds.units)  # whether this rank's copy of the global unit is current

    def group(self, ranks) -> object:
        """The process group of `ranks` (every rank calls this, in the same order: new_group is collective)."""
        key = tuple(sorted(ranks))
        if len(key) == self.world:
            return dist.group.WORLD
        if key not in self.groups:
            self.groups[key] = dist.new_group(list(key))
        return self.groups[key]

    def _timed(self, fn, *args, **kwargs):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        self.wait_s += time.perf_counter() - t0

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
            self.bytes_sent += moved
            self.bytes_recv += moved
        _unflat(flat, tensors)
        for j in shared:
            self._to_global(j)
        for j in ro.partitioned:
            hs, root = holders[j], min(holders[j])
            dests = sorted(set(nxt[j]) | {root})
            g_hold, g_dest = self.group(hs), self.group(dests)
            tensors = float_tensors(replica[j])
            flat = _flat(tensors)
            n = flat.numel() * flat.element_size()
            if len(hs) > 1 and me in hs:
                self._timed(dist.reduce, flat, dst=root, group=g_hold)
                if me == root:
                    flat /= len(hs)
                    self.bytes_recv += (len(hs) - 1) * n
                else:
                    self.bytes_sent += n
            if len(dests) > 1 and me in dests:
                self._timed(dist.broadcast, flat, src=root, group=g_dest)
                if me == root:
                    self.bytes_sent += (len(dests) - 1) * n
                else:
                    self.bytes_recv += n
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


def worker_main(cfg: RunConfig, dcfg: DistConfig) -> None:
    from methods import create_method

    from . import data as datasets
    from .pipeline import evaluate
    from .runner import Run

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(dcfg.threads_per_worker)
    dist.init_process_group("gloo", timeout=timedelta(seconds=dcfg.timeout_s))
    cfg = validate(replace(cfg, threads=dcfg.threads_per_worker), dcfg)
    if world != cfg.groups:
        raise BenchError(f"{world} workers for S = --groups {cfg.groups}: start one worker per sub-model")
    r = Run(replace(cfg, device="cpu"))
    rounds = create_method(cfg.method).make_rounds(r.stages, ranks=[rank])
    comm = Collectives(rounds, rank, world)
    path = record_path(cfg)
    record = None
    if rank == 0:
        record = new_record(cfg.to_dict(), "cpu")
        record.update(run_id=path.stem, executor="distributed", parallel="parallel", schedule="rounds",
                      split=r.split_info(), workers=[])
        record["config"]["distributed"] = {**vars(dcfg), "world_size": world, "backend": dist.get_backend()}
        record["env"]["torch_threads"] = torch.get_num_threads()
        write_record(record, path)
    l, steps = rounds.l, cfg.steps
    round_ends = sorted({min(steps, e) for e in range(l, steps + l, l)})
    evals = {steps} | {next(e for e in round_ends if e >= t) for t in range(cfg.eval_every, steps, cfg.eval_every)}
    train_time, loss_sum, loss_n, start = 0.0, 0.0, 0, 0
    rss_start = rss_mb()  # the model, its replica and the data are built: this worker's baseline
    reset_peak_rss()
    dist.barrier()
    for end in sorted(evals):
        t0 = time.perf_counter()
        for step in range(start, end):
            x, y = r.stream.batch(step)
            loss = rounds.step(step, x, y)
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            if step + 1 in round_ends:
                comm.aggregate()
        dist.barrier()
        dt = time.perf_counter() - t0
        train_time += dt
        losses = [None] * world
        dist.all_gather_object(losses, (loss_sum, loss_n))
        interval_loss = sum(s for s, _ in losses) / max(1, sum(n for _, n in losses))
        loss_sum, loss_n = 0.0, 0
        comm.sync_for_eval()
        if rank == 0:
            t1 = time.perf_counter()
            final = end == steps
            ev = evaluate(r.stages, datasets.eval_batches(r.ds, 500, "cpu", limit=None if final else cfg.eval_limit))
            record["final"]["eval_time_s"] = record["final"].get("eval_time_s", 0.0) + time.perf_counter() - t1
            c = record["curves"]
            for key, value in (("step", end), ("train_loss", interval_loss), ("step_time_s", dt / (end - start)),
                               ("train_time_s", train_time)):
                c[key].append(value)
            add_evaluation(c, ev)
            write_record(record, path)
            print(f"{path.stem}: step {end}/{steps} loss {interval_loss:.3f} acc {ev['test_acc']:.1f}", flush=True)
        dist.barrier()
        start = end
    mine = {"rank": rank, "steps": steps, "step_time_s": train_time / steps,
            "compute_s": rounds.compute_s[rank], "comm_wait_s": comm.wait_s,
            "comm_share": comm.wait_s / train_time if train_time else None,
            "bytes_sent": comm.bytes_sent, "bytes_recv": comm.bytes_recv,
            "peak_rss_mb": peak_rss_mb(), "rss_start_mb": rss_start,
            "threads": torch.get_num_threads()}
    workers = [None] * world
    dist.all_gather_object(workers, mine)
    if rank == 0:
        summary = rounds.summary()
        summary.pop("worker_compute_s", None)
        n_rounds = len(round_ends)
        summary.update(rounds=n_rounds, simulated=False,
                       wire_bytes_per_round=sum(w["bytes_sent"] for w in workers) / n_rounds,
                       aggregation_s_per_round=max(w["comm_wait_s"] for w in workers) / n_rounds)
        c = record["curves"]
        record.update(status="completed", workers=workers, comm=summary)
        record["final"].update({
            "steps": steps, **last_evaluation(c), "train_time_s": train_time,
            "samples_per_s": steps * cfg.batch_size / train_time if train_time else None,
            "comm_share_max": max(w["comm_share"] for w in workers),
        })
        write_record(record, path)
        print(f"{path.stem}: completed, test acc {c['test_acc'][-1]:.2f}, "
              f"{record['final']['samples_per_s']:.0f} samples/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.rounds_worker --config FILE` (written by the local launch)."""
    argv = sys.argv[1:] if argv is None else argv
    cfg = None
    try:
        d = json.loads(Path(argv[argv.index("--config") + 1]).read_text())
        cfg, dcfg = RunConfig.from_dict(d["run"]), DistConfig.from_dict(d["dist"])
        worker_main(cfg, dcfg)
        dist.destroy_process_group()
        return 0
    except BaseException as e:
        exit_failed(e, None if cfg is None else lambda msg: _mark_failed(cfg, msg))


if __name__ == "__main__":
    sys.exit(main())
