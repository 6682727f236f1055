"""The paper's LSTM tables (V, IX, X) and Fig. 6 from run records, our numbers beside the paper's.

Nothing is trained. `tables(groups)` returns bench.report.Table objects (the same markdown/CSV
format as the other tables, and bench.report renders them with the rest); `fig6` draws BPC vs
wall-clock (Fig. 6), planned by bench.plots with the other figures. Fig. 4 (Assumption 1 per group) is bench.plots' Fig. 3
drawer, which takes LSTM records as they are. Every row of ours names its profile; a paper cell with
no completed record says `missing`.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from .report import MISSING, Group, Key, Table, _profiles_text, fmt_ours, mean_std, sort_key

LSTM_LAYERS = {"lstm2": 2, "lstm3": 3, "lstm4": 4}
PAPER_UNITS = {"lstm2": 950, "lstm3": 750, "lstm4": 600}
DATA_LABEL = {"ptb": "PTB (char)", "enwik8": "enwik8", "pytext": "pytext (offline stand-in, not in the paper)"}
TEXT_ORDER = ("ptb", "enwik8", "pytext")

# Table V: test BPC, (data, model, method) -> value; LCT has a critic between every pair of layers (K = L).
TABLE_V = {
    ("ptb", "lstm2", "bp"): 1.275, ("ptb", "lstm3", "bp"): 1.288, ("ptb", "lstm4", "bp"): 1.275,
    ("ptb", "lstm2", "lct"): 1.276, ("ptb", "lstm3", "lct"): 1.265, ("ptb", "lstm4", "lct"): 1.269,
    ("enwik8", "lstm2", "bp"): 1.476, ("enwik8", "lstm3", "bp"): 1.509, ("enwik8", "lstm4", "bp"): 1.618,
    ("enwik8", "lstm2", "lct"): 1.469, ("enwik8", "lstm3", "lct"): 1.492, ("enwik8", "lstm4", "lct"): 1.541,
}
# Table IX: LCT_n3 (4 layers of 600) sub-model BPC: Sub_1, Sub_2, Sub_3, Main.
TABLE_IX = {"ptb": (1.329, 1.281, 1.272, 1.269), "enwik8": (1.691, 1.585, 1.551, 1.541)}
# Table X: LCT_n3 4-layer LSTM, FLOPs (billions) and parameters (millions) per sub-model; each critic 1.15 B
# FLOPs and 0.03 M parameters (for a batch of 128 x 150 characters, 2 FLOPs per multiply-add).
TABLE_X = {"Sub_1": (68, 1.79), "Sub_2": (179, 4.67), "Sub_3": (290, 7.55), "Main": (401, 10.43)}
TABLE_X_CRITIC = (1.15, 0.03)
PAPER_BATCH, PAPER_BPTT, PTB_VOCAB = 128, 150, 50


def is_lstm_group(g: Group) -> bool:
    return g.model in LSTM_LAYERS


def _text_rank(data: str) -> tuple:
    return (TEXT_ORDER.index(data), "") if data in TEXT_ORDER else (len(TEXT_ORDER), data)


def _bpc(rec: dict) -> float | None:
    f = rec["final"]
    return f.get("test_bpc")


def _units(g: Group) -> str:
    hs = sorted({r["config"].get("hidden") for r in g.records} - {None})
    return "/".join(map(str, hs)) or "?"


def _ours_cell(g: Group, fn: Callable[[dict], float | None], digits: int = 3) -> tuple[str, float | None, float | None, int]:
    vals = g.values(fn)
    m, s = mean_std(vals)
    return (fmt_ours(vals, digits) if vals else MISSING), m, s, len(vals)


def _label(method: str, k: int) -> str:
    return "BP" if method == "bp" else (f"LCT_n{k - 1}" if method == "lct" else f"{method} (K={k})")


# ---------------------------------------------------------------------------------------------------
# Table V


V_MD = ["data", "layers (units)", "method", "K", "paper BPC", "ours BPC", "diff (ours − paper)", "unigram BPC",
        "profile", "seeds", "time", "steps", "status"]
V_CSV = ["table", "data", "model", "units", "method", "groups", "paper", "ours_mean", "ours_std", "n", "diff",
         "unigram_bpc", "profile", "seeds", "executor", "steps", "status"]


def table_V(groups: dict[Key, Group]) -> Table:
    ours = [g for g in groups.values() if is_lstm_group(g)]
    cells: dict[tuple[str, str, str], list[Group]] = {k: [] for k in TABLE_V}
    for g in ours:
        paper_k = g.groups == LSTM_LAYERS[g.model] if g.method == "lct" else True
        key = (g.data, g.model, g.method)
        if key in TABLE_V and paper_k:
            cells[key].append(g)
        else:
            cells.setdefault((g.data, g.model, g.method, g.groups), []).append(g)  # no paper cell
    rows = []

    def order(item):
        key = item[0]
        return (_text_rank(key[0]), key[1], 0 if key[2] == "bp" else 1, key[3] if len(key) > 3 else 0)

    for key, gs in sorted(cells.items(), key=order):
        data, model, method = key[:3]
        layers = LSTM_LAYERS[model]
        pv = TABLE_V.get(key) if len(key) == 3 else None
        ptxt = "—" if pv is None else f"{pv:.3f}"
        if not gs:
            k = layers if method == "lct" else 1
            rows.append(([data, f"{layers} ({PAPER_UNITS[model]})", _label(method, k), str(k), ptxt, MISSING, "-",
                          "-", "-", "-", "-", "-", "no record"],
                         ["V", data, model, PAPER_UNITS[model], method, k, pv, None, None, 0, None, None, "", "", "",
                          "", MISSING]))
            continue
        for g in sorted(gs, key=lambda g: sort_key(g.key)):
            txt, m, s, n = _ours_cell(g, _bpc)
            uni = mean_std(g.values(lambda r: r["final"].get("unigram_bpc")))[0]
            diff = None if (m is None or pv is None) else m - pv
            rows.append(([g.data, f"{layers} ({_units(g)})", _label(g.method, g.groups), str(g.groups), ptxt,
                          txt + ("" if g.profile == "paper" else f" ({g.profile})"),
                          "-" if diff is None else f"{diff:+.3f}", "-" if uni is None else f"{uni:.3f}", g.profile,
                          g.seeds_text, g.executor, g.steps, g.status],
                         ["V", g.data, g.model, _units(g), g.method, g.groups, pv, m, s if n else None, n, diff, uni,
                          g.profile, " ".join(map(str, g.seeds)), g.executor, g.steps, g.status]))
    return Table("table_V_lstm_bpc", "Table V — LSTM test bits per character (BPC), BP vs LCT "
                 f"(a critic between every pair of layers) (profiles: {_profiles_text(ours)})",
                 ["Paper: PTB and enwik8, 2/3/4 layers of 950/750/600 units, batch 128, BPTT 150, Adam. Ours name their "
                  "profile and units; only the `paper` profile on ptb/enwik8 is a reproduction. `unigram BPC`: entropy "
                  "of the test text's own character frequencies, the bar any model using context must clear. "
                  "BP is the same rule for any K in process; the paper's BP is one network (K=1)."],
                 V_MD, V_CSV, rows)


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


def table_IX(groups: dict[Key, Group]) -> Table:
    ours = sorted((g for g in groups.values() if is_lstm_group(g) and g.method in ("lct", "joint") and g.groups > 1),
                  key=lambda g: (_text_rank(g.data), sort_key(g.key)))
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
        rows.append(([g.data, f"{g.model} ({_units(g)})", _label(g.method, g.groups), f"ours ({g.profile})", *cols, txt,
                      g.profile, g.seeds_text, g.status],
                     ["IX", g.data, g.model, _units(g), g.method, g.groups, "ours", *nums, m, n, g.profile,
                      " ".join(map(str, g.seeds)), g.executor, g.status]))
    lstm = [g for g in groups.values() if is_lstm_group(g)]
    return Table("table_IX_lstm_submodels", "Table IX — BPC of the LSTM sub-models (layers 1..i + critic i) and the main "
                 f"network (profiles: {_profiles_text(lstm)})", ["Paper: LCT_n3, 4 layers of 600 units. Sub_i of ours with fewer than 4 groups: — . "
                             "Our rows name their profile; only `paper` on ptb/enwik8 is a reproduction."],
                 IX_MD, IX_CSV, rows)


# ---------------------------------------------------------------------------------------------------
# Table X: FLOPs and parameters


@functools.lru_cache(maxsize=None)
def architecture_split(vocab: int = PTB_VOCAB, bptt: int = PAPER_BPTT, model: str = "lstm4") -> dict:
    """The paper's 4-layer LSTM (600 units, embedding 128), one group per layer, a critic after each group
    but the last: FLOPs per sequence of `bptt` characters and parameters, counted like the runs' records."""
    from .heads import critic
    from .models import build_model
    from .split import module_flops, paper_split, unit_flops

    net = build_model(model, vocab, (bptt,))
    k = LSTM_LAYERS[model]
    split = paper_split(net, k)
    flops, shapes = unit_flops(net, (bptt,))
    params = [sum(p.numel() for p in u.parameters()) for u in net.units]
    groups = []
    for a, b in zip(split.bounds, split.bounds[1:]):
        head = critic(net.family, shapes[b - 1], vocab) if b < len(net.units) else None
        groups.append({"flops": sum(flops[a:b]), "params": sum(params[a:b]),
                       "head_flops": module_flops(head, shapes[b - 1]) if head is not None else 0,
                       "head_params": sum(p.numel() for p in head.parameters()) if head is not None else 0})
    return {"groups": groups}


def submodels(split: dict) -> list[dict]:
    """Per sub-model i (groups 1..i + critic i) and Main: FLOPs and params, and the critic's share."""
    out, flops, params = [], 0, 0
    gs = split.get("groups") or []
    for i, g in enumerate(gs, 1):
        flops += g["flops"]
        params += g["params"]
        if i < len(gs) and g.get("head_params"):
            out.append({"name": f"Sub_{i}", "flops": flops + g["head_flops"], "params": params + g["head_params"],
                        "critic_flops": g["head_flops"], "critic_params": g["head_params"]})
    out.append({"name": "Main", "flops": flops, "params": params, "critic_flops": 0, "critic_params": 0})
    return out


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


def table_X(groups: dict[Key, Group]) -> Table:
    rows = _x_rows(f"architecture (computed, PTB vocabulary {PTB_VOCAB}; paper: each critic "
                   f"{TABLE_X_CRITIC[0]} B / {TABLE_X_CRITIC[1]} M)", "ptb", "lstm4", 600,
                   architecture_split(), PAPER_BATCH, PAPER_BPTT, paper=True)
    for g in sorted((g for g in groups.values() if is_lstm_group(g) and g.method == "lct" and g.groups > 1
                     and g.completed), key=lambda g: (_text_rank(g.data), sort_key(g.key))):
        r = g.completed[0]
        c = r["config"]
        rows += _x_rows(f"ours: {g.data} {g.model} ({c.get('hidden')} units) {_label(g.method, g.groups)}, "
                        f"profile {g.profile}", g.data, g.model, c.get("hidden"), r.get("split") or {},
                        c["batch_size"], c.get("bptt") or 0, paper=False)
    lstm = [g for g in groups.values() if is_lstm_group(g) and g.method == "lct" and g.groups > 1]
    return Table("table_X_lstm_complexity", "Table X — FLOPs and parameters of the LSTM sub-models (LCT) "
                 f"(profiles: architecture{', ' + _profiles_text(lstm) if lstm else ''})",
                 ["FLOPs of one forward pass over a batch (paper: 128 sequences x 150 characters), 2 per multiply-add, "
                  "matmuls only; in parentheses the critic's FLOPs / parameters and its share of the sub-model. The "
                  "architecture rows are computed from the model definition (no run); rows of ours use each run's "
                  "own units, batch and BPTT. PyTorch's LSTM has two bias vectors per layer (TensorFlow's one)."],
                 X_MD, X_CSV, rows)


def tables(groups: dict[Key, Group]) -> list[Table]:
    return [table_V(groups), table_IX(groups), table_X(groups)]


# ---------------------------------------------------------------------------------------------------
# Fig. 6: BPC vs wall-clock


def fig6(gs: list[Group], path: Path) -> None:
    from .plots import COLORS, K_STYLES, _plt, _save, _subtitle

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    bp_time = [mean_std(g.values(lambda r: r["final"].get("train_time_s")))[0] for g in gs if g.method == "bp"]
    for g in sorted(gs, key=lambda g: sort_key(g.key)):
        for j, r in enumerate(g.completed):
            c = r["curves"]
            if not c.get("test_bpc"):
                continue
            t = r["final"].get("train_time_s")
            lab = _label(g.method, g.groups)
            if g.method != "bp" and bp_time and bp_time[0] and t:
                lab += f": time {100 * (t / bp_time[0] - 1):+.1f}% vs BP"
            ax.plot(c["train_time_s"], c["test_bpc"], color=COLORS.get(g.method, "#999999"),
                    ls=K_STYLES.get(g.groups, "-"), marker="o", ms=2.5, lw=1.4,
                    label=(lab + f" [{g.executor}]") if j == 0 else None)
    ax.set_xlabel("training wall-clock (s; evaluation excluded)")
    ax.set_ylabel("test BPC")
    ax.legend(loc="best")
    g0 = gs[0]
    fig.suptitle(f"BPC vs training time (paper Fig. 6: PTB, 4-layer LSTM; LCT_n1 -16.7%, LCT_n3 -35.8% vs BP)\n"
                 f"{_subtitle(g0.profile, g0.data, g0.model, g0.executor)}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
