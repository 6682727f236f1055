"""`python -m bench report`: the paper's tables, with our numbers beside the paper's, from run records only.

Nothing is trained here. Records (results/**/records/*.json, and any other run record under the
results folder) are grouped by (data, model, method, K, profile, executor) and averaged over seeds
(mean +- sample std, n). Every row names its profile and whether its time is *simulated* (the
in-process executor runs the groups one after another) or *parallel* (the distributed executor,
one worker per group). A paper cell without a completed record is shown as `missing`, never filled in.

Output (deterministic: sorted rows, fixed float formats, no timestamps, so the same records give
byte-identical files): results/<name>.md and results/<name>.csv for each table, results/REPORT.md
with all of them; figures go to plots/ (bench/plots.py).
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import paper as P
from .errors import BenchError
from .records import atomic_write_text

# Orders used to sort rows (unknown values sort after the known ones, alphabetically).
DATA_ORDER = ("cifar10", "cifar100", "imagenet", "mnist", "fashion_mnist", "digits")
MODEL_ORDER = ("resnet50", "resnet101", "resnet152", "resnet182", "mlp", "*")
METHOD_ORDER = ("bp", "admm", "dni", "cdni", "lct", "joint", "gpipe", "ddp")
PROFILE_ORDER = ("architecture", "paper", "cpu", "smoke")
EXECUTOR_ORDER = ("simulated", "parallel", "parallel (lockstep)", "parallel (pipelined)")
DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet", "mnist": "MNIST",
              "fashion_mnist": "Fashion-MNIST", "digits": "digits (scikit-learn 8x8, offline)"}
MISSING = "missing"
# Our data sets that stand for one of the paper's (same images, smaller): matched to its cells.
PAPER_DATA = {"imagenet64": "imagenet"}


def paper_data(data: str) -> str:
    return PAPER_DATA.get(data, data)


def _rank(order: tuple, value) -> tuple:
    return (order.index(value), "") if value in order else (len(order), str(value))


# ---------------------------------------------------------------------------------------------------
# Records and groups


def is_record(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "status" in obj and "final" in obj


def load_records(roots: Iterable[Path]) -> list[dict]:
    """Every run record (JSON with config/status/final) under the given files or folders, sorted by path."""
    paths: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            paths.append(root)
        elif root.is_dir():
            paths.extend(p for p in root.rglob("*.json") if "checkpoints" not in p.parts)
    records = []
    for p in sorted(set(paths)):
        try:
            obj = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"cannot read record {p}: {e}") from None
        if is_record(obj):
            obj["_path"] = str(p)
            records.append(obj)
    return records


def executor_of(rec: dict) -> str:
    """'simulated' (in-process: groups one after another) or 'parallel (<schedule>)' (distributed executor,
    one worker per group; lockstep, pipelined, gpipe-m4, allreduce ...): different schedules never average."""
    par = rec.get("parallel")
    if par not in ("simulated", "parallel"):
        par = "parallel" if rec.get("executor") == "distributed" else "simulated"
    if par == "parallel" and rec.get("schedule"):
        return f"parallel ({rec['schedule']})"
    return par


def is_parallel(executor: str) -> bool:
    return executor.startswith("parallel")


Key = tuple  # (data, model, method, groups, profile, executor, setting, options)


def setting_of(rec: dict, threads: bool = True) -> str:
    """The run's conditions beyond its profile that make two numbers comparable: width, batch, steps, split
    rule, threads (per worker on real workers; left out with threads=False, for what they cannot change, like
    a sub-model's FLOPs), and units and BPTT for the LSTMs. Records that differ in any of them (e.g.
    `--steps`, or the speed benchmark's short runs) are never averaged together."""
    c = rec["config"]
    width = c.get("width")
    parts = [f"width {'-' if width is None else format(width, 'g')}", f"batch {c.get('batch_size')}",
             f"{c.get('steps')} steps",
             f"{c.get('split_rule', 'paper')} split"]
    if c.get("hidden"):
        parts.append(f"{c['hidden']} units, bptt {c.get('bptt')}")
    n = (c.get("distributed") or {}).get("threads_per_worker") if executor_of(rec) != "simulated" else c.get("threads")
    if n and threads:
        parts.append(f"{n} thread{'s' if n > 1 else ''}" + ("/worker" if executor_of(rec) != "simulated" else ""))
    return ", ".join(parts)


def options_of(rec: dict) -> str:
    """A method's own options (`--option`), part of what the method is: 'local_iters=20' is another method."""
    return ", ".join(f"{k}={v}" for k, v in sorted((rec["config"].get("extra") or {}).items()))


def key_of(rec: dict) -> Key:
    c = rec["config"]
    return (c["data"], c["model"], c["method"], int(c["groups"]), c["profile"], executor_of(rec), setting_of(rec),
            options_of(rec))


def sort_key(key: Key) -> tuple:
    data, model, method, k, profile, executor, setting, options = key
    return (_rank(DATA_ORDER, data), _rank(MODEL_ORDER, model), _rank(METHOD_ORDER, method), k,
            _rank(PROFILE_ORDER, profile), _rank(EXECUTOR_ORDER, executor), setting, options)


@dataclass
class Group:
    """The records of one (data, model, method, K, profile, executor): the seeds of one cell."""

    key: Key
    records: list[dict] = field(default_factory=list)

    data = property(lambda self: self.key[0])
    model = property(lambda self: self.key[1])
    method = property(lambda self: self.key[2])
    groups = property(lambda self: self.key[3])
    profile = property(lambda self: self.key[4])
    executor = property(lambda self: self.key[5])
    setting = property(lambda self: self.key[6])
    options = property(lambda self: self.key[7])

    @property
    def training_setting(self) -> str:
        """The setting without the thread counts (which change times, not what is trained)."""
        return setting_of(self.records[0], threads=False)

    @property
    def completed(self) -> list[dict]:
        """One completed record per seed. Repeats of a seed (the speed benchmark runs each configuration
        several times) count once, by their median run (by throughput), as the speed table does."""
        by_seed: dict[int, list[dict]] = {}
        for r in self.records:
            if r["status"] == "completed":
                by_seed.setdefault(r["config"]["seed"], []).append(r)
        out = []
        for seed in sorted(by_seed):
            runs = sorted(by_seed[seed], key=lambda r: (r["final"].get("samples_per_s") or 0.0, r.get("_path", "")))
            out.append(runs[(len(runs) - 1) // 2])
        return out

    @property
    def seeds_text(self) -> str:
        """'0,1,2', or '0 (median of 3 runs)' where a seed was run several times."""
        runs = max((sum(r["config"]["seed"] == s and r["status"] == "completed" for r in self.records)
                    for s in self.seeds), default=0)
        text = ",".join(map(str, self.seeds)) or "-"
        return f"{text} (median of {runs} runs)" if runs > 1 else text

    def values(self, fn: Callable[[dict], float | None]) -> list[float]:
        out = []
        for r in self.completed:
            try:
                v = fn(r)
            except (KeyError, IndexError, TypeError):
                v = None
            if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
                out.append(float(v))
        return out

    @property
    def seeds(self) -> list[int]:
        return [r["config"]["seed"] for r in self.completed]

    @property
    def steps(self) -> str:
        return ",".join(str(s) for s in sorted({r["final"].get("steps") or r["config"].get("steps")
                                                 for r in self.completed} - {None})) or "-"

    @property
    def status(self) -> str:
        """'completed' when every record is, else what is not (e.g. '1 completed, 1 running 200/400')."""
        parts = []
        for r in sorted(self.records, key=lambda r: r["config"]["seed"]):
            if r["status"] == "completed":
                continue
            done = r["curves"]["step"][-1] if r.get("curves", {}).get("step") else 0
            parts.append(f"s{r['config']['seed']} {r['status']} {done}/{r['config'].get('steps')}")
        n = len(self.completed)
        if not parts:
            return "completed"
        return ", ".join(([f"{n} completed"] if n else []) + parts)

    @property
    def width(self) -> str:
        ws = sorted({r["config"].get("width") for r in self.records} - {None})
        return ",".join(_num(w, 4) for w in ws) or "-"


def group_records(records: list[dict]) -> dict[Key, Group]:
    groups: dict[Key, Group] = {}
    for r in sorted(records, key=lambda r: (r["config"]["seed"], r.get("_path", ""))):
        k = key_of(r)
        groups.setdefault(k, Group(k)).records.append(r)
    return dict(sorted(groups.items(), key=lambda kv: sort_key(kv[0])))


# ---------------------------------------------------------------------------------------------------
# Numbers and formatting


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _num(v: float | None, digits: int = 2) -> str:
    """Fixed-point text; never '-0.00'."""
    if v is None:
        return ""
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else _num(v, digits)


def fmt_ours(values: list[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    if m is None:
        return MISSING
    return _num(m, digits) if len(values) == 1 else f"{_num(m, digits)} ± {_num(s, digits)}"


def seeds_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _label(method: str, k: int) -> str:
    return P.label(method, k)


@dataclass
class Table:
    """One rendered table: markdown with a title and notes, and a CSV with raw numbers."""

    name: str                      # file stem under results/
    title: str
    notes: list[str]
    md_columns: list[str]
    csv_columns: list[str]
    rows: list[tuple[list[str], list]]  # (markdown cells, csv cells)

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        out += [f"{n}" for n in self.notes]
        if self.notes:
            out.append("")
        out.append("| " + " | ".join(self.md_columns) + " |")
        out.append("|" + "---|" * len(self.md_columns))
        for md, _ in self.rows:
            out.append("| " + " | ".join(c.replace("|", "/") for c in md) + " |")
        if not self.rows:
            out.append("| " + " | ".join(["(no rows)"] + [""] * (len(self.md_columns) - 1)) + " |")
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.csv_columns)
        for _, row in self.rows:
            w.writerow(["" if v is None else (_num(v, 6) if isinstance(v, float) else v) for v in row])
        return buf.getvalue()


def _profiles_text(groups: Iterable[Group]) -> str:
    """'cpu, smoke; data: digits' — the profiles and data sets a table's rows of ours come from."""
    groups = list(groups)
    profiles = sorted({g.profile for g in groups}, key=lambda p: _rank(PROFILE_ORDER, p))
    data = sorted({g.data for g in groups}, key=lambda d: _rank(DATA_ORDER, d))
    return f"{', '.join(profiles)}; data: {', '.join(data)}" if profiles else "none; no records"


# ---------------------------------------------------------------------------------------------------
# Cell tables: paper cells x our groups


@dataclass(frozen=True)
class Cell:
    data: str
    model: str
    method: str
    groups: int
    metric: str


def _metric_value(rec: dict, metric: str) -> float | None:
    f = rec["final"]
    if metric == "top1" or metric == "main":
        return f.get("test_acc")
    if metric == "top5" or metric == "main_top5":
        return f.get("test_top5")
    if metric.startswith("sub"):
        i = int(metric[3:].split("_")[0]) - 1
        subs = f.get("sub_top5") if metric.endswith("_top5") else f.get("sub_acc")
        return subs[i] if subs and i < len(subs) else None
    raise KeyError(metric)


METRIC_LABEL = {"top1": "acc (%)", "top5": "top-5 (%)", "main": "Main (%)", "main_top5": "Main top-5 (%)"}


def _metric_label(metric: str) -> str:
    if metric in METRIC_LABEL:
        return METRIC_LABEL[metric]
    if metric.startswith("sub"):
        i = metric[3:].split("_")[0]
        return f"Sub_{i} top-5 (%)" if metric.endswith("_top5") else f"Sub_{i} (%)"
    return metric


def _metric_rank(metric: str) -> tuple:
    order = ("top1", "top5")
    if metric in order:
        return (0, order.index(metric), "")
    if metric.startswith("sub"):
        return (1, int(metric[3:].split("_")[0]), metric)
    return (2, 0, metric)


ACC_MD = ["data", "model", "method", "K", "metric", "paper", "ours", "diff (ours − paper)", "profile", "seeds",
          "time", "steps", "status"]
ACC_CSV = ["table", "data", "model", "method", "groups", "metric", "paper", "ours_mean", "ours_std", "n",
           "diff", "profile", "seeds", "executor", "steps", "status"]


def cell_table(name: str, table: str, title: str, notes: list[str], groups: dict[Key, Group],
               member: Callable[[Group], bool], metrics: Callable[[Group], list[str]]) -> Table:
    """Rows: every paper cell of `table` (missing where we have no completed record) and every group
    of ours that belongs to the table (paper '—' where the paper has no such cell)."""
    # groups whose completed runs were never evaluated (speed benchmarks) have no accuracy to show
    ours = [g for g in groups.values() if member(g)
            and (not g.completed or g.values(lambda r: r["final"].get("test_acc")))]
    cells: dict[Cell, list[Group]] = {}
    for d, m, meth, k, metric in P.cells(table):
        matched = [g for g in ours if paper_data(g.data) == d and (m == "*" or g.model == m) and g.method == meth
                   and g.groups == k]
        cells[Cell(d, m, meth, k, metric)] = matched
    covered = {(g.key, c.metric) for c, gs in cells.items() for g in gs}
    for g in ours:
        for metric in metrics(g):
            if (g.key, metric) not in covered:
                cells.setdefault(Cell(g.data, g.model, g.method, g.groups, metric), []).append(g)

    def cell_order(item):
        c, _ = item
        return (_rank(DATA_ORDER, c.data), _rank(MODEL_ORDER, c.model), _rank(METHOD_ORDER, c.method),
                c.groups, _metric_rank(c.metric))

    rows = []
    for c, gs in sorted(cells.items(), key=cell_order):
        pv = P.paper_value(table, c.data, c.model, c.method, c.groups, c.metric)
        ptxt = "—" if pv is None else _num(pv)
        base = [c.data, c.model, _label(c.method, c.groups), str(c.groups), _metric_label(c.metric)]
        if not gs:
            rows.append((base + [f"paper: {ptxt}", MISSING, "-", "-", "-", "-", "-", "no record"],
                         [table, c.data, c.model, c.method, c.groups, c.metric, pv, None, None, 0, None, "", "",
                          "", "", MISSING]))
            continue
        for g in sorted(gs, key=lambda g: sort_key(g.key)):
            vals = g.values(lambda r, mt=c.metric: _metric_value(r, mt))
            m, s = mean_std(vals)
            diff = None if (m is None or pv is None) else m - pv
            model = g.model if c.model != "*" else f"{g.model} (paper: not stated)"
            ours_txt = (f"ours ({g.profile}, {seeds_text(len(vals))}): {fmt_ours(vals)}" if vals
                        else MISSING)
            rows.append(([g.data, model, _label(c.method, c.groups), str(c.groups), _metric_label(c.metric),
                          f"paper: {ptxt}", ours_txt, "-" if diff is None else f"{diff:+.2f}", g.profile,
                          g.seeds_text, g.executor, g.steps, g.status],
                         [table, g.data, g.model, c.method, c.groups, c.metric, pv, m, s if vals else None,
                          len(vals), diff, g.profile, " ".join(map(str, g.seeds)), g.executor, g.steps,
                          g.status]))
    return Table(name, title, notes, ACC_MD, ACC_CSV, rows)


def _top5_rows(g: Group) -> bool:
    """Top-5 is reported for ImageNet only (as in the paper)."""
    return paper_data(g.data) == "imagenet"


def _top1_metrics(g: Group) -> list[str]:
    has5 = _top5_rows(g)
    return ["top1", "top5"] if has5 else ["top1"]


def _acc_notes(groups: dict[Key, Group], what: str) -> list[str]:
    return [f"{what} Profiles found: {_profiles_text(groups.values())}. `paper:` is the paper's number; "
            "`ours (<profile>, n seeds)` is the mean ± sample std over completed seeds at that profile; "
            "`smoke` and `cpu` are scaled-down runs (smaller width, fewer steps), never a reproduction. "
            "`time`: *simulated* = in-process executor, *parallel* = distributed executor. "
            "`missing` = no completed record."]


def table_I(groups) -> Table:
    return cell_table(
        "table_I_accuracy", "I",
        f"Table I — test accuracy (%), ResNet-50/101 × BP, DNI_n1..3, LCT_n1..3 "
        f"(profiles: {_profiles_text(g for g in groups.values() if g.model in ('resnet50', 'resnet101'))})",
        _acc_notes(groups, "ImageNet rows give top-1 and top-5. Data sets the paper did not use (e.g. digits) "
                           "have no paper value."),
        groups, lambda g: g.model in ("resnet50", "resnet101") and g.method in ("bp", "dni", "lct"), _top1_metrics)


def table_II(groups) -> Table:
    return cell_table(
        "table_II_resnet182", "II",
        f"Table II — test accuracy (%), ResNet-182 × BP, LCT_n1..3 "
        f"(profiles: {_profiles_text(g for g in groups.values() if g.model == 'resnet182')})",
        _acc_notes(groups, ""), groups, lambda g: g.model == "resnet182" and g.method in ("bp", "lct"),
        _top1_metrics)


def table_III(groups) -> Table:
    return cell_table(
        "table_III_mlp", "III",
        f"Table III — test accuracy (%), 300-150-10 MLP × BP, ADMM, DNI_n1, LCT_n1 "
        f"(profiles: {_profiles_text(g for g in groups.values() if g.model == 'mlp')})",
        _acc_notes(groups, "ADMM is `--method admm` (Taylor et al. 2016, the MLP only); ADMM and LCT_n1 split the "
                           "MLP into K=2 groups."),
        groups, lambda g: g.model == "mlp" and g.method in ("bp", "admm", "dni", "lct"), _top1_metrics)


def table_IV(groups) -> Table:
    return cell_table(
        "table_IV_joint", "IV",
        f"Table IV — test accuracy (%), backprop with joint early-exit losses (LCT_n3 structure, K=4) "
        f"(profiles: {_profiles_text(g for g in groups.values() if g.method == 'joint')})",
        _acc_notes(groups, "The paper reports K=4 only; other K of ours are listed without a paper value."),
        groups, lambda g: g.method == "joint" and g.model != "mlp", _top1_metrics)


def _sub_metrics(g: Group) -> list[str]:
    has5 = _top5_rows(g)
    out = []
    for i in range(1, g.groups):
        out.append(f"sub{i}")
        if has5:
            out.append(f"sub{i}_top5")
    out.append("main")
    if has5:
        out.append("main_top5")
    return out


def table_VII(groups) -> Table:
    return cell_table(
        "table_VII_submodels", "VII",
        f"Table VII — sub-model accuracy (%), Sub_i = groups 1..i + critic i "
        f"(profiles: {_profiles_text(g for g in groups.values() if g.method == 'lct')})",
        _acc_notes(groups, "The paper reports LCT_n3 (K=4); our other K and joint's early exits are listed "
                           "without a paper value."),
        groups, lambda g: g.method in ("lct", "joint") and g.groups > 1 and not g.model.startswith("lstm"),
        _sub_metrics)


# ---------------------------------------------------------------------------------------------------
# Table VI: memory per worker (distributed records only)


def _worker_memory(w: dict) -> tuple[float | None, str]:
    for k, label in (("gpu_mem_nvml_mb", "GPU (NVML)"), ("torch_cuda_peak_mb", "GPU (torch peak)"),
                     ("peak_rss_mb", "peak RSS")):
        if w.get(k) is not None:
            return float(w[k]), label
    return None, "-"


def _is_gpu_measure(measure: str) -> bool:
    return measure.startswith("GPU")


def table_VI(groups) -> Table:
    md_cols = ["data", "model", "method", "K", "worker", "paper (MiB)", "ours (MiB)", "measure",
               "of which training (MiB)", "diff", "profile", "setting", "seeds", "time", "status"]
    csv_cols = ["table", "data", "model", "method", "groups", "worker", "paper_mib", "ours_mean_mib", "ours_std_mib",
                "n", "measure", "training_mib", "diff", "profile", "setting", "seeds", "executor", "status"]
    ours = [g for g in groups.values() if any(r.get("workers") for r in g.completed)]
    cells: dict[tuple, list[Group]] = {}
    for d, m, meth, k, metric in P.cells("VI"):
        cells[(d, m, meth, k, int(metric[3:]))] = [g for g in ours if paper_data(g.data) == d
                                                   and (m == "*" or g.model == m)
                                                   and g.method == meth and g.groups == k]
    covered = {(g.key, c[4]) for c, gs in cells.items() for g in gs}
    for g in ours:
        ranks = max(len(r["workers"]) for r in g.completed)
        for w in range(1, ranks + 1):
            if (g.key, w) not in covered:
                cells.setdefault((g.data, g.model, g.method, g.groups, w), []).append(g)
    rows = []
    order = lambda kv: (_rank(DATA_ORDER, kv[0][0]), _rank(MODEL_ORDER, kv[0][1]), _rank(METHOD_ORDER, kv[0][2]),
                        kv[0][3], kv[0][4])  # noqa: E731
    for (d, m, meth, k, w), gs in sorted(cells.items(), key=order):
        pv = P.paper_value("VI", d, m, meth, k, f"gpu{w}")
        ptxt = "—" if pv is None else f"paper: {pv:.0f}"
        if not gs:
            rows.append(([d, m, _label(meth, k), str(k), f"GPU {w}", ptxt, MISSING, "-", "-", "-", "-", "-", "-", "-",
                          "no distributed record"],
                         ["VI", d, m, meth, k, w, pv, None, None, 0, "", None, None, "", "", "", "", MISSING]))
            continue
        for g in sorted(gs, key=lambda g: sort_key(g.key)):
            vals, measures, training = [], set(), []
            for r in g.completed:
                ws = sorted(r.get("workers") or [], key=lambda x: x.get("rank", 0))
                if w - 1 < len(ws):
                    v, label = _worker_memory(ws[w - 1])
                    if v is not None:
                        vals.append(v)
                        measures.add(label)
                    if label == "peak RSS" and ws[w - 1].get("rss_start_mb") is not None:
                        training.append(v - ws[w - 1]["rss_start_mb"])
            mean, std = mean_std(vals)
            measure = ",".join(sorted(measures)) or "-"
            # a CPU's peak RSS is not the paper's GPU memory: no difference is shown for it
            diff = None if mean is None or pv is None or not _is_gpu_measure(measure) else mean - pv
            train_mean = mean_std(training)[0]
            ours_txt = f"ours ({g.profile}, {seeds_text(len(vals))}): {fmt_ours(vals, 0)}" if vals else MISSING
            model = g.model if m != "*" else f"{g.model} (paper: not stated)"
            rows.append(([d, model, _label(meth, k), str(k), f"worker {w}", ptxt, ours_txt, measure,
                          fmt(train_mean, 0), "-" if diff is None else f"{diff:+.0f}", g.profile, g.setting,
                          g.seeds_text, g.executor, g.status],
                         ["VI", d, g.model, meth, k, w, pv, mean, std, len(vals), measure, train_mean, diff, g.profile,
                          g.setting, " ".join(map(str, g.seeds)), g.executor, g.status]))
    return Table("table_VI_memory", f"Table VI — memory per worker (MiB) (profiles: {_profiles_text(ours)})",
                 [f"Only distributed records (one worker per group) measure memory per worker: GPU memory through "
                  f"NVML where there is a GPU, else the worker's peak RSS since training started (not comparable "
                  f"with the paper's GPU MiB, so no difference is shown; every CPU worker also holds the data and "
                  f"a copy of every group from its set-up, and `of which training` is the peak minus the RSS at "
                  f"the start). In-process records are not listed. {P.NOTES['VI']}"],
                 md_cols, csv_cols, rows)


# ---------------------------------------------------------------------------------------------------
# Table VIII: FLOPs and parameters of the sub-models (from the records' split; static)


def submodel_complexity(split: dict) -> list[dict]:
    """Per sub-model i (groups 1..i + critic i) and the main network: FLOPs, params and the critic's part."""
    gs = split.get("groups") or []
    out = []
    flops = params = 0
    for i, g in enumerate(gs, 1):
        flops += g["flops"]
        params += g["params"]
        if i < len(gs):
            hf, hp = g.get("head_flops", 0), g.get("head_params", 0)
            if hp:
                out.append({"name": f"Sub_{i}", "flops": flops + hf, "params": params + hp,
                            "critic_flops": hf, "critic_params": hp})
    out.append({"name": "Main", "flops": flops, "params": params, "critic_flops": 0, "critic_params": 0})
    return out


ARCH_SHAPES = {"cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "imagenet": ((3, 224, 224), 1000)}


@functools.lru_cache(maxsize=None)
def architecture_split(data: str, model: str, groups: int) -> dict:
    """The paper's network at full width, split like the records' (paper rule): FLOPs and parameters per
    group and critic, counted with torch.utils.flop_counter. Not a run: nothing is trained."""
    from .heads import critic
    from .models import build_model
    from .split import module_flops, paper_split, unit_flops

    shape, classes = ARCH_SHAPES[data]
    net = build_model(model, classes, shape, 1.0)
    split = paper_split(net, groups)
    flops, shapes = unit_flops(net, shape)
    params = [sum(p.numel() for p in u.parameters()) for u in net.units]
    out = []
    for a, b in zip(split.bounds, split.bounds[1:]):
        head = critic(net.family, shapes[b - 1], classes, 1.0) if b < len(net.units) else None
        out.append({"flops": sum(flops[a:b]), "params": sum(params[a:b]),
                    "head_flops": module_flops(head, shapes[b - 1]) if head is not None else 0,
                    "head_params": sum(p.numel() for p in head.parameters()) if head is not None else 0})
    return {"rule": "paper", "bounds": split.bounds, "groups": out}


def _m(v: float) -> str:
    return f"{v / 1e6:.4f}" if v < 1e6 else f"{v / 1e6:.2f}"


def _paper_viii(data: str, model: str, method: str, k: int, name: str) -> dict:
    """The paper's Table VIII cells of one sub-model (None where it has none)."""
    key = name.lower().replace("_", "")
    return {m: P.paper_value("VIII", data, model, method, k, f"{key}_{m}")
            for m in ("flops_m", "critic_flops_m", "params_m", "critic_params_m")}


def _viii_row(source: list, width, s: dict, paper: dict, profile: str) -> tuple[list[str], list]:
    data, model, method, k = source
    fshare = f" ({100 * s['critic_flops'] / s['flops']:.1f}%)" if s["critic_flops"] else ""
    pshare = f" ({100 * s['critic_params'] / s['params']:.1f}%)" if s["critic_params"] else ""

    def paper_txt(total, critic):
        if total is None:
            return "—"
        return _num(total) + (f" (critic {_num(critic)})" if critic is not None else "")

    md = [data, model, _label(method, k), str(k), str(width), s["name"], _m(s["flops"]) + fshare,
          paper_txt(paper["flops_m"], paper["critic_flops_m"]), _m(s["params"]) + pshare,
          paper_txt(paper["params_m"], paper["critic_params_m"]), profile]
    row = ["VIII", data, model, method, k, width, s["name"], s["flops"], s["critic_flops"], paper["flops_m"],
           paper["critic_flops_m"], s["params"], s["critic_params"], paper["params_m"], paper["critic_params_m"],
           profile]
    return md, row


def table_VIII(groups) -> Table:
    md_cols = ["data", "model", "method", "K", "width", "sub-model", "FLOPs (M), ours (critic share)",
               "paper FLOP (M)", "params (M), ours (critic share)", "paper params (M)", "profile"]
    csv_cols = ["table", "data", "model", "method", "groups", "width", "submodel", "flops", "critic_flops",
                "paper_flop_m", "paper_critic_flop_m", "params", "critic_params", "paper_params_m",
                "paper_critic_params_m", "profile"]
    rows = []
    seen = set()
    ours = [g for g in groups.values() if g.method in ("lct", "joint") and g.groups > 1
            and not g.model.startswith("lstm")]
    for g in ours:
        rec = next((r for r in g.records if r.get("split", {}).get("groups")), None)
        if rec is None:
            continue
        ident = (g.data, g.model, g.method, g.groups, g.profile, g.width)
        if ident in seen:  # the same architecture under another executor or setting
            continue
        seen.add(ident)
        for s in submodel_complexity(rec["split"]):
            rows.append(_viii_row([g.data, g.model, g.method, g.groups], g.width, s,
                                  _paper_viii(paper_data(g.data), g.model, g.method, g.groups, s["name"]), g.profile))
    # The paper's cells, beside the same architecture at full width counted by us (no run needed).
    for d, m, meth, k in sorted({c[:4] for c in P.cells("VIII")}):
        for s in submodel_complexity(architecture_split(d, m, k)):
            md, row = _viii_row([d, m, meth, k], "1", s, _paper_viii(d, m, meth, k, s["name"]), "architecture")
            md[-1] = "architecture (counted, no run)"
            rows.append((md, row))
    rows.sort(key=lambda r: (_rank(DATA_ORDER, r[1][1]), _rank(MODEL_ORDER, r[1][2]), _rank(METHOD_ORDER, r[1][3]),
                             r[1][4], _rank(PROFILE_ORDER, r[1][15]), str(r[1][5]),
                             (r[1][6] == "Main", r[1][6])))
    return Table("table_VIII_complexity",
                 f"Table VIII — sub-model complexity: forward FLOPs of one sample and parameters "
                 f"(profiles: {_profiles_text(ours)})",
                 [f"Ours: torch.utils.flop_counter on one sample at the record's width (a scaled-down width is "
                  f"much smaller than the paper's full network); the critic's share in parentheses. Rows with "
                  f"profile `architecture` count the paper's network at full width on the paper's input "
                  f"(split by the paper rule) without any run: their parameters sit beside the paper's. "
                  f"{P.NOTES['VIII']}"],
                 md_cols, csv_cols, rows)


# ---------------------------------------------------------------------------------------------------
# Training time (Fig. 5), communication share, pipelined BP (Fig. 7)


def train_time(rec: dict) -> float | None:
    f = rec["final"]
    if f.get("train_time_s") is not None:
        return f["train_time_s"]
    t = rec.get("curves", {}).get("train_time_s") or []
    return t[-1] if t else None


def critical_path_share(rec: dict) -> float | None:
    """Simulated parallel time / serial time for LCT from the split's forward FLOPs: the slowest group
    (with its critic) over all groups. 1 for bp (nothing overlaps); None where the model cannot say."""
    method = rec["config"]["method"]
    if method == "bp" or rec["config"]["groups"] == 1:
        return 1.0
    if method != "lct":
        return None
    gs = rec.get("split", {}).get("groups") or []
    costs = [g["flops"] + g.get("head_flops", 0) for g in gs]
    return max(costs) / sum(costs) if costs and sum(costs) else None


def _beside(groups: dict[Key, Group], g: Group, method: str, k: int) -> list[Group]:
    """Groups of `method` with K = k run like g: same data, model, profile and setting, no method options."""
    return [h for h in groups.values() if (h.data, h.model, h.method, h.groups, h.profile, h.setting, h.options)
            == (g.data, g.model, method, k, g.profile, g.setting, "")]


def _bp_of(groups: dict[Key, Group], g: Group) -> Group | None:
    """BP on one worker beside g: the same executor (for distributed runs, any schedule of one worker)."""
    found = _beside(groups, g, "bp", 1)
    same = [h for h in found if h.executor == g.executor]
    if same or not is_parallel(g.executor):
        return same[0] if same else None
    others = [h for h in found if is_parallel(h.executor) and h.values(train_time)]
    return others[0] if others else None


def _lct_beside(groups: dict[Key, Group], g: Group) -> Group | None:
    """LCT with g's K on the distributed executor, pipelined schedule first (Fig. 7)."""
    found = [h for h in _beside(groups, g, "lct", g.groups) if is_parallel(h.executor) and h.values(train_time)]
    found.sort(key=lambda h: (h.executor != "parallel (pipelined)", h.executor))
    return found[0] if found else None


def median_step_s(rec: dict) -> float | None:
    """Median over evaluation intervals of the mean step time: robust to bursts of load from other
    processes on a shared machine (the total time is not)."""
    st = sorted((rec.get("curves") or {}).get("step_time_s") or [])
    if not st:
        return None
    mid = len(st) // 2
    return st[mid] if len(st) % 2 else (st[mid - 1] + st[mid]) / 2


def table_time(groups) -> Table:
    md_cols = ["data", "model", "method", "K", "profile", "setting", "time", "seeds", "steps", "train time (s)",
               "ms/step (median interval)", "reduction vs BP: total time", "reduction vs BP: median step",
               "reduction vs BP: est. parallel (FLOPs)", "paper reduction", "status"]
    csv_cols = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "steps",
                "train_time_mean_s", "train_time_std_s", "median_step_ms", "reduction_pct", "median_reduction_pct",
                "est_parallel_reduction_pct", "paper_reduction_pct", "status", "setting"]
    rows = []
    keys = set()
    for g in groups.values():
        if not g.values(train_time):
            continue
        keys.add((paper_data(g.data), g.model, g.method, g.groups))
        t = g.values(train_time)
        tm, ts = mean_std(t)
        med = mean_std(g.values(median_step_s))[0]
        bp = _bp_of(groups, g)
        red = red_med = est = None
        if bp is not None and bp.values(train_time):
            red = 100 * (1 - tm / mean_std(bp.values(train_time))[0])
            bp_med = mean_std(bp.values(median_step_s))[0]
            if med is not None and bp_med:
                red_med = 100 * (1 - med / bp_med)
                share = mean_std(g.values(critical_path_share))[0]
                if g.executor == "simulated" and share is not None:
                    est = 100 * (1 - med * share / bp_med)
        pv = P.paper_value("time", paper_data(g.data), g.model, g.method, g.groups, "reduction")
        ref = g.method == "bp" and g.groups == 1

        def pct(v):
            return "reference" if ref else ("-" if v is None else f"{v:.1f}%")

        rows.append(([g.data, g.model, _label(g.method, g.groups), str(g.groups), g.profile, g.setting, g.executor,
                      g.seeds_text, g.steps, fmt_ours(t, 1), fmt(None if med is None else 1000 * med, 1),
                      pct(red), pct(red_med), pct(est), "—" if pv is None else f"paper: {pv:.1f}%", g.status],
                     ["time", g.data, g.model, g.method, g.groups, g.profile, g.executor, " ".join(map(str, g.seeds)),
                      g.steps, tm, ts, None if med is None else 1000 * med, red, red_med, est, pv, g.status,
                      g.setting]))
    for d, m, meth, k, metric in P.cells("time"):
        if (d, m, meth, k) not in keys:
            pv = P.paper_value("time", d, m, meth, k, metric)
            rows.append(([d, m, _label(meth, k), str(k), "-", "-", "-", "-", "-", MISSING, "-", MISSING, MISSING, "-",
                          f"paper: {pv:.1f}%", "no record"],
                         ["time", d, m, meth, k, "", "", "", "", None, None, None, None, None, None, pv, MISSING, ""]))
    rows.sort(key=lambda r: (_rank(DATA_ORDER, r[1][1]), _rank(MODEL_ORDER, r[1][2]), _rank(PROFILE_ORDER, r[1][5]),
                             _rank(EXECUTOR_ORDER, r[1][6]), _rank(METHOD_ORDER, r[1][3]), r[1][4]))
    return Table("fig5_training_time",
                 f"Training time (Fig. 5) — reduction of training wall-clock vs BP "
                 f"(profiles: {_profiles_text(g for g in groups.values() if g.values(train_time))})",
                 ["Only the training step is timed (evaluation apart). *simulated* rows come from the in-process "
                  "executor, which runs the groups one after another on one device: their measured time cannot "
                  "show a parallel speed-up (LCT does more work than BP). `median step` compares the median over "
                  "evaluation intervals of the mean step time, which a burst of load from other processes on a "
                  "shared machine does not move (the total does). `est. parallel (FLOPs)` scales LCT's median "
                  "step by the slowest group's share of forward FLOPs (group + critic): the time if every group "
                  "ran on its own device with no communication, an estimate, not a measurement. *parallel* rows "
                  "come from the distributed executor (one worker per group); their reduction is against BP on "
                  "one worker of the same executor. Positive = faster than BP."],
                 md_cols, csv_cols, rows)


def _comm(rec: dict) -> float | None:
    ws = rec.get("workers") or []
    shares = [w["comm_share"] for w in ws if w.get("comm_share") is not None]
    return 100 * max(shares) if shares else None


def _comm_mean(rec: dict) -> float | None:
    ws = rec.get("workers") or []
    shares = [w["comm_share"] for w in ws if w.get("comm_share") is not None]
    return 100 * sum(shares) / len(shares) if shares else None


def _bytes_per_step(rec: dict) -> float | None:
    ws = rec.get("workers") or []
    steps = rec["final"].get("steps") or rec["config"].get("steps")
    b = [w.get("bytes_sent") for w in ws if w.get("bytes_sent") is not None]
    return sum(b) / steps if b and steps else None


def _paper_style_comm(rec: dict) -> float | None:
    ws = rec.get("workers") or []
    shares = [w["paper_comm_share"] for w in ws if w.get("paper_comm_share") is not None]
    return 100 * sum(shares) / len(shares) if shares else None


def table_comm(groups) -> Table:
    md_cols = ["data", "model", "method", "K", "profile", "setting", "time", "seeds", "comm share, mean over workers",
               "comm share, busiest worker", "the paper's estimate (timed transfers), mean",
               "bytes sent / step (all workers)", "paper", "status"]
    csv_cols = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "comm_share_mean_pct",
                "comm_share_max_pct", "paper_style_estimate_pct", "bytes_sent_per_step", "paper_pct", "status",
                "setting"]
    rows, keys = [], set()
    for g in groups.values():
        vals = g.values(_comm_mean)
        if not vals:
            continue
        keys.add((paper_data(g.data), g.model, g.method, g.groups))
        mx, by, est = g.values(_comm), g.values(_bytes_per_step), g.values(_paper_style_comm)
        pv = P.paper_value("comm", paper_data(g.data), g.model, g.method, g.groups, "comm_share")
        rows.append(([g.data, g.model, _label(g.method, g.groups), str(g.groups), g.profile, g.setting, g.executor,
                      g.seeds_text, f"{fmt_ours(vals)}%", f"{fmt_ours(mx)}%",
                      f"{fmt_ours(est)}%" if est else "-", fmt_ours(by, 0),
                      "—" if pv is None else f"paper: {pv:.2f}%", g.status],
                     ["comm", g.data, g.model, g.method, g.groups, g.profile, g.executor, " ".join(map(str, g.seeds)),
                      mean_std(vals)[0], mean_std(mx)[0], mean_std(est)[0], mean_std(by)[0], pv, g.status,
                      g.setting]))
    for d, m, meth, k, metric in P.cells("comm"):
        if (d, m, meth, k) not in keys:
            pv = P.paper_value("comm", d, m, meth, k, metric)
            rows.append(([d, m, _label(meth, k), str(k), "-", "-", "-", "-", MISSING, MISSING, "-", "-",
                          f"paper: {pv:.2f}%", "no distributed record"],
                         ["comm", d, m, meth, k, "", "", "", None, None, None, None, pv, MISSING, ""]))
    rows.sort(key=lambda r: (_rank(DATA_ORDER, r[1][1]), _rank(MODEL_ORDER, r[1][2]), _rank(METHOD_ORDER, r[1][3]),
                             r[1][4], _rank(PROFILE_ORDER, r[1][5])))
    return Table("communication",
                 f"Communication share of training time (%) (profiles: {_profiles_text(g for g in groups.values() if g.values(_comm_mean))})",
                 [f"Ours: time each worker is blocked sending or receiving over its training time, from distributed "
                  f"records only. {P.NOTES['comm']}"], md_cols, csv_cols, rows)


def table_fig7(groups) -> Table:
    md_cols = ["data", "model", "K", "profile", "setting", "time (pipelined BP)", "time (LCT)", "pipelined BP / BP",
               "LCT / BP", "LCT faster than pipelined BP", "paper", "status"]
    csv_cols = ["table", "data", "model", "groups", "profile", "executor", "lct_executor", "gpipe_over_bp",
                "lct_over_bp", "lct_faster_pct", "paper_pct", "status", "setting"]
    rows, keys = [], set()
    for g in groups.values():
        if g.method != "gpipe" or not g.values(train_time):
            continue
        bp = _bp_of(groups, g)
        lct = _lct_beside(groups, g)
        tg = mean_std(g.values(train_time))[0]
        tb = mean_std(bp.values(train_time))[0] if bp and bp.values(train_time) else None
        tl = mean_std(lct.values(train_time))[0] if lct and lct.values(train_time) else None
        keys.add((paper_data(g.data), g.model, g.groups))
        faster = None if tl is None else 100 * (1 - tl / tg)
        pv = P.paper_value("fig7", paper_data(g.data), g.model, "lct", g.groups, "faster_than_gpipe")
        lex = lct.executor if lct is not None else "-"
        rows.append(([g.data, g.model, str(g.groups), g.profile, g.setting, g.executor, lex,
                      fmt(None if tb is None else tg / tb, 3), fmt(None if tb is None or tl is None else tl / tb, 3),
                      "-" if faster is None else f"{faster:.1f}%", "—" if pv is None else f"paper: {pv:.1f}%",
                      "completed" if tl is not None and tb is not None else "lct or bp record missing"],
                     ["fig7", g.data, g.model, g.groups, g.profile, g.executor, lex,
                      None if tb is None else tg / tb, None if tb is None or tl is None else tl / tb, faster, pv,
                      "completed" if tl is not None and tb is not None else MISSING, g.setting]))
    for d, m, meth, k, metric in P.cells("fig7"):
        if (d, m, k) not in keys:
            pv = P.paper_value("fig7", d, m, meth, k, metric)
            rows.append(([d, m, str(k), "-", "-", "-", "-", MISSING, MISSING, MISSING, f"paper: {pv:.1f}%",
                          "no gpipe record"],
                         ["fig7", d, m, k, "", "", "", None, None, None, pv, MISSING, ""]))
    rows.sort(key=lambda r: (_rank(DATA_ORDER, r[1][1]), _rank(MODEL_ORDER, r[1][2]), r[1][3],
                             _rank(PROFILE_ORDER, r[1][4]), _rank(EXECUTOR_ORDER, r[1][5])))
    return Table("fig7_pipelined_bp",
                 f"Fig. 7 — pipelined BP (GPipe, K workers) vs LCT with K groups, time normalised by BP "
                 f"(profiles: {_profiles_text(g for g in groups.values() if g.method == 'gpipe')})",
                 ["Needs distributed records of gpipe, lct and bp at the same profile and setting; the paper's "
                  "pipelined BP was a separate PyTorch implementation, normalised by its own BP."],
                 md_cols, csv_cols, rows)


# ---------------------------------------------------------------------------------------------------
# Assumption 1


def assumption1_minima(rec: dict) -> list[dict]:
    """Per group: minimum mu_k and cosine over training, the last values, and where the minimum fell."""
    a1 = rec.get("assumption1") or {}
    steps, mus, coss = a1.get("step") or [], a1.get("mu") or [], a1.get("cos") or []
    if not mus:
        return []
    k = len(mus[0])
    out = []
    for j in range(k):
        mu = [m[j] for m in mus]
        cs = [c[j] for c in coss] if coss else []
        i = min(range(len(mu)), key=lambda t: mu[t])
        out.append({"group": j + 1, "min_mu": mu[i], "min_mu_step": steps[i] if i < len(steps) else None,
                    "min_cos": min(cs) if cs else None, "last_mu": mu[-1], "last_cos": cs[-1] if cs else None,
                    "n": len(mu)})
    return out


def table_assumption1(groups) -> Table:
    md_cols = ["data", "model", "method", "K", "profile", "setting", "time", "seeds", "group", "min mu_k (step)",
               "min cos", "last mu_k", "last cos", "mu_k > 0 throughout"]
    csv_cols = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "group", "min_mu",
                "min_mu_step", "min_cos", "last_mu", "last_cos", "holds", "setting"]
    rows = []
    for g in groups.values():
        per_seed = [(r["config"]["seed"], assumption1_minima(r)) for r in g.completed]
        per_seed = [(s, m) for s, m in per_seed if m]
        if not per_seed:
            continue
        for j in range(len(per_seed[0][1])):
            ms = [m[j] for _, m in per_seed if j < len(m)]
            worst = min(ms, key=lambda x: x["min_mu"])
            min_cos = min((x["min_cos"] for x in ms if x["min_cos"] is not None), default=None)
            last_mu = mean_std([x["last_mu"] for x in ms])[0]
            last_cos = mean_std([x["last_cos"] for x in ms if x["last_cos"] is not None])[0]
            holds = worst["min_mu"] > 0
            seeds = ",".join(str(s) for s, _ in per_seed)
            rows.append(([g.data, g.model, _label(g.method, g.groups), str(g.groups), g.profile, g.setting, g.executor,
                          seeds,
                          str(j + 1) + (" (backprop)" if j + 1 == g.groups else ""),
                          f"{worst['min_mu']:.4f} ({worst['min_mu_step']})", fmt(min_cos, 4), fmt(last_mu, 4),
                          fmt(last_cos, 4), "yes" if holds else "**no**"],
                         ["assumption1", g.data, g.model, g.method, g.groups, g.profile, g.executor,
                          seeds.replace(",", " "), j + 1, worst["min_mu"], worst["min_mu_step"], min_cos, last_mu,
                          last_cos, "yes" if holds else "no", g.setting]))
    return Table("assumption1",
                 f"Assumption 1 (Figs. 3, 4) — mu_k = <G_k, g_k>/||G_k||² and cos(G_k, g_k) over training "
                 f"(profiles: {_profiles_text(g for g in groups.values() if any(assumption1_minima(r) for r in g.completed))})",
                 ["G_k: true gradient of the main loss w.r.t. group k's weights; g_k: the gradient the method "
                  "applies. The paper's condition is mu_k > 0 throughout training (it plots, not tabulates, mu_k). "
                  "Minima are over all measurements and seeds; `last` is the mean over seeds of the final value. "
                  "The last group is trained by backprop (mu = 1)."], md_cols, csv_cols, rows)


# ---------------------------------------------------------------------------------------------------
# At-a-glance matrix (Table I layout) and the whole report


MATRIX_COLUMNS = [("bp", 1), ("dni", 2), ("dni", 3), ("dni", 4), ("lct", 2), ("lct", 3), ("lct", 4), ("joint", 4)]


def matrix(groups) -> str:
    """Table I's layout: one line per (data, model, profile, time, setting) of ours and the paper's rows."""
    lines = ["## Table I/IV at a glance (test accuracy %)", "",
             "Ours: top-1, each row naming its profile, seeds, executor and setting; the paper's rows are its "
             "CIFAR/ImageNet numbers, ImageNet as top-1/top-5 (`joint` is Table IV). A scaled-down profile on other "
             "data is not a reproduction of them.", "",
             "| data | model | source | setting | " + " | ".join(_label(m, k) for m, k in MATRIX_COLUMNS) + " |",
             "|" + "---|" * (4 + len(MATRIX_COLUMNS))]
    acc = [g for g in groups.values() if g.model in ("resnet50", "resnet101") and not g.options
           and g.values(lambda r: r["final"].get("test_acc"))]
    rowkeys = sorted({(g.data, g.model, g.profile, g.executor, g.setting) for g in acc},
                     key=lambda k: (_rank(DATA_ORDER, k[0]), _rank(MODEL_ORDER, k[1]), _rank(PROFILE_ORDER, k[2]),
                                    _rank(EXECUTOR_ORDER, k[3]), k[4]))
    for row in rowkeys:
        cells, ns = [], set()
        for meth, k in MATRIX_COLUMNS:
            g = next((g for g in acc if (g.data, g.model, g.profile, g.executor, g.setting) == row
                      and (g.method, g.groups) == (meth, k)), None)
            vals = g.values(lambda r: r["final"].get("test_acc")) if g else []
            cells.append(fmt_ours(vals) if vals else MISSING)
            if vals:
                ns.add(len(vals))
        if not ns:  # none of Table I's methods in this setting (e.g. only gpipe)
            continue
        n_txt = seeds_text(min(ns)) if len(ns) == 1 else f"{'/'.join(map(str, sorted(ns)))} seeds"
        d, m, prof, ex, setting = row
        lines.append(f"| {d} | {m} | ours ({prof}, {n_txt}, {ex}) | {setting} | " + " | ".join(cells) + " |")
    for d in ("cifar10", "cifar100", "imagenet"):
        for m in ("resnet50", "resnet101"):
            cells = []
            for meth, k in MATRIX_COLUMNS:
                t = "IV" if meth == "joint" else "I"
                v = P.paper_value(t, d, m, meth, k)
                v5 = P.paper_value(t, d, m, meth, k, "top5")
                cells.append("—" if v is None else (_num(v) + (f"/{_num(v5)}" if v5 is not None else "")))
            lines.append(f"| {d} | {m} | paper | Section V | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_tables(groups: dict[Key, Group]) -> list[Table]:
    from .report_lstm import tables as lstm_tables

    return [table_I(groups), table_II(groups), table_III(groups), table_IV(groups), table_VI(groups),
            table_VII(groups), table_VIII(groups)] + lstm_tables(groups) + [
            table_time(groups), table_comm(groups), table_fig7(groups), table_assumption1(groups)] + \
        _related_tables(groups)


def _related_tables(groups: dict[Key, Group]) -> list[Table]:
    """Hook: the related-work methods' table (bench/report_related.py), when any of them has a record."""
    from .report_related import RELATED, table_related

    return [table_related(groups)] if any(g.method in RELATED for g in groups.values()) else []


def _sources(records: list[dict]) -> list[str]:
    out = []
    for (prof, data), n in sorted(_count(records).items(), key=lambda kv: (_rank(PROFILE_ORDER, kv[0][0]),
                                                                           _rank(DATA_ORDER, kv[0][1]))):
        out.append(f"- profile `{prof}`, data `{data}` ({DATA_NAMES.get(data, data)}): {n} record(s)")
    return out


def _count(records):
    c: dict = {}
    for r in records:
        k = (r["config"]["profile"], r["config"]["data"])
        c[k] = c.get(k, 0) + 1
    return c


def _rel(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def render(records: list[dict], base: Path | None = None, figures: list[str] | None = None) -> dict[str, str]:
    """File name -> text, for every table (.md and .csv) and REPORT.md. Pure: same records, same text."""
    base = Path(base or ".")
    groups = group_records(records)
    tables = build_tables(groups)
    files: dict[str, str] = {}
    header = ["<!-- generated by `python -m bench report` (nox -s tables) from run records; do not edit -->", ""]
    for t in tables:
        files[f"{t.name}.md"] = "\n".join(header) + "\n" + t.markdown()
        files[f"{t.name}.csv"] = t.csv()
    report = header + ["# Local Critic Training — the paper's tables beside ours", "",
                       "Every number of ours comes from a run record listed below; `missing` means no completed "
                       "record. Profiles other than `paper` are scaled down and are not reproductions.", "",
                       "Records:"] + _sources(records) + [""]
    report.append("Record files: " + ", ".join(f"`{p}`" for p in sorted(_rel(r["_path"], base) for r in records))
                  if records
                  else "Record files: none")
    report.append("")
    report.append(matrix(groups))
    for t in tables:
        report.append(t.markdown())
        report.append(f"(CSV: `results/{t.name}.csv`)\n")
    if figures:
        report.append("## Figures\n")
        report += [f"- `{f}`" for f in figures]
        report.append("")
    files["REPORT.md"] = "\n".join(report)
    return files


def write_tables(records: list[dict], out: Path, base: Path | None = None, figures: list[str] | None = None) -> list[Path]:
    out = Path(out)
    written = []
    for name, text in render(records, base, figures).items():
        path = out / name
        if not path.exists() or path.read_text() != text:  # leave identical files untouched
            atomic_write_text(path, text)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------
# check-assumption1


def check_assumption1(paths: list[Path], from_step: int = 0, out=None) -> int:
    """Print per group the minimum mu_k and cosine over training; 1 if any mu_k <= 0, else 0."""
    import sys

    out = out or sys.stdout
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise BenchError(f"no such record: {', '.join(map(str, missing))}")
    records = [r for p in paths for r in load_records([p])]  # in the order given
    if not records:
        raise BenchError(f"no run records in {', '.join(map(str, paths))}")
    failed = 0
    for r in records:
        a1 = r.get("assumption1") or {}
        steps = a1.get("step") or []
        keep = [i for i, s in enumerate(steps) if s >= from_step]
        sub = {"step": [steps[i] for i in keep], "mu": [a1["mu"][i] for i in keep],
               "cos": [a1["cos"][i] for i in keep] if a1.get("cos") else []}
        ms = assumption1_minima({"assumption1": sub})
        print(f"{r.get('run_id') or Path(r['_path']).stem} ({r['_path']}; status {r['status']})", file=out)
        if not ms:
            print("  no Assumption-1 measurements (the method applies the true gradient, or none were taken)",
                  file=out)
            continue
        print(f"  {'group':>5}  {'min mu_k':>10}  {'at step':>7}  {'min cos':>8}  {'last mu_k':>10}  condition", file=out)
        for m in ms:
            ok = m["min_mu"] > 0
            failed += not ok
            print(f"  {m['group']:>5}  {m['min_mu']:>10.4f}  {m['min_mu_step']!s:>7}  "
                  f"{fmt(m['min_cos'], 4):>8}  {m['last_mu']:>10.4f}  {'mu_k > 0: ok' if ok else 'FAILS (mu_k <= 0)'}",
                  file=out)
    if failed:
        print(f"Assumption 1 fails for {failed} group(s) (mu_k <= 0 at some measurement"
              f"{f' from step {from_step}' if from_step else ''}).", file=out)
        return 1
    print("Assumption 1 holds (mu_k > 0) for every measured group.", file=out)
    return 0
