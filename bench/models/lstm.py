"""Character-level LSTMs (Section V-B2, Table V): embedding 128, L LSTM layers, a linear decoder per time step."""
from __future__ import annotations

import torch
from torch import nn

from bench.errors import BenchError

from .unit import UnitModel

# layers -> the paper's units per layer
LSTM_UNITS = {"lstm2": 950, "lstm3": 750, "lstm4": 600}

EMBED = 128  # the paper's embedding size (all profiles)


class LSTMLayer(nn.Module):
    """One LSTM layer (the first also embeds the characters) that carries (h, c) from call to call.

    Truncated BPTT: each call starts from the state the previous call ended with, detached, so the
    gradient stops at the segment boundary while the state flows on. Training and evaluation keep
    separate states (picked by `self.training`), so evaluating never disturbs the training state.
    The training state is part of the state dict (extra state), so checkpoints resume exactly.
    """

    def __init__(self, in_size: int, hidden: int, vocab: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab, in_size) if vocab is not None else None
        self.lstm = nn.LSTM(in_size, hidden, batch_first=True)
        self.states: dict[bool, tuple[torch.Tensor, torch.Tensor] | None] = {True: None, False: None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x.long())  # (B, T) character ids (a float shape probe of zeros becomes id 0)
        state = self.states[self.training]
        if state is not None and state[0].shape[1] != x.shape[0]:
            if self.training:
                raise BenchError(f"the LSTM carries a state for {state[0].shape[1]} sequences but got a batch of "
                                 f"{x.shape[0]}: methods that cut the batch (gpipe micro-batches) do not apply to "
                                 f"stateful LSTMs")
            state = None  # evaluation / shape probes: a new batch size starts from zeros
        out, (h, c) = self.lstm(x, state)
        self.states[self.training] = (h.detach(), c.detach())
        return out

    def reset_state(self, training: bool | None = None) -> None:
        """Zero the state of one mode (None: both); the next call starts from zeros."""
        for mode in (True, False) if training is None else (training,):
            self.states[mode] = None

    def get_extra_state(self) -> torch.Tensor:
        """The training state as one tensor, (h, c) stacked, or an empty one before the first call."""
        state = self.states[True]
        return torch.empty(0) if state is None else torch.stack(state)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.states[True] = None if state.numel() == 0 else (state[0], state[1])


def lstm(layers: int, vocab: int, hidden: int, embed: int = EMBED) -> UnitModel:
    """Units: [embedding + LSTM 1], [LSTM 2], ..., [LSTM L], [linear decoder to the vocabulary].
    The decoder is its own unit, like the CNNs' classifier, and always rides with the last group, so
    K = L groups put one LSTM layer in each group (a critic between every pair of layers)."""
    units = [LSTMLayer(embed, hidden, vocab)] + [LSTMLayer(hidden, hidden) for _ in range(layers - 1)]
    units.append(nn.Linear(hidden, vocab))
    names = [f"lstm{i + 1}" for i in range(layers)] + ["decoder"]
    return UnitModel(f"lstm{layers}", "lstm", nn.ModuleList(units), names, [1] * (layers + 1), 1.0)


def recurrent_layers(modules) -> list[LSTMLayer]:
    """Every LSTMLayer inside the given modules, once each, in order."""
    found: list[LSTMLayer] = []
    for m in modules:
        found += [x for x in m.modules() if isinstance(x, LSTMLayer) and x not in found]
    return found


def _lstm_flops(input, weight0, weight1, *args, out_shape=None, **kwargs) -> int:
    """Matmul FLOPs of one LSTM layer (2 per multiply-add): input (T, B, I), weights (4H, I) and (4H, H)."""
    steps, batch = input[0], input[1]
    return 2 * steps * batch * (weight0[0] * weight0[1] + weight1[0] * weight1[1])


def _register_lstm_flops() -> None:
    """torch's FlopCounterMode has no formula for the fused CPU LSTM kernel (it counts 0): add one, so
    unit_flops / Table X count the LSTM layers."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    op = getattr(torch.ops.aten, "mkldnn_rnn_layer", None)
    if op is not None and op not in flop_registry and op.default not in flop_registry:
        register_flop_formula(op)(_lstm_flops)


_register_lstm_flops()
