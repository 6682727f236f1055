"""The cost model's entry points: one configuration, a sweep over K, and the configuration of a real
distributed run's record, each predicted from a calibration and a link model.

A configuration is validated like a real run: the method's own check and its backend's (one-line
errors: gpipe's micro-batches must divide the batch, 1f1b needs m >= K, ddp's K must divide it, the
overlapped schedule needs a method that updates in forward). The cut is the paper rule's, the timed
rule's (from the calibration's seconds) or the cost model's fastest (search.py), or a record's own.
Throughput is that of one phase of `steps` steps that starts and ends drained, as the engine's phases do.
"""
from __future__ import annotations

from dataclasses import dataclass

from methods import Backend, create_method

from ..config import RunConfig
from ..errors import BenchError
from ..exec.backends import backend_for
from ..exec.settings import SCHEDULE_ALIASES, DistConfig
from ..models.split import check_count, paper_bounds
from .calibration import Calibration
from .link import LinkModel
from .programs import Prediction, Setup, simulate
from .search import stage_schedule, throughput_cut, timed_cut

CUTS = ("paper", "timed", "throughput")


def check(cal: Calibration, method, k: int, schedule: str, options: dict) -> None:
    """The checks a real run of this configuration would pass (one line each)."""
    check_count(cal.setting.get("model", "model"), cal.n, k)
    method.check(cal.setting.get("model"), k, cal.batch_size, options)
    cfg = RunConfig(method=method.name, groups=k, batch_size=cal.batch_size)
    backend_for(method, k).validate(cfg, DistConfig(schedule=schedule), method, options)


def choose_cut(cal: Calibration, s: Setup, rule: str, link: LinkModel) -> list[int]:
    if rule == "paper":
        return paper_bounds(cal.setting.get("model", ""), cal.units, s.groups)
    if rule == "timed":
        return timed_cut(cal, s.groups)
    if rule == "throughput":
        return throughput_cut(cal, s.method, s.groups, s.options, link, s.schedule, s.max_stale)
    raise BenchError(f"unknown cut {rule!r}; valid: {', '.join(CUTS)}")


def predict(cal: Calibration, method_name: str, k: int, link: LinkModel, *, schedule: str = "lockstep",
            options: dict | None = None, steps: int = 100, max_stale: int = 2, cut: str = "paper",
            bounds: list[int] | None = None, first_step: int = 0) -> Prediction:
    """One configuration's predicted phase (bounds: a given cut, else `cut`'s)."""
    method = create_method(method_name)
    opts = method.resolve_options(options or {})
    if steps < 1 or max_stale < 1:
        raise BenchError("--steps and --max-stale must be >= 1")
    check(cal, method, k, schedule, opts)
    s = Setup(method, k, list(bounds) if bounds else [], opts, schedule, max_stale, steps, first_step)
    if method.backend is Backend.DATA_PARALLEL:  # every worker holds the whole network
        s.bounds = [0, cal.n]
    elif not bounds:
        s.bounds = choose_cut(cal, s, cut, link)
    return simulate(cal, s, link)


def schedules_of(method_name: str, k: int, asked: str) -> list[str]:
    """The stage schedules to predict: one for K = 1 and for backends with their own; `both` gives lockstep and,
    where the method may run it, overlapped."""
    method = create_method(method_name)
    if k == 1 or method.backend is not Backend.STAGES or asked != "both":
        return ["lockstep" if asked == "both" else asked]
    return ["lockstep"] + (["overlapped"] if stage_schedule(method) == "overlapped" else [])


@dataclass
class Row:
    """One line of a sweep: a prediction, or why there is none."""

    method: str
    groups: int
    schedule: str
    prediction: Prediction | None
    ratio: float | None          # samples/s over BP on one device
    error: str = ""


def sweep(cal: Calibration, methods: list[str], ks: list[int], link: LinkModel, *, schedule: str = "both",
          options: dict[str, dict] | None = None, steps: int = 100, max_stale: int = 2,
          cut: str = "paper") -> list[Row]:
    """Every method at every K (and schedule), with its ratio to BP on one device (the same calibration)."""
    bp1 = predict(cal, "bp", 1, link, steps=steps).samples_per_s
    rows = []
    for name in methods:
        for k in (k for k in ks if k >= create_method(name).min_groups):  # no such run below min_groups
            for sched in schedules_of(name, k, schedule):
                try:
                    p = predict(cal, name, k, link, schedule=sched, options=(options or {}).get(name), steps=steps,
                                max_stale=max_stale, cut=cut)
                except BenchError as e:
                    rows.append(Row(name, k, sched, None, None, str(e)))
                    continue
                rows.append(Row(name, k, p.schedule, p, p.samples_per_s / bp1))
    return rows


def record_setup(record: dict) -> dict:
    """What a distributed record's run was: method, K, schedule, options, cut, timed steps (from the first one,
    after the warm-up), max_stale."""
    c, d = record["config"], record["config"].get("distributed") or {}
    schedule = SCHEDULE_ALIASES.get(d.get("schedule", "lockstep"), d.get("schedule", "lockstep"))
    return dict(method_name=c["method"], k=int(c["groups"]), schedule=schedule, options=c.get("extra") or {},
                steps=int(record["final"].get("timed_steps") or c["steps"]), max_stale=int(d.get("max_stale", 2)),
                bounds=record["split"]["bounds"], first_step=int(d.get("warmup_steps", 0)))


def predict_record(cal: Calibration, record: dict, link: LinkModel) -> Prediction:
    """The prediction for the configuration a distributed record ran (its own cut and timed steps)."""
    s = record_setup(record)
    if int(record["config"]["batch_size"]) != cal.batch_size:
        raise BenchError(f"the calibration is for batch {cal.batch_size}, the record ran "
                         f"{record['config']['batch_size']}")
    return predict(cal, s.pop("method_name"), s.pop("k"), link, **s)
