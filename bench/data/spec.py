"""What a data set declares to the registry (bench.data): its name, kind, shape, and three functions."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class DataSpec:
    name: str
    kind: str                                   # "image" (for the CNNs and the MLP) or "text" (the LSTMs)
    check: Callable[[Path], None]               # one-line BenchError naming the missing files; reads no data
    load: Callable[[Path], object]              # the data set: an object with .stream(...) and .eval_batches(...)
    download: Callable[[Path], None] | None     # fetch it into the root (needs internet)
    input_shape: tuple[int, ...] | None = None  # per-sample input (images); text: (bptt,), the run's
    num_classes: int | None = None              # classes, or the vocabulary; None where only the files tell
    files: str = ""                             # where the files go, under the data root (for the README / errors)
