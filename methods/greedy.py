"""Decoupled greedy local learning (Belilovsky, Eickenberg & Oyallon, ICML 2020), a.k.a. local parallelism
(Laskin et al. 2020, seeds/related-abstracts.txt): every group learns only from its own auxiliary head.

Group i < K has an auxiliary classifier a_i on its output h_i (the same shape as LCT's critic, so that
f_1..f_i + a_i is sub-model i). Per batch:
- forward: group i and its head are updated together, at once, by SGD on mean CE(a_i(h_i), y);
  h_i (detached: no gradient ever crosses a boundary) goes to the next group;
- the last group is trained by backprop of the main loss;
- backward: nothing. No group waits for anything from a later group, and nothing is sent back.
This is LCT without the critic cascade (LCT's c_i is trained to match l_{i+1}; a_i here is just a
classifier of h_i), so `greedy` vs `lct` at the same K shows what the cascade buys, with one more
difference: as in Belilovsky et al., the head learns with the group's optimiser (SGD, the run's lr schedule
and L2), where LCT's critics use Adam at 1e-4 without L2.

The head's shape is the option `head`: `critic` (the default: LCT's critic, so the two differ only in the
cascade) or `dgl`, DGL's own "MLP-SR" auxiliary network (bench/models/local_heads.py), the shape of the DGL
numbers of InfoPro's Table 2 (report/local.py), for convolutional networks only.
"""
from __future__ import annotations

from bench.errors import BenchError
from bench.models import IMAGE_MODELS
from bench.models.local_heads import dgl_aux

from .base import Look, Option
from .local import LocallySupervised
from .registry import register_method

CONV_MODELS = tuple(m for m in IMAGE_MODELS if m != "mlp")  # networks of feature maps (C, H, W)


@register_method("greedy")
class GreedyLocal(LocallySupervised):
    description = "decoupled greedy learning: each group (and its head) follows only its own head's CE"
    options = {"head": Option("critic", "auxiliary head: critic (LCT's critic shape) or dgl (DGL's MLP-SR aux net)",
                              choices=("critic", "dgl"))}
    look = Look("greedy", "#a6761d", 81)

    @classmethod
    def check(cls, model, groups, batch_size, options):
        super().check(model, groups, batch_size, options)
        if options["head"] == "dgl" and model not in CONV_MODELS:
            raise BenchError(f"greedy: head=dgl is DGL's convolutional auxiliary net; {model} has no feature maps "
                             f"(use head=critic)")

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        dgl = options["head"] == "dgl" and not ctx.is_last
        # the head is part of the sub-model: same optimiser, lr schedule and L2 as the group
        self._attach_head(dgl_aux(ctx.out_shape, ctx.num_classes) if dgl else None)

    def local_loss(self, h, y):
        loss = self.ctx.per_sample_loss(self.head(h), y).mean()
        return loss, {"head_ce": loss}
