"""AuxNet: layer-parallel training with auxiliary-variable networks and serial correction passes (Sun et
al., "Layer-Parallel Training of Residual Networks with Auxiliary-Variable Networks", arXiv:2112.05387,
seeds/auxnet-layer-parallel-abstract.txt; the serial-parallel hybrid of the penalty / augmented-Lagrangian
abstract in seeds/related-abstracts.txt).

The K layer groups are modules f_1..f_K. The input of group k > 1 is an auxiliary variable z_{k-1}, which
is not stored per sample but produced from the (augmented) batch by a small auxiliary network,
z_{k-1} = a_{k-1}(x) (forward unlocking: group k needs nothing from group k-1 to start; z_0 = x).
Per sample, with constraints c_k = z_k - f_k(z_{k-1}) and multipliers lambda_k (AL; 0 for the penalty
method):

    F = CE(f_K(z_{K-1}), y) + sum_{k<K} [ rho/2 ||c_k||^2 + <lambda_k, c_k> ]

A parallel step (every step but each `correct_every`-th), all groups at once, each on its own worker:
 1. group k computes z_{k-1} = a_{k-1}(x) and h_k = f_k(z_{k-1}); it sends z_{k-1} back to group k-1 and
    h_k on to group k+1 (one boundary activation each way, the messages of one backprop step);
 2. group k takes one step of its own optimiser (SGD, the run's lr) on its local loss, given what came in:
    F's term of its output boundary divided by the boundary's size D_k, mean over the batch,
        ( rho/2 ||z_k - h_k||^2 + <lambda_k, z_k - h_k> ) / D_k      (z_k from group k+1's AuxNet),
    the last group on CE(f_K(z_{K-1}), y) (`objective=penalty`: lambda = 0; `al`: the augmented Lagrangian);
 3. the auxiliary variable takes a gradient step on F, z_{k-1}^+ = z_{k-1} - z_lr dF/dz_{k-1}, with
    dF/dz_{k-1} = d(group k's term of F)/dz_{k-1} + rho c_{k-1} + lambda_{k-1} (all on group k's worker,
    from h_{k-1} received), and the AuxNet a_{k-1} "reproduces the updated auxiliary variable": one Adam
    step (lr `auxnet_lr`) on 1/2 ||a_{k-1}(x) - z_{k-1}^+||^2;
 4. AL: lambda_k <- lambda_k + dual_lr mean_b c_k, on both sides of the boundary (each holds a copy and
    updates it from the same two tensors, so they stay equal without another message).
A serial step (every `correct_every`-th, correct_every = 1: every step) corrects the parameters with a full
forward-backward pass: backprop of CE through f_K o ... o f_1 on the true activations, one SGD step per
group (exactly `bp`'s update), while each AuxNet takes an Adam step towards the true activation it stands for.
Evaluation runs the serial network f_K o ... o f_1; the recorded loss of a parallel step is the last group's
CE on its AuxNet's input. The record keeps ||c_k|| per boundary (`constraint_residual`; in a serial step
||a_k(x) - f_k(true input)||).

How it differs from `auxvar` (methods/auxvar.py, the plain quadratic-penalty baseline kept beside it):
auxvar starts its auxiliary variables from a serial forward pass of the batch (so the forward stays
locked), moves them by K-1 Jacobi gradient steps on F over z, and never corrects; it has no multipliers.
AuxNet produces them from the data with AuxNets (no serial forward in parallel steps, and data
augmentation works because nothing is stored per sample), has the AL option, and corrects with a serial
backprop pass every `correct_every` steps.

Choices the papers leave open here (only their abstracts are among the seeds):
- the AuxNet: two 3x3 convolutions around an average pool to the boundary's size (hidden channels: half
  the boundary's), or, for flat boundaries (the MLP), two dense layers; trained by Adam at 3e-3 (our
  choice; the groups keep the run's SGD). Such a net stays far from a deep group's output (on the smoke
  ResNet the residual ||z_k - h_k|| was still ~55% of ||h_k|| after 100 serial steps): parallel steps pull the
  groups towards what the AuxNets can produce, and the serial passes pull them back;
- the division by D_k in step 2 (ours): with F's sum over the boundary's elements, the first steps, while
  the AuxNet is still far from h_k, were large enough to kill group 1's ReLUs on the smoke ResNet
  (a one-off check during development); the division keeps the direction of dF/dtheta_k;
- the multipliers: per sample multipliers would have to be stored per training sample, which is what
  AuxNets avoid, so lambda_k is one tensor of the boundary's shape shared by all samples: the multiplier
  of the constraint in expectation over the data; its ascent step is `dual_lr`, not rho (the method of
  multipliers' step assumes each primal sub-problem solved, here it gets one SGD step; with rho the
  multipliers ran away: 38% test accuracy where the penalty reached 79%, smoke profile, K = 2, one seed);
- z_lr = 1/rho by default, so the AuxNet's target is z^+ = h_{k-1} - (dF_k/dz_{k-1} + lambda_{k-1}) / rho:
  the previous group's output moved by a gradient step of the next loss, a target-propagation step;
- the schedule: the hybrid abstract trains in parallel "and then" corrects serially; we interleave one
  serial pass every `correct_every` steps;
- BatchNorm running statistics follow the serial passes only (parallel steps restore them), since
  evaluation runs the serial network.
Assumption 1 is measured for the gradient a parallel step applies (group k's local loss given its
AuxNet's input and the next group's AuxNet's output); serial steps apply the true gradient.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import IMAGE_MODELS

from .curve import BoundaryCurve
from .exchange import ExchangeMethod, Share
from .registry import register_method
from .base import Look, Option


def auxiliary_network(data_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
    """A low-capacity network from the data to one boundary's activation."""
    if len(out_shape) == 3 and len(data_shape) == 3:
        c, (c_out, h, w) = data_shape[0], out_shape
        hidden = max(8, c_out // 2)
        return nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
                             nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((h, w)),
                             nn.Conv2d(hidden, c_out, 3, padding=1))
    d_out = math.prod(out_shape)
    hidden = max(16, d_out // 2)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, d_out), nn.Unflatten(1, tuple(out_shape)))


class Multipliers(nn.Module):
    """lambda of this group's input boundary (`into`) and output boundary (`out`), where it has them."""

    def __init__(self, in_shape, out_shape):
        super().__init__()
        if in_shape is not None:
            self.register_buffer("into", torch.zeros(in_shape))
        if out_shape is not None:
            self.register_buffer("out", torch.zeros(out_shape))


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


class AuxShare(Share):
    """Group k: its body f_k, the AuxNet a_{k-1} of its input (k > 0), its copies of the multipliers."""

    def __init__(self, ctx, part, optims, opts):
        super().__init__(ctx)
        self.body, self.aux, self.lam = part["body"], part.get("auxnet"), part["multipliers"]
        self.opt, self.aux_opt = optims["body"], optims.get("auxnet")
        self.rho, self.al, self.dual_lr = opts["rho"], opts["objective"] == "al", opts["dual_lr"]
        self.z_lr = 1.0 / self.rho if opts["z_lr"] is None else opts["z_lr"]
        self.size_out = 1 if self.is_last else self.lam.out.numel()  # D_{k+1}: the local step's normaliser
        self.residual = BoundaryCurve(opts["residual_every"])

    # --- parallel steps ----------------------------------------------------------------------------
    def outgoing(self, step, x, y):
        self.saved = [b.clone() for b in self.body.buffers()]  # asked each time: a device move swaps buffers
        self.z = x if self.is_first else self.aux(x)
        self.z_in = self.z.detach().requires_grad_(not self.is_first)
        self.h = self.body(self.z_in)
        return (None if self.is_first else self.z.detach()), (None if self.is_last else self.h.detach())

    def local_loss(self, y: torch.Tensor, z_next: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This group's loss given its output h_k and the next auxiliary variable z_{k+1} (None at the last),
        and c_{k+1} = z_{k+1} - h_k."""
        if self.is_last:
            return F.cross_entropy(self.h, y), None
        gap = z_next - self.h
        term = self.rho / 2 * _per_sample(gap.pow(2)) + _per_sample(self.lam.out * gap)
        return term.mean() / self.size_out, gap

    def restore(self) -> None:
        """BatchNorm running statistics as before the parallel step's forward."""
        with torch.no_grad():
            for b, v in zip(self.body.buffers(), self.saved):
                b.copy_(v)

    def update(self, step, x, y, from_prev, from_next):
        local, gap = self.local_loss(y, from_next)
        if self.is_last:
            self.loss = local.detach()
        self.opt.zero_grad(set_to_none=True)
        local.backward()
        self.opt.step()
        self.restore()
        if self.al and not self.is_last:
            self.lam.out += self.dual_lr * gap.detach().mean(0)
        if not self.is_first:
            gap = self.z.detach() - from_prev
            with torch.no_grad():
                dF = self.z_in.grad * (len(gap) * self.size_out) + self.rho * gap + self.lam.into
            self._fit(self.z, self.z.detach() - self.z_lr * dF, step, gap)
            if self.al:
                self.lam.into += self.dual_lr * gap.mean(0)

    def _fit(self, z: torch.Tensor, target: torch.Tensor, step: int, gap: torch.Tensor) -> None:
        """One Adam step of the AuxNet towards `target`; the boundary's residual joins the curve."""
        fit = 0.5 * _per_sample((z - target).pow(2)).mean()
        self.aux_opt.zero_grad(set_to_none=True)
        fit.backward()
        self.aux_opt.step()
        self.residual.add(step, [gap.flatten(1).norm(dim=1).mean()])

    # --- serial steps (backprop; the AuxNets follow the true activations) ---------------------------
    def forward(self, step, x, h, y):
        self.z_in = h if self.is_first else h.detach().requires_grad_(True)
        self.h = self.body(self.z_in)
        if not self.is_first:
            z = self.aux(x)
            self._fit(z, h.detach(), step, z.detach() - h.detach())
        if self.is_last:
            self.loss_graph = F.cross_entropy(self.h, y)
            self.loss = self.loss_graph.detach()
            return None
        return self.h.detach()

    def backward(self, step, grad):
        self.opt.zero_grad(set_to_none=True)
        (self.loss_graph if self.is_last else self.h).backward(grad)
        self.opt.step()
        return None if self.is_first else self.z_in.grad

    def extras(self):
        return {} if self.is_first else {"residual": self.residual.record()}


@register_method("auxnet")
class AuxNet(ExchangeMethod):
    description = "AuxNet: groups train in parallel on AuxNet inputs (penalty / AL), serial backprop every few steps"
    local_gradients = True
    supported_models = IMAGE_MODELS  # several forwards per step: not for the stateful LSTMs
    min_groups = 2
    options = {
        "objective": Option("penalty", "local losses of the parallel steps: quadratic penalty or augmented "
                            "Lagrangian", choices=("penalty", "al")),
        "correct_every": Option(4, "every this many steps a serial forward-backward pass (1: backprop)", minimum=1),
        "rho": Option(1.0, "penalty weight of ||z_k - f_k(z_{k-1})||^2 in F", minimum=1e-12),
        "z_lr": Option(None, "step size of the auxiliary-variable step (default 1/rho)", kind=float, minimum=0),
        "dual_lr": Option(0.01, "al: ascent step of the multipliers, lambda += dual_lr * mean residual", minimum=0),
        "auxnet_lr": Option(3e-3, "Adam learning rate of the AuxNets", minimum=0),
        "residual_every": Option(10, "steps per point of the recorded constraint-residual curve", minimum=1),
    }
    look = Look("AuxNet", "#33a02c", 85, suffix="K")

    def __init__(self, groups, options):
        super().__init__(groups, options)
        data = groups[0].in_shape
        for g, part, opts in zip(groups, self.parts, self.optims):
            opts["body"] = g.hyper.optimizer_for(g.body.parameters())
            if not g.is_first:
                part["auxnet"] = auxiliary_network(data, g.in_shape)
                opts["auxnet"] = torch.optim.Adam(part["auxnet"].parameters(), lr=options["auxnet_lr"])
            part["multipliers"] = Multipliers(None if g.is_first else g.in_shape, g.out_shape)
        self.shares = [AuxShare(g, part, opts, options) for g, part, opts in zip(groups, self.parts, self.optims)]

    @staticmethod
    def is_serial(options, step):
        return (step + 1) % options["correct_every"] == 0

    def set_lr(self, step):
        for opts in self.optims:  # the AuxNets keep their fixed Adam lr
            for group in opts["body"].param_groups:
                group["lr"] = self.hyper.lr_at(step)

    def local_grads(self, k, x, y):
        """Group k's parallel-step gradient on this batch (nothing moves: the BN statistics are restored)."""
        share = self.shares[k]
        share.outgoing(-1, x, y)
        with torch.no_grad():
            z_next = None if share.is_last else self.shares[k + 1].aux(x)
        local, _ = share.local_loss(y, z_next)
        grads = list(torch.autograd.grad(local, list(share.body.parameters())))
        share.restore()
        return grads

    def merge(self, facts):
        curves = [f["residual"] for f in facts if f]
        if not curves:
            return {}
        n = min(len(c["step"]) for c in curves)
        return {"constraint_residual": {"every": curves[0]["every"], "step": curves[0]["step"][:n],
                                        "per_boundary": [[c["per_boundary"][j][0] for c in curves] for j in range(n)]}}
