"""Run records: one JSON file per run, written atomically, with everything needed to trust a number.

A record holds the full config, the code version, library versions, the hardware, the seed, the
status (running / completed / diverged / failed), the curves and the final figures. Reports read
records only; they never train.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..errors import BenchError

SCHEMA = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(record: dict, path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(record, indent=1, sort_keys=False) + "\n")


def read_record(path: Path) -> dict:
    """A run record; a file that is not one is a one-line error naming it."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read record {path}: {' '.join(str(e).split())}") from None
    if not (isinstance(record, dict) and isinstance(record.get("config"), dict) and "status" in record):
        raise BenchError(f"cannot read record {path}: not a run record (no config or status)")
    return record


def load_checkpoint_file(path: Path, device) -> dict:
    """A checkpoint, loaded without running code from the file (weights_only: tensors, numbers, strings,
    containers); anything else is refused in one line naming the file."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # UnpicklingError for a foreign object, RuntimeError/EOFError for a broken file
        text = " ".join(str(e).split())
        why = text[text.find("Unsupported"):].split(". ")[0] if "Unsupported" in text else text[:200]
        raise BenchError(f"cannot load checkpoint {path}: {why}") from None
    if not (isinstance(state, dict) and {"step", "record", "modules", "optimizers"} <= set(state)):
        raise BenchError(f"cannot load checkpoint {path}: not a checkpoint of this suite")
    return state


@contextlib.contextmanager
def run_lock(out: Path, run_id: str):
    """Hold `<out>/.locks/<run_id>.lock` for the duration: a second run of the same id into the same folder is
    refused in one line instead of racing the first for its files (released when the process ends)."""
    folder = Path(out) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{run_id}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise BenchError(f"{run_id} is already running into {out} ({f.read().strip() or 'another process'}); "
                             f"wait for it or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def git_commit() -> dict:
    root = Path(__file__).resolve().parent.parent
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--", "bench", "methods"))}


def environment(device: str) -> dict:
    import numpy
    env = {
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "git": git_commit(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env


EVALUATION_KEYS = ("test_acc", "test_loss", "sub_acc", "test_top5", "sub_top5", "sub_mode_share")
TEXT_KEYS = ("test_bpc", "sub_bpc")


def new_record(config: dict, device: str) -> dict:
    return {
        "schema": SCHEMA,
        "run_id": None,
        "status": "running",
        "executor": "in-process",
        # in-process runs time the groups one after another: their wall-clock is simulated, not parallel
        "parallel": "simulated",
        "config": config,
        "env": environment(device),
        "split": {},
        "curves": {"step": [], "train_loss": [], "test_acc": [], "test_loss": [], "sub_acc": [],
                   "step_time_s": [], "train_time_s": [], "samples_seen": []},
        "assumption1": {"step": [], "mu": [], "cos": []},
        "final": {},
        "error": None,
    }


class RecordWriter:
    """The one writer of a run record: the header once, then phases, evaluations and Assumption-1 points as
    they come, the final figures and the status at the end; every save is atomic."""

    def __init__(self, path: Path, record: dict):
        self.path, self.record = Path(path), record
        self.claimed = False  # the first save is this run's (a resumed run replaces the earlier failure)

    @classmethod
    def start(cls, path: Path, config: dict, device: str, **header) -> "RecordWriter":
        record = new_record(config, device)
        record.update(run_id=Path(path).stem, **header)
        return cls(path, record)

    @property
    def curves(self) -> dict:
        return self.record["curves"]

    def add_phase(self, step: int, train_loss: float, step_time_s: float, train_time_s: float,
                  samples_seen: int) -> None:
        """One curve point: `train_time_s` is the training wall-clock so far (simulated or parallel, as the
        record's `parallel` says), `samples_seen` the training samples so far (warm-up steps included)."""
        c = self.curves
        if len(c.setdefault("samples_seen", [])) < len(c["step"]):  # a record from before samples_seen
            c["samples_seen"] = [s * samples_seen // step for s in c["step"]]
        c["step"].append(step)
        c["train_loss"].append(train_loss)
        c["step_time_s"].append(step_time_s)
        c["train_time_s"].append(train_time_s)
        c["samples_seen"].append(samples_seen)

    def add_evaluation(self, ev: dict, eval_time_s: float) -> None:
        """One evaluation (bench.train.evaluate's result); text runs add BPC."""
        for key in EVALUATION_KEYS + TEXT_KEYS:
            if key in ev:
                self.curves.setdefault(key, []).append(ev[key])
        final = self.record["final"]
        final["eval_time_s"] = final.get("eval_time_s", 0.0) + eval_time_s

    def add_assumption1(self, step: int, m: dict) -> None:
        """One Assumption-1 point: the means per group (mu, cos) and, beside them, their spread and minimum
        over the batches measured, the norm ratio, and how many batches."""
        a1 = self.record["assumption1"]
        a1["step"].append(step)
        for key, value in m.items():
            a1.setdefault(key, []).append(value)

    def last_evaluation(self) -> dict:
        """The final figures a record's last evaluation gives."""
        c = self.curves
        out = {"test_acc": c["test_acc"][-1] if c["test_acc"] else None,
               "sub_acc": c["sub_acc"][-1] if c["sub_acc"] else []}
        for key in ("test_top5", "sub_top5", "sub_mode_share") + TEXT_KEYS:
            if c.get(key):
                out[key] = c[key][-1]
        return out

    def save(self) -> None:
        """Write the record; a failure another process wrote to the file meanwhile (a worker of the same run
        that noticed a dead peer or launcher first) is kept, never overwritten."""
        if self.claimed and self.path.exists() and self.record.get("status") != "failed":
            try:
                on_disk = read_record(self.path)
            except BenchError:
                on_disk = {}
            if on_disk.get("status") == "failed" and on_disk.get("error"):
                self.record["status"], self.record["error"] = "failed", on_disk["error"]
        write_record(self.record, self.path)
        self.claimed = True

    def fail(self, error: str) -> None:
        """Mark the record failed and save it; an earlier error (ours, or one on the file) is kept: the
        first to notice usually names the cause."""
        self.save()  # adopts a failure already on the file
        if self.record.get("status") != "failed" or not self.record.get("error"):
            self.record["status"], self.record["error"] = "failed", error
            write_record(self.record, self.path)
