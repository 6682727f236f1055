"""Run configuration, the three profiles, and the one validation of a whole configuration.

- ``paper``: the exact setup of the paper (Section V): for GPU machines.
- ``cpu``:   the same structure (same depth, same schedule shape) scaled in width and steps so
             that one run takes minutes on a 2-core CPU.
- ``smoke``: seconds; for tests and the offline quick start.
A profile fills every field left at None; anything given explicitly wins. `prepare(cfg)` resolves and
validates a configuration before anything is built or written.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from methods import create_method, load_plugins
from methods.base import Hyper

from . import data as datasets
from .errors import BenchError
from .models import BASIC_SECTIONS, CLASSIFIERS, LSTM_UNITS, check_model, is_lstm, num_units
from .models.split import SPLIT_RULES

PROFILES = ("paper", "cpu", "smoke")
NOT_SETTINGS = ("out", "resume", "data_root", "plugins", "tag")


# What a record from before a setting existed ran with (its config has no such key).
LEGACY = {"assumption1_batches": 1, "final_eval_limit": None, "classifier": "pool", "group_projection": False,
          "bn_momentum": 0.1, "eval_bn": "running", "precision": "fp32", "channels_last": False,
          "cudnn_benchmark": False, "compile": False}


def differing_settings(a: dict, b: dict) -> list[str]:
    """The keys of two records' configs whose settings differ (a key a record lacks counts as what runs
    before it existed did, else None)."""
    keys = (set(a) | set(b)) - set(NOT_SETTINGS) - {"distributed"}

    def value(d, k):
        v = d.get(k, LEGACY.get(k))
        return list(v) if isinstance(v, tuple) else v  # JSON has no tuples

    return sorted(k for k in keys if value(a, k) != value(b, k))


PRECISIONS = ("fp32", "bf16", "fp16")
SPLIT_OBJECTIVES = ("slowest", "throughput")  # the timed rule's: least-loaded slowest group, or the cost model's


@dataclass
class RunConfig:
    method: str = "bp"              # registered method (python -m bench list)
    groups: int | None = 1          # K layer groups: K-1 critics / synthesizers / exits
                                    # (None: one group per LSTM layer for lstm2/3/4, else 1)
    model: str = "resnet50"         # resnet50 | resnet101 | resnet182 | mlp
    data: str = "digits"            # digits (offline) | mnist | fashion_mnist | cifar10 | cifar100
    profile: str = "smoke"          # paper | cpu | smoke
    seed: int = 0
    split_rule: str = "paper"       # paper (even units, authors' split) | balanced (FLOPs incl. heads)
                                    # | timed (measured seconds incl. heads)
    split_bounds: list[int] | None = None  # the cut as unit indices; set once a timed split is measured,
                                    # so a resumed run and every distributed worker reuse it
    split_objective: str = "slowest"  # timed rule: minimise the slowest group, or "throughput": the cut the
                                    # cost model predicts fastest for the method (bench/predict/search.py)
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
    weight_decay: float | None = None  # L2 on the main network (profile: 5e-4; LSTMs: see lstm_defaults)
    aux_lr: float = 1e-4            # Adam lr of critics and synthesizers
    eval_every: int | None = None   # steps between test evaluations (and checkpoints)
    eval_limit: int | None = None   # test samples per evaluation (None: all); the final one uses all
    assumption1_every: int | None = None  # steps between Assumption-1 measurements (lct/dni); 0 = never
    assumption1_batches: int = 4    # batches each Assumption-1 point averages (the last ones trained on)
    final_eval_limit: int | None = None  # test samples of the final evaluation (None: all)
    # --- the authors' choices where they differ from the paper's text (README, notes on fidelity) ---
    classifier: str = "pool"        # pool (He et al.'s global average pooling) | flatten (the authors' FC on the map)
    group_projection: bool = False  # the authors' projection shortcut on the first block of every group
    bn_momentum: float | None = None  # torch's BatchNorm momentum (profile: paper 0.003, the authors' TF decay 0.997)
    eval_bn: str = "running"        # evaluate with BN's running statistics | batch (LC(3).py: training mode)
    # --- speed (README: speed features); recorded, and fp32 / eager at every profile unless asked ---
    precision: str = "fp32"         # fp32 | bf16 | fp16 (torch.autocast; fp16 with a GradScaler per optimiser)
    channels_last: bool | None = None  # conv models in channels_last memory (None: on for CUDA conv models)
    cudnn_benchmark: bool | None = None  # cudnn picks the fastest kernels (None: on for CUDA)
    compile: bool = False           # torch.compile every group's body (eager where it fails, with a warning)
    extra: dict = field(default_factory=dict)  # method options
    # --- LSTMs (lstm2/3/4, Table V); filled by the profile, left None for the CNNs and the MLP ---
    optimizer: str | None = None    # main network: sgd (Nesterov momentum) or adam (the paper's LSTMs)
    lr_decay: float | None = None   # lr factor at each milestone (None: 0.1, the CNN schedule)
    hidden: int | None = None       # LSTM units per layer
    bptt: int | None = None         # truncated-BPTT length: characters per training segment
    plugins: list[str] = field(default_factory=list)  # modules / .py files whose methods register (--plugin)
    tag: str = ""                   # appended to the run id: a sweep's record of other settings than an existing one

    @property
    def run_id(self) -> str:
        groups = self.groups if self.groups is not None else default_groups(self.model, self.method)
        base = f"{self.data}_{self.model}_{self.method}_k{groups}_{self.profile}_s{self.seed}"
        if self.precision != "fp32":  # a mixed-precision run never takes an fp32 run's place
            base += f"_{self.precision}"
        return f"{base}_{self.tag}" if self.tag else base

    def hyper(self) -> Hyper:
        lstm = {} if self.optimizer is None else {"optimizer": self.optimizer, "lr_decay": self.lr_decay}
        scaling = self.device.partition(":")[0] if self.precision == "fp16" else None
        return Hyper(lr=self.lr, milestones=tuple(self.milestones), weight_decay=self.weight_decay,
                     aux_lr=self.aux_lr, loss_scaling=scaling, **lstm)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones or ())
        d["split_bounds"] = None if self.split_bounds is None else list(self.split_bounds)
        return d

    def settings(self) -> dict:
        """What makes two runs the same run: the whole resolved config but where files live, whether it
        resumes, and the file name's tag."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_SETTINGS}

    def settings_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True, default=str).encode()).hexdigest()[:8]

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("milestones") is not None:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)


# ImageNet at the paper profile (Section V): batch 32, 75 epochs, lr 0.0125, x0.1 at epochs 23, 40, 60, 70.
IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_EPOCHS, IMAGENET_DROPS = 75, (23, 40, 60, 70)


def _schedule(steps: int, data: str = "", profile: str = "") -> tuple[int, ...]:
    """The paper's 0.1 drops: at 1/2 and 3/4 of training for CIFAR (40k and 60k of its 80k iterations), at
    epochs 23, 40, 60 and 70 of 75 for ImageNet (as fractions of the steps, so `--steps` keeps the shape)."""
    if data == "imagenet" and profile == "paper":
        return tuple(steps * e // IMAGENET_EPOCHS for e in IMAGENET_DROPS)
    return (steps // 2, steps * 3 // 4)


def profile_defaults(profile: str, model: str, data: str) -> dict:
    if profile == "paper":
        d = dict(width=1.0, batch_size=128, steps=80_000, lr=0.1, eval_every=400, eval_limit=None,
                 assumption1_every=400)
    elif profile == "cpu":
        d = dict(batch_size=128, lr=0.1, eval_every=100, eval_limit=2000, assumption1_every=100, **cpu_scale(model, data))
    elif profile == "smoke":
        d = dict(width=1 / 16, batch_size=64, steps=150, lr=0.05, eval_every=50, eval_limit=512,
                 assumption1_every=25)
    else:
        raise BenchError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if profile == "paper" and data == "imagenet":
        epoch = IMAGENET_TRAIN_IMAGES // 32
        d.update(batch_size=32, lr=0.0125, steps=IMAGENET_EPOCHS * epoch, eval_every=epoch, eval_limit=None,
                 assumption1_every=epoch // 4)
    if model == "mlp":
        d["width"] = 1.0
        if profile != "paper":
            d["lr"] = 0.05
    if model in BASIC_SECTIONS and profile != "paper":  # 16-32-64 channels: at cpu 8-16-32, like ResNet-50/8's stem
        d["width"] = 0.5 if profile == "cpu" else 0.25
    d["weight_decay"] = 5e-4
    # BatchNorm: the authors' TF decay 0.997 at the paper profile; the scaled-down profiles train 1/80 of the
    # steps, too few for running statistics that slow, and keep torch's 0.1
    d["bn_momentum"] = 0.003 if profile == "paper" else 0.1
    if is_lstm(model):
        d = {**lstm_defaults(profile, model, data), "bn_momentum": d["bn_momentum"]}
    return d


# The cpu profile by input size, so that one run stays within about 20 minutes on 2 cores (README: what a run
# costs). Seconds per bp step at batch 128 on 2 threads (AMD EPYC, quiet machine; the network's plain step,
# timed), ResNet-50: 8x8 digits 0.08 at width 1/8; 28x28 0.44 at 1/8, 0.23 at 1/16; 32x32 0.55 at
# 1/8, 0.27 at 1/16; ResNet-101 / -182 at 32x32 and 1/16: 0.38 / 0.52; ResNet-110 at 32x32 and 1/2: 0.73.
# LCT_n3 costs 1.5x bp there (its critics). Larger inputs halve the width; the deepest networks run 2/3 of
# the steps (same schedule shape: the milestones follow the steps).
CPU_DEEPEST = ("resnet182", "resnet110")


def cpu_scale(model: str, data: str) -> dict:
    """The cpu profile's width and steps for a model on a data set."""
    shape = datasets.spec(data).input_shape if data in datasets.REGISTRY else None
    small = shape is not None and shape[-1] * shape[-2] <= 64  # the 8x8 digits
    steps = 1000 if small or model in CPU_DEEPEST else 1500
    return {"width": 0.125 if small else 0.0625, "steps": steps}


# ---------------------------------------------------------------------------------------------------
# Character-level LSTMs (Section V-B2, Table V). The paper: batch 128, BPTT 150, embedding 128, Adam,
# L2 on the main network; PTB 100 epochs with the lr x0.33 every 20 epochs; enwik8 50 epochs at a fixed
# lr; 2/3/4 layers of 950/750/600 units. Its text lost the lr and L2 values: we use Adam lr 2e-3 for
# PTB (and the offline pytext), 1e-3 for enwik8, and L2 1e-6 (our choices, not the paper's).
# The cpu and smoke profiles run a few hundred steps (the paper: 26,100 on PTB), during which a 4-layer
# LSTM is still leaving its initial plateau: they keep the lr fixed at 5e-3 (no x0.33 steps).

# Segments of 128 x 150 characters per epoch: PTB's 5.02M training characters, enwik8's 90M bytes.
LSTM_PAPER_STEPS = {"ptb": 100 * 261, "enwik8": 50 * 4687}
LSTM_FIXED_LR = ("enwik8",)  # no decay; every other text set follows PTB's schedule


def default_groups(model: str, method: str = "") -> int:
    """K when --groups is not given: one group per LSTM layer (a critic between every pair) for a method that
    needs groups (LCT_n(L-1), as Table V); else 1 (backprop is one network, the paper's BP)."""
    try:
        needs_groups = create_method(method).min_groups > 1
    except BenchError:
        needs_groups = True
    return int(model[4:]) if is_lstm(model) and needs_groups else 1


def lstm_defaults(profile: str, model: str, data: str) -> dict:
    lr = 1e-3 if data in LSTM_FIXED_LR else 2e-3
    common = dict(width=1.0, optimizer="adam", lr=lr, lr_decay=1.0 if data in LSTM_FIXED_LR else 0.33,
                  weight_decay=1e-6)
    if profile == "paper":
        d = dict(batch_size=128, bptt=150, hidden=LSTM_UNITS[model],
                 steps=LSTM_PAPER_STEPS.get(data, 100 * 261), eval_every=500, eval_limit=None,
                 assumption1_every=500)
    elif profile == "cpu":
        # 128 units a layer, BPTT 50: a 4-layer bp step is ~0.4 s on one core (batch 128)
        d = dict(batch_size=128, bptt=50, hidden=128, steps=500, eval_every=100, eval_limit=20_000,
                 assumption1_every=50, lr=5e-3, lr_decay=1.0)
    else:  # smoke
        d = dict(batch_size=16, bptt=32, hidden=32, steps=80, eval_every=40, eval_limit=4_000,
                 assumption1_every=20, lr=5e-3, lr_decay=1.0)
    return {**common, **d}


def lstm_schedule(data: str, steps: int, profile: str = "paper") -> tuple[int, ...]:
    """x lr_decay every 20 of 100 epochs (PTB): at 1/5 .. 4/5 of the steps; none for enwik8, nor below the
    paper profile (a fixed lr for a few hundred steps)."""
    if data in LSTM_FIXED_LR or profile != "paper":
        return ()
    return tuple(steps * i // 5 for i in range(1, 5))


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill the profile's values into every field left at None."""
    if cfg.profile not in PROFILES:
        raise BenchError(f"unknown profile {cfg.profile!r}; valid profiles: {', '.join(PROFILES)}")
    for key, value in profile_defaults(cfg.profile, cfg.model, cfg.data).items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    # milestones follow the steps actually run, so `--steps` keeps the schedule's shape
    if cfg.milestones is not None:
        cfg.milestones = tuple(cfg.milestones)
    elif isinstance(cfg.steps, int):
        cfg.milestones = (lstm_schedule(cfg.data, cfg.steps, cfg.profile) if is_lstm(cfg.model)
                          else _schedule(cfg.steps, cfg.data, cfg.profile))
    if cfg.groups is None:
        cfg.groups = default_groups(cfg.model, cfg.method)
    cuda = cfg.device.startswith("cuda")
    if cfg.channels_last is None:  # channels_last helps convolutions on GPUs (tensor cores), not MLPs or LSTMs
        cfg.channels_last = cuda and cfg.model != "mlp" and not is_lstm(cfg.model)
    if cfg.cudnn_benchmark is None:
        cfg.cudnn_benchmark = cuda
    return cfg


# field -> (smallest value, what it is); None values are left to the profile
_POSITIVE = {"groups": (1, "--groups"), "steps": (1, "--steps"), "batch_size": (1, "--batch-size"),
             "eval_every": (1, "--eval-every"), "eval_limit": (1, "--eval-limit"), "threads": (1, "--threads"),
             "final_eval_limit": (1, "--final-eval-limit"), "assumption1_batches": (1, "--assumption1-batches"),
             "hidden": (1, "--hidden"), "bptt": (1, "--bptt"), "assumption1_every": (0, "--assumption1-every")}
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def _check_numbers(cfg: RunConfig) -> None:
    for key, (least, flag) in {**_POSITIVE, "seed": (0, "--seed")}.items():
        value = getattr(cfg, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise BenchError(f"{flag} must be an integer >= {least}, got {value!r}")
    for key, flag in (("width", "--width"), ("lr", "--lr"), ("aux_lr", "--aux-lr"), ("lr_decay", "lr decay")):
        value = getattr(cfg, key)
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
            raise BenchError(f"{flag} must be a number > 0, got {value!r}")
    if cfg.weight_decay is not None and not 0 <= cfg.weight_decay < float("inf"):
        raise BenchError(f"weight decay must be >= 0, got {cfg.weight_decay}")
    if any(not isinstance(m, int) or m < 0 for m in cfg.milestones or ()):
        raise BenchError(f"lr milestones must be steps >= 0, got {list(cfg.milestones)}")
    if cfg.optimizer not in (None, "sgd", "adam"):
        raise BenchError(f"unknown optimizer {cfg.optimizer!r}; valid optimizers: sgd, adam")
    if cfg.bn_momentum is not None and not (isinstance(cfg.bn_momentum, (int, float)) and 0 <= cfg.bn_momentum <= 1):
        raise BenchError(f"--bn-momentum must be in [0, 1], got {cfg.bn_momentum!r}")
    for key, valid in (("classifier", CLASSIFIERS), ("eval_bn", ("running", "batch")), ("precision", PRECISIONS)):
        if getattr(cfg, key) not in valid:
            raise BenchError(f"unknown {key} {getattr(cfg, key)!r}; valid: {', '.join(valid)}")


def check_device(device: str) -> None:
    if not _DEVICE.match(device):
        raise BenchError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: this machine has no CUDA device (torch {torch.__version__})")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise BenchError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_out(out: str, flag: str = "--out") -> None:
    """The output folder is a writable folder, or can be made one (no regular file on its path)."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise BenchError(f"{flag} {out}: {p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise BenchError(f"{flag} {out}: {p} is not writable")
            return


def prepare(cfg: RunConfig, need_files: bool = True) -> RunConfig:
    """Resolve the profile and check the whole configuration, before anything is built or written: plugins,
    method and its options, model and data (their kinds and, unless need_files is False, the files), groups,
    numbers, device, output folder. Every failure is one line (BenchError). The method's options come back
    typed."""
    load_plugins(cfg.plugins)
    method = create_method(cfg.method)
    check_model(cfg.model)
    spec = datasets.spec(cfg.data)
    if is_lstm(cfg.model) != (spec.kind == "text"):  # LSTMs read text, the others images
        text = ", ".join(n for n, s in datasets.REGISTRY.items() if s.kind == "text")
        raise BenchError(f"model {cfg.model} does not run on {cfg.data}: the LSTMs (lstm2/3/4) need a text data "
                         f"set ({text}), the other models an image data set")
    cfg = resolve(cfg)
    _check_numbers(cfg)
    cuttable = num_units(cfg.model) - 1  # the classifier never stands alone
    if cfg.groups > cuttable:
        raise BenchError(f"{cfg.model} has {cuttable} blocks to split; cannot make {cfg.groups} groups")
    if cfg.split_rule not in SPLIT_RULES:
        raise BenchError(f"unknown split rule {cfg.split_rule!r}; valid rules: {', '.join(SPLIT_RULES)}")
    if cfg.split_objective not in SPLIT_OBJECTIVES:
        raise BenchError(f"unknown split objective {cfg.split_objective!r}; valid: {', '.join(SPLIT_OBJECTIVES)}")
    if cfg.split_objective != "slowest" and cfg.split_rule != "timed":
        raise BenchError(f"--split-objective {cfg.split_objective} is an option of --split timed")
    options = method.resolve_options(cfg.extra)
    cfg.extra = {k: options[k] for k in cfg.extra}  # as given, typed
    method.check(cfg.model, cfg.groups, cfg.batch_size, options)
    if cfg.precision != "fp32" and not method.autocast:
        raise BenchError(f"{cfg.method} runs in fp32 only (its step does not run under autocast); drop --precision "
                         f"{cfg.precision}")
    if cfg.precision == "fp16" and not method.loss_scaling:
        raise BenchError(f"--precision fp16 needs loss scaling, which {cfg.method} does not do; use --precision bf16 "
                         f"(no scaling needed)")
    if cfg.precision != "fp32" and is_lstm(cfg.model) and not cfg.device.startswith("cuda"):
        raise BenchError(f"--precision {cfg.precision} LSTMs run on CUDA only (torch's CPU LSTM kernel, oneDNN's, "
                         f"refuses reduced precision); use --precision fp32 on the CPU")
    check_device(cfg.device)
    check_out(cfg.out)
    if need_files:
        spec.check(datasets.resolve_data_root(cfg.data_root))
    return cfg
