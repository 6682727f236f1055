"""The local-learning peers on their own networks: DGL's and InfoPro's CIFAR-10 test errors on ResNet-32/110
(InfoPro's Table 2) beside ours, and InfoPro's GPU memory on ResNet-110 (its Table 3) beside our per-worker
memory. The papers' numbers are paper.py's LOCAL_LEARNING and INFOPRO_MEMORY_GB; `nox -s local_learning`
runs the grid. A paper cell without a completed record is `missing`; a cell of ours the papers do not have
(LCT, DNI, K = 8 memory, ...) is a row with paper `—`.
"""
from __future__ import annotations

import pandas as pd

from . import paper as P
from .frame import (DATA_ORDER, MISSING, PROFILE_ORDER, Cell, fmt_ours, label, mean_std, method_rank, num, paper_data,
                    profiles_text, rank, seeds_text, sort_key, table)
from .resources import worker_memory

MODELS = ("resnet32", "resnet110")
METHODS = ("bp", "greedy", "infopro", "lct", "dni")
# (method, options) -> the name the papers give it
NAMES = {("bp", ""): "E2E (BP)", ("greedy", "head=dgl"): "DGL (greedy, head=dgl)",
         ("infopro", ""): "InfoPro (Contrast)", ("infopro", "loss=softmax"): "InfoPro (Softmax)"}
MEMORY_NAMES = {"bp": "E2E (BP)", "infopro": "InfoPro (paper: InfoPro*, memory-balanced cuts)"}
KEYS = ["data", "model", "method", "options", "groups"]


def name_of(method: str, options: str, groups: int) -> str:
    return NAMES.get((method, options)) or label(method, groups) + (f" [{options}]" if options else "")


def error_of(rec: dict) -> float | None:
    acc = rec["final"].get("test_acc")
    return None if acc is None else 100.0 - acc


def _order(r) -> tuple:
    cell = None if pd.isna(r.cell) else r.cell
    return (rank(DATA_ORDER, r.data), rank(MODELS, r.model), method_rank(r.method), r.options, r.groups,
            () if cell is None else sort_key(cell))


ERR_MD = ["data", "model", "method", "K", "metric", "paper", "ours", "diff (ours − paper)", "profile", "seeds",
          "time", "steps", "status"]
ERR_CSV = ["table", "data", "model", "method", "options", "groups", "metric", "paper", "paper_std", "ours_mean",
           "ours_std", "n", "diff", "profile", "seeds", "executor", "setting", "steps", "status"]


def _error_row(r) -> tuple[list, list]:
    pv, ps = (None, None) if pd.isna(r.paper) else (r.paper, r.paper_std)
    ptxt = "—" if pv is None else f"paper: {num(pv)} ± {num(ps)}"
    head = [r.data, r.model, name_of(r.method, r.options, r.groups), str(r.groups), "test error (%)", ptxt]
    if pd.isna(r.cell):
        return (head + [MISSING, "-", "-", "-", "-", "-", "no record"],
                ["local", r.data, r.model, r.method, r.options, r.groups, "error", pv, ps, None, None, 0, None,
                 "", "", "", "", "", MISSING])
    c: Cell = r.cell
    vals = c.values(error_of)
    m, s = mean_std(vals)
    diff = None if m is None or pv is None else m - pv
    ours = f"ours ({c.profile}, {seeds_text(len(vals))}): {fmt_ours(vals)}" if vals else MISSING
    return (head + [ours, "-" if diff is None else f"{diff:+.2f}", c.profile, c.seeds_text, c.executor, c.steps,
                    c.status],
            ["local", c.data, r.model, r.method, r.options, r.groups, "error", pv, ps, m, s if vals else None,
             len(vals), diff, c.profile, " ".join(map(str, c.seeds)), c.executor, c.setting, c.steps, c.status])


def _paper_errors() -> pd.DataFrame:
    rows = [("cifar10", model, method, options, k, v, sd) for (model, method, options, k), (v, sd)
            in sorted(P.LOCAL_LEARNING.items())]
    return pd.DataFrame(rows, columns=KEYS + ["paper", "paper_std"], dtype=object)


def table_errors(cells: list[Cell]):
    ours = [c for c in cells if c.model in MODELS and c.method in METHODS and (not c.runs or c.has_accuracy)]
    mine = pd.DataFrame([(paper_data(c.data), c.model, c.method, c.options, c.groups, c) for c in ours],
                        columns=KEYS + ["cell"], dtype=object)
    rows = _paper_errors().merge(mine, on=KEYS, how="outer")
    notes = [("InfoPro's Table 2 (Wang et al., ICLR 2021; 5 trials each, mean ± std), CIFAR-10. DGL is `greedy "
             "--option head=dgl` (DGL's MLP-SR auxiliary net), InfoPro (Contrast) is `infopro` (its default "
             "loss), InfoPro (Softmax) `infopro --option loss=softmax`; both on the authors' cuts and weights. "
             "LCT and DNI are ours on the same networks and cuts, without a paper value. Ours: 100 − final test "
             "accuracy, mean ± sample std over completed seeds at the profile named; `cpu` and `smoke` are scaled "
             "down (width, steps), never a reproduction. The papers trained 160 epochs at batch 1024 (lr 0.8, "
             "cosine); `time`: *simulated* = in-process executor. `missing` = no completed record.")]
    return table("local_learning", f"DGL and InfoPro on ResNet-32/110 (CIFAR-10 test error, %) beside ours "
                 f"(profiles: {profiles_text(ours)})", notes,
                 ERR_MD, ERR_CSV, [_error_row(r) for r in sorted(rows.itertuples(), key=_order)])


MEM_MD = ["data", "model", "method", "K", "batch", "paper (GB)", "ours, busiest worker (GB)", "measure", "diff",
          "profile", "setting", "seeds", "time", "status"]
MEM_CSV = ["table", "data", "model", "method", "groups", "paper_gb", "ours_mean_gb", "ours_std_gb", "n", "measure",
           "diff", "profile", "setting", "seeds", "executor", "status"]


def busiest_worker_mb(rec: dict) -> tuple[float | None, str]:
    """The largest per-worker memory of a distributed record (MB) and what measured it."""
    found = [worker_memory(w) for w in rec.get("workers") or []]
    found = [f for f in found if f[0] is not None]
    return max(found) if found else (None, "-")


def _memory_row(r) -> tuple[list, list]:
    pv = None if pd.isna(r.paper) else r.paper
    ptxt = "—" if pv is None else f"paper: {pv:.2f}"
    head = ["cifar10", "resnet110", MEMORY_NAMES[r.method], str(r.groups)]
    if pd.isna(r.cell):
        return (head + [str(P.INFOPRO_MEMORY_BATCH), ptxt, MISSING, "-", "-", "-", "-", "-", "-", "no distributed record"],
                ["local_memory", "cifar10", "resnet110", r.method, r.groups, pv, None, None, 0, "", None, "", "", "",
                 "", MISSING])
    c: Cell = r.cell
    measured = [busiest_worker_mb(rec) for rec in c.runs]
    measure = ",".join(sorted({m for v, m in measured if v is not None})) or "-"
    gpu = measure.startswith("GPU")  # a CPU's RSS is not GPU memory: shown, never compared
    vals = [v / 1024 if gpu else v for v, _ in measured if v is not None]
    mean, std = mean_std(vals)
    batch = c.records[0]["config"].get("batch_size")
    diff = mean - pv if gpu and mean is not None and pv is not None and batch == P.INFOPRO_MEMORY_BATCH else None
    unit = "GB" if gpu else "MB, CPU peak RSS: not compared"
    ours = f"ours ({c.profile}, {seeds_text(len(vals))}): {fmt_ours(vals)} {unit}" if vals else MISSING
    return (head + [str(batch), ptxt, ours, measure, "-" if diff is None else f"{diff:+.2f}", c.profile, c.setting,
                    c.seeds_text, c.executor, c.status],
            ["local_memory", c.data, c.model, r.method, r.groups, pv, mean if gpu else None, std if gpu else None,
             len(vals), measure, diff, c.profile, c.setting, " ".join(map(str, c.seeds)), c.executor, c.status])


def table_memory(cells: list[Cell]):
    ours = [c for c in cells if paper_data(c.data) == "cifar10" and c.model == "resnet110"
            and c.method in ("bp", "infopro") and not c.options and any(r.get("workers") for r in c.runs)]
    paper = pd.DataFrame([(m, k, v) for (m, k), v in sorted(P.INFOPRO_MEMORY_GB.items())],
                         columns=["method", "groups", "paper"], dtype=object)
    mine = pd.DataFrame([(c.method, c.groups, c) for c in ours], columns=["method", "groups", "cell"], dtype=object)
    rows = paper.merge(mine, on=["method", "groups"], how="outer")
    order = lambda r: (method_rank(r.method), r.groups, () if pd.isna(r.cell) else
                       (rank(PROFILE_ORDER, r.cell.profile), sort_key(r.cell)))
    notes = [(f"InfoPro's Table 3: the GPU memory needed to train ResNet-110 on CIFAR-10 at batch "
             f"{P.INFOPRO_MEMORY_BATCH} on one GPU, end to end and with InfoPro* (memory-balanced cuts; ours cut "
             f"where the authors' InfoPro config does). Their InfoPro runs its local modules one after another on "
             f"that GPU, so its peak is about the largest module's; ours is the busiest worker of a distributed run "
             f"(one group per GPU; NVML's reading of the worker, else torch's peak), from distributed records only. "
             f"Only GPU readings are compared, and only at the paper's batch; a CPU run's peak RSS is shown, never "
             "compared.")]
    return table("local_learning_memory", f"InfoPro's GPU memory (ResNet-110, CIFAR-10) beside our per-worker memory "
                 f"(profiles: {profiles_text(ours)})",
                 notes, MEM_MD, MEM_CSV, [_memory_row(r) for r in sorted(rows.itertuples(), key=order)])


def tables(cells: list[Cell]) -> list:
    return [table_errors(cells), table_memory(cells)]
