"""InfoPro (Wang, Ni, Song, Yang & Huang, ICLR 2021, "Revisiting Locally Supervised Learning: an Alternative to
End-to-end Training"): every group is trained by a local loss that keeps the information of its output h_i
about the input x while pushing it towards the labels y, and nothing crosses a boundary backwards.

Group i < K (i = 0..K-2, a "local module") has a decoder D_i back to the image and an auxiliary head a_i
(bench/models/local_heads.py, the authors' shapes). Its loss, the paper's surrogate of
-lambda_1 I(h_i, x) - lambda_2 I(h_i, y), is

    L_i = lambda_1(i) BCE(D_i(h_i), x01) + lambda_2(i) L_y(a_i(h_i), y)

with x01 the input image in [0, 1] and L_y the supervised contrastive loss of a_i's features (`loss=contrast`,
temperature 0.07: InfoPro (Contrast)) or the cross-entropy of a_i's logits (`loss=softmax`: InfoPro (Softmax)).
The weights change linearly from the first local module (lambda1, lambda2) to the last one (lambda1_last,
lambda2_last): lambda(i) = (1 - r) lambda + r lambda_last, r = i / (K - 2) (r = 0 for K = 2), as in the
authors' code (train.py, ixx_1/ixy_1/ixx_2/ixy_2). Per batch:
- forward: group i, D_i and a_i are updated together, at once, by SGD (the group's optimiser, lr schedule and
  L2, as the authors' single optimiser) on L_i; h_i, detached, goes to the next group;
- the last group is trained by backprop of the main cross-entropy;
- backward: nothing.
Every weight left unset takes the authors' value for the network and K (their comand.sh, CIFAR-10, InfoPro
(Contrast); the same for softmax, for which they give none) where they give one, else lambda_1 = 5,
lambda_2 = 1 for every module (their ResNet-32, K = 2 setting).

Honest notes. The authors un-normalise the image with CIFAR's mean and std; ours is standardised by the data
set, and the target is the batch rescaled per channel to [0, 1] by its minimum and maximum, which is the
original pixel scale wherever a batch holds the darkest and brightest values (CIFAR and the digits, in
practice). Their `InfoPro*` (memory-balanced cuts) is not this rule's split: ours cuts ResNet-32/110 where
their `InfoPro` config does (bench/models/split.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.models import IMAGE_MODELS
from bench.models.local_heads import INFOPRO_HIDDEN, InfoProDecoder, infopro_head, supervised_contrastive

from .base import Look, Option
from .local import LocallySupervised
from .registry import register_method

# (network, K) -> (lambda1, lambda2, lambda1_last, lambda2_last): InfoPro-Pytorch's comand.sh, CIFAR-10, contrast
AUTHORS_WEIGHTS = {
    ("resnet32", 2): (5, 1, 0, 0), ("resnet32", 4): (6, 0, 1, 2), ("resnet32", 8): (5, 0, 0, 2),
    ("resnet32", 16): (5, 0.05, 0.2, 0.5),
    ("resnet110", 2): (5, 0.5, 0, 0), ("resnet110", 4): (1, 0, 0, 1), ("resnet110", 8): (5, 0, 0, 1),
    ("resnet110", 16): (5, 0, 0.5, 1),
}
OTHER_WEIGHTS = (5, 1, 5, 1)
WEIGHTS = ("lambda1", "lambda2", "lambda1_last", "lambda2_last")


def module_weights(model: str, k: int, i: int, options: dict) -> tuple[float, float]:
    """(lambda_1, lambda_2) of local module i of K groups: given or the authors', interpolated linearly."""
    base = AUTHORS_WEIGHTS.get((model, k), OTHER_WEIGHTS)
    l1, l2, l1_last, l2_last = (base[j] if options[w] is None else options[w] for j, w in enumerate(WEIGHTS))
    r = i / (k - 2) if k > 2 else 0.0
    return (1 - r) * l1 + r * l1_last, (1 - r) * l2 + r * l2_last


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """The batch rescaled per channel to [0, 1] (the reconstruction target)."""
    dims = [d for d in range(x.dim()) if d != 1]
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def _weight(doc: str) -> Option:
    return Option(None, f"{doc} (default: the authors' for the network and K)", kind=float, minimum=0)


@register_method("infopro")
class InfoPro(LocallySupervised):
    description = "InfoPro: each group follows its own reconstruction + contrastive (or CE) loss"
    needs_input = True
    supported_models = tuple(m for m in IMAGE_MODELS if m != "mlp")  # the decoder needs feature maps
    options = {
        "loss": Option("contrast", "the I(h, y) term: contrast (supervised contrastive) or softmax (cross-entropy)",
                       choices=("contrast", "softmax")),
        "lambda1": _weight("reconstruction weight of the first local module"),
        "lambda2": _weight("contrastive / CE weight of the first local module"),
        "lambda1_last": _weight("reconstruction weight of the last local module (group K-1)"),
        "lambda2_last": _weight("contrastive / CE weight of the last local module (group K-1)"),
        "temperature": Option(0.07, "temperature of the contrastive loss", minimum=1e-6),
    }
    look = Look("InfoPro", "#66a61e", 84)

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self.target: torch.Tensor | None = None
        if ctx.is_last:
            return
        self.weights = module_weights(ctx.model, ctx.num_groups, ctx.index, options)
        self.decoder = InfoProDecoder(ctx.out_shape[0], ctx.network_input)
        softmax = options["loss"] == "softmax"
        aux = infopro_head(ctx.out_shape, ctx.num_classes if softmax else max(1, round(INFOPRO_HIDDEN * ctx.width)),
                           ctx.width)
        if softmax:  # a classifier: group 1..i + a_i is sub-model i
            self.head = aux
        self.aux = aux
        for m in (self.decoder, aux):
            self.body_opt.add_param_group({"params": list(m.parameters())})

    def modules(self):
        mods = super().modules()
        if not self.ctx.is_last:
            mods["decoder"] = self.decoder
            if self.head is None:
                mods["projector"] = self.aux
        return mods

    def take_input(self, x):
        self.target = unit_range(x.detach())

    def local_loss(self, h, y):
        """L_i = lambda_1(i) BCE(D_i(h), x01) + lambda_2(i) L_y(a_i(h), y), with both terms to record."""
        recon = self.decoder(h, self.target)
        out = self.aux(h)
        task = F.cross_entropy(out, y) if self.head is not None else supervised_contrastive(
            out, y, self.opts["temperature"])
        return self.weights[0] * recon + self.weights[1] * task, {"recon_bce": recon, "task_loss": task}
