"""Data-parallel backprop (DistributedDataParallel): the honest baseline the paper never ran.

On real workers every one of the K workers holds the whole network, takes 1/K of the batch and
all-reduces the gradients (PyTorch's DistributedDataParallel), so each update is one synchronous
SGD step on the whole batch. In process that is plain backprop, which is this rule. One difference
stays: DDP's BatchNorm normalises each worker's B/K samples (PyTorch's default, no SyncBatchNorm),
in process BatchNorm sees the whole batch.
"""
from __future__ import annotations

from .registry import register_method
from .base import Backend, Look
from .bp import Backprop


@register_method("ddp")
class DataParallel(Backprop):
    description = "data-parallel backprop (DDP on K workers; plain backprop in process)"
    backend = Backend.DATA_PARALLEL
    look = Look("DDP", "#666666", 70, suffix="K")
