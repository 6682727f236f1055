"""The authors' choices (hjdw2/Local-critic-training) where the paper is silent or says otherwise, each
tested against what their code computes; DNI's loss scale against dni-pytorch's update; Assumption 1
measured over several batches; joint's exit heads; what the report shows of all of it."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from bench.__main__ import main
from bench.models import build_model, project_group_starts
from bench.models.heads import critic
from bench.models.split import paper_split
from bench.train.evaluate import assumption1, evaluate
from methods.base import Hyper

from helpers import build_trainer, make_stages, train_step

PLAIN = dict(momentum=0.0, nesterov=False)  # SGD without momentum: an update is -lr * gradient


@pytest.mark.parametrize("method", ["lct", "dni"])
def test_the_authors_l2_is_wd_times_sum_g_times_theta(method, digits_batch):
    """tf.gradients(h + wd * sum(L2), vars, grad_ys=g): the decay term's gradient is wd * sum(g) * theta."""
    x, y = digits_batch
    hyper = Hyper(lr=0.1, weight_decay=0.01, **PLAIN)
    updates = {}
    for l2 in ("paper", "authors"):
        rules, _ = make_stages(method, 2, hyper=hyper, options={"l2": l2})
        r = rules[0]
        if method == "dni":
            with torch.no_grad():  # a synthesizer that says something
                for p in r.synth.parameters():
                    p.normal_(0, 0.1)
        theta = [p.detach().clone() for p in r.body.parameters()]
        h = r.body(x)
        cut = h.detach().requires_grad_(True)
        if method == "lct":  # the critic's gradient w.r.t. the group's output
            g = torch.autograd.grad(F.cross_entropy(r.head(cut), y), cut)[0]
        else:
            with torch.no_grad():
                g = r.synth(cut, y)
        grads = torch.autograd.grad(h, list(r.body.parameters()), grad_outputs=g)
        decay = [hyper.weight_decay * (g.sum() if l2 == "authors" else 1.0) * t for t in theta]
        r.forward(0, x, y)
        updates[l2] = [(p.detach() - t) for p, t in zip(r.body.parameters(), theta)]
        for u, gr, d in zip(updates[l2], grads, decay):
            torch.testing.assert_close(u, -hyper.lr * (gr + d), rtol=1e-4, atol=1e-7)
    assert any(not torch.allclose(a, b) for a, b in zip(updates["paper"], updates["authors"]))


def test_the_critic_follows_the_authors_lc_block():
    """LC_block: a 3x3 conv of 128 filters without bias, ReLU, then flatten and a dense layer whose bias starts
    at zero; variance-scaling weights (std sqrt(1 / fan_in))."""
    head = critic("resnet", (256, 8, 8), 10)
    conv, fc = head[0], head[3]
    assert conv.bias is None and conv.out_channels == 128 and conv.kernel_size == (3, 3)
    assert torch.equal(fc.bias, torch.zeros(10))
    std = conv.weight.std().item()
    assert abs(std - math.sqrt(1 / (256 * 9))) < 0.05 * math.sqrt(1 / (256 * 9))
    assert conv.weight.abs().max().item() <= 2 * math.sqrt(1 / (256 * 9)) / 0.8796 + 1e-6  # truncated at 2 std


def test_the_authors_flatten_classifier_has_their_parameter_count():
    """resnet_model.py's dense_layer on ResNet-50's 4x4x2048 map (CIFAR-10): 32768 x 10 weights + 10 biases."""
    m = build_model("resnet50", 10, (3, 32, 32), 1.0, classifier="flatten")
    assert sum(p.numel() for p in m.units[-1].parameters()) == 4 * 4 * 2048 * 10 + 10 == 327_690
    pooled = build_model("resnet50", 10, (3, 32, 32), 1.0)
    assert sum(p.numel() for p in pooled.units[-1].parameters()) == 2048 * 10 + 10
    assert m.forward(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_the_authors_group_projection_and_their_lct_n3_network():
    """LCT_n1.py builds its second group as a new block layer: conv4_11 gets a 1x1 projection shortcut. LCT_n3.py's
    own network has 8 + 8 + 5 conv4 blocks (`resnet95`), cut as the paper rule cuts it."""
    m = build_model("resnet101", 10, (3, 32, 32), 1 / 16)
    split = paper_split(m, 2)
    start = split.bounds[1]
    assert m.unit_names[start] == "conv4_11" and not any(p.requires_grad for p in m.units[start].shortcut.parameters())
    before = sum(p.numel() for p in m.units.parameters())
    project_group_starts(m, split.bounds)
    assert isinstance(m.units[start].shortcut, torch.nn.Sequential)
    conv = m.units[start].shortcut[0]
    assert conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.in_channels == conv.out_channels == 64
    assert sum(p.numel() for p in m.units.parameters()) == before + 64 * 64 + 2 * 64  # the 1x1 conv and its BN
    assert m.forward(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    n3 = build_model("resnet95", 10, (3, 32, 32), 1 / 16)
    groups = [[n for n in names if n.startswith("conv4")] for names in paper_split(n3, 4).names(n3)]
    assert [len(g) for g in groups] == [0, 8, 8, 5]


def test_dni_one_step_equals_dni_pytorchs_update(digits_batch):
    """dni-pytorch's synthetic-gradient update: grad w.r.t. the prediction = 2/B (M(h) - target), i.e. the squared
    norm per sample averaged over the batch; one Adam step of ours equals one written out here."""
    x, y = digits_batch
    rules, _ = make_stages("dni", 2, hyper=Hyper(lr=0.05, aux_lr=1e-3))
    r = rules[0]
    with torch.no_grad():
        for p in r.synth.parameters():
            p.normal_(0, 0.1)
    body, synth = copy.deepcopy(r.body), copy.deepcopy(r.synth)
    target = torch.randn(len(y), *r.ctx.out_shape) * 1e-3
    r.forward(0, x, y)
    r.backward(0, target)
    reference = torch.optim.Adam(synth.parameters(), lr=1e-3)
    prediction = synth(body(x).detach(), y)
    prediction.backward(2 / len(y) * (prediction - target).detach())
    reference.step()
    for ours, theirs in zip(r.synth.parameters(), synth.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    # the element-wise mean (F.mse_loss) is an update B*C*H*W / B times smaller before Adam's normalisation
    element, _ = make_stages("dni", 2, hyper=Hyper(lr=0.05, aux_lr=1e-3), options={"synth_loss": "element"})
    e = element[0]
    with torch.no_grad():
        for p, q in zip(e.synth.parameters(), copy.deepcopy(synth).parameters()):
            p.copy_(q)
    e.forward(0, x, y)
    e.backward(0, target)
    assert any(not torch.allclose(a, b) for a, b in zip(e.synth.parameters(), r.synth.parameters()))


def test_assumption1_averages_several_batches_and_keeps_their_spread(digits, digits_batch):
    from bench.data import stream

    s = stream(digits, 32, seed=0)
    trainer, _ = build_trainer("lct", 3)
    train_step(trainer, 0, *digits_batch)
    batches = [s.batch(i) for i in range(4)]
    out = assumption1(trainer, batches)
    singles = [assumption1(trainer, [b]) for b in batches]
    assert out["batches"] == 4 and len(out["mu"]) == len(out["mu_std"]) == len(out["ratio"]) == 3
    for k in range(3):
        values = torch.tensor([one["mu"][k] for one in singles])
        assert out["mu"][k] == pytest.approx(values.mean().item(), rel=1e-5, abs=1e-6)
        assert out["mu_std"][k] == pytest.approx(values.std().item(), rel=1e-5, abs=1e-6)
        assert out["mu_min"][k] == pytest.approx(values.min().item(), rel=1e-5, abs=1e-6)
    assert out["mu_std"][0] > 1e-3  # a local method's estimate really varies from batch to batch
    assert out["mu"][-1] == pytest.approx(1.0, abs=1e-4) and out["ratio"][-1] == pytest.approx(1.0, abs=1e-4)


def _a1_record(tmp_path, mu, mu_min):
    rec = {"run_id": "x", "status": "completed", "config": {}, "final": {},
           "assumption1": {"step": [25, 50], "mu": [[m, 1.0] for m in mu], "cos": [[0.3, 1.0]] * 2,
                           "mu_std": [[0.04, 0.0]] * 2, "mu_min": [[m, 1.0] for m in mu_min], "batches": [4, 4]}}
    path = tmp_path / "a1.json"
    path.write_text(json.dumps(rec))
    return path


def test_check_assumption1_judges_the_mean_and_prints_its_spread(tmp_path, capsys):
    """A positive mean with one negative batch inside it holds; a negative mean fails."""
    assert main(["check-assumption1", str(_a1_record(tmp_path, [0.05, 0.02], [-0.01, -0.03]))]) == 0
    out = capsys.readouterr().out
    assert "0.0200" in out and "0.0400" in out and "-0.0300" in out and "holds" in out
    assert main(["check-assumption1", str(_a1_record(tmp_path, [0.05, -0.02], [0.01, -0.06]))]) == 1
    assert main(["check-assumption1", "--from-step", "50", str(_a1_record(tmp_path, [-0.5, 0.02], [-1, 0]))]) == 0


def test_joint_exit_heads_take_their_own_lr():
    rules, _ = make_stages("joint", 3, hyper=Hyper(lr=0.1, milestones=(10,)), options={"head_lr": 0.01})
    r = rules[0]
    r.set_step(0)
    assert [g["lr"] for g in r.body_opt.param_groups] == pytest.approx([0.1, 0.01])
    r.set_step(10)  # the heads follow the run's schedule too
    assert [g["lr"] for g in r.body_opt.param_groups] == pytest.approx([0.01, 0.001])


def test_evaluation_tells_a_collapsed_head_and_batch_statistics_move_nothing(digits):
    trainer, _ = build_trainer("joint", 2)
    head = trainer.rules[0].head
    with torch.no_grad():  # a head that says 3 whatever it sees
        head[-1].weight.zero_()
        head[-1].bias.copy_(torch.arange(10.0) == 3)
    bodies = [body for body, _ in trainer.network()]
    buffers = [t.clone() for m in bodies for t in m.buffers()]
    ev = evaluate(trainer.network(), digits.eval_batches(500, "cpu"), bn="batch")
    assert ev["sub_mode_share"] == [1.0] and 0 < ev["test_acc"] <= 100
    assert all(torch.equal(a, b) for a, b in zip(buffers, [t for m in bodies for t in m.buffers()]))
    ev_running = evaluate(trainer.network(), digits.eval_batches(500, "cpu"))
    assert ev_running["sub_mode_share"] == [1.0]
