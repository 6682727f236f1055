"""Stochastic Block-ADMM (Khorram, Fu, Danesh, Qi & Li Fuxin, 2021, "Stochastic Block-ADMM for Training Deep
Networks", seeds/related-abstracts.txt): the network is cut into blocks connected by auxiliary variables,
optimised with SGD, backprop only inside a block.

The K layer groups are the blocks f_1..f_K. Auxiliary variables z_k stand for the boundary activations
(z_0 = x), with the constraints z_k = f_k(z_{k-1}; theta_k), k < K, and scaled dual variables u_k (the
multipliers lambda_k = rho u_k). Per sample the augmented Lagrangian is

    A(theta, z, u) = CE(f_K(z_{K-1}), y) + sum_{k<K} rho/2 ||z_k - f_k(z_{k-1}) + u_k||^2   (- rho/2 ||u_k||^2)

and per batch, `inner` ADMM iterations of three blocks of variables, each an SGD-type step:
 1. blocks, all at once and independently: `w_steps` steps of each block's own optimiser (SGD, the run's
    lr schedule) on its own term, block k < K on rho/2 mean_b ||z_k + u_k - f_k(z_{k-1})||^2 (fit z_k + u_k),
    block K on mean_b CE(f_K(z_{K-1}), y); nothing crosses a boundary but z;
 2. auxiliary variables: `z_steps` backward sweeps (Gauss-Seidel), z_{K-1} first, down to z_1: each z_k
    takes one gradient step (size `z_lr`) on the terms of A it is in, rho (z_k - f_k(z_{k-1}) + u_k) plus the
    next block's term's gradient, given z_{k+1} as already moved, so one sweep carries the loss's signal
    to every boundary;
 3. duals: u_k <- u_k + (z_k - f_k(z_{k-1})), the residual with the new weights and variables.
The constraint residual ||z_k - f_k(z_{k-1})|| (per sample, mean over the batch) after the batch's last
iteration is recorded per boundary (`constraint_residual`, averaged over windows of `residual_every` steps).

Choices the paper leaves open here (its text is not among the seeds, only the abstract):
- the abstract names a batch and an online setting; this is an online one: nothing is kept per training
  sample, so each batch starts its auxiliary variables from a forward pass and its duals at 0 (the step
  interface has no sample identities to keep per-sample variables by). In the first iteration the blocks
  k < K therefore fit a zero residual: their step is only weight decay and momentum; they learn from
  iteration 2 on, once z has moved and u holds the residual, which is why `inner` defaults to 2 (with one
  iteration they never learn; `auxvar`, the penalty method, moves z before its module steps).
- z_lr = 1/rho (a z step of size 1/rho is a target step: z_{K-1} moves to f_{K-1}(z_{K-2}) - dCE/dz /rho,
  and in the first sweep z_k to f_k(z_{k-1}) - J^T(next residual), backprop's signal); with u, the second
  iteration's target is about two such steps away, so blocks k < K take about twice backprop's step (with K
  = 2 exactly twice, at fixed weights: tests/test_seed_methods.py).
- the sweep order: `auxvar`'s Jacobi steps (every z_k at once, K - 1 steps) diverged here for K >= 3 at
  z_lr = 1/rho (A's curvature in z_k is rho (1 + ||J_{k+1}||^2), and the groups' Jacobians are large); a
  backward sweep moves each z_k once per sweep, so the curvature cannot build up over steps.
- BatchNorm running statistics see each batch once (the forward that starts z); the other forwards leave
  them as they were, as in `auxvar`.
Assumption 1 is measured: the gradient block k follows is the sum over the batch's iterations of its own
term's gradient; measured with the weights held fixed (the iterations themselves move them in between).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.models import IMAGE_MODELS

from .auxvar import _buffers, init_aux, module_loss, module_step
from .curve import BoundaryCurve
from .registry import register_method
from .base import Backend, Look, Option, WholeStepRule


def sweep(bodies, z: list[torch.Tensor], u: list[torch.Tensor], y: torch.Tensor, rho: float, lr: float) -> list[torch.Tensor]:
    """One backward Gauss-Seidel sweep over z_{K-1}, ..., z_1: each takes one gradient step on A given the
    variables after it, already moved (z[k] is the input of block k; z[0] = x stays)."""
    z = list(z)
    for k in range(len(bodies) - 1, 0, -1):
        zk = z[k].detach().requires_grad_(True)
        out = bodies[k](zk)
        if k == len(bodies) - 1:
            after = F.cross_entropy(out, y, reduction="sum")
        else:
            after = rho / 2 * (z[k + 1] - out + u[k]).pow(2).sum()
        (grad,) = torch.autograd.grad(after, zk)
        with torch.no_grad():
            z[k] = zk - lr * (grad + rho * (zk - bodies[k - 1](z[k - 1]) + u[k - 1]))
    return z


@register_method("blockadmm")
class BlockAdmm(WholeStepRule):
    description = "Stochastic Block-ADMM: blocks fit auxiliary variables (+ duals) by SGD; z and duals follow"
    backend = Backend.NONE
    local_gradients = True
    supported_models = IMAGE_MODELS  # several forwards per step: not for the stateful LSTMs
    min_groups = 2
    options = {
        "rho": Option(1.0, "penalty weight of the augmented Lagrangian", minimum=1e-12),
        "inner": Option(2, "ADMM iterations per batch (blocks, then z, then duals)", minimum=1),
        "w_steps": Option(1, "SGD steps of every block on its own term per iteration", minimum=1),
        "z_steps": Option(1, "backward sweeps over the auxiliary variables per iteration", minimum=1),
        "z_lr": Option(None, "step size of the auxiliary-variable steps (default 1/rho)", kind=float, minimum=0),
        "residual_every": Option(10, "steps per point of the recorded constraint-residual curve", minimum=1),
    }
    look = Look("block-ADMM", "#ff7f00", 12, suffix="K")

    def __init__(self, groups, options):
        super().__init__(groups, options)
        for g, opts in zip(groups, self.optims):
            opts["body"] = g.hyper.optimizer_for(g.body.parameters())
        self.z_steps = options["z_steps"]
        self.z_lr = 1.0 / options["rho"] if options["z_lr"] is None else options["z_lr"]
        self.residual = BoundaryCurve(options["residual_every"])

    def step(self, step, x, y):
        self.set_lr(step)
        loss, _, residual = self.iterate(x, y, apply=True)
        self.residual.add(step, residual)
        return loss

    def iterate(self, x, y, apply: bool):
        """One batch's ADMM iterations: (loss before them, per block the sum of its term's gradients, residual
        per boundary). `apply`: every block steps its optimiser; else the weights stay (Assumption 1)."""
        bodies, o, rho = self.bodies, self.opts, self.opts["rho"]
        last = len(bodies) - 1
        z = init_aux(bodies, x)
        with torch.no_grad():  # the network's own loss on this batch (and its BN statistics' one update)
            loss = F.cross_entropy(bodies[-1](z[-1]), y)
        saved = [b.clone() for b in _buffers(bodies)]
        u = [torch.zeros_like(t) for t in z[1:]]
        grads: list[list[torch.Tensor] | None] = [None] * len(bodies)
        for _ in range(o["inner"]):
            targets = [zk + uk for zk, uk in zip(z[1:], u)] + [y]
            for k, body in enumerate(bodies):
                for _ in range(o["w_steps"]):
                    if apply:
                        module_step(body, self.optims[k]["body"], k == last, z[k], targets[k], rho)
                    else:
                        g = torch.autograd.grad(module_loss(body, k == last, z[k], targets[k], rho),
                                                list(body.parameters()))
                        grads[k] = list(g) if grads[k] is None else [a + b for a, b in zip(grads[k], g)]
            for _ in range(self.z_steps):
                z = sweep(bodies, z, u, y, rho, self.z_lr)
            with torch.no_grad():
                gaps = [z[k + 1] - body(z[k]) for k, body in enumerate(bodies[:-1])]
                u = [uk + r for uk, r in zip(u, gaps)]
        with torch.no_grad():
            for b, v in zip(_buffers(bodies), saved):
                b.copy_(v)
        return loss, grads, [r.flatten(1).norm(dim=1).mean() for r in gaps]

    def local_grads(self, k, x, y):
        return self.iterate(x, y, apply=False)[1][k]

    def extras(self) -> dict:
        return {"constraint_residual": self.residual.record()}
