"""What an executor reports for one phase of training steps (bench.train.loop)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Phase:
    steps: int                  # steps trained (fewer than asked where the loss diverged)
    seconds: float              # training time of the phase (the slowest worker's, on real workers)
    loss_sum: float             # sum of the main loss over the phase's steps (every worker's, averaged)
    diverged: str | None = None  # "loss nan at step 12" where a loss was not finite
