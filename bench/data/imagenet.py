"""ImageNet from an ImageFolder tree, streamed from disk (no torchvision, no copy of the data in memory).

Layout: <root>/imagenet/{train,val}/<class>/*.JPEG (any .jpeg/.jpg/.png, any case); the classes are
the sorted folder names of train/, and val/ uses the same names. Images are decoded with PIL (which
matplotlib already depends on) in a small thread pool, one batch ahead of the one asked for.

- ``imagenet``:   224x224 crops (the paper's setting),
- ``imagenet64``: the same images at 64x64, for the cpu and smoke profiles.
Training: shorter side resized to size*256/224, random size x size crop, random horizontal flip.
Test (val/): same resize, centre crop. Both standardised with the usual ImageNet channel mean/std.
Batches are deterministic in (seed, step), like `bench.data.BatchStream`, so a resumed run sees the
same batches.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.errors import BenchError

from .images import AUGMENT_STREAM, PERMUTATION_STREAM, derived_seed, to_device
from .spec import DataSpec

IMAGE_SIZES = {"imagenet": 224, "imagenet64": 64}
FOLDER = "imagenet"
EXTENSIONS = (".jpeg", ".jpg", ".png")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())


def check_available(name: str, root: Path) -> None:
    """Cheap: the train/ and val/ folders exist and train/ has class folders; one-line error otherwise."""
    base = Path(root) / FOLDER
    missing = [str(base / s) for s in ("train", "val") if not (base / s).is_dir()]
    if missing:
        raise BenchError(f"{name} data not found: missing {', '.join(missing)}; put the ImageNet ImageFolder tree "
                         f"there as {base}/{{train,val}}/<class>/*.JPEG (val/ sorted into class folders too)")
    if not any(p.is_dir() for p in (base / "train").iterdir()):
        raise BenchError(f"{name} data: {base / 'train'} has no class folders")


@dataclass
class ImageFolderData:
    """What a run needs to know about an on-disk ImageFolder data set; images stay on disk."""

    name: str
    classes: list[str]
    train: list[tuple[str, int]]  # (path, label)
    test: list[tuple[str, int]]
    image_size: int
    source: str
    augment: bool = True
    num_classes: int = field(init=False)

    def __post_init__(self):
        self.num_classes = len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def stream(self, batch_size: int, seed: int, device="cpu") -> "ImageFolderStream":
        return ImageFolderStream(self, batch_size, seed, device)

    def eval_batches(self, batch_size: int, device, split: str = "test", limit: int | None = None):
        return eval_batches(self, batch_size, device, split, limit)


def load(name: str, root: Path) -> ImageFolderData:
    check_available(name, root)
    base = Path(root) / FOLDER
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    train = [(str(p), i) for c, i in index.items() for p in _images(base / "train" / c)]
    test = []
    for d in sorted(p for p in (base / "val").iterdir() if p.is_dir()):
        if d.name not in index:
            raise BenchError(f"{name}: validation class {d.name!r} in {base / 'val'} is not a training class")
        test += [(str(p), index[d.name]) for p in _images(d)]
    if not train or not test:
        raise BenchError(f"{name}: no images found under {base / 'train'} or {base / 'val'} "
                         f"(extensions {', '.join(EXTENSIONS)})")
    return ImageFolderData(name, classes, train, test, IMAGE_SIZES[name], str(base))


def decode(path: str, size: int, crop: tuple[float, float] | None, flip: bool) -> np.ndarray:
    """One image as float32 CHW, standardised: shorter side -> size*256/224, then a size x size crop at the
    relative offset `crop` (None: centre), mirrored if `flip`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            short = round(size * 256 / 224)
            w, h = im.size
            scale = short / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            fx, fy = crop if crop is not None else (0.5, 0.5)
            left, top = round((w - size) * fx), round((h - size) * fy)
            im = im.crop((left, top, left + size, top + size))
            if flip:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            x = np.asarray(im, dtype=np.float32) / 255.0
    except OSError as e:
        raise BenchError(f"cannot read image {path}: {e}") from None
    x = (x - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class ImageFolderStream:
    """Training batches decoded from disk; same contract as BatchStream: batch(step) -> (x, y) on the device,
    deterministic in (seed, step). The next step's batch is decoded in the background."""

    def __init__(self, ds: ImageFolderData, batch_size: int, seed: int, device="cpu", workers: int | None = None):
        n = len(ds.train)
        if not 0 < batch_size <= n:
            raise BenchError(f"batch size {batch_size} must be between 1 and the {n} training images of {ds.name}")
        self.ds, self.batch_size, self.seed, self.device = ds, batch_size, seed, torch.device(device)
        self.steps_per_epoch = n // batch_size
        self._seed = lambda stream, counter: derived_seed(seed, stream, counter)
        self._streams = (PERMUTATION_STREAM, AUGMENT_STREAM)
        self._pool = ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1))  # decoding
        self._prefetch = ThreadPoolExecutor(max_workers=1)  # the next batch (its decodes go to _pool)
        self._lock = threading.Lock()
        self._epoch, self._perm = None, None
        self._ahead: tuple[int, Future] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:  # the prefetch thread and the caller may ask at once
            if epoch != self._epoch:
                g = torch.Generator().manual_seed(self._seed(self._streams[0], epoch))
                self._perm, self._epoch = torch.randperm(len(self.ds.train), generator=g).numpy(), epoch
            return self._perm

    def _load(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        idx = self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        g = torch.Generator().manual_seed(self._seed(self._streams[1], step))
        offsets = torch.rand(len(idx), 2, generator=g).tolist()
        flips = (torch.rand(len(idx), generator=g) < 0.5).tolist()
        size = self.ds.image_size
        items = [self.ds.train[j] for j in idx]
        xs = list(self._pool.map(lambda a: decode(a[0][0], size, tuple(a[1]), a[2]), zip(items, offsets, flips)))
        x, y = torch.from_numpy(np.stack(xs)), torch.tensor([y for _, y in items], dtype=torch.int64)
        if self.device.type == "cuda":  # pinned here, in the background, so that `batch` copies without waiting
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self._ahead is not None and self._ahead[0] == step:
            x, y = self._ahead[1].result()
        else:
            x, y = self._load(step)
        self._ahead = (step + 1, self._prefetch.submit(self._load, step + 1))
        return to_device(x, self.device), to_device(y, self.device)


def eval_batches(ds: ImageFolderData, batch_size: int, device, split: str = "test", limit: int | None = None):
    """(x, y) over val/ (or train/) in order, centre crops, no augmentation; `limit` caps the images."""
    items = ds.test if split == "test" else ds.train
    device = torch.device(device)
    n = len(items) if limit is None else min(len(items), limit)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, n, batch_size):
            chunk = items[start:min(start + batch_size, n)]
            xs = list(pool.map(lambda a: decode(a[0], ds.image_size, None, False), chunk))
            yield (to_device(torch.from_numpy(np.stack(xs)), device),
                   to_device(torch.tensor([y for _, y in chunk], dtype=torch.int64), device))


def _no_download(name: str, root: Path) -> None:
    raise BenchError(f"{name} cannot be downloaded automatically: put the ImageFolder tree in "
                     f"{Path(root) / FOLDER}/{{train,val}}/<class>/*.JPEG")


SPECS = [DataSpec(name, "image", check=lambda root, n=name: check_available(n, root),
                  load=lambda root, n=name: load(n, root), download=lambda root, n=name: _no_download(n, root),
                  input_shape=(3, size, size), num_classes=1000, files="imagenet/{train,val}/<class>/*.JPEG")
         for name, size in IMAGE_SIZES.items()]
