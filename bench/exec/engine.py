"""What every distributed backend shares: one worker process as the training loop's engine.

Words: a *group* is a layer group (a run of the model's units); a *stage* is the worker that holds one
group in a chain of workers (ours in stages.py, torch's PipelineStage in pipelining.py); torch's process
groups are called *comms* here; *pipelining* is micro-batch pipelining (gpipe), and the stage backend's
schedule that goes on without waiting for feedback is *overlapped*.

A backend (stages.py, pipelining.py, ddp.py, rounds.py) says how its worker trains a phase of steps
(`steps`) and what it moves (`calibrate`); this base class does the rest the same way for all of them:
the phase clock between barriers (so evaluation and warm-up stay out of the step time), the loss of the
phase over every worker, the communication meter, memory, gathering every group's weights on rank 0
for evaluation, and the per-worker figures of the record.
"""
from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..config import RunConfig
from ..errors import BenchError
from .meter import Memory, Meter
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
    """This rank's device (one GPU per local rank) and process groups. Every wait obeys --comm-timeout, but
    the others' wait for rank 0's evaluation, which gets --eval-timeout more."""
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    cuda = cfg.device.startswith("cuda")
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=dcfg.timeout_s)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout, **({"device_id": device} if cuda else {}))
    evaluation = timedelta(seconds=dcfg.timeout_s + dcfg.eval_timeout_s)
    return device, Comms(fwd=dist.new_group(timeout=timeout), bwd=dist.new_group(timeout=timeout),
                         ctrl=dist.new_group(backend="gloo", timeout=timeout),
                         evaluation=dist.new_group(backend="gloo", timeout=evaluation))


class WorkerEngine:
    checkpoints = False              # a distributed run is not resumed (start it again)
    announce = True                  # rank 0 prints a line per evaluation
    record_header = {"executor": "distributed", "parallel": "parallel"}

    def __init__(self, run, dcfg: DistConfig, comms: Comms):
        self.run, self.dcfg, self.comms = run, dcfg, comms
        self.cfg, self.trainer, self.device = run.cfg, run.trainer, run.device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.writes_record = self.rank == 0
        self.meter = Meter(dcfg.timeout_s, self.rank, nccl=self.device.type == "cuda")
        self.fwd_s = self.bwd_s = 0.0  # time inside the rule's forward / backward (compute)
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
        if cls.own_schedule and dcfg.schedule != "lockstep":
            raise BenchError(f"--schedule {dcfg.schedule} is for group rules on the stage backend; {cfg.method} has "
                             f"its own schedule ({cls.own_schedule}): drop --schedule")

    # --- the loop's engine --------------------------------------------------------------------------
    def now(self) -> float:
        """The clock for compute time: on a GPU, after the kernels queued so far have run."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def place(self, part: dict) -> None:
        for m in part.values():
            m.to(self.device)

    def track(self, loss: torch.Tensor) -> None:
        self.loss_sum = self.loss_sum + loss.detach()  # a device tensor: read once per phase, not per step
        self.loss_n += 1

    def phase(self, start: int, end: int, on_step) -> Phase:
        t0 = time.perf_counter()
        self.steps(start, end, on_step)
        self.now()  # a GPU's queued work belongs to the phase
        dist.barrier(group=self.comms.ctrl)  # the phase ends when the slowest worker is done
        seconds = time.perf_counter() - t0
        self.memory.sample()
        losses = [None] * self.world
        dist.all_gather_object(losses, (float(self.loss_sum), self.loss_n), group=self.comms.ctrl)
        self.loss_sum, self.loss_n = 0.0, 0
        mean = sum(s for s, _ in losses) / max(1, sum(n for _, n in losses))
        diverged = None if math.isfinite(mean) else f"loss {mean} before step {end}"
        return Phase(end - start, seconds, mean * (end - start), diverged)

    def start_timing(self) -> None:
        self.meter.reset()
        self.fwd_s = self.bwd_s = 0.0

    def barrier(self) -> None:
        """After a phase's measurements: the others wait for rank 0's evaluation (its own allowance)."""
        dist.barrier(group=self.comms.evaluation)

    def gather(self) -> None:
        """Every group's weights (and last gradients) on rank 0, loaded into its copies of the other groups."""
        parts = self.trainer.parts
        mine = {i: {"modules": {k: {n: v.detach().cpu() for n, v in m.state_dict().items()}
                                for k, m in parts[i].items()},
                    "grads": [None if p.grad is None else p.grad.detach().cpu() for p in parts[i]["body"].parameters()]}
                for i in self.own}
        states = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, states, dst=0, group=self.comms.ctrl)
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
        mine = {
            "rank": self.rank, "host": socket.gethostname(), "device": str(self.device),
            "threads": torch.get_num_threads(), "steps": timed_steps, "step_time_s": train_time / max(timed_steps, 1),
            "compute_s": self.fwd_s + self.bwd_s, "forward_s": self.fwd_s, "backward_s": self.bwd_s,
            "comm_wait_s": self.meter.wait_s, "comm_share": self.meter.wait_s / train_time if train_time else None,
            "bytes_sent": self.meter.bytes_sent, "bytes_recv": self.meter.bytes_recv, **self.memory.stats(),
            "paper_comm_estimate_s": None if per_step is None else per_step * timed_steps,
            "paper_comm_share": None if per_step is None or not train_time else per_step * timed_steps / train_time,
            **self.extra_stats(),
        }
        workers = [None] * self.world
        dist.all_gather_object(workers, mine, group=self.comms.ctrl)
        return {"workers": workers}

    # --- the paper's estimate, for backends that move activations and feedback across boundaries ------
    def time_boundaries(self, activation, feedback) -> float:
        """Median seconds to move one step's activation (and feedback, where there is some) across each
        boundary, summed over the boundaries this worker takes part in. `activation(j)` and `feedback(j)`
        give the shapes of boundary j as the sending worker knows them (None: nothing)."""
        result = []
        for j in range(self.world - 1):
            shapes = [None] * self.world
            dist.all_gather_object(shapes, feedback(j) if self.rank == j + 1 else None, group=self.comms.ctrl)
            fb = next((sh for sh in shapes if sh is not None), None)
            result.append(time_exchange(self.comms, self.rank, self.world, self.device, j, activation(j), fb))
        return sum(result[j] for j in (self.rank - 1, self.rank) if 0 <= j < len(result))


def time_exchange(comms: Comms, rank: int, world: int, device: torch.device, j: int, act: tuple,
                  fb: tuple | None, reps: int = CALIBRATION_REPS) -> float:
    """The transfer probe: median seconds (as rank j sees them, on every rank) to send a tensor of shape `act`
    from rank j to j + 1 and one of shape `fb` back (none: None), after a barrier, one warm-up first. Used for
    the paper-style estimate and by the cost model's link measurement (bench/predict/probe.py)."""
    times = []
    for rep in range(reps + 1):
        dist.barrier(group=comms.ctrl)
        t0 = time.perf_counter()
        _exchange(comms, rank, device, j, act, fb)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if rep:
            times.append(time.perf_counter() - t0)
    median = [None] * world
    dist.all_gather_object(median, sorted(times)[len(times) // 2] if rank == j else None, group=comms.ctrl)
    return median[j]


def _exchange(comms: Comms, rank: int, device: torch.device, j: int, act: tuple, fb: tuple | None) -> None:
    fwd, bwd = comms.fwd, comms.bwd
    if rank == j:
        dist.send(torch.zeros(act, device=device), j + 1, group=fwd)
        if fb:
            dist.recv(torch.empty(fb, device=device), j + 1, group=bwd)
    elif rank == j + 1:
        dist.recv(torch.empty(act, device=device), j, group=fwd)
        if fb:
            dist.send(torch.zeros(fb, device=device), j, group=bwd)
