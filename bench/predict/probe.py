"""The link measurement (`--link measured`): two local workers time one-way transfers of several sizes
with the suite's own transfer probe (bench.exec.engine.time_exchange, the paper-style estimate's), on
the backend a distributed run of this device uses (gloo on CPU, NCCL on GPUs), and the times are fitted
to latency + bytes / bandwidth (link.fit); then all-reduces of data-parallel bucket sizes, fitted the
same way to the ring's n / bandwidth + 2 latency (two workers), the link's `ring`; then, on a CPU host, a
pipeline of every torch.distributed.pipelining schedule on stages that compute next to nothing, whose CPU
seconds per micro-batch action are the runtime's own work per action (posting its p2p ops, splitting,
bookkeeping, gloo's threads), the link's `action_s` (GPipe's) and `actions` (each schedule's: the multi-stage
ones interpret their action lists and cost about twice as much per action); and, on a CPU host, how much later
a receive posted after its send completes while the sender computes than while it sleeps, the link's
`rendezvous_s` (the sender's communication thread waits for the scheduler's slice: simulate.py).

    python -m bench predict ... --link measured      # measure_link() starts the two workers
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import RunConfig
from ..exec.engine import init_comms, time_allreduce, time_exchange
from ..exec.launch import CONFIG_ENV, LocalJob, watch
from ..exec.settings import DistConfig
from .calibration import OneWeight
from .link import LinkModel, fit

SIZES = (4 << 10, 64 << 10, 512 << 10, 2 << 20, 8 << 20)  # bytes per message
ALLREDUCE_SIZES = (64 << 10, 512 << 10, 1 << 20, 4 << 20)  # bytes per all-reduce
REPS = 7  # timed transfers per size (the median counts), after one warm-up
PIPE_MICROBATCHES, PIPE_STEPS, PIPE_SHAPE = 8, 50, (16, 256)  # the pipeline probe: its steps, one micro-batch
LATE_PHASES, LATE_RECEIVES, LATE_BYTES, LATE_GAP_S = 4, 25, 256 << 10, 0.005  # the rendezvous probe (per mode)
RESULT = "link-probe.json"


def measure_link(device: str = "cpu") -> LinkModel:
    """Start two workers here, time the transfers, fit the link (one-line BenchError if a worker fails)."""
    with tempfile.TemporaryDirectory(prefix="lctbench-link-") as out:
        cfg = RunConfig(groups=2, device=device, out=out)  # two workers; the method plays no part
        watch(LocalJob(cfg, DistConfig(timeout_s=120.0), module="bench.predict.probe"), lambda error: Path(out))
        got = json.loads((Path(out) / RESULT).read_text())
    link = fit(got["bytes"], got["seconds"], name=f"measured {got['backend']} ({device})")
    ring = fit(got["allreduce_bytes"], got["allreduce_seconds"])  # n / bandwidth + 2 latency with two workers
    actions = got["actions"]
    return replace(link, ring=(ring.bandwidth, ring.latency / 2), action_s=actions.get("gpipe", 0.0),
                   actions=tuple(sorted(actions.items())), rendezvous_s=got.get("rendezvous_s", 0.0))


def rendezvous_s(comms, rank: int, device: torch.device) -> float:
    """In LATE_PHASES turns, rank 0 posts LATE_RECEIVES sends at once, then sleeps, or computes (one thread, matrix
    products), for longer than rank 1 takes to post each receive LATE_GAP_S after the last one came, timing it.
    The mean receive with a computing sender minus the mean with a sleeping one (>= 0): the mean, because the
    delay comes or not by where the scheduler wakes the sender's thread (0.2 or 2.9 ms here, phase by phase). 0 on
    a GPU, whose host does not compute."""
    if device.type != "cpu":
        return 0.0
    buf, sums = torch.zeros(LATE_BYTES // 4), torch.zeros(2, dtype=torch.float64)
    for computing in (False, True) * LATE_PHASES:
        dist.barrier(group=comms.ctrl)
        if rank == 0:
            sends = [dist.isend(buf, 1, group=comms.fwd, tag=i) for i in range(LATE_RECEIVES)]
            a, end = torch.randn(128, 128), time.perf_counter() + LATE_RECEIVES * (LATE_GAP_S + 0.01) + 0.2
            while time.perf_counter() < end:  # (gloo's sends say they are completed only once waited for)
                if computing:
                    a = torch.tanh(a @ a)
                else:
                    time.sleep(1e-4)
            for w in sends:
                w.wait()
            continue
        for i in range(LATE_RECEIVES):
            time.sleep(LATE_GAP_S)
            t0 = time.perf_counter()
            dist.recv(buf, 0, group=comms.fwd, tag=i)
            sums[int(computing)] += time.perf_counter() - t0
    dist.all_reduce(sums, group=comms.ctrl)  # rank 0 adds nothing
    return max(0.0, (sums[1] - sums[0]).item() / (LATE_RECEIVES * LATE_PHASES))


def pipeline_actions_s(comms, rank: int, device: torch.device) -> dict[str, float]:
    """CPU seconds per micro-batch compute action (a forward, a backward or one of its halves) of every schedule
    of torch.distributed.pipelining on two workers (two stages, or four for the multi-stage ones, placed as
    torch expects), whose stages compute next to nothing: the mean of both workers, after two warm-up steps. A
    blocked receive costs no CPU time, so what remains is the runtime's own work; none on a GPU, where the host
    runs ahead of the kernels."""
    if device.type != "cpu":
        return {}
    from torch.distributed.pipelining import PipelineStage

    from ..exec import pp_schedules

    m, example, out = PIPE_MICROBATCHES, torch.empty(*PIPE_SHAPE), {}
    loss = lambda o, y: (o - y).square().mean()  # noqa: E731
    x = torch.randn(m * PIPE_SHAPE[0], PIPE_SHAPE[1])
    for name, cls in pp_schedules.available().items():
        multi = pp_schedules.is_multi(name)
        n = 2 * pp_schedules.stages_per_rank(name, None)
        own = pp_schedules.placement(name, n, 2)[rank]
        # a stage after the first needs an input that requires a gradient, or it sends none back
        stages = [PipelineStage(OneWeight(), s, n, device, group=comms.fwd, input_args=example.clone().requires_grad_(s > 0),
                                output_args=example.clone().requires_grad_()) for s in own]
        schedule = cls(stages if multi else stages[0], m, loss_fn=loss)
        actions = (sum(kind in "FBIW" for kind, _, _ in pp_schedules.action_order(name, n, m)[rank]) if multi
                   else 2 * m)
        args = (x,) if 0 in own else ()  # the first stage takes the batch, the last the target
        for step in range(PIPE_STEPS + 2):
            if step == 2:
                t0 = time.process_time()
            schedule.step(*args, target=torch.zeros_like(x), losses=[]) if n - 1 in own else schedule.step(*args)
        mine = torch.tensor([(time.process_time() - t0) / PIPE_STEPS / actions], dtype=torch.float64)
        dist.all_reduce(mine, group=comms.ctrl)
        out[name] = mine.item() / 2
    return out


def _worker(cfg: RunConfig, dcfg: DistConfig) -> None:
    device, comms = init_comms(cfg, dcfg)
    rank, world = dist.get_rank(), dist.get_world_size()
    seconds = [time_exchange(comms, rank, world, device, 0, (n // 4,), None, reps=REPS) for n in SIZES]
    reduced = [time_allreduce(comms, n // 4, device, reps=REPS) for n in ALLREDUCE_SIZES]
    actions = pipeline_actions_s(comms, rank, device)
    late = rendezvous_s(comms, rank, device)
    if rank == 0:
        (Path(cfg.out) / RESULT).write_text(json.dumps({"bytes": list(SIZES), "seconds": seconds,
                                                        "allreduce_bytes": list(ALLREDUCE_SIZES),
                                                        "allreduce_seconds": reduced, "actions": actions,
                                                        "rendezvous_s": late, "backend": dist.get_backend()}))
    dist.destroy_process_group()


def main(argv: list[str]) -> int:
    d = json.loads(os.environ[CONFIG_ENV])  # the configuration LocalJob gives its workers
    _worker(RunConfig.from_dict(d["run"]), DistConfig.from_dict(d["dist"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
