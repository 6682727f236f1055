"""`python -m bench count`: parameters and FLOPs per group and per head of a network, without data or training.

Writes a record with status `counted` (`<out>/<run_id>_counted.json`): the config and the split's units,
parameters and FLOPs (torch.utils.flop_counter on one sample) per group and per head, as a run's record
has them. The report reads these for the paper's networks at full width (Table VIII's and Table X's
architecture rows, the paper panel of the anytime figure), so that rendering a table builds no network.
The data set's files are not needed: its declared input shape and classes are used.

    python -m bench count --paper --out results/architecture/records     # = nox -s architecture
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

from methods import create_method

from .. import data as datasets
from ..config import RunConfig, prepare
from ..errors import BenchError
from ..models import build_model, project_group_starts
from ..models.split import make_split
from .build import Run, contexts, make_trainer
from .records import RecordWriter

# The networks of the paper's complexity tables (VIII: LCT_n3 of ResNet-50/101 on CIFAR-10/100 and ImageNet;
# X: LCT_n3 of the 4-layer LSTM on PTB), each at the paper profile (full width).
PAPER_COUNTS = [("lct", 4, model, data) for data in ("cifar10", "cifar100", "imagenet")
                for model in ("resnet50", "resnet101")] + [("lct", 4, "lstm4", "ptb")]


def count(cfg: RunConfig) -> Path:
    cfg = prepare(cfg, need_files=False)
    spec = datasets.spec(cfg.data)
    shape = spec.input_shape if spec.input_shape is not None else (cfg.bptt,)
    if spec.num_classes is None:
        raise BenchError(f"{cfg.data}: its classes (vocabulary) are known only from its files; count on a data set "
                         f"that declares them")
    method = create_method(cfg.method)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, spec.num_classes, shape, cfg.width, hidden=cfg.hidden, classifier=cfg.classifier)
    split = make_split(cfg.split_rule if cfg.split_rule != "timed" else "paper", model, cfg.groups, shape)
    if cfg.group_projection:
        project_group_starts(model, split.bounds)
    trainer = make_trainer(method, contexts(model, split, shape, spec.num_classes, cfg.hyper()),
                           method.resolve_options(cfg.extra))
    run = Run(cfg, method, SimpleNamespace(input_shape=shape, num_classes=spec.num_classes), model, split, trainer,
              None, torch.device("cpu"))
    path = Path(cfg.out) / f"{cfg.run_id}_counted.json"
    writer = RecordWriter.start(path, cfg.to_dict(), "cpu", split=run.split_info(), executor="none", parallel="none")
    writer.record["status"] = "counted"
    writer.save()
    return path


def count_paper(out: str) -> list[Path]:
    return [count(replace(RunConfig(), method=m, groups=k, model=model, data=d, profile="paper", out=out))
            for m, k, model, d in PAPER_COUNTS]
