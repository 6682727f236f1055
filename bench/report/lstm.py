"""The paper's LSTM tables (V, IX, X) from run records, our numbers beside the paper's.

Nothing is trained. Every row of ours names its profile; a paper cell with no completed record says
`missing`. Fig. 6 (BPC vs wall-clock) and Fig. 4 (Assumption 1 per group) are drawn by plots.py.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd

from .frame import MISSING, Cell, fmt_ours, label, mean_std, profiles_text, sort_key, table
from .paper import TABLE_IX, TABLE_V, TABLE_X, TABLE_X_CRITIC
from .resources import counted_split, submodels

LSTM_LAYERS = {"lstm2": 2, "lstm3": 3, "lstm4": 4}
PAPER_UNITS = {"lstm2": 950, "lstm3": 750, "lstm4": 600}
TEXT_ORDER = ("ptb", "enwik8", "pytext")
PAPER_BATCH, PAPER_BPTT = 128, 150


def is_lstm(g: Cell) -> bool:
    return g.model in LSTM_LAYERS


def _text_rank(data: str) -> tuple:
    return (TEXT_ORDER.index(data), "") if data in TEXT_ORDER else (len(TEXT_ORDER), data)


def _bpc(rec: dict) -> float | None:
    f = rec["final"]
    return f.get("test_bpc")


def _units(g: Cell) -> str:
    hs = sorted({r["config"].get("hidden") for r in g.records} - {None})
    return "/".join(map(str, hs)) or "?"


def _ours_cell(g: Cell, fn: Callable[[dict], float | None], digits: int = 3) -> tuple[str, float | None, float | None, int]:
    vals = g.values(fn)
    m, s = mean_std(vals)
    return (fmt_ours(vals, digits) if vals else MISSING), m, s, len(vals)


# ---------------------------------------------------------------------------------------------------
# Table V


V_MD = ["data", "layers (units)", "method", "K", "paper BPC", "ours BPC", "diff (ours − paper)",
        "ours, best during training", "unigram BPC", "profile", "seeds", "time", "steps", "status"]
V_CSV = ["table", "data", "model", "units", "method", "groups", "paper", "ours_mean", "ours_std", "n", "diff",
         "unigram_bpc", "profile", "seeds", "executor", "steps", "status", "ours_best_mean"]


def _best_bpc(rec: dict) -> float | None:
    values = rec["curves"].get("test_bpc") or []
    return min(values) if values else None


def _v_row(r) -> tuple[list, list]:
    layers, pv = LSTM_LAYERS[r.model], None if pd.isna(r.paper) else r.paper
    ptxt = "—" if pv is None else f"{pv:.3f}"
    if pd.isna(r.cell):
        k = layers if r.method == "lct" else 1
        return ([r.data, f"{layers} ({PAPER_UNITS[r.model]})", label(r.method, k), str(k), ptxt, MISSING, "-", "-",
                 "-", "-", "-", "-", "-", "no record"],
                ["V", r.data, r.model, PAPER_UNITS[r.model], r.method, k, pv, None, None, 0, None, None, "", "", "", "",
                 MISSING, None])
    g = r.cell
    txt, m, s, n = _ours_cell(g, _bpc)
    best_txt, best, _, _ = _ours_cell(g, _best_bpc)
    uni = g.mean(lambda rec: rec["final"].get("unigram_bpc"))
    diff = None if (m is None or pv is None) else m - pv
    return ([g.data, f"{layers} ({_units(g)})", label(g.method, g.groups), str(g.groups), ptxt,
             txt + ("" if g.profile == "paper" else f" ({g.profile})"), "-" if diff is None else f"{diff:+.3f}",
             best_txt, "-" if uni is None else f"{uni:.3f}", g.profile, g.seeds_text, g.executor, g.steps, g.status],
            ["V", g.data, g.model, _units(g), g.method, g.groups, pv, m, s if n else None, n, diff, uni, g.profile,
             " ".join(map(str, g.seeds)), g.executor, g.steps, g.status, best])


def table_V(cells: list[Cell]):
    ours = [g for g in cells if is_lstm(g)]
    key = ["data", "model", "method"]
    paper = pd.DataFrame([(*k, v) for k, v in TABLE_V.items()], columns=key + ["paper"])
    mine = pd.DataFrame([(g.data, g.model, g.method, g.groups, g) for g in ours], columns=key + ["groups", "cell"])
    # the paper's LCT has a critic between every pair of layers: only K = L is its cell
    at_paper_k = mine.cell.map(lambda g: g.groups == LSTM_LAYERS[g.model] if g.method == "lct" else True).astype(bool)
    rows = pd.concat([paper.merge(mine[at_paper_k], on=key, how="outer"), mine[~at_paper_k].assign(paper=None)],
                     ignore_index=True)
    order = lambda r: (_text_rank(r.data), r.model, 0 if r.method == "bp" else 1,  # noqa: E731
                       0 if not pd.isna(r.paper) else r.groups, () if pd.isna(r.cell) else sort_key(r.cell))
    return table("table_V_lstm_bpc", "Table V — LSTM test bits per character (BPC), BP vs LCT "
                 f"(a critic between every pair of layers) (profiles: {profiles_text(ours)})",
                 ["Paper: PTB and enwik8, 2/3/4 layers of 950/750/600 units, batch 128, BPTT 150, Adam. Ours name their "
                  "profile and units; only the `paper` profile on ptb/enwik8 is a reproduction. `unigram BPC`: entropy "
                  "of the test text's own character frequencies, the bar any model using context must clear. "
                  "BP is the same rule for any K in process; the paper's BP is one network (K=1)."],
                 V_MD, V_CSV, [_v_row(r) for r in sorted(rows.itertuples(), key=order)])


# ---------------------------------------------------------------------------------------------------
# Table IX: sub-model BPC


IX_MD = ["data", "model (units)", "method", "source", "Sub_1", "Sub_2", "Sub_3", "Main", "profile", "seeds", "status"]
IX_CSV = ["table", "data", "model", "units", "method", "groups", "source", "sub1", "sub2", "sub3", "main", "n",
          "profile", "seeds", "executor", "status"]


def _sub(i: int) -> Callable[[dict], float | None]:
    def fn(rec):
        subs = rec["final"].get("sub_bpc") or []
        return subs[i] if i < len(subs) else None
    return fn


def table_IX(cells: list[Cell]):
    ours = sorted((g for g in cells if is_lstm(g) and g.method in ("lct", "joint") and g.groups > 1),
                  key=lambda g: (_text_rank(g.data), sort_key(g)))
    rows = []
    for data, paper in TABLE_IX.items():
        rows.append(([data, "lstm4 (600)", "LCT_n3", "paper"] + [f"{v:.3f}" for v in paper] + ["paper", "-", "-"],
                     ["IX", data, "lstm4", 600, "lct", 4, "paper", *paper, None, "paper", "", "", ""]))
        if not any(g.data == data and g.model == "lstm4" and g.method == "lct" and g.groups == 4 for g in ours):
            rows.append(([data, "lstm4", "LCT_n3", "ours"] + [MISSING] * 4 + ["-", "-", "no record"],
                         ["IX", data, "lstm4", None, "lct", 4, "ours", None, None, None, None, 0, "", "", "", MISSING]))
    for g in ours:
        n_sub = g.groups - 1
        cols, nums = [], []
        for i in range(3):
            if i < n_sub:
                txt, m, _, _ = _ours_cell(g, _sub(i))
            else:
                txt, m = "—", None
            cols.append(txt)
            nums.append(m)
        txt, m, _, n = _ours_cell(g, _bpc)
        rows.append(([g.data, f"{g.model} ({_units(g)})", label(g.method, g.groups), f"ours ({g.profile})", *cols, txt,
                      g.profile, g.seeds_text, g.status],
                     ["IX", g.data, g.model, _units(g), g.method, g.groups, "ours", *nums, m, n, g.profile,
                      " ".join(map(str, g.seeds)), g.executor, g.status]))
    lstm = [g for g in cells if is_lstm(g)]
    return table("table_IX_lstm_submodels", "Table IX — BPC of the LSTM sub-models (layers 1..i + critic i) and the "
                 f"main network (profiles: {profiles_text(lstm)})",
                 ["Paper: LCT_n3, 4 layers of 600 units. Sub_i of ours with fewer than 4 groups: — . "
                  "Our rows name their profile; only `paper` on ptb/enwik8 is a reproduction."], IX_MD, IX_CSV, rows)


# ---------------------------------------------------------------------------------------------------
# Table X: FLOPs and parameters


X_MD = ["source", "sub-model", "FLOPs (B) per batch (critic, share)", "params (M) (critic, share)", "batch x BPTT",
        "paper FLOPs (B)", "paper params (M)"]
X_CSV = ["table", "source", "data", "model", "units", "submodel", "batch", "bptt", "gflops", "critic_gflops",
         "mparams", "critic_mparams", "paper_gflops", "paper_mparams"]


def _x_rows(source: str, data: str, model: str, units, split: dict, batch: int, bptt: int, paper: bool) -> list:
    rows = []
    for s in submodels(split):
        gf, pm = s["flops"] * batch / 1e9, s["params"] / 1e6
        cf, cp = s["critic_flops"] * batch / 1e9, s["critic_params"] / 1e6
        pf, pp = TABLE_X.get(s["name"], (None, None)) if paper else (None, None)
        crit_f = f" ({cf:.2f}, {100 * cf / gf:.1f}%)" if cf else ""
        crit_p = f" ({cp:.3f}, {100 * cp / pm:.1f}%)" if cp else ""
        rows.append(([source, s["name"], f"{gf:.{0 if gf >= 10 else 3}f}{crit_f}", f"{pm:.3f}{crit_p}",
                      f"{batch} x {bptt}", "—" if pf is None else str(pf), "—" if pp is None else f"{pp:.2f}"],
                     ["X", source, data, model, units, s["name"], batch, bptt, gf, cf, pm, cp, pf, pp]))
    return rows


def table_X(cells: list[Cell], counted: list[dict]):
    split = counted_split(counted, "ptb", "lstm4", "lct", 4)
    source = (f"architecture (computed, PTB vocabulary 50; paper: each critic {TABLE_X_CRITIC[0]} B / "
              f"{TABLE_X_CRITIC[1]} M)")
    rows = _x_rows(source, "ptb", "lstm4", 600, split, PAPER_BATCH, PAPER_BPTT, paper=True) if split else [
        ([source, "-", MISSING, MISSING, f"{PAPER_BATCH} x {PAPER_BPTT}", "-", "-"],
         ["X", source, "ptb", "lstm4", 600, "", PAPER_BATCH, PAPER_BPTT, None, None, None, None, None, None])]
    for g in sorted((g for g in cells if is_lstm(g) and g.method == "lct" and g.groups > 1 and g.runs),
                    key=lambda g: (_text_rank(g.data), sort_key(g))):
        r = g.runs[0]
        c = r["config"]
        rows += _x_rows(f"ours: {g.data} {g.model} ({c.get('hidden')} units) {label(g.method, g.groups)}, "
                        f"profile {g.profile}", g.data, g.model, c.get("hidden"), r.get("split") or {},
                        c["batch_size"], c.get("bptt") or 0, paper=False)
    lstm = [g for g in cells if is_lstm(g) and g.method == "lct" and g.groups > 1]
    return table("table_X_lstm_complexity", "Table X — FLOPs and parameters of the LSTM sub-models (LCT) "
                 f"(profiles: architecture{', ' + profiles_text(lstm) if lstm else ''})",
                 ["FLOPs of one forward pass over a batch (paper: 128 sequences x 150 characters), 2 per multiply-add, "
                  "matmuls only; in parentheses the critic's FLOPs / parameters and its share of the sub-model. The "
                  "architecture rows are counted from the model definition (`python -m bench count`, no run); rows "
                  "of ours use each run's own units, batch and BPTT. PyTorch's LSTM has two bias vectors per layer "
                  "(TensorFlow's one)."], X_MD, X_CSV, rows)


def tables(cells: list[Cell], counted: list[dict]) -> list:
    return [table_V(cells), table_IX(cells), table_X(cells, counted)]
