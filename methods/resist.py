"""ResIST: Residual network Independent Subnetwork Training (Dun, Wolfe, Jermaine & Kyrillidis, UAI 2022;
seeds/resist-paper.txt).

A pre-activation ResNet (`--model preact_resnet50 | preact_resnet101`) is cut, every round, into S =
`--groups` shallow sub-ResNets that are trained independently on S workers and then re-assembled:
- partition (Section 2.2): only the third section's blocks (conv4_*, without its first, strided block)
  are partitioned; every other block is shared by all sub-ResNets. Each round the partitioned blocks are
  randomly permuted and dealt round-robin to the S sub-ResNets; a sub-ResNet with fewer than
  `min_blocks` of them gets extra ones drawn at random from those it lacks (minimum depth, so some
  blocks are shared). A block a sub-ResNet does not hold is the identity there.
- local training (Algorithm 1): each worker runs l local SGD iterations on its sub-ResNet, on its own
  shard (the w-th 1/S) of every batch; momentum restarts every round.
- aggregation: each global parameter (and BN statistic) becomes the average over the sub-ResNets that
  held it (a block held by one sub-ResNet is copied back).
- activation scaling (Section 2.6): the global model runs every block at test time, so the residual
  branch of each partitioned block is scaled by the fraction of sub-ResNets that hold a block, i.e.
  (blocks per sub-ResNet) / (partitioned blocks), 1/S without minimum depth (as the authors' code).
The machinery (rounds, averaging over holders, bytes per round) is `methods/rounds.py`, shared with
the `localsgd` baseline; `--executor distributed` runs it on S processes with torch.distributed
(all-reduce for shared blocks, reduce + broadcast within the holders for partitioned ones).
"""
from __future__ import annotations

import math

import torch

from bench.models import PREACT_MODELS
from bench.models.resnet import partitionable_blocks

from .registry import register_method
from .base import Look, Option
from .rounds import LocalRounds, RoundsMethod, global_units


def default_min_blocks(n: int) -> int:
    return math.ceil(5 * n / 22)


def partition(blocks: list[int], num_workers: int, min_blocks: int, g: torch.Generator) -> list[list[int]]:
    """One round's sub-ResNets: a random permutation of `blocks` dealt round-robin, then each one topped
    up to `min_blocks` with blocks it lacks, drawn at random. Every block is held at least once."""
    perm = [blocks[i] for i in torch.randperm(len(blocks), generator=g).tolist()]
    parts = [perm[w::num_workers] for w in range(num_workers)]
    for p in parts:
        need = min(min_blocks, len(blocks)) - len(p)
        if need > 0:
            pool = [b for b in blocks if b not in p]
            p.extend(pool[i] for i in torch.randperm(len(pool), generator=g)[:need].tolist())
    return [sorted(p) for p in parts]


@register_method("resist")
class Resist(RoundsMethod):
    description = "ResIST: random shallow sub-ResNets trained independently for l steps, then aggregated"
    supported_models = PREACT_MODELS
    options = {**RoundsMethod.options,
               "min_blocks": Option(None, "partitioned blocks each sub-ResNet holds at least (default: the paper's "
                                    "5 of ResNet-101's 22, scaled to the model and rounded up)", kind=int, minimum=1)}
    look = Look("resist", "#6a3d9a", 83, count="S")

    def __init__(self, groups, options):
        super().__init__(groups, options)
        # the run's seed (torch.manual_seed before the model was built): every rank deals the same rounds
        self.seed = torch.initial_seed()

    def make_rounds(self, ranks=None) -> LocalRounds:
        S = len(self.groups)
        blocks = partitionable_blocks(global_units(self.bodies))
        m = self.opts["min_blocks"]
        m = default_min_blocks(len(blocks)) if m is None else m
        seed = self.seed

        def deal(r: int) -> list[list[int]]:
            g = torch.Generator().manual_seed((seed * 1_000_003 + r) % 2**63)
            return partition(blocks, S, m, g)

        sizes = [len(p) for p in deal(0)]  # the same every round
        scale = sum(sizes) / (S * len(blocks)) if blocks else 1.0
        return LocalRounds(self.bodies, self.hyper, S, self.opts["local_iters"], partitioned=blocks,
                           partition=deal, eval_scale=scale, ranks=ranks)
