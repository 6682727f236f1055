"""`python -m bench run`: train one method on one model and data set, in process, and record it.

Every input is checked before anything is written; a record is written at every evaluation so a
killed run leaves a valid file, and a checkpoint beside it lets `--resume` continue without
losing completed steps. A NaN/inf loss ends the run as `diverged`.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from methods import create_method

from . import data as datasets
from .config import RunConfig, is_lstm, resolve
from .errors import BenchError
from .heads import critic
from .models import MODELS, build_model
from .pipeline import assumption1, build_stages, count_params, evaluate, train_step
from .records import add_evaluation, atomic_torch_save, last_evaluation, new_record, read_record, write_record
from .split import make_split, module_flops, unit_flops
from .text import TEXT_DATASETS, TextData


class Run:
    """Everything a run needs, built and validated before anything touches the disk."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg = resolve(cfg)
        create_method(cfg.method)  # unknown method: one-line error
        if cfg.model not in MODELS:
            raise BenchError(f"unknown model {cfg.model!r}; valid models: {', '.join(MODELS)}")
        if is_lstm(cfg.model) != (cfg.data in TEXT_DATASETS):  # LSTMs read text, the others images
            raise BenchError(f"model {cfg.model} does not run on {cfg.data}: the LSTMs (lstm2/3/4) need a text data "
                             f"set ({', '.join(TEXT_DATASETS)}), the other models an image data set")
        root = datasets.resolve_data_root(cfg.data_root)
        datasets.check_available(cfg.data, root)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        self.ds = datasets.load_dataset(cfg.data, root)
        if isinstance(self.ds, TextData):
            self.ds.with_bptt(cfg.bptt)  # the input shape and the segments follow the run's BPTT length
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.ds.num_classes, self.ds.input_shape, cfg.width, hidden=cfg.hidden)
        def head_for(shape):  # the balanced and timed rules count each group's critic in its cost
            return critic(self.model.family, shape, self.ds.num_classes, self.model.width)

        self.stream = datasets.BatchStream(self.ds, cfg.batch_size, cfg.seed, self.device)
        timing_batch = self.stream.batch(0) if cfg.split_rule == "timed" and cfg.split_bounds is None else None
        self.split = make_split(cfg.split_rule, self.model, cfg.groups, self.ds.input_shape, head_for,
                                bounds=cfg.split_bounds, batch=timing_batch)
        if cfg.split_rule == "timed":  # a measurement: keep it, so a resume (and the record) has this cut
            cfg.split_bounds = list(self.split.bounds)
        self.model.units.to(self.device)
        self.stages = build_stages(cfg.method, self.model, self.split, self.ds.input_shape,
                                   self.ds.num_classes, cfg.hyper(), cfg.extra)
        for s in self.stages:
            for m in s.modules().values():
                m.to(self.device)
        self.out = Path(cfg.out)
        self.record_path = self.out / f"{cfg.run_id}.json"
        self.ckpt_path = self.out / "checkpoints" / f"{cfg.run_id}.pt"

    # --- checkpoints ---------------------------------------------------------------------------
    def state(self, step: int, record: dict) -> dict:
        return {"step": step, "record": record,
                "modules": [{k: m.state_dict() for k, m in s.modules().items()} for s in self.stages],
                "optimizers": [{k: o.state_dict() for k, o in s.optimizers().items()} for s in self.stages]}

    def load(self, state: dict) -> None:
        for s, mods, opts in zip(self.stages, state["modules"], state["optimizers"]):
            for k, m in s.modules().items():
                m.load_state_dict(mods[k])
            for k, o in s.optimizers().items():
                o.load_state_dict(opts[k])

    # --- static facts for the record -----------------------------------------------------------
    def split_info(self) -> dict:
        flops, shapes = unit_flops(self.model, self.ds.input_shape)
        groups = []
        for i, (a, b) in enumerate(zip(self.split.bounds, self.split.bounds[1:])):
            stage = self.stages[i]
            head = stage.head if i < len(self.stages) - 1 else None
            groups.append({
                "units": self.model.unit_names[a:b],
                "layers": sum(self.model.unit_layers[a:b]),
                "params": count_params(stage.body),
                "flops": sum(flops[a:b]),
                "head_params": count_params(head) if head is not None else 0,
                "head_flops": module_flops(head, shapes[b - 1]) if head is not None else 0,
                "aux_params": sum(count_params(m) for k, m in stage.modules().items() if k not in ("body", "head")),
            })
        return {"rule": self.cfg.split_rule, "bounds": self.split.bounds, "groups": groups}


def measure_split(cfg: RunConfig) -> list[int]:
    """The cut of cfg's split rule, made once (for the timed rule: measured on cfg's device and threads), so
    that several processes can share it through `split_bounds`."""
    return list(Run(replace(cfg, resume=False)).split.bounds)


def run(cfg: RunConfig, progress: bool = True) -> Path:
    """Train, evaluate and record one run; returns the record's path."""
    path = Path(cfg.out) / f"{cfg.run_id}.json"
    if cfg.resume and path.exists():
        previous = read_record(path)
        if previous["status"] in ("completed", "diverged"):
            print(f"{cfg.run_id}: already {previous['status']}, skipping ({path})")
            return path
        if cfg.split_bounds is None:  # a resume keeps the cut it started with (a timed split is not re-measured)
            cfg = replace(cfg, split_bounds=previous["config"].get("split_bounds"))
    r = Run(cfg)
    cfg = r.cfg
    start_step, record = 0, None
    if cfg.resume and r.ckpt_path.exists():
        state = torch.load(r.ckpt_path, map_location=r.device, weights_only=False)
        r.load(state)
        start_step, record = state["step"], state["record"]
        record["status"] = "running"
        print(f"{cfg.run_id}: resuming at step {start_step}/{cfg.steps}")
    if record is None:
        record = new_record(cfg.to_dict(), str(r.device))
        record["run_id"] = cfg.run_id
        record["split"] = r.split_info()
    record["env"]["torch_threads"] = torch.get_num_threads()
    write_record(record, r.record_path)

    check_a1 = create_method(cfg.method).local_gradients and cfg.assumption1_every
    curves, a1 = record["curves"], record["assumption1"]
    train_time = curves["train_time_s"][-1] if curves["train_time_s"] else 0.0
    eval_time = record["final"].get("eval_time_s", 0.0)
    interval_loss, interval_time, interval_steps = 0.0, 0.0, 0
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, disable=not progress,
               desc=cfg.run_id, unit="step", dynamic_ncols=True)
    try:
        for step in bar:
            x, y = r.stream.batch(step)
            t0 = time.perf_counter()
            train_step(r.stages, step, x, y)
            loss = r.stages[-1].stats["loss"].item()  # also waits for the device: the step is done
            dt = time.perf_counter() - t0
            train_time += dt
            if not math.isfinite(loss):
                record["status"], record["error"] = "diverged", f"loss {loss} at step {step}"
                break
            interval_loss += loss
            interval_time += dt
            interval_steps += 1
            done = step + 1
            if check_a1 and done % cfg.assumption1_every == 0:
                m = assumption1(r.stages, x, y)
                a1["step"].append(done)
                a1["mu"].append(m["mu"])
                a1["cos"].append(m["cos"])
            if done % cfg.eval_every == 0 or done == cfg.steps:
                t1 = time.perf_counter()
                limit = None if done == cfg.steps else cfg.eval_limit
                ev = evaluate(r.stages, datasets.eval_batches(r.ds, 500, r.device, limit=limit))
                eval_time += time.perf_counter() - t1
                curves["step"].append(done)
                curves["train_loss"].append(interval_loss / interval_steps)
                add_evaluation(curves, ev)
                curves["step_time_s"].append(interval_time / interval_steps)
                curves["train_time_s"].append(train_time)
                record["final"]["eval_time_s"] = eval_time
                interval_loss, interval_time, interval_steps = 0.0, 0.0, 0
                bar.set_postfix(loss=f"{curves['train_loss'][-1]:.3f}", acc=f"{ev['test_acc']:.1f}")
                if done < cfg.steps:
                    atomic_torch_save(r.state(done, record), r.ckpt_path)
                    write_record(record, r.record_path)
        else:
            record["status"] = "completed"
    except KeyboardInterrupt:
        record["status"], record["error"] = "failed", "interrupted (resume with --resume)"
        write_record(record, r.record_path)
        raise
    except Exception as e:  # a crash still leaves an honest record
        record["status"], record["error"] = "failed", f"{type(e).__name__}: {e}"
        write_record(record, r.record_path)
        raise
    finally:
        bar.close()
    steps_done = curves["step"][-1] if curves["step"] else 0
    record["final"].update({
        "steps": steps_done,
        **last_evaluation(curves),
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "samples_per_s": steps_done * cfg.batch_size / train_time if train_time else None,
    })
    extras = getattr(type(r.stages[0]), "record_extras", None)  # a method's own facts, e.g. bytes per round
    if extras is not None:
        record.update(extras(r.stages))
    if isinstance(r.ds, TextData):  # BPC, and the bar it has to clear: the test text's unigram entropy
        record["final"].setdefault("test_bpc", None)
        record["final"].setdefault("sub_bpc", [])
        record["final"].update({
            "unigram_bpc": r.ds.unigram_bpc("test"),
            "epochs": steps_done / r.stream.steps_per_epoch,
        })
    write_record(record, r.record_path)
    if record["status"] == "completed":
        r.ckpt_path.unlink(missing_ok=True)
    return r.record_path
