"""What each simulated worker computes and sends per step, composed from a calibration (per-unit and
per-boundary seconds, bytes) and the method's declarations, never from its name.

Stage backend (one group rule per worker), for a group of units [a, b) on the full batch:
- the last group: its rule's forward is the body's forward; its backward the body's backward and the
  optimiser step (it is trained by the main loss, whatever the method);
- a group whose method `updates_in_forward`: the forward call does the body's forward, its backward and
  the optimiser step (that is what updating at once means) plus the rule's own work at its boundary
  (critic, synthesizer: the calibration's boundary forward); the backward call only the boundary
  backward (training the critic or synthesizer on the feedback);
- otherwise (backprop and its variants): forward = the body's forward + the boundary forward; backward =
  the body's backward + the optimiser step + the boundary backward.
It waits for feedback unless it is the last group or the method's `feedback` is nothing; it sends the
previous group what the calibration measured its rule sends back (a loss vector, a gradient).
Pipelining backend: the bodies on micro-batches of B/m, gradients of the activations' size back.
Data-parallel backend: the whole network on B/K per worker, the gradients in DistributedDataParallel's
buckets (torch's defaults: 1 MiB first, then 25 MiB, in reverse order of the parameters; here by unit).
Exchange backend, on the full batch: a parallel step's first call is the body's forward, its second the
body's backward and the optimiser step; a serial step's calls are backprop's; each call adds what the
method's share spends besides its body at the group's boundaries (the calibration's share costs).
"""
from __future__ import annotations

from dataclasses import dataclass

from methods import Feedback

from .calibration import Calibration
from .shares import PARTS

FLOAT_BYTES = 4
DDP_FIRST_BUCKET, DDP_BUCKET = 1 << 20, 25 << 20


@dataclass(frozen=True)
class StageCost:
    forward_s: float       # the rule's forward call
    backward_s: float      # the rule's backward call
    out_bytes: int         # activation to the next group (0 at the last)
    feedback_bytes: int    # what it sends back to the previous group (0: nothing, or the first group)
    waits: bool            # waits for the next group's feedback


@dataclass(frozen=True)
class PipeCost:
    forward_s: float       # one micro-batch
    backward_s: float
    out_bytes: int         # one micro-batch's activation (0 at the last)
    in_bytes: int          # one micro-batch's input gradient sent back (0 at the first)
    optimizer_s: float     # once per step
    input_s: float = 0.0   # a zero-bubble schedule's backward halves: the input gradient (I) ...
    weight_s: float = 0.0  # ... and the weight gradient (W); the first stage skips I and does all in W


@dataclass(frozen=True)
class ShareCost:
    outgoing_s: float      # parallel step: the messages to both neighbours
    update_s: float        # parallel step: the update from what came in
    forward_s: float       # serial step: the forward ...
    backward_s: float      # ... and the backward
    out_bytes: int         # one boundary activation to the next group, either step (0 at the last)
    in_bytes: int          # one to the previous group (0 at the first)


@dataclass(frozen=True)
class ReplicaCost:
    forward_s: float
    buckets: list[tuple[float, int]]  # (backward seconds until the bucket is ready, its bytes), in order
    optimizer_s: float


def _body(cal: Calibration, a: int, b: int, batch: float) -> tuple[float, float, float]:
    return (sum(cal.unit_s("forward", u, batch) for u in range(a, b)),
            sum(cal.unit_s("backward", u, batch) for u in range(a, b)), sum(cal.optimizer_s[a:b]))


def stage_costs(cal: Calibration, method, bounds: list[int]) -> list[StageCost]:
    k, batch = len(bounds) - 1, cal.batch_size
    aux = cal.boundary(method.name) if k > 1 else None
    feedback = method.feedback is not Feedback.NONE
    out = []
    for g, (a, b) in enumerate(zip(bounds, bounds[1:])):
        fwd, bwd, opt = _body(cal, a, b, batch)
        last = g == k - 1
        if last:
            f, back = fwd, bwd + opt
        elif method.updates_in_forward:
            f, back = fwd + bwd + opt + aux.forward_s[b - 1], aux.backward_s[b - 1]
        else:
            f, back = fwd + aux.forward_s[b - 1], bwd + opt + aux.backward_s[b - 1]
        out.append(StageCost(f, back, 0 if last else cal.out_bytes[b - 1] * batch,
                             aux.feedback_bytes[a - 1] if g > 0 and feedback else 0, feedback and not last))
    return out


def pipe_costs(cal: Calibration, bounds: list[int], microbatches: int, halves: bool = False,
               action_s: float = 0.0) -> list[PipeCost]:
    """Every stage's costs on one micro-batch (`halves`: with its zero-bubble backward halves, as measured), each
    action with the pipelining runtime's own `action_s` added."""
    k, mb = len(bounds) - 1, cal.batch_size / microbatches
    out = []
    for g, (a, b) in enumerate(zip(bounds, bounds[1:])):
        fwd, bwd, opt = _body(cal, a, b, mb)
        i_s = w_s = 0.0
        if halves:  # the first stage has no input half: its weight half is its whole backward
            i_s = sum(cal.unit_s("input", u, mb) for u in range(a, b)) + action_s if g else 0.0
            w_s = (sum(cal.unit_s("weight", u, mb) for u in range(a, b)) if g else bwd) + action_s
        out.append(PipeCost(fwd + action_s, bwd + action_s, 0 if g == k - 1 else round(cal.out_bytes[b - 1] * mb),
                            0 if g == 0 else round(cal.out_bytes[a - 1] * mb), opt, i_s, w_s))
    return out


def replica_costs(cal: Calibration, k: int) -> ReplicaCost:
    """One data-parallel worker: the whole network on batch / k; backward unit by unit from the last, each
    bucket all-reduced once its last unit's gradients are done."""
    shard = cal.batch_size / k
    fwd, _, opt = _body(cal, 0, cal.n, shard)
    buckets, seconds, nbytes, cap = [], 0.0, 0, DDP_FIRST_BUCKET
    for u in reversed(range(cal.n)):
        seconds += cal.unit_s("backward", u, shard)
        nbytes += cal.params[u] * FLOAT_BYTES
        if nbytes >= cap:
            buckets.append((seconds, nbytes))
            seconds, nbytes, cap = 0.0, 0, DDP_BUCKET
    if seconds or nbytes:
        buckets.append((seconds, nbytes))
    return ReplicaCost(fwd, buckets, opt)


def share_costs(cal: Calibration, method, bounds: list[int]) -> list[ShareCost]:
    k, batch, extra = len(bounds) - 1, cal.batch_size, cal.share(method.name).extra_s
    out = []
    for g, (a, b) in enumerate(zip(bounds, bounds[1:])):
        fwd, bwd, opt = _body(cal, a, b, batch)
        side = {p: extra(p, a, b, cal.n) for p in PARTS}
        out.append(ShareCost(fwd + side["outgoing"], bwd + opt + side["update"], fwd + side["forward"],
                             bwd + opt + side["backward"], 0 if g == k - 1 else cal.out_bytes[b - 1] * batch,
                             0 if g == 0 else cal.out_bytes[a - 1] * batch))
    return out
