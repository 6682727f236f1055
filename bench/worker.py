"""One worker of the distributed executor: the layer group of rank i, on its own process.

Started K times by `python -m bench run --executor distributed` (bench/distributed.py) or by
torchrun (`torchrun ... -m bench.worker <the options of bench run>`). Every rank builds exactly
what the in-process executor builds (bench.runner.Run: same seed, so identical initial weights),
keeps training only its own stage, and drives it through the Stage interface:

    stage methods (bp, lct, dni, ...): activations go forward with isend/irecv, each method's
        feedback comes back (a per-sample loss vector for lct, a gradient for dni/bp).
        lockstep: after forward(t) the worker waits for the feedback of step t (the paper's step);
        pipelined: it goes on with forward(t+1) at once and applies feedback when it has arrived,
        at most `max_stale` forwards late (staleness recorded). Equal bounds on every rank make it
        deadlock-free: a worker that blocks on feedback for step s-D has sent every activation up to
        s, and the next worker has already sent its feedback up to s-D (proof in `_stages_steps`).
    gpipe: torch.distributed.pipelining (PipelineStage + ScheduleGPipe, or Schedule1F1B).
    ddp:   the whole network on every worker, each taking 1/K of the batch, DistributedDataParallel.

Timing: the clock runs between barriers, so evaluation (rank 0 gathers every group's weights and
evaluates, like the in-process runner) and the warm-up stay out of the step time.
"""
from __future__ import annotations

import faulthandler
import json
import math
import os
import resource
import signal
import socket
import sys
import time
import traceback
from contextlib import nullcontext
from typing import Callable, NoReturn
from dataclasses import replace
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F

from methods import create_method

from . import data as datasets
from .comm import Link, Meter, PeerError, one_line
from .config import RunConfig
from .distributed import DistConfig, mark_failed, record_path, schedule_name, validate
from .errors import BenchError
from .pipeline import assumption1, build_stages, evaluate
from .records import add_evaluation, atomic_torch_save, last_evaluation, new_record, write_record
from .runner import Run
from .split import Split

POST_AHEAD = 2  # activation receives posted ahead of use, so transfers overlap compute
CALIBRATION_REPS = 5


def rss_mb() -> float:
    """Resident memory now (Linux /proc; elsewhere the process's peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset_peak_rss (Linux VmHWM), else over the process's life."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_rss() -> None:
    """Restart the peak-RSS counter (Linux >= 4.0), so the peak covers training, not the set-up before it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Worker:
    def __init__(self, cfg: RunConfig, dcfg: DistConfig):
        self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.dcfg = dcfg
        torch.set_num_threads(dcfg.threads_per_worker)
        cuda = cfg.device.startswith("cuda")
        self.device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=dcfg.timeout_s),
                                **({"device_id": self.device} if cuda else {}))
        # activations and feedback on separate groups (see bench/comm.py); objects and barriers on gloo
        self.fwd_group = dist.new_group(timeout=timedelta(seconds=dcfg.timeout_s))
        self.bwd_group = dist.new_group(timeout=timedelta(seconds=dcfg.timeout_s))
        self.ctrl = dist.new_group(backend="gloo", timeout=timedelta(seconds=max(dcfg.timeout_s, 1800)))
        self.cfg = cfg = validate(replace(cfg, threads=dcfg.threads_per_worker), dcfg)
        if self.world != cfg.groups:
            raise BenchError(f"{self.world} workers for {cfg.groups} groups: start one worker per group")
        if cfg.split_rule == "timed" and cfg.split_bounds is None:  # torchrun: rank 0 measures for everyone
            from .runner import measure_split

            bounds = [measure_split(replace(cfg, device=str(self.device))) if self.rank == 0 else None]
            dist.broadcast_object_list(bounds, src=0, group=self.ctrl)
            cfg.split_bounds = bounds[0]
        self.r = Run(replace(cfg, device="cpu"))  # validated setup, every group built on every rank
        self.stages = self.r.stages
        self.stream = datasets.BatchStream(self.r.ds, cfg.batch_size, cfg.seed, "cpu")
        self.meter = Meter(dcfg.timeout_s, self.rank, nccl=cuda)
        self.path = record_path(cfg, dcfg)
        self.mode = "ddp" if cfg.method == "ddp" else "gpipe" if (cfg.method == "gpipe" and self.world > 1) else "stages"
        self.fwd_s = self.bwd_s = 0.0  # time inside the stage's forward / backward (compute)
        self.staleness: list[int] = []
        self.loss_sum, self.loss_n = 0.0, 0
        self.gpu_nvml_mb = self.gpu_peak_mb = self.gpu_reserved_mb = 0.0
        getattr(self, f"_setup_{self.mode}")()

    def _now(self) -> float:
        """The clock for compute time: on a GPU, after the kernels queued so far have run."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # --- setup per mode ----------------------------------------------------------------------------
    def _own(self, stage) -> None:
        for m in stage.modules().values():
            m.to(self.device)

    def _setup_stages(self) -> None:
        i, k = self.rank, self.world
        self.stage = s = self.stages[i]
        self._own(s)
        b = self.cfg.batch_size
        self.act_in = Link(self.meter, i - 1, self.fwd_group, "activation", self.device,
                           (b, *self.stages[i - 1].ctx.out_shape)) if i > 0 else None
        self.act_out = Link(self.meter, i + 1, self.fwd_group, "activation", self.device,
                            (b, *s.ctx.out_shape)) if i < k - 1 else None
        self.fb_in = Link(self.meter, i + 1, self.bwd_group, "feedback", self.device) if s.waits_for_feedback else None
        self.fb_out = (Link(self.meter, i - 1, self.bwd_group, "feedback", self.device)
                       if i > 0 and self.stages[i - 1].waits_for_feedback else None)
        self.fb_shape: tuple[int, ...] | None = None
        self.bound = 0 if self.dcfg.schedule == "lockstep" else self.dcfg.max_stale
        self.pending: list[int] = []  # steps whose feedback is not applied yet, oldest first
        self.last_forward = -1
        # Pipelined: a critic/synthesizer is updated (in place) between the forward of step t and the
        # backward of step t, whose graph saved its weights; keep copies of those saved weights, so the
        # update of step t uses the gradient at the weights its forward used (weight stashing).
        aux = {id(p) for name, m in s.modules().items() if name != "body" for p in m.parameters()}

        def pack(t):
            base = t._base if t._base is not None else t
            return t.detach().clone() if id(base) in aux else t

        self.stash = (lambda: torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)) \
            if self.bound and aux else nullcontext

    def _setup_gpipe(self) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        self.stage = s = self.stages[self.rank]
        self._own(s)
        # Static shapes: without them PipelineStage infers shapes by running the group on placeholder
        # tensors in train mode, which put NaN into BatchNorm running statistics of later groups.
        mb = self.cfg.batch_size // self.dcfg.microbatches
        shape_out = (self.r.ds.num_classes,) if s.ctx.is_last else s.ctx.out_shape
        example_in = (self.stream.batch(0)[0][:mb].to(self.device) if s.ctx.is_first  # the input's own dtype
                      else torch.empty(mb, *self.stages[self.rank - 1].ctx.out_shape, device=self.device,
                                       requires_grad=True))
        example_out = torch.empty(mb, *shape_out, device=self.device, requires_grad=True)
        pstage = PipelineStage(s.body, self.rank, self.world, self.device, group=self.fwd_group,
                               input_args=example_in, output_args=example_out)
        cls = ScheduleGPipe if self.dcfg.pp_schedule == "gpipe" else Schedule1F1B
        self.schedule = cls(pstage, self.dcfg.microbatches, loss_fn=lambda out, y: F.cross_entropy(out, y))
        _instrument_pipelining(self.meter)

    def _setup_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        r = self.r
        # one stage holding the whole network (the same modules as the K groups, which rank 0 evaluates)
        self.stage = s = build_stages("ddp", r.model, Split([0, len(r.model.units)]), r.ds.input_shape,
                                      r.ds.num_classes, self.cfg.hyper(), self.cfg.extra)[0]
        self._own(s)
        for st in self.stages:
            self._own(st)
        s.body = DDP(s.body, device_ids=[self.device] if self.device.type == "cuda" else None,
                     process_group=self.fwd_group, broadcast_buffers=False)
        self.ddp = _DdpMeter(self.meter, self.world, self.fwd_group)
        s.body.register_comm_hook(self.ddp, _timed_allreduce)

    # --- one phase of steps [a, b), left drained: every feedback applied, every send done ----------
    def _stages_steps(self, a: int, b: int) -> None:
        s, first_step = self.stage, a == 0
        for step in range(a, b):
            x, y = self.stream.batch(step)
            y = y.to(self.device)
            if self.act_in is None:
                x = x.to(self.device)
            else:
                x = self.act_in.get(step)
                for ahead in range(step + 1, min(b, step + 1 + POST_AHEAD)):
                    self.act_in.post(ahead)  # posted before any blocking wait below
            s.set_step(step)
            t0 = self._now()
            with self.stash():
                out = s.forward(step, x, y)
            self.fwd_s += self._now() - t0
            self.last_forward = step
            if self.act_out is not None:
                self.act_out.send(out, step)
            if self.fb_in is None:  # never waits: the last group, or a method without feedback
                self._backward(step, None)
            else:
                self.fb_in.post(step)
                self.pending.append(step)
                # The first step is always lockstep: it carries the feedback's shape header.
                bound = 0 if (first_step and step == a) else self.bound
                while self.pending and self.fb_in.ready():
                    self._apply_feedback()
                # Deadlock-free: blocking here on step s-D (D = bound), this worker has sent every
                # activation up to s; the next worker, unless it also blocks here, waits only for
                # those activations, and it has at most D pending steps itself, so its feedback up to
                # s-D is sent. The last worker never blocks here, so the chain always moves.
                while len(self.pending) > bound:
                    self._apply_feedback()
            if s.ctx.is_last:
                self._track_loss(s.stats["loss"])
        while self.pending:
            self._apply_feedback()
        self.meter.flush()

    def _apply_feedback(self) -> None:
        step = self.pending.pop(0)
        feedback = self.fb_in.get(step)
        self.staleness.append(self.last_forward - step)
        self._backward(step, feedback)

    def _backward(self, step: int, feedback) -> None:
        t0 = self._now()
        back = self.stage.backward(step, feedback)
        self.bwd_s += self._now() - t0
        if self.fb_out is not None:
            if back is None:
                raise PeerError(f"rank {self.rank}: {self.cfg.method} stage {self.rank} returned no feedback for "
                                f"step {step}, but stage {self.rank - 1} waits for it")
            self.fb_shape = tuple(back.shape)
            self.fb_out.send(back, step)

    def _gpipe_steps(self, a: int, b: int) -> None:
        s, i = self.stage, self.rank
        for step in range(a, b):
            x, y = self.stream.batch(step)
            s.set_step(step)
            t0, waited = self._now(), self.meter.wait_s
            s.body_opt.zero_grad(set_to_none=True)
            if i == 0:
                self.schedule.step(x.to(self.device))
            elif s.ctx.is_last:
                losses: list[torch.Tensor] = []
                self.schedule.step(target=y.to(self.device), losses=losses, return_outputs=False)
                self._track_loss(torch.stack(losses).mean())
            else:
                self.schedule.step()
            s.body_opt.step()
            # forward and backward interleave: all compute counted as forward; the p2p waits are communication
            self.fwd_s += self._now() - t0 - (self.meter.wait_s - waited)
        self.meter.flush()

    def _ddp_steps(self, a: int, b: int) -> None:
        s, k = self.stage, self.world
        for step in range(a, b):
            x, y = self.stream.batch(step)
            x, y = x.chunk(k)[self.rank].to(self.device), y.chunk(k)[self.rank].to(self.device)
            s.set_step(step)
            t0 = self._now()
            s.forward(step, x, y)
            t1 = self._now()
            s.backward(step, None)
            waited = self.ddp.end_step()
            self.fwd_s += t1 - t0
            self.bwd_s += self._now() - t1 - waited  # the all-reduce tail is communication
            self._track_loss(s.stats["loss"])

    def _track_loss(self, loss: torch.Tensor) -> None:
        self.loss_sum = self.loss_sum + loss.detach()  # a device tensor: read once per phase, not per step
        self.loss_n += 1

    # --- phases, evaluation, record -------------------------------------------------------------------
    def run(self) -> None:
        cfg, dcfg = self.cfg, self.dcfg
        record = None
        if self.rank == 0:
            record = new_record(cfg.to_dict(), str(self.device))
            record.update(run_id=self.path.stem, executor="distributed", parallel="parallel",
                          schedule=schedule_name(cfg, dcfg), split=self.r.split_info(), workers=[])
            record["config"]["distributed"] = {**vars(dcfg), "world_size": self.world,
                                               "backend": dist.get_backend()}
            record["env"]["torch_threads"] = torch.get_num_threads()
            write_record(record, self.path)
        ends = {cfg.steps}
        if dcfg.evaluate:
            ends |= set(range(cfg.eval_every, cfg.steps, cfg.eval_every))
        if 0 < dcfg.warmup_steps < cfg.steps:
            ends.add(dcfg.warmup_steps)
        steps_fn = getattr(self, f"_{self.mode}_steps")
        train_time, timed_steps, start = 0.0, 0, 0
        check_a1 = create_method(cfg.method).local_gradients and cfg.assumption1_every
        self.rss_start_mb = rss_mb()  # every group and the data are built: the worker's baseline
        reset_peak_rss()
        dist.barrier(group=self.ctrl)
        for end in sorted(ends):
            t0 = time.perf_counter()
            steps_fn(start, end)
            self._now()  # a GPU's queued work belongs to the phase
            dist.barrier(group=self.ctrl)  # the phase ends when the slowest worker is done
            dt = time.perf_counter() - t0
            self._sample_memory()
            losses = [None] * self.world
            dist.all_gather_object(losses, (float(self.loss_sum), self.loss_n), group=self.ctrl)
            loss_sum, loss_n = sum(ls for ls, _ in losses), sum(n for _, n in losses)
            self.loss_sum, self.loss_n = 0.0, 0
            if end == dcfg.warmup_steps and end < cfg.steps:  # warm-up over: start the clock and counters
                self.meter.reset()
                self.fwd_s = self.bwd_s = 0.0
                self.staleness.clear()
                start = end
                dist.barrier(group=self.ctrl)
                continue
            train_time += dt
            timed_steps += end - start
            interval_loss = loss_sum / max(loss_n, 1)
            diverged = not math.isfinite(interval_loss)
            final = end == cfg.steps or diverged
            if final:
                calibration = self._calibrate()
            if dcfg.evaluate or (final and dcfg.dump_state):
                states = self._gather_states()
            if self.rank == 0:
                curves = record["curves"]
                curves["step"].append(end)
                curves["train_loss"].append(interval_loss)
                curves["step_time_s"].append(dt / (end - start))
                curves["train_time_s"].append(train_time)
                if dcfg.evaluate:
                    self._evaluate(record, end, final, states, check_a1)
                if final and dcfg.dump_state:
                    atomic_torch_save(states, self.path.parent / dcfg.dump_state)
                if diverged:
                    record["status"], record["error"] = "diverged", f"loss {interval_loss} before step {end}"
                write_record(record, self.path)
            dist.barrier(group=self.ctrl)  # evaluation done: the next phase's clock starts together
            start = end
            if diverged:
                break
        workers = [None] * self.world
        dist.all_gather_object(workers, self._worker_stats(train_time, timed_steps, calibration), group=self.ctrl)
        if self.rank == 0:
            if record["status"] == "running":
                record["status"] = "completed"
            record["workers"] = workers
            curves = record["curves"]
            record["final"].update({
                "steps": curves["step"][-1], "timed_steps": timed_steps,
                "warmup_steps": dcfg.warmup_steps if 0 < dcfg.warmup_steps < cfg.steps else 0,
                **last_evaluation(curves),
                "train_time_s": train_time,
                "samples_per_s": timed_steps * cfg.batch_size / train_time if train_time else None,
                "comm_share_max": max(w["comm_share"] for w in workers),
            })
            write_record(record, self.path)
            if self.dcfg.evaluate:
                print(f"{self.path.stem}: {record['status']}, test acc {record['final']['test_acc']:.2f}, "
                      f"{record['final']['samples_per_s']:.0f} samples/s", flush=True)

    def _gather_states(self) -> list | None:
        """Every group's weights (and its last gradients) on rank 0."""
        s = self.stage
        mine = {"modules": {k: {n: v.detach().cpu() for n, v in m.state_dict().items()}
                            for k, m in s.modules().items()},
                "grads": [None if p.grad is None else p.grad.detach().cpu() for p in s.body.parameters()]}
        if self.mode == "ddp":  # every worker holds the whole network: rank 0's copy is the model
            return [mine] if self.rank == 0 else None
        states = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, states, dst=0, group=self.ctrl)
        if self.rank == 0:
            for i, (st, state) in enumerate(zip(self.stages, states)):
                if i != self.rank:
                    for k, m in st.modules().items():
                        m.load_state_dict(state["modules"][k])
        return states

    def _evaluate(self, record: dict, step: int, final: bool, states, check_a1) -> None:
        """Rank 0: the in-process evaluation on the gathered weights (and Assumption 1 where due)."""
        cfg, stages = self.cfg, self.stages
        # the other groups' copies join rank 0's device for evaluation (ddp: they are the trained model)
        others = [] if self.mode == "ddp" else [st for i, st in enumerate(stages) if i != self.rank]
        for st in others:
            self._own(st)
        t0 = time.perf_counter()
        ev = evaluate(stages, datasets.eval_batches(self.r.ds, 500, self.device, limit=None if final else cfg.eval_limit))
        if check_a1 and step % cfg.assumption1_every == 0:
            x, y = self.stream.batch(step - 1)
            m = assumption1(stages, x.to(self.device), y.to(self.device))
            for key in ("mu", "cos"):
                record["assumption1"][key].append(m[key])
            record["assumption1"]["step"].append(step)
        record["final"]["eval_time_s"] = record["final"].get("eval_time_s", 0.0) + time.perf_counter() - t0
        if self.device.type == "cuda":  # evaluation memory is not training memory
            for st in others:
                for m in st.modules().values():
                    m.to("cpu")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        curves = record["curves"]
        add_evaluation(curves, ev)
        print(f"{self.path.stem}: step {step}/{cfg.steps} loss {curves['train_loss'][-1]:.3f} "
              f"acc {ev['test_acc']:.1f}", flush=True)

    # --- measurements --------------------------------------------------------------------------------
    def _sample_memory(self) -> None:
        """Peak memory of the training phases, read before each evaluation: the peak RSS of this process
        since training started (it includes earlier evaluations on rank 0; every rank also holds the data and
        a copy of every group, built before training: that is in rss_start_mb, so peak - start is what
        training itself added); on GPUs, NVML's reading for this process at the end of the phase (the
        caching allocator keeps what the phase reserved) and torch's allocator peaks beside it (reset after
        each evaluation)."""
        self.rss_peak_mb = peak_rss_mb()
        if self.device.type != "cuda":
            return
        self.gpu_peak_mb = max(self.gpu_peak_mb, torch.cuda.max_memory_allocated(self.device) / 2**20)
        self.gpu_reserved_mb = max(self.gpu_reserved_mb, torch.cuda.max_memory_reserved(self.device) / 2**20)
        try:
            import pynvml
            pynvml.nvmlInit()
            try:  # CUDA_VISIBLE_DEVICES renumbers devices: find this one by its UUID
                handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(self.device).uuid}")
            except Exception:
                handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index)
            used = [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                    if p.pid == os.getpid() and p.usedGpuMemory]
            mb = (used[0] if used else pynvml.nvmlDeviceGetMemoryInfo(handle).used) / 2**20
            self.gpu_nvml_mb = max(self.gpu_nvml_mb, mb)
        except Exception:  # NVML missing or not permitted: torch's numbers remain
            pass

    def _calibrate(self) -> list[float]:
        """The paper's estimate: seconds to move tensors of the boundary sizes, one step's worth, per
        boundary (activation forward + feedback back, or one gradient all-reduce for ddp)."""
        self.meter.flush()
        times = []
        if self.mode == "ddp":
            n = sum(p.numel() for p in self.stage.body.parameters())
            buf = torch.zeros(n, device=self.device)
            for rep in range(CALIBRATION_REPS + 1):
                dist.barrier(group=self.ctrl)
                t0 = time.perf_counter()
                dist.all_reduce(buf, group=self.fwd_group)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if rep:
                    times.append(time.perf_counter() - t0)
            return [sorted(times)[len(times) // 2]] if times else [0.0]
        b = self.cfg.batch_size
        result = []
        for boundary in range(self.world - 1):
            act = (b, *self.stages[boundary].ctx.out_shape)
            fb = self._feedback_shape(boundary)
            shapes = [None] * self.world
            dist.all_gather_object(shapes, fb, group=self.ctrl)
            fb = next((sh for sh in shapes if sh is not None), None)
            times = []
            for rep in range(CALIBRATION_REPS + 1):
                dist.barrier(group=self.ctrl)
                t0 = time.perf_counter()
                if self.rank == boundary:
                    dist.send(torch.zeros(act, device=self.device), boundary + 1, group=self.fwd_group)
                    if fb:
                        dist.recv(torch.empty(fb, device=self.device), boundary + 1, group=self.bwd_group)
                elif self.rank == boundary + 1:
                    dist.recv(torch.empty(act, device=self.device), boundary, group=self.fwd_group)
                    if fb:
                        dist.send(torch.zeros(fb, device=self.device), boundary, group=self.bwd_group)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if rep:
                    times.append(time.perf_counter() - t0)
            rt = [None] * self.world
            dist.all_gather_object(rt, sorted(times)[len(times) // 2] if self.rank == boundary else None,
                                   group=self.ctrl)
            result.append(rt[boundary])
        return result

    def _feedback_shape(self, boundary: int):
        """Shape of what goes back across `boundary`, as seen by the worker that sent it (None: nothing)."""
        if self.rank != boundary + 1:
            return None
        if self.mode == "gpipe":
            return (self.cfg.batch_size, *self.stages[boundary].ctx.out_shape)
        return self.fb_shape

    def _worker_stats(self, train_time: float, timed_steps: int, calibration: list[float]) -> dict:
        i = self.rank
        if self.mode == "ddp":
            per_step = calibration[0]
        else:  # the boundaries this worker takes part in
            per_step = sum(calibration[j] for j in (i - 1, i) if 0 <= j < len(calibration))
        stats = {
            "rank": i, "host": socket.gethostname(), "device": str(self.device), "threads": torch.get_num_threads(),
            "steps": timed_steps, "step_time_s": train_time / max(timed_steps, 1),
            "compute_s": self.fwd_s + self.bwd_s, "forward_s": self.fwd_s, "backward_s": self.bwd_s,
            "comm_wait_s": self.meter.wait_s, "comm_share": self.meter.wait_s / train_time if train_time else None,
            "bytes_sent": self.meter.bytes_sent, "bytes_recv": self.meter.bytes_recv,
            "peak_rss_mb": self.rss_peak_mb, "rss_start_mb": self.rss_start_mb,
            "gpu_mem_nvml_mb": self.gpu_nvml_mb or None, "torch_cuda_peak_mb": self.gpu_peak_mb or None,
            "torch_cuda_reserved_mb": self.gpu_reserved_mb or None,
            "paper_comm_estimate_s": per_step * timed_steps,
            "paper_comm_share": per_step * timed_steps / train_time if train_time else None,
        }
        if self.mode == "stages" and self.dcfg.schedule == "pipelined" and self.staleness:
            stats["staleness_mean"] = sum(self.staleness) / len(self.staleness)
            stats["staleness_max"] = max(self.staleness)
        return stats


# --- instrumentation of the library schedules ------------------------------------------------------
class _DdpMeter:
    """DDP overlaps its all-reduces with the backward pass; the time the step is blocked is the tail
    from the last bucket's launch (the end of the gradient computation) to the last bucket's result."""

    def __init__(self, meter: Meter, world: int, group):
        self.meter, self.world, self.group = meter, world, group
        self.last_launch = self.last_done = 0.0

    def end_step(self) -> float:
        """Count this step's blocked tail as communication; returns it."""
        tail = max(0.0, self.last_done - self.last_launch)
        self.meter.wait_s += tail
        self.last_launch = self.last_done = 0.0
        return tail


def _timed_allreduce(state: _DdpMeter, bucket):
    buf = bucket.buffer()
    ring = 2 * (state.world - 1) / state.world  # bytes each worker sends (and receives) in a ring all-reduce
    state.meter.bytes_sent += int(ring * buf.numel() * buf.element_size())
    state.meter.bytes_recv += int(ring * buf.numel() * buf.element_size())
    state.last_launch = time.perf_counter()
    fut = dist.all_reduce(buf.div_(state.world), group=state.group, async_op=True).get_future()

    def done(f):
        state.last_done = max(state.last_done, time.perf_counter())
        return f.value()[0]

    return fut.then(done)


def _instrument_pipelining(meter: Meter) -> None:
    """Count the bytes of torch.distributed.pipelining's p2p ops and time its waits (private helpers
    of torch 2.x schedules; if they move, the counters stay at zero rather than break the run)."""
    from torch.distributed.pipelining import schedules

    batch, wait = getattr(schedules, "_batch_p2p", None), getattr(schedules, "_wait_batch_p2p", None)
    if batch is None or wait is None:
        return

    def counted_batch(ops, *args, **kwargs):
        for op in ops:
            n = op.tensor.numel() * op.tensor.element_size()
            if "isend" in getattr(op.op, "__name__", ""):
                meter.bytes_sent += n
            else:
                meter.bytes_recv += n
        return batch(ops, *args, **kwargs)

    def timed_wait(works):
        for work in works if isinstance(works, (list, tuple)) else [works]:
            meter.wait(work, "torch.distributed.pipelining p2p")

    schedules._batch_p2p, schedules._wait_batch_p2p = counted_batch, timed_wait


# --- entry point ---------------------------------------------------------------------------------
def _configs(argv: list[str] | None) -> tuple[RunConfig, DistConfig]:
    """`--config FILE` (written by the local launch) or the options of `python -m bench run` (torchrun)."""
    if argv and argv[0] == "--config":
        d = json.loads(open(argv[1]).read())
        return RunConfig.from_dict(d["run"]), DistConfig.from_dict(d["dist"])
    from .__main__ import parser

    args = parser().parse_args(["run", *(argv or [])])
    d = dict(vars(args), split_rule=args.split)
    return RunConfig.from_dict(d), DistConfig.from_dict(d)


def _terminated(signum, frame):
    raise SystemExit("stopped by SIGTERM (a peer failed, or the job was cancelled)")


def main(argv: list[str] | None = None) -> int:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a worker is stuck
    signal.signal(signal.SIGTERM, _terminated)  # stopped by the launcher or torchrun's agent: record it
    cfg = dcfg = None
    try:
        cfg, dcfg = _configs(sys.argv[1:] if argv is None else argv)
        Worker(cfg, dcfg).run()
        dist.destroy_process_group()
        return 0
    except BaseException as e:
        exit_failed(e, None if cfg is None else lambda msg: mark_failed(cfg, dcfg, msg))


def exit_failed(e: BaseException, mark: Callable[[str], object] | None) -> NoReturn:
    """How a worker (this one or bench.rounds_worker's) ends on any error: one line on stderr, the run
    record marked failed through `mark`, and an exit that does not wait on a dead process group."""
    rank = os.environ.get("RANK", "?")
    msg = one_line(e) if isinstance(e, (BenchError, PeerError)) else f"{type(e).__name__}: {one_line(e)}"
    if not msg.startswith(f"rank {rank}"):
        msg = f"rank {rank}: {msg}"
    if os.environ.get("LCTBENCH_DEBUG"):
        traceback.print_exc()
    print(f"error: {msg}", file=sys.stderr, flush=True)
    if mark is not None:
        try:
            mark(msg)
        except Exception:
            pass
    sys.stdout.flush()
    os._exit(2 if isinstance(e, BenchError) else 1)


if __name__ == "__main__":
    sys.exit(main())
