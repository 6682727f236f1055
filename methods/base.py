"""What every training method is: a rule, and what it declares beside the rule.

There are two kinds of rule.

- A **group rule** (`GroupRule`) is what one layer group does with one batch; one instance per group:

      out = rule.forward(step, x, y)      # -> activation for the next group (None at the last)
      back = rule.backward(step, fb)      # fb: what the next group sent back for this step (None at the
                                          #     last); -> what to send to the previous group

  `forward` may already update the group (local methods do: that is what unlocks it); `backward`
  applies whatever needed the next group's feedback. State between the two calls is kept per step, so
  an executor may run several forwards before the matching backwards.
- A **whole-step rule** (`WholeStepRule`) updates all groups at once, `step(step, x, y)`, for methods
  whose step is not one forward and one feedback per group (ADMM's sub-steps, auxiliary variables,
  rounds of local training).

Beside the rule a method declares (class attributes, read by the executors, the validation and the
report; nothing outside `methods/` asks for a method by its name):
  options            typed options with defaults and one line of doc (`--option key=value`)
  feedback           what crosses a boundary backwards: nothing, a gradient, a per-sample loss vector
  updates_in_forward whether forward already updates the group (what makes an overlapped schedule legal)
  stale_feedback     whether the rule applies feedback however late it arrives, to weights that have moved on
                     (stale gradients are its point: also makes an overlapped schedule legal); such a rule may
                     declare an option `max_stale`, the bound it is run under, in process and on real workers
  backend            which distributed backend runs it on real workers (or none: in process only)
  local_gradients    whether groups follow a gradient other than the true one (Assumption 1 applies)
  autocast           whether the rule may run under autocast (`--precision bf16|fp16`); False for exact solvers
  loss_scaling       whether the rule scales its losses for fp16 (`self.scaling`, methods/amp.py): what
                     makes `--precision fp16` legal
  needs_input        whether every group's rule also sees the network's input batch (`take_input`, before
                     its forward): InfoPro's decoders reconstruct it
  supported_models, min_groups   where the rule applies
  look               label, colour and order in tables and figures
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError

from .amp import LossScaling


class Feedback(str, enum.Enum):
    """What group i+1 sends back to group i."""

    NONE = "nothing"
    GRADIENT = "gradient"
    LOSS = "per-sample loss"


class Backend(str, enum.Enum):
    """The distributed backend that runs a method on real workers (bench/exec/)."""

    STAGES = "stages"                 # one worker per group, activations and feedback point-to-point
    PIPELINING = "pipelining"         # torch.distributed.pipelining schedules over micro-batches
    DATA_PARALLEL = "data-parallel"   # the whole network on every worker, DistributedDataParallel
    ROUNDS = "rounds"                 # replicas trained apart and aggregated every few steps
    EXCHANGE = "exchange"             # one worker per group; each step a neighbour exchange or a serial pass
    NONE = "none"                     # in process only


@dataclass(frozen=True)
class Option:
    """One method option: its default, a one-line doc, and what a value must be."""

    default: Any
    doc: str
    kind: type | None = None          # the value's type; None: the default's
    minimum: float | None = None
    choices: tuple | None = None

    @property
    def type(self) -> type:
        return self.kind or type(self.default)

    def parse(self, method: str, key: str, value: Any) -> Any:
        """`value` (from the command line, a string, or from a record) as this option's type; one-line error."""
        if value is None:
            return None
        kind = self.type
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                value = value.lower() in ("1", "true", "yes", "on")
            elif kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            else:
                value = kind(value)
        except (TypeError, ValueError):
            raise BenchError(f"{method}: option {key}={value!r} is not of type {kind.__name__}") from None
        if self.minimum is not None and value < self.minimum:
            raise BenchError(f"{method}: option {key}={value} must be >= {self.minimum:g}")
        if self.choices is not None and value not in self.choices:
            raise BenchError(f"{method}: option {key}={value!r}; valid: {', '.join(map(str, self.choices))}")
        return value


@dataclass(frozen=True)
class Look:
    """How tables and figures show a method."""

    label: str                        # "LCT"
    color: str                        # matplotlib colour
    order: int                        # rows and legends sort by it
    suffix: str = ""                  # "n": the paper's LCT_n3 (n = K - 1); "K": "BP+joint (K=4)" where K > 1
    short: str | None = None          # a shorter axis label (default: the label)
    count: str = "K"                  # what the number of groups means here: "K" groups, or "S" workers

    def name(self, groups: int) -> str:
        if self.suffix == "n":
            return f"{self.label}_n{groups - 1}"
        if self.suffix == "K" and groups > 1:
            return f"{self.label} (K={groups})"
        return self.label


@dataclass
class Hyper:
    """Optimisation settings a rule needs (the run's config supplies them)."""

    lr: float = 0.1                       # main-network SGD learning rate at step 0
    milestones: tuple[int, ...] = ()      # steps at which the lr is multiplied by lr_decay
    lr_decay: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True                 # the authors' code uses Nesterov momentum
    weight_decay: float = 5e-4            # L2 on the main network only
    aux_lr: float = 1e-4                  # Adam lr of critics / synthesizers (fixed)
    optimizer: str = "sgd"                # main network: "sgd" (momentum, CNNs) or "adam" (the paper's LSTMs)
    loss_scaling: str | None = None       # fp16: the device type of the rules' GradScalers (methods/amp.py); None: off

    def lr_at(self, step: int) -> float:
        return self.lr * self.lr_decay ** sum(step >= m for m in self.milestones)

    def optimizer_for(self, params) -> torch.optim.Optimizer:
        """The main network's optimiser over `params`."""
        if self.optimizer == "adam":  # L2 as Adam's (coupled) weight decay, like a loss term
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                               weight_decay=self.weight_decay)


def classification_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@dataclass
class GroupContext:
    """What a rule is built from, per layer group."""

    index: int                            # 0-based group index
    num_groups: int
    body: nn.Module                       # the layer group (the last one ends with the classifier)
    out_shape: tuple[int, ...] | None     # per-sample activation shape after this group (None at last)
    in_shape: tuple[int, ...]             # per-sample input shape of this group
    num_classes: int
    family: str                           # "resnet" | "resnet_imagenet" | "mlp" | "lstm": picks head shapes
    width: float
    hyper: Hyper
    head_factory: Callable[[tuple[int, ...]], nn.Module] | None = None  # builds a critic/exit for out_shape
    # per-sample loss of logits against targets: a (B,) vector for classification; sequence models
    # flatten time into the sample axis. LCT's critics regress these vectors.
    per_sample_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = classification_loss
    units: list[nn.Module] = field(default_factory=list)  # the group's units, in order (== body's children)
    model: str = ""                       # the network's name (bench.models.MODELS): for authors' per-network settings
    network_input: tuple[int, ...] = ()   # per-sample shape of the network's input (InfoPro's decoders rebuild it)

    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.index == self.num_groups - 1


class Method:
    """The declarations every method makes (see the module docstring)."""

    name: ClassVar[str] = ""              # set by register_method
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    feedback: ClassVar[Feedback] = Feedback.NONE
    updates_in_forward: ClassVar[bool] = False
    stale_feedback: ClassVar[bool] = False
    backend: ClassVar[Backend] = Backend.NONE
    local_gradients: ClassVar[bool] = False
    needs_input: ClassVar[bool] = False
    autocast: ClassVar[bool] = True
    loss_scaling: ClassVar[bool] = False
    supported_models: ClassVar[tuple[str, ...] | None] = None  # names in bench.models.MODELS; None: all
    min_groups: ClassVar[int] = 1
    look: ClassVar[Look] = Look("?", "#999999", 1000)

    @classmethod
    def resolve_options(cls, given: dict) -> dict:
        """Every option: the given value (typed and checked) or its default; an unknown key is one line."""
        unknown = sorted(set(given) - set(cls.options))
        if unknown:
            raise BenchError(f"{cls.name}: unknown option(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(cls.options) or 'none'}")
        return {k: o.parse(cls.name, k, given[k]) if k in given else o.default for k, o in cls.options.items()}

    @classmethod
    def check(cls, model: str, groups: int, batch_size: int, options: dict) -> None:
        """One-line error where the rule cannot run on this setting (subclasses add their own)."""
        if cls.supported_models is not None and model not in cls.supported_models:
            raise BenchError(f"{cls.name} runs on {', '.join(cls.supported_models)} only, not on {model}")
        if groups < cls.min_groups:
            raise BenchError(f"{cls.name} needs --groups >= {cls.min_groups} (K = {groups} would be plain "
                             f"backprop)")


L2_OPTION = Option("paper", "L2 on the groups before the last: paper = wd * theta; authors = their code's "
                   "wd * sum(g) * theta (g: the signal the group follows)", choices=("paper", "authors"))


class GroupRule(Method):
    """A rule for one layer group; SGD (or Adam, per Hyper.optimizer) on the body."""

    def __init__(self, ctx: GroupContext, options: dict):
        self.ctx = ctx
        self.opts = options
        self.body = ctx.body
        self.hyper = ctx.hyper
        self.head: nn.Module | None = None
        self.body_opt = ctx.hyper.optimizer_for(self.body.parameters())
        self.scaling = LossScaling(ctx.hyper.loss_scaling)
        self.stats: dict[str, torch.Tensor] = {}  # detached scalars; read lazily (no sync per step)

    # --- the rule -------------------------------------------------------------------------
    def forward(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def backward(self, step: int, feedback: torch.Tensor | None) -> torch.Tensor | None:
        raise NotImplementedError

    def take_input(self, x: torch.Tensor) -> None:
        """The network's input batch of the coming forward (or local_grads), for rules that declare
        needs_input; executors call it only for those."""
        raise NotImplementedError(f"{self.name} declares needs_input but takes no input")

    # --- what executors and the loop use ------------------------------------------------------
    @property
    def waits_for_feedback(self) -> bool:
        return self.feedback is not Feedback.NONE and not self.ctx.is_last

    @property
    def feedback_delay(self) -> int:
        """In process: how many later steps' forwards run before this group gets the feedback of a step (the
        in-process chain's deterministic stand-in for an overlapped pipeline); 0: lockstep."""
        return 0

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"body": self.body_opt}

    def extras(self) -> dict:
        """This group's own facts for the run record (e.g. the staleness it saw); {}: none."""
        return {}

    def modules(self) -> dict[str, nn.Module]:
        """Everything with weights or buffers that this rule owns (checkpoints, memory, sync)."""
        mods = {"body": self.body}
        if self.head is not None:
            mods["head"] = self.head
        return mods

    def set_step(self, step: int) -> None:
        """Apply the main network's lr schedule (auxiliary nets keep their fixed Adam lr)."""
        for group in self.body_opt.param_groups:
            group["lr"] = self.hyper.lr_at(step)

    def local_grads(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor] | None:
        """Gradient of the body's parameters that this method would apply for (x, y); None = the true one."""
        return None

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    # --- helpers shared by rules ----------------------------------------------------------------
    def _attach_head(self, head: nn.Module | None = None) -> None:
        """A head after this group (none after the last) that learns with the group's own optimiser, as one
        sub-model (joint's exits, greedy's auxiliary classifiers); by default the context's critic shape."""
        if not self.ctx.is_last:
            self.head = head if head is not None else self.ctx.head_factory(self.ctx.out_shape)
            self.body_opt.add_param_group({"params": list(self.head.parameters())})

    def _authors_l2(self) -> None:
        """Use the authors' L2 on this group (lct and dni, option l2=authors): no decay in the optimiser, the
        decay term added by `_add_authors_l2` instead."""
        for group in self.body_opt.param_groups:
            group["weight_decay"] = 0.0

    def _add_authors_l2(self, signal: torch.Tensor) -> None:
        """The authors compute a group's update as tf.gradients(h + wd * sum(L2), vars, grad_ys=g): the decay
        term's gradient becomes wd * sum(g) * theta (g summed over every element) in place of wd * theta."""
        scale = self.hyper.weight_decay * signal.detach().sum()
        for p in self.body.parameters():
            if p.grad is not None:
                p.grad.add_(p.detach() * scale)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """Input of this group: a leaf that collects the gradient to send back (not for the first)."""
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
        self._backward_from(self.loss)
        self._step()

    def _backward_from(self, out: torch.Tensor, grad: torch.Tensor | None = None) -> None:
        """Backprop into the body from `out`: a loss (grad None), or an output given its gradient; scaled for
        the body's optimiser (fp16), the gradient in out's dtype (autocast's outputs are bf16/fp16)."""
        if grad is None:
            self._scaled(out).backward()
        else:
            out.backward(self._scaled(grad).to(out.dtype))

    def _scaled(self, t: torch.Tensor, opt: torch.optim.Optimizer | None = None) -> torch.Tensor:
        """A loss (or a gradient to backpropagate) scaled for opt (default: the body's), fp16 only (methods/amp.py)."""
        return self.scaling.scale(t, opt or self.body_opt)

    def _step(self, opt: torch.optim.Optimizer | None = None) -> None:
        self.scaling.step(opt or self.body_opt)

    def _input_grad(self) -> torch.Tensor | None:
        """The gradient left on this group's input, unscaled: what goes back to the previous group."""
        return None if self.ctx.is_first else self.scaling.unscaled(self.x.grad, self.body_opt)


class WholeStepRule(Method):
    """A rule over all groups at once. `parts[k]` holds group k's modules (its body first), which
    checkpoints, device moves and the record's split read; subclasses add their own optimisers."""

    def __init__(self, groups: list[GroupContext], options: dict):
        self.groups = groups
        self.opts = options
        self.hyper = groups[0].hyper
        self.parts: list[dict[str, nn.Module]] = [{"body": g.body} for g in groups]
        self.optims: list[dict[str, torch.optim.Optimizer]] = [{} for _ in groups]
        self.scaling = LossScaling(self.hyper.loss_scaling)  # one scaler per optimiser (methods/amp.py)
        self.stats: dict[str, torch.Tensor] = {}

    @property
    def scalings(self) -> list[tuple[LossScaling, dict[str, torch.optim.Optimizer]]]:
        """The rule's LossScaling and every optimiser it may scale for, by name (checkpoints)."""
        return [(self.scaling, {f"{i}.{k}": o for i, opts in enumerate(self.optims) for k, o in opts.items()})]

    @property
    def bodies(self) -> list[nn.Module]:
        return [p["body"] for p in self.parts]

    def network(self) -> list[tuple[nn.Module, nn.Module | None]]:
        """(body, head) per group, for evaluation: the bodies, and no sub-model heads unless a rule has them."""
        return [(b, None) for b in self.bodies]

    def train(self, mode: bool = True) -> None:
        for part in self.parts:
            for m in part.values():
                m.train(mode)

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One training step over every group; returns the step's main loss (a device scalar)."""
        raise NotImplementedError

    def local_grads(self, k: int, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor] | None:
        """Gradient group k's parameters would follow for the batch (x, y), x the network's input: a whole-step
        rule sees the whole network (None: the true one, or not measured)."""
        return None

    def extras(self) -> dict:
        """The method's own facts for the run record (e.g. bytes per round)."""
        return {}

    def set_lr(self, step: int) -> None:
        for opts in self.optims:
            for opt in opts.values():
                for group in opt.param_groups:
                    group["lr"] = self.hyper.lr_at(step)
