"""One worker of the distributed executor, for every backend: `python -m bench.exec.worker`.

Started K times by `python -m bench run --executor distributed` (bench/exec/launch.py) or by torchrun
(`torchrun ... -m bench.exec.worker <the options of bench run>`). Every rank builds exactly what the
in-process executor builds (bench.train.build: same seed, so identical initial weights), then the
backend the method declares (bench/exec/backends.py) trains this rank's share of it under the one
training loop (bench.train.loop); rank 0 evaluates (on every group's gathered weights) and writes the
record.
"""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import replace
from typing import Callable, NoReturn

import torch
import torch.distributed as dist

from ..config import RunConfig
from ..errors import BenchError
from ..train.build import build, measure_split
from ..train.loop import Loop
from ..train.records import RecordWriter, atomic_torch_save
from .backends import backend_for
from .engine import init_comms
from .launch import CONFIG_ENV, mark_failed, record_path, schedule_name, validate, worker_count
from .meter import PeerError, one_line
from .settings import DistConfig


def watch_parent(mark: Callable[[str], object]) -> None:
    """End this worker when the process that started it dies (a killed launcher or torchrun agent): the
    record is marked failed and the process exits, even while the main thread waits on a peer."""
    parent = os.getppid()

    def poll():
        while os.getppid() == parent:
            time.sleep(0.5)
        try:
            mark(f"rank {os.environ.get('RANK', '?')}: the launcher (pid {parent}) died")
        finally:
            os._exit(1)

    threading.Thread(target=poll, daemon=True, name="parent-watch").start()


def worker_main(cfg: RunConfig, dcfg: DistConfig) -> None:
    watch_parent(lambda msg: mark_failed(cfg, dcfg, msg))
    torch.set_num_threads(dcfg.threads_per_worker)
    cfg = validate(replace(cfg, threads=dcfg.threads_per_worker), dcfg)  # before a GPU or a peer is touched
    device, comms = init_comms(cfg, dcfg)
    world = dist.get_world_size()
    if world != worker_count(cfg):
        raise BenchError(f"{world} workers for {cfg.groups} groups: start {worker_count(cfg)} (one per group, or "
                         f"one per stages_per_rank groups of a multi-stage pipeline schedule)")
    if cfg.split_rule == "timed" and cfg.split_bounds is None:  # torchrun: rank 0 measures for everyone
        bounds = [measure_split(replace(cfg, device=str(device))) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(bounds, src=0, group=comms.ctrl)
        cfg.split_bounds = bounds[0]
    run = build(replace(cfg, device="cpu"))  # every group built on every rank; the backend places its own
    run.device = device
    method = run.method
    engine = backend_for(method, cfg.groups)(run, dcfg, comms)
    writer = None
    if engine.writes_record:
        writer = RecordWriter.start(record_path(cfg, dcfg), cfg.to_dict(), str(device), split=run.split_info(),
                                    schedule=schedule_name(cfg, dcfg), workers=[], **engine.record_header)
        writer.record["config"]["distributed"] = {**vars(dcfg), "world_size": world, "backend": dist.get_backend()}
        writer.save()
    Loop(run, engine, writer, warmup=dcfg.warmup_steps, evaluate=dcfg.evaluate).train()
    if dcfg.dump_state:
        engine.gather()
        if writer is not None:
            atomic_torch_save(engine.gathered, writer.path.parent / dcfg.dump_state)
    if writer is not None and dcfg.evaluate:
        final = writer.record["final"]
        print(f"{writer.path.stem}: {writer.record['status']}, test acc {final.get('test_acc') or 0:.2f}, "
              f"{final.get('samples_per_s') or 0:.0f} samples/s", flush=True)


# --- entry point ---------------------------------------------------------------------------------
def _configs(argv: list[str]) -> tuple[RunConfig, DistConfig]:
    """The configuration the local launch put in the environment, or the options of `python -m bench run`
    (torchrun)."""
    if os.environ.get(CONFIG_ENV):
        d = json.loads(os.environ[CONFIG_ENV])
        return RunConfig.from_dict(d["run"]), DistConfig.from_dict(d["dist"])
    from ..__main__ import parser, run_config  # the command line's own parser (torchrun passes its options)

    args = parser().parse_args(["run", *argv])
    return run_config(args), DistConfig.from_dict(vars(args))


def _terminated(signum, frame):
    raise SystemExit("stopped by SIGTERM (a peer failed, or the job was cancelled)")


def main(argv: list[str] | None = None) -> int:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a worker is stuck
    signal.signal(signal.SIGTERM, _terminated)  # stopped by the launcher or torchrun's agent: record it
    cfg = dcfg = None
    try:
        cfg, dcfg = _configs(sys.argv[1:] if argv is None else argv)
        worker_main(cfg, dcfg)
        dist.destroy_process_group()
        return 0
    except BaseException as e:
        exit_failed(e, None if cfg is None else lambda msg: mark_failed(cfg, dcfg, msg))


def exit_failed(e: BaseException, mark: Callable[[str], object] | None) -> NoReturn:
    """How a worker ends on any error: one line on stderr, the run record marked failed through `mark`, and
    an exit that does not wait on a dead process group."""
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
