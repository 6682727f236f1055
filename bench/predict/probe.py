"""The link measurement (`--link measured`): two local workers time one-way transfers of several sizes
with the suite's own transfer probe (bench.exec.engine.time_exchange, the paper-style estimate's), on
the backend a distributed run of this device uses (gloo on CPU, NCCL on GPUs), and the times are fitted
to latency + bytes / bandwidth (link.fit); then all-reduces of data-parallel bucket sizes, fitted the
same way to the ring's n / bandwidth + 2 latency (two workers), the link's `ring`; then, on a CPU host, a
two-stage GPipe of torch.distributed.pipelining on a stage that computes next to nothing, whose CPU seconds
per micro-batch action are the runtime's own work per action (posting its p2p ops, splitting, bookkeeping,
gloo's threads), the link's `action_s`.

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
PIPE_MICROBATCHES, PIPE_STEPS, PIPE_SHAPE = 8, 100, (16, 256)  # the pipeline probe: its steps, one micro-batch
RESULT = "link-probe.json"


def measure_link(device: str = "cpu") -> LinkModel:
    """Start two workers here, time the transfers, fit the link (one-line BenchError if a worker fails)."""
    with tempfile.TemporaryDirectory(prefix="lctbench-link-") as out:
        cfg = RunConfig(groups=2, device=device, out=out)  # two workers; the method plays no part
        watch(LocalJob(cfg, DistConfig(timeout_s=120.0), module="bench.predict.probe"), lambda error: Path(out))
        got = json.loads((Path(out) / RESULT).read_text())
    link = fit(got["bytes"], got["seconds"], name=f"measured {got['backend']} ({device})")
    ring = fit(got["allreduce_bytes"], got["allreduce_seconds"])  # n / bandwidth + 2 latency with two workers
    return replace(link, ring=(ring.bandwidth, ring.latency / 2), action_s=got["action_s"])


def pipeline_action_s(comms, rank: int, device: torch.device) -> float:
    """CPU seconds per micro-batch action (a forward or a backward) of torch.distributed.pipelining's GPipe on
    two workers, whose stages compute next to nothing: the mean of both workers, after two warm-up steps. A
    blocked receive costs no CPU time, so what remains is the runtime's own work; 0 on a GPU, where the host
    runs ahead of the kernels."""
    if device.type != "cpu":
        return 0.0
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    m, example = PIPE_MICROBATCHES, torch.empty(*PIPE_SHAPE)
    # the second stage's input requires a gradient, or it sends none back
    stage = PipelineStage(OneWeight(), rank, 2, device, group=comms.fwd, input_args=example.clone().requires_grad_(rank > 0),
                          output_args=example.clone().requires_grad_())
    schedule = ScheduleGPipe(stage, m, loss_fn=lambda out, y: (out - y).square().mean())
    x = torch.randn(m * PIPE_SHAPE[0], PIPE_SHAPE[1])
    for step in range(PIPE_STEPS + 2):
        if step == 2:
            t0 = time.process_time()
        schedule.step(x) if rank == 0 else schedule.step(target=torch.zeros_like(x), losses=[])
    mine = torch.tensor([(time.process_time() - t0) / PIPE_STEPS / (2 * m)], dtype=torch.float64)
    dist.all_reduce(mine, group=comms.ctrl)
    return mine.item() / 2


def _worker(cfg: RunConfig, dcfg: DistConfig) -> None:
    device, comms = init_comms(cfg, dcfg)
    rank, world = dist.get_rank(), dist.get_world_size()
    seconds = [time_exchange(comms, rank, world, device, 0, (n // 4,), None, reps=REPS) for n in SIZES]
    reduced = [time_allreduce(comms, n // 4, device, reps=REPS) for n in ALLREDUCE_SIZES]
    action_s = pipeline_action_s(comms, rank, device)
    if rank == 0:
        (Path(cfg.out) / RESULT).write_text(json.dumps({"bytes": list(SIZES), "seconds": seconds,
                                                        "allreduce_bytes": list(ALLREDUCE_SIZES),
                                                        "allreduce_seconds": reduced, "action_s": action_s,
                                                        "backend": dist.get_backend()}))
    dist.destroy_process_group()


def main(argv: list[str]) -> int:
    d = json.loads(os.environ[CONFIG_ENV])  # the configuration LocalJob gives its workers
    _worker(RunConfig.from_dict(d["run"]), DistConfig.from_dict(d["dist"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
