"""The ImageFolder reader (bench/imagenet.py), the ImageNet stem and critic, on a tiny fake tree."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import data as datasets
from bench.errors import BenchError
from bench.models.heads import critic
from bench.models import build_model

CLASSES = ("n01", "n02", "n03")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("val", 2)):
        for c in CLASSES:
            folder = root / "imagenet" / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = (90, 70) if i % 2 else (70, 96)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{c}_{i}.JPEG")
    return root


def test_missing_tree_is_a_one_line_error(tmp_path):
    with pytest.raises(BenchError, match=r"imagenet64 data not found: missing .*imagenet/train") as e:
        datasets.check_available("imagenet64", tmp_path)
    assert "\n" not in str(e.value)


def test_reader_lists_classes_and_files(tree):
    ds = datasets.load_dataset("imagenet64", tree)
    assert ds.classes == list(CLASSES) and ds.num_classes == 3
    assert len(ds.train) == 15 and len(ds.test) == 6
    assert ds.input_shape == (3, 64, 64)
    assert [y for _, y in ds.test] == [0, 0, 1, 1, 2, 2]


def test_stream_is_deterministic_and_prefetch_gives_the_same_batch(tree):
    ds = datasets.load_dataset("imagenet64", tree)
    a = datasets.stream(ds, 4, seed=3)
    b = datasets.stream(ds, 4, seed=3)
    assert type(a).__name__ == "ImageFolderStream"
    xa0, ya0 = a.batch(0)
    xa1, ya1 = a.batch(1)  # served by the prefetch
    xb1, yb1 = b.batch(1)  # decoded directly
    assert xa0.shape == (4, 3, 64, 64) and xa0.dtype == torch.float32
    assert torch.equal(xa1, xb1) and torch.equal(ya1, yb1)
    assert not torch.equal(xa0, xa1)
    assert abs(xa0.mean().item()) < 1.0  # standardised
    xc, _ = datasets.stream(ds, 4, seed=4).batch(1)
    assert not torch.equal(xc, xa1)


def test_eval_batches_cover_val_in_order(tree):
    ds = datasets.load_dataset("imagenet64", tree)
    batches = list(datasets.eval_batches(ds, 4, "cpu"))
    assert [len(y) for _, y in batches] == [4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == [0, 0, 1, 1, 2, 2]
    again = list(datasets.eval_batches(ds, 4, "cpu", limit=3))
    assert torch.equal(again[0][0][:3], batches[0][0][:3]) and sum(len(y) for _, y in again) == 3


def test_imagenet_stem_and_critic():
    m = build_model("resnet50", 10, (3, 64, 64), width=1 / 16)
    assert m.family == "resnet_imagenet"
    stem = m.units[0]
    assert stem[0].kernel_size == (7, 7) and stem[0].stride == (2, 2) and isinstance(stem[-1], torch.nn.MaxPool2d)
    h = stem(torch.zeros(2, 3, 64, 64))
    assert h.shape[-2:] == (16, 16)
    head = critic(m.family, tuple(h.shape[1:]), 10, m.width)
    convs = [x for x in head if isinstance(x, torch.nn.Conv2d)]
    assert len(convs) == 3 and convs[-1].out_channels == 1
    assert head(h).shape == (2, 10)
    assert build_model("resnet50", 10, (3, 32, 32), width=1 / 16).family == "resnet"  # CIFAR stem below 64 px


def test_a_run_on_the_tree_completes(tree, tmp_path):
    from bench.config import RunConfig
    from bench.train.loop import run
    from bench.train.records import read_record

    cfg = RunConfig(method="lct", groups=2, data="imagenet64", data_root=str(tree), profile="smoke", steps=2,
                    batch_size=4, out=str(tmp_path / "runs"))
    rec = read_record(run(cfg, progress=False))
    assert rec["status"] == "completed" and len(rec["final"]["sub_acc"]) == 1


def test_paper_profile_has_the_imagenet_schedule():
    """Section V: batch 32, 75 epochs, lr 0.0125, x0.1 at epochs 23, 40, 60 and 70 (not CIFAR's settings)."""
    from bench.config import RunConfig, resolve

    cfg = resolve(RunConfig(method="lct", groups=4, data="imagenet", profile="paper"))
    epoch = 1_281_167 // 32
    assert (cfg.batch_size, cfg.lr, cfg.steps) == (32, 0.0125, 75 * epoch)
    assert cfg.milestones == tuple(75 * epoch * e // 75 for e in (23, 40, 60, 70))
    cifar = resolve(RunConfig(method="lct", groups=4, data="cifar10", profile="paper"))
    assert (cifar.batch_size, cifar.lr, cifar.steps, cifar.milestones) == (128, 0.1, 80_000, (40_000, 60_000))
