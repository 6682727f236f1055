"""Run records as one pandas DataFrame, the cells they form, and the formatting every table shares.

One row per record (config and final figures as columns, the record itself in `rec`). A *cell* is the
records of one (data, model, method, K, profile, executor, setting, method options): the seeds of one
number. Repeats of a seed (the speed benchmark runs each configuration several times) count once, by
their median run (by throughput). Records that differ in any part of their setting are never averaged.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from methods import create_method

from ..errors import BenchError
from ..exec.settings import SCHEDULE_ALIASES, shared_gpu

KEY = ["data", "model", "method", "groups", "profile", "executor", "setting", "options"]
# Orders used to sort rows (unknown values sort after the known ones, alphabetically).
DATA_ORDER = ("cifar10", "cifar100", "imagenet", "mnist", "fashion_mnist", "digits")
MODEL_ORDER = ("resnet50", "resnet101", "resnet152", "resnet182", "mlp", "*")
PROFILE_ORDER = ("architecture", "paper", "cpu", "smoke")
EXECUTOR_ORDER = ("simulated", "parallel", "parallel (lockstep)", "parallel (overlapped)")
DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet", "mnist": "MNIST",
              "fashion_mnist": "Fashion-MNIST", "digits": "digits (scikit-learn 8x8, offline)"}
MISSING = "missing"
# Our data sets that stand for one of the paper's (same images, smaller): matched to its cells.
PAPER_DATA = {"imagenet64": "imagenet"}


def paper_data(data: str) -> str:
    return PAPER_DATA.get(data, data)


def rank(order: tuple, value) -> tuple:
    return (order.index(value), "") if value in order else (len(order), str(value))


def _look(method: str):
    try:
        return create_method(method).look
    except BenchError:  # a plugin's method whose module is not loaded: shown by its name
        return None


def label(method: str, groups: int) -> str:
    """The paper's column name (BP, DNI_n1, LCT_n3, BP+joint (K=4)), from the method's declared look."""
    look = _look(method)
    return method if look is None else look.name(groups)


def method_rank(method: str) -> tuple:
    look = _look(method)
    return (look.order if look is not None else 10_000, method)


# ---------------------------------------------------------------------------------------------------
# Records


def is_record(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "status" in obj and "final" in obj


def load_records(roots: Iterable[Path], required: bool = False) -> list[dict]:
    """Every run record (JSON with config/status/final) under the given files or folders, sorted by path. A
    path that does not exist, an unreadable JSON file, or (with `required`) no record at all is a one-line
    error naming it."""
    paths: list[Path] = []
    roots = [Path(r) for r in roots]
    for root in roots:
        if root.is_file():
            paths.append(root)
        elif root.is_dir():
            paths.extend(p for p in root.rglob("*.json") if "checkpoints" not in p.parts)
        else:
            raise BenchError(f"no such file or folder: {root}")
    records = []
    for p in sorted(set(paths)):
        try:
            obj = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"cannot read record {p}: {e}") from None
        if is_record(obj):
            obj["_path"] = str(p)
            if obj.get("schedule") in SCHEDULE_ALIASES:  # records from before the schedule's rename
                obj["schedule"] = SCHEDULE_ALIASES[obj["schedule"]]
            if shared_gpu(obj):
                _untimed(obj)
            records.append(obj)
    if required and not records:
        raise BenchError(f"no run records in {', '.join(map(str, roots))}: nothing to report (nothing was written)")
    return records


def _untimed(rec: dict) -> None:
    """A functional run whose workers shared a GPU (--share-gpu): its accuracy counts, its clock measures no
    real setting. The report's copy loses its times (the file keeps them), so that no time, speed or
    time-to-accuracy figure can show one, and its schedule says so, so that it is a cell of its own."""
    rec["final"].update(train_time_s=None, samples_per_s=None)
    rec["curves"].update(train_time_s=[], step_time_s=[])
    rec["workers"] = []
    rec["schedule"] = f"{rec.get('schedule') or 'lockstep'}, shared GPU"


def executor_of(rec: dict) -> str:
    """'simulated' (in-process: groups one after another) or 'parallel (<schedule>)' (distributed executor,
    one worker per group; lockstep, overlapped, gpipe-m4, allreduce ...): different schedules never average."""
    par = rec.get("parallel")
    if par not in ("simulated", "parallel"):
        par = "parallel" if rec.get("executor") == "distributed" else "simulated"
    if par == "parallel" and rec.get("schedule"):
        return f"parallel ({rec['schedule']})"
    return par


def setting_of(rec: dict, threads: bool = True) -> str:
    """The run's conditions beyond its profile that make two numbers comparable: width, batch, steps, split
    rule, threads (per worker on real workers; left out with threads=False, for what they cannot change, like
    a sub-model's FLOPs), units and BPTT for the LSTMs, and the speed settings other than the defaults."""
    c = rec["config"]
    width = c.get("width")
    parts = [f"width {'-' if width is None else format(width, 'g')}", f"batch {c.get('batch_size')}",
             f"{c.get('steps')} steps", f"{c.get('split_rule', 'paper')} split"
             + ("" if c.get("split_objective", "slowest") == "slowest" else f" ({c['split_objective']})")]
    if c.get("hidden"):
        parts.append(f"{c['hidden']} units, bptt {c.get('bptt')}")
    # the speed settings: mixed precision is another number; channels_last and compile are another speed
    if c.get("precision", "fp32") != "fp32":
        parts.append(c["precision"])
    parts += [name for key, name in (("channels_last", "channels_last"), ("compile", "compiled")) if c.get(key)]
    parallel = executor_of(rec) != "simulated"
    n = (c.get("distributed") or {}).get("threads_per_worker") if parallel else c.get("threads")
    if n and threads:
        parts.append(f"{n} thread{'s' if n > 1 else ''}" + ("/worker" if parallel else ""))
    return ", ".join(parts)


def options_of(rec: dict) -> str:
    """A method's own options as given (`--option`): 'local_iters=20' is another method. A value equal to the
    declared default is no option (records of gpipe on real workers name microbatches=4 either way)."""
    c = rec["config"]
    try:
        declared = create_method(c["method"]).options
    except BenchError:
        declared = {}
    given = {k: v for k, v in (c.get("extra") or {}).items() if k not in declared or declared[k].default != v}
    return ", ".join(f"{k}={v}" for k, v in sorted(given.items()))


def _row(rec: dict) -> dict:
    c = rec["config"]
    return {"data": c["data"], "model": c["model"], "method": c["method"], "groups": int(c["groups"]),
            "profile": c["profile"], "executor": executor_of(rec), "setting": setting_of(rec),
            "options": options_of(rec), "seed": c["seed"], "status": rec["status"], "path": rec.get("_path", ""),
            "width": c.get("width"), "sps": rec["final"].get("samples_per_s") or 0.0, "rec": rec}


# ---------------------------------------------------------------------------------------------------
# Cells


def sort_key(cell) -> tuple:
    return (rank(DATA_ORDER, cell.data), rank(MODEL_ORDER, cell.model), method_rank(cell.method), cell.groups,
            rank(PROFILE_ORDER, cell.profile), rank(EXECUTOR_ORDER, cell.executor), cell.setting, cell.options)


@dataclass
class Cell:
    """The records of one cell; `runs` the completed ones, one per seed."""

    data: str
    model: str
    method: str
    groups: int
    profile: str
    executor: str
    setting: str
    options: str
    records: list[dict]
    runs: list[dict]

    def values(self, fn: Callable[[dict], float | None]) -> list[float]:
        """fn of every completed run, where it gives a finite number."""
        out = []
        for r in self.runs:
            try:
                v = fn(r)
            except (KeyError, IndexError, TypeError):
                v = None
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def mean(self, fn) -> float | None:
        return mean_std(self.values(fn))[0]

    @property
    def seeds(self) -> list[int]:
        return [r["config"]["seed"] for r in self.runs]

    @property
    def seeds_text(self) -> str:
        """'0,1,2', or '0 (median of 3 runs)' where a seed was run several times."""
        done = [r["config"]["seed"] for r in self.records if r["status"] == "completed"]
        runs = max((done.count(s) for s in self.seeds), default=0)
        text = ",".join(map(str, self.seeds)) or "-"
        return f"{text} (median of {runs} runs)" if runs > 1 else text

    @property
    def steps(self) -> str:
        steps = {r["final"].get("steps") or r["config"].get("steps") for r in self.runs} - {None}
        return ",".join(str(s) for s in sorted(steps)) or "-"

    @property
    def status(self) -> str:
        """'completed' when every record is, else what is not (e.g. '1 completed, s1 running 200/400')."""
        parts = []
        for r in sorted(self.records, key=lambda r: r["config"]["seed"]):
            if r["status"] != "completed":
                done = r["curves"]["step"][-1] if r.get("curves", {}).get("step") else 0
                parts.append(f"s{r['config']['seed']} {r['status']} {done}/{r['config'].get('steps')}")
        n = len(self.runs)
        return "completed" if not parts else ", ".join(([f"{n} completed"] if n else []) + parts)

    @property
    def width(self) -> str:
        ws = sorted({r["config"].get("width") for r in self.records} - {None})
        return ",".join(num(w, 4) for w in ws) or "-"

    @property
    def training_setting(self) -> str:
        """The setting without the thread counts (which change times, not what is trained)."""
        return setting_of(self.records[0], threads=False)

    @property
    def has_accuracy(self) -> bool:
        return bool(self.values(lambda r: r["final"].get("test_acc")))


def frame(records: list[dict]) -> pd.DataFrame:
    """One row per record, sorted by (seed, path)."""
    df = pd.DataFrame([_row(r) for r in records], columns=list(_row_columns()))
    return df.sort_values(["seed", "path"], kind="stable").reset_index(drop=True)


def _row_columns():
    return KEY + ["seed", "status", "path", "width", "sps", "rec"]


def cells(records: list[dict]) -> list[Cell]:
    """The cells of the records, in table order."""
    df = frame(records)
    done = df[df.status == "completed"].sort_values(["sps", "path"], kind="stable")
    by_seed = done.groupby(KEY + ["seed"], sort=False)
    median = done[by_seed.cumcount() == (by_seed["sps"].transform("size") - 1) // 2]
    runs = median.sort_values("seed", kind="stable").groupby(KEY, sort=False)["rec"].agg(list)
    out = [Cell(*key, records=list(g["rec"]), runs=runs.get(key, [])) for key, g in df.groupby(KEY, sort=False)]
    return sorted(out, key=sort_key)


# ---------------------------------------------------------------------------------------------------
# Numbers and formatting


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    s = pd.Series(values, dtype=float)
    return float(s.mean()), float(s.std()) if len(values) > 1 else 0.0


def num(v: float | None, digits: int = 2) -> str:
    """Fixed-point text; never '-0.00'."""
    if v is None:
        return ""
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else num(v, digits)


def fmt_ours(values: list[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    if m is None:
        return MISSING
    return num(m, digits) if len(values) == 1 else f"{num(m, digits)} ± {num(s, digits)}"


def seeds_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def profiles_text(cs: Iterable[Cell]) -> str:
    """'cpu, smoke; data: digits' — the profiles and data sets a table's rows of ours come from."""
    cs = list(cs)
    profiles = sorted({c.profile for c in cs}, key=lambda p: rank(PROFILE_ORDER, p))
    data = sorted({c.data for c in cs}, key=lambda d: rank(DATA_ORDER, d))
    return f"{', '.join(profiles)}; data: {', '.join(data)}" if profiles else "none; no records"


@dataclass
class Table:
    """One rendered table: markdown with a title and notes, and a CSV of raw numbers, from one DataFrame
    whose `md` columns hold the markdown cells and `csv` columns the raw values."""

    name: str                      # file stem under results/
    title: str
    notes: list[str]
    md: pd.DataFrame
    csv_frame: pd.DataFrame

    def markdown(self) -> str:
        out = [f"## {self.title}", ""] + list(self.notes) + ([""] if self.notes else [])
        md = self.md.map(lambda c: str(c).replace("|", "/"))
        if md.empty:
            md = pd.DataFrame([["(no rows)"] + [""] * (len(md.columns) - 1)], columns=md.columns)
        out.append(md.to_markdown(index=False, disable_numparse=True))
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        cells = self.csv_frame.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                   else (num(v, 6) if isinstance(v, float) else v))
        return cells.to_csv(index=False, lineterminator="\n")


def table(name: str, title: str, notes: list[str], md_columns: list[str], csv_columns: list[str],
          rows: list[tuple[list, list]]) -> Table:
    """A Table from (markdown cells, csv cells) rows."""
    md = pd.DataFrame([r[0] for r in rows], columns=md_columns, dtype=object)
    raw = pd.DataFrame([r[1] for r in rows], columns=csv_columns, dtype=object)
    return Table(name, title, notes, md, raw)
