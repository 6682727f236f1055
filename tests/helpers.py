"""Builders shared by tests: tiny models split into stages, parameter snapshots."""
from __future__ import annotations

import torch

from bench.models import build_model
from bench.pipeline import build_stages
from bench.split import paper_split
from methods import create_method
from methods.base import Hyper


def make_stages(method: str, k: int, model: str = "resnet50", seed: int = 0, width: float = 1 / 16,
                input_shape=(1, 8, 8), num_classes: int = 10, hyper: Hyper | None = None):
    """The same stages the runner builds, on a tiny model; returns (stages, model)."""
    torch.manual_seed(seed)
    m = build_model(model, num_classes, input_shape, width)
    split = paper_split(m, k)
    return build_stages(method, m, split, input_shape, num_classes, hyper or Hyper(lr=0.05)), m


def params_of(stages, key: str = "body"):
    """Flat copy of every parameter of one module kind in each stage (None where a stage lacks it)."""
    out = []
    for s in stages:
        mod = s.modules().get(key)
        out.append(None if mod is None else torch.cat([p.detach().flatten().clone() for p in mod.parameters()]))
    return out


def model_for(method: str, default: str = "resnet50") -> str:
    """The model a test over every method gives `method`: the default, or the first one it supports
    (admm: mlp; resist: preact_resnet50)."""
    supported = create_method(method).supported_models
    return default if supported is None or default in supported else supported[0]


def dying_at(step: int, train_step):
    """A train_step that raises KeyboardInterrupt when it reaches `step`: a run killed mid-way."""

    def step_or_die(stages, s, x, y):
        if s == step:
            raise KeyboardInterrupt
        train_step(stages, s, x, y)

    return step_or_die
