"""Synthetic image data sets, generated in memory: for speed and memory measurements only.

- ``synthetic_cifar``:      3x32x32, 10 classes, 10,000 train / 1,000 test, augmented like CIFAR;
- ``synthetic_mnist``:      1x28x28, 10 classes, 10,000 train / 1,000 test, not augmented, like MNIST;
- ``synthetic_imagenet64``: 3x64x64, 1000 classes, 2,048 train / 512 test (fewer: a 64 px image is 4x
  a CIFAR one), augmented with the in-memory crop and flip.

Inputs are N(0, 1) (already what a standardised data set looks like) and labels are drawn uniformly
at random, independently of the inputs: *nothing is learnable*, test accuracy stays at chance, and a
synthetic run's accuracy means nothing. What the data sets give is a paper-shaped batch on any machine
without a download, so that step time, throughput and memory can be measured (`python -m bench
overhead`, `python -m bench gpu-check`). They are generated from a fixed seed, the same on every
machine and for every run seed, and are ordinary in-memory data sets (bench.data.images.Dataset):
the same batch stream, augmentation and evaluation batches as CIFAR-10.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .images import Dataset
from .spec import DataSpec

SOURCE = "synthetic inputs: speed and memory only"  # what every table that shows the data set says


@dataclass(frozen=True)
class _Shape:
    input_shape: tuple[int, int, int]
    num_classes: int
    train: int
    test: int
    augment: bool
    seed: int  # fixed per data set, never the run's seed: every run sees the same data


SHAPES = {
    "synthetic_cifar": _Shape((3, 32, 32), 10, 10_000, 1_000, augment=True, seed=1032),
    "synthetic_mnist": _Shape((1, 28, 28), 10, 10_000, 1_000, augment=False, seed=1028),
    "synthetic_imagenet64": _Shape((3, 64, 64), 1000, 2_048, 512, augment=True, seed=1064),
}


def load(name: str) -> Dataset:
    """The data set, generated on the CPU from its fixed seed (bit-identical everywhere)."""
    s = SHAPES[name]
    g = torch.Generator().manual_seed(s.seed)
    train_x = torch.randn((s.train, *s.input_shape), generator=g)
    test_x = torch.randn((s.test, *s.input_shape), generator=g)
    # labels independent of the inputs: there is nothing to learn
    train_y = torch.randint(0, s.num_classes, (s.train,), generator=g)
    test_y = torch.randint(0, s.num_classes, (s.test,), generator=g)
    return Dataset(name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                   num_classes=s.num_classes, augment=s.augment, source=SOURCE)


SPECS = [DataSpec(name, "image", check=lambda root: None, load=lambda root, n=name: load(n), download=None,
                  input_shape=s.input_shape, num_classes=s.num_classes, files=f"(none: {SOURCE})")
         for name, s in SHAPES.items()]
