"""The related-work methods (greedy, admm, blockadmm, auxvar, auxnet, asyncbp, resist, localsgd, and any method the
paper did not run) beside BP and LCT: accuracy, time, and communication per step and per round.

One row per cell of a related method, and the bp / lct cells of the same (data, model, profile, time,
setting) beside them. For the round-based methods (K = S workers) it also shows the record's `comm`
block: rounds, the bytes moved per round in ResIST's Table 1 convention (2 x sum over workers of the
sub-model each holds), and, from real workers, the bytes the collectives sent and the time one
aggregation took. From real workers it also shows the bytes every worker sent, summed and divided by the
timed steps (wire MB / step).
"""
from __future__ import annotations

from .frame import DATA_ORDER, EXECUTOR_ORDER, MODEL_ORDER, PROFILE_ORDER, Cell, fmt, fmt_ours, mean_std, \
    method_rank, profiles_text, rank, table
from .paper import RESIST_TABLE1
from .timing import bp_of, train_time

# the methods of the paper's own tables; every other method is related work
PAPER_METHODS = ("bp", "lct", "dni", "cdni", "joint", "gpipe", "ddp")
BASELINES = ("bp", "lct")


def is_related(c: Cell) -> bool:
    return c.method not in PAPER_METHODS


def _comm(key: str):
    return lambda rec: (rec.get("comm") or {}).get(key)


def bytes_per_step(rec: dict) -> float | None:
    """What all workers sent per timed step (real workers only: an in-process record moves nothing)."""
    workers, final = rec.get("workers") or [], rec["final"]
    steps = final.get("timed_steps") or final.get("steps")
    if not workers or not steps:
        return None
    return sum(w.get("bytes_sent") or 0 for w in workers) / steps


def _mb(values: list[float]) -> str:
    m, _ = mean_std(values)
    return "-" if m is None else f"{m / 1e6:.3f}"


MD = ["data", "model", "method", "K / S", "profile", "time", "seeds", "steps", "test acc (%)", "train time (s)",
      "time / BP", "wire MB / step", "rounds", "MB / round (Table 1 conv.)", "wire MB / round",
      "aggregation s / round", "status"]
CSV = ["table", "data", "model", "method", "groups", "profile", "executor", "seeds", "steps", "test_acc_mean",
       "test_acc_std", "train_time_mean_s", "time_over_bp", "bytes_per_step", "rounds", "bytes_per_round",
       "wire_bytes_per_round", "aggregation_s_per_round", "status"]


def _row(cells: list[Cell], c: Cell) -> tuple[list, list]:
    acc, t = c.values(lambda r: r["final"].get("test_acc")), c.values(train_time)
    tm = mean_std(t)[0]
    bp = bp_of(cells, c)
    bpt = bp.mean(train_time) if bp is not None else None
    ratio = tm / bpt if tm is not None and bpt else None
    rounds, by, wire, agg = (c.values(_comm(k)) for k in ("rounds", "bytes_per_round", "wire_bytes_per_round",
                                                          "aggregation_s_per_round"))
    step_bytes = c.values(bytes_per_step)
    return ([c.data, c.model, c.method, str(c.groups), c.profile, c.executor, c.seeds_text, c.steps, fmt_ours(acc),
             fmt_ours(t, 1), fmt(ratio, 2), _mb(step_bytes), fmt(mean_std(rounds)[0], 0), _mb(by), _mb(wire),
             fmt(mean_std(agg)[0], 3), c.status],
            ["related", c.data, c.model, c.method, c.groups, c.profile, c.executor, " ".join(map(str, c.seeds)),
             c.steps, *mean_std(acc), tm, ratio, mean_std(step_bytes)[0], mean_std(rounds)[0], mean_std(by)[0],
             mean_std(wire)[0], mean_std(agg)[0], c.status])


def table_related(cells: list[Cell]):
    related = [c for c in cells if is_related(c)]
    settings = {(c.data, c.model, c.profile, c.executor, c.setting) for c in related}
    shown = [c for c in cells if (is_related(c) or c.method in BASELINES)
             and (c.data, c.model, c.profile, c.executor, c.setting) in settings]
    shown.sort(key=lambda c: (rank(DATA_ORDER, c.data), rank(MODEL_ORDER, c.model), rank(PROFILE_ORDER, c.profile),
                              rank(EXECUTOR_ORDER, c.executor), (c.method not in BASELINES, method_rank(c.method)),
                              c.groups))
    paper = "; ".join(f"{m} " + " / ".join(f"{v:.3f}" for v in vs) for m, vs in RESIST_TABLE1.items())
    return table(
        "related_methods",
        "Related-work methods beside BP and LCT: accuracy, time, and communication per step and per round "
        f"(profiles: {profiles_text(related)})",
        ["`greedy`: each group trained by its own head only (LCT without the critic cascade). `admm`: Taylor et al. "
         "2016 on the MLP (no gradients). `blockadmm`: Stochastic Block-ADMM (blocks fit auxiliary variables and "
         "duals by SGD). `auxvar`: quadratic-penalty auxiliary-variable training. `auxnet`: groups train in parallel "
         "on inputs from small auxiliary networks, a serial backprop pass every few steps. `asyncbp`: asynchronous "
         "model-parallel backprop, true gradients applied late (in process: a simulation of the delays). "
         "Wire MB / step: what all workers sent (measured; real workers only). `resist` / "
         "`localsgd`: K = S workers, each on 1/S of every batch, aggregated every l steps; bytes per round in "
         "ResIST's Table 1 convention (sub-model down and up per worker, float32 weights and BN statistics), "
         "`wire` = what the gloo collectives sent (real workers only). *simulated* = one process; *parallel* = "
         f"S worker processes. Time / BP is against bp with K = 1 on the same setting. Paper, ResNet-101, GB per "
         f"round for 2 / 4 / 8 machines: {paper}."],
        MD, CSV, [_row(cells, c) for c in shown])
