"""Run records: one JSON file per run, written atomically, with everything needed to trust a number.

A record holds the full config, the code version, library versions, the hardware, the seed, the
status (running / completed / diverged / failed), the curves and the final figures. Reports read
records only; they never train.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

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
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_record(record: dict, path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(record, indent=1, sort_keys=False) + "\n")


def read_record(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


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
        "torch": torch.__version__,
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


def add_evaluation(curves: dict, ev: dict) -> None:
    """Append one evaluation (bench.pipeline.evaluate's result) to a record's curves; text runs add BPC."""
    for key in ("test_acc", "test_loss", "sub_acc"):
        curves[key].append(ev[key])
    for key in ("test_bpc", "sub_bpc"):
        if key in ev:
            curves.setdefault(key, []).append(ev[key])


def last_evaluation(curves: dict) -> dict:
    """A record's final figures: its last evaluation (with BPC where the run is on text)."""
    out = {"test_acc": curves["test_acc"][-1] if curves["test_acc"] else None,
           "sub_acc": curves["sub_acc"][-1] if curves["sub_acc"] else []}
    if curves.get("test_bpc"):
        out.update(test_bpc=curves["test_bpc"][-1], sub_bpc=curves["sub_bpc"][-1] if curves.get("sub_bpc") else [])
    return out


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
                   "step_time_s": [], "train_time_s": []},
        "assumption1": {"step": [], "mu": [], "cos": []},
        "final": {},
        "error": None,
    }
