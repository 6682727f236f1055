"""Time to target (AlgoPerf-style): how much training wall-clock, and how many samples, each method needs
to reach a target accuracy (or BPC), per setting.

A method that runs 1.7x faster per step but converges slower may still lose; equal-iteration timings
(Fig. 5) cannot show it, the time to a common target can. Per setting (the cells of one data set,
model, profile, kind of time, simulated or parallel, and setting; frame.py) the target is, by default,
BP's final test accuracy minus 1 point (BP = the `bp` cell with K = 1 of that setting, mean over its
seeds), or BP's final BPC plus 0.02 for text; `python -m bench report --target ...` changes it
(`parse_targets`). A run reaches the target at its first evaluation at or past it: the time is that
evaluation's training wall-clock (evaluation excluded; simulated in process, parallel on real
workers, as the record's `parallel` says) and the samples are the training samples seen by then
(records from before `samples_seen` give step x batch). The evaluation interval bounds the
resolution: the true crossing lies between two evaluations. A cell is `not reached` where no run
reaches the target; where some seeds do and others do not, the mean is over those that do and the
status says how many.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BenchError
from .frame import (DATA_ORDER, EXECUTOR_ORDER, MODEL_ORDER, PROFILE_ORDER, Cell, fmt, label, mean_std,
                    method_rank, profiles_text, rank, table)

NOT_REACHED = "not reached"


@dataclass(frozen=True)
class Target:
    """What a run must reach in `metric` ("acc": test accuracy %, reached from below; "bpc": test BPC,
    reached from above): BP's final value plus `value` where `relative`, else `value` itself."""

    metric: str
    value: float
    relative: bool

    def text(self) -> str:
        if not self.relative:
            return f"{self.metric} {self.value:g}"
        return f"BP {'-' if self.value < 0 else '+'} {abs(self.value):g}"

    def resolve(self, bp_final: float | None) -> float | None:
        if not self.relative:
            return self.value
        return None if bp_final is None else bp_final + self.value

    def reached(self, value: float, target: float) -> bool:
        return value >= target if self.metric == "acc" else value <= target


DEFAULT_TARGETS = {"acc": Target("acc", -1.0, True), "bpc": Target("bpc", 0.02, True)}
_SPEC = re.compile(r"^(?:(acc|bpc)=)?(?:bp(?P<offset>[+-]\d+(?:\.\d*)?)?|(?P<value>\d+(?:\.\d*)?))$")


def parse_targets(items: list[str] | None) -> dict[str, Target]:
    """`--target` items: `bp-1` (BP's final accuracy minus 1 point, the default), `85` (85% accuracy),
    `bpc=bp+0.02` (BP's final BPC plus 0.02, the default), `bpc=1.4`; a metric not named is accuracy, and
    a metric not given keeps its default. Bad input is one line."""
    targets = dict(DEFAULT_TARGETS)
    for item in items or ():
        m = _SPEC.match(item.strip())
        if m is None:
            raise BenchError(f"--target {item!r}: want bp, bp-D, bp+D or a number, optionally after acc= or "
                             f"bpc= (e.g. bp-1, 85, bpc=bp+0.02, bpc=1.4)")
        metric = m.group(1) or "acc"
        if m.group("value") is not None:
            targets[metric] = Target(metric, float(m.group("value")), False)
        else:
            offset = m.group("offset")
            targets[metric] = Target(metric, float(offset) if offset else 0.0, True)
    return targets


def kind(executor: str) -> str:
    return "simulated" if executor == "simulated" else "parallel"


def metric_of(c: Cell) -> str | None:
    """The cell's target metric: BPC for text runs, accuracy for the others; None without curves."""
    if any(r["curves"].get("test_bpc") for r in c.runs):
        return "bpc"
    if any(r["curves"].get("test_acc") for r in c.runs):
        return "acc"
    return None


def final_value(rec: dict, metric: str) -> float | None:
    return rec["final"].get("test_bpc" if metric == "bpc" else "test_acc")


def samples_seen(rec: dict) -> list[int]:
    c = rec["curves"]
    if c.get("samples_seen") and len(c["samples_seen"]) == len(c["step"]):
        return c["samples_seen"]
    return [s * rec["config"]["batch_size"] for s in c["step"]]  # records from before samples_seen


def time_to(rec: dict, target: Target, value: float) -> tuple[float, int] | None:
    """(training seconds, samples seen) at the run's first evaluation that reaches `value`; None if none does
    (or the run's curves do not line its evaluations up with its training clock)."""
    c = rec["curves"]
    metric = c.get("test_bpc" if target.metric == "bpc" else "test_acc") or []
    times = c.get("train_time_s") or []
    if not metric or len(metric) != len(times):
        return None
    for v, t, n in zip(metric, times, samples_seen(rec)):
        if v is not None and target.reached(v, value):
            return t, n
    return None


def setting_key(c: Cell) -> tuple:
    return (c.data, c.model, c.profile, kind(c.executor), c.setting)


def bp_reference(cells: list[Cell], c: Cell) -> Cell | None:
    """BP with one group (one worker) in c's setting and kind of time."""
    found = [h for h in cells if h.method == "bp" and h.groups == 1 and not h.options and h.runs
             and setting_key(h) == setting_key(c)]
    return sorted(found, key=lambda h: rank(EXECUTOR_ORDER, h.executor))[0] if found else None


TTA_MD = ["data", "model", "profile", "time", "setting", "method", "K", "seeds", "target", "final",
          "time to target (s)", "samples to target", "time vs BP", "status"]
TTA_CSV = ["table", "data", "model", "method", "groups", "profile", "executor", "options", "seeds", "metric",
           "target", "final_mean", "time_to_target_s", "time_to_target_std_s", "samples_to_target", "reached",
           "runs", "time_over_bp", "status", "setting"]


def _row(cells: list[Cell], c: Cell, targets: dict[str, Target]) -> tuple[list, list]:
    metric = metric_of(c)
    target = targets[metric]
    bp = bp_reference(cells, c)
    value = target.resolve(None if bp is None else bp.mean(lambda r: final_value(r, metric)))
    hits = [] if value is None else [h for h in (time_to(r, target, value) for r in c.runs) if h is not None]
    t_mean, t_std = mean_std([t for t, _ in hits])
    n_mean = mean_std([float(n) for _, n in hits])[0]
    bp_hits = [] if value is None or bp is None else [h for h in (time_to(r, target, value) for r in bp.runs) if h]
    bp_t = mean_std([t for t, _ in bp_hits])[0]
    over = None if t_mean is None or not bp_t else t_mean / bp_t
    if value is None:
        status = "no BP record of this setting"
    elif not hits:
        status = NOT_REACHED
    else:
        status = "reached" if len(hits) == len(c.runs) else f"reached by {len(hits)} of {len(c.runs)} seeds"
    digits = 3 if metric == "bpc" else 2
    final = c.mean(lambda r: final_value(r, metric))
    name = label(c.method, c.groups) + (f" ({c.options})" if c.options else "")
    target_text = target.text() if value is None else f"{metric} {'≥' if metric == 'acc' else '≤'} {value:.{digits}f}"
    md = [c.data, c.model, c.profile, c.executor, c.setting, name, str(c.groups), c.seeds_text, target_text,
          fmt(final, digits), NOT_REACHED if value is not None and not hits else fmt(t_mean, 1),
          NOT_REACHED if value is not None and not hits else fmt(n_mean, 0), fmt(over, 3), status]
    raw = ["time_to_target", c.data, c.model, c.method, c.groups, c.profile, c.executor, c.options,
           " ".join(map(str, c.seeds)), metric, value, final, t_mean, t_std, n_mean, len(hits), len(c.runs), over,
           status, c.setting]
    return md, raw


def table_time_to_target(cells: list[Cell], targets: dict[str, Target] | None = None):
    targets = targets or DEFAULT_TARGETS
    curved = [c for c in cells if c.runs and metric_of(c) is not None]
    rows = [_row(cells, c, targets) for c in curved]
    rows.sort(key=lambda r: (rank(DATA_ORDER, r[1][1]), rank(MODEL_ORDER, r[1][2]), rank(PROFILE_ORDER, r[1][5]),
                             kind(r[1][6]), r[1][19], method_rank(r[1][3]), r[1][4], rank(EXECUTOR_ORDER, r[1][6]),
                             r[1][7]))
    return table("time_to_target", f"Time to target — training wall-clock and samples each method needs to reach "
                 f"a target, per setting (profiles: {profiles_text(curved)})",
                 [f"Target per setting: accuracy {targets['acc'].text()} points, BPC {targets['bpc'].text()} "
                  "(BP = bp with K = 1 of the same setting and kind of time, its final value averaged over seeds; "
                  "`python -m bench report --target ...` sets others). A run reaches it at its first evaluation at "
                  "or past the target: the time is the training wall-clock by then (evaluation excluded; "
                  "*simulated* = in process, groups one after another; *parallel* = one worker per group) and the "
                  "samples are the training samples seen by then; the evaluation interval bounds the resolution. "
                  "`not reached`: no run of the cell reaches it. `time vs BP`: the cell's time to target over BP's."],
                 TTA_MD, TTA_CSV, rows)
