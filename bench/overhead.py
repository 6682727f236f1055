"""`python -m bench overhead`: what the suite's training step costs over a plain PyTorch loop.

Both train the same network from the same weights on the same batches (the run's own stream), with the same
optimiser (SGD, Nesterov momentum 0.9, the run's lr and weight decay) and precision, in one process:

- the suite: `build(cfg)` for bp on one group and `InProcess(run).phase(...)` inside `run.autocast()`, as
  the training loop (bench/train/loop.py) runs it: the lr schedule, the rule's forward and backward, a
  loss read back every step, the per-step timers;
- the plain loop (`PlainLoop`): forward and cross-entropy under torch.autocast, zero_grad(set_to_none=True),
  backward, step; what a PyTorch user writes.

After one untimed phase of each (warm-up: allocator, cudnn's kernel choice), `--rounds` rounds each run one
phase of `--steps` steps of the suite, of the plain loop, and of the plain loop again on a copy of its own,
who goes first rotating, so that a slow spell of a shared machine hits all alike; a phase is timed from a
device sync to a device sync. The overhead is the median over rounds of suite / plain (target <= 1.05); the
plain loop against itself, the same median, is the measurement's noise floor (a loaded CPU: several percent).

The suite's instrumentation is timed apart, by timing many calls: the clock reads of the busiest engine
(the stage worker, bench/exec/stages.py: `now()` before and after each forward and backward, on a GPU each
after a device sync, and Meter.wait around its two blocking receives) and the memory sample the distributed
engine takes once per phase (bench.exec.meter.Memory.sample), charged here to a phase of `--steps` steps
(real runs' phases are their eval_every, longer). Their sum over the suite's step time is the instrumentation
share (target < 2%). An idle device's sync is cheap; what a sync costs a busy GPU (the queue runs dry) is not
in this figure.

Writes <out>/overhead-<device>[-<precision>].md and .csv (atomically), with the command, the machine's load
before and after, torch and its threads, and PASS or FAIL against each target.
"""
from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from . import data as datasets
from .config import RunConfig, prepare
from .errors import BenchError
from .exec.inprocess import InProcess
from .exec.meter import Memory
from .train.build import Run, build
from .train.records import atomic_write_text

RATIO_TARGET = 1.05         # suite step time / plain step time, at most
INSTRUMENTATION_TARGET = 0.02  # instrumentation time / suite step time, below
TIMERS_PER_STEP = 8         # stage worker: now() around forward and backward (4), Meter.wait's two receives (4)
SYNCS_PER_STEP = 4          # on a GPU every now() syncs first
TITLE = "# Overhead of the suite's training step over a plain PyTorch loop"
COLUMNS = ["device", "model", "data", "profile", "data_source", "width", "batch_size", "precision", "steps", "rounds",
           "threads", "channels_last", "cudnn_benchmark", "suite_step_s", "plain_step_s", "suite_samples_per_s",
           "plain_samples_per_s", "ratio", "ratio_target", "ratio_verdict", "noise_ratio", "instrumentation_share",
           "instrumentation_target", "instrumentation_verdict", "timer_us", "memory_sample_us", "sync_us",
           "suite_step_s_rounds", "plain_step_s_rounds", "again_step_s_rounds", "load_before", "load_after", "torch",
           "command"]  # the CSV's


@dataclass
class Setting:
    """What `python -m bench overhead` measures (its options)."""

    device: str = "cpu"
    model: str = "resnet50"
    data: str | None = None      # None: digits on the CPU, synthetic_cifar on a GPU
    width: float = 0.125
    batch_size: int = 128
    precision: str = "fp32"
    steps: int = 10              # steps per timed phase
    rounds: int = 10             # timed phases of each loop
    threads: int | None = None   # torch intra-op threads (None: 1 on the CPU, where a busy core stalls every
                                 # thread of a multi-threaded op, so timings scatter 10x; torch's default on GPUs)
    data_root: str | None = None
    out: str = "results"

    def __post_init__(self):
        if self.data is None:
            self.data = "digits" if self.device == "cpu" else "synthetic_cifar"
        if self.threads is None and self.device == "cpu":
            self.threads = 1

    @property
    def stem(self) -> str:
        device = self.device.replace(":", "")
        return f"overhead-{device}" if self.precision == "fp32" else f"overhead-{device}-{self.precision}"

    def command(self) -> str:
        """The command with every option spelled out (so it reruns the same measurement)."""
        args = [f"--{k.replace('_', '-')} {v}" for k, v in asdict(self).items() if v is not None]
        return "python -m bench overhead " + " ".join(args)


class PlainLoop:
    """The loop a PyTorch user writes, on a copy of the suite's network (same weights, same BatchNorm settings,
    same memory format) and the suite's batches."""

    def __init__(self, run: Run):
        self.model = copy.deepcopy(run.trainer.rules[0].body)
        h = run.cfg.hyper()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=h.lr, momentum=h.momentum, nesterov=h.nesterov,
                                   weight_decay=h.weight_decay)
        self.stream, self.device, self.dtype = run.stream, run.device, run.amp_dtype
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype is torch.float16 else None

    def phase(self, start: int, end: int) -> None:
        for step in range(start, end):
            x, y = self.stream.batch(step)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                self.opt.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds of fn(), from a device sync to a device sync (the device's queued work belongs to it)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def per_call(fn, n: int) -> float:
    """Seconds one call of fn takes, over n calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def check(s: Setting) -> RunConfig:
    """Every option checked, one line each, before anything is built: the suite's config for bp, prepared (which
    checks model, data, numbers, precision, device and output folder), and no file of another's in the way."""
    if datasets.spec(s.data).kind != "image":
        raise BenchError(f"overhead times image models: --data {s.data} is a text data set")
    for flag, value in (("--steps", s.steps), ("--rounds", s.rounds)):  # the run's steps are derived from both
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BenchError(f"{flag} must be an integer >= 1, got {value!r}")
    # the lr schedule stays flat (no milestones), as in the plain loop; nothing is evaluated or written
    cfg = prepare(RunConfig(method="bp", groups=1, model=s.model, data=s.data, profile="cpu", device=s.device,
                            threads=s.threads, width=s.width, batch_size=s.batch_size,
                            steps=(s.rounds + 1) * s.steps, milestones=(), precision=s.precision,
                            data_root=s.data_root, out=s.out))
    for path in outputs(s):
        refuse_foreign(path, TITLE if path.suffix == ".md" else ",".join(COLUMNS[:3]))
    return cfg


def outputs(s: Setting) -> list[Path]:
    return [Path(s.out) / f"{s.stem}.md", Path(s.out) / f"{s.stem}.csv"]


def refuse_foreign(path: Path, start: str) -> None:
    """A file this command did not write (its first line does not start as ours do) is never overwritten."""
    if path.exists():
        with open(path, errors="replace") as f:
            if not f.readline().startswith(start):
                raise BenchError(f"{path} exists and was not written by this command; move it, or choose another --out")


def measure(s: Setting, cfg: RunConfig) -> dict:
    """Build the suite's run and the plain loop, time them interleaved, and time the instrumentation."""
    load_before = os.getloadavg()[0]
    run = build(cfg)
    engine, device, n = InProcess(run), run.device, s.steps
    plain, again = PlainLoop(run), PlainLoop(run)  # `again`: the same plain loop a second time, the noise floor

    def suite_phase(start: int):
        with run.autocast():
            phase = engine.phase(start, start + n, lambda: None)
        if phase.diverged:
            raise BenchError(f"the suite's bp diverged ({phase.diverged}); try a smaller lr or another --precision")

    loops = {"suite": suite_phase, "plain": lambda start: plain.phase(start, start + n),
             "again": lambda start: again.phase(start, start + n)}
    for phase in loops.values():  # warm-up, untimed
        phase(0)
    times = {k: [] for k in loops}
    for r in range(1, s.rounds + 1):  # every loop trains on the same batches in a round; who goes first rotates
        order = list(loops)[r % 3:] + list(loops)[:r % 3]
        for k in order:
            times[k].append(timed(lambda: loops[k](r * n), device) / n)
    suite_s, plain_s = statistics.median(times["suite"]), statistics.median(times["plain"])
    ratio = statistics.median(a / b for a, b in zip(times["suite"], times["plain"]))  # back to back in a round
    noise = statistics.median(a / b for a, b in zip(times["again"], times["plain"]))
    costs = instrumentation_costs(device)
    per_step = (TIMERS_PER_STEP * costs["timer_us"] + SYNCS_PER_STEP * costs["sync_us"]
                + costs["memory_sample_us"] / n) * 1e-6
    share = per_step / suite_s
    return {
        **{k: v for k, v in asdict(s).items() if k not in ("out", "data_root")}, "data_source": run.data.source,
        "profile": cfg.profile,  # the suite's settings the run starts from (width and batch given on top)
        "threads": torch.get_num_threads(), "channels_last": cfg.channels_last,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "suite_step_s": suite_s, "plain_step_s": plain_s,
        "suite_samples_per_s": s.batch_size / suite_s, "plain_samples_per_s": s.batch_size / plain_s,
        "ratio": ratio, "ratio_target": RATIO_TARGET, "ratio_verdict": "PASS" if ratio <= RATIO_TARGET else "FAIL",
        "noise_ratio": noise,
        "instrumentation_share": share, "instrumentation_target": INSTRUMENTATION_TARGET,
        "instrumentation_verdict": "PASS" if share < INSTRUMENTATION_TARGET else "FAIL",
        **costs, **{f"{k}_step_s_rounds": "/".join(f"{t:.4g}" for t in v) for k, v in times.items()},
        "load_before": load_before, "load_after": os.getloadavg()[0], "torch": torch.__version__,
        "command": s.command(),
    }


def instrumentation_costs(device: torch.device) -> dict:
    """Microseconds per clock read, per memory sample and (on a GPU) per sync of an idle device."""
    memory = Memory(device)
    per_call(memory.sample, 3)  # the first NVML call initialises it
    sample_n = 50 if device.type == "cuda" else 500
    return {"timer_us": per_call(time.perf_counter, 100_000) * 1e6,
            "memory_sample_us": per_call(memory.sample, sample_n) * 1e6,
            "sync_us": per_call(lambda: sync(device), 1000) * 1e6 if device.type == "cuda" else 0.0}


def loops_table(m: dict) -> str:
    rows = [(label, f"{m[f'{k}_step_s'] * 1e3:.2f}", f"{m[f'{k}_samples_per_s']:.1f}", m[f"{k}_step_s_rounds"])
            for k, label in (("suite", "suite: bp, in-process engine"), ("plain", "plain PyTorch loop"))]
    rows.append(("plain loop again (its own copy)", "", "", m["again_step_s_rounds"]))
    return pd.DataFrame(rows, columns=["loop", "step ms (median)", "samples/s", "s per step, every round"]
                        ).to_markdown(index=False, disable_numparse=True)


def targets_table(m: dict) -> str:
    rows = [("suite / plain step time (median of the rounds)", f"{m['ratio']:.3f}", f"<= {RATIO_TARGET}",
             m["ratio_verdict"]),
            ("plain again / plain: the noise floor, not a target", f"{m['noise_ratio']:.3f}", "", ""),
            ("instrumentation / suite step time", f"{m['instrumentation_share']:.4%}",
             f"< {INSTRUMENTATION_TARGET:.0%}", m["instrumentation_verdict"])]
    return pd.DataFrame(rows, columns=["check", "measured", "target", "verdict"]).to_markdown(
        index=False, disable_numparse=True)


def markdown(m: dict) -> str:
    return "\n".join([
        TITLE, "",
        f"Command: `{m['command']}`  ",
        f"Setting: profile {m['profile']}, {m['model']} width {m['width']:g}, {m['data']} ({m['data_source']}), "
        f"batch {m['batch_size']}, "
        f"{m['precision']}, device {m['device']}, torch {m['torch']}, {m['threads']} threads, channels_last "
        f"{m['channels_last']}, cudnn.benchmark {m['cudnn_benchmark']}; {m['rounds']} rounds of {m['steps']} steps "
        f"of each loop after one untimed phase each, interleaved.  ",
        f"Load average (1 min): {m['load_before']:.2f} before, {m['load_after']:.2f} after.", "",
        loops_table(m), "", targets_table(m), "",
        f"Instrumentation per step: {TIMERS_PER_STEP} clock reads of {m['timer_us']:.3f} us"
        + (f", {SYNCS_PER_STEP} syncs of an idle device of {m['sync_us']:.1f} us" if m["sync_us"] else "")
        + f", and one memory sample per phase ({m['memory_sample_us']:.1f} us) over a phase of {m['steps']} steps.",
        "",
    ])


def run_overhead(s: Setting) -> Path:
    """Check, measure, write the markdown and the CSV (atomically); print the markdown; return its path."""
    cfg = check(s)
    m = measure(s, cfg)
    md_path, csv_path = outputs(s)
    atomic_write_text(csv_path, pd.DataFrame([m], columns=COLUMNS).to_csv(index=False))
    text = markdown(m)
    atomic_write_text(md_path, text)
    print(text)
    return md_path
