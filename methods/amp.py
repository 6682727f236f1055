"""Loss scaling for fp16 (`--precision fp16`): one torch.amp.GradScaler per optimiser.

fp16 gradients underflow; a GradScaler multiplies a loss by S before backward and divides the gradients by S
before the optimiser steps (skipping a step whose gradients overflowed, and adapting S). A rule owns one
`LossScaling` (built from Hyper.loss_scaling) and writes every update the same way whatever the precision:

    self.scaling.scale(loss, opt).backward()     # loss * S_opt (fp16), loss itself otherwise
    self.scaling.step(opt)                       # unscale, skip on inf/nan, step, adapt S_opt

One scaler per optimiser, because a rule's optimisers step at different times (LCT's group in its forward,
its critic when the feedback arrives, possibly steps later). Gradients that leave a group (the input
gradient sent back to the previous group) are unscaled first (`unscaled`): what crosses a boundary is the
true gradient in fp32, and the receiving group scales it with its own S. Disabled (fp32, bf16), every call
is the plain operation.
"""
from __future__ import annotations

import torch


class LossScaling:
    def __init__(self, device_type: str | None = None):
        """Scaling on `device_type` ("cuda", "cpu"); None: disabled."""
        self.device_type, self.enabled = device_type, device_type is not None
        self.scalers: dict[int, torch.amp.GradScaler] = {}
        self.used: dict[int, torch.Tensor] = {}  # the scale each optimiser's last scale() multiplied by

    def _scaler(self, opt: torch.optim.Optimizer) -> torch.amp.GradScaler:
        if id(opt) not in self.scalers:
            self.scalers[id(opt)] = torch.amp.GradScaler(self.device_type)
        return self.scalers[id(opt)]

    def scale(self, t: torch.Tensor, opt: torch.optim.Optimizer) -> torch.Tensor:
        """t (a loss, or a gradient to backpropagate) times opt's scale."""
        if not self.enabled:
            return t
        scaler = self._scaler(opt)
        out = scaler.scale(t)
        self.used[id(opt)] = scaler._scale.detach().clone()  # a device tensor: no host sync
        return out

    def unscaled(self, grad: torch.Tensor | None, opt: torch.optim.Optimizer) -> torch.Tensor | None:
        """A gradient computed from opt's scaled loss, as the true (fp32) gradient."""
        if not self.enabled or grad is None:
            return grad
        return grad.float() / self.used[id(opt)]

    def unscale_(self, opt: torch.optim.Optimizer) -> None:
        """opt's gradients divided by its scale now (before something reads them: a decay term, a clip)."""
        if self.enabled and self._has_grads(opt):
            self._scaler(opt).unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if not self.enabled:
            opt.step()
        elif self._has_grads(opt):  # GradScaler refuses an optimiser without gradients; nothing to do anyway
            scaler = self._scaler(opt)
            scaler.step(opt)
            scaler.update()

    @staticmethod
    def _has_grads(opt: torch.optim.Optimizer) -> bool:
        return any(p.grad is not None for g in opt.param_groups for p in g["params"])

    # --- checkpoints: by the optimisers' names in the rule (their ids change across processes) ----------------
    def state_dict(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
        return {name: self.scalers[id(o)].state_dict() for name, o in optimizers.items() if id(o) in self.scalers}

    def load_state_dict(self, optimizers: dict[str, torch.optim.Optimizer], state: dict) -> None:
        for name, saved in state.items():
            self._scaler(optimizers[name]).load_state_dict(saved)
