"""The distributed executor's settings (`python -m bench run --executor distributed ...`)."""
from __future__ import annotations

from dataclasses import dataclass, fields

SCHEDULES = ("lockstep", "overlapped")
# an earlier name of `overlapped`, still accepted on the command line and read in old records
SCHEDULE_ALIASES = {"pipelined": "overlapped"}


@dataclass
class DistConfig:
    schedule: str = "lockstep"       # lockstep: wait for each batch's feedback; overlapped: go on with the next batch
    threads_per_worker: int = 1      # torch intra-op threads in every worker (gloo on CPU)
    max_stale: int = 2               # overlapped: feedback may be applied at most this many forwards late
    timeout_s: float = 300.0         # a wait on a peer (any message, collective or barrier) longer than this fails the run
    eval_timeout_s: float = 900.0    # the others' wait while rank 0 evaluates: timeout_s plus this allowance
    grace_s: float = 20.0            # local launch: seconds the others get to exit after one worker died
    warmup_steps: int = 0            # steps run before the clock and the counters start (speed benchmark)
    evaluate: bool = True            # evaluate at eval_every and at the end (the speed benchmark does not)
    dump_state: str | None = None    # tests: rank 0 writes final weights and last gradients of every group here
    share_gpu: bool = False          # CUDA: workers share the visible GPUs (gloo, links staged through host
                                     # memory): a functional run, never a speed measurement

    def __post_init__(self):
        self.schedule = SCHEDULE_ALIASES.get(self.schedule, self.schedule)

    @classmethod
    def from_dict(cls, d: dict) -> "DistConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})


def shared_gpu(record: dict) -> bool:
    """Whether a run record's workers shared GPUs (--share-gpu): its timings measure no real setting."""
    return bool(((record.get("config") or {}).get("distributed") or {}).get("share_gpu"))
