"""The distributed executor's settings and its one-command local launch.

`python -m bench run --executor distributed ...` (or `run_distributed`) starts one worker process
per layer group on this machine (`python -m bench.worker`, see bench/worker.py for what a worker
does) and watches them: when one dies, the others get `grace_s` seconds to notice and exit on
their own with a one-line error, then they are terminated, and the run record says `failed`.

Several machines: start the same worker with torchrun on every node, for example

    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        -m bench.worker --method lct --groups 4 --schedule pipelined --profile cpu

(one process per group: nnodes x nproc-per-node must equal --groups; rank 0 writes the record
under --out on its node; torchrun's agent stops the other workers when one fails).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

from .config import RunConfig, resolve
from .errors import BenchError
from .records import new_record, read_record, write_record

SCHEDULES = ("lockstep", "pipelined")
PP_SCHEDULES = ("gpipe", "1f1b")


@dataclass
class DistConfig:
    schedule: str = "lockstep"       # lockstep: wait for each batch's feedback; pipelined: go on with the next batch
    threads_per_worker: int = 1      # torch intra-op threads in every worker (gloo on CPU)
    microbatches: int = 4            # gpipe: micro-batches per batch
    pp_schedule: str = "gpipe"       # gpipe: torch.distributed.pipelining schedule (gpipe | 1f1b)
    max_stale: int = 2               # pipelined: feedback may be applied at most this many forwards late
    timeout_s: float = 300.0         # a wait on a peer longer than this fails the run
    grace_s: float = 20.0            # local launch: seconds the others get to exit after one worker died
    warmup_steps: int = 0            # steps run before the clock and the counters start (speed benchmark)
    evaluate: bool = True            # evaluate at eval_every and at the end (the speed benchmark does not)
    dump_state: str | None = None    # tests: rank 0 writes final weights and last gradients of every group here

    @classmethod
    def from_dict(cls, d: dict) -> "DistConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})


def schedule_name(cfg: RunConfig, dcfg: DistConfig) -> str:
    """What the record's `schedule` says: the stage schedule, or gpipe's / ddp's own."""
    if cfg.method == "gpipe" and cfg.groups > 1:
        return f"{dcfg.pp_schedule}-m{dcfg.microbatches}"
    if cfg.method == "ddp":
        return "allreduce"
    return dcfg.schedule


def record_path(cfg: RunConfig, dcfg: DistConfig) -> Path:
    """Distributed records sit beside in-process ones under their own name."""
    return Path(cfg.out) / f"{cfg.run_id}_dist-{schedule_name(cfg, dcfg)}.json"


def validate(cfg: RunConfig, dcfg: DistConfig) -> RunConfig:
    """Cheap checks before any process starts; every failure is a one-line BenchError."""
    from methods import Stage, create_method

    from . import data as datasets
    from .models import MODELS

    cfg = resolve(cfg)
    stage_cls = create_method(cfg.method)
    if cfg.model not in MODELS:
        raise BenchError(f"unknown model {cfg.model!r}; valid models: {', '.join(MODELS)}")
    stage_cls.check_model(cfg.model)  # before any process starts
    datasets.check_available(cfg.data, datasets.resolve_data_root(cfg.data_root))
    if stage_cls.run_step.__func__ is not Stage.run_step.__func__ and not hasattr(stage_cls, "run_distributed"):
        raise BenchError(f"{cfg.method} has its own step (run_step), which has no distributed form yet; "
                         f"run it with --executor inprocess")
    if dcfg.schedule not in SCHEDULES:
        raise BenchError(f"unknown schedule {dcfg.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    if dcfg.pp_schedule not in PP_SCHEDULES:
        raise BenchError(f"unknown pipeline schedule {dcfg.pp_schedule!r}; valid: {', '.join(PP_SCHEDULES)}")
    if dcfg.threads_per_worker < 1 or dcfg.microbatches < 1 or dcfg.max_stale < 1:
        raise BenchError("--threads-per-worker, --microbatches and --max-stale must be >= 1")
    if cfg.resume:
        raise BenchError("--resume is not supported by the distributed executor (start the run again)")
    if dcfg.schedule == "pipelined":
        if cfg.method in ("gpipe", "ddp"):
            raise BenchError(f"--schedule pipelined is for stage methods; {cfg.method} has its own schedule"
                             " (gpipe: --microbatches, --pp-schedule)")
        if stage_cls.sends_feedback and not stage_cls.local_gradients:
            raise BenchError(f"--schedule pipelined needs a method that updates each group without waiting"
                             f" (lct, dni, cdni); {cfg.method} would apply feedback to weights that have moved on:"
                             f" use gpipe for pipelined backprop")
    if cfg.method == "gpipe":  # the in-process rule (one worker) cuts the batch the same way
        cfg.extra = {**cfg.extra, "microbatches": dcfg.microbatches}
    if cfg.method == "gpipe" and cfg.groups > 1:
        if cfg.batch_size % dcfg.microbatches:
            raise BenchError(f"batch size {cfg.batch_size} is not divisible into {dcfg.microbatches} micro-batches")
        if dcfg.pp_schedule == "1f1b" and dcfg.microbatches < cfg.groups:
            raise BenchError(f"1f1b needs at least as many micro-batches as groups ({cfg.groups})")
    if cfg.method == "ddp" and cfg.batch_size % cfg.groups:
        raise BenchError(f"ddp: batch size {cfg.batch_size} is not divisible by {cfg.groups} workers")
    if cfg.device.startswith("cuda"):
        import torch
        local = int(os.environ.get("LOCAL_WORLD_SIZE", cfg.groups))  # workers on this node (torchrun: per node)
        if torch.cuda.device_count() < local:
            raise BenchError(f"{local} workers on this machine need {local} GPUs (one each); "
                             f"it has {torch.cuda.device_count()}")
    elif cfg.device != "cpu":
        raise BenchError(f"device {cfg.device!r}: the distributed executor runs on cpu (gloo) or cuda (nccl)")
    return cfg


def mark_failed(cfg: RunConfig, dcfg: DistConfig, error: str) -> Path:
    """Make the run record say `failed` (whoever notices first; an existing error is kept)."""
    return mark_failed_at(record_path(cfg, dcfg), cfg, schedule_name(cfg, dcfg), error)


def mark_failed_at(path: Path, cfg: RunConfig, schedule: str, error: str) -> Path:
    """mark_failed for the record at `path` (also bench.rounds_worker's records)."""
    try:
        record = read_record(path)
    except (OSError, ValueError):
        record = new_record(cfg.to_dict(), cfg.device)
        record.update(run_id=path.stem, executor="distributed", parallel="parallel", schedule=schedule, workers=[])
    if record.get("status") != "failed" or not record.get("error"):
        record["status"], record["error"] = "failed", error
        write_record(record, path)
    return path


# --- local launch ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalJob:
    """K worker processes on this machine (`python -m <module> --config FILE`), and the watchdog that ends
    them all when one fails."""

    def __init__(self, cfg: RunConfig, dcfg: DistConfig, log_dir: Path | None = None, module: str = "bench.worker"):
        self.cfg, self.dcfg = cfg, dcfg
        self.tmp = Path(tempfile.mkdtemp(prefix="lctbench-"))
        config = self.tmp / "config.json"
        config.write_text(json.dumps({"run": cfg.to_dict(), "dist": asdict(dcfg)}))
        root = str(Path(__file__).resolve().parent.parent)
        threads = str(dcfg.threads_per_worker)
        base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                    WORLD_SIZE=str(cfg.groups), LOCAL_WORLD_SIZE=str(cfg.groups),
                    OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                    PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.logs: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        for rank in range(cfg.groups):
            env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
            out = None
            if log_dir is not None:
                Path(log_dir).mkdir(parents=True, exist_ok=True)
                self.logs.append(Path(log_dir) / f"rank{rank}.log")
                out = open(self.logs[-1], "w")
            self.procs.append(subprocess.Popen([sys.executable, "-m", module, "--config", str(config)],
                                               env=env, stdout=out, stderr=subprocess.STDOUT if out else None))
            if out is not None:
                out.close()

    def wait(self) -> list[int]:
        """Exit codes of every worker; after a failure, survivors are stopped after `grace_s` seconds."""
        failed_at = None
        while True:
            codes = [p.poll() for p in self.procs]
            if all(c is not None for c in codes):
                return codes
            if failed_at is None and any(c not in (None, 0) for c in codes):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > self.dcfg.grace_s:
                self.stop()
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM every live worker, SIGKILL those still there 5 s later."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        for f in self.tmp.iterdir():
            f.unlink()
        self.tmp.rmdir()


def describe_exit(rank: int, code: int) -> str:
    if code < 0:
        return f"rank {rank} killed by signal {-code} ({signal.Signals(-code).name})"
    return f"rank {rank} exited with code {code}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_distributed(cfg: RunConfig, dcfg: DistConfig, log_dir: Path | None = None) -> Path:
    """Launch the K workers here, wait for them, and return the record's path (BenchError if any failed)."""
    from methods import create_method

    own = getattr(create_method(cfg.method), "run_distributed", None)
    if own is not None:  # round-based methods (resist, localsgd) start their own workers
        return own(cfg, dcfg)
    cfg = validate(cfg, dcfg)
    if cfg.split_rule == "timed" and cfg.split_bounds is None:  # measured once here, shared by every worker
        from .runner import measure_split

        cfg.split_bounds = measure_split(replace(cfg, threads=dcfg.threads_per_worker))
    watch(LocalJob(cfg, dcfg, log_dir), lambda error: mark_failed(cfg, dcfg, error))
    return record_path(cfg, dcfg)


def watch(job: LocalJob, mark: Callable[[str], Path]) -> None:
    """Wait for a job's workers; if one fails (or the launcher is interrupted), stop the rest, mark the record
    failed through `mark` and raise a one-line BenchError."""
    try:  # a SIGTERM to the launcher stops the workers too (no orphans)
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        codes = job.wait()
    except KeyboardInterrupt:
        job.stop()
        mark("interrupted")
        raise
    finally:
        job.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if any(codes):
        # the first worker to fail is usually the cause; the others report losing it
        msg = "; ".join(describe_exit(r, c) for r, c in enumerate(codes) if c)
        path = mark(msg)
        raise BenchError(f"distributed run failed: {msg}; record: {path}")
