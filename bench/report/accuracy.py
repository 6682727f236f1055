"""Accuracy tables: I (ResNet-50/101), II (ResNet-182), III (MLP), IV (joint exits), VII (sub-models), and
Table I's layout at a glance. Every paper cell is a row (`missing` where no completed record has it);
every cell of ours that belongs to the table is a row (paper `—` where the paper has no such number).
"""
from __future__ import annotations

from typing import Callable

import pandas as pd

from . import paper as P
from .frame import (DATA_ORDER, EXECUTOR_ORDER, MISSING, MODEL_ORDER, PROFILE_ORDER, Cell, fmt_ours, label,
                    mean_std, method_rank, num, paper_data, profiles_text, rank, seeds_text, sort_key, table)


def metric_value(rec: dict, metric: str) -> float | None:
    f = rec["final"]
    if metric in ("top1", "main"):
        return f.get("test_acc")
    if metric in ("top5", "main_top5"):
        return f.get("test_top5")
    i = int(metric[3:].split("_")[0]) - 1  # sub1, sub2_top5, ...
    subs = f.get("sub_top5") if metric.endswith("_top5") else f.get("sub_acc")
    return subs[i] if subs and i < len(subs) else None


def _curve_key(metric: str) -> tuple[str, int | None]:
    """Where a metric's values over training are in a record's curves: (key, index within a list or None)."""
    top5 = metric.endswith("_top5")
    if metric.startswith("sub"):
        return ("sub_top5" if top5 else "sub_acc"), int(metric[3:].split("_")[0]) - 1
    return ("test_top5" if top5 else "test_acc"), None


def best_value(rec: dict, metric: str) -> float | None:
    """The best value of a metric seen at any evaluation during training (the authors report this one)."""
    key, i = _curve_key(metric)
    values = [v if i is None else (v[i] if v and i < len(v) else None) for v in rec["curves"].get(key) or []]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def mode_share(rec: dict, metric: str) -> float | None:
    """For a sub-model: the share of its most predicted class at the final evaluation (1.0: collapsed)."""
    key, i = _curve_key(metric)
    shares = rec["final"].get("sub_mode_share") or []
    return shares[i] if key == "sub_acc" and i < len(shares) else None


COLLAPSED = 0.95  # a head that gives one class for this share of the test set has collapsed


METRIC_LABEL = {"top1": "acc (%)", "top5": "top-5 (%)", "main": "Main (%)", "main_top5": "Main top-5 (%)"}


def metric_label(metric: str) -> str:
    if metric in METRIC_LABEL:
        return METRIC_LABEL[metric]
    i = metric[3:].split("_")[0]
    return f"Sub_{i} top-5 (%)" if metric.endswith("_top5") else f"Sub_{i} (%)"


def metric_rank(metric: str) -> tuple:
    if metric in ("top1", "top5"):
        return (0, ("top1", "top5").index(metric), "")
    if metric.startswith("sub"):
        return (1, int(metric[3:].split("_")[0]), metric)
    return (2, 0, metric)


MD = ["data", "model", "method", "K", "metric", "paper", "ours", "diff (ours − paper)", "ours, best during training",
      "profile", "seeds", "time", "steps", "status"]
CSV = ["table", "data", "model", "method", "groups", "metric", "paper", "ours_mean", "ours_std", "n",
       "diff", "profile", "seeds", "executor", "steps", "status", "ours_best_mean", "mode_share"]
CELL = ["pdata", "model", "method", "groups", "metric"]


def _ours(cells: list[Cell], metrics: Callable[[Cell], list[str]]) -> pd.DataFrame:
    rows = [(paper_data(c.data), c.model, c.method, c.groups, m, c) for c in cells for m in metrics(c)]
    return pd.DataFrame(rows, columns=CELL + ["cell"])


def _row(table_name: str, r) -> tuple[list, list]:
    pv = None if pd.isna(r.paper) else r.paper
    ptxt = "—" if pv is None else num(pv)
    c: Cell | None = None if pd.isna(r.cell) else r.cell
    if c is None:
        return ([r.pdata, r.model, label(r.method, r.groups), str(r.groups), metric_label(r.metric), f"paper: {ptxt}",
                 MISSING, "-", "-", "-", "-", "-", "-", "no record"],
                [table_name, r.pdata, r.model, r.method, r.groups, r.metric, pv, None, None, 0, None, "", "", "", "",
                 MISSING, None, None])
    vals = c.values(lambda rec: metric_value(rec, r.metric))
    best = c.values(lambda rec: best_value(rec, r.metric))
    share = c.mean(lambda rec: mode_share(rec, r.metric))
    m, s = mean_std(vals)
    diff = None if m is None or pv is None else m - pv
    ours = f"ours ({c.profile}, {seeds_text(len(vals))}): {fmt_ours(vals)}" if vals else MISSING
    if share is not None and share >= COLLAPSED:
        ours += f" (collapsed: {100 * share:.0f}% one class)"
    return ([c.data, c.model, label(c.method, c.groups), str(c.groups), metric_label(r.metric), f"paper: {ptxt}", ours,
             "-" if diff is None else f"{diff:+.2f}", fmt_ours(best) if best else "-", c.profile, c.seeds_text,
             c.executor, c.steps, c.status],
            [table_name, c.data, c.model, c.method, c.groups, r.metric, pv, m, s if vals else None, len(vals), diff,
             c.profile, " ".join(map(str, c.seeds)), c.executor, c.steps, c.status, mean_std(best)[0], share])


def cell_table(name: str, table_name: str, title: str, notes: list[str], cells: list[Cell],
               member: Callable[[Cell], bool], metrics: Callable[[Cell], list[str]]):
    """Paper cells outer-merged with ours (one row per cell of ours and metric): missing on either side."""
    ours = [c for c in cells if member(c) and (not c.runs or c.has_accuracy)]  # speed runs have no accuracy
    paper = P.frame(table_name).rename(columns={"data": "pdata"})
    rows = paper.merge(_ours(ours, metrics), on=CELL, how="outer")

    def order(r):  # a paper cell's rows at its place; a cell of ours without a paper number at its own data's
        data = r.pdata if not pd.isna(r.paper) else r.cell.data
        return (rank(DATA_ORDER, data), rank(MODEL_ORDER, r.model), method_rank(r.method), r.groups,
                metric_rank(r.metric), () if pd.isna(r.cell) else sort_key(r.cell))

    return table(name, title, notes, MD, CSV, [_row(table_name, r) for r in sorted(rows.itertuples(), key=order)])


def _top5(c: Cell) -> bool:
    """Top-5 is reported for ImageNet only (as in the paper)."""
    return paper_data(c.data) == "imagenet"


def top1_metrics(c: Cell) -> list[str]:
    return ["top1", "top5"] if _top5(c) else ["top1"]


def sub_metrics(c: Cell) -> list[str]:
    out = []
    for name in [f"sub{i}" for i in range(1, c.groups)] + ["main"]:
        out += [name, f"{name}_top5"] if _top5(c) else [name]
    return out


def _notes(cells: list[Cell], what: str) -> list[str]:
    return [f"{what} Profiles found: {profiles_text(cells)}. `paper:` is the paper's number; "
            "`ours (<profile>, n seeds)` is the mean ± sample std over completed seeds at that profile of the final "
            "evaluation; `best during training` the mean of each seed's best evaluation (what the authors' "
            "scripts report); a sub-model marked `collapsed` predicts one class for at least 95% of the test set; "
            "`smoke` and `cpu` are scaled-down runs (smaller width, fewer steps), never a reproduction. "
            "`time`: *simulated* = in-process executor, *parallel* = distributed executor. "
            "`missing` = no completed record."]


def tables(cells: list[Cell]) -> list:
    """Tables I, II, III, IV and VII."""
    def profiles(pred):
        return profiles_text(c for c in cells if pred(c))

    resnets = lambda c: c.model in ("resnet50", "resnet101")  # noqa: E731
    return [
        cell_table("table_I_accuracy", "I",
                   f"Table I — test accuracy (%), ResNet-50/101 × BP, DNI_n1..3, LCT_n1..3 (profiles: {profiles(resnets)})",
                   _notes(cells, "ImageNet rows give top-1 and top-5. Data sets the paper did not use (e.g. digits) "
                                 "have no paper value."),
                   cells, lambda c: resnets(c) and c.method in ("bp", "dni", "lct"), top1_metrics),
        cell_table("table_II_resnet182", "II",
                   f"Table II — test accuracy (%), ResNet-182 × BP, LCT_n1..3 "
                   f"(profiles: {profiles(lambda c: c.model == 'resnet182')})",
                   _notes(cells, ""), cells, lambda c: c.model == "resnet182" and c.method in ("bp", "lct"), top1_metrics),
        cell_table("table_III_mlp", "III",
                   f"Table III — test accuracy (%), 300-150-10 MLP × BP, ADMM, DNI_n1, LCT_n1 "
                   f"(profiles: {profiles(lambda c: c.model == 'mlp')})",
                   _notes(cells, "ADMM is `--method admm` (Taylor et al. 2016, the MLP only); ADMM and LCT_n1 split "
                                 "the MLP into K=2 groups."),
                   cells, lambda c: c.model == "mlp" and c.method in ("bp", "admm", "dni", "lct"), top1_metrics),
        cell_table("table_IV_joint", "IV",
                   f"Table IV — test accuracy (%), backprop with joint early-exit losses (LCT_n3 structure, K=4) "
                   f"(profiles: {profiles(lambda c: c.method == 'joint')})",
                   _notes(cells, "The paper reports K=4 only; other K of ours are listed without a paper value."),
                   cells, lambda c: c.method == "joint" and c.model != "mlp", top1_metrics),
        cell_table("table_VII_submodels", "VII",
                   f"Table VII — sub-model accuracy (%), Sub_i = groups 1..i + critic i "
                   f"(profiles: {profiles(lambda c: c.method == 'lct')})",
                   _notes(cells, "The paper reports LCT_n3 (K=4); our other K and joint's early exits are listed "
                                 "without a paper value."),
                   cells, lambda c: c.method in ("lct", "joint") and c.groups > 1 and not c.model.startswith("lstm"),
                   sub_metrics),
    ]


MATRIX_COLUMNS = [("bp", 1), ("dni", 2), ("dni", 3), ("dni", 4), ("lct", 2), ("lct", 3), ("lct", 4), ("joint", 4)]
ROW = ["data", "model", "profile", "executor", "setting"]


def matrix(cells: list[Cell]) -> str:
    """Table I's layout: one line per (data, model, profile, time, setting) of ours, then the paper's rows."""
    columns = [f"{m}:{k}" for m, k in MATRIX_COLUMNS]
    acc = pd.DataFrame([(c.data, c.model, c.profile, c.executor, c.setting, f"{c.method}:{c.groups}",
                         c.values(lambda r: r["final"].get("test_acc"))) for c in cells
                        if c.model in ("resnet50", "resnet101") and not c.options and c.has_accuracy],
                       columns=ROW + ["column", "values"])
    wide = acc[acc.column.isin(columns)].pivot(index=ROW, columns="column", values="values")
    lines = []
    for row, vals in sorted(wide.iterrows(), key=lambda kv: (rank(DATA_ORDER, kv[0][0]), rank(MODEL_ORDER, kv[0][1]),
                                                              rank(PROFILE_ORDER, kv[0][2]),
                                                              rank(EXECUTOR_ORDER, kv[0][3]), kv[0][4])):
        got = [vals.get(col) if isinstance(vals.get(col), list) else [] for col in columns]
        ns = sorted({len(v) for v in got if v})
        n_txt = seeds_text(ns[0]) if len(ns) == 1 else f"{'/'.join(map(str, ns))} seeds"
        d, m, prof, ex, setting = row
        lines.append([d, m, f"ours ({prof}, {n_txt}, {ex})", setting] + [fmt_ours(v) if v else MISSING for v in got])
    for d in ("cifar10", "cifar100", "imagenet"):
        for m in ("resnet50", "resnet101"):
            cells_ = []
            for meth, k in MATRIX_COLUMNS:
                t = "IV" if meth == "joint" else "I"
                v, v5 = P.paper_value(t, d, m, meth, k), P.paper_value(t, d, m, meth, k, "top5")
                cells_.append("—" if v is None else num(v) + (f"/{num(v5)}" if v5 is not None else ""))
            lines.append([d, m, "paper", "Section V"] + cells_)
    header = ["data", "model", "source", "setting"] + [label(m, k) for m, k in MATRIX_COLUMNS]
    md = pd.DataFrame(lines, columns=header, dtype=object).to_markdown(index=False, disable_numparse=True)
    return ("## Table I/IV at a glance (test accuracy %)\n\n"
            "Ours: top-1, each row naming its profile, seeds, executor and setting; the paper's rows are its "
            "CIFAR/ImageNet numbers, ImageNet as top-1/top-5 (`joint` is Table IV). A scaled-down profile on other "
            "data is not a reproduction of them.\n\n" + md + "\n")
