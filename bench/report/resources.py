"""Table VI (memory per worker, from distributed records) and Table VIII (FLOPs and parameters of the
sub-models, from the records' split; the paper's networks at full width from `counted` records, which
`python -m bench count` writes without training)."""
from __future__ import annotations

import pandas as pd

from . import paper as P
from .frame import (DATA_ORDER, MISSING, MODEL_ORDER, PROFILE_ORDER, Cell, fmt, fmt_ours, label, mean_std,
                    method_rank, num, paper_data, profiles_text, rank, seeds_text, sort_key, table)


def worker_memory(w: dict) -> tuple[float | None, str]:
    for k, name in (("gpu_mem_nvml_mb", "GPU (NVML)"), ("torch_cuda_peak_mb", "GPU (torch peak)"),
                    ("peak_rss_mb", "peak RSS")):
        if w.get(k) is not None:
            return float(w[k]), name
    return None, "-"


VI_MD = ["data", "model", "method", "K", "worker", "paper (MiB)", "ours (MiB)", "measure", "of which training (MiB)",
         "diff", "profile", "setting", "seeds", "time", "status"]
VI_CSV = ["table", "data", "model", "method", "groups", "worker", "paper_mib", "ours_mean_mib", "ours_std_mib", "n",
          "measure", "training_mib", "diff", "profile", "setting", "seeds", "executor", "status"]


def _memory(c: Cell, w: int) -> tuple[list[float], set, list[float]]:
    """Worker w's memory over c's runs: values, what measured them, and the part training added (CPU)."""
    vals, measures, training = [], set(), []
    for r in c.runs:
        ws = sorted(r.get("workers") or [], key=lambda x: x.get("rank", 0))
        if w - 1 < len(ws):
            v, measure = worker_memory(ws[w - 1])
            if v is not None:
                vals.append(v)
                measures.add(measure)
            if measure == "peak RSS" and ws[w - 1].get("rss_start_mb") is not None:
                training.append(v - ws[w - 1]["rss_start_mb"])
    return vals, measures, training


def _vi_row(r) -> tuple[list, list]:
    pv = None if pd.isna(r.paper) else r.paper
    ptxt, key = "—" if pv is None else f"paper: {pv:.0f}", (r.data, r.model, r.method, r.groups)
    if pd.isna(r.cell):
        return ([*key[:2], label(r.method, r.groups), str(r.groups), f"GPU {r.worker}", ptxt, MISSING, "-", "-", "-",
                 "-", "-", "-", "-", "no distributed record"],
                ["VI", *key, r.worker, pv, None, None, 0, "", None, None, "", "", "", "", MISSING])
    c = r.cell
    vals, measures, training = _memory(c, r.worker)
    mean, std = mean_std(vals)
    measure = ",".join(sorted(measures)) or "-"
    # a CPU's peak RSS is not the paper's GPU memory: no difference is shown for it
    diff = None if mean is None or pv is None or not measure.startswith("GPU") else mean - pv
    train_mean = mean_std(training)[0]
    ours = f"ours ({c.profile}, {seeds_text(len(vals))}): {fmt_ours(vals, 0)}" if vals else MISSING
    model = c.model if r.model != "*" else f"{c.model} (paper: not stated)"
    return ([r.data, model, label(r.method, r.groups), str(r.groups), f"worker {r.worker}", ptxt, ours, measure,
             fmt(train_mean, 0), "-" if diff is None else f"{diff:+.0f}", c.profile, c.setting, c.seeds_text,
             c.executor, c.status],
            ["VI", r.data, c.model, r.method, r.groups, r.worker, pv, mean, std, len(vals), measure, train_mean, diff,
             c.profile, c.setting, " ".join(map(str, c.seeds)), c.executor, c.status])


def table_vi(cells: list[Cell]):
    ours = [c for c in cells if any(r.get("workers") for r in c.runs)]
    paper = P.frame("VI")
    paper["worker"] = paper.metric.str[3:].astype(int)
    mine = pd.DataFrame([(paper_data(c.data), c.model, c.method, c.groups, w, c) for c in ours
                         for w in range(1, max(len(r["workers"]) for r in c.runs) + 1)],
                        columns=["data", "model", "method", "groups", "worker", "cell"])
    keys = ["data", "method", "groups", "worker"]
    # every paper cell with the cells of ours it matches; the paper's figures of an unnamed network (model
    # `*`) stand beside every model of ours
    named = paper[paper.model != "*"].merge(mine, on=keys + ["model"], how="left")
    star = paper[paper.model == "*"].merge(mine.drop(columns="model"), on=keys, how="left")
    matched = {(id(c), w) for c, w in zip(pd.concat([named.cell, star.cell]), pd.concat([named.worker, star.worker]))
               if not pd.isna(c)}
    unmatched = pd.Series([(id(c), w) not in matched for c, w in zip(mine.cell, mine.worker)], index=mine.index,
                          dtype=bool)
    rest = mine[unmatched].assign(paper=None)
    rest["data"] = [c.data for c in rest.cell]  # no paper cell: under its own data set
    rows = pd.concat([named, star, rest], ignore_index=True)
    order = lambda r: (rank(DATA_ORDER, r.data), rank(MODEL_ORDER, r.model), method_rank(r.method), r.groups,  # noqa
                       r.worker, () if pd.isna(r.cell) else sort_key(r.cell))
    notes = [f"Only distributed records (one worker per group) measure memory per worker: GPU memory through "
             f"NVML where there is a GPU, else the worker's peak RSS since training started (not comparable "
             f"with the paper's GPU MiB, so no difference is shown; every CPU worker also holds the data and "
             f"a copy of every group from its set-up, and `of which training` is the peak minus the RSS at "
             f"the start). In-process records are not listed. {P.NOTES['VI']}"]
    return table("table_VI_memory", f"Table VI — memory per worker (MiB) (profiles: {profiles_text(ours)})", notes,
                 VI_MD, VI_CSV, [_vi_row(r) for r in sorted(rows.itertuples(), key=order)])


# ---------------------------------------------------------------------------------------------------
# Table VIII


def submodels(split: dict) -> list[dict]:
    """Per sub-model i (groups 1..i + head i) and the main network: FLOPs, params and the head's part."""
    gs = split.get("groups") or []
    out, flops, params = [], 0, 0
    for i, g in enumerate(gs, 1):
        flops += g["flops"]
        params += g["params"]
        if i < len(gs) and g.get("head_params"):
            out.append({"name": f"Sub_{i}", "flops": flops + g["head_flops"], "params": params + g["head_params"],
                        "critic_flops": g["head_flops"], "critic_params": g["head_params"]})
    out.append({"name": "Main", "flops": flops, "params": params, "critic_flops": 0, "critic_params": 0})
    return out


def _m(v: float) -> str:
    return f"{v / 1e6:.4f}" if v < 1e6 else f"{v / 1e6:.2f}"


def _paper_viii(data: str, model: str, method: str, k: int, name: str) -> dict:
    key = name.lower().replace("_", "")
    return {m: P.paper_value("VIII", data, model, method, k, f"{key}_{m}")
            for m in ("flops_m", "critic_flops_m", "params_m", "critic_params_m")}


def _paper_txt(total, critic) -> str:
    return "—" if total is None else num(total) + (f" (critic {num(critic)})" if critic is not None else "")


def _viii_row(source: tuple, width, s: dict, profile: str) -> tuple[list, list]:
    data, model, method, k = source
    paper = _paper_viii(paper_data(data), model, method, k, s["name"])
    fshare = f" ({100 * s['critic_flops'] / s['flops']:.1f}%)" if s["critic_flops"] else ""
    pshare = f" ({100 * s['critic_params'] / s['params']:.1f}%)" if s["critic_params"] else ""
    md = [data, model, label(method, k), str(k), str(width), s["name"], _m(s["flops"]) + fshare,
          _paper_txt(paper["flops_m"], paper["critic_flops_m"]), _m(s["params"]) + pshare,
          _paper_txt(paper["params_m"], paper["critic_params_m"]), profile]
    return md, ["VIII", data, model, method, k, width, s["name"], s["flops"], s["critic_flops"], paper["flops_m"],
                paper["critic_flops_m"], s["params"], s["critic_params"], paper["params_m"], paper["critic_params_m"],
                profile]


VIII_MD = ["data", "model", "method", "K", "width", "sub-model", "FLOPs (M), ours (critic share)", "paper FLOP (M)",
           "params (M), ours (critic share)", "paper params (M)", "profile"]
VIII_CSV = ["table", "data", "model", "method", "groups", "width", "submodel", "flops", "critic_flops", "paper_flop_m",
            "paper_critic_flop_m", "params", "critic_params", "paper_params_m", "paper_critic_params_m", "profile"]
ARCHITECTURE = "architecture"


def counted_split(counted: list[dict], data: str, model: str, method: str, k: int) -> dict | None:
    """The split of the paper's network at full width, from a `counted` record (no training)."""
    for r in counted:
        c = r["config"]
        if (c["data"], c["model"], c["method"], c["groups"], c.get("width")) == (data, model, method, k, 1.0):
            return r["split"]
    return None


def _architecture_rows(counted: list[dict]) -> list:
    rows = []
    for d, m, meth, k in sorted({cell[:4] for cell in P.cells("VIII")}):
        split = counted_split(counted, d, m, meth, k)
        if split is None:  # no count yet (`nox -s architecture`): the paper's numbers, ours missing
            md = [d, m, label(meth, k), str(k), "1", "-", MISSING, "-", MISSING, "-", "architecture (no count record)"]
            rows.append((md, ["VIII", d, m, meth, k, "1", "", None, None, None, None, None, None, None, None,
                              ARCHITECTURE]))
            continue
        for s in submodels(split):
            md, row = _viii_row((d, m, meth, k), "1", s, ARCHITECTURE)
            md[-1] = "architecture (counted, no run)"
            rows.append((md, row))
    return rows


def table_viii(cells: list[Cell], counted: list[dict]):
    ours = [c for c in cells if c.method in ("lct", "joint") and c.groups > 1 and not c.model.startswith("lstm")]
    firsts = pd.DataFrame([(c.data, c.model, c.method, c.groups, c.profile, c.width,
                            next((r for r in c.records if r.get("split", {}).get("groups")), None)) for c in ours],
                          columns=["data", "model", "method", "groups", "profile", "width", "rec"])
    # the same architecture under another executor or setting counts once
    firsts = firsts.dropna(subset=["rec"]).drop_duplicates(["data", "model", "method", "groups", "profile", "width"])
    rows = [_viii_row((r.data, r.model, r.method, r.groups), r.width, s, r.profile)
            for r in firsts.itertuples() for s in submodels(r.rec["split"])]
    rows += _architecture_rows(counted)
    rows.sort(key=lambda r: (rank(DATA_ORDER, r[1][1]), rank(MODEL_ORDER, r[1][2]), method_rank(r[1][3]), r[1][4],
                             rank(PROFILE_ORDER, r[1][15]), str(r[1][5]), (r[1][6] == "Main", r[1][6])))
    notes = [f"Ours: torch.utils.flop_counter on one sample at the record's width (a scaled-down width is "
             f"much smaller than the paper's full network); the critic's share in parentheses. Rows with "
             f"profile `architecture` count the paper's network at full width on the paper's input "
             f"(split by the paper rule) without any run (`python -m bench count`, `nox -s architecture`): their "
             f"parameters sit beside the paper's. {P.NOTES['VIII']}"]
    return table("table_VIII_complexity", f"Table VIII — sub-model complexity: forward FLOPs of one sample and "
                 f"parameters (profiles: {profiles_text(ours)})", notes, VIII_MD, VIII_CSV, rows)
