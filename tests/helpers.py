"""Builders shared by tests: tiny models split into groups, parameter snapshots."""
from __future__ import annotations

import torch

from bench.exec.inprocess import GroupChain
from bench.models import build_model
from bench.models.split import paper_split
from bench.train.build import contexts, make_trainer
from methods import create_method
from methods.base import Hyper


def build_trainer(method: str, k: int, model: str = "resnet50", seed: int = 0, width: float = 1 / 16,
                  input_shape=(1, 8, 8), num_classes: int = 10, hyper: Hyper | None = None, options=None,
                  hidden: int | None = None):
    """The trainer the runner builds, on a tiny model; returns (trainer, model)."""
    cls = create_method(method)
    opts = cls.resolve_options(options or {})
    cls.check(model, k, 32, opts)
    torch.manual_seed(seed)
    m = build_model(model, num_classes, input_shape, width, hidden=hidden)
    groups = contexts(m, paper_split(m, k), input_shape, num_classes, hyper or Hyper(lr=0.05))
    return make_trainer(cls, groups, opts), m


def make_stages(method: str, k: int, **kw):
    """A group rule's K rules (the in-process chain's), and the model; returns (rules, model)."""
    trainer, m = build_trainer(method, k, **kw)
    return trainer.rules, m


def train_step(trainer, step: int, x, y):
    """One in-process step of a trainer, or of a list of group rules driven as the in-process chain."""
    if isinstance(trainer, list):
        trainer = GroupChain(trainer)
    return trainer.step(step, x, y)


def params_of(parts, key: str = "body"):
    """Flat copy of every parameter of one module kind in each group (None where a group lacks it): `parts`
    is a trainer, or a list of group rules."""
    parts = [r.modules() for r in parts] if isinstance(parts, list) else parts.parts
    out = []
    for part in parts:
        mod = part.get(key)
        out.append(None if mod is None else torch.cat([p.detach().flatten().clone() for p in mod.parameters()]))
    return out


def model_for(method: str, default: str = "resnet50") -> str:
    """The model a test over every method gives `method`: the default, or the first one it supports
    (admm: mlp; resist: preact_resnet50)."""
    supported = create_method(method).supported_models
    return default if supported is None or default in supported else supported[0]


def dying_at(step: int, inprocess_cls):
    """Patch InProcess.phase so that a run raises KeyboardInterrupt when it reaches `step`: killed mid-way."""
    real = inprocess_cls.phase

    def phase_or_die(self, start, end, on_step):
        if start <= step < end:
            done = real(self, start, step, on_step)
            raise KeyboardInterrupt(f"killed at step {step} after {done.steps} steps")
        return real(self, start, end, on_step)

    return phase_or_die


def md_rows(text: str) -> list[list[str]]:
    """The cells of every row of every markdown table in `text` (header rows included, rules left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells_ = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set(":-") and c for c in cells_):
                rows.append(cells_)
    return rows


def md_row(text: str, *start: str) -> list[str]:
    """The one markdown row whose first cells are `start`."""
    found = [r for r in md_rows(text) if r[:len(start)] == list(start)]
    assert len(found) == 1, (start, found)
    return found[0]
