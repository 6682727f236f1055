"""The paper's reported numbers as data (Lee, Hsieh & Lee, IEEE TNNLS 2022), transcribed from
/work/shared/PAPER.md and the paper's text. Nothing here is computed.

A cell is found by (table, data, model, method, groups, metric): ``paper_value("I", "cifar10",
"resnet50", "lct", 4)`` is LCT_n3's CIFAR-10 accuracy. K = groups = n + 1 (LCT_n3 has K = 4).
Metrics: "top1" (test accuracy %, top-1 on ImageNet), "top5" (ImageNet top-5 %), "sub1".."sub3"
(sub-model top-1 %), "sub1_top5"..; "gpu1".."gpu4" (MiB); "reduction" / "comm_share" /
"faster_than_gpipe" (%); "<sub>_flops_m", "<sub>_critic_flops_m", "<sub>_params_m",
"<sub>_critic_params_m" with <sub> in sub1..sub3, main (millions, Table VIII); "main" / "main_top5" (Table VII's
main network).
Model "*" means the paper does not say which network (Table VI's CIFAR-100 memory figures).
"""
from __future__ import annotations

from typing import Iterator

import pandas as pd

PAPER: dict[tuple[str, str, str, str, int, str], float] = {}


def _put(table: str, data: str, model: str, row: dict[tuple[str, int], float | tuple[float, float]]) -> None:
    for (method, k), v in row.items():
        if isinstance(v, tuple):  # ImageNet: (top-1, top-5)
            PAPER[(table, data, model, method, k, "top1")] = v[0]
            PAPER[(table, data, model, method, k, "top5")] = v[1]
        else:
            PAPER[(table, data, model, method, k, "top1")] = v


_T1 = [("bp", 1), ("dni", 2), ("dni", 3), ("dni", 4), ("lct", 2), ("lct", 3), ("lct", 4)]
_T1_NO_DNI = [("bp", 1), ("lct", 2), ("lct", 3), ("lct", 4)]

# ---- Table I: test accuracy (%) -------------------------------------------------------------------
_put("I", "cifar10", "resnet50", dict(zip(_T1, (93.79, 80.07, 74.59, 71.24, 91.41, 92.64, 93.32))))
_put("I", "cifar100", "resnet50", dict(zip(_T1, (76.16, 49.44, 43.39, 43.31, 73.65, 71.37, 70.90))))
_put("I", "imagenet", "resnet50", dict(zip(_T1_NO_DNI, ((72.09, 90.51), (67.80, 88.24), (67.67, 88.07),
                                                         (65.81, 86.79)))))
_put("I", "cifar10", "resnet101", dict(zip(_T1, (93.77, 75.70, 66.53, 65.46, 93.25, 93.10, 93.34))))
_put("I", "cifar100", "resnet101", dict(zip(_T1, (76.76, 43.94, 35.37, 33.62, 71.82, 72.14, 72.10))))
_put("I", "imagenet", "resnet101", dict(zip(_T1_NO_DNI, ((73.38, 91.37), (72.11, 90.66), (68.20, 88.34),
                                                          (67.05, 87.80)))))

# ---- Table II: ResNet-182 --------------------------------------------------------------------------
_put("II", "cifar10", "resnet182", dict(zip(_T1_NO_DNI, (94.80, 92.89, 94.10, 93.00))))
_put("II", "cifar100", "resnet182", dict(zip(_T1_NO_DNI, (77.46, 73.29, 72.50, 72.74))))
_put("II", "imagenet", "resnet182", dict(zip(_T1_NO_DNI, ((75.42, 92.33), (74.13, 91.63), (70.62, 89.82),
                                                           (66.46, 87.43)))))

# ---- Table III: the 300-150-10 MLP (n1: K = 2) -----------------------------------------------------
_T3 = [("bp", 1), ("admm", 2), ("dni", 2), ("lct", 2)]
_put("III", "mnist", "mlp", dict(zip(_T3, (98.05, 82.53, 95.99, 98.09))))
_put("III", "cifar10", "mlp", dict(zip(_T3, (61.22, 19.29, 35.75, 61.28))))

# ---- Table IV: backprop with joint early-exit losses, LCT_n3 structure (K = 4) ------------------------
_put("IV", "cifar10", "resnet50", {("joint", 4): 94.80})
_put("IV", "cifar10", "resnet101", {("joint", 4): 94.52})
_put("IV", "cifar100", "resnet50", {("joint", 4): 76.39})
_put("IV", "cifar100", "resnet101", {("joint", 4): 75.37})
_put("IV", "imagenet", "resnet50", {("joint", 4): (71.86, 90.32)})
_put("IV", "imagenet", "resnet101", {("joint", 4): (72.40, 90.66)})

# ---- Table VI: memory per GPU (MiB) ------------------------------------------------------------------
for _model, _bp, _lct in (("resnet50", 8807, (3207, 3077, 7141, 7171)),
                          ("resnet101", 8789, (4663, 7141, 5863, 5127))):
    PAPER[("VI", "imagenet", _model, "bp", 1, "gpu1")] = _bp
    for _i, _v in enumerate(_lct, 1):
        PAPER[("VI", "imagenet", _model, "lct", 4, f"gpu{_i}")] = _v
for _method, _vals in (("lct", (4659, 5461, 5463, 5459)), ("dni", (4693, 5453, 4943, 5459))):
    for _i, _v in enumerate(_vals, 1):
        PAPER[("VI", "cifar100", "*", _method, 4, f"gpu{_i}")] = _v
# the 4-layer LSTM on PTB: BP on one GPU, LCT_n3 one layer per GPU
PAPER[("VI", "ptb", "lstm4", "bp", 1, "gpu1")] = 8695
for _i, _v in enumerate((4573, 2441, 2441, 4489), 1):
    PAPER[("VI", "ptb", "lstm4", "lct", 4, f"gpu{_i}")] = _v

# ---- Table VII: sub-model accuracy of LCT_n3 (Sub_1..3; Main is Table I's LCT_n3) --------------------
for _data, _model, _subs in (
        ("cifar10", "resnet50", (86.78, 91.40, 93.24, 93.32)),
        ("cifar100", "resnet50", (60.03, 66.71, 69.29, 70.90)),
        ("imagenet", "resnet50", ((36.59, 62.18), (49.98, 75.08), (60.73, 83.30), (65.81, 86.79))),
        ("cifar10", "resnet101", (91.68, 93.35, 93.33, 93.34)),
        ("cifar100", "resnet101", (67.22, 71.17, 71.59, 72.10)),
        ("imagenet", "resnet101", ((49.44, 75.11), (62.68, 84.80), (63.69, 85.44), (67.05, 87.80)))):
    for _i, _v in enumerate(_subs, 1):
        _name = f"sub{_i}" if _i < 4 else "main"
        if isinstance(_v, tuple):
            PAPER[("VII", _data, _model, "lct", 4, _name)] = _v[0]
            PAPER[("VII", _data, _model, "lct", 4, f"{_name}_top5")] = _v[1]
        else:
            PAPER[("VII", _data, _model, "lct", 4, _name)] = _v

# ---- Table VIII: complexity of the LCT_n3 sub-models (millions), the paper's table -------------------------
# (FLOP, critic's FLOP, parameters, critic's parameters) per sub-model; the main network has no critic. The
# paper's text quotes slightly different values for four cells (47.55, 19.53, 85.17, 23.99); these are the table's.
_T8 = {
    ("cifar10", "resnet50"): {"sub1": (3.64, 3.21, 1.82, 1.61), "sub2": (4.71, 1.84, 2.35, 0.92),
                              "sub3": (19.61, 2.52, 9.79, 1.26), "main": (47.69, None, 23.82, None)},
    ("cifar100", "resnet50"): {"sub1": (27.24, 26.80, 13.62, 13.40), "sub2": (10.61, 7.73, 5.30, 3.87),
                               "sub3": (21.08, 4.00, 10.53, 2.00), "main": (53.58, None, 26.77, None)},
    ("imagenet", "resnet50"): {"sub1": (0.95, 0.50, 0.47, 0.25), "sub2": (3.68, 0.79, 1.84, 0.40),
                               "sub3": (18.48, 1.38, 9.23, 0.69), "main": (51.15, None, 25.55, None)},
    ("cifar10", "resnet101"): {"sub1": (4.71, 1.84, 2.35, 0.92), "sub2": (24.08, 2.52, 12.03, 1.26),
                               "sub3": (44.08, 2.52, 22.01, 1.26), "main": (85.44, None, 42.68, None)},
    ("cifar100", "resnet101"): {"sub1": (10.61, 7.73, 5.30, 3.87), "sub2": (25.56, 4.00, 12.76, 2.00),
                                "sub3": (45.55, 4.00, 22.75, 2.00), "main": (91.34, None, 45.62, None)},
    ("imagenet", "resnet101"): {"sub1": (3.68, 0.79, 1.84, 0.40), "sub2": (25.19, 1.38, 12.58, 0.69),
                                "sub3": (47.43, 1.38, 23.68, 0.69), "main": (93.38, None, 46.64, None)},
}
for (_data, _model), _subs in _T8.items():
    for _sub, _vals in _subs.items():
        for _name, _v in zip(("flops_m", "critic_flops_m", "params_m", "critic_params_m"), _vals):
            if _v is not None:
                PAPER[("VIII", _data, _model, "lct", 4, f"{_sub}_{_name}")] = _v

# ---- Figure 5: training-time reduction vs BP (%) ------------------------------------------------------
for _data, _model, _n1, _n3 in (("cifar10", "resnet50", 27.8, 33.6), ("cifar10", "resnet101", 31.9, 40.9),
                                ("cifar100", "resnet50", 32.0, 34.2), ("cifar100", "resnet101", 32.4, 43.9)):
    PAPER[("time", _data, _model, "lct", 2, "reduction")] = _n1
    PAPER[("time", _data, _model, "lct", 4, "reduction")] = _n3
PAPER[("time", "ptb", "lstm4", "lct", 2, "reduction")] = 16.7  # Fig. 6: the 4-layer LSTM, LCT_n1 and LCT_n3
PAPER[("time", "ptb", "lstm4", "lct", 4, "reduction")] = 35.8

# ---- Communication share of training time (%), CIFAR-10 (estimated by the authors) ----------------
for _model, _n1, _n3 in (("resnet50", 3.79, 8.67), ("resnet101", 1.47, 3.58)):
    PAPER[("comm", "cifar10", _model, "lct", 2, "comm_share")] = _n1
    PAPER[("comm", "cifar10", _model, "lct", 4, "comm_share")] = _n3

# ---- Figure 7: LCT faster than pipelined BP on as many GPUs (%), CIFAR-100 ResNet-101 ----------------
PAPER[("fig7", "cifar100", "resnet101", "lct", 2, "faster_than_gpipe")] = 15.7
PAPER[("fig7", "cifar100", "resnet101", "lct", 4, "faster_than_gpipe")] = 3.5

NOTES = {
    "VI": "The paper does not say which network its CIFAR-100 memory figures (LCT and DNI, 4 GPUs) are for; "
          "they are shown beside every CIFAR-100 ResNet row (model `*`).",
    "VIII": "The paper's 'FLOP (M)' is about twice its parameter count (47.69 M for ResNet-50's 23.82 M "
            "parameters), so it leaves out the convolutions' spatial positions; ours are torch.utils.flop_counter "
            "FLOPs of one sample (2 per multiply-add at every position), far larger: the FLOP columns are not "
            "comparable, the parameter columns are.",
    "comm": "The authors estimated communication by timing transfers of tensors of the same size as the "
            "group outputs and critic losses; ours is measured blocking time per worker.",
}


def paper_value(table: str, data: str, model: str, method: str, groups: int, metric: str = "top1") -> float | None:
    """The paper's number for a cell, or None where the paper reports none."""
    v = PAPER.get((table, data, model, method, groups, metric))
    if v is None:
        v = PAPER.get((table, data, "*", method, groups, metric))
    return v


def cells(table: str) -> Iterator[tuple[str, str, str, int, str]]:
    """(data, model, method, groups, metric) of every number the paper reports in `table`, sorted."""
    yield from sorted(k[1:] for k in PAPER if k[0] == table)


def frame(table: str) -> pd.DataFrame:
    """The paper's cells of `table`: data, model, method, groups, metric, paper (sorted)."""
    rows = [(*cell, PAPER[(table, *cell)]) for cell in cells(table)]
    return pd.DataFrame(rows, columns=["data", "model", "method", "groups", "metric", "paper"], dtype=object)


# ---- the LSTM tables (Section V-B2) -------------------------------------------------------------------
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

# ---- ResIST (Dun et al., seeds/resist-paper.txt) Table 1: ResNet-101, data communicated per round (GB) for
# 2 / 4 / 8 machines --------------------------------------------------------------------------------------
RESIST_TABLE1 = {"localsgd": (0.662, 1.325, 2.649), "resist": (0.454, 0.720, 1.289)}

# ---- The local-learning peers on CIFAR-10 (Wang et al., ICLR 2021, "Revisiting Locally Supervised Learning";
# InfoPro-Pytorch's README shows its Tables 2 and 3 as figs/cifar_k.png and figs/cifar.png, read from there):
# test error (%), mean and std over 5 trials, by (network, our method, the options our cell has, K). E2E is
# end-to-end backprop (bp, K = 1); DGL (Belilovsky et al. 2020) is greedy with DGL's auxiliary net; InfoPro
# (Contrast) / (Softmax) are infopro with loss=contrast (the default) / loss=softmax. Table 2 also has Greedy
# SL (a linear head) and Asy-InfoPro, which no method here runs.
LOCAL_LEARNING: dict[tuple[str, str, str, int], tuple[float, float]] = {}
for _model, _e2e, _rows in (
        ("resnet32", (7.37, 0.10), {
            ("greedy", "head=dgl"): ((8.69, 0.12), (11.48, 0.20), (14.17, 0.28), (16.21, 0.36)),
            ("infopro", "loss=softmax"): ((8.13, 0.23), (8.64, 0.25), (11.40, 0.18), (14.23, 0.42)),
            ("infopro", ""): ((7.76, 0.12), (8.58, 0.17), (11.13, 0.19), (12.75, 0.11))}),
        ("resnet110", (6.50, 0.34), {
            ("greedy", "head=dgl"): ((7.70, 0.28), (10.50, 0.11), (12.46, 0.37), (13.80, 0.15)),
            ("infopro", "loss=softmax"): ((7.01, 0.34), (7.96, 0.06), (9.40, 0.27), (10.78, 0.28)),
            ("infopro", ""): ((6.42, 0.08), (7.30, 0.14), (8.93, 0.40), (9.90, 0.19))})):
    LOCAL_LEARNING[(_model, "bp", "", 1)] = _e2e
    for (_method, _options), _errors in _rows.items():
        for _k, _v in zip((2, 4, 8, 16), _errors):
            LOCAL_LEARNING[(_model, _method, _options, _k)] = _v
# Table 3: GPU memory (GB) training ResNet-110 on CIFAR-10 at batch 1024 on one Titan Xp (the minimum needed,
# cudnn.benchmark on): E2E, and InfoPro* (memory-balanced cuts) with K = 2, 3, 4 local modules.
INFOPRO_MEMORY_GB = {("bp", 1): 9.40, ("infopro", 2): 5.38, ("infopro", 3): 4.22, ("infopro", 4): 3.52}
INFOPRO_MEMORY_BATCH = 1024
