"""`python -m bench speed` (`nox -s speed`): throughput of every way to train one ResNet on K workers.

All configurations run on the distributed executor with the same samples (batch 128 at the cpu
profile, the same seed, so the same batches), after a few warm-up steps that are not timed:
bp on one worker with one thread (the reference), bp on one worker with every thread (so nobody is
fooled by the equal-resources comparison), ddp, gpipe (m = 4 and 8), pipelined backprop under every other
schedule of the installed torch.distributed.pipelining (m = 8; the multi-stage ones with two groups per
worker), dni_n1 and lct_n1 (lockstep and overlapped), asyncbp (overlapped, stale gradients up to
--max-stale) and auxnet (its own exchange schedule) on 2 workers, and 4 workers where the machine has 4
cores (or 4 GPUs). Every worker gets one thread (one GPU). Evaluation is off: only training steps are timed.

Writes results/speed-<profile>.csv (one row per configuration) and a markdown table beside it
with the command, the machine and its load; the raw run records go to results/speed-<profile>/<start time>/ (one folder per invocation).
Beside every measured configuration the cost model's prediction (bench/predict): from the median of the
calibrations of this device taken in the benchmark's setting before each round, each in a process of its
own started like the workers (calibration-round<i>.json beside the records: the machine's slow and fast
spells reach them as they reach the runs), and the link measured by the transfer probe after the runs
(`--no-predict`: neither); `python -m bench predict-check` compares the two.
"""
from __future__ import annotations

import csv
import io
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from methods import create_method

from .config import RunConfig, prepare
from .errors import BenchError
from .exec import pp_schedules
from .exec.launch import run_distributed, schedule_name, worker_env
from .exec.settings import DistConfig, shared_gpu
from .predict.calibration import Calibration, median_of
from .predict.model import predict_record
from .predict.probe import measure_link
from .train.build import calibrate, measure_split
from .train.records import atomic_write_text, read_record

REQUIRED = ["method", "workers", "schedule", "threads_per_worker", "samples_per_s", "ratio_to_bp_1_worker",
            "comm_share", "peak_mem_mb_max_worker"]
EXTRA = ["status", "samples_per_s_best", "samples_per_s_runs", "ratio_to_ideal", "comm_share_max_worker", "paper_comm_share",
         "train_mem_mb_max_worker", "staleness_mean", "step_time_s", "slowest_worker_compute_share", "executor",
         "profile", "data", "model", "split", "group_units", "batch_size", "timed_steps", "predicted_samples_per_s",
         "predicted_comm_share"]


@dataclass
class Case:
    """One configuration: a method on some workers with some threads each, its schedule and options."""

    method: str
    workers: int
    threads: int = 1
    schedule: str = "lockstep"       # the stage backend: lockstep | overlapped
    options: dict = field(default_factory=dict)
    tail: str = ""                   # what tells this case from the method's others in its label
    stages_per_worker: int = 1       # groups per worker (the multi-stage pipeline schedules: 2)

    @property
    def groups(self) -> int:
        return self.workers * self.stages_per_worker

    @property
    def label(self) -> str:
        return "_".join(p for p in (self.method, f"w{self.workers}", f"t{self.threads}", self.tail) if p)


def cases(cores: int, gpus: int = 0) -> list[Case]:
    """The configurations of the issue; K = 4 only where 4 workers get a core (or, on GPUs, a GPU) each."""
    out = [Case("bp", 1, 1)]
    if cores > 1 and not gpus:
        out.append(Case("bp", 1, cores))
    for k in (2, 4):
        if k > (gpus or cores):
            break
        out += [Case("ddp", k)] + [Case("gpipe", k, options={"microbatches": m}, tail=f"m{m}") for m in (4, 8)]
        out += [pipeline_case(k, name) for name in pp_schedules.available() if name != "gpipe"]
        out += [Case(m, k, schedule=s, tail=s) for m in ("dni", "lct") for s in ("lockstep", "overlapped")]
        out += [Case("asyncbp", k, schedule="overlapped", tail="overlapped"), Case("auxnet", k)]
    return out


def pipeline_case(workers: int, name: str, microbatches: int = 8) -> Case:
    """Pipelined backprop under torch's schedule `name` on `workers` workers (multi-stage: 2 groups each)."""
    v = pp_schedules.stages_per_rank(name, None)
    options = {"microbatches": microbatches, "schedule": name} | ({"stages_per_rank": v} if v > 1 else {})
    return Case("gpipe", workers, options=options, tail=f"{name}_m{microbatches}", stages_per_worker=v)


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def latest_measurement(folder: Path) -> Path:
    """The newest measurement folder under results/speed-<profile>/ (one per invocation, named by its start
    time), or the folder itself where its records sit directly in it (the layout before)."""
    stamped = sorted(p for p in Path(folder).glob("*-*") if p.is_dir() and p.name.replace("-", "").isdigit())
    return stamped[-1] if stamped else Path(folder)


def median_run(runs: list[dict]) -> dict:
    """The run of median throughput (the lower one of an even count). Not the fastest: on a shared machine a
    run can also be lucky (bp on one worker once ran 29% faster than its two other runs)."""
    return sorted(runs, key=lambda r: r["final"]["samples_per_s"])[(len(runs) - 1) // 2]


def _row(case: Case, runs: list[dict], bp1: float | None, schedule: str) -> dict:
    """A configuration's median run, with its fastest and every run's throughput beside it. Shares are means
    over workers, like the paper's (the busiest worker too)."""
    record = median_run(runs)
    workers, final = record["workers"], record["final"]
    sps = final["samples_per_s"]
    cuda = workers[0]["device"].startswith("cuda")
    mem = [w["gpu_mem_nvml_mb"] or w["torch_cuda_peak_mb"] if cuda else w["peak_rss_mb"] for w in workers]
    slowest = max(workers, key=lambda w: w["compute_s"])
    cfg = record["config"]
    stale = [w["staleness_mean"] for w in workers if "staleness_mean" in w]
    bounds = record["split"]["bounds"]
    return {
        "method": case.method, "workers": case.workers, "schedule": schedule,
        "threads_per_worker": case.threads, "samples_per_s": round(sps, 1),
        "ratio_to_bp_1_worker": round(sps / bp1, 3) if bp1 else "",
        "comm_share": round(_mean([w["comm_share"] for w in workers]), 4),
        "peak_mem_mb_max_worker": round(max(mem), 1),
        "status": "completed",
        "samples_per_s_best": round(max(r["final"]["samples_per_s"] for r in runs), 1),
        "samples_per_s_runs": "/".join(f"{r['final']['samples_per_s']:.0f}" for r in runs),
        "ratio_to_ideal": round(sps / (bp1 * case.workers * case.threads), 3) if bp1 else "",
        "comm_share_max_worker": round(max(w["comm_share"] for w in workers), 4),
        "paper_comm_share": round(_mean([w["paper_comm_share"] or 0.0 for w in workers]), 4),
        "train_mem_mb_max_worker": "" if cuda else round(max(w["peak_rss_mb"] - w.get("rss_start_mb", 0.0)
                                                             for w in workers), 1),
        "staleness_mean": round(_mean(stale), 2) if stale else "",
        "step_time_s": round(final["train_time_s"] / final["timed_steps"], 4),
        "slowest_worker_compute_share": round(slowest["compute_s"] / final["train_time_s"], 3),
        "executor": "distributed (truly parallel)", "profile": cfg["profile"], "data": cfg["data"],
        "model": cfg["model"], "split": cfg["split_rule"], "batch_size": cfg["batch_size"],
        "group_units": "/".join(str(b - a) for a, b in zip(bounds, bounds[1:])),
        "timed_steps": final["timed_steps"], "predicted_samples_per_s": "", "predicted_comm_share": "",
    }


def _failed_row(case: Case, error: str, schedule: str) -> dict:
    row = {c: "" for c in REQUIRED + EXTRA}
    row.update(method=case.method, workers=case.workers, schedule=schedule,
               threads_per_worker=case.threads, status=f"failed: {error}")
    return row


def _markdown(rows: list[dict], header: str) -> str:
    cols = ["method", "workers", "schedule", "threads_per_worker", "group_units", "samples_per_s",
            "samples_per_s_best", "samples_per_s_runs", "predicted_samples_per_s", "ratio_to_bp_1_worker", "ratio_to_ideal", "comm_share", "paper_comm_share",
            "peak_mem_mb_max_worker", "train_mem_mb_max_worker", "staleness_mean", "slowest_worker_compute_share",
            "status"]
    names = ["method", "K", "schedule", "threads/worker", "units per group", "samples/s (median)", "best", "every run",
             "predicted (cost model)", "vs bp 1 worker", "vs ideal Kx", "comm share (blocked)", "comm share (paper est.)",
             "peak MB (max worker)", "training MB (max worker)", "staleness", "busiest worker computing", "status"]
    lines = [header, "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _config(case: Case, rep: int, settings: dict, folder: Path, cuts: dict) -> tuple[RunConfig, DistConfig]:
    s = settings
    cfg = prepare(RunConfig(method=case.method, groups=case.groups, model=s["model"], data=s["data"],
                            profile=s["profile"], split_rule=s["split"], data_root=s["data_root"], device=s["device"],
                            out=str(folder / case.label / f"run{rep + 1}"), steps=s["warmup"] + s["steps"],
                            extra=dict(case.options), plugins=list(s["plugins"] or [])))
    if s["split"] == "timed" and case.groups > 1:  # measured once per K with one thread, then shared
        if case.groups not in cuts:
            cuts[case.groups] = measure_split(replace(cfg, threads=case.threads))
        cfg.split_bounds = cuts[case.groups]
    cfg.eval_every, cfg.assumption1_every = cfg.steps, 0
    return cfg, DistConfig(schedule=case.schedule, threads_per_worker=case.threads, warmup_steps=s["warmup"],
                           evaluate=False)


def _run_all(todo: list[Case], repeats: int, settings: dict, folder: Path, before_round=None):
    """Every case `repeats` times, round after round, `before_round(i)` first: (runs per label, errors per
    label, schedule per label)."""
    cuts: dict[int, list[int]] = {}  # K -> the cut every method with K workers runs on
    runs: dict[str, list[dict]] = {c.label: [] for c in todo}
    errors: dict[str, str] = {}
    schedules: dict[str, str] = {}
    for rep in range(repeats):
        if before_round is not None:
            before_round(rep)
        for case in todo:
            if case.label in errors:
                continue
            cfg, dcfg = _config(case, rep, settings, folder, cuts)
            schedules[case.label] = "sequential" if case.workers == 1 else schedule_name(cfg, dcfg)
            print(f"speed [{rep + 1}/{repeats}]: {case.label} ...", end=" ", flush=True)
            try:
                record = read_record(run_distributed(cfg, dcfg, log_dir=folder / case.label / f"run{rep + 1}" / "logs"))
                if shared_gpu(record):  # its workers shared a GPU: a functional run, its times measure nothing
                    raise BenchError("a functional (shared-GPU) run is not a speed measurement")
            except BenchError as e:
                errors[case.label] = str(e)
                print(f"failed: {e}", flush=True)
                continue
            runs[case.label].append(record)
            print(f"{record['final']['samples_per_s']:.1f} samples/s", flush=True)
    return runs, errors, schedules


def run_speed(profile: str = "cpu", model: str = "resnet50", data: str = "digits", steps: int = 100,
              warmup: int = 5, split: str = "paper", device: str = "cpu", out: str = "results",
              data_root: str | None = None, only: list[str] | None = None, command: str | None = None,
              repeats: int = 3, plugins: list[str] | None = None, predict: bool = True) -> Path:
    """Run every configuration `repeats` times (round after round, so a slow spell of the machine hits every
    configuration alike), report each one's median run, print the table, write the CSV and markdown; returns
    the CSV's path. A configuration that fails is a row saying so; the others go on."""
    import torch

    if repeats < 1:
        raise BenchError(f"--repeats must be >= 1, got {repeats}")
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    todo = cases(os.cpu_count() or 1, gpus)
    if only:
        unknown = set(only) - {c.method for c in todo}
        if unknown:
            raise BenchError(f"--only: no configuration for {', '.join(sorted(unknown))}")
        todo = [c for c in todo if c.method in only or c.label == "bp_w1_t1"]  # bp-1-worker is the yardstick
    # every invocation measures into a folder of its own: a benchmark is rerun, and never over its last records
    folder = Path(out) / f"speed-{profile}" / time.strftime("%Y%m%d-%H%M%S")
    load_before, t_start = os.getloadavg(), time.time()
    settings = dict(model=model, data=data, profile=profile, split=split, data_root=data_root, device=device,
                    steps=steps, warmup=warmup, plugins=plugins)
    before = (lambda rep: _round_calibration(todo, settings, folder, rep)) if predict else None
    runs, errors, schedules = _run_all(todo, repeats, settings, folder, before)
    settings["records"] = folder.as_posix()
    load_after = os.getloadavg()
    bp1 = median_run(runs["bp_w1_t1"])["final"]["samples_per_s"] if runs.get("bp_w1_t1") else None
    rows = [_failed_row(c, errors[c.label], schedules.get(c.label, "")) if c.label in errors
            else _row(c, runs[c.label], bp1, schedules[c.label]) for c in todo]
    if predict:
        try:  # the measurements are written whatever happens to the prediction beside them
            _predictions(rows, todo, runs, settings)
        except Exception as e:
            print(f"warning: no cost-model prediction beside the measurements: {type(e).__name__}: {e}", flush=True)
    settings.update(repeats=repeats, load_before=load_before[0], load_after=load_after[0],
                    elapsed=time.time() - t_start)
    return _write(rows, Path(out), settings, command)


def _calibrate(todo: list[Case], s: dict):
    """A calibration of this device in the benchmark's setting, one thread, with every method's costs."""
    cfg = RunConfig(method="bp", groups=1, model=s["model"], data=s["data"], profile=s["profile"], threads=1,
                    data_root=s["data_root"], device=s["device"], plugins=list(s["plugins"] or []))
    return calibrate(cfg, [create_method(m) for m in _calibrated_methods(todo)])


def _calibrated_methods(todo: list[Case]) -> list[str]:
    """The methods a calibration for these configurations measures: theirs, and bp (the yardstick)."""
    return sorted({c.method for c in todo} | {"bp"})


def _round_calibration(todo: list[Case], s: dict, folder: Path, rep: int) -> None:
    try:  # a failed calibration costs that round's prediction input, never the measurement
        calibrate_like_a_worker(todo, s, folder / f"calibration-round{rep + 1}.json")
    except Exception as e:
        print(f"warning: no calibration before round {rep + 1}: {type(e).__name__}: {e}", flush=True)


def calibrate_like_a_worker(todo: list[Case], s: dict, path: Path) -> None:
    """`python -m bench calibrate` in a process of its own, started as the workers are (bench.exec.launch's
    worker_env): the calibration predicts workers, so it is taken in their kind of process. In this long-lived
    process one benchmark's calibrations ran faster round after round (113, 96, 105, 96 and 87 ms per step)
    while the fresh workers' bp step stayed at 102-113 ms; a rerun with only bp between calibrations did not
    drift, so that cause is not settled, but the confound is gone."""
    args = ["--model", s["model"], "--data", s["data"], "--profile", s["profile"], "--threads", "1",
            "--device", s["device"], "--out", str(path), "--methods", *_calibrated_methods(todo)]
    args += ["--data-root", s["data_root"]] if s["data_root"] else []
    args += [a for p in s["plugins"] or [] for a in ("--plugin", p)]
    done = subprocess.run([sys.executable, "-m", "bench", "calibrate", *args], env=worker_env(1),
                          capture_output=True, text=True)
    if done.returncode:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise BenchError(f"python -m bench calibrate failed: {why}")


def round_calibrations(folder: Path):
    """The median of the calibrations a measurement took before its rounds, or None if it took none."""
    paths = sorted(folder.glob("calibration-round*.json"))
    return median_of([Calibration.load(p) for p in paths]) if paths else None


def _predictions(rows: list[dict], todo: list[Case], runs: dict[str, list[dict]], s: dict) -> None:
    """The cost model's samples/s and comm share beside each one-thread configuration's median run."""
    cal = round_calibrations(Path(s["records"])) or _calibrate(todo, s)
    link = measure_link(s["device"])
    for row, case in zip(rows, todo):
        if case.threads == 1 and runs.get(case.label) and row["status"] == "completed":
            p = predict_record(cal, median_run(runs[case.label]), link)
            row.update(predicted_samples_per_s=round(p.samples_per_s, 1), predicted_comm_share=round(p.comm_share, 4))


def _write(rows: list[dict], out: Path, s: dict, command: str | None) -> Path:
    """The CSV and the markdown table with its command, machine and load."""
    import torch

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REQUIRED + EXTRA, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = out / f"speed-{s['profile']}.csv"
    atomic_write_text(csv_path, buf.getvalue())
    command = command or "python -m bench speed " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    batch = next((r["batch_size"] for r in rows if r["batch_size"] != ""), "?")
    header = (f"# Training throughput, profile `{s['profile']}` ({s['model']}, {s['data']}, batch {batch}, "
              f"{s['split']} split, {s['steps']} timed steps after {s['warmup']} warm-up, median of {s['repeats']} "
              f"runs)\n\nCommand: `{command}`  \nMachine: {_machine()}, device {s['device']}, torch {torch.__version__}; "
              f"load average {s['load_before']:.2f} before, {s['load_after']:.2f} after; "
              f"{s['elapsed']:.0f} s in all; records in {s['records']}/.  \n"
              "Executor: distributed, one process per worker (truly parallel, not simulated). Each configuration "
              "ran once per round, round after round; its row is its median run (`best` and `every run` beside it), "
              "and the ratios are between medians. "
              "comm share (blocked) = time a worker waits on communication (transfer, and waiting for the "
              "neighbour) over its step time; paper est. = the paper's method, the time to move tensors of the "
              "boundary sizes over the step time; both are means over workers. Peak MB = peak RSS of a worker "
              "process since training started (CPU; it includes the data and the copy of every group each "
              "worker builds at start) or NVML (GPU); training MB = that peak minus the RSS at the start. "
              "predicted = the cost model's samples/s for the configuration (bench/predict: the median of the "
              "calibrations of this device taken before each round, and the link measured after the runs; "
              "one-thread configurations only), a "
              "prediction beside the measurement; `python -m bench predict-check` prints both with the error.")
    table = _markdown(rows, header)
    atomic_write_text(csv_path.with_suffix(".md"), table)
    print(table)
    return csv_path
