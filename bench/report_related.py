"""The report's table of the related-work methods (greedy, admm, resist, localsgd, auxvar) beside bp and lct.

One row per (data, model, method, K, profile, time) that has a related method's record on the same
(data, model, profile, time), with bp / lct rows of that setting beside them. For the round-based methods
(resist, localsgd: K = S workers) it also shows the record's `comm` block: rounds, the bytes moved per
round in ResIST's Table 1 convention (2 x sum over workers of the sub-model each holds), and, from real
workers, the bytes the collectives sent and the time one aggregation took.
"""
from __future__ import annotations

from . import report as R

RELATED = ("greedy", "admm", "resist", "localsgd", "auxvar")
BASELINES = ("bp", "lct")
ORDER = BASELINES + RELATED
# ResIST Table 1 (ResNet-101, data communicated per round, GB) for 2 / 4 / 8 machines.
PAPER_TABLE1 = {"localsgd": (0.662, 1.325, 2.649), "resist": (0.454, 0.720, 1.289)}


def _comm(key: str):
    return lambda rec: (rec.get("comm") or {}).get(key)


def _mb(values: list[float]) -> str:
    m, _ = R.mean_std(values)
    return "-" if m is None else f"{m / 1e6:.3f}"


def table_related(groups) -> R.Table:
    settings = {(g.data, g.model, g.profile, g.executor, g.setting) for g in groups.values() if g.method in RELATED}
    md_cols = ["data", "model", "method", "K / S", "profile", "time", "seeds", "steps", "test acc (%)",
               "train time (s)", "time / BP", "rounds", "MB / round (Table 1 conv.)", "wire MB / round",
               "aggregation s / round", "status"]
    csv_cols = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "steps",
                "test_acc_mean", "test_acc_std", "train_time_mean_s", "time_over_bp", "rounds", "bytes_per_round",
                "wire_bytes_per_round", "aggregation_s_per_round", "status"]
    rows = []
    for g in groups.values():
        if g.method not in ORDER or (g.data, g.model, g.profile, g.executor, g.setting) not in settings:
            continue
        acc, t = g.values(lambda r: r["final"].get("test_acc")), g.values(R.train_time)
        tm = R.mean_std(t)[0]
        bp = R._bp_of(groups, g)
        bpt = R.mean_std(bp.values(R.train_time))[0] if bp is not None else None
        ratio = tm / bpt if tm is not None and bpt else None
        rounds, by = g.values(_comm("rounds")), g.values(_comm("bytes_per_round"))
        wire, agg = g.values(_comm("wire_bytes_per_round")), g.values(_comm("aggregation_s_per_round"))
        rows.append(([g.data, g.model, g.method, str(g.groups), g.profile, g.executor, g.seeds_text,
                      g.steps, R.fmt_ours(acc), R.fmt_ours(t, 1), R.fmt(ratio, 2),
                      R.fmt(R.mean_std(rounds)[0], 0), _mb(by), _mb(wire), R.fmt(R.mean_std(agg)[0], 3), g.status],
                     ["related", g.data, g.model, g.method, g.groups, g.profile, g.executor, " ".join(map(str, g.seeds)),
                      g.steps, *R.mean_std(acc), tm, ratio, R.mean_std(rounds)[0], R.mean_std(by)[0],
                      R.mean_std(wire)[0], R.mean_std(agg)[0], g.status]))
    rows.sort(key=lambda r: (R._rank(R.DATA_ORDER, r[1][1]), R._rank(R.MODEL_ORDER, r[1][2]),
                             R._rank(R.PROFILE_ORDER, r[1][5]), R._rank(R.EXECUTOR_ORDER, r[1][6]),
                             R._rank(ORDER, r[1][3]), r[1][4]))
    paper = "; ".join(f"{m} " + " / ".join(f"{v:.3f}" for v in vs) for m, vs in PAPER_TABLE1.items())
    return R.Table(
        "related_methods",
        "Related-work methods beside BP and LCT: accuracy, time, and communication per round "
        f"(profiles: {R._profiles_text(g for g in groups.values() if g.method in RELATED)})",
        ["`greedy`: each group trained by its own head only (LCT without the critic cascade). `admm`: Taylor et al. "
         "2016 on the MLP (no gradients). `auxvar`: quadratic-penalty auxiliary-variable training. `resist` / "
         "`localsgd`: K = S workers, each on 1/S of every batch, aggregated every l steps; bytes per round in "
         "ResIST's Table 1 convention (sub-model down and up per worker, float32 weights and BN statistics), "
         "`wire` = what the gloo collectives sent (real workers only). *simulated* = one process; *parallel* = "
         f"S worker processes. Time / BP is against bp with K = 1 on the same setting. Paper, ResNet-101, GB per "
         f"round for 2 / 4 / 8 machines: {paper}."],
        md_cols, csv_cols, rows)
