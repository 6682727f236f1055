"""The one training loop, for every executor: phases of steps, evaluation, Assumption 1, checkpoints,
curves, the final figures and the record's status.

An *engine* runs the steps: bench.exec.inprocess.InProcess (all groups in this process) or one worker of
a distributed backend (bench.exec.worker). The loop asks it for phases of steps between the points where
something is measured, and only the engine that writes the record (in process, or rank 0) evaluates and
writes. Only training steps are timed; evaluation and Assumption 1 sit between phases.

    python -m bench run ...           # run(cfg): in process; --resume continues from the last checkpoint
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import RunConfig, differing_settings, prepare
from ..errors import BenchError
from ..exec.inprocess import InProcess
from .build import Run, build
from .evaluate import assumption1, evaluate
from .records import RecordWriter, atomic_torch_save, load_checkpoint_file, read_record, run_lock

EVAL_BATCH = 1000  # no gradients: large batches (fewer, bigger operations) are faster


def phase_ends(cfg: RunConfig, start: int, warmup: int, evaluate_: bool, align=lambda s: s) -> dict[int, set]:
    """Step -> what happens once it is done: "curve" (a curve point, and an evaluation where the run
    evaluates), "a1" (Assumption 1), "warmup" (the clock starts). `align` moves a point to where the
    engine can stop (round ends for the round-based backend)."""
    ends: dict[int, set] = {cfg.steps: {"curve"}}
    if evaluate_:
        for s in range(cfg.eval_every, cfg.steps, cfg.eval_every):
            ends.setdefault(align(s), set()).add("curve")
    if cfg.assumption1_every and evaluate_:
        for s in range(cfg.assumption1_every, cfg.steps + 1, cfg.assumption1_every):
            ends.setdefault(align(s), set()).add("a1")
    if 0 < warmup < cfg.steps:
        ends.setdefault(warmup, set()).add("warmup")
    return {s: what for s, what in sorted(ends.items()) if start < s <= cfg.steps}


class Loop:
    def __init__(self, run: Run, engine, writer: RecordWriter | None, *, warmup: int = 0, evaluate: bool = True,
                 progress: bool = False, checkpoint: Path | None = None):
        self.run, self.engine, self.writer = run, engine, writer
        self.warmup, self.evaluate, self.checkpoint = warmup, evaluate, checkpoint
        self.a1 = run.method.local_gradients and bool(run.cfg.assumption1_every)
        self.bar = tqdm(total=run.cfg.steps, disable=not (progress and writer), desc=writer and writer.path.stem,
                        unit="step", dynamic_ncols=True)
        c = writer.curves if writer else {}
        self.train_time = c["train_time_s"][-1] if c.get("train_time_s") else 0.0
        self.timed_steps = 0
        self.interval = [0.0, 0.0, 0]  # loss sum, seconds, steps since the last curve point

    def train(self, start: int = 0) -> None:
        """Steps [start, cfg.steps); the record says completed, diverged or failed at the end."""
        self.bar.update(start)
        try:
            self._phases(start)
            self._finish()
        except BaseException as e:
            if self.writer is not None:
                interrupted = isinstance(e, KeyboardInterrupt)
                self.writer.fail("interrupted (resume with --resume)" if interrupted else f"{type(e).__name__}: {e}")
            raise
        finally:
            self.bar.close()

    def _phases(self, start: int) -> None:
        cfg, engine = self.run.cfg, self.engine
        align = getattr(engine, "align", lambda s: s)
        for end, what in phase_ends(cfg, start, self.warmup, self.evaluate, align).items():
            with self.run.autocast():  # the run's --precision, for every executor (Assumption 1 stays fp32)
                phase = engine.phase(start, end, self.bar.update)
            if "warmup" in what:  # warm-up over: start the clock and the counters
                engine.start_timing()
                start = end
                continue
            self.train_time += phase.seconds
            self.timed_steps += phase.steps
            for i, v in enumerate((phase.loss_sum, phase.seconds, phase.steps)):
                self.interval[i] += v
            if phase.diverged:
                if self.writer is not None:
                    self.writer.record.update(status="diverged", error=phase.diverged)
                    print(f"diverged: {phase.diverged}", flush=True)
                return
            self._measure(end, what)
            engine.barrier()  # measurements done: the next phase's clock starts together
            start = end

    def _measure(self, end: int, what: set) -> None:
        """Between phases: a curve point, an evaluation, Assumption 1, a checkpoint (the record writer)."""
        if self.evaluate and (what & {"curve", "a1"}):
            self.engine.gather()  # every group's weights to the writer (a collective on real workers)
        if self.writer is None:
            return
        cfg, run = self.run.cfg, self.run
        if "a1" in what and self.a1:  # on the last batches trained on
            batches = [run.stream.batch(s) for s in range(end - 1, max(-1, end - 1 - cfg.assumption1_batches), -1)]
            self.writer.add_assumption1(end, assumption1(run.trainer, [(x.to(run.device), y.to(run.device))
                                                                        for x, y in batches]))
        if "curve" in what:
            loss_sum, seconds, steps = self.interval
            self.interval = [0.0, 0.0, 0]
            self.writer.add_phase(end, loss_sum / max(steps, 1), seconds / max(steps, 1), self.train_time,
                                  end * cfg.batch_size)
            if self.evaluate:
                t0 = time.perf_counter()
                limit = cfg.final_eval_limit if end == cfg.steps else cfg.eval_limit
                with run.autocast():  # evaluation in the run's precision
                    ev = evaluate(run.trainer.network(), run.data.eval_batches(EVAL_BATCH, run.device, limit=limit),
                                  text=run.text, bn=cfg.eval_bn)
                self.writer.add_evaluation(ev, time.perf_counter() - t0)
                self.engine.after_evaluation()
                self._say(end, ev)
        if self.checkpoint is not None and end < cfg.steps and "curve" in what:
            atomic_torch_save(checkpoint_state(run, end, self.writer.record), self.checkpoint)
        self.writer.save()

    def _say(self, end: int, ev: dict) -> None:
        loss = self.writer.curves["train_loss"][-1]
        metric = f"bpc {ev['test_bpc']:.3f}" if "test_bpc" in ev else f"acc {ev['test_acc']:.1f}"
        if self.bar.disable:
            if getattr(self.engine, "announce", False):
                print(f"{self.writer.path.stem}: step {end}/{self.run.cfg.steps} loss {loss:.3f} {metric}", flush=True)
        else:
            self.bar.set_postfix_str(f"loss {loss:.3f} {metric}")

    def _finish(self) -> None:
        stats = self.engine.worker_stats(self.train_time, self.timed_steps)  # a collective on real workers
        if self.writer is None:
            return
        cfg, record, c = self.run.cfg, self.writer.record, self.writer.curves
        steps = c["step"][-1] if c["step"] else 0
        timed = steps - (self.warmup if 0 < self.warmup < cfg.steps else 0)
        record["final"].update({
            "steps": steps, "timed_steps": timed,
            "warmup_steps": self.warmup if 0 < self.warmup < cfg.steps else 0,
            **self.writer.last_evaluation(), "train_time_s": self.train_time,
            "samples_per_s": timed * cfg.batch_size / self.train_time if self.train_time else None,
        })
        if self.run.text:  # BPC, and the bar it has to clear: the test text's unigram entropy
            record["final"].setdefault("test_bpc", None)
            record["final"].setdefault("sub_bpc", [])
            record["final"].update(unigram_bpc=self.run.data.unigram_bpc("test"),
                                   epochs=steps / self.run.stream.steps_per_epoch)
        record.update(self.run.trainer.extras())
        record.update(stats)
        if stats.get("workers"):
            record["final"]["comm_share_max"] = max(w["comm_share"] or 0.0 for w in stats["workers"])
        if record["status"] == "running":
            record["status"] = "completed"
        self.writer.save()


def checkpoint_state(run: Run, step: int, record: dict) -> dict:
    t = run.trainer
    return {"step": step, "record": record,
            "modules": [{k: m.state_dict() for k, m in part.items()} for part in t.parts],
            "optimizers": [{k: o.state_dict() for k, o in opts.items()} for opts in t.optims],
            "scalers": [scaling.state_dict(opts) for scaling, opts in t.scalings]}  # fp16's GradScalers


def load_checkpoint(run: Run, state: dict) -> None:
    t = run.trainer
    for part, mods, opts, saved in zip(t.parts, state["modules"], t.optims, state["optimizers"]):
        for k, m in part.items():
            m.load_state_dict(mods[k])
        for k, o in opts.items():
            o.load_state_dict(saved[k])
    for (scaling, opts), saved in zip(t.scalings, state.get("scalers", [])):
        scaling.load_state_dict(opts, saved)


DIVERGED_EXIT = 3  # `python -m bench run` exits with this where the loss was not finite


def previous_run(cfg: RunConfig, path: Path, ckpt: Path) -> dict | None:
    """The record (or checkpoint) already at cfg's place, checked against cfg: without --resume any is
    refused (a run never overwrites a record), with --resume one of other settings is refused naming the
    keys that differ. A timed cut is taken from it (a resume never measures again)."""
    if not (path.exists() or ckpt.exists()):
        return None
    previous = read_record(path) if path.exists() else load_checkpoint_file(ckpt, "cpu")["record"]
    where = path if path.exists() else ckpt
    if not cfg.resume:
        raise BenchError(f"{where} exists ({previous['status']}); --resume continues or skips it, or choose "
                         f"another --out")
    if cfg.split_bounds is None:
        cfg.split_bounds = previous["config"].get("split_bounds")
    diff = differing_settings(previous["config"], cfg.to_dict())
    if diff:
        raise BenchError(f"{where} was run with other settings (differs in: {', '.join(diff)}); --resume refuses "
                         f"to mix them: choose another --out")
    return previous


def run(cfg: RunConfig, progress: bool = True) -> Path:
    """Train, evaluate and record one run in process; returns the record's path. With cfg.resume, a
    completed record of the same settings is left as it is and an unfinished one continues from its
    checkpoint; a record of other settings is never touched."""
    cfg = prepare(cfg)
    path = Path(cfg.out) / f"{cfg.run_id}.json"
    ckpt = Path(cfg.out) / "checkpoints" / f"{cfg.run_id}.pt"
    with run_lock(Path(cfg.out), cfg.run_id):
        previous = previous_run(cfg, path, ckpt)
        if previous is not None and previous["status"] in ("completed", "diverged"):
            print(f"{cfg.run_id}: already {previous['status']}, skipping ({path})")
            return path
        r = build(cfg)
        start, writer = 0, None
        if previous is not None and ckpt.exists():
            state = load_checkpoint_file(ckpt, r.device)
            load_checkpoint(r, state)
            start, writer = state["step"], RecordWriter(path, state["record"])
            writer.record["status"] = "running"
            print(f"{cfg.run_id}: resuming at step {start}/{cfg.steps}")
        if writer is None:
            writer = RecordWriter.start(path, r.cfg.to_dict(), str(r.device), split=r.split_info(),
                                        **InProcess.record_header)
        writer.record["env"]["torch_threads"] = torch.get_num_threads()
        writer.save()
        Loop(r, InProcess(r), writer, progress=progress, checkpoint=ckpt).train(start)
        if writer.record["status"] == "completed":
            ckpt.unlink(missing_ok=True)
    return path
