"""What every distributed backend shares: one worker process as the training loop's engine.

Words: a *group* is a layer group (a run of the model's units); a *stage* is the worker that holds one
group in a chain of workers (ours in stages.py, torch's PipelineStage in pipelining.py); torch's process
groups are called *comms* here; *pipelining* is micro-batch pipelining (gpipe), and the stage backend's
schedule that goes on without waiting for feedback is *overlapped*.

A backend (stages.py, pipelining.py, ddp.py, rounds.py) says how its worker trains a phase of steps
(`steps`) and what it moves (`calibrate`); this base class does the rest the same way for all of them:
the phase clock between barriers (so evaluation and warm-up stay out of the step time), the compute
stopwatch (CUDA events on a GPU: the host syncs once per phase, not per step; meter.Stopwatch), the loss
of the phase over every worker, the communication meter, memory, gathering every group's weights on rank
0 for evaluation, and the per-worker figures of the record.
"""
from __future__ import annotations

import math
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..config import RunConfig
from ..errors import BenchError
from .meter import Memory, Meter, PeerError, Stopwatch, one_line, peer_call
from .phase import Phase
from .settings import DistConfig

CALIBRATION_REPS = 5


@dataclass
class Comms:
    """The worker's process groups: activations forward, feedback back (never one group for both: see
    meter.py), a gloo group for objects and barriers, and one for the wait while rank 0 evaluates."""

    fwd: object
    bwd: object
    ctrl: object
    evaluation: object


def init_comms(cfg: RunConfig, dcfg: DistConfig) -> tuple[torch.device, Comms]:
    """This rank's device (one GPU per local rank; --share-gpu: local rank modulo the GPUs) and process groups
    (NCCL between GPUs; gloo on CPU, and for workers sharing a GPU, which NCCL refuses). Every wait obeys
    --comm-timeout, but the others' wait for rank 0's evaluation, which gets --eval-timeout more."""
    local_rank = local_ranks()[1]
    cuda = cfg.device.startswith("cuda")
    device = torch.device("cpu")
    if cuda:
        device = torch.device(f"cuda:{local_rank % torch.cuda.device_count() if dcfg.share_gpu else local_rank}")
        torch.cuda.set_device(device)
    nccl = cuda and not dcfg.share_gpu
    timeout = timedelta(seconds=dcfg.timeout_s)
    dist.init_process_group("nccl" if nccl else "gloo", timeout=timeout, **({"device_id": device} if nccl else {}))
    evaluation = timedelta(seconds=dcfg.timeout_s + dcfg.eval_timeout_s)
    return device, Comms(fwd=dist.new_group(timeout=timeout), bwd=dist.new_group(timeout=timeout),
                         ctrl=dist.new_group(backend="gloo", timeout=timeout),
                         evaluation=dist.new_group(backend="gloo", timeout=evaluation))


def local_ranks() -> tuple[int, int]:
    """(node rank, local rank) of this worker: torchrun's GROUP_RANK and LOCAL_RANK (a local launch: node 0)."""
    return int(os.environ.get("GROUP_RANK", 0)), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on a GPU (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class WorkerEngine:
    checkpoints = False              # a distributed run is not resumed (start it again)
    announce = True                  # rank 0 prints a line per evaluation
    shares_gpu = False               # whether --share-gpu can run it (its links stage through host memory)

    def __init__(self, run, dcfg: DistConfig, comms: Comms):
        self.run, self.dcfg, self.comms = run, dcfg, comms
        self.cfg, self.trainer, self.device = run.cfg, run.trainer, run.device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.writes_record = self.rank == 0
        self.meter = Meter(dcfg.timeout_s, self.rank, nccl=dist.get_backend() == "nccl")
        self.clock = Stopwatch(self.device)  # time inside the rule's forward / backward (compute)
        self.wire = torch.device("cpu") if dcfg.share_gpu else self.device  # where boundary tensors travel from
        self.loss_sum, self.loss_n = 0.0, 0
        self.gathered: list[dict] | None = None
        self.setup()
        self.memory = Memory(self.device)  # every group and the data are built: the worker's baseline

    # --- what a backend defines ----------------------------------------------------------------------
    own: list[int]  # the groups this worker trains (set by setup)

    def setup(self) -> None:
        raise NotImplementedError

    def steps(self, start: int, end: int, on_step) -> None:
        """Train steps [start, end), left drained (every feedback applied, every send done)."""
        raise NotImplementedError

    def calibrate(self) -> float | None:
        """The paper's communication estimate: seconds to move one step's tensors (None: not estimated)."""
        return None

    def extra_stats(self) -> dict:
        return {}

    own_schedule: str | None = None  # a backend with a schedule of its own takes no --schedule

    @classmethod
    def workers(cls, cfg, options: dict) -> int:
        """How many worker processes run K = cfg.groups groups (one each, unless the backend says otherwise)."""
        return cfg.groups

    @classmethod
    def schedule_name(cls, dcfg: DistConfig, options: dict) -> str:
        return cls.own_schedule or dcfg.schedule

    @classmethod
    def validate(cls, cfg, dcfg: DistConfig, method, options: dict) -> None:
        """One-line BenchError where the backend cannot run this configuration (before any process starts)."""
        if dcfg.share_gpu and not cls.shares_gpu:
            raise BenchError(f"--share-gpu runs group rules on the stage backend (its links stage through host "
                             f"memory); {cfg.method} runs on its own backend: drop --share-gpu")
        if cls.own_schedule and dcfg.schedule != "lockstep":
            raise BenchError(f"--schedule {dcfg.schedule} is for group rules on the stage backend; {cfg.method} has "
                             f"its own schedule ({cls.own_schedule}): drop --schedule")

    # --- the loop's engine --------------------------------------------------------------------------
    @property
    def record_header(self) -> dict:
        """What the record says about how it ran; workers sharing a GPU make a functional run, not a timing."""
        header = {"executor": "distributed", "parallel": "parallel"}
        if self.dcfg.share_gpu:
            header["timing"] = "functional (shared GPU): not a speed measurement"
        return header

    @property
    def fwd_s(self) -> float:
        return self.clock.seconds["forward"]

    @property
    def bwd_s(self) -> float:
        return self.clock.seconds["backward"]

    def place(self, part: dict) -> None:
        for m in part.values():
            m.to(self.device)

    def track(self, loss: torch.Tensor) -> None:
        self.loss_sum = self.loss_sum + loss.detach()  # a device tensor: read once per phase, not per step
        self.loss_n += 1

    def phase(self, start: int, end: int, on_step) -> Phase:
        synchronize(self.device)  # work queued before (evaluation) is not the phase's
        t0 = time.perf_counter()
        self.steps(start, end, on_step)
        synchronize(self.device)  # a GPU's queued work belongs to the phase: the host's one sync per phase
        self.clock.settle()
        wait_for_all(self.comms.ctrl, self.rank, self.dcfg.timeout_s, "end of a phase")  # the slowest worker's end
        seconds = time.perf_counter() - t0
        self.memory.sample()
        losses = [None] * self.world
        self.collective("the phase's losses", dist.all_gather_object, losses, (float(self.loss_sum), self.loss_n),
                        group=self.comms.ctrl)
        self.loss_sum, self.loss_n = 0.0, 0
        mean = sum(s for s, _ in losses) / max(1, sum(n for _, n in losses))
        diverged = None if math.isfinite(mean) else f"loss {mean} before step {end}"
        return Phase(end - start, seconds, mean * (end - start), diverged)

    def collective(self, what: str, fn, *args, **kwargs):
        """fn, a collective on a gloo control group; a failure is one line naming the ranks it waited for."""
        others = ", ".join(str(r) for r in range(self.world) if r != self.rank)
        return peer_call(self.rank, f"{what} (waiting for rank {others})", fn, *args, **kwargs)

    def start_timing(self) -> None:
        self.meter.reset()
        self.clock.reset()

    def barrier(self) -> None:
        """After a phase's measurements: the others wait for rank 0's evaluation (its own allowance)."""
        wait_for_all(self.comms.evaluation, self.rank, self.dcfg.timeout_s + self.dcfg.eval_timeout_s,
                     "waiting for rank 0's evaluation")

    def gather(self) -> None:
        """Every group's weights (and last gradients) on rank 0, loaded into its copies of the other groups."""
        parts = self.trainer.parts
        mine = {i: {"modules": {k: {n: v.detach().cpu() for n, v in m.state_dict().items()}
                                for k, m in parts[i].items()},
                    "grads": [None if p.grad is None else p.grad.detach().cpu() for p in parts[i]["body"].parameters()]}
                for i in self.own}
        states = [None] * self.world if self.rank == 0 else None
        self.collective("gathering the groups' weights", dist.gather_object, mine, states, dst=0,
                        group=self.comms.ctrl)
        if self.rank != 0:
            return
        merged = {i: s for got in states for i, s in got.items()}
        for i, part in enumerate(parts):
            if i not in self.own:
                for k, m in part.items():
                    m.load_state_dict(merged[i]["modules"][k])
                self.place(part)  # the other groups join rank 0's device for evaluation
        self.gathered = [merged[i] for i in range(len(parts))]

    def after_evaluation(self) -> None:
        if self.device.type == "cuda":  # evaluation memory is not training memory
            for i, part in enumerate(self.trainer.parts):
                if i not in self.own:
                    for m in part.values():
                        m.to("cpu")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def worker_stats(self, train_time: float, timed_steps: int) -> dict:
        """Every worker's figures, gathered (a collective); the loop puts them into the record."""
        self.meter.flush()
        per_step = self.calibrate()
        node_rank, local_rank = local_ranks()
        mine = {
            "rank": self.rank, "node_rank": node_rank, "local_rank": local_rank, "host": socket.gethostname(),
            "device": str(self.device),
            "threads": torch.get_num_threads(), "steps": timed_steps, "step_time_s": train_time / max(timed_steps, 1),
            "compute_s": self.fwd_s + self.bwd_s, "forward_s": self.fwd_s, "backward_s": self.bwd_s,
            "comm_wait_s": self.meter.wait_s, "comm_share": self.meter.wait_s / train_time if train_time else None,
            "bytes_sent": self.meter.bytes_sent, "bytes_recv": self.meter.bytes_recv, **self.memory.stats(),
            "paper_comm_estimate_s": None if per_step is None else per_step * timed_steps,
            "paper_comm_share": None if per_step is None or not train_time else per_step * timed_steps / train_time,
            **self.extra_stats(),
        }
        workers = [None] * self.world
        self.collective("the workers' figures", dist.all_gather_object, workers, mine, group=self.comms.ctrl)
        return {"workers": workers}

    # --- the paper's estimate, for backends that move activations and feedback across boundaries ------
    def time_boundaries(self, activation, feedback) -> float:
        """Median seconds to move one step's activation (and feedback, where there is some) across each
        boundary, summed over the boundaries this worker takes part in. `activation(j)` gives the shape of
        boundary j's activation (sent as the run's wire dtype), `feedback(j)` the (shape, dtype) of its
        feedback as the sending worker knows them (None: nothing)."""
        result = []
        for j in range(self.world - 1):
            metas = [None] * self.world
            dist.all_gather_object(metas, feedback(j) if self.rank == j + 1 else None, group=self.comms.ctrl)
            fb, fb_dtype = next((m for m in metas if m is not None), (None, None))
            result.append(time_exchange(self.comms, self.rank, self.world, self.wire, j, activation(j), fb,
                                        dtype=self.run.wire_dtype, fb_dtype=fb_dtype))
        return sum(result[j] for j in (self.rank - 1, self.rank) if 0 <= j < len(result))


def wait_for_all(group, rank: int, timeout_s: float, what: str) -> None:
    """A barrier that names who is missing: gloo's monitored barrier (rank 0 hears from every rank; the
    control groups are gloo), its failure a one-line PeerError, the silent ranks in it."""
    try:
        dist.monitored_barrier(group=group, timeout=timedelta(seconds=timeout_s), wait_all_ranks=True)
    except RuntimeError as e:
        silent = re.search(r"Ranks? ([\d, ]+?) failed to pass", str(e))
        if silent is None:
            raise PeerError(f"rank {rank}: {what}: {one_line(e)}") from None
        raise PeerError(f"rank {rank}: {what}: timed out after {timeout_s:.0f} s: rank {silent.group(1)} did not "
                        f"arrive") from None


def time_exchange(comms: Comms, rank: int, world: int, device: torch.device, j: int, act: tuple,
                  fb: tuple | None, reps: int = CALIBRATION_REPS, dtype: torch.dtype = torch.float32,
                  fb_dtype: torch.dtype | None = None) -> float:
    """The transfer probe: median seconds (as rank j sees them, on every rank) to send a tensor of shape `act`
    (and `dtype`) from rank j to j + 1 and one of shape `fb` (and `fb_dtype`, default `dtype`) back (none:
    None), after a barrier, one warm-up first. `device`: where the tensors travel from. Used for the
    paper-style estimate and by the cost model's link measurement (bench/predict/probe.py)."""
    times, back = [], None if not fb else (fb, fb_dtype or dtype)
    for rep in range(reps + 1):
        dist.barrier(group=comms.ctrl)
        t0 = time.perf_counter()
        _exchange(comms, rank, device, j, (act, dtype), back)
        synchronize(device)
        if rep:
            times.append(time.perf_counter() - t0)
    median = [None] * world
    dist.all_gather_object(median, sorted(times)[len(times) // 2] if rank == j else None, group=comms.ctrl)
    return median[j]


def time_allreduce(comms: Comms, numel: int, device: torch.device, group=None, reps: int = CALIBRATION_REPS) -> float:
    """Median seconds of one all-reduce of `numel` float32 among all workers of `group` (default: the world),
    after a barrier, one warm-up first: data parallelism's paper-style estimate and the link probe's ring."""
    buf, times = torch.zeros(numel, device=device), []
    for rep in range(reps + 1):
        dist.barrier(group=comms.ctrl)
        t0 = time.perf_counter()
        dist.all_reduce(buf, group=group)
        synchronize(device)
        if rep:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _exchange(comms: Comms, rank: int, device: torch.device, j: int, act: tuple, fb: tuple | None) -> None:
    """act, fb: (shape, dtype) of the two messages (fb None: none back)."""
    fwd, bwd = comms.fwd, comms.bwd
    if rank == j:
        dist.send(torch.zeros(act[0], dtype=act[1], device=device), j + 1, group=fwd)
        if fb:
            dist.recv(torch.empty(fb[0], dtype=fb[1], device=device), j + 1, group=bwd)
    elif rank == j + 1:
        dist.recv(torch.empty(act[0], dtype=act[1], device=device), j, group=fwd)
        if fb:
            dist.send(torch.zeros(fb[0], dtype=fb[1], device=device), j, group=bwd)
