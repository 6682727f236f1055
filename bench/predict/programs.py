"""The worker programs of each distributed backend, as the event simulation runs them, and one phase of
a method's training simulated from a calibration.

Each program follows its backend's worker step by step (bench/exec/): which messages it waits for,
when it computes, what it sends, and when it may go on without waiting. The program is chosen by the
backend the method declares, never by its name:
- stages (stages.py): per step, receive the activation, the rule's forward, send it on; then the
  rule's backward at once (the last group, or a method without feedback), or, for a method with
  feedback, apply every feedback that has arrived and wait while more than `bound` are pending
  (lockstep: 0; overlapped: max_stale); at the end of the phase every pending feedback is applied;
- pipelining (pipelining.py, torch.distributed.pipelining): per step, GPipe (all m micro-batch
  forwards, then all m backwards) or 1F1B (K - i warm-up forwards, then one backward and one forward
  in turn), then the optimiser step; sends are waited for at the end like torch's schedules do. A
  multi-stage schedule (interleaved, looped, V, zero-bubble) runs v stages on each of K / v workers in the
  order torch's own schedule class gives every rank (pp_schedules.action_order), with the zero-bubble
  backward halves the calibration measured. Every micro-batch action adds the runtime's own host seconds per
  action of that schedule where the link model measured them (a CPU host: probe.pipeline_actions_s);
- data-parallel (ddp.py): the whole network on B/K, backward unit by unit from the last, every bucket
  all-reduced (ring) as soon as its gradients are done, overlapping the rest of the backward; the step
  waits for the last bucket, then steps the optimiser;
- exchange (exchange.py): per step, as the method's `is_serial` says, either a parallel step (compute both
  messages, send them to both neighbours at once, wait for theirs, update) or a serial one (lockstep
  backprop through the chain: the activation forward, the gradient back).
A phase starts and ends drained, like the engine's (warm-up apart, between evaluations). Each program posts its
receives where its worker does (simulate.py: a receive posted after its send waits for a computing sender): the
stage workers post the next activations' ahead and the feedback's before waiting for it, the exchange workers
theirs ahead, torch's multi-stage schedules at their RECV actions, GPipe and 1F1B right before use.

Another backend joins with `@program(Backend.X)` (a function of (calibration, Setup, link) returning its
schedule's name and K programs): asynchronous backprop, when it lands with its own backend, adds its
worker here; the rounds backend has no program yet (`python -m bench predict` says so).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from methods import Backend

from ..errors import BenchError
from ..exec import pp_schedules
from ..exec.exchange import POST_AHEAD as EXCHANGE_AHEAD
from ..exec.stages import POST_AHEAD as STAGE_AHEAD
from .calibration import Calibration
from .costs import PipeCost, ReplicaCost, ShareCost, StageCost, pipe_costs, replica_costs, share_costs, stage_costs
from .link import LinkModel
from .simulate import AllReduce, Compute, Poll, Post, Program, Send, Simulation, Wait


@dataclass
class Setup:
    """One configuration to simulate."""

    method: type                  # the method's class: its declarations decide the program
    groups: int
    bounds: list[int]             # the cut (unit indices); ignored by data parallelism
    options: dict = field(default_factory=dict)  # the method's resolved options
    schedule: str = "lockstep"    # the stage backend's: lockstep | overlapped
    max_stale: int = 2
    steps: int = 100              # steps in the phase
    first_step: int = 0           # the phase's first step (the exchange backend's serial steps are counted from 0)


@dataclass
class Prediction:
    method: str
    groups: int
    schedule: str
    bounds: list[int]
    steps: int
    batch_size: int
    phase_s: float
    busy_s: list[float]
    blocked_s: list[float]

    @property
    def samples_per_s(self) -> float:
        return self.steps * self.batch_size / self.phase_s

    @property
    def busy_share(self) -> list[float]:
        return [b / self.phase_s for b in self.busy_s]

    @property
    def blocked_share(self) -> list[float]:
        return [b / self.phase_s for b in self.blocked_s]

    @property
    def comm_share(self) -> float:
        """Mean over workers of the time blocked on communication over the phase (the records' comm share)."""
        shares = self.blocked_share
        return sum(shares) / len(shares)


PROGRAMS: dict[Backend, Callable[[Calibration, Setup, LinkModel], tuple[str, list[Program]]]] = {}


def program(backend: Backend):
    def add(fn):
        PROGRAMS[backend] = fn
        return fn
    return add


# --- stages ----------------------------------------------------------------------------------------
def stage_worker(i: int, costs: list[StageCost], steps: int, bound: int) -> Program:
    k, me = len(costs), costs[i]
    pending: deque[int] = deque()

    def backward(step):
        yield Compute(me.backward_s)
        if i > 0 and costs[i - 1].waits:
            yield Send(("feedback", i - 1, step), ("feedback", i), me.feedback_bytes)

    def apply_oldest():
        step = pending.popleft()
        yield Wait(("feedback", i, step))
        yield from backward(step)

    for step in range(steps):
        if i > 0:
            yield Wait(("activation", i, step))
            for ahead in range(step + 1, min(steps, step + 1 + STAGE_AHEAD)):
                yield Post(("activation", i, ahead))
        yield Compute(me.forward_s)
        if i < k - 1:
            yield Send(("activation", i + 1, step), ("activation", i), me.out_bytes)
        if not me.waits:
            yield from backward(step)
            continue
        yield Post(("feedback", i, step))
        pending.append(step)
        while pending and (yield Poll(("feedback", i, pending[0]))):
            yield from apply_oldest()
        while len(pending) > bound:
            yield from apply_oldest()
    while pending:
        yield from apply_oldest()


@program(Backend.STAGES)
def _stages(cal: Calibration, s: Setup, link: LinkModel) -> tuple[str, list[Program]]:
    costs = stage_costs(cal, s.method, s.bounds)
    bound = s.max_stale if s.schedule == "overlapped" else 0
    name = "sequential" if s.groups == 1 else s.schedule
    return name, [stage_worker(i, costs, s.steps, bound) for i in range(s.groups)]


# --- pipelining ------------------------------------------------------------------------------------
def _micro_forward(i: int, k: int, me: PipeCost, step: int, j: int):
    if i > 0:
        yield Wait(("activation", i, step, j))
    yield Compute(me.forward_s)
    if i < k - 1:
        yield Send(("activation", i + 1, step, j), ("activation", i), me.out_bytes)


def _micro_backward(i: int, k: int, me: PipeCost, step: int, j: int):
    if i < k - 1:
        yield Wait(("gradient", i, step, j))
    yield Compute(me.backward_s)
    if i > 0:
        yield Send(("gradient", i - 1, step, j), ("gradient", i), me.in_bytes)


def pipe_worker(i: int, costs: list[PipeCost], steps: int, m: int, schedule: str) -> Program:
    k, me = len(costs), costs[i]
    for step in range(steps):
        if schedule == "gpipe":
            for j in range(m):
                yield from _micro_forward(i, k, me, step, j)
            if i < k - 1:  # torch waits for every forward send before the backwards
                yield Wait(("activation", i + 1, step, m - 1))
            for j in range(m):
                yield from _micro_backward(i, k, me, step, j)
        else:  # 1f1b
            warm, fwd = min(m, k - i), 0
            for fwd in range(warm):
                yield from _micro_forward(i, k, me, step, fwd)
            fwd = warm
            for j in range(m):
                yield from _micro_backward(i, k, me, step, j)
                if fwd < m:
                    yield from _micro_forward(i, k, me, step, fwd)
                    fwd += 1
        if i > 0:  # and for the last backward send before the step ends
            yield Wait(("gradient", i - 1, step, m - 1))
        yield Compute(me.optimizer_s)


def multi_stage_worker(rank: int, actions: list[tuple], costs: list[PipeCost], owner: dict[int, int],
                       steps: int) -> Program:
    """A worker of a multi-stage schedule, running torch's own action list for its rank (pp_schedules.
    action_order): a forward waits for its input where the stage before is on another worker, a backward (or
    its input half) for its gradient where the stage after is; a stage next to one on the same worker hands
    its tensors over locally. Sends are waited for at the end of the step, then every own stage steps."""
    def remote(stage):
        return 0 <= stage < len(costs) and owner[stage] != rank

    compute = {"F": "forward_s", "B": "backward_s", "I": "input_s", "W": "weight_s"}
    own = [s for s in owner if owner[s] == rank]
    for step in range(steps):
        sent = []
        for kind, stage, j in actions:
            me = costs[stage]
            if kind == "F" and remote(stage - 1):
                yield Wait(("activation", stage, step, j))
            elif kind in ("B", "I") and remote(stage + 1):
                yield Wait(("gradient", stage, step, j))
            if kind in compute:
                yield Compute(getattr(me, compute[kind]))
            elif kind == "RECV_F":  # torch posts a receive where its sender's send is scheduled
                yield Post(("activation", stage, step, j))
            elif kind == "RECV_B":
                yield Post(("gradient", stage, step, j))
            elif kind == "SEND_F":
                sent.append(("activation", stage + 1, step, j))
                yield Send(sent[-1], ("activation", stage), me.out_bytes)
            elif kind == "SEND_B":
                sent.append(("gradient", stage - 1, step, j))
                yield Send(sent[-1], ("gradient", stage), me.in_bytes)
        for key in sent:  # torch waits for its sends before the step ends
            yield Wait(key)
        yield Compute(sum(costs[s].optimizer_s for s in own))


@program(Backend.PIPELINING)
def _pipelining(cal: Calibration, s: Setup, link: LinkModel) -> tuple[str, list[Program]]:
    m, schedule = s.options["microbatches"], s.options["schedule"]
    if s.groups == 1:  # the executor runs a one-group pipeline as one stage worker (backends.backend_for)
        raise BenchError(f"{s.method.name} with one group is not pipelined (one stage worker runs its rule): "
                         f"not modelled; predict bp for K = 1")
    if not pp_schedules.is_multi(schedule):
        costs = pipe_costs(cal, s.bounds, m, action_s=link.action_for(schedule))
        return f"{schedule}-m{m}", [pipe_worker(i, costs, s.steps, m, schedule) for i in range(s.groups)]
    order = pp_schedules.action_order(schedule, s.groups, m)
    halves = any(kind in ("I", "W") for actions in order.values() for kind, _, _ in actions)
    costs = pipe_costs(cal, s.bounds, m, halves, link.action_for(schedule))
    owner = {stage: r for r, own in enumerate(pp_schedules.placement(schedule, s.groups, len(order))) for stage in own}
    v = s.groups // len(order)
    return (f"{schedule}-m{m}-v{v}",
            [multi_stage_worker(r, order[r], costs, owner, s.steps) for r in sorted(order)])


# --- data parallel ---------------------------------------------------------------------------------
def replica_worker(me: ReplicaCost, steps: int, overlap: bool = True) -> Program:
    """overlap: the all-reduces run beside the rest of the backward (NCCL on GPUs); else each one holds the
    worker until it ends (gloo on a CPU host reduces on the cores that compute: there DDP's asynchronous
    buckets ran no faster than all-reducing each one at once, within the machine's noise)."""
    for step in range(steps):
        yield Compute(me.forward_s)
        for b, (seconds, nbytes) in enumerate(me.buckets):
            yield Compute(seconds)
            yield AllReduce(("allreduce", step, b), nbytes)
            if not overlap:
                yield Wait(("allreduce", step, b))
        yield Wait(("allreduce", step, len(me.buckets) - 1))  # all-reduces run in order: the last is the tail
        yield Compute(me.optimizer_s)


@program(Backend.DATA_PARALLEL)
def _data_parallel(cal: Calibration, s: Setup, link: LinkModel) -> tuple[str, list[Program]]:
    me = replica_costs(cal, s.groups)
    overlap = not str(cal.setting.get("device") or "cpu").startswith("cpu")
    return "allreduce", [replica_worker(me, s.steps, overlap) for _ in range(s.groups)]


# --- exchange --------------------------------------------------------------------------------------
def share_worker(i: int, costs: list[ShareCost], steps: range, serial: Callable[[int], bool]) -> Program:
    k, me = len(costs), costs[i]

    def receives(step):  # what comes from each neighbour at `step`, by the step's kind
        backprop = serial(step)
        if i > 0:
            yield "activation" if backprop else "to next", i, step
        if i < k - 1:
            yield "gradient" if backprop else "to previous", i, step

    for step in steps:
        for ahead in range(step, min(steps.stop, step + 1 + EXCHANGE_AHEAD)):
            for key in receives(ahead):
                yield Post(key)
        if serial(step):  # backprop through the chain
            if i > 0:
                yield Wait(("activation", i, step))
            yield Compute(me.forward_s)
            if i < k - 1:
                yield Send(("activation", i + 1, step), ("forward", i), me.out_bytes)
                yield Wait(("gradient", i, step))
            yield Compute(me.backward_s)
            if i > 0:
                yield Send(("gradient", i - 1, step), ("backward", i), me.in_bytes)
            continue
        yield Compute(me.outgoing_s)  # both messages from the batch, sent at once, then theirs awaited
        if i > 0:
            yield Send(("to previous", i - 1, step), ("backward", i), me.in_bytes)
        if i < k - 1:
            yield Send(("to next", i + 1, step), ("forward", i), me.out_bytes)
        if i > 0:
            yield Wait(("to next", i, step))
        if i < k - 1:
            yield Wait(("to previous", i, step))
        yield Compute(me.update_s)


@program(Backend.EXCHANGE)
def _exchange(cal: Calibration, s: Setup, link: LinkModel) -> tuple[str, list[Program]]:
    costs = share_costs(cal, s.method, s.bounds)
    steps = range(s.first_step, s.first_step + s.steps)
    serial = lambda step: s.method.is_serial(s.options, step)  # noqa: E731 (the method's own schedule)
    return "exchange", [share_worker(i, costs, steps, serial) for i in range(s.groups)]


# ---------------------------------------------------------------------------------------------------
def simulate(cal: Calibration, s: Setup, link: LinkModel) -> Prediction:
    """One phase of `s.steps` steps of the configuration, from the calibration's costs over `link`."""
    build = PROGRAMS.get(s.method.backend)
    if build is None:
        raise BenchError(f"no cost model for {s.method.name}'s backend ({s.method.backend.value}) yet; modelled: "
                         f"{', '.join(b.value for b in PROGRAMS)}")
    name, programs = build(cal, s, link)
    t = Simulation(link, len(programs)).run(programs)  # workers: K, or K / v for multi-stage pipelines
    return Prediction(s.method.name, s.groups, name, list(s.bounds), s.steps, cal.batch_size, t.phase_s,
                      t.busy_s, t.blocked_s)
