"""The related-work methods do what their rules say: greedy never sends a gradient back, ADMM's sub-steps
minimise their sub-problems, ResIST's rounds cover every block and average exactly the holders,
auxvar's modules learn independently given the auxiliary variables."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from bench.config import RunConfig
from bench.errors import BenchError
from bench.exec.launch import run_distributed
from bench.exec.settings import DistConfig
from bench.models.resnet import partitionable_blocks
from bench.train.loop import run
from methods import admm as A
from methods import auxvar as X
from methods.base import Hyper
from methods.resist import default_min_blocks, partition
from methods.rounds import float_tensors, nbytes

from helpers import build_trainer, make_stages, params_of, train_step


pytestmark = pytest.mark.usefixtures("one_thread")


PLAIN = Hyper(lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.0)  # update = -lr * grad


# --- greedy ----------------------------------------------------------------------------------------------
def test_greedy_never_passes_gradient_across_a_boundary(digits_batch):
    x, y = digits_batch
    stages, _ = make_stages("greedy", 3)
    h = stages[0].body(x).detach().requires_grad_(True)  # an input that would collect a gradient
    out = stages[1].forward(0, h, y)
    assert h.grad is None and not out.requires_grad
    assert all(s.backward(0, None) is None for s in stages)
    # what happens after a group cannot change its update (with bp it would: tests/test_methods.py)
    a = copy.deepcopy(stages)
    b = copy.deepcopy(stages)
    with torch.no_grad():
        for p in b[2].body.parameters():
            p.add_(torch.randn_like(p))
    train_step(a, 1, x, y)
    train_step(b, 1, x, y)
    pa, pb = params_of(a), params_of(b)
    assert torch.equal(pa[0], pb[0]) and torch.equal(pa[1], pb[1]) and not torch.equal(pa[2], pb[2])


def test_greedy_group_follows_its_own_heads_gradient(digits_batch):
    x, y = digits_batch
    stages, _ = make_stages("greedy", 3, hyper=PLAIN)
    s = stages[1]
    h = stages[0].body(x).detach()
    expected = [p.detach() - PLAIN.lr * g for p, g in zip(s.body.parameters(), s.local_grads(h, y))]
    head = params_of(stages, "head")[1]
    s.forward(0, h, y)
    for p, e in zip(s.body.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)
    assert not torch.equal(params_of(stages, "head")[1], head)  # the head learns with its group


# --- admm --------------------------------------------------------------------------------------------------
def _admm_setup(digits_batch):
    x, y = digits_batch
    admm, _ = build_trainer("admm", 2, model="mlp", hyper=Hyper(lr=0.05))
    layers, stats = admm.layers, admm.solver
    admm.step(0, x, y)  # some least-squares history
    with torch.no_grad():
        a = [x.flatten(1)]
        z = []
        for l, layer in enumerate(layers):
            z.append(A._affine(layer, a[l]) + 0.3 * torch.randn(len(x), layer.out_features))
            if l < len(layers) - 1:
                a.append(F.relu(z[l]) + 0.1 * torch.rand_like(z[l]))
    return x, y, layers, stats, a, z


def test_admm_sub_steps_decrease_their_objectives(digits_batch):
    torch.manual_seed(1)
    x, y, layers, stats, a, z = _admm_setup(digits_batch)
    beta, gamma, decay, prox = 1.0, 10.0, 0.99, 1.0
    for l, layer in enumerate(layers):  # weights: exact least squares (+ history and prox)
        W_old = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().clone()
        before = A.weight_objective(layer, stats[l], z[l], a[l], beta, decay, prox, W_old)
        A.weight_step(layer, stats[l], z[l], a[l], beta, decay, prox)
        after = A.weight_objective(layer, stats[l], z[l], a[l], beta, decay, prox, W_old)
        assert after < before
        with torch.no_grad():  # a minimiser: moving away costs more
            layer.weight.add_(1e-2 * torch.randn_like(layer.weight))
        assert A.weight_objective(layer, stats[l], z[l], a[l], beta, decay, prox, W_old) > after
        A.weight_step(layer, stats[l], z[l], a[l], beta, decay, prox)
    for l in range(len(layers) - 1):  # activations: a linear system
        before = A.activation_objective(a[l + 1], z[l], z[l + 1], layers[l + 1], beta, gamma)
        new = A.activation_step(z[l], z[l + 1], layers[l + 1], beta, gamma)
        after = A.activation_objective(new, z[l], z[l + 1], layers[l + 1], beta, gamma)
        assert after < before
        assert A.activation_objective(new + 1e-2 * torch.randn_like(new), z[l], z[l + 1], layers[l + 1], beta, gamma) > after
        a[l + 1] = new
        m = A._affine(layers[l], a[l])  # pre-activations: elementwise, two cases
        before = A.preactivation_objective(z[l], a[l + 1], m, beta, gamma)
        new = A.preactivation_step(a[l + 1], m, beta, gamma)
        after = A.preactivation_objective(new, a[l + 1], m, beta, gamma)
        assert after < before
        for _ in range(5):
            assert A.preactivation_objective(new + 1e-2 * torch.randn_like(new), a[l + 1], m, beta, gamma) > after
    lam = 0.1 * torch.randn_like(z[-1])  # output: gradient descent on a convex objective
    m = A._affine(layers[-1], a[-1])
    values = [A.output_objective(z[-1], y, lam, m, beta)]
    zL = z[-1]
    for _ in range(5):
        zL = A.output_step(zL, y, lam, m, beta, steps=3)
        values.append(A.output_objective(zL, y, lam, m, beta))
    assert values[1] < values[0] and all(b <= a_ * (1 + 1e-6) for a_, b in zip(values, values[1:]))


def test_admm_uses_no_gradients_and_needs_the_mlp(digits_batch):
    x, y = digits_batch
    admm, m = build_trainer("admm", 2, model="mlp")
    before = torch.cat([p.flatten().clone() for p in m.units.parameters()])
    train_step(admm, 0, x, y)
    assert all(p.grad is None for p in m.units.parameters())
    assert not torch.equal(before, torch.cat([p.flatten() for p in m.units.parameters()]))
    with pytest.raises(BenchError, match="admm runs on mlp only, not on resnet50"):
        build_trainer("admm", 2, model="resnet50")


# --- resist / localsgd -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,workers", [(5, 2), (5, 4), (22, 2), (22, 4), (22, 8), (3, 8)])
def test_resist_partitions_cover_every_block_each_round(n, workers):
    blocks = list(range(10, 10 + n))
    m = default_min_blocks(n)
    g = torch.Generator().manual_seed(0)
    seen_first = set()
    for _ in range(20):
        parts = partition(blocks, workers, m, g)
        assert len(parts) == workers
        assert set().union(*map(set, parts)) == set(blocks)  # every block trained every round
        assert all(set(p) <= set(blocks) and len(set(p)) == len(p) for p in parts)
        depth = max(min(m, n), -(-n // workers))  # round-robin share, topped up to the minimum depth
        assert all(len(p) in (depth, n // workers) and len(p) >= min(m, n) for p in parts)
        seen_first.add(tuple(parts[0]))
    assert len(seen_first) > 1  # re-dealt at random every round
    assert default_min_blocks(22) == 5  # the paper's minimum depth on ResNet-101


def _rounds(method="resist", k=3, model="preact_resnet50"):
    trainer, m = build_trainer(method, k, model=model)
    return trainer.make_rounds(), trainer


def test_resist_aggregation_averages_exactly_the_holders():
    ro, stages = _rounds(k=3)
    assert ro.partitioned == partitionable_blocks(ro.units) and len(ro.partitioned) == 5  # conv4_2..conv4_6
    ro.begin_round(0)
    with torch.no_grad():
        for w, replica in ro.replicas.items():
            for t in (t for u in replica for t in float_tensors(u)):
                t.fill_(float(w + 1))
    ro.publish()
    for j, unit in enumerate(ro.units):
        holders = ro.holders[j]
        expected = sum(w + 1 for w in holders) / len(holders)
        for t in float_tensors(unit):
            assert torch.all(t == expected), (j, holders)
        if j in ro.partitioned:
            assert len(holders) < 3 and unit.scale == ro.eval_scale
            for w in range(3):
                assert ro.replicas[w][j].active == (w in holders) and ro.replicas[w][j].scale == 1.0
        else:
            assert holders == [0, 1, 2]


def test_resist_workers_train_only_the_blocks_they_hold(digits_batch):
    x, y = digits_batch
    ro, _ = _rounds(k=2)
    ro.begin_round(0)
    before = {w: [torch.cat([t.flatten() for t in float_tensors(u)]).clone() for u in r] for w, r in ro.replicas.items()}
    ro.step(0, x, y)
    for w, replica in ro.replicas.items():
        for j in ro.partitioned:
            moved = not torch.equal(before[w][j], torch.cat([t.flatten() for t in float_tensors(replica[j])]))
            assert moved == (w in ro.holders[j]), (w, j)
    # a block left out is the identity
    block = ro.replicas[0][ro.partitioned[0]]
    block.active = False
    h = torch.randn(2, *block.bn1.weight.shape, 2, 2)
    assert torch.equal(block(h), h)


def test_bytes_per_round_localsgd_moves_the_model_twice_per_worker_resist_less():
    ls, stages = _rounds("localsgd", k=4)
    model = sum(nbytes(u) for u in ls.units)
    assert ls.summary()["bytes_per_round"] == 2 * 4 * model
    rs, _ = _rounds("resist", k=4)
    rs.begin_round(0)
    held = rs.held_bytes(rs.holders)
    assert rs.summary()["bytes_per_round"] == 2 * sum(held) < 2 * 4 * model
    assert all(b < model for b in held)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["resist", "localsgd"])
def test_rounds_on_real_workers_equal_the_in_process_rounds(method, tmp_path):
    """Same seed, same shards, same rounds: gloo collectives give the in-process weights (1 thread each)."""
    cfg = dict(method=method, groups=2, model="preact_resnet50", data="digits", profile="smoke", steps=20,
               out=str(tmp_path), threads=1, extra={"local_iters": 5})
    a = json.loads(run(RunConfig(**cfg), progress=False).read_text())
    b = json.loads(run_distributed(RunConfig(**cfg), DistConfig()).read_text())
    assert b["status"] == "completed" and b["executor"] == "distributed"
    assert b["curves"]["test_loss"] == pytest.approx(a["curves"]["test_loss"], rel=1e-5)
    assert b["comm"]["bytes_per_round"] == a["comm"]["bytes_per_round"] and b["comm"]["rounds"] == 4
    assert all(w["bytes_sent"] > 0 for w in b["workers"])


# --- auxvar ------------------------------------------------------------------------------------------------
def test_auxvar_modules_train_independently_given_the_auxiliary_variables(digits_batch):
    x, y = digits_batch
    a, _ = build_trainer("auxvar", 3)
    b = copy.deepcopy(a)
    c, d = copy.deepcopy(a), copy.deepcopy(a)
    z = X.update_aux(a.bodies, X.init_aux(a.bodies, x), y, rho=1.0, lr=1.0, iters=2)
    with torch.no_grad():  # module 3 of b is another network entirely
        for p in b.bodies[2].parameters():
            p.add_(torch.randn_like(p))
    targets = z[1:] + [y]

    def step(t, k, target):
        X.module_step(t.bodies[k], t.optims[k]["body"], k == 2, z[k], target, rho=1.0)

    for t in (a, b):
        for k in range(3):
            step(t, k, targets[k])
    pa, pb = params_of(a), params_of(b)
    assert torch.equal(pa[0], pb[0]) and torch.equal(pa[1], pb[1]) and not torch.equal(pa[2], pb[2])
    # module 2 alone, before or after the others, with the others updated or not: the same step
    step(c, 1, z[2])
    for k in (2, 0):
        step(d, k, targets[k])
    step(d, 1, z[2])
    assert torch.equal(params_of(c)[1], pa[1]) and torch.equal(params_of(d)[1], pa[1])


def test_auxvar_with_one_step_is_backprop_for_the_first_of_two_modules(digits_batch):
    """rho * z_lr = 1, one z step: module 1's target is one gradient step on its output, so its update is
    exactly backprop's, while module 2 trains on the moved auxiliary input, not on module 1's output."""
    x, y = digits_batch
    bodies = build_trainer("auxvar", 2)[0].bodies
    params = list(bodies[0].parameters())
    true = torch.autograd.grad(F.cross_entropy(bodies[1](bodies[0](x)), y), params)
    z = X.update_aux(bodies, X.init_aux(bodies, x), y, rho=2.0, lr=0.5, iters=1)
    local = torch.autograd.grad(X.module_loss(bodies[0], False, z[0], z[1], rho=2.0), params)
    for g, t in zip(local, true):
        assert (g - t).norm() <= 1e-4 * t.norm()
    assert not torch.equal(z[1], X.init_aux(bodies, x)[1])


def test_auxvar_aux_update_lowers_the_penalty_objective(digits_batch):
    """With a step below 2 / curvature (small here: the groups' Jacobians are large) the z update is a
    descent method on F."""
    x, y = digits_batch
    bodies = build_trainer("auxvar", 3)[0].bodies
    z = X.init_aux(bodies, x)
    values = [X.penalty(bodies, z, y, rho=1.0).item()]
    for _ in range(3):
        z = X.update_aux(bodies, z, y, rho=1.0, lr=0.002, iters=1)
        values.append(X.penalty(bodies, z, y, rho=1.0).item())
    assert all(b < a for a, b in zip(values, values[1:]))
