"""A method's own curve for the run record: per-boundary values averaged over windows of steps."""
from __future__ import annotations

import torch


class BoundaryCurve:
    """Mean of one value per boundary over every `every` steps, e.g. the constraint residual ||z_k - f_k(z_{k-1})||.
    Values stay on the device until a window closes (one read per window, not per step)."""

    def __init__(self, every: int):
        self.every = every
        self.steps: list[int] = []
        self.points: list[list[float]] = []  # one list per window: the mean of each boundary
        self._sum: torch.Tensor | None = None
        self._n = 0

    def add(self, step: int, values: list[torch.Tensor]) -> None:
        v = torch.stack([t.detach().float() for t in values])
        self._sum = v if self._sum is None else self._sum + v
        self._n += 1
        if (step + 1) % self.every == 0:
            self.steps.append(step + 1)
            self.points.append([float(m) for m in (self._sum / self._n).cpu()])
            self._sum, self._n = None, 0

    def record(self) -> dict:
        """{"every", "step", "per_boundary"}: per_boundary[j] is the window ending at step[j], one value per boundary."""
        return {"every": self.every, "step": list(self.steps), "per_boundary": [list(p) for p in self.points]}
