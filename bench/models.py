"""The paper's networks as ordered lists of units, ready to be cut into layer groups.

A *unit* is the smallest piece a split may cut at: the stem, one residual block, or one dense
layer. The classifier is the last unit and always rides with the last group. Each unit records
how many weight layers it holds, which is what the paper's split rule balances.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import BenchError

# Blocks per stage of the bottleneck ResNets (He et al. 2016). ResNet-182 is the paper's
# "ten more bottleneck blocks in conv4 than ResNet-152" ([3, 8, 36, 3] -> [3, 8, 46, 3]).
RESNET_STAGES = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnet182": (3, 8, 46, 3),
}
MLP_WIDTHS = (300, 150)  # Table III: dense 300-150-10 with ReLU
# Character-level LSTMs (Table V): layers -> units per layer at the paper profile.
LSTM_UNITS = {"lstm2": 950, "lstm3": 750, "lstm4": 600}
# Pre-activation bottleneck ResNets (bench/preact_resnet.py), the network ResIST decomposes.
PREACT_MODELS = ("preact_resnet50", "preact_resnet101")
MODELS = tuple(RESNET_STAGES) + ("mlp",) + tuple(LSTM_UNITS) + PREACT_MODELS
IMAGE_MODELS = tuple(m for m in MODELS if m not in LSTM_UNITS)  # stateless: for methods that run a step twice


@dataclass
class UnitModel:
    """A network as consecutive units; running them in order is the full forward pass."""

    name: str
    family: str  # "resnet", "resnet_imagenet", "mlp" or "lstm": decides the shape of critics, exits and synthesizers
    units: nn.ModuleList
    unit_names: list[str]
    unit_layers: list[int]  # weight layers per unit (convs and dense layers)
    width: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x

    @property
    def depth(self) -> int:
        return sum(self.unit_layers)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), projection shortcut where the shape changes."""

    expansion = 4

    def __init__(self, in_ch: int, mid_ch: int, stride: int):
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def bottleneck_units(block: type[nn.Module], stages: tuple[int, ...], in_ch: int, width: float
                     ) -> tuple[list[nn.Module], list[str], list[int], int]:
    """One unit per bottleneck block of `stages` (blocks per stage), widths 64-128-256-512 x width, stride 2
    at the start of every stage but the first: (units, names conv{stage}_{block}, weight layers, out channels)."""
    units, names, layers = [], [], []
    for stage, blocks in enumerate(stages):
        mid = _channels(64 * 2**stage, width)
        for b in range(blocks):
            units.append(block(in_ch, mid, 2 if stage > 0 and b == 0 else 1))
            in_ch = mid * block.expansion
            names.append(f"conv{stage + 2}_{b + 1}")
            layers.append(3)
    return units, names, layers, in_ch


STEMS = ("cifar", "imagenet")
IMAGENET_STEM_MIN_SIZE = 64  # build_model's default: inputs this large get the ImageNet stem


def resnet(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0, stem: str = "cifar") -> UnitModel:
    """Bottleneck ResNet; widths 64-128-256-512 x width. Stem "cifar": 3x3 conv, no max-pool; stem
    "imagenet": 7x7/2 conv + 3x3/2 max-pool (He et al. 2016), and the ImageNet critic shape."""
    if stem not in STEMS:
        raise BenchError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
    stages = RESNET_STAGES[name]
    stem_ch = _channels(64, width)
    if stem == "imagenet":
        units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 7, stride=2, padding=3, bias=False),
                               nn.BatchNorm2d(stem_ch), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, stride=2, padding=1))]
    else:
        units = [nn.Sequential(nn.Conv2d(in_channels, stem_ch, 3, padding=1, bias=False),
                               nn.BatchNorm2d(stem_ch), nn.ReLU(inplace=True))]
    blocks, block_names, block_layers, in_ch = bottleneck_units(Bottleneck, stages, stem_ch, width)
    units += blocks
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)))
    names, layers = ["stem"] + block_names + ["fc"], [1] + block_layers + [1]
    family = "resnet_imagenet" if stem == "imagenet" else "resnet"
    return UnitModel(name, family, nn.ModuleList(units), names, layers, width)


def mlp(num_classes: int, in_features: int) -> UnitModel:
    """Table III's dense 300-150-10 network with ReLU; the input is flattened in the first unit."""
    units, names = [], []
    prev = in_features
    for i, w in enumerate(MLP_WIDTHS):
        first = [nn.Flatten()] if i == 0 else []
        units.append(nn.Sequential(*first, nn.Linear(prev, w), nn.ReLU(inplace=True)))
        names.append(f"dense{i + 1}")
        prev = w
    units.append(nn.Linear(prev, num_classes))
    names.append("fc")
    return UnitModel("mlp", "mlp", nn.ModuleList(units), names, [1] * len(units), 1.0)


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], width: float = 1.0,
                stem: str | None = None, hidden: int | None = None) -> UnitModel:
    """Build a model by name; unknown names raise a one-line BenchError listing the valid ones.
    A ResNet's stem defaults to "imagenet" for inputs of IMAGENET_STEM_MIN_SIZE pixels or more, else "cifar".
    An LSTM (lstm2/3/4) has `hidden` units per layer (default: the paper's 950/750/600); num_classes is
    the vocabulary and input_shape (bptt,)."""
    if name in LSTM_UNITS:
        return lstm(int(name[4:]), num_classes, hidden or LSTM_UNITS[name])
    if name in RESNET_STAGES:
        if stem is None:
            stem = "imagenet" if min(input_shape[1:]) >= IMAGENET_STEM_MIN_SIZE else "cifar"
        return resnet(name, num_classes, input_shape[0], width, stem)
    if name in PREACT_MODELS:
        from .preact_resnet import preact_resnet
        if stem is None:
            stem = "imagenet" if min(input_shape[1:]) >= IMAGENET_STEM_MIN_SIZE else "cifar"
        return preact_resnet(name, num_classes, input_shape[0], width, stem)
    if name == "mlp":
        c, h, w = input_shape
        return mlp(num_classes, c * h * w)
    raise BenchError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")


# ---------------------------------------------------------------------------------------------------
# Character-level LSTMs (Section V-B2): embedding 128, L LSTM layers, a linear decoder per time step.

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
    """Every LSTMLayer inside the given modules (or stages: anything with .modules() -> dict)."""
    found: list[LSTMLayer] = []
    for m in modules:
        mods = m.modules().values() if not isinstance(m, nn.Module) else [m]
        for mod in mods:
            found += [x for x in mod.modules() if isinstance(x, LSTMLayer) and x not in found]
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
