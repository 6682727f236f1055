"""Readers against tiny files in the real on-disk formats, the error messages, and the batch streams."""

import builtins
import gzip
import pickle
import struct
import sys
import types

import numpy as np
import pytest
import torch

from bench import data
from bench.data import DATASETS, BatchStream, Dataset, check_available, crop_and_flip, download, eval_batches
from bench.data import load_dataset, resolve_data_root
from bench.errors import BenchError


# ---------------------------------------------------------------------------------------------------------
# Writers for the real formats.


def _write_cifar_pickle(path, images, labels, label_key):
    # images (N, 3, 32, 32) uint8; the file stores each row as the R, G, B planes, row-major.
    batch = {b"batch_label": b"test", b"data": images.reshape(len(images), -1), label_key: [int(v) for v in labels]}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [int(v) // 5 for v in labels]  # a decoy: must not be read as the labels
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def _cifar_images(rng, n):
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(root, rng, per_batch=3, n_test=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x, y = _cifar_images(rng, per_batch), rng.integers(0, 10, per_batch)
        _write_cifar_pickle(folder / f"data_batch_{i}", x, y, b"labels")
        train_x.append(x)
        train_y.append(y)
    test_x, test_y = _cifar_images(rng, n_test), rng.integers(0, 10, n_test)
    _write_cifar_pickle(folder / "test_batch", test_x, test_y, b"labels")
    return np.concatenate(train_x), np.concatenate(train_y), test_x, test_y


def _idx_bytes(magic, array):
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder, rng, n_train=5, n_test=3, gz=False):
    folder.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": (0x803, rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte": (0x801, rng.integers(0, 10, n_train, dtype=np.uint8)),
        "t10k-images-idx3-ubyte": (0x803, rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": (0x801, rng.integers(0, 10, n_test, dtype=np.uint8)),
    }
    for stem, (magic, array) in arrays.items():
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as f:
                f.write(_idx_bytes(magic, array))
        else:
            (folder / stem).write_bytes(_idx_bytes(magic, array))
    return {stem: array for stem, (_, array) in arrays.items()}


def assert_standardised(ds, raw_train, raw_test):
    """train/test equal the raw values standardised with the per-channel train mean/std."""
    raw_train, raw_test = raw_train.astype(np.float64), raw_test.astype(np.float64)
    mean = raw_train.mean(axis=(0, 2, 3), keepdims=True)
    std = raw_train.std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(ds.train_x.numpy(), (raw_train - mean) / std, atol=1e-4)
    np.testing.assert_allclose(ds.test_x.numpy(), (raw_test - mean) / std, atol=1e-4)
    assert ds.train_x.dtype == ds.test_x.dtype == torch.float32
    assert ds.train_y.dtype == ds.test_y.dtype == torch.int64


# ---------------------------------------------------------------------------------------------------------
# Readers.


def test_cifar10_reads_five_batches_and_test_batch(tmp_path):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path, np.random.default_rng(0))
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32)
    assert ds.train_y.tolist() == train_y.tolist() and ds.test_y.tolist() == test_y.tolist()
    assert_standardised(ds, train_x, test_x)
    means = ds.train_x.mean(dim=(0, 2, 3))
    stds = ds.train_x.std(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(means, torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(stds, torch.ones(3), atol=1e-5, rtol=0)
    assert ds.num_classes == 10 and ds.augment
    assert ds.source == str(tmp_path / "cifar-10-batches-py")


def test_cifar100_reads_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_x, train_y = _cifar_images(rng, 6), np.array([0, 99, 42, 17, 5, 63])
    test_x, test_y = _cifar_images(rng, 2), np.array([98, 3])
    _write_cifar_pickle(folder / "train", train_x, train_y, b"fine_labels")
    _write_cifar_pickle(folder / "test", test_x, test_y, b"fine_labels")
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.augment
    assert ds.train_y.tolist() == train_y.tolist() and ds.test_y.tolist() == test_y.tolist()
    assert_standardised(ds, train_x, test_x)


@pytest.mark.parametrize("name, folder, gz", [
    ("mnist", "mnist", False),
    ("mnist", "mnist", True),
    ("mnist", "MNIST/raw", False),
    ("mnist", "MNIST/raw", True),
    ("fashion_mnist", "fashion_mnist", True),
    ("fashion_mnist", "FashionMNIST/raw", False),
])
def test_idx_readers_in_every_layout(tmp_path, name, folder, gz):
    arrays = write_idx_set(tmp_path / folder, np.random.default_rng(2), gz=gz)
    ds = load_dataset(name, tmp_path)
    assert ds.train_x.shape == (5, 1, 28, 28) and ds.test_x.shape == (3, 1, 28, 28)
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert_standardised(ds, arrays["train-images-idx3-ubyte"][:, None], arrays["t10k-images-idx3-ubyte"][:, None])
    assert ds.num_classes == 10 and not ds.augment
    assert ds.source == str(tmp_path / folder)


@pytest.mark.parametrize("stem", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_idx_wrong_magic_is_a_bench_error(tmp_path, stem):
    folder = tmp_path / "mnist"
    write_idx_set(folder, np.random.default_rng(3))
    raw = (folder / stem).read_bytes()
    (folder / stem).write_bytes(struct.pack(">I", 0x0802) + raw[4:])  # label magic <-> image magic mixed up
    with pytest.raises(BenchError, match=stem):
        load_dataset("mnist", tmp_path)


def test_idx_truncated_data_is_a_bench_error(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_set(folder, np.random.default_rng(4))
    raw = (folder / "train-images-idx3-ubyte").read_bytes()
    (folder / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(BenchError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)


def test_digits_split_is_fixed_by_seed_zero():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", "unused-root")
    assert ds.train_x.shape == (1437, 1, 8, 8) and ds.test_x.shape == (360, 1, 8, 8)
    assert ds.source == "sklearn.datasets.load_digits" and not ds.augment and ds.num_classes == 10
    # The documented split: a permutation from a generator seeded 0, the last 360 samples are the test set.
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(0)).numpy()
    train, test = perm[:-360], perm[-360:]
    raw = load_digits()
    assert ds.train_y.tolist() == raw.target[train].tolist() and ds.test_y.tolist() == raw.target[test].tolist()
    assert_standardised(ds, raw.images[train][:, None], raw.images[test][:, None])


# ---------------------------------------------------------------------------------------------------------
# Errors: missing files, unknown names, data root.


@pytest.mark.parametrize("name, expected_path", [
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"),
    ("mnist", "mnist"),
    ("fashion_mnist", "fashion_mnist"),
])
def test_missing_data_is_a_one_line_error_naming_the_path(tmp_path, name, expected_path):
    for call in (check_available, load_dataset):
        with pytest.raises(BenchError) as err:
            call(name, tmp_path)
        msg = str(err.value)
        assert "\n" not in msg
        assert str(tmp_path / expected_path) in msg
        assert f"python -m bench download {name} --data-root {tmp_path}" in msg


def test_missing_cifar_batch_is_named(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(5))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(BenchError) as err:
        check_available("cifar10", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"missing {tmp_path / 'cifar-10-batches-py' / 'data_batch_3'};" in msg


def test_missing_idx_file_is_named(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", np.random.default_rng(6), gz=True)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(BenchError, match=r"missing t10k-labels-idx1-ubyte \(raw or \.gz\)"):
        check_available("mnist", tmp_path)


def test_available_data_passes_the_check(tmp_path):
    write_idx_set(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(7))
    check_available("fashion_mnist", tmp_path)
    check_available("digits", tmp_path / "does-not-exist")


@pytest.mark.parametrize("call", [check_available, load_dataset, download])
def test_unknown_name_lists_the_valid_ones(tmp_path, call):
    with pytest.raises(BenchError) as err:
        call("svhn", tmp_path)
    msg = str(err.value)
    assert "'svhn'" in msg and all(name in msg for name in DATASETS)


def test_resolve_data_root_prefers_flag_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv(data.DATA_ENV)
    assert resolve_data_root(None) == resolve_data_root("./data")
    assert str(resolve_data_root(None)) == "data"


# ---------------------------------------------------------------------------------------------------------
# Download without torchvision.


def test_download_without_torchvision_is_a_bench_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` raise ImportError
    with pytest.raises(BenchError) as err:
        download("cifar10", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg


def test_download_with_broken_torchvision_is_a_bench_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name.split(".")[0] == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken_import)
    with pytest.raises(BenchError, match="nms does not exist") as err:
        download("mnist", tmp_path)
    assert str(tmp_path / "mnist") in str(err.value) and "train-images-idx3-ubyte" in str(err.value)


def _fake_torchvision(monkeypatch, **classes):
    module = types.ModuleType("torchvision")
    module.datasets = types.SimpleNamespace(**classes)
    monkeypatch.setitem(sys.modules, "torchvision", module)


def test_download_failure_is_a_one_line_bench_error(tmp_path, monkeypatch):
    def no_network(root, train, download):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz:\nConnection refused")

    _fake_torchvision(monkeypatch, CIFAR10=no_network)
    with pytest.raises(BenchError) as err:
        download("cifar10", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "Connection refused" in msg and str(tmp_path / "cifar-10-batches-py") in msg


def test_download_uses_torchvision_layout(tmp_path, monkeypatch):
    calls = []

    def fake_fashion_mnist(root, train, download):
        calls.append((root, train, download))
        if not (tmp_path / "FashionMNIST" / "raw").exists():
            write_idx_set(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(8), gz=True)

    _fake_torchvision(monkeypatch, FashionMNIST=fake_fashion_mnist)
    download("fashion_mnist", tmp_path)
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert load_dataset("fashion_mnist", tmp_path).train_x.shape == (5, 1, 28, 28)


# ---------------------------------------------------------------------------------------------------------
# Batches.


def make_dataset(n=32, c=3, hw=8, augment=False):
    """Sample i has label i and an image whose values are all distinct, so a sample is identifiable."""
    x = torch.randn(n, c, hw, hw, generator=torch.Generator().manual_seed(9))
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32) + 100  # an unmistakable tag per sample
    y = torch.arange(n)
    return Dataset("synthetic", x, y, x[: n // 2].clone(), y[: n // 2].clone(), num_classes=n, augment=augment,
                   source="test")


def test_batches_are_deterministic_in_seed_and_step():
    ds = make_dataset(augment=True)
    a, b = BatchStream(ds, 8, seed=3), BatchStream(ds, 8, seed=3)
    later = b.batch(9)  # a resumed run asks for a later step first
    for step in (0, 5, 9):
        xa, ya = a.batch(step)
        xb, yb = b.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(a.batch(9)[0], later[0])
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])
    assert not torch.equal(a.batch(0)[1], BatchStream(ds, 8, seed=4).batch(0)[1])


def test_an_epoch_is_a_permutation_of_the_training_set():
    ds = make_dataset(n=32)
    stream = BatchStream(ds, 8, seed=0)
    assert stream.steps_per_epoch == 4
    epochs = [torch.cat([stream.batch(e * 4 + i)[1] for i in range(4)]) for e in range(2)]
    for labels in epochs:
        assert sorted(labels.tolist()) == list(range(32))
    assert not torch.equal(epochs[0], epochs[1])  # a fresh permutation each epoch
    x, y = stream.batch(0)
    assert torch.equal(x, ds.train_x[y])  # images stay paired with their labels, unaugmented


def test_last_partial_batch_is_dropped():
    stream = BatchStream(make_dataset(n=10), 3, seed=0)
    assert stream.steps_per_epoch == 3
    labels = torch.cat([stream.batch(i)[1] for i in range(3)])
    assert len(set(labels.tolist())) == 9
    assert all(len(stream.batch(i)[1]) == 3 for i in range(6))


def test_crop_and_flip_exact():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    centre, no = torch.full((2,), 4), torch.zeros(2, dtype=torch.bool)
    assert torch.equal(crop_and_flip(x, centre, centre, no), x)
    assert torch.equal(crop_and_flip(x, centre, centre, ~no), x.flip(-1))
    corner = crop_and_flip(x, torch.tensor([0, 8]), torch.tensor([0, 8]), torch.tensor([False, True]))
    assert corner.shape == x.shape
    assert torch.equal(corner[0, :, 4:, 4:], x[0, :, :1, :1]) and corner[0, :, :4].abs().sum() == 0
    # bottom-right crop of sample 1 holds only the image's bottom-right pixel, at (0, 0); mirrored it moves to (0, 4)
    assert torch.equal(corner[1, :, 0, 4], x[1, :, 4, 4])
    assert corner[1, :, 1:].abs().sum() == 0 and corner[1, :, :, :4].abs().sum() == 0


def test_augmented_batch_is_a_crop_and_flip_of_the_plain_batch():
    plain_ds, aug_ds = make_dataset(hw=8), make_dataset(hw=8, augment=True)
    plain, aug = BatchStream(plain_ds, 16, seed=1), BatchStream(aug_ds, 16, seed=1)
    params_per_step = []
    for step in range(2):
        xp, yp = plain.batch(step)
        xa, ya = aug.batch(step)
        assert torch.equal(yp, ya) and xa.shape == xp.shape == (16, 3, 8, 8)
        params = []
        for img, ref in zip(xa, xp):
            matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                       if torch.equal(img, crop_and_flip(ref[None], torch.tensor([dy]), torch.tensor([dx]),
                                                         torch.tensor([f]))[0])]
            assert len(matches) == 1
            params.append(matches[0])
        params_per_step.append(params)
    all_params = params_per_step[0] + params_per_step[1]
    assert {f for _, _, f in all_params} == {False, True} and len({p[:2] for p in all_params}) > 5
    assert params_per_step[0] != params_per_step[1]  # fresh crops and flips each step


def test_batches_live_on_the_requested_device():
    stream = BatchStream(make_dataset(augment=True), 4, seed=0, device="meta")
    x, y = stream.batch(0)
    assert x.device.type == y.device.type == "meta" and x.shape == (4, 3, 8, 8)


def test_bad_batch_size_is_a_bench_error():
    with pytest.raises(BenchError, match="batch size 33"):
        BatchStream(make_dataset(n=32), 33, seed=0)


def test_eval_batches_in_order_with_limit():
    ds = make_dataset(n=32)
    batches = list(eval_batches(ds, 5, "cpu", limit=12))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), ds.test_x[:12])
    assert torch.equal(torch.cat([y for _, y in batches]), ds.test_y[:12])
    train = list(eval_batches(ds, 10, "cpu", split="train"))
    assert torch.equal(torch.cat([y for _, y in train]), ds.train_y)
    with pytest.raises(BenchError, match="split"):
        next(eval_batches(ds, 5, "cpu", split="val"))
