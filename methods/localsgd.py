"""Local SGD (Stich, ICLR 2019; Lin et al., "Don't Use Large Mini-Batches, Use Local SGD", ICLR 2020):
data-parallel training that averages models every l iterations instead of gradients every iteration.

S = `--groups` workers each hold the whole network. Per step, worker w takes the w-th 1/S of the batch
and does one SGD step on its own copy; every l steps (one round) the copies are averaged (parameters and
BN statistics) and every worker restarts from the average with fresh momentum. This is ResIST's baseline
(seeds/resist-paper.txt, Section 2.4), with the same rounds, the same aggregation (`methods/rounds.py`)
and, on real workers (`--executor distributed`), the same collectives (one all-reduce of the model);
it moves 2 x S x model bytes per round. The layer groups only fix S: with `--groups S` the model is
still split into S groups, but every worker trains all of them.
"""
from __future__ import annotations

from bench.models import IMAGE_MODELS

from .registry import register_method
from .base import Look
from .rounds import RoundsMethod


@register_method("localsgd")
class LocalSgd(RoundsMethod):
    description = "local SGD: S = K workers, own shard of each batch, model averaged every l steps"
    supported_models = IMAGE_MODELS  # replicas of a stateful LSTM would need their own states
    look = Look("localsgd", "#cab2d6", 82, count="S")
