"""The synthetic image data sets: shapes, a fixed seed, no files, nothing to learn; and runs on them."""

import json

import pytest
import torch

from bench.__main__ import main
from bench.data import REGISTRY, check_available, eval_batches, load_dataset
from bench.data.images import to_device
from bench.data.synthetic import SHAPES, SOURCE

NAMES = ["synthetic_cifar", "synthetic_mnist", "synthetic_imagenet64"]
EXPECTED = {"synthetic_cifar": ((3, 32, 32), 10), "synthetic_mnist": ((1, 28, 28), 10),
            "synthetic_imagenet64": ((3, 64, 64), 1000)}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Each synthetic set, loaded from a data root that does not exist (nothing is read, nothing written)."""
    root = tmp_path_factory.mktemp("empty") / "no-data-here"
    loaded = {name: load_dataset(name, root) for name in NAMES}
    assert not root.exists()
    return loaded


def test_every_synthetic_set_is_registered_with_its_shape():
    assert set(NAMES) <= set(REGISTRY) and set(SHAPES) == set(NAMES)
    for name, (shape, classes) in EXPECTED.items():
        spec = REGISTRY[name]
        assert (spec.kind, spec.input_shape, spec.num_classes, spec.download) == ("image", shape, classes, None)
        assert SOURCE in spec.files


@pytest.mark.parametrize("name", NAMES)
def test_synthetic_sets_need_no_files(name, tmp_path):
    check_available(name, tmp_path / "missing")  # passes on any data root
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", NAMES)
def test_synthetic_sets_shapes_and_values(sets, name):
    ds, (shape, classes) = sets[name], EXPECTED[name]
    assert ds.input_shape == shape and ds.num_classes == classes and ds.source == SOURCE
    assert ds.train_x.dtype == ds.test_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert len(ds.train_x) == len(ds.train_y) and len(ds.test_x) == len(ds.test_y) < len(ds.train_y)
    assert ds.train_x.numel() * 4 < 130 * 2**20  # small: at most about CIFAR-10's size in memory
    assert abs(ds.train_x.mean().item()) < 0.01 and abs(ds.train_x.std().item() - 1) < 0.01  # N(0, 1)
    assert 0 <= ds.train_y.min() and ds.train_y.max() < classes
    assert ds.augment == (name != "synthetic_mnist")  # augmented like the data set it stands in for


def test_synthetic_data_is_fixed_whatever_the_run(sets, tmp_path):
    torch.manual_seed(123)  # a run's seed changes nothing
    again = load_dataset("synthetic_mnist", tmp_path)
    first = sets["synthetic_mnist"]
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    head = [sets[name].train_x.flatten()[:100] for name in ("synthetic_cifar", "synthetic_imagenet64")]
    assert not torch.equal(*head)  # each set its own seed


def test_nothing_is_learnable(sets):
    """The labels are independent of the inputs: the best linear rule there is for Gaussian classes, the
    nearest class mean, is at chance on the test split (10%; 20% would be far outside the noise)."""
    ds = sets["synthetic_cifar"]
    train, test = ds.train_x.flatten(1), ds.test_x.flatten(1)
    means = torch.stack([train[ds.train_y == c].mean(0) for c in range(ds.num_classes)])
    accuracy = (torch.cdist(test, means).argmin(1) == ds.test_y).float().mean().item()
    assert accuracy < 0.2
    counts = torch.bincount(ds.train_y, minlength=ds.num_classes)
    assert counts.min() > 0.8 * counts.float().mean()  # every class drawn about equally often


def test_synthetic_batches_are_deterministic_and_augmented(sets):
    ds = sets["synthetic_cifar"]
    a, b = ds.stream(32, seed=1), ds.stream(32, seed=1)
    xa, ya = a.batch(7)
    xb, yb = b.batch(7)
    assert xa.shape == (32, 3, 32, 32) and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert (xa == 0).float().mean().item() > 0.01  # N(0, 1) is never 0: crops reach into the zero padding
    assert [len(y) for _, y in eval_batches(ds, 400, "cpu")] == [400, 400, 200]


def test_to_device_on_the_cpu_is_the_tensor_itself():
    t = torch.arange(5)
    assert to_device(t, torch.device("cpu")) is t  # the CPU path is unchanged: no copy


@pytest.mark.parametrize("data, method, groups", [("synthetic_cifar", "bp", 1), ("synthetic_imagenet64", "lct", 2)])
def test_bench_run_on_synthetic_data(tmp_path, data, method, groups, threads, capsys):
    """`python -m bench run --data synthetic_*` trains with no data root: the models pick their stem from the
    input shape (32 px: CIFAR's, 64 px: ImageNet's, and the ImageNet critic)."""
    out = tmp_path / "runs"
    rc = main(["run", "--method", method, "--groups", str(groups), "--data", data, "--data-root",
               str(tmp_path / "none"), "--steps", "2", "--batch-size", "8", "--width", "0.0625", "--eval-every", "2",
               "--eval-limit", "16", "--final-eval-limit", "16", "--assumption1-every", "0", "--threads", "1",
               "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["status"] == "completed" and record["config"]["data"] == data
    assert record["final"]["samples_per_s"] > 0 and not (tmp_path / "none").exists()
