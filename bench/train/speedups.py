"""The speed settings of a run that change no result but its speed (README: speed features):
channels_last memory, cudnn's kernel search, torch.compile of every group's body. `--precision` is the
Run's autocast (bench/train/build.py) and the rules' loss scaling (methods/amp.py).

    apply(cfg, trainer, stream, device) -> stream    # after the rules are built and on their device
"""
from __future__ import annotations

import sys

import torch
from torch import nn


class ChannelsLastStream:
    """A training stream whose image batches come in channels_last memory (the conv weights are too)."""

    def __init__(self, stream):
        self.inner = stream

    def batch(self, step: int):
        x, y = self.inner.batch(step)
        return (x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x), y

    def __getattr__(self, name):  # steps_per_epoch and the rest: the stream's own
        return getattr(self.inner, name)


def compile_guarded(module: nn.Module, name: str) -> None:
    """module's forward through torch.compile; where compiling or running the compiled graph fails (no C++
    compiler, an unsupported operation), one line on stderr and the eager forward from then on. The forward
    is replaced on the instance, so state_dict keys, checkpoints and DDP see the module as it was."""
    eager = module.forward
    try:
        compiled = torch.compile(eager)
    except Exception as e:  # torch.compile itself refused (e.g. an unsupported Python)
        _warn(name, e)
        return
    state = {"failed": False}

    def forward(*args, **kwargs):
        if state["failed"]:
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as e:
            state["failed"] = True
            _warn(name, e)
            return eager(*args, **kwargs)

    module.forward = forward


def _warn(name: str, e: BaseException) -> None:
    why = " ".join(str(e).split())[:200] or type(e).__name__
    print(f"warning: --compile: torch.compile failed on {name} ({type(e).__name__}: {why}); running it eagerly",
          file=sys.stderr, flush=True)


def apply(cfg, trainer, stream, device: torch.device):
    """cfg's speed settings on the built trainer's modules; returns the stream to train from."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
    if cfg.channels_last:
        for part in trainer.parts:
            for m in part.values():
                m.to(memory_format=torch.channels_last)  # 4-D weights only; the rest is left as it is
        stream = ChannelsLastStream(stream)
    if cfg.compile:
        for i, part in enumerate(trainer.parts):
            compile_guarded(part["body"], f"group {i + 1}")
    return stream
