"""Gradients go where the paper says: BP is autograd, LCT's critics never reach past their own
weights, groups learn only through their own critic, DNI's modules regress their target."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from bench.exec.inprocess import GroupChain
from bench.train.evaluate import assumption1
from methods import GroupRule, create_method, list_methods
from methods.base import Hyper

from helpers import build_trainer, make_stages, model_for, params_of, train_step


@pytest.mark.parametrize("model,k", [("mlp", 2), ("resnet50", 3)])
def test_bp_equals_plain_autograd(model, k, digits_batch):
    """K-group backprop run in lockstep = one SGD (Nesterov, L2) step of autograd on the whole net."""
    x, y = digits_batch
    hyper = Hyper(lr=0.05)
    stages, m = make_stages("bp", k, model=model, hyper=hyper)
    reference = copy.deepcopy(m.units)
    opt = torch.optim.SGD(reference.parameters(), lr=hyper.lr, momentum=hyper.momentum, nesterov=True,
                          weight_decay=hyper.weight_decay)
    for step in range(3):
        train_step(stages, step, x, y)
        opt.zero_grad()
        h = x
        for unit in reference:
            h = unit(h)
        F.cross_entropy(h, y).backward()
        opt.step()
    ours = torch.cat([p.flatten() for p in m.units.parameters()])
    theirs = torch.cat([p.flatten() for p in reference.parameters()])
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(theirs, torch.cat([p.flatten() for p in make_stages("bp", k, model=model)[1].units.parameters()]))


def test_lct_critic_loss_only_moves_its_own_critic(digits_batch):
    """The critic update (stage i backward) changes critic i and nothing else: no group, no other critic."""
    x, y = digits_batch
    stages, _ = make_stages("lct", 4)
    h = x
    for s in stages:
        h = s.forward(0, h, y)
    feedback = stages[-1].backward(0, None)
    for i in (2, 1, 0):
        before = {kind: params_of(stages, kind) for kind in ("body", "head")}
        feedback = stages[i].backward(0, feedback)
        after = {kind: params_of(stages, kind) for kind in ("body", "head")}
        for j in range(4):
            assert torch.equal(before["body"][j], after["body"][j]), f"critic {i} moved group {j}"
            if j < 3:
                moved = not torch.equal(before["head"][j], after["head"][j])
                assert moved == (j == i), f"critic {i}'s loss {'moved' if moved else 'left'} critic {j}"


def test_lct_group_update_is_its_critics_gradient(digits_batch):
    """Group i's forward update uses d mean CE(c_i(h_i)) / d theta_i and leaves c_i's weights alone."""
    x, y = digits_batch
    hyper = Hyper(lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.0)  # plain SGD: update = -lr * grad
    stages, _ = make_stages("lct", 3, hyper=hyper)
    s = stages[0]
    expected = [p.detach() - hyper.lr * g for p, g in zip(s.body.parameters(), s.local_grads(x, y))]
    head_before = params_of(stages, "head")[0]
    s.forward(0, x, y)
    for p, e in zip(s.body.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)
    assert torch.equal(params_of(stages, "head")[0], head_before)
    assert all(p.grad is None for p in s.head.parameters())


def test_lct_groups_learn_only_through_their_own_critic(digits_batch):
    """Change everything after group 1 (its weights): group 1's update is unchanged; with BP it would change."""
    x, y = digits_batch
    for method, same in (("lct", True), ("bp", False)):
        a, _ = make_stages(method, 3)
        b, _ = make_stages(method, 3)
        with torch.no_grad():
            for p in b[2].body.parameters():
                p.add_(torch.randn_like(p))
        train_step(a, 0, x, y)
        train_step(b, 0, x, y)
        for i in (0, 1):
            assert torch.equal(params_of(a)[i], params_of(b)[i]) == same, (method, i)


def test_lct_critic_targets_the_next_loss(digits_batch):
    """Critic i's feedback is the next stage's per-sample loss: repeated updates shrink |l_i - l_{i+1}|."""
    x, y = digits_batch
    stages, _ = make_stages("lct", 2)
    s = stages[0]
    target = torch.full((len(y),), 0.5)
    gaps = []
    for step in range(60):
        s.forward(step, x, y)
        gaps.append((s.pending[step].detach() - target).abs().mean().item())
        s.backward(step, target)
    assert gaps[-1] < 0.5 * gaps[0]


@pytest.mark.parametrize("method", ["dni", "cdni"])
def test_dni_module_moves_toward_target_gradient(method, digits_batch):
    x, y = digits_batch
    stages, _ = make_stages(method, 2, hyper=Hyper(lr=0.0, aux_lr=1e-3))  # body frozen: fixed h
    s = stages[0]
    h = s.body(x).detach()
    target = 1e-2 * torch.tanh(h)  # a gradient field the module can represent

    def mse():
        with torch.no_grad():
            return F.mse_loss(s.synth(h, y), target).item()

    start = mse()
    for step in range(50):
        s.forward(step, x, y)
        s.backward(step, target)
    assert mse() < 0.5 * start


def test_dni_first_update_uses_synthetic_gradient(digits_batch):
    """The group moves at forward time by h.backward(M(h)); feedback never touches the body."""
    x, y = digits_batch
    stages, _ = make_stages("dni", 2, hyper=Hyper(lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.0))
    s = stages[0]
    with torch.no_grad():  # make the synthesizer's output non-zero
        for p in s.synth.parameters():
            p.normal_(0, 0.1)
    expected = [p.detach() - 0.05 * g for p, g in zip(s.body.parameters(), s.local_grads(x, y))]
    s.forward(0, x, y)
    for p, e in zip(s.body.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)
    body = params_of(stages)[0]
    s.backward(0, torch.randn(len(y), *s.ctx.out_shape))
    assert torch.equal(params_of(stages)[0], body)


def test_joint_exit_heads_are_trained_with_the_network(digits_batch):
    x, y = digits_batch
    stages, _ = make_stages("joint", 3)
    heads = params_of(stages, "head")
    train_step(stages, 0, x, y)
    after = params_of(stages, "head")
    assert not torch.equal(heads[0], after[0]) and not torch.equal(heads[1], after[1])


def test_assumption1_is_one_for_bp_and_changes_nothing(digits_batch):
    x, y = digits_batch
    for method in ("bp", "lct", "dni"):
        stages, m = make_stages(method, 3)
        state = copy.deepcopy(m.units.state_dict())
        out = assumption1(GroupChain(stages), [(x, y)])
        assert len(out["mu"]) == 3 and out["mu"][-1] == pytest.approx(1.0, abs=1e-4)
        if method == "bp":
            assert out["mu"] == pytest.approx([1.0] * 3, abs=1e-4)
        else:
            assert out["cos"][0] < 0.999  # a local gradient is not the true one
        for k, v in m.units.state_dict().items():
            assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("method", list_methods())
def test_every_method_builds_and_steps(method, digits_batch):
    x, y = digits_batch
    model = model_for(method)
    trainer, m = build_trainer(method, 2 if model == "mlp" else 3, model=model)
    before = torch.cat([p.flatten().clone() for p in m.units.parameters()])
    for step in range(2):
        train_step(trainer, step, x, y)
    after = torch.cat([p.flatten() for p in m.units.parameters()])
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    cls = create_method(method)
    assert cls.description and cls.look.label
    assert isinstance(trainer, GroupChain) == issubclass(cls, GroupRule)
