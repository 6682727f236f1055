"""Run configuration and the three profiles.

- ``paper``: the exact setup of the paper (Section V): for GPU machines.
- ``cpu``:   the same structure (same depth, same schedule shape) scaled in width and steps so
             that one run takes minutes on a 2-core CPU.
- ``smoke``: seconds; for tests and the offline quick start.
A profile fills every field left at None; anything given explicitly wins.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from methods.base import Hyper

from .errors import BenchError

PROFILES = ("paper", "cpu", "smoke")


@dataclass
class RunConfig:
    method: str = "bp"              # registered method (python -m bench list)
    groups: int = 1                 # K layer groups: K-1 critics / synthesizers / exits
    model: str = "resnet50"         # resnet50 | resnet101 | resnet182 | mlp
    data: str = "digits"            # digits (offline) | mnist | fashion_mnist | cifar10 | cifar100
    profile: str = "smoke"          # paper | cpu | smoke
    seed: int = 0
    split_rule: str = "paper"       # paper (even units, authors' split) | balanced (FLOPs incl. heads)
    data_root: str | None = None    # else $LCTBENCH_DATA, else ./data
    out: str = "runs"               # records go to <out>/<run_id>.json, checkpoints to <out>/checkpoints/
    resume: bool = False            # continue from <out>/checkpoints/<run_id>.pt
    device: str = "cpu"
    threads: int | None = None      # torch intra-op threads (None: torch's default)
    # filled in by the profile when None
    width: float | None = None      # channel multiplier of the ResNet (critic filters scale with it)
    batch_size: int | None = None
    steps: int | None = None        # training iterations
    lr: float | None = None         # main-network SGD lr at step 0
    milestones: tuple[int, ...] | None = None  # steps where lr is x0.1 (default: 1/2 and 3/4 of steps)
    weight_decay: float = 5e-4      # L2 on the main network
    aux_lr: float = 1e-4            # Adam lr of critics and synthesizers
    eval_every: int | None = None   # steps between test evaluations (and checkpoints)
    eval_limit: int | None = None   # test samples per evaluation (None: all); the final one uses all
    assumption1_every: int | None = None  # steps between Assumption-1 measurements (lct/dni); 0 = never
    extra: dict = field(default_factory=dict)  # method options

    @property
    def run_id(self) -> str:
        return f"{self.data}_{self.model}_{self.method}_k{self.groups}_{self.profile}_s{self.seed}"

    def hyper(self) -> Hyper:
        return Hyper(lr=self.lr, milestones=tuple(self.milestones), weight_decay=self.weight_decay,
                     aux_lr=self.aux_lr)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones or ())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("milestones") is not None:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)


def _schedule(steps: int) -> tuple[int, ...]:
    """The paper's 0.1 drops at 1/2 and 3/4 of training (40k and 60k of its 80k iterations)."""
    return (steps // 2, steps * 3 // 4)


def profile_defaults(profile: str, model: str, data: str) -> dict:
    if profile == "paper":
        d = dict(width=1.0, batch_size=128, steps=80_000, lr=0.1, eval_every=400, eval_limit=None,
                 assumption1_every=400)
    elif profile == "cpu":
        # ResNet-50 at width 1/8 and batch 128 is ~0.2 s a step on 2 cores.
        steps = 1000 if data in ("digits",) else 1500
        d = dict(width=0.125, batch_size=128, steps=steps, lr=0.1, eval_every=100, eval_limit=2000,
                 assumption1_every=100)
    elif profile == "smoke":
        d = dict(width=1 / 16, batch_size=64, steps=150, lr=0.05, eval_every=50, eval_limit=512,
                 assumption1_every=25)
    else:
        raise BenchError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if model == "mlp":
        d["width"] = 1.0
        if profile != "paper":
            d["lr"] = 0.05
    return d


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill the profile's values into every field left at None."""
    for key, value in profile_defaults(cfg.profile, cfg.model, cfg.data).items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    # milestones follow the steps actually run, so `--steps` keeps the schedule's shape
    cfg.milestones = tuple(cfg.milestones) if cfg.milestones is not None else _schedule(cfg.steps)
    if cfg.groups < 1:
        raise BenchError(f"--groups must be >= 1, got {cfg.groups}")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise BenchError("--steps and --batch-size must be positive")
    return cfg
