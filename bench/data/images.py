"""Image data sets held in memory as standardised tensors: digits, MNIST, Fashion-MNIST, CIFAR-10/100;
deterministic training batches and evaluation batches.

The readers parse the on-disk formats themselves (CIFAR python pickles, MNIST IDX files) so that no
torchvision is needed to run a benchmark; torchvision is imported only by `download`.
"""

from __future__ import annotations

import gzip
import pickle
import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError

from .spec import DataSpec

CROP_PAD = 4  # CIFAR augmentation: random crop of the image zero-padded by this many pixels per side


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int
    archive: str  # the "python version" tarball that unpacks into `folder`
    torchvision_class: str


@dataclass(frozen=True)
class _IdxLayout:
    folder: str  # <root>/<folder>/ for files placed by hand
    torchvision_folder: str  # <root>/<torchvision_folder>/raw/ is where torchvision downloads to
    torchvision_class: str


_CIFAR = {
    "cifar10": _CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        b"labels", 10, "cifar-10-python.tar.gz", "CIFAR10"),
    "cifar100": _CifarLayout(
        "cifar-100-python", ("train",), ("test",), b"fine_labels", 100, "cifar-100-python.tar.gz", "CIFAR100"),
}
_IDX = {
    "mnist": _IdxLayout("mnist", "MNIST", "MNIST"),
    "fashion_mnist": _IdxLayout("fashion_mnist", "FashionMNIST", "FashionMNIST"),
}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

_DIGITS_TEST_SIZE = 360
_DIGITS_SOURCE = "sklearn.datasets.load_digits"


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # float32 (N, C, H, W), standardised per channel with the train mean/std
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor  # float32, standardised with the train statistics
    test_y: torch.Tensor
    num_classes: int
    augment: bool  # random crop + horizontal flip during training (CIFAR)
    source: str  # where the data was read from
    _pinned: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # split -> pinned copy

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)

    def stream(self, batch_size: int, seed: int, device="cpu") -> "BatchStream":
        return BatchStream(self, batch_size, seed, device)

    def eval_batches(self, batch_size: int, device, split: str = "test", limit: int | None = None):
        """(x, y) over the test (or train) split in order, without augmentation; `limit` caps the samples."""
        if split not in ("test", "train"):
            raise BenchError(f"unknown split {split!r}; choose 'test' or 'train'")
        x, y = (self.test_x, self.test_y) if split == "test" else (self.train_x, self.train_y)
        device = torch.device(device)
        if device.type == "cuda":  # pinned once, so that every batch is copied without waiting
            if split not in self._pinned:
                self._pinned[split] = (x.pin_memory(), y.pin_memory())
            x, y = self._pinned[split]
        n = len(y) if limit is None else min(len(y), limit)
        for start in range(0, n, batch_size):
            end = min(start + batch_size, n)
            yield to_device(x[start:end], device), to_device(y[start:end], device)


# ---------------------------------------------------------------------------------------------------------
# Availability: cheap checks on file names only, so a run fails before any expensive setup.


def _download_hint(name: str, root: Path, copy: Path) -> str:
    return (f"or run `python -m bench download {name} --data-root {shlex.quote(str(root))}` "
            f"on a machine with internet and torchvision and copy {copy} here")


def _find_idx(root: Path, layout: _IdxLayout, stem: str) -> Path | None:
    """The IDX file `stem`, raw or gzipped, in the hand-placed folder or torchvision's raw/ folder."""
    for folder in (root / layout.folder, root / layout.torchvision_folder / "raw"):
        for path in (folder / stem, folder / f"{stem}.gz"):
            if path.is_file():
                return path
    return None


def _check_cifar(name: str, root: Path) -> None:
    layout = _CIFAR[name]
    folder = Path(root) / layout.folder
    expected = layout.train_files + layout.test_files
    missing = [f for f in expected if not (folder / f).is_file()]
    if not missing:
        return
    what = f"folder {folder}" if not folder.is_dir() else ", ".join(str(folder / f) for f in missing)
    raise BenchError(
        f"{name} data not found: missing {what}; put the files {', '.join(expected)} "
        f"(from {layout.archive}) in {folder}, {_download_hint(name, root, folder)}")


def _check_idx(name: str, root: Path) -> None:
    layout, root = _IDX[name], Path(root)
    missing = [stem for stem in _IDX_FILES if _find_idx(root, layout, stem) is None]
    if not missing:
        return
    hand, tv = root / layout.folder, root / layout.torchvision_folder / "raw"
    raise BenchError(
        f"{name} data not found: missing {', '.join(missing)} (raw or .gz) in {hand} or {tv}; "
        f"put the four IDX files in {hand}, {_download_hint(name, root, root / layout.torchvision_folder)}")


# ---------------------------------------------------------------------------------------------------------
# Readers: each returns uint8/float arrays shaped (N, C, H, W) and int64 labels.


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# What a CIFAR batch may contain beyond builtin containers, bytes, strings and numbers: numpy arrays (the
# python-2 pickles of the original archive reconstruct them through these). Nothing else is loaded, so a
# crafted file in a shared data folder cannot run code.
_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
                  ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and builtin data)")


def _read_cifar_pickle(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise BenchError(f"cannot read CIFAR batch {path}: {_one_line(err)}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise BenchError(f"cannot read CIFAR batch {path}: data shape {data.shape} with {len(labels)} labels, "
                         f"expected (N, 3072) with N labels")
    # Each row is the red, green, then blue 32x32 plane, row-major: reshaping gives CHW directly.
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar(root: Path, layout: _CifarLayout):
    folder = root / layout.folder
    train = [_read_cifar_pickle(folder / f, layout.label_key) for f in layout.train_files]
    test = [_read_cifar_pickle(folder / f, layout.label_key) for f in layout.test_files]
    train_x, train_y = (np.concatenate(parts) for parts in zip(*train))
    test_x, test_y = (np.concatenate(parts) for parts in zip(*test))
    return train_x, train_y, test_x, test_y, str(folder)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes: 4-byte big-endian magic (type 0x08, ndim), ndim big-endian sizes, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise BenchError(f"cannot read IDX file {path}: {_one_line(err)}") from None
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != magic:
        found = raw[:4].hex() if len(raw) >= 4 else "a truncated header"
        raise BenchError(f"{path} is not an IDX file of the expected kind: magic {found}, expected {magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BenchError(f"{path} is truncated: the IDX header needs {header} bytes, the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise BenchError(f"{path} holds {len(raw) - header} data bytes, its header {dims} says {int(np.prod(dims))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_split(root: Path, layout: _IdxLayout, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find_idx(root, layout, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(root, layout, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise BenchError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    return images[:, None], labels  # add the channel axis


def _read_mnist_like(root: Path, layout: _IdxLayout):
    train_x, train_y = _read_idx_split(root, layout, "train")
    test_x, test_y = _read_idx_split(root, layout, "t10k")
    source = str(_find_idx(root, layout, "train-images-idx3-ubyte").parent)
    return train_x, train_y, test_x, test_y, source


def _read_digits():
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    y = digits.target.astype(np.int64)
    # The split is fixed (seed 0), independent of the run seed, so every run tests on the same 360 images.
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).numpy()
    train, test = perm[:-_DIGITS_TEST_SIZE], perm[-_DIGITS_TEST_SIZE:]
    return x[train], y[train], x[test], y[test], _DIGITS_SOURCE


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the training set's statistics (also applied to the test set)."""
    train_x = torch.from_numpy(train.astype(np.float32))  # astype copies, also out of read-only IDX buffers
    test_x = torch.from_numpy(test.astype(np.float32))
    var, mean = torch.var_mean(train_x, dim=(0, 2, 3), correction=0, keepdim=True)
    std = var.sqrt().clamp_min(1e-6)  # a constant channel would otherwise divide by zero
    return train_x.sub_(mean).div_(std), test_x.sub_(mean).div_(std)


def _dataset(name: str, arrays, num_classes: int, augment: bool) -> Dataset:
    train_x, train_y, test_x, test_y, source = arrays
    for labels in (train_y, test_y):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise BenchError(f"{name} labels in {source} fall outside 0..{num_classes - 1}")
    train_x, test_x = _standardise(train_x, test_x)
    return Dataset(name=name, train_x=train_x, train_y=torch.from_numpy(train_y), test_x=test_x,
                   test_y=torch.from_numpy(test_y), num_classes=num_classes, augment=augment, source=source)


def _load_cifar(name: str, root: Path) -> Dataset:
    layout = _CIFAR[name]
    return _dataset(name, _read_cifar(Path(root), layout), layout.num_classes, augment=True)


def _load_idx(name: str, root: Path) -> Dataset:
    return _dataset(name, _read_mnist_like(Path(root), _IDX[name]), 10, augment=False)


# ---------------------------------------------------------------------------------------------------------
# Download: the only place torchvision is used; it writes the layout the readers above expect.


def _download(name: str, root: Path) -> None:
    root = Path(root)
    if name in _CIFAR:
        layout = _CIFAR[name]
        manual = (f"put the files {', '.join(layout.train_files + layout.test_files)} "
                  f"(from {layout.archive}) in {root / layout.folder}")
    else:
        layout = _IDX[name]
        manual = f"put {', '.join(_IDX_FILES)} (raw or .gz) in {root / layout.folder}"
    try:
        import torchvision
    except Exception as err:  # a CPU-only box fails with RuntimeError "operator torchvision::nms does not exist"
        raise BenchError(f"cannot download {name}: torchvision is unusable here ({_one_line(err)}); "
                         f"install it on a machine with internet, or {manual}") from None
    try:
        dataset_class = getattr(torchvision.datasets, layout.torchvision_class)
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            dataset_class(root=str(root), train=train, download=True)
    except Exception as err:
        raise BenchError(f"download of {name} into {root} failed ({_one_line(err)}); {manual}") from None
    (_check_cifar if name in _CIFAR else _check_idx)(name, root)


# ---------------------------------------------------------------------------------------------------------
# Batches.


def derived_seed(seed: int, stream: int, counter: int) -> int:
    """A well-mixed 64-bit seed for (seed, stream, counter): nearby inputs give unrelated generators."""
    return int(np.random.SeedSequence((seed, stream, counter)).generate_state(1, dtype=np.uint64)[0])


PERMUTATION_STREAM, AUGMENT_STREAM = 0, 1


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`. To a GPU through pinned memory and without waiting: a copy from pageable
    memory first waits for every kernel queued so far, so drawing the next batch would stall the GPU's queue.
    (The pinned buffer is not reused before the copy is done: torch's pinned allocator records it.)"""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def crop_and_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
                  pad: int = CROP_PAD) -> torch.Tensor:
    """Crop each image of x (B, C, H, W), zero-padded by `pad`, at offset (dy, dx) in 0..2*pad, then mirror it
    horizontally where `flip` is True. One gather over the whole batch, on x's device."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H) rows of the padded image to take
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # mirroring = reading the crop's columns backwards
    batch_idx = torch.arange(b, device=x.device)[:, None, None, None]
    chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


class BatchStream:
    """Training batches on a device, deterministic in (seed, step), so a resumed run sees the same batches.

    The training set is moved to the device once; each batch is gathered and augmented there. Only the random
    numbers (the epoch's permutation, a step's crops and flips) are drawn on the CPU, so the batches do not
    depend on the device either, and copied over without waiting (`to_device`)."""

    def __init__(self, ds: Dataset, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        n = len(ds.train_y)
        if not 0 < batch_size <= n:
            raise BenchError(f"batch size {batch_size} must be between 1 and the {n} training samples of {ds.name}")
        self.ds = ds
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.steps_per_epoch = n // batch_size  # drop the last partial batch
        self._x = ds.train_x.to(self.device)  # moved once; batches are gathered on the device
        self._y = ds.train_y.to(self.device)
        self._epoch: int | None = None
        self._perm: torch.Tensor | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:  # consecutive steps share an epoch: draw its permutation once
            g = torch.Generator().manual_seed(derived_seed(self.seed, PERMUTATION_STREAM, epoch))
            self._perm = to_device(torch.randperm(len(self._y), generator=g), self.device)
            self._epoch = epoch
        return self._perm

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, i = divmod(step, self.steps_per_epoch)
        idx = self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        x, y = self._x[idx], self._y[idx]
        if self.ds.augment:
            g = torch.Generator().manual_seed(derived_seed(self.seed, AUGMENT_STREAM, step))
            offsets = to_device(torch.randint(0, 2 * CROP_PAD + 1, (2, len(idx)), generator=g), self.device)
            flip = to_device(torch.rand(len(idx), generator=g) < 0.5, self.device)
            x = crop_and_flip(x, offsets[0], offsets[1], flip)
        return x, y


def _spec(name: str, check, load, shape, classes, files) -> DataSpec:
    return DataSpec(name, "image", check=lambda root: check(name, root), load=lambda root: load(name, root),
                    download=lambda root: _download(name, root), input_shape=shape, num_classes=classes, files=files)


SPECS = [
    DataSpec("digits", "image", check=lambda root: None, load=lambda root: _dataset("digits", _read_digits(), 10, False),
             download=None, input_shape=(1, 8, 8), num_classes=10, files="(none: bundled with scikit-learn)"),
    _spec("mnist", _check_idx, _load_idx, (1, 28, 28), 10,
          "mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (or MNIST/raw/, torchvision's layout)"),
    _spec("fashion_mnist", _check_idx, _load_idx, (1, 28, 28), 10, "fashion_mnist/... (or FashionMNIST/raw/)"),
    _spec("cifar10", _check_cifar, _load_cifar, (3, 32, 32), 10, "cifar-10-batches-py/{data_batch_1..5,test_batch}"),
    _spec("cifar100", _check_cifar, _load_cifar, (3, 32, 32), 100, "cifar-100-python/{train,test}"),
]
