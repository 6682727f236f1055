"""Local SGD (Stich, ICLR 2019; Lin et al., "Don't Use Large Mini-Batches, Use Local SGD", ICLR 2020):
data-parallel training that averages models every l iterations instead of gradients every iteration.

S = `--groups` workers each hold the whole network. Per step, worker w takes the w-th 1/S of the batch
and does one SGD step on its own copy; every l steps (one round) the copies are averaged (parameters and
BN statistics) and every worker restarts from the average with fresh momentum. This is ResIST's baseline
(seeds/resist-paper.txt, Section 2.4), with the same rounds, the same aggregation (`bench/local_rounds.py`)
and, on real workers (`--executor distributed`), the same collectives (one all-reduce of the model);
it moves 2 x S x model bytes per round.

Options (`--option key=value`): local_iters (l, default 10). The layer groups only fix S: with
`--groups S` the model is still split into S groups, but every worker trains all of them.
"""
from __future__ import annotations

from bench.local_rounds import DEFAULT_LOCAL_ITERS, LocalRounds, rounds_of
from bench.models import IMAGE_MODELS

from . import register_method
from .base import Stage, check_options


@register_method("localsgd")
class LocalSgdStage(Stage):
    description = "local SGD: S = K workers, own shard of each batch, model averaged every l steps"
    sends_feedback = False
    supported_models = IMAGE_MODELS  # replicas of a stateful LSTM would need their own states

    def __init__(self, ctx):
        super().__init__(ctx)
        self.opts = check_options(self.name, ctx.options, self.option_defaults())
        self.local_iters = self.opts["local_iters"]

    @classmethod
    def option_defaults(cls) -> dict:
        return {"local_iters": DEFAULT_LOCAL_ITERS}

    def forward(self, step, x, y):
        raise NotImplementedError(f"{self.name} runs through run_step (rounds of local iterations)")

    backward = forward

    @classmethod
    def make_rounds(cls, stages, ranks=None) -> LocalRounds:
        return LocalRounds(stages, len(stages), stages[0].local_iters, ranks=ranks)

    @classmethod
    def run_step(cls, stages, step, x, y):
        if rounds_of(stages) is None:
            stages[0]._rounds = cls.make_rounds(stages)
        stages[-1].stats["loss"] = rounds_of(stages).step(step, x, y)

    @classmethod
    def record_extras(cls, stages) -> dict:
        r = rounds_of(stages)
        return {"comm": r.summary()} if r is not None else {}

    @classmethod
    def run_distributed(cls, cfg, dcfg):
        from bench.rounds_worker import run_rounds_distributed
        return run_rounds_distributed(cfg, dcfg)
