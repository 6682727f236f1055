"""Build a method's stages on a model, and the in-process executor that runs them.

The in-process executor is the reference semantics: every stage in one process, one step at a
time, forward through the stages then feedback back through them (the paper's TensorFlow code
computed one synchronous step like this). The distributed executor runs the same stages.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from methods import StageContext, create_method
from methods.base import Hyper, Stage

from .heads import critic
from .models import UnitModel, recurrent_layers
from .split import Split, unit_flops
from .text import bpc, sequence_loss


def build_stages(method: str, model: UnitModel, split: Split, input_shape: tuple[int, ...],
                 num_classes: int, hyper: Hyper, options: dict | None = None) -> list[Stage]:
    stage_cls = create_method(method)
    stage_cls.check_model(model.name)
    _, shapes = unit_flops(model, input_shape)
    bodies = split.groups(model)
    k = len(bodies)

    def head_factory(shape):
        return critic(model.family, shape, num_classes, model.width)

    # sequence models: the per-sample loss is per character, (B, T) flattened (LCT's L1 cascade per token)
    loss = {"per_sample_loss": sequence_loss} if model.family == "lstm" else {}
    stages = []
    for i, body in enumerate(bodies):
        out_shape = None if i == k - 1 else shapes[split.bounds[i + 1] - 1]
        ctx = StageContext(index=i, num_stages=k, body=body, out_shape=out_shape, num_classes=num_classes,
                           family=model.family, width=model.width, hyper=hyper,
                           head_factory=head_factory, options=dict(options or {}), **loss)
        stages.append(stage_cls(ctx))
    return stages


def train_step(stages: list[Stage], step: int, x: torch.Tensor, y: torch.Tensor) -> None:
    """One lockstep step (forward through every stage, then feedback back), as the method defines it."""
    type(stages[0]).run_step(stages, step, x, y)


@torch.no_grad()
def evaluate(stages: list[Stage], batches) -> dict:
    """Test accuracy and loss of the main output and of every sub-model (groups 1..i + head i);
    also top-5 accuracy (test_top5, sub_top5), which the ImageNet rows of the paper's tables need.
    Character-level LSTMs: see evaluate_text (adds test_bpc and sub_bpc)."""
    if stages[0].ctx.family == "lstm":
        return evaluate_text(stages, batches)
    for s in stages:
        s.train(False)
    n, correct, loss_sum, correct5 = 0, 0, 0.0, 0
    sub_correct = [0] * (len(stages) - 1)
    sub_correct5 = [0] * (len(stages) - 1)
    has_heads = False
    for x, y in batches:
        h = x
        for i, stage in enumerate(stages):
            h = stage.body(h)
            if i < len(stages) - 1:
                logits = stage.head_logits(h)
                if logits is not None:
                    has_heads = True
                    sub_correct[i] += (logits.argmax(1) == y).sum().item()
                    sub_correct5[i] += _top5(logits, y)
        loss_sum += F.cross_entropy(h, y, reduction="sum").item()
        correct += (h.argmax(1) == y).sum().item()
        correct5 += _top5(h, y)
        n += len(y)
    for s in stages:
        s.train(True)
    return {"test_acc": 100.0 * correct / n, "test_loss": loss_sum / n,
            "sub_acc": [100.0 * c / n for c in sub_correct] if has_heads else [],
            "test_top5": 100.0 * correct5 / n,
            "sub_top5": [100.0 * c / n for c in sub_correct5] if has_heads else []}


@torch.no_grad()
def evaluate_text(stages: list[Stage], batches) -> dict:
    """BPC of the main output and of every sub-model on consecutive segments of text.

    The LSTMs run in eval mode, whose state is separate from the training state: it starts at zero and
    is carried from segment to segment; the training state is left as it was. Returns test_bpc and
    sub_bpc (bits per character = mean cross-entropy in nats / ln 2), and, under the keys the image
    path uses, test_loss (nats per character), test_acc / sub_acc and test_top5 / sub_top5 (% of
    next characters predicted first / among the top 5)."""
    for s in stages:
        s.train(False)
    for layer in recurrent_layers(stages):
        layer.reset_state(training=False)
    k = len(stages)
    n, nats, correct, correct5 = 0, 0.0, 0, 0
    sub_nats, sub_correct, sub_correct5 = [0.0] * (k - 1), [0] * (k - 1), [0] * (k - 1)
    has_heads = False
    for x, y in batches:
        h = x
        flat_y = y.reshape(-1)
        for i, stage in enumerate(stages):
            h = stage.body(h)
            if i < k - 1:
                logits = stage.head_logits(h)
                if logits is not None:
                    has_heads = True
                    flat = logits.reshape(-1, logits.shape[-1])
                    sub_nats[i] += sequence_loss(logits, y).sum().item()
                    sub_correct[i] += (flat.argmax(1) == flat_y).sum().item()
                    sub_correct5[i] += _top5(flat, flat_y)
        flat = h.reshape(-1, h.shape[-1])
        nats += sequence_loss(h, y).sum().item()
        correct += (flat.argmax(1) == flat_y).sum().item()
        correct5 += _top5(flat, flat_y)
        n += flat_y.numel()
    for layer in recurrent_layers(stages):
        layer.reset_state(training=False)  # free the evaluation state
    for s in stages:
        s.train(True)
    subs = lambda values, scale: [scale(v) for v in values] if has_heads else []  # noqa: E731
    return {"test_bpc": bpc(nats / n), "sub_bpc": subs(sub_nats, lambda v: bpc(v / n)),
            "test_loss": nats / n, "test_acc": 100.0 * correct / n, "sub_acc": subs(sub_correct, lambda v: 100.0 * v / n),
            "test_top5": 100.0 * correct5 / n, "sub_top5": subs(sub_correct5, lambda v: 100.0 * v / n)}


def _top5(logits: torch.Tensor, y: torch.Tensor) -> int:
    """How many labels are among the 5 highest logits (all of them when there are 5 classes or fewer)."""
    k = min(5, logits.shape[1])
    return (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum().item()


def _buffers(stages: list[Stage]) -> list[torch.Tensor]:
    return [b for s in stages for m in s.modules().values() for b in m.buffers()]


def assumption1(stages: list[Stage], x: torch.Tensor, y: torch.Tensor) -> dict:
    """Per group k: mu_k = <G_k, g_k>/||G_k||^2 and cos(G_k, g_k), G the true gradient of the main loss
    w.r.t. the group's weights, g the gradient the method applies. Nothing is updated (BN buffers are
    restored); weight decay is left out of both. LSTMs: every forward starts from the current training
    state (the one the next step continues from), which is restored afterwards; the main loss is the
    mean per-character cross-entropy."""
    saved = [b.clone() for b in _buffers(stages)]
    layers = recurrent_layers(stages)
    states = [layer.states[True] for layer in layers]

    def restore_states():
        for layer, state in zip(layers, states):
            layer.states[True] = state

    inputs, h = [], x
    for stage in stages:
        inputs.append(h.detach())
        h = stage.body(h)
    params = [list(s.body.parameters()) for s in stages]
    main_loss = sequence_loss(h, y).mean() if h.dim() == 3 else F.cross_entropy(h, y)
    true = torch.autograd.grad(main_loss, [p for ps in params for p in ps])
    mu, cos = [], []
    offset = 0
    for stage, xin, ps in zip(stages, inputs, params):
        G = torch.cat([g.flatten() for g in true[offset:offset + len(ps)]])
        offset += len(ps)
        restore_states()
        local = stage.local_grads(xin, y)
        g = G if local is None else torch.cat([t.flatten() for t in local])
        dot = torch.dot(G, g).item()
        mu.append(dot / max(G.norm().item() ** 2, 1e-30))
        cos.append(dot / max(G.norm().item() * g.norm().item(), 1e-30))
    for b, v in zip(_buffers(stages), saved):
        b.copy_(v)
    restore_states()
    return {"mu": mu, "cos": cos}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
