"""Split rules: the authors' ResNet-101 LCT_n3 split, the balanced and timed rules' optimality, bad splits."""
from __future__ import annotations

import itertools

import pytest
import torch

import bench.models.split
from bench.errors import BenchError
from bench.models.heads import critic
from bench.models import build_model
from bench.models.split import balanced_split, make_split, module_flops, paper_split, timed_split, unit_flops, unit_seconds


def test_paper_rule_reproduces_authors_resnet101_lct_n3_split():
    m = build_model("resnet101", 10, (3, 32, 32), width=1 / 16)
    names = paper_split(m, 4).names(m)
    # LCT_n3.py: stem+conv2+conv3 | 8 conv4 blocks | 8 conv4 blocks | last 7 conv4 + conv5 + classifier
    assert names[0] == ["stem"] + [f"conv2_{i}" for i in range(1, 4)] + [f"conv3_{i}" for i in range(1, 5)]
    assert names[1] == [f"conv4_{i}" for i in range(1, 9)]
    assert names[2] == [f"conv4_{i}" for i in range(9, 17)]
    assert names[3] == [f"conv4_{i}" for i in range(17, 24)] + [f"conv5_{i}" for i in range(1, 4)] + ["fc"]


def test_paper_rule_takes_the_authors_other_cuts():
    # LC(3).py: ResNet-50 LCT_n3 at the stage boundaries; LCT_n1.py: ResNet-101 cut after conv4_10
    m50 = build_model("resnet50", 10, (3, 32, 32), width=1 / 16)
    assert [g[-1] for g in paper_split(m50, 4).names(m50)] == ["conv2_3", "conv3_4", "conv4_6", "fc"]
    m101 = build_model("resnet101", 10, (3, 32, 32), width=1 / 16)
    assert [g[-1] for g in paper_split(m101, 2).names(m101)] == ["conv4_10", "fc"]
    assert paper_split(m50, 2).sizes == [8, 10]  # no authors' cut: floor(17 / 2) units, the rest + fc


def test_paper_split_adds_up_to_table_viii_resnet50_sub3():
    """Table VIII, ResNet-50 on CIFAR-10: Sub_3 (groups 1..3 + critic 3) has 9.79 M parameters, the critic
    1.26 M: only the stage-boundary cut (conv4 whole in group 3) gives that."""
    m = build_model("resnet50", 10, (3, 32, 32), width=1.0)
    split = paper_split(m, 4)
    body = sum(p.numel() for u in m.units[:split.bounds[3]] for p in u.parameters())
    _, shapes = unit_flops(m, (3, 32, 32))
    head = critic("resnet", shapes[split.bounds[3] - 1], 10, 1.0)
    head_params = sum(p.numel() for p in head.parameters())
    assert head_params == pytest.approx(1.26e6, rel=0.01)
    assert body + head_params == pytest.approx(9.79e6, rel=0.01)


def test_resnet_depths_and_parameters():
    for name, depth in (("resnet50", 50), ("resnet101", 101), ("resnet182", 182)):
        assert build_model(name, 10, (3, 32, 32), 1 / 16).depth == depth
    # full-width ResNet-50 on CIFAR-10: 23.5 M parameters (the paper's Table VIII counts 23.82 M)
    m = build_model("resnet50", 10, (3, 32, 32), 1.0)
    assert sum(p.numel() for p in m.units.parameters()) == pytest.approx(23.5e6, rel=0.01)


def test_paper_critic_matches_table_viii_resnet50_sub1():
    """Table VIII: ResNet-50 CIFAR-10 Sub_1's critic has 1.61 M parameters (conv 128 + FC on 32x32)."""
    c = critic("resnet", (256, 32, 32), 10, width=1.0)
    assert sum(p.numel() for p in c.parameters()) == pytest.approx(1.61e6, rel=0.01)


def test_balanced_split_minimises_the_costliest_group():
    m = build_model("resnet50", 10, (1, 8, 8), width=1 / 16)
    shape = (1, 8, 8)
    flops, shapes = unit_flops(m, shape)
    head = [0] + [module_flops(critic("resnet", s, 10, m.width), s) for s in shapes[:-1]] + [0]
    n, k = len(m.units), 3

    def worst(bounds):
        return max(sum(flops[a:b]) + (head[b] if b < n else 0) for a, b in zip(bounds, bounds[1:]))

    best = min(worst([0, a, b, n]) for a, b in itertools.combinations(range(1, n - 1), 2))
    ours = balanced_split(m, k, shape, lambda s: critic("resnet", s, 10, m.width))
    assert worst(ours.bounds) == best
    assert ours.sizes[-1] >= 2  # the classifier never stands alone


@pytest.mark.parametrize("k", [0, 3, 10])
def test_impossible_splits_are_one_line_errors(k):
    m = build_model("mlp", 10, (1, 8, 8))
    with pytest.raises(BenchError) as e:
        paper_split(m, k)
    assert "\n" not in str(e.value)


def test_timed_split_measures_on_copies_and_keeps_the_rng(digits_batch):
    """Timing runs forward and backward passes: the model's weights and BatchNorm statistics, and the global
    RNG (the run's critics are drawn after the split), must come out untouched."""
    m = build_model("resnet50", 10, (1, 8, 8), width=1 / 16)
    before = {k: v.clone() for k, v in m.units.state_dict().items()}
    rng = torch.get_rng_state()
    units, heads = unit_seconds(m, digits_batch, lambda s: critic("resnet", s, 10, m.width))
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in m.units.state_dict().items())
    assert len(units) == len(m.units) and all(t > 0 for t in units)
    assert heads[0] == heads[-1] == 0 and all(t > 0 for t in heads[1:-1])  # a head after every cut point


def test_timed_split_minimises_the_slowest_group(monkeypatch, digits_batch):
    m = build_model("mlp", 10, (1, 8, 8))  # units: dense1, dense2, fc
    # dense1 is slow: with K=2 it must stand alone even though its head costs something
    monkeypatch.setattr(bench.models.split, "unit_seconds", lambda model, batch, head_for: ([5.0, 1.0, 1.0], [0, 1.0, 1.0, 0]))
    assert timed_split(m, 2, digits_batch).bounds == [0, 1, 3]
    monkeypatch.setattr(bench.models.split, "unit_seconds", lambda model, batch, head_for: ([1.0, 1.0, 5.0], [0, 0.5, 0.5, 0]))
    assert timed_split(m, 2, digits_batch).bounds == [0, 1, 3]  # the classifier never stands alone


@pytest.mark.parametrize("bounds", [[0, 3], [0, 2, 2, 3], [1, 2, 3], [0, 2, 3]])  # [0, 2, 3]: fc alone
def test_explicit_bounds_are_checked(bounds):
    m = build_model("mlp", 10, (1, 8, 8))
    with pytest.raises(BenchError) as e:
        make_split("timed", m, 2, (1, 8, 8), bounds=bounds)
    assert "\n" not in str(e.value)
