"""Data sets by name: a small registry. One module per family declares its data sets (bench.data.spec):

- images.py:   digits (scikit-learn's 8x8, offline), mnist, fashion_mnist, cifar10, cifar100, in memory;
- imagenet.py: imagenet / imagenet64, an ImageFolder tree streamed from disk;
- text.py:     ptb, enwik8 and pytext (the standard library's help text), character level;
- synthetic.py: synthetic_cifar, synthetic_mnist, synthetic_imagenet64: random inputs and labels generated
                in memory, for speed and memory measurements only (nothing to learn).

    ds = load_dataset("cifar10", resolve_data_root(None))   # one-line error naming missing files
    x, y = ds.stream(128, seed=0, device="cpu").batch(step)  # deterministic in (seed, step)
    for x, y in ds.eval_batches(500, "cpu", limit=None): ...
"""
from __future__ import annotations

import os
from pathlib import Path

from bench.errors import BenchError

from . import imagenet, images, synthetic, text
from .spec import DataSpec

DATA_ENV = "LCTBENCH_DATA"
REGISTRY: dict[str, DataSpec] = {s.name: s for family in (images, imagenet, text, synthetic) for s in family.SPECS}
DATASETS: tuple[str, ...] = tuple(REGISTRY)


def spec(name: str) -> DataSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BenchError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def resolve_data_root(flag: str | os.PathLike | None) -> Path:
    """The data root: `flag` if given, else $LCTBENCH_DATA, else ./data."""
    if flag is not None and str(flag) != "":
        return Path(flag).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path("data")


def check_available(name: str, root: Path) -> None:
    """Raise a one-line BenchError naming the missing files and how to get them; reads no data."""
    spec(name).check(Path(root))


def load_dataset(name: str, root: Path):
    s = spec(name)
    s.check(Path(root))
    return s.load(Path(root))


def download(name: str, root: Path) -> None:
    s = spec(name)
    if s.download is not None:  # digits and pytext ship with the libraries
        s.download(Path(root))


def stream(ds, batch_size: int, seed: int, device="cpu"):
    """Training batches of any data set: .batch(step) -> (x, y), deterministic in (seed, step)."""
    return ds.stream(batch_size, seed, device)


def eval_batches(ds, batch_size: int, device, split: str = "test", limit: int | None = None):
    if batch_size < 1:
        raise BenchError(f"batch size must be at least 1, got {batch_size}")
    return ds.eval_batches(batch_size, device, split, limit)


BatchStream = images.BatchStream
Dataset = images.Dataset
crop_and_flip = images.crop_and_flip

__all__ = ["DATASETS", "DATA_ENV", "BatchStream", "DataSpec", "Dataset", "check_available", "crop_and_flip",
           "download", "eval_batches", "load_dataset", "resolve_data_root", "spec", "stream"]
