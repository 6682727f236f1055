"""Training time (Fig. 5), communication share, and pipelined BP vs LCT (Fig. 7), from run records.

A record of workers that shared GPUs (--share-gpu) is a functional run: none of its times enter these tables.
"""
from __future__ import annotations

import pandas as pd

from ..exec.settings import shared_gpu
from . import paper as P
from .frame import (DATA_ORDER, EXECUTOR_ORDER, MISSING, MODEL_ORDER, PROFILE_ORDER, Cell, fmt, fmt_ours, label,
                    mean_std, method_rank, paper_data, profiles_text, rank, table)


def train_time(rec: dict) -> float | None:
    if shared_gpu(rec):
        return None
    f = rec["final"]
    if f.get("train_time_s") is not None:
        return f["train_time_s"]
    t = rec.get("curves", {}).get("train_time_s") or []
    return t[-1] if t else None


def median_step_s(rec: dict) -> float | None:
    """Median over evaluation intervals of the mean step time: robust to bursts of load from other
    processes on a shared machine (the total time is not)."""
    st = [] if shared_gpu(rec) else (rec.get("curves") or {}).get("step_time_s") or []
    return float(pd.Series(st).median()) if st else None


def critical_path_share(rec: dict) -> float | None:
    """Simulated parallel time / serial time for LCT from the split's forward FLOPs: the slowest group
    (with its critic) over all groups. 1 for bp (nothing overlaps); None where the model cannot say."""
    method = rec["config"]["method"]
    if method == "bp" or rec["config"]["groups"] == 1:
        return 1.0
    if method != "lct":
        return None
    costs = [g["flops"] + g.get("head_flops", 0) for g in rec.get("split", {}).get("groups") or []]
    return max(costs) / sum(costs) if costs and sum(costs) else None


def beside(cells: list[Cell], c: Cell, method: str, k: int) -> list[Cell]:
    """Cells of `method` with K = k run like c: same data, model, profile and setting, no method options."""
    return [h for h in cells if (h.data, h.model, h.method, h.groups, h.profile, h.setting, h.options)
            == (c.data, c.model, method, k, c.profile, c.setting, "")]


def bp_of(cells: list[Cell], c: Cell) -> Cell | None:
    """BP on one worker beside c: the same executor (for distributed runs, any schedule of one worker)."""
    found = beside(cells, c, "bp", 1)
    same = [h for h in found if h.executor == c.executor]
    if same or not c.executor.startswith("parallel"):
        return same[0] if same else None
    others = [h for h in found if h.executor.startswith("parallel") and h.values(train_time)]
    return others[0] if others else None


def workers_of(c: Cell) -> int:
    """Worker processes of a distributed cell: K, or fewer where a pipeline schedule put several groups on each."""
    sizes = {(r["config"].get("distributed") or {}).get("world_size") for r in c.records} - {None}
    return min(sizes) if sizes else c.groups


def lct_beside(cells: list[Cell], c: Cell) -> Cell | None:
    """LCT on as many workers as c on the distributed executor, overlapped schedule first (Fig. 7)."""
    found = [h for h in beside(cells, c, "lct", workers_of(c)) if h.executor.startswith("parallel")
             and h.values(train_time)]
    found.sort(key=lambda h: (h.executor != "parallel (overlapped)", h.executor))
    return found[0] if found else None


def _sorted(rows: list, *columns: tuple) -> list:
    """Rows sorted by their CSV cells: (column index, how) pairs, `how` an order of known values, a key
    function, or None for the value itself."""
    def one(value, how):
        return value if how is None else how(value) if callable(how) else rank(how, value)

    return sorted(rows, key=lambda r: tuple(one(r[1][i], how) for i, how in columns))


def _paper_rows(table_name: str, keys: set, make) -> list:
    """A row for every paper cell of `table_name` that no record of ours gave."""
    return [make(d, m, meth, k, P.paper_value(table_name, d, m, meth, k, metric))
            for d, m, meth, k, metric in P.cells(table_name) if (d, m, meth, k) not in keys]


TIME_MD = ["data", "model", "method", "K", "profile", "setting", "time", "seeds", "steps", "train time (s)",
           "ms/step (median interval)", "reduction vs BP: total time", "reduction vs BP: median step",
           "reduction vs BP: est. parallel (FLOPs)", "paper reduction", "status"]
TIME_CSV = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "steps", "train_time_mean_s",
            "train_time_std_s", "median_step_ms", "reduction_pct", "median_reduction_pct",
            "est_parallel_reduction_pct", "paper_reduction_pct", "status", "setting"]


def _reductions(cells: list[Cell], c: Cell, tm: float, med: float | None) -> tuple:
    """Reduction of c's time vs BP's (%): total, median step, estimated parallel (in process)."""
    bp = bp_of(cells, c)
    if bp is None or not bp.values(train_time):
        return None, None, None
    red, bp_med = 100 * (1 - tm / bp.mean(train_time)), bp.mean(median_step_s)
    if med is None or not bp_med:
        return red, None, None
    share = c.mean(critical_path_share)
    est = 100 * (1 - med * share / bp_med) if c.executor == "simulated" and share is not None else None
    return red, 100 * (1 - med / bp_med), est


def _time_row(cells: list[Cell], c: Cell):
    t = c.values(train_time)
    tm, ts = mean_std(t)
    med = c.mean(median_step_s)
    red, red_med, est = _reductions(cells, c, tm, med)
    pv = P.paper_value("time", paper_data(c.data), c.model, c.method, c.groups, "reduction")
    pct = lambda v: "reference" if (c.method, c.groups) == ("bp", 1) else ("-" if v is None else f"{v:.1f}%")  # noqa
    return ([c.data, c.model, label(c.method, c.groups), str(c.groups), c.profile, c.setting, c.executor, c.seeds_text,
             c.steps, fmt_ours(t, 1), fmt(None if med is None else 1000 * med, 1), pct(red), pct(red_med), pct(est),
             "—" if pv is None else f"paper: {pv:.1f}%", c.status],
            ["time", c.data, c.model, c.method, c.groups, c.profile, c.executor, " ".join(map(str, c.seeds)), c.steps,
             tm, ts, None if med is None else 1000 * med, red, red_med, est, pv, c.status, c.setting])


def table_time(cells: list[Cell]):
    timed = [c for c in cells if c.values(train_time)]
    rows = [_time_row(cells, c) for c in timed]
    rows += _paper_rows("time", {(paper_data(c.data), c.model, c.method, c.groups) for c in timed}, lambda d, m, meth, k, pv: (
        [d, m, label(meth, k), str(k), "-", "-", "-", "-", "-", MISSING, "-", MISSING, MISSING, "-",
         f"paper: {pv:.1f}%", "no record"],
        ["time", d, m, meth, k, "", "", "", "", None, None, None, None, None, None, pv, MISSING, ""]))
    rows = _sorted(rows, (1, DATA_ORDER), (2, MODEL_ORDER), (5, PROFILE_ORDER), (6, EXECUTOR_ORDER), (3, method_rank), (4, None))
    return table("fig5_training_time", f"Training time (Fig. 5) — reduction of training wall-clock vs BP "
                 f"(profiles: {profiles_text(timed)})",
                 ["Only the training step is timed (evaluation apart). *simulated* rows come from the in-process "
                  "executor, which runs the groups one after another on one device: their measured time cannot "
                  "show a parallel speed-up (LCT does more work than BP). `median step` compares the median over "
                  "evaluation intervals of the mean step time, which a burst of load from other processes on a "
                  "shared machine does not move (the total does). `est. parallel (FLOPs)` scales LCT's median "
                  "step by the slowest group's share of forward FLOPs (group + critic): the time if every group "
                  "ran on its own device with no communication, an estimate, not a measurement. *parallel* rows "
                  "come from the distributed executor (one worker per group); their reduction is against BP on "
                  "one worker of the same executor. Positive = faster than BP."], TIME_MD, TIME_CSV, rows)


def _workers(rec: dict, key: str) -> list[float]:
    if shared_gpu(rec):
        return []
    return [w[key] for w in rec.get("workers") or [] if w.get(key) is not None]


def comm_mean(rec: dict) -> float | None:
    shares = _workers(rec, "comm_share")
    return 100 * sum(shares) / len(shares) if shares else None


def _comm_max(rec: dict) -> float | None:
    shares = _workers(rec, "comm_share")
    return 100 * max(shares) if shares else None


def _bytes_per_step(rec: dict) -> float | None:
    b, steps = _workers(rec, "bytes_sent"), rec["final"].get("steps") or rec["config"].get("steps")
    return sum(b) / steps if b and steps else None


def _paper_style(rec: dict) -> float | None:
    shares = _workers(rec, "paper_comm_share")
    return 100 * sum(shares) / len(shares) if shares else None


COMM_MD = ["data", "model", "method", "K", "profile", "setting", "time", "seeds", "comm share, mean over workers",
           "comm share, busiest worker", "the paper's estimate (timed transfers), mean", "bytes sent / step (all workers)",
           "paper", "status"]
COMM_CSV = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "comm_share_mean_pct",
            "comm_share_max_pct", "paper_style_estimate_pct", "bytes_sent_per_step", "paper_pct", "status", "setting"]


def table_comm(cells: list[Cell]):
    measured = [c for c in cells if c.values(comm_mean)]
    rows = []
    for c in measured:
        vals, mx, by, est = (c.values(f) for f in (comm_mean, _comm_max, _bytes_per_step, _paper_style))
        pv = P.paper_value("comm", paper_data(c.data), c.model, c.method, c.groups, "comm_share")
        rows.append(([c.data, c.model, label(c.method, c.groups), str(c.groups), c.profile, c.setting, c.executor,
                      c.seeds_text, f"{fmt_ours(vals)}%", f"{fmt_ours(mx)}%", f"{fmt_ours(est)}%" if est else "-",
                      fmt_ours(by, 0), "—" if pv is None else f"paper: {pv:.2f}%", c.status],
                     ["comm", c.data, c.model, c.method, c.groups, c.profile, c.executor, " ".join(map(str, c.seeds)),
                      mean_std(vals)[0], mean_std(mx)[0], mean_std(est)[0], mean_std(by)[0], pv, c.status, c.setting]))
    rows += _paper_rows("comm", {(paper_data(c.data), c.model, c.method, c.groups) for c in measured},
                        lambda d, m, meth, k, pv: (
                            [d, m, label(meth, k), str(k), "-", "-", "-", "-", MISSING, MISSING, "-", "-",
                             f"paper: {pv:.2f}%", "no distributed record"],
                            ["comm", d, m, meth, k, "", "", "", None, None, None, None, pv, MISSING, ""]))
    rows = _sorted(rows, (1, DATA_ORDER), (2, MODEL_ORDER), (3, method_rank), (4, None), (5, PROFILE_ORDER))
    return table("communication", f"Communication share of training time (%) (profiles: {profiles_text(measured)})",
                 [f"Ours: time each worker is blocked sending or receiving over its training time, from distributed "
                  f"records only. {P.NOTES['comm']}"], COMM_MD, COMM_CSV, rows)


FIG7_MD = ["data", "model", "K", "profile", "setting", "time (pipelined BP)", "time (LCT)", "pipelined BP / BP",
           "LCT / BP", "LCT faster than pipelined BP", "paper", "status"]
FIG7_CSV = ["table", "data", "model", "groups", "profile", "executor", "lct_executor", "gpipe_over_bp", "lct_over_bp",
            "lct_faster_pct", "paper_pct", "status", "setting"]


def fig7_ratios(cells: list[Cell], c: Cell) -> tuple:
    """For a gpipe cell: (gpipe / BP, LCT / BP, the LCT cell) by mean training time; None where missing."""
    bp, lct = bp_of(cells, c), lct_beside(cells, c)
    tg = c.mean(train_time)
    tb = bp.mean(train_time) if bp else None
    tl = lct.mean(train_time) if lct else None
    return (None if tb is None else tg / tb, None if tb is None or tl is None else tl / tb, tg, tl, lct)


def table_fig7(cells: list[Cell]):
    rows, keys = [], set()
    for c in (c for c in cells if c.method == "gpipe" and c.values(train_time)):
        gb, lb, tg, tl, lct = fig7_ratios(cells, c)
        w = workers_of(c)
        keys.add((paper_data(c.data), c.model, "lct", w))
        faster = None if tl is None else 100 * (1 - tl / tg)
        pv = P.paper_value("fig7", paper_data(c.data), c.model, "lct", w, "faster_than_gpipe")
        lex = lct.executor if lct is not None else "-"
        done = "completed" if lb is not None else "lct or bp record missing"
        k = str(c.groups) if w == c.groups else f"{w} workers ({c.groups} groups)"
        rows.append(([c.data, c.model, k, c.profile, c.setting, c.executor, lex, fmt(gb, 3), fmt(lb, 3),
                      "-" if faster is None else f"{faster:.1f}%", "—" if pv is None else f"paper: {pv:.1f}%", done],
                     ["fig7", c.data, c.model, c.groups, c.profile, c.executor, lex, gb, lb, faster, pv,
                      "completed" if lb is not None else MISSING, c.setting]))
    rows += _paper_rows("fig7", keys, lambda d, m, meth, k, pv: (
        [d, m, str(k), "-", "-", "-", "-", MISSING, MISSING, MISSING, f"paper: {pv:.1f}%", "no gpipe record"],
        ["fig7", d, m, k, "", "", "", None, None, None, pv, MISSING, ""]))
    rows = _sorted(rows, (1, DATA_ORDER), (2, MODEL_ORDER), (3, None), (4, PROFILE_ORDER), (5, EXECUTOR_ORDER))
    return table("fig7_pipelined_bp", f"Fig. 7 — pipelined BP (GPipe, K workers) vs LCT with K groups, time "
                 f"normalised by BP (profiles: {profiles_text(c for c in cells if c.method == 'gpipe')})",
                 ["Needs distributed records of gpipe, lct and bp at the same profile and setting; the paper's "
                  "pipelined BP was a separate PyTorch implementation, normalised by its own BP."],
                 FIG7_MD, FIG7_CSV, rows)
