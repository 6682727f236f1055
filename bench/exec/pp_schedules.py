"""torch.distributed.pipelining's schedules, as the installed torch provides them, by lower-case name
(gpipe, 1f1b, interleaved1f1b, loopedbfs, interleavedzerobubble, zbvzerobubble, dualpipev in torch 2.13), and
where each one puts its stages.

K layer groups are K pipeline stages. A single-stage schedule (ScheduleGPipe, Schedule1F1B) runs one stage on
each of K workers. A multi-stage schedule runs `stages_per_rank` = v stages on each of K / v workers: looped
(stage s on worker s mod W: Interleaved1F1B, LoopedBFS, InterleavedZeroBubble) or, for the two V schedules
(ZBVZeroBubble, DualPipeV), exactly two per worker in a V (worker r holds stages r and 2W - 1 - r). The rest
of what torch requires of a shape is checked here too, so that a bad one is a one-line error before any
process starts. torch.distributed.pipelining takes about a second to import: it is imported on first use.
"""
from __future__ import annotations

import torch

from bench.errors import BenchError

V_SHAPED = ("zbvzerobubble", "dualpipev")  # torch places their stages with generate_stage_to_rank_mapping(style="v")
AT_LEAST_ONE_PER_STAGE = ("1f1b", "dualpipev")  # torch: n_microbatches >= number of stages
ROUNDS = ("interleaved1f1b", "interleavedzerobubble")  # torch: n_microbatches % max(1, n_microbatches // W) == 0
COMPUTE_AND_P2P = ("F", "B", "I", "W", "SEND_F", "RECV_F", "SEND_B", "RECV_B")  # the actions action_order keeps


def _schedules():
    # on first use only: a heavy import
    from torch.distributed.pipelining import schedules

    return schedules


def available() -> dict[str, type]:
    """Name -> schedule class, every public schedule this torch's torch.distributed.pipelining has."""
    schedules = _schedules()
    bases = (schedules.PipelineScheduleSingle, schedules.PipelineScheduleMulti)
    found = [(issubclass(cls, bases[1]), name.removeprefix("Schedule").lower(), cls) for name, cls in vars(schedules).items()
             if name.startswith("Schedule") and isinstance(cls, type) and issubclass(cls, bases)]
    return {name: cls for _, name, cls in sorted(found, key=lambda t: t[:2])}  # single-stage ones first


def is_multi(name: str) -> bool:
    return issubclass(available()[name], _schedules().PipelineScheduleMulti)


def stages_per_rank(name: str, given: int | None) -> int:
    """v: as given, else 1 for single-stage schedules and 2 for multi-stage ones."""
    return given if given is not None else (2 if is_multi(name) else 1)


def check_name(name: str) -> None:
    """One-line BenchError naming the schedules this torch has, if `name` is none of them."""
    names = available()
    if name not in names:
        raise BenchError(f"unknown pipeline schedule {name!r}; torch {torch.__version__} has: {', '.join(names)}")


def check(name: str, groups: int, microbatches: int, given: int | None) -> None:
    """One-line BenchError where torch cannot run schedule `name` with K groups, m micro-batches, v stages/rank
    (on real workers: in process, every schedule is the same micro-batched backprop)."""
    check_name(name)
    names = available()
    v = stages_per_rank(name, given)
    if not is_multi(name) and v != 1:
        raise BenchError(f"{name} runs one stage per worker; drop stages_per_rank={v} (multi-stage schedules: "
                         f"{', '.join(n for n in names if is_multi(n))})")
    if name in V_SHAPED and v != 2:
        raise BenchError(f"{name} places exactly 2 stages on every worker, in a V; stages_per_rank={v} cannot run")
    if groups % v or groups // v < 2:
        raise BenchError(f"{name} with {v} stages per worker needs --groups a multiple of {v} on at least 2 workers; "
                         f"got {groups} groups")
    workers = groups // v
    if name in AT_LEAST_ONE_PER_STAGE and microbatches < groups:
        raise BenchError(f"{name} needs at least as many micro-batches as stages ({groups}); got {microbatches}")
    rounds = max(1, microbatches // workers)
    if name in ROUNDS and microbatches % rounds:
        raise BenchError(f"{name} needs the micro-batches ({microbatches}) to be a multiple of {rounds} "
                         f"(micro-batches // workers)")


def placement(name: str, groups: int, workers: int) -> list[list[int]]:
    """The stages (groups) of every worker, as torch's schedule expects them."""
    if name in V_SHAPED:
        return [[r, 2 * workers - 1 - r] for r in range(workers)]
    return [[s for s in range(groups) if s % workers == r] for r in range(workers)]


def action_order(name: str, groups: int, microbatches: int) -> dict[int, list[tuple[str, int, int | None]]]:
    """What torch's runtime executes on every worker, per step, for a multi-stage schedule: its own action
    lists with their communication (`pipeline_order_with_comms`), as (kind, stage, micro-batch) with kind one
    of F, B, I, W, SEND_F, RECV_F, SEND_B, RECV_B (the overlapped F;B pairs unfolded in order; the FSDP and
    data-parallel actions, which this suite never runs, dropped). Read from the schedule class itself, built
    on stand-in stages: nothing runs and no process group is needed (the cost model's pipelines)."""
    from types import SimpleNamespace

    from torch import nn

    check(name, groups, microbatches, None)
    cls, workers = available()[name], groups // stages_per_rank(name, None)
    if not is_multi(name):
        raise BenchError(f"{name} runs one stage per worker: it has no multi-stage action order")
    order = {}
    for rank, own in enumerate(placement(name, groups, workers)):
        stages = [SimpleNamespace(group_size=workers, group_rank=rank, num_stages=groups, stage_index=s,
                                  is_first=s == 0, is_last=s == groups - 1, submod=nn.Identity()) for s in own]
        try:
            actions = cls(stages, microbatches, loss_fn=lambda out, y: out).pipeline_order_with_comms[rank]
        except (AttributeError, TypeError, KeyError) as e:  # a torch whose schedules are built otherwise
            raise BenchError(f"cannot read torch {torch.__version__}'s action order of {name}: {e}") from None
        order[rank] = [(a.computation_type.value, a.stage_index, a.microbatch_index)
                       for action in actions if action is not None for a in (action.sub_actions or (action,))
                       if a.computation_type.value in COMPUTE_AND_P2P]
    return order

