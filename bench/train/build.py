"""One pass from a configuration to what trains: data, model, split, the method's rules, the trainer.

    run = build(cfg)            # cfg is validated first (bench.config.prepare); nothing is written
    loss = run.trainer.step(step, *run.stream.batch(step))

Every executor builds exactly this (same seed, so identical initial weights): the in-process executor
trains all of it, a distributed worker keeps training its own part.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from methods import GroupContext, GroupRule, Hyper, Method, create_method

from .. import data as datasets
from ..config import RunConfig, prepare
from ..exec.inprocess import GroupChain
from ..models import UnitModel, build_model, project_group_starts, set_bn_momentum
from ..models.heads import critic
from ..models.split import Split, make_split, module_flops, unit_flops
from ..predict.calibration import DIVISORS, Calibration, measure
from ..predict.link import preset_for
from ..predict.search import divisors_for, throughput_cut
from . import speedups
from .evaluate import count_params, sequence_loss


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Run:
    cfg: RunConfig
    method: type[Method]
    data: object                 # a data set of bench.data (in-memory images, an image folder, text)
    model: UnitModel
    split: Split
    trainer: object              # GroupChain (group rules) or the WholeStepRule itself
    stream: object               # training batches on `device`
    device: torch.device

    @property
    def text(self) -> bool:
        return self.model.family == "lstm"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the run's --precision (None: fp32, no autocast)."""
        return AMP_DTYPES.get(self.cfg.precision)

    @property
    def wire_dtype(self) -> torch.dtype:
        """What activations cross a worker boundary as: what autocast computes them in."""
        return self.amp_dtype or torch.float32

    def autocast(self):
        """The run's precision around training steps and evaluation (Assumption 1 stays fp32). Without
        autocast's weight-cast cache: the loop holds one context over a whole phase, and a cached bf16 copy
        of a weight would outlive the optimiser steps that change the weight (rules update their group
        inside forward and backward, several steps interleaved on the overlapped schedules)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False)

    def split_info(self) -> dict:
        """Units, parameters and FLOPs per group and per head, for the record (the report reads them)."""
        flops, shapes = unit_flops(self.model, self.data.input_shape)
        groups = []
        for (a, b), part in zip(zip(self.split.bounds, self.split.bounds[1:]), self.trainer.parts):
            head = part.get("head")
            groups.append({
                "units": self.model.unit_names[a:b],
                "layers": sum(self.model.unit_layers[a:b]),
                "params": count_params(part["body"]),
                "flops": sum(flops[a:b]),
                "head_params": count_params(head),
                "head_flops": module_flops(head, shapes[b - 1]) if head is not None else 0,
                "aux_params": sum(count_params(m) for k, m in part.items() if k not in ("body", "head")),
            })
        return {"rule": self.cfg.split_rule, "bounds": self.split.bounds, "groups": groups}


def load_data(cfg: RunConfig):
    ds = datasets.load_dataset(cfg.data, datasets.resolve_data_root(cfg.data_root))
    if cfg.bptt is not None and hasattr(ds, "with_bptt"):  # text: the input shape follows the run's BPTT
        ds.with_bptt(cfg.bptt)
    return ds


def cut(cfg: RunConfig, model: UnitModel, ds, stream) -> Split:
    """The split of cfg's rule: the one place a cut is made. A timed cut is measured here, on a training
    batch on the run's device and threads, and kept in cfg.split_bounds, so that a resumed run and every
    distributed worker use it instead of measuring again. With `split_objective` "throughput" the timed cut is
    the one the cost model predicts fastest for the run's method (bench/predict/search.py)."""

    def head_for(shape):  # the balanced and timed rules count each group's critic in its cost
        return critic(model.family, shape, ds.num_classes, model.width)

    batch = stream.batch(0) if cfg.split_rule == "timed" and cfg.split_bounds is None else None
    if batch is not None and cfg.split_objective == "throughput":  # the cost model's fastest cut
        method = create_method(cfg.method)
        options = method.resolve_options(cfg.extra)
        cal = measure_costs(cfg, model, ds, stream, [method], divisors_for(method, options))
        cfg.split_bounds = throughput_cut(cal, method, cfg.groups, options, preset_for(cfg.device))
    split = make_split(cfg.split_rule, model, cfg.groups, ds.input_shape, head_for, bounds=cfg.split_bounds,
                       batch=batch)
    if cfg.split_rule == "timed":
        cfg.split_bounds = list(split.bounds)
    return split


def measure_costs(cfg: RunConfig, model: UnitModel, ds, stream, methods: list, divisors=DIVISORS) -> Calibration:
    """The cost model's calibration of this run's network on its device and threads (bench.predict)."""
    hyper = cfg.hyper()
    common = _shared_context(model, ds.input_shape, ds.num_classes, hyper)

    def group(index, num_groups, body, in_shape, out_shape):  # a stand-in group whose rule's own costs are timed
        return GroupContext(index=index, num_groups=num_groups, body=body, in_shape=in_shape, out_shape=out_shape,
                            units=[body], **common)

    setting = {k: getattr(cfg, k) for k in ("model", "data", "profile", "width", "threads", "device", "hidden",
                                             "bptt", "split_rule")}
    return measure(model, stream.batch(0), make_optimizer=hyper.optimizer_for, context_for=group,
                   head_for=common["head_factory"], methods=methods, setting=setting, divisors=divisors)


def calibrate(cfg: RunConfig, methods: list, divisors=DIVISORS) -> Calibration:
    """`python -m bench calibrate`: validate cfg, build its data and network, and measure (no split, no rules)."""
    cfg = prepare(cfg)
    ds, model, stream = _data_model(cfg, torch.device(cfg.device))
    return measure_costs(cfg, model, ds, stream, methods, divisors)


def contexts(model: UnitModel, split: Split, input_shape: tuple[int, ...], num_classes: int,
             hyper: Hyper) -> list[GroupContext]:
    """What each group's rule is built from: its body (the model's own units), shapes, heads, loss."""
    _, shapes = unit_flops(model, input_shape)
    bodies, k = split.groups(model), len(split.bounds) - 1
    common = _shared_context(model, input_shape, num_classes, hyper)
    return [GroupContext(index=i, num_groups=k, body=body, in_shape=input_shape if i == 0 else shapes[a - 1],
                         out_shape=None if i == k - 1 else shapes[b - 1], units=list(body), **common)
            for i, (body, a, b) in enumerate(zip(bodies, split.bounds, split.bounds[1:]))]


def _shared_context(model: UnitModel, input_shape: tuple[int, ...], num_classes: int, hyper: Hyper) -> dict:
    """What every group's context shares: classes, family, width, optimisation, heads, the per-sample loss, the
    network and its input's shape."""
    # sequence models: the per-sample loss is per character, (B, T) flattened (LCT's L1 cascade per token)
    loss = {"per_sample_loss": sequence_loss} if model.family == "lstm" else {}
    return dict(num_classes=num_classes, family=model.family, width=model.width, hyper=hyper, model=model.name,
                network_input=tuple(input_shape),
                head_factory=lambda shape: critic(model.family, shape, num_classes, model.width), **loss)


def make_trainer(method: type[Method], groups: list[GroupContext], options: dict):
    if issubclass(method, GroupRule):
        return GroupChain([method(g, options) for g in groups])
    return method(groups, options)


def _data_model(cfg: RunConfig, device: torch.device):
    """Data, model and training stream of a prepared cfg (the seed set before the model is drawn)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = load_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, ds.num_classes, ds.input_shape, cfg.width, hidden=cfg.hidden,
                        classifier=cfg.classifier)
    return ds, model, datasets.stream(ds, cfg.batch_size, cfg.seed, device)


def _network(cfg: RunConfig, device: torch.device):
    """Data, model, training stream and split of a prepared cfg."""
    ds, model, stream = _data_model(cfg, device)
    return ds, model, stream, cut(cfg, model, ds, stream)


def build(cfg: RunConfig, device: str | None = None) -> Run:
    """Validate cfg, then build data, model, split, rules and trainer, in that order, on `device` (default
    cfg.device). cfg is updated in place with what was resolved (profile values, a timed cut)."""
    cfg = prepare(cfg)
    device = torch.device(device or cfg.device)
    method = create_method(cfg.method)
    ds, model, stream, split = _network(cfg, device)
    if cfg.group_projection:
        project_group_starts(model, split.bounds)
    model.units.to(device)
    groups = contexts(model, split, ds.input_shape, ds.num_classes, cfg.hyper())
    trainer = make_trainer(method, groups, method.resolve_options(cfg.extra))
    for part in trainer.parts:
        set_bn_momentum(part.values(), cfg.bn_momentum)
        for m in part.values():
            m.to(device)
    stream = speedups.apply(cfg, trainer, stream, device)  # channels_last, cudnn.benchmark, torch.compile
    return Run(cfg, method, ds, model, split, trainer, stream, device)


def measure_split(cfg: RunConfig) -> list[int] | None:
    """A timed rule's cut, measured once without building the rest, for a launcher to share with its
    workers through cfg.split_bounds; None for the rules that measure nothing."""
    cfg = prepare(cfg)
    if cfg.split_rule == "timed" and cfg.split_bounds is None:
        _network(cfg, torch.device(cfg.device))
    return cfg.split_bounds
