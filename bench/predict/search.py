"""The cut that maximises predicted throughput (`--split timed --split-objective throughput`).

The timed rule's own objective, the least-loaded slowest group (units + a critic after each group), ignores
what decides a step on real workers: the method's own boundary modules, which side of a boundary the
optimiser and the backward sit on, the transfers, the schedule's waiting. Here every valid cut is
simulated with the method's calibrated costs (all of them where there are at most EXHAUSTIVE, else a
hill climb, one boundary moved by one unit at a time, from the timed rule's cut) and the fastest kept.
The schedule assumed: overlapped for a stage method that may run it (it updates in forward, or gets no
feedback), else lockstep; a pipelining method's own schedule and micro-batches; the link: the device's
preset (link.preset_for). Data parallelism runs the whole network on every worker: no cut to choose.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import combinations
from math import comb

from methods import Backend, Feedback

from ..errors import BenchError
from ..models.split import min_max_partition
from .calibration import Calibration
from .link import LinkModel
from .programs import Setup, simulate

EXHAUSTIVE = 600  # cuts simulated one by one up to this many (ResNet-50: K <= 4)


def stage_schedule(method) -> str:
    """The stage schedule a method is fastest under: overlapped where it is legal (stages.py's rule)."""
    return "overlapped" if method.updates_in_forward or method.feedback is Feedback.NONE else "lockstep"


def divisors_for(method, options: dict) -> tuple[int, ...]:
    """Batch divisors the search needs measured: the micro-batch for a pipelining method, else the batch."""
    return (1, options["microbatches"]) if method.backend is Backend.PIPELINING else (1,)


def steps_for(k: int) -> int:
    return 4 * k + 8  # enough steps past the pipeline's fill to rank cuts


def timed_cut(cal: Calibration, k: int) -> list[int]:
    """The timed rule's cut from the calibration's own seconds (split.timed_split's objective)."""
    b = cal.batch_size
    unit = [cal.unit_s("forward", j, b) + cal.unit_s("backward", j, b) for j in range(cal.n)]
    return min_max_partition(unit, cal.head_s, k).bounds


def _cuts(n: int, k: int):
    for inner in combinations(range(1, n - 1), k - 1):  # the classifier never alone: last cut <= n - 2
        yield [0, *inner, n]


def _neighbours(bounds: list[int], n: int):
    for i in range(1, len(bounds) - 1):
        for d in (-1, 1):
            b = list(bounds)
            b[i] += d
            if b[i - 1] < b[i] < b[i + 1] and b[-2] <= n - 2:
                yield b


def best_cut(cal: Calibration, setup: Setup, link: LinkModel, start: list[int]) -> list[int]:
    """The cut of the fastest predicted phase for `setup` (its bounds are replaced), starting from `start`."""
    n, k = cal.n, setup.groups
    score = lambda b: simulate(cal, replace(setup, bounds=b), link).samples_per_s  # noqa: E731
    if comb(n - 2, k - 1) <= EXHAUSTIVE:
        return max(_cuts(n, k), key=score)
    best, best_score = start, score(start)
    improved = True
    while improved:
        improved = False
        for b in _neighbours(best, n):
            s = score(b)
            if s > best_score:
                best, best_score, improved = b, s, True
    return best


def throughput_cut(cal: Calibration, method, k: int, options: dict, link: LinkModel, schedule: str | None = None,
                   max_stale: int = 2) -> list[int]:
    """The cut a run's `--split-objective throughput` takes (module docstring); `schedule` None: the stage
    schedule the method is fastest under."""
    start = timed_cut(cal, k)
    if k == 1 or method.backend is Backend.DATA_PARALLEL:
        return start
    if method.backend not in (Backend.STAGES, Backend.PIPELINING):
        raise BenchError(f"--split-objective throughput: the cost model cannot run {method.name} (backend "
                         f"{method.backend.value}) as a chain of groups; use the timed rule's own objective")
    setup = Setup(method, k, start, options, schedule or stage_schedule(method), max_stale, steps_for(k))
    return best_cut(cal, setup, link, start)
