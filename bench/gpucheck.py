"""`python3 -m bench gpu-check` (`nox -s gpu_check`): the prepared check for a machine lent with a GPU.

At most 8 minutes on one GPU, no download (synthetic_cifar: synthetic inputs, speed and memory only), and
nothing to install beyond what `python -m bench` imports (torch, numpy, pandas, matplotlib, nvidia-ml-py,
tqdm, scikit-learn, tabulate). Every part has a time budget, and a part that fails or runs out of time is a
row saying what failed; the check goes on with the next part:

(a) the overhead benchmark (bench/overhead.py) at the paper's size, ResNet-50 width 1, batch 128, in fp32
    and bf16: the suite / plain step-time ratio, the instrumentation share, the bf16 speed-up;
(b) in-process training of bp, lct, dni, joint and gpipe (bench.train.loop.run, evaluation on one batch):
    samples/s after a warm-up phase and the peak of torch.cuda.max_memory_allocated;
(c) lct on 2 workers (bench.exec.launch.run_distributed), sharing the GPU where the machine has one;
(d) from (c)'s record, every worker's memory: NVML's reading beside torch.cuda's peaks.

Writes <out>/gpu-check-<gpu name>.md (atomically) with the command, the GPU, its driver, torch, CUDA and
cudnn versions, and the tables; records and logs go to a temporary folder, removed afterwards. Exit status 1
where a part failed (the file says which). `--device cpu` is a dry run at tiny sizes (the same parts, on
the CPU; its numbers measure nothing): what the tests run.
"""
from __future__ import annotations

import gc
import re
import signal
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from . import overhead
from .config import RunConfig, check_device, check_out, prepare
from .data.synthetic import SOURCE
from .errors import BenchError
from .exec.launch import run_distributed
from .exec.meter import one_line, peak_rss_mb, reset_peak_rss
from .exec.settings import DistConfig
from .train.loop import run as train
from .train.records import atomic_write_text, read_record

TOTAL_S = 450            # the parts, at most (with start-up and the file: within 8 minutes)
RESERVE_S = 15           # kept back from the last part: writing the file, exiting
DATA = "synthetic_cifar"
MODEL = "resnet50"
METHODS = [("bp", 1), ("lct", 4), ("dni", 4), ("joint", 4), ("gpipe", 4)]  # (method, K): part (b)
BUDGETS = {"overhead fp32": 70, "overhead bf16": 50, "method": 35, "distributed": 120}  # seconds per part
TITLE = "# GPU check"


@dataclass(frozen=True)
class Sizes:
    """How big the check's runs are: the paper's on a GPU, tiny on the CPU (a dry run)."""

    device: str
    width: float
    batch_size: int
    steps: int   # steps per phase: the overhead's timed phases; (b) and (c) warm up for one phase, time the next
    rounds: int  # the overhead's timed rounds
    dry: bool
    threads: int | None = None  # torch threads of in-process parts (dry: 1; tiny models on a shared CPU need it)

    @classmethod
    def for_device(cls, device: str, **given) -> "Sizes":
        dry = device == "cpu"
        base = dict(width=1 / 16, batch_size=16, steps=2, rounds=2) if dry else \
            dict(width=1.0, batch_size=128, steps=10, rounds=5)
        base.update({k: v for k, v in given.items() if v is not None})
        return cls(device=device, dry=dry, threads=1 if dry else None, **base)

    def command(self, out: str) -> str:
        return (f"python3 -m bench gpu-check --device {self.device} --width {self.width:g} --batch-size "
                f"{self.batch_size} --steps {self.steps} --rounds {self.rounds} --out {out}")


# --- time budgets ----------------------------------------------------------------------------------------
class OverBudget(KeyboardInterrupt):
    """A part ran past its time budget. A KeyboardInterrupt, so that the suite's own clean-up for an interrupt
    runs (a distributed run's workers are stopped and its record marked)."""


@contextmanager
def budget(seconds: float):
    """Raise OverBudget in this (the main) thread once `seconds` have passed."""
    def expire(signum, frame):
        raise OverBudget(f"over its time budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Parts:
    """Runs the check's parts one by one, each within its budget and the check's total; keeps a row per part."""

    def __init__(self, device: torch.device):
        self.device, self.deadline, self.rows = device, time.monotonic() + TOTAL_S - RESERVE_S, []

    def run(self, name: str, seconds: float, fn):
        """fn()'s value, or None where it failed or ran out of time (its row says so)."""
        seconds = min(seconds, self.deadline - time.monotonic())
        if seconds < 5:
            self.rows.append((name, "", "", f"skipped: the check's {TOTAL_S} s were spent"))
            return None
        t0, value = time.monotonic(), None
        try:
            with budget(seconds):
                value, status = fn(), "ok"
        except OverBudget as e:
            status = f"failed: {e}"
        except Exception as e:  # noqa: BLE001 - any failure of a part is its row; the check goes on
            status = f"failed: {type(e).__name__}: {one_line(e)}"
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.rows.append((name, f"{seconds:.0f}", f"{time.monotonic() - t0:.1f}", status))
        return value

    @property
    def failed(self) -> int:
        return sum(not status.startswith("ok") for *_, status in self.rows)


# --- the parts ---------------------------------------------------------------------------------------------
def overhead_part(sizes: Sizes, precision: str, folder: Path) -> dict:
    s = overhead.Setting(device=sizes.device, model=MODEL, data=DATA, width=sizes.width, batch_size=sizes.batch_size,
                         precision=precision, steps=sizes.steps, rounds=sizes.rounds, threads=sizes.threads,
                         out=str(folder))
    return overhead.measure(s, overhead.check(s))


def method_config(sizes: Sizes, method: str, groups: int, folder: Path) -> RunConfig:
    """A short run: one phase of warm-up, one timed; evaluation on one batch (the training's memory is the peak)."""
    n = sizes.steps
    return RunConfig(method=method, groups=groups, model=MODEL, data=DATA, profile="smoke" if sizes.dry else "paper",
                     device=sizes.device, threads=sizes.threads, width=sizes.width, batch_size=sizes.batch_size,
                     steps=2 * n, eval_every=n, eval_limit=sizes.batch_size, final_eval_limit=sizes.batch_size,
                     assumption1_every=0, out=str(folder))


def method_part(sizes: Sizes, method: str, groups: int, folder: Path) -> dict:
    device = torch.device(sizes.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    record = read_record(train(method_config(sizes, method, groups, folder), progress=False))
    if record["status"] != "completed":
        raise BenchError(f"record {record['status']}: {record.get('error')}")
    step_s = record["curves"]["step_time_s"][-1]  # the second phase: after the warm-up
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {"method": method, "K": groups, "samples/s": f"{sizes.batch_size / step_s:.1f}",
            "step ms": f"{step_s * 1e3:.2f}", "peak MB": f"{peak:.0f}"}


def distributed_part(sizes: Sizes, folder: Path) -> dict:
    n, device = sizes.steps, torch.device(sizes.device)
    share = device.type == "cuda" and torch.cuda.device_count() < 2
    cfg = replace(method_config(sizes, "lct", 2, folder), eval_every=2 * n)
    dcfg = DistConfig.from_dict({"schedule": "lockstep", "threads_per_worker": 1, "warmup_steps": n,
                                 "timeout_s": 60.0, "eval_timeout_s": 120.0, "share_gpu": share})
    logs = folder / "logs"
    try:
        record = read_record(run_distributed(cfg, dcfg, log_dir=logs))
    except BenchError as e:  # the workers' own last words say why
        raise BenchError(f"{e}{worker_tail(logs)}") from None
    if record["status"] != "completed":
        raise BenchError(f"record {record['status']}: {record.get('error')}")
    return {"record": record, "share_gpu": share}


def worker_tail(logs: Path) -> str:
    """'; rank1.log: <line>', the last line of the first worker log that names an error (a worker's error is one
    line), else of the first log that says anything."""
    said = []
    for log in sorted(logs.glob("rank*.log")):
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "rror" in line or "failed" in line]
        if errors:
            return f"; {log.name}: {errors[-1][:300]}"
        said += [f"; {log.name}: {lines[-1][:300]}"] if lines else []
    return said[0] if said else ""


# --- the file ------------------------------------------------------------------------------------------------
def environment(device: torch.device) -> tuple[str, list[str]]:
    """The GPU's name (the file's name) and the lines that describe the machine."""
    lines = [f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (a CPU build)'}, "
             f"cudnn {torch.backends.cudnn.version()}"]
    if device.type != "cuda":
        return "cpu", ["GPU: none, a dry run on the CPU at tiny sizes: its numbers measure nothing"] + lines
    name = torch.cuda.get_device_name(device)
    props = torch.cuda.get_device_properties(device)
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
    except Exception as e:  # noqa: BLE001 - NVML missing or not permitted: say so
        driver = f"unknown (NVML: {one_line(e)})"
    return name, [f"GPU: {name} ({props.total_memory / 2**30:.0f} GiB; {torch.cuda.device_count()} on this machine), "
                  f"driver {driver}"] + lines


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table(rows: list, columns: list[str]) -> str:
    if not rows:
        return "(nothing: the part failed, see Parts)"
    return pd.DataFrame(rows, columns=columns, dtype=object).to_markdown(index=False, disable_numparse=True)


def overhead_section(results: dict) -> list[str]:
    rows = [(p, f"{m['suite_samples_per_s']:.1f}", f"{m['plain_samples_per_s']:.1f}", f"{m['ratio']:.3f}",
             m["ratio_verdict"], f"{m['instrumentation_share']:.3%}", m["instrumentation_verdict"],
             f"{m['load_before']:.2f}/{m['load_after']:.2f}")
            for p, m in results.items() if m is not None]
    out = ["## (a) Overhead: the suite's bp step vs a plain PyTorch loop", "",
           f"{MODEL}, {DATA} ({SOURCE}); medians of interleaved rounds (bench/overhead.py). Targets: ratio <= "
           f"{overhead.RATIO_TARGET}, instrumentation < {overhead.INSTRUMENTATION_TARGET:.0%}.", "",
           table(rows, ["precision", "suite samples/s", "plain samples/s", "suite / plain", "ratio verdict",
                        "instrumentation", "verdict", "load before/after"])]
    fp32, bf16 = results.get("fp32"), results.get("bf16")
    if fp32 and bf16:
        speedup = {k: bf16[f"{k}_samples_per_s"] / fp32[f"{k}_samples_per_s"] for k in ("plain", "suite")}
        out += ["", f"bf16 speed-up over fp32: plain loop {speedup['plain']:.2f}x, suite {speedup['suite']:.2f}x."]
    return out


def memory_rows(record: dict | None) -> list:
    def mb(v):
        return "n/a" if v is None else f"{v:.0f}"

    rows = []
    for w in (record or {}).get("workers", []):
        nvml, reserved = w.get("gpu_mem_nvml_mb"), w.get("torch_cuda_reserved_mb")
        context = nvml - reserved if nvml is not None and reserved is not None else None
        rows.append((w["rank"], w["device"], mb(nvml), mb(w.get("torch_cuda_peak_mb")), mb(reserved), mb(context),
                     mb(w.get("peak_rss_mb"))))
    return rows


def markdown(sizes: Sizes, out: str, env: list[str], parts: Parts, over: dict, methods: list, dist: dict | None) -> str:
    record = dist["record"] if dist else None
    dist_rows = [] if record is None else [(
        record.get("schedule", ""), "yes" if dist["share_gpu"] else "no", f"{record['final']['samples_per_s']:.1f}",
        f"{record['final'].get('comm_share_max') or 0.0:.3f}", record["status"])]
    return "\n".join([
        TITLE, "",
        f"Command: `{sizes.command(out)}`  ", *[f"{line}  " for line in env],
        f"Data: {DATA}, {SOURCE} (generated in memory, random labels: accuracy means nothing). "
        f"Width {sizes.width:g}, batch {sizes.batch_size}, {sizes.steps} steps per phase.", "",
        "## Parts", "", table(parts.rows, ["part", "budget s", "took s", "status"]), "",
        *overhead_section(over), "",
        "## (b) In-process steps of bp, lct, dni, joint, gpipe", "",
        f"fp32, one phase of {sizes.steps} steps of warm-up, then one timed; peak MB = torch.cuda.max_memory_allocated "
        f"over the run, the training set held on the device included (CPU: peak RSS).", "",
        table(methods, ["method", "K", "samples/s", "step ms", "peak MB"]), "",
        "## (c) Distributed lct on 2 workers", "",
        table(dist_rows, ["schedule", "sharing one GPU", "samples/s", "comm share (max worker)", "status"]), "",
        "## (d) Memory per worker: NVML vs torch.cuda", "",
        "NVML reads the process's memory where the driver tells processes apart (else the device's used memory); "
        "NVML - reserved is the CUDA context and what torch's allocator does not see.", "",
        table(memory_rows(record), ["rank", "device", "gpu_mem_nvml_mb", "torch_cuda_peak_mb", "torch_cuda_reserved_mb",
                                    "NVML - reserved MB", "peak_rss_mb"]), "",
    ])


def run_gpu_check(sizes: Sizes, out: str = "results") -> int:
    """Run every part, write the file, print it; 1 where a part failed (after writing), else 0."""
    check_device(sizes.device)
    check_out(out)
    if not isinstance(sizes.rounds, int) or sizes.rounds < 1:
        raise BenchError(f"--rounds must be an integer >= 1, got {sizes.rounds!r}")
    device = torch.device(sizes.device)
    name, env = environment(device)
    path = Path(out) / f"gpu-check-{slug(name)}.md"
    overhead.refuse_foreign(path, TITLE)
    for method, k in METHODS:  # every setting checked, before anything runs
        prepare(method_config(sizes, method, k, Path(out)))
    parts = Parts(device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        over = {p: parts.run(f"(a) overhead {p}", BUDGETS[f"overhead {p}"],
                             lambda p=p: overhead_part(sizes, p, tmp / p)) for p in ("fp32", "bf16")}
        methods = [parts.run(f"(b) {m} K={k}", BUDGETS["method"], lambda m=m, k=k: method_part(sizes, m, k, tmp / "b"))
                   for m, k in METHODS]
        dist = parts.run("(c) distributed lct, 2 workers", BUDGETS["distributed"],
                         lambda: distributed_part(sizes, tmp / "c"))
        parts.rows.append(("(d) memory per worker", "", "", "ok" if dist else "failed: no record from (c)"))
        text = markdown(sizes, out, env, parts, over, [m for m in methods if m], dist)
    atomic_write_text(path, text)
    print(text)
    print(path)
    if parts.failed:
        print(f"gpu-check: {parts.failed} of {len(parts.rows)} parts failed (see {path})")
    return 1 if parts.failed else 0
