"""ADMM training without gradients for the dense 300-150-10 MLP (Taylor et al., ICML 2016, "Training Neural
Networks Without Gradients: A Scalable ADMM Approach"): the paper's Table III baseline.

Layers l = 1..L (L = 3 here), h = ReLU, a_0 = x. Auxiliary variables per sample: the pre-activations
z_l and activations a_l, and a Lagrange multiplier lambda on the output layer only. The problem is

    min  loss(z_L, y) + <z_L, lambda> + beta ||z_L - W_L a_{L-1}||^2
         + sum_{l<L} gamma ||a_l - h(z_l)||^2 + beta ||z_l - W_l a_{l-1}||^2      (W x means W x + b)

and one ADMM iteration (Taylor's Algorithm 1) is, every step an exact minimiser of its sub-problem:
  for l = 1..L-1:  W_l <- least squares of z_l on a_{l-1}
                   a_l <- (beta W_{l+1}^T W_{l+1} + gamma I)^{-1} (beta W_{l+1}^T (z_{l+1} - b) + gamma h(z_l))
                   z_l <- argmin gamma (a_l - h(z))^2 + beta (z - W_l a_{l-1})^2     (elementwise, two cases)
  W_L <- least squares of z_L on a_{L-1}
  z_L <- argmin loss(z, y) + <lambda, z> + beta ||z - W_L a_{L-1}||^2   (convex: gradient steps of 1/Lipschitz)
  lambda <- lambda + beta (z_L - W_L a_{L-1})
No gradient of the network is ever computed. Taylor et al. run it full-batch on a cluster; here it is
the stochastic variant the step interface gives: each batch warm-starts (a, z) from a forward pass and
lambda from 0 and runs `inner` iterations; the weight step minimises beta * sum of ||z - W a||^2 over
all batches so far (sufficient statistics, decayed by `decay` per batch) plus prox ||W - W_old||^2,
i.e. recursive least squares, so a batch of 64 cannot overwrite what earlier batches taught.

The layer groups only say which group owns which layer; the updates are layer-wise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_method
from .base import Backend, Look, Option, WholeStepRule


class LeastSquaresStats(nn.Module):
    """Decayed sums P = sum z a~^T and Q = sum a~ a~^T (a~ = [a; 1]) of one layer: its weight step's data."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        d_out, d_in = layer.weight.shape
        self.register_buffer("P", torch.zeros(d_out, d_in + 1))
        self.register_buffer("Q", torch.zeros(d_in + 1, d_in + 1))


def _ones(a: torch.Tensor) -> torch.Tensor:
    return torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], dim=1)


def _affine(layer: nn.Linear, a: torch.Tensor) -> torch.Tensor:
    return a @ layer.weight.T + layer.bias


def _spd_solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A^{-1} B for a symmetric positive definite A (Cholesky)."""
    return torch.cholesky_solve(B, torch.linalg.cholesky(A))


# --- the sub-problems: each returns the exact (or, for z_L, descending) minimiser ------------------------------
def weight_objective(layer, stats, z, a, beta, decay, prox, W_old):
    """beta * (decayed past + this batch) sum ||z - W a - b||^2 + prox ||[W b] - W_old||^2 (up to a constant)."""
    Wb = torch.cat([layer.weight, layer.bias[:, None]], dim=1)
    P, Q = decay * stats.P + z.T @ _ones(a), decay * stats.Q + _ones(a).T @ _ones(a)
    return (beta * (torch.trace(Wb @ Q @ Wb.T) - 2 * torch.trace(Wb @ P.T)) + prox * (Wb - W_old).pow(2).sum()).item()


@torch.no_grad()
def weight_step(layer: nn.Linear, stats: LeastSquaresStats, z, a, beta: float, decay: float, prox: float) -> None:
    """[W b] <- argmin beta tr(W Q W^T - 2 W P^T) + prox ||[W b] - [W b]_old||^2, Q and P with this batch in."""
    a1 = _ones(a)
    P, Q = decay * stats.P + z.T @ a1, decay * stats.Q + a1.T @ a1
    W_old = torch.cat([layer.weight, layer.bias[:, None]], dim=1)
    eye = torch.eye(Q.shape[0], dtype=Q.dtype, device=Q.device)
    # (beta Q + prox I) Wb^T = beta P^T + prox W_old^T   (Q symmetric)
    Wb = _spd_solve(beta * Q + prox * eye, beta * P.T + prox * W_old.T).T
    layer.weight.copy_(Wb[:, :-1])
    layer.bias.copy_(Wb[:, -1])


def activation_objective(a, z_l, z_next, nxt: nn.Linear, beta, gamma):
    return (gamma * (a - F.relu(z_l)).pow(2).sum() + beta * (z_next - _affine(nxt, a)).pow(2).sum()).item()


@torch.no_grad()
def activation_step(z_l, z_next, nxt: nn.Linear, beta: float, gamma: float) -> torch.Tensor:
    """a_l <- argmin gamma ||a - h(z_l)||^2 + beta ||z_{l+1} - W_{l+1} a - b||^2 (a linear system)."""
    W = nxt.weight
    A = beta * W.T @ W + gamma * torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
    rhs = beta * (z_next - nxt.bias) @ W + gamma * F.relu(z_l)
    return _spd_solve(A, rhs.T).T


def preactivation_objective(z, a_l, m, beta, gamma):
    return (gamma * (a_l - F.relu(z)).pow(2).sum() + beta * (z - m).pow(2).sum()).item()


@torch.no_grad()
def preactivation_step(a_l, m, beta: float, gamma: float) -> torch.Tensor:
    """z_l <- argmin gamma (a_l - relu(z))^2 + beta (z - m)^2 elementwise, m = W_l a_{l-1} + b: the better
    of the two one-sided minimisers (z >= 0 and z <= 0)."""
    z_pos = ((gamma * a_l + beta * m) / (gamma + beta)).clamp(min=0)
    z_neg = m.clamp(max=0)
    cost_pos = gamma * (a_l - z_pos) ** 2 + beta * (z_pos - m) ** 2
    cost_neg = gamma * a_l ** 2 + beta * (z_neg - m) ** 2
    return torch.where(cost_pos <= cost_neg, z_pos, z_neg)


def output_objective(z, y, lam, m, beta):
    return (F.cross_entropy(z, y, reduction="sum") + (lam * z).sum() + beta * (z - m).pow(2).sum()).item()


@torch.no_grad()
def output_step(z, y, lam, m, beta: float, steps: int) -> torch.Tensor:
    """z_L <- argmin CE(z, y) + <lambda, z> + beta ||z - m||^2 per sample: gradient descent with step
    1 / (1/2 + 2 beta), the inverse Lipschitz constant (softmax's Hessian is bounded by 1/2): monotone."""
    onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
    lr = 1.0 / (0.5 + 2 * beta)
    for _ in range(steps):
        z = z - lr * (z.softmax(1) - onehot + lam + 2 * beta * (z - m))
    return z


@register_method("admm")
class Admm(WholeStepRule):
    description = "ADMM without gradients (Taylor et al. 2016): least-squares / closed-form layer sub-steps"
    supported_models = ("mlp",)
    backend = Backend.NONE
    autocast = False  # closed-form least squares by Cholesky: in bf16 its normal equations are not positive definite
    options = {
        "beta": Option(1.0, "weight of the ||z - W a||^2 constraint terms", minimum=0),
        "gamma": Option(10.0, "weight of the ||a - h(z)||^2 activation terms", minimum=0),
        "inner": Option(4, "ADMM iterations per batch", minimum=1),
        "decay": Option(0.99, "decay per batch of the least-squares history", minimum=0),
        "prox": Option(1.0, "proximal weight ||W - W_old||^2 of the weight step", minimum=0),
        "zl_steps": Option(25, "gradient steps of the output sub-problem", minimum=1),
    }
    look = Look("ADMM", "#b15928", 10)

    def __init__(self, groups, options):
        super().__init__(groups, options)
        for part in self.parts:  # the layer-wise least-squares history, checkpointed with its group
            layers = [m for m in part["body"].modules() if isinstance(m, nn.Linear)]
            part["admm"] = nn.ModuleList(LeastSquaresStats(m) for m in layers)
        self.layers = [m for b in self.bodies for m in b.modules() if isinstance(m, nn.Linear)]
        self.solver = [st for part in self.parts for st in part["admm"]]

    def step(self, step, x, y):
        o, layers, stats = self.opts, self.layers, self.solver
        beta, gamma = o["beta"], o["gamma"]
        L = len(layers)
        with torch.no_grad():
            a = [x.flatten(1)]  # a[l] is the input of layer l (a[0] = x)
            z = []
            for l, layer in enumerate(layers):
                z.append(_affine(layer, a[l]))
                if l < L - 1:
                    a.append(F.relu(z[l]))
            loss = F.cross_entropy(z[-1], y)  # the network's loss before this step
            lam = torch.zeros_like(z[-1])
            for _ in range(o["inner"]):
                for l in range(L - 1):
                    weight_step(layers[l], stats[l], z[l], a[l], beta, o["decay"], o["prox"])
                    a[l + 1] = activation_step(z[l], z[l + 1], layers[l + 1], beta, gamma)
                    z[l] = preactivation_step(a[l + 1], _affine(layers[l], a[l]), beta, gamma)
                weight_step(layers[-1], stats[-1], z[-1], a[-1], beta, o["decay"], o["prox"])
                m = _affine(layers[-1], a[-1])
                z[-1] = output_step(z[-1], y, lam, m, beta, o["zl_steps"])
                lam = lam + beta * (z[-1] - m)
            for l in range(L):  # the batch joins the least-squares history
                a1 = _ones(a[l])
                stats[l].P.mul_(o["decay"]).add_(z[l].T @ a1)
                stats[l].Q.mul_(o["decay"]).add_(a1.T @ a1)
            self.stats["residual"] = (z[-1] - _affine(layers[-1], a[-1])).pow(2).mean()
        return loss
