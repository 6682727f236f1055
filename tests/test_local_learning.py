"""The local-learning peers on their own networks: ResNet-32/110 as published, InfoPro's local loss (its
gradient stays in its group, its decoder learns, it learns on the digits), greedy with DGL's auxiliary net,
the sweep grid, and the papers' tables beside ours (synthetic records for the table)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from bench import report
from bench.__main__ import main as cli
from bench.config import RunConfig
from bench.exec.launch import run_distributed
from bench.exec.settings import DistConfig
from bench.models import build_model, num_units
from bench.models.heads import critic
from bench.models.local_heads import supervised_contrastive
from bench.models.split import paper_split
from bench.report import paper
from bench.sweep import grid_configs
from bench.train.build import build
from bench.train.loop import run
from bench.train.records import read_record
from methods.base import Hyper
from methods.infopro import module_weights, unit_range

from helpers import build_trainer, make_stages, params_of, train_step
from test_report import csv_rows, find, record, workers


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one thread


# --- ResNet-32/110 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, published, depth", [("resnet32", 0.46, 32), ("resnet110", 1.7, 110)])
def test_resnet32_110_have_the_published_parameter_counts(name, published, depth):
    """He et al.'s 0.46 M / 1.7 M (width 1, 10 classes) are the network without shortcut weights (their option A);
    the InfoPro authors' two 1x1 projection shortcuts (+ BN) add 2,752."""
    m = build_model(name, 10, (3, 32, 32), 1.0)
    total = sum(p.numel() for p in m.units.parameters())
    shortcuts = sum(p.numel() for u in m.units for n, p in u.named_parameters() if n.startswith("shortcut"))
    assert shortcuts == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    digits = 2 if published < 1 else 1
    assert round((total - shortcuts) / 1e6, digits) == published and abs(total / 1e6 - published) / published < 0.02
    assert m.depth == depth and len(m.units) == num_units(name) == depth // 6 * 3 + 2
    assert m.forward(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resnet32_splits_into_up_to_16_groups_with_the_authors_cuts_and_a_width():
    m = build_model("resnet32", 10, (3, 32, 32), 0.5)
    assert [u.conv1.out_channels for u in m.units[1:-1:5]] == [8, 16, 32]  # 16-32-64 x 0.5
    assert paper_split(m, 2).bounds == [0, 8, 17]  # InfoPro's [2, 1]: after the 2nd block of the 2nd section
    assert paper_split(m, 16).sizes == [1] * 15 + [2]
    m110 = build_model("resnet110", 10, (3, 32, 32), 0.25)
    assert paper_split(m110, 4).bounds == [0, 13, 27, 41, 56]  # [1, 11], [2, 7], [3, 3]
    with pytest.raises(Exception, match="cannot make 17 groups"):
        paper_split(m, 17)


# --- InfoPro ----------------------------------------------------------------------------------------------
def test_infopro_loss_gradient_never_reaches_another_group(digits_batch):
    x, y = digits_batch
    trainer, _ = build_trainer("infopro", 3, model="resnet32", width=0.25)
    rules = trainer.rules
    trainer.take_input(x)
    h = rules[0].body(x)  # still attached to group 0's graph
    before = {k: params_of(rules, k) for k in ("body", "decoder", "projector")}
    out = rules[1].forward(0, h, y)
    assert all(p.grad is None for p in rules[0].body.parameters()) and not out.requires_grad
    after = {k: params_of(rules, k) for k in ("body", "decoder", "projector")}
    for kind, was in before.items():
        for j, (a, b) in enumerate(zip(was, after[kind])):
            if a is not None:
                assert torch.equal(a, b) == (j != 1), (kind, j)  # group 1's modules moved, nobody else's
    assert all(r.backward(0, None) is None for r in rules)


def test_infopro_group_follows_its_weighted_local_loss(digits_batch):
    """The update is -lr * d(lambda_1 BCE + lambda_2 SupCon)/d theta_i, with the authors' weights interpolated."""
    x, y = digits_batch
    plain = Hyper(lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.0)
    rules, _ = make_stages("infopro", 4, model="resnet32", width=0.25, hyper=plain)
    assert rules[1].weights == module_weights("resnet32", 4, 1, {w: None for w in
                                                                   ("lambda1", "lambda2", "lambda1_last", "lambda2_last")})
    assert rules[0].weights == (6, 0) and rules[2].weights == (1, 2) and rules[1].weights == (3.5, 1.0)
    s = rules[0]
    s.take_input(x)
    params = list(s.body.parameters())
    grads = torch.autograd.grad(6 * s.decoder(s.body(x), unit_range(x)), params)  # lambda_2 = 0 here
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(s.local_grads(x, y), grads))
    expected = [p.detach() - plain.lr * g for p, g in zip(params, grads)]
    s.forward(0, x, y)
    for p, e in zip(s.body.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)


def test_infopro_decoder_is_trained(digits_batch):
    x, y = digits_batch
    trainer, _ = build_trainer("infopro", 2, model="resnet32", width=0.25)
    rule = trainer.rules[0]
    decoder = params_of([rule], "decoder")[0]
    bce = []
    for step in range(25):
        train_step(trainer, step, x, y)
        bce.append(rule.stats["recon_bce"].item())
    assert not torch.equal(params_of([rule], "decoder")[0], decoder)
    assert bce[-1] < bce[0] - 0.05
    assert unit_range(x).min() == 0 and unit_range(x).max() == 1


def test_supervised_contrastive_loss_is_the_authors():
    """Against a direct transcription of SupConLoss (one view, temperature = base temperature)."""
    torch.manual_seed(0)
    f, y = torch.randn(12, 5), torch.tensor([0, 1, 0, 2, 1, 0, 3, 1, 2, 0, 1, 2])
    z = F.normalize(f, dim=1)
    total = 0.0
    for i in range(12):
        others = [a for a in range(12) if a != i]
        log_den = torch.logsumexp(torch.stack([z[i] @ z[a] / 0.07 for a in others]), 0)
        pos = [p for p in others if y[p] == y[i]]
        total += -sum(z[i] @ z[p] / 0.07 - log_den for p in pos) / max(len(pos), 1)
    assert torch.allclose(supervised_contrastive(f, y), total / 12)


def test_infopro_softmax_has_sub_model_heads(digits_batch):
    x, y = digits_batch
    trainer, _ = build_trainer("infopro", 3, options={"loss": "softmax", "lambda1": 1.0, "lambda2": 1.0})
    assert all(r.head is not None for r in trainer.rules[:-1]) and "projector" not in trainer.parts[0]
    assert trainer.rules[0].weights == (1.0, 1.0) and trainer.rules[1].weights == (5.0, 1.0)  # the last: not given
    train_step(trainer, 0, x, y)
    assert torch.isfinite(trainer.rules[0].stats["task_loss"])


def test_infopro_learns_on_the_digits(tmp_path):
    cfg = RunConfig(method="infopro", groups=2, model="resnet32", data="digits", profile="smoke", steps=100,
                    eval_every=100, threads=1, out=str(tmp_path))
    rec = read_record(run(cfg, progress=False))
    assert rec["status"] == "completed" and rec["final"]["test_acc"] > 85
    assert rec["assumption1"]["mu"] and rec["split"]["groups"][0]["aux_params"] > 0


def test_infopro_on_two_stage_workers_is_the_in_process_rule(tmp_path):
    """Every stage worker hands its rule the step's input batch: lockstep equals the in-process run."""
    cfg = RunConfig(method="infopro", groups=2, model="resnet32", width=0.25, batch_size=32, data="digits",
                    profile="smoke", steps=3, out=str(tmp_path / "runs"))
    path = run_distributed(cfg, DistConfig(dump_state="dump.pt", evaluate=False), log_dir=tmp_path / "logs")
    got = torch.load(path.parent / "dump.pt", weights_only=False)
    r = build(RunConfig(**{**vars(cfg), "threads": 1}))
    for step in range(3):
        r.trainer.step(step, *r.stream.batch(step))
    for g, part in zip(got, r.trainer.parts):
        for kind, module in part.items():
            for name, value in module.state_dict().items():
                torch.testing.assert_close(g["modules"][kind][name], value, rtol=1e-4, atol=1e-5, msg=f"{kind}.{name}")


def test_infopro_and_dgl_heads_refuse_networks_without_feature_maps(tmp_path, capsys):
    base = ["run", "--out", str(tmp_path), "-k", "2", "--model", "mlp"]
    assert cli([*base, "--method", "infopro"]) == 2
    assert cli([*base, "--method", "greedy", "--option", "head=dgl"]) == 2
    assert cli([*base[:-2], "--method", "infopro", "--option", "lambda1=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "infopro runs on" in err[0] and "head=dgl" in err[1] and "lambda1" in err[2]
    assert not list(tmp_path.iterdir())


# --- greedy with DGL's auxiliary net -------------------------------------------------------------------------
def test_greedy_takes_dgls_aux_net_and_keeps_the_critic_by_default(digits_batch):
    x, y = digits_batch
    default, _ = build_trainer("greedy", 2)
    shape = default.rules[0].ctx.out_shape
    assert [p.shape for p in default.rules[0].head.parameters()] == [
        p.shape for p in critic("resnet", shape, 10, 1 / 16).parameters()]
    dgl, _ = build_trainer("greedy", 2, options={"head": "dgl"})
    head = dgl.rules[0].head
    c = dgl.rules[0].ctx.out_shape[0]
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    dense = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in convs] == [(c, c, (1, 1))] * 3
    assert [(m.in_features, m.out_features) for m in dense] == [(4 * c, 4 * c)] * 3 + [(4 * c, 10)]
    before = copy.deepcopy(head.state_dict())
    train_step(dgl, 0, x, y)
    assert any(not torch.equal(v, head.state_dict()[k]) for k, v in before.items() if v.is_floating_point())


# --- the grid and the tables ----------------------------------------------------------------------------------
def test_the_local_learning_grid():
    cfgs = grid_configs("local_learning", "cpu", [0], RunConfig())
    runs = {(c.model, c.method, c.groups, json.dumps(c.extra)) for c in cfgs}
    assert len(cfgs) == len(runs) == 26 and {c.data for c in cfgs} == {"cifar10"}
    assert ("resnet110", "greedy", 8, '{"head": "dgl"}') in runs and ("resnet32", "bp", 1, "{}") in runs
    assert {c.groups for c in cfgs if c.method == "infopro"} == {2, 4, 8}
    full = grid_configs("local_learning", "paper", [0], RunConfig())[0]
    assert (full.batch_size, full.steps, full.lr, full.weight_decay) == (1024, 7840, 0.8, 1e-4)


def test_the_papers_values_are_in_the_local_learning_table(tmp_path):
    recs = {"bp": record("cifar10", "resnet32", "bp", 1, acc=92.0),
            "dgl2": record("cifar10", "resnet32", "greedy", 2, acc=90.0),
            "greedy2": record("cifar10", "resnet32", "greedy", 2, acc=89.0),
            "lct2": record("cifar10", "resnet110", "lct", 2, acc=91.5),
            "bp110_gpu": record("cifar10", "resnet110", "bp", 1, acc=93.0, distributed=True, workers=workers(1)),
            "ip2_cpu": record("cifar10", "resnet110", "infopro", 2, acc=93.0, distributed=True, workers=workers(2))}
    recs["dgl2"]["config"]["extra"] = {"head": "dgl"}
    gpu = recs["bp110_gpu"]
    gpu["config"]["batch_size"] = 1024
    gpu["workers"][0].update(gpu_mem_nvml_mb=10240.0)
    for name, rec in recs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
    files = report.render(report.load_records([tmp_path]), base=tmp_path)
    rows = csv_rows(files["local_learning.csv"])
    assert len(find(rows, paper="")) == 2  # greedy with the critic head and LCT: ours, no paper value
    e2e = find(rows, model="resnet32", method="bp", groups=1)[0]
    assert (e2e["paper"], e2e["ours_mean"], e2e["diff"]) == ("7.370000", "8.000000", "0.630000")
    dgl = find(rows, model="resnet32", method="greedy", options="head=dgl", groups=2)[0]
    assert (dgl["paper"], dgl["ours_mean"]) == ("8.690000", "10.000000")
    assert find(rows, model="resnet110", method="infopro", options="", groups=4)[0]["status"] == "missing"
    assert "| resnet110 | InfoPro (Contrast)" in files["local_learning.md"]
    assert len([r for r in rows if r["paper"]]) == len(paper.LOCAL_LEARNING) == 26
    mem = csv_rows(files["local_learning_memory.csv"])
    assert (find(mem, method="bp")[0]["ours_mean_gb"], find(mem, method="bp")[0]["diff"]) == ("10.000000", "0.600000")
    cpu = find(mem, method="infopro", groups=2)[0]
    assert cpu["measure"] == "peak RSS" and cpu["diff"] == "" and cpu["ours_mean_gb"] == ""
    assert find(mem, method="infopro", groups=3)[0]["status"] == "missing"
