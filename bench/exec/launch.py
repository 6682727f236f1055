"""The distributed executor's validation and its one-command local launch, for every backend.

`python -m bench run --executor distributed ...` (or `run_distributed`) starts one worker process
per layer group on this machine (`python -m bench.exec.worker`, see bench/exec/worker.py for what a
worker does) and watches them: when one dies, the others get `grace_s` seconds to notice and exit on
their own with a one-line error, then they are terminated, and the run record says `failed`.

Several machines: start the same worker with torchrun on every node, for example on node n of 2

    torchrun --nnodes 2 --node-rank n --nproc-per-node 2 --master-addr HOST --master-port 29500 \
        -m bench.exec.worker --method lct --groups 4 --schedule overlapped --profile cpu

(or `--rdzv-backend c10d --rdzv-endpoint HOST:29500` without --node-rank; one process per group: nnodes x
nproc-per-node must equal --groups, or --groups / stages_per_rank for the multi-stage pipeline schedules;
rank 0 writes the record under --out on its node, each worker's node and local rank in it; torchrun's agent
stops the other workers when one fails; tests/test_multinode.py runs two such nodes on one machine).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from methods import create_method

from ..config import RunConfig, differing_settings, prepare
from ..errors import BenchError
from ..train.build import measure_split
from ..train.records import new_record, read_record, run_lock, write_record
from .backends import backend_for
from .settings import SCHEDULES, DistConfig


def schedule_name(cfg: RunConfig, dcfg: DistConfig) -> str:
    """What the record's `schedule` says: the stage schedule, or the backend's own (gpipe-m4, allreduce, ...)."""
    method = create_method(cfg.method)
    return backend_for(method, cfg.groups).schedule_name(dcfg, method.resolve_options(cfg.extra))


def worker_count(cfg: RunConfig) -> int:
    """Worker processes of the run: one per group, or what the method's backend says (stages per worker)."""
    method = create_method(cfg.method)
    return backend_for(method, cfg.groups).workers(cfg, method.resolve_options(cfg.extra))


def record_path(cfg: RunConfig, dcfg: DistConfig) -> Path:
    """Distributed records sit beside in-process ones under their own name (a shared-GPU run's is its own too:
    it never takes a timed run's place, nor is it resumed as one)."""
    shared = "-shared-gpu" if dcfg.share_gpu else ""
    return Path(cfg.out) / f"{cfg.run_id}_dist-{schedule_name(cfg, dcfg)}{shared}.json"


def validate(cfg: RunConfig, dcfg: DistConfig) -> RunConfig:
    """Cheap checks before any process starts (the run's, then the backend's); every failure is one line."""
    cfg = prepare(cfg)
    method = create_method(cfg.method)
    backend = backend_for(method, cfg.groups)
    if dcfg.schedule not in SCHEDULES:
        raise BenchError(f"unknown schedule {dcfg.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    check_dist(dcfg, cfg.steps)
    backend.validate(cfg, dcfg, method, method.resolve_options(cfg.extra))
    cuda = cfg.device.startswith("cuda")
    if dcfg.share_gpu and not cuda:
        raise BenchError(f"--share-gpu lets workers share GPUs, for --device cuda; this run is on {cfg.device}: "
                         f"drop --share-gpu")
    if cuda:
        import torch

        local = int(os.environ.get("LOCAL_WORLD_SIZE", worker_count(cfg)))  # workers on this node (torchrun: per node)
        if torch.cuda.device_count() < local and not dcfg.share_gpu:
            raise BenchError(f"{local} workers on this machine need {local} GPUs (one each); it has "
                             f"{torch.cuda.device_count()} (--share-gpu: a functional run with workers sharing them)")
    return cfg


def check_dist(dcfg: DistConfig, steps: int) -> None:
    for key, flag in (("threads_per_worker", "--threads-per-worker"), ("max_stale", "--max-stale")):
        value = getattr(dcfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BenchError(f"{flag} must be an integer >= 1, got {value!r}")
    for key, flag, least in (("timeout_s", "--comm-timeout", 1.0), ("eval_timeout_s", "--eval-timeout", 1.0),
                             ("grace_s", "grace", 0.0)):
        value = getattr(dcfg, key)
        if not (isinstance(value, (int, float)) and least <= value < float("inf")):
            raise BenchError(f"{flag} must be a number of seconds >= {least:g}, got {value!r}")
    if not isinstance(dcfg.warmup_steps, int) or not 0 <= dcfg.warmup_steps < steps:
        raise BenchError(f"warm-up steps must be an integer in 0..{steps - 1}, got {dcfg.warmup_steps!r}")


def previous_record(cfg: RunConfig, dcfg: DistConfig) -> dict | None:
    """A distributed run never overwrites a record: without --resume an existing one is refused; with it, a
    completed one of the same settings is skipped (a distributed run cannot continue mid-way)."""
    path = record_path(cfg, dcfg)
    if not path.exists():
        return None
    previous = read_record(path)
    if not cfg.resume:
        raise BenchError(f"{path} exists ({previous['status']}); --resume skips a completed run, or choose "
                         f"another --out")
    diff = differing_settings(previous["config"], replace(cfg, split_bounds=cfg.split_bounds or previous[
        "config"].get("split_bounds")).to_dict())
    if diff:
        raise BenchError(f"{path} was run with other settings (differs in: {', '.join(diff)}): choose another --out")
    if previous["status"] not in ("completed", "diverged"):
        raise BenchError(f"{path} is {previous['status']}: a distributed run cannot continue mid-way; remove it "
                         f"or choose another --out")
    return previous


def mark_failed(cfg: RunConfig, dcfg: DistConfig, error: str) -> Path:
    """Make the run record say `failed` (whoever notices first; an existing error is kept)."""
    path = record_path(cfg, dcfg)
    try:
        record = read_record(path)
    except (OSError, ValueError):
        record = new_record(cfg.to_dict(), cfg.device)
        record.update(run_id=path.stem, executor="distributed", parallel="parallel",
                      schedule=schedule_name(cfg, dcfg), workers=[])
    if record.get("status") != "failed" or not record.get("error"):
        record["status"], record["error"] = "failed", error
        write_record(record, path)
    return path


# --- local launch ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG_ENV = "LCTBENCH_RUN_CONFIG"  # the run's configuration, as JSON, for the workers of a local launch


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a process this suite starts to compute like a worker: its threads fixed before torch
    loads, and this checkout importable."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


class LocalJob:
    """K worker processes on this machine (`python -m <module>`, bench.exec.worker unless said otherwise; the
    configuration in the environment: no file to leave behind), and the watchdog that ends them all when
    one fails."""

    def __init__(self, cfg: RunConfig, dcfg: DistConfig, log_dir: Path | None = None,
                 module: str = "bench.exec.worker"):
        self.cfg, self.dcfg = cfg, dcfg
        workers = worker_count(cfg)
        base = dict(worker_env(dcfg.threads_per_worker), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                    **{CONFIG_ENV: json.dumps({"run": cfg.to_dict(), "dist": asdict(dcfg)})},
                    WORLD_SIZE=str(workers), LOCAL_WORLD_SIZE=str(workers))
        self.logs: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        for rank in range(workers):
            env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
            out = None
            if log_dir is not None:
                Path(log_dir).mkdir(parents=True, exist_ok=True)
                self.logs.append(Path(log_dir) / f"rank{rank}.log")
                out = open(self.logs[-1], "w")
            self.procs.append(subprocess.Popen([sys.executable, "-m", module], env=env, stdout=out,
                                               stderr=subprocess.STDOUT if out else None))
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

def describe_exit(rank: int, code: int) -> str:
    if code < 0:
        return f"rank {rank} killed by signal {-code} ({signal.Signals(-code).name})"
    return f"rank {rank} exited with code {code}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_distributed(cfg: RunConfig, dcfg: DistConfig, log_dir: Path | None = None) -> Path:
    """Launch the K workers here, wait for them, and return the record's path (BenchError if any failed).
    With --resume a completed record of the same settings is skipped."""
    cfg = validate(cfg, dcfg)
    path = record_path(cfg, dcfg)
    with run_lock(Path(cfg.out), path.stem):
        if previous_record(cfg, dcfg) is not None:
            print(f"{path.stem}: already completed, skipping ({path})")
            return path
        # a timed cut is measured once here, with one worker's threads, and shared by every worker
        cfg.split_bounds = measure_split(replace(cfg, threads=dcfg.threads_per_worker))
        watch(LocalJob(cfg, dcfg, log_dir), lambda error: mark_failed(cfg, dcfg, error))
    return path


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
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if any(codes):
        # the first worker to fail is usually the cause; the others report losing it
        msg = "; ".join(describe_exit(r, c) for r, c in enumerate(codes) if c)
        path = mark(msg)
        raise BenchError(f"distributed run failed: {msg}; record: {path}")
