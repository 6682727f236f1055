"""The one interface every training method implements: a rule for one layer group and one batch.

A stage owns one layer group (``body``) plus whatever the method attaches to it (a critic, an
exit head, a synthesizer) and their optimisers. Both executors drive a stage the same way:

    out = stage.forward(step, x, y)     # -> activation to send to the next stage (None at the last)
    back = stage.backward(step, fb)     # fb: what the next stage sent back for this step (None at
                                        #     the last stage); -> what to send to the previous stage

``forward`` may already update the group (local methods do: that is what unlocks it);
``backward`` applies whatever needed the next stage's feedback. State between the two calls is
kept per step, so a pipelined executor may run several forwards before the matching backwards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Hyper:
    """Optimisation settings a stage needs (the run's config supplies them)."""

    lr: float = 0.1                       # main-network SGD learning rate at step 0
    milestones: tuple[int, ...] = ()      # steps at which the lr is multiplied by lr_decay
    lr_decay: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True                 # the authors' code uses Nesterov momentum
    weight_decay: float = 5e-4            # L2 on the main network only
    aux_lr: float = 1e-4                  # Adam lr of critics / synthesizers (fixed)
    optimizer: str = "sgd"                # main network: "sgd" (momentum, CNNs) or "adam" (the paper's LSTMs)

    def lr_at(self, step: int) -> float:
        return self.lr * self.lr_decay ** sum(step >= m for m in self.milestones)


@dataclass
class StageContext:
    """What a stage is built from."""

    index: int                            # 0-based group index
    num_stages: int
    body: nn.Module                       # the layer group (the last one ends with the classifier)
    out_shape: tuple[int, ...] | None     # per-sample activation shape after this group (None at last)
    num_classes: int
    family: str                           # "resnet" | "resnet_imagenet" | "mlp" | "lstm": picks head shapes
    width: float
    hyper: Hyper
    head_factory: Callable[[tuple[int, ...]], nn.Module] | None = None  # builds a critic/exit for out_shape
    options: dict = field(default_factory=dict)
    # per-sample loss of logits against targets: a (B,) vector for classification; sequence models
    # flatten time into the sample axis. LCT's critics regress these vectors.
    per_sample_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        lambda logits, y: F.cross_entropy(logits, y, reduction="none"))

    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.index == self.num_stages - 1


class Stage:
    """Base class: SGD (or Adam, per Hyper.optimizer) on the body; subclasses define forward/backward."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Whether stage i's backward needs feedback from stage i+1 (the last stage never waits).
    sends_feedback: ClassVar[bool] = True
    # Whether the Assumption-1 check applies (the method updates groups with a non-true gradient).
    local_gradients: ClassVar[bool] = False
    # Models the rule applies to (names in bench.models.MODELS); None: every model. build_stages checks it.
    supported_models: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.body = ctx.body
        self.hyper = ctx.hyper
        self.head: nn.Module | None = None
        if ctx.hyper.optimizer == "adam":  # L2 as Adam's (coupled) weight decay, like a loss term
            self.body_opt = torch.optim.Adam(self.body.parameters(), lr=ctx.hyper.lr,
                                             weight_decay=ctx.hyper.weight_decay)
        else:
            self.body_opt = torch.optim.SGD(self.body.parameters(), lr=ctx.hyper.lr, momentum=ctx.hyper.momentum,
                                            nesterov=ctx.hyper.nesterov, weight_decay=ctx.hyper.weight_decay)
        self.stats: dict[str, torch.Tensor] = {}  # detached scalars; read lazily (no sync per step)

    # --- the rule -------------------------------------------------------------------------
    def forward(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def backward(self, step: int, feedback: torch.Tensor | None) -> torch.Tensor | None:
        raise NotImplementedError

    @classmethod
    def check_model(cls, model: str) -> None:
        """One-line error if the rule does not apply to this model (supported_models)."""
        if cls.supported_models is not None and model not in cls.supported_models:
            from bench.errors import BenchError

            raise BenchError(f"{cls.name} runs on {', '.join(cls.supported_models)} only, not on {model}")

    @property
    def waits_for_feedback(self) -> bool:
        return self.sends_feedback and not self.ctx.is_last

    @classmethod
    def run_step(cls, stages: list["Stage"], step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """One in-process step over all stages: lockstep forward, then feedback back. A method whose
        step is not of this shape (e.g. ADMM's sub-steps) overrides it."""
        for stage in stages:
            stage.set_step(step)
            x = stage.forward(step, x, y)
        feedback = None
        for stage in reversed(stages):
            feedback = stage.backward(step, feedback)

    # --- helpers shared by methods ------------------------------------------------------------
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"body": self.body_opt}

    def modules(self) -> dict[str, nn.Module]:
        """Everything with weights or buffers that this stage owns (checkpoints, memory, sync)."""
        mods = {"body": self.body}
        if self.head is not None:
            mods["head"] = self.head
        return mods

    def set_step(self, step: int) -> None:
        """Apply the main network's lr schedule (auxiliary nets keep their fixed Adam lr)."""
        for group in self.body_opt.param_groups:
            group["lr"] = self.hyper.lr_at(step)

    def _attach_head(self) -> None:
        """A head after this group (none after the last) that learns with the group's own optimiser, as one
        sub-model (joint's exits, greedy's auxiliary classifiers)."""
        if not self.ctx.is_last:
            self.head = self.ctx.head_factory(self.ctx.out_shape)
            self.body_opt.add_param_group({"params": list(self.head.parameters())})

    def head_logits(self, h: torch.Tensor) -> torch.Tensor | None:
        """Sub-model output at this boundary (critic / exit), or None if the method has no head."""
        return None if self.head is None or self.ctx.is_last else self.head(h)

    def local_grads(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor] | None:
        """Gradient of the body's parameters that this method would apply for (x, y); None = the true one."""
        return None

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """Input of this stage: a leaf that collects the gradient to send back (not for the first)."""
        return x if self.ctx.is_first else x.detach().requires_grad_(True)

    def _last_forward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The last group: body ends with the classifier; per-sample loss kept for feedback."""
        self.x = self._input(x)
        self.logits = self.body(self.x)
        self.loss_vec = self.ctx.per_sample_loss(self.logits, y)
        self.loss = self.loss_vec.mean()
        self.stats["loss"] = self.loss.detach()

    def _last_backward(self) -> None:
        self.body_opt.zero_grad(set_to_none=True)
        self.loss.backward()
        self.body_opt.step()

    def _input_grad(self) -> torch.Tensor | None:
        return None if self.ctx.is_first else self.x.grad


def check_options(method: str, options: dict, known: dict) -> dict:
    """A method's options (`--option key=value`) over its defaults; an unknown key is a one-line error."""
    from bench.errors import BenchError

    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BenchError(f"{method}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(known) or 'none'}")
    out = {}
    for key, default in known.items():
        value = options.get(key, default)
        out[key] = type(default)(value) if default is not None and value is not None else value
    return out
