"""Test evaluation of the main network and of every sub-model, and the Assumption-1 measurement.

Both read a trainer's network as `(body, head)` per group (the head after group i, or None), whichever
executor trained it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import recurrent_layers
from methods import WholeStepRule

Network = list[tuple[nn.Module, nn.Module | None]]


def sequence_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-character cross-entropy (nats) of (B, T, V) logits against (B, T) targets, flattened to (B*T,):
    the per-sample loss of sequence models (LCT's critics regress it character by character)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")


def bpc(nats_per_char: float) -> float:
    """Bits per character from a mean cross-entropy in nats."""
    return nats_per_char / math.log(2)


def _modules(network: Network) -> list[nn.Module]:
    return [m for pair in network for m in pair if m is not None]


class _Score:
    """Running totals of one output: samples (characters), nats, top-1 and top-5 hits, predicted classes. The
    totals stay on the device (no host sync per batch) until `done` reads them once."""

    def __init__(self):
        self.n, self.sums, self.predicted = 0, None, None

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        flat, target = logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1)
        pred = flat.argmax(1)
        k = min(5, flat.shape[1])  # all of them when there are 5 classes or fewer
        sums = torch.stack([F.cross_entropy(flat, target, reduction="sum").double(),
                            (pred == target).sum().double(),
                            (flat.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum().double()])
        counts = torch.bincount(pred, minlength=flat.shape[1])
        self.sums = sums if self.sums is None else self.sums + sums
        self.predicted = counts if self.predicted is None else self.predicted + counts
        self.n += target.numel()

    def done(self) -> "_Score":
        self.nats, self.top1, self.top5 = self.sums.tolist()
        return self

    @property
    def mode_share(self) -> float:
        """The share of the most predicted class: 1.0 for a head that has collapsed to one class."""
        return self.predicted.max().item() / self.n


def _batch_statistics(modules: list[nn.Module]) -> list:
    """BatchNorm in training mode (the statistics of each test batch, as LC(3).py evaluated); returns its
    running buffers, to put back afterwards (evaluation must not move them)."""
    norms = [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.train(True)
    return [(b, b.clone()) for bn in norms for b in bn.buffers()]


@torch.inference_mode()
def evaluate(network: Network, batches, text: bool = False, bn: str = "running") -> dict:
    """Test accuracy and loss of the main output and of every sub-model (groups 1..i + head i), with top-5
    (test_top5, sub_top5; the ImageNet rows need it) and the share of each sub-model's most predicted class
    (sub_mode_share: 1.0 where a head collapsed to one class). Text (`text=True`, the LSTMs): also test_bpc
    and sub_bpc, and accuracy means next characters predicted; the LSTMs run in eval mode, whose state is
    separate from the training state: it starts at zero and is carried from segment to segment.
    bn="batch": BatchNorm normalises with each test batch's statistics (the running ones are left as they were)."""
    modules = _modules(network)
    for m in modules:
        m.train(False)
    saved = _batch_statistics(modules) if bn == "batch" else []
    layers = recurrent_layers(modules)
    for layer in layers:
        layer.reset_state(training=False)
    main = _Score()
    subs = {i: _Score() for i, (_, head) in enumerate(network[:-1]) if head is not None}
    for x, y in batches:
        h = x
        for i, (body, head) in enumerate(network):
            h = body(h)
            if i in subs:
                subs[i].add(head(h), y)
        main.add(h, y)
    for layer in layers:
        layer.reset_state(training=False)  # free the evaluation state
    for buf, value in saved:
        buf.copy_(value)
    for m in modules:
        m.train(True)
    main.done()
    sub = [s.done() for s in subs.values()]
    out = {"test_acc": 100.0 * main.top1 / main.n, "test_loss": main.nats / main.n,
           "sub_acc": [100.0 * s.top1 / s.n for s in sub],
           "test_top5": 100.0 * main.top5 / main.n, "sub_top5": [100.0 * s.top5 / s.n for s in sub],
           "sub_mode_share": [s.mode_share for s in sub]}
    if text:
        out.update(test_bpc=bpc(main.nats / main.n), sub_bpc=[bpc(s.nats / s.n) for s in sub])
    return out


def assumption1(trainer, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Per group k, over `batches`: mu_k = <G_k, g_k>/||G_k||^2, cos(G_k, g_k) and ratio_k = ||g_k|| / ||G_k||,
    G the true gradient of the main loss w.r.t. the group's weights, g the gradient the method applies
    (trainer.local_grads); returns the mean over the batches (mu, cos, ratio) with their std and minimum
    (mu_std, mu_min, cos_std, cos_min, ratio_std): one batch is too noisy to judge the sign of mu_k by.
    Nothing is updated (buffers are restored); weight decay is left out of both. LSTMs: every forward starts
    from the current training state (the one the next step continues from), which is restored afterwards;
    the main loss is the mean per-character cross-entropy."""
    per_batch = [_assumption1_one(trainer, x, y) for x, y in batches]
    out = {"batches": len(per_batch)}
    for key in ("mu", "cos", "ratio"):
        values = torch.tensor([b[key] for b in per_batch], dtype=torch.float64)  # (batches, groups)
        out[key] = values.mean(0).tolist()
        out[f"{key}_std"] = (values.std(0) if len(per_batch) > 1 else torch.zeros(values.shape[1])).tolist()
        out[f"{key}_min"] = values.min(0).values.tolist()
    return out


def _assumption1_one(trainer, x: torch.Tensor, y: torch.Tensor) -> dict:
    network = trainer.network()
    buffers = [b for part in trainer.parts for m in part.values() for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    layers = recurrent_layers(_modules(network))
    states = [layer.states[True] for layer in layers]

    def restore_states():
        for layer, state in zip(layers, states):
            layer.states[True] = state

    take_input = getattr(trainer, "take_input", None)  # group rules that reconstruct the input see this batch
    if take_input is not None:
        take_input(x)
    inputs, h = [], x
    for body, _ in network:
        inputs.append(h.detach())
        h = body(h)
    params = [list(body.parameters()) for body, _ in network]
    main_loss = sequence_loss(h, y).mean() if h.dim() == 3 else F.cross_entropy(h, y)
    true = torch.autograd.grad(main_loss, [p for ps in params for p in ps])
    mu, cos, ratio = [], [], []
    offset = 0
    for k, (xin, ps) in enumerate(zip(inputs, params)):
        G = torch.cat([g.flatten() for g in true[offset:offset + len(ps)]])
        offset += len(ps)
        restore_states()
        local = trainer.local_grads(k, x if isinstance(trainer, WholeStepRule) else xin, y)  # whole-step: the batch
        g = G if local is None else torch.cat([t.flatten() for t in local])
        dot, g_norm, G_norm = torch.dot(G, g).item(), g.norm().item(), G.norm().item()
        mu.append(dot / max(G_norm ** 2, 1e-30))
        cos.append(dot / max(G_norm * g_norm, 1e-30))
        ratio.append(g_norm / max(G_norm, 1e-30))
    for b, v in zip(buffers, saved):
        b.copy_(v)
    restore_states()
    return {"mu": mu, "cos": cos, "ratio": ratio}


def count_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
