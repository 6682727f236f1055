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
    """Running totals of one output: samples (characters), nats, top-1 and top-5 hits."""

    def __init__(self):
        self.n, self.nats, self.top1, self.top5 = 0, 0.0, 0, 0

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        flat, target = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        self.nats += F.cross_entropy(flat, target, reduction="sum").item()
        self.top1 += (flat.argmax(1) == target).sum().item()
        k = min(5, flat.shape[1])  # all of them when there are 5 classes or fewer
        self.top5 += (flat.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum().item()
        self.n += target.numel()


@torch.no_grad()
def evaluate(network: Network, batches, text: bool = False) -> dict:
    """Test accuracy and loss of the main output and of every sub-model (groups 1..i + head i), with top-5
    (test_top5, sub_top5; the ImageNet rows need it). Text (`text=True`, the LSTMs): also test_bpc and
    sub_bpc, and accuracy means next characters predicted; the LSTMs run in eval mode, whose state is
    separate from the training state: it starts at zero and is carried from segment to segment."""
    modules = _modules(network)
    for m in modules:
        m.train(False)
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
    for m in modules:
        m.train(True)
    sub = list(subs.values())
    out = {"test_acc": 100.0 * main.top1 / main.n, "test_loss": main.nats / main.n,
           "sub_acc": [100.0 * s.top1 / s.n for s in sub],
           "test_top5": 100.0 * main.top5 / main.n, "sub_top5": [100.0 * s.top5 / s.n for s in sub]}
    if text:
        out.update(test_bpc=bpc(main.nats / main.n), sub_bpc=[bpc(s.nats / s.n) for s in sub])
    return out


def assumption1(trainer, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Per group k: mu_k = <G_k, g_k>/||G_k||^2 and cos(G_k, g_k), G the true gradient of the main loss
    w.r.t. the group's weights, g the gradient the method applies (trainer.local_grads: of group k given its
    input on this forward pass; a whole-step rule is given the batch, x). Nothing is
    updated (buffers are restored); weight decay is left out of both. LSTMs: every forward starts from the
    current training state (the one the next step continues from), which is restored afterwards; the main
    loss is the mean per-character cross-entropy."""
    network = trainer.network()
    buffers = [b for part in trainer.parts for m in part.values() for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    layers = recurrent_layers(_modules(network))
    states = [layer.states[True] for layer in layers]

    def restore_states():
        for layer, state in zip(layers, states):
            layer.states[True] = state

    inputs, h = [], x
    for body, _ in network:
        inputs.append(h.detach())
        h = body(h)
    params = [list(body.parameters()) for body, _ in network]
    main_loss = sequence_loss(h, y).mean() if h.dim() == 3 else F.cross_entropy(h, y)
    true = torch.autograd.grad(main_loss, [p for ps in params for p in ps])
    mu, cos = [], []
    offset = 0
    for k, (xin, ps) in enumerate(zip(inputs, params)):
        G = torch.cat([g.flatten() for g in true[offset:offset + len(ps)]])
        offset += len(ps)
        restore_states()
        local = trainer.local_grads(k, x if isinstance(trainer, WholeStepRule) else xin, y)  # whole-step: the batch
        g = G if local is None else torch.cat([t.flatten() for t in local])
        dot = torch.dot(G, g).item()
        mu.append(dot / max(G.norm().item() ** 2, 1e-30))
        cos.append(dot / max(G.norm().item() * g.norm().item(), 1e-30))
    for b, v in zip(buffers, saved):
        b.copy_(v)
    restore_states()
    return {"mu": mu, "cos": cos}


def count_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
