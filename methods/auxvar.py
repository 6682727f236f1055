"""Layer-parallel training with auxiliary variables: the quadratic-penalty method, the family of
"Layer-Parallel Training of Residual Networks with Auxiliary-Variable Networks" (arXiv:2112.05387,
seeds/auxnet-layer-parallel-abstract.txt) and of the penalty / augmented-Lagrangian ResNet training in
seeds/related-abstracts.txt (after Carreira-Perpinan & Wang's method of auxiliary coordinates, 2014).

The K layer groups are modules f_1..f_K. Auxiliary variables z_1..z_{K-1} stand in for the activations
at the boundaries (z_0 = x). For one batch the penalty objective is

    F(theta, z) = sum_b [ CE(f_K(z_{K-1}), y) + rho/2 sum_{k<K} ||z_k - f_k(z_{k-1})||^2 ]   (per sample b)

and one step (a round) alternates two blocks of variables:
 1. z_k = f_k(z_{k-1}): the auxiliary variables start from a forward pass. (The AuxNet paper produces
    them with small auxiliary networks instead, which also unlocks the forward pass; here the forward
    stays serial, the backward is what the auxiliary variables unlock.)
 2. auxiliary update: `z_iters` gradient steps on F over z (all z_k at once, step `z_lr`). The z_k block of
    the gradient involves f_k and f_{k+1} only, so each module computes its part at once, exchanging with
    its two neighbours (Jacobi); the loss's signal moves one module back per step, hence z_iters = K - 1.
 3. module update, all modules independently and in parallel: module k < K takes one step of its own
    optimiser (SGD, the run's lr) on rho/2 mean_b ||f_k(z_{k-1}) - z_k||^2, module K on
    mean_b CE(f_K(z_{K-1}), y). Given z, no module needs anything from any other: no backward locking.
The default rho * z_lr = 1 makes each z step a target step: with one z step, module K-1's update is
exactly backprop's (tests/test_more_methods.py), and with K = 2 the method learns close to backprop. It is
not a small descent step on F: the groups' Jacobians are large (F's curvature in z is in the hundreds
on the smoke ResNet, so descent needs z_lr ~ 0.002), and for K >= 3 a few Jacobi steps leave the z_k
inconsistent, so the middle modules can fit targets that point far from the true gradient (a one-off
check during development, not a recorded measurement: the suite does not measure Assumption 1 for auxvar)
and accuracy drops with K (the seed abstracts also report accuracy drops for
this family, and answer them with AuxNets and serial correction passes: `auxnet`, methods/auxnet.py).
How this plain penalty baseline differs from `auxnet`: here the auxiliary variables come from a serial forward
pass of the batch (the forward stays locked) and K-1 Jacobi steps on F; there they come from small
auxiliary networks of the data (forward unlocked, nothing per sample), the groups fit them in parallel
(penalty or augmented Lagrangian) and a serial backprop pass corrects every few steps. `blockadmm` adds
scaled duals to this objective (ADMM) and moves z by backward sweeps.
BatchNorm running statistics see each batch once (the forward of step 1); the extra forwards of steps
2 and 3 leave them as they were.

"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.models import IMAGE_MODELS

from .registry import register_method
from .base import Backend, Look, Option, WholeStepRule


def init_aux(bodies, x: torch.Tensor) -> list[torch.Tensor]:
    """[x, z_1, ..., z_{K-1}]: the boundary activations of a forward pass (no graph)."""
    z = [x]
    with torch.no_grad():
        for body in bodies[:-1]:
            z.append(body(z[-1]))
    return z


def penalty(bodies, z: list[torch.Tensor], y: torch.Tensor, rho: float) -> torch.Tensor:
    """F summed over the batch's samples."""
    total = F.cross_entropy(bodies[-1](z[-1]), y, reduction="sum")
    for k, body in enumerate(bodies[:-1]):
        total = total + rho / 2 * (z[k + 1] - body(z[k])).pow(2).sum()
    return total


def update_aux(bodies, z: list[torch.Tensor], y: torch.Tensor, rho: float, lr: float, iters: int) -> list[torch.Tensor]:
    """`iters` gradient steps on F over z_1..z_{K-1} (the weights stay as they are; z_0 = x is data)."""
    z = [z[0]] + [t.detach() for t in z[1:]]
    for _ in range(iters):
        leaves = [t.requires_grad_(True) for t in z[1:]]
        grads = torch.autograd.grad(penalty(bodies, z, y, rho), leaves)
        z = [z[0]] + [(t - lr * g).detach() for t, g in zip(leaves, grads)]
    return z


def module_loss(body, last: bool, z_in: torch.Tensor, target: torch.Tensor, rho: float) -> torch.Tensor:
    """Module k's own objective given the auxiliary variables: fit z_k, or the labels for the last."""
    out = body(z_in)
    if last:
        return F.cross_entropy(out, target)
    return rho / 2 * (out - target).pow(2).flatten(1).sum(1).mean()


def module_step(body, opt, last: bool, z_in: torch.Tensor, target: torch.Tensor, rho: float) -> torch.Tensor:
    """One step of a module's own optimiser on its own objective; nothing else is read or moved."""
    loss = module_loss(body, last, z_in.detach(), target.detach(), rho)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _buffers(bodies) -> list[torch.Tensor]:
    return [b for body in bodies for b in body.buffers()]


@register_method("auxvar")
class AuxVar(WholeStepRule):
    description = "penalty method: modules fit auxiliary activations in parallel; the activations follow F"
    backend = Backend.NONE
    supported_models = IMAGE_MODELS  # several forwards per step: not for the stateful LSTMs
    min_groups = 2
    options = {
        "rho": Option(1.0, "penalty weight of ||z_k - f_k(z_{k-1})||^2", minimum=0),
        "z_lr": Option(1.0, "step size of the auxiliary-variable update", minimum=0),
        "z_iters": Option(None, "gradient steps on z per batch (default K - 1)", kind=int, minimum=1),
    }
    look = Look("auxvar", "#fb9a99", 80)

    def __init__(self, groups, options):
        super().__init__(groups, options)
        self.z_iters = options["z_iters"] or max(1, len(groups) - 1)
        for g, opts in zip(groups, self.optims):
            opts["body"] = g.hyper.optimizer_for(g.body.parameters())

    def step(self, step, x, y):
        bodies, rho = self.bodies, self.opts["rho"]
        self.set_lr(step)
        z = init_aux(bodies, x)
        with torch.no_grad():  # the network's own loss on this batch (and its BN statistics' one update)
            loss = F.cross_entropy(bodies[-1](z[-1]), y)
        saved = [b.clone() for b in _buffers(bodies)]
        z = update_aux(bodies, z, y, rho, self.opts["z_lr"], self.z_iters)
        targets = z[1:] + [y]
        for k, (body, opts) in enumerate(zip(bodies, self.optims)):
            self.stats[f"fit{k}"] = module_step(body, opts["body"], k == len(bodies) - 1, z[k], targets[k], rho)
        with torch.no_grad():
            for b, v in zip(_buffers(bodies), saved):
                b.copy_(v)
        return loss
