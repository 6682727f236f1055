"""Small networks attached at a group boundary: local critics / early exits, and DNI synthesizers.

Shapes follow the paper: a CIFAR critic is one 3x3 conv (128 filters, scaled by the model's width)
with ReLU, then flatten and one fully-connected layer to the classes; an ImageNet critic is two conv +
ReLU and a 1-channel conv, then one fully-connected layer; an MLP critic is one dense
layer; an LSTM critic is one dense layer applied at every time step; a DNI module is three conv
(or dense; per time step for LSTMs) layers whose last layer starts at zero, so that the
first synthetic gradients are zero rather than noise (Jaderberg et al. 2017).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CRITIC_FILTERS = 128
TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated at +-2 (TensorFlow's correction)


def variance_scaling_(module: nn.Module) -> nn.Module:
    """TensorFlow 1's tf.variance_scaling_initializer() (the authors' critics): every conv and dense weight
    from a normal truncated at 2 std, std sqrt(1 / fan_in) after the truncation; every bias zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = (1.0 / fan_in) ** 0.5 / TRUNCATED_NORMAL_STD
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def critic(family: str, in_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> nn.Module:
    """Local critic c_i (also the early-exit head of `joint` and the auxiliary head of `greedy`). The
    convolutional critics follow the authors' code where the paper is silent (LC_block in resnet_model.py):
    no bias on the convolutions, the dense layer's bias starting at zero, variance-scaling weights."""
    if family == "resnet":
        c, h, w = in_shape
        filters = max(1, round(CRITIC_FILTERS * width))
        return variance_scaling_(nn.Sequential(nn.Conv2d(c, filters, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                               nn.Flatten(), nn.Linear(filters * h * w, num_classes)))
    if family == "resnet_imagenet":
        # The paper's ImageNet critic: two conv + ReLU, a 1-channel conv, then a dense layer to the classes
        # (kernel sizes and filters are not given: 3x3 convs with the CIFAR critic's filter count; the authors'
        # published code has no ImageNet script: initialised like their CIFAR critic).
        c, h, w = in_shape
        filters = max(1, round(CRITIC_FILTERS * width))
        return variance_scaling_(nn.Sequential(
            nn.Conv2d(c, filters, 3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(filters, 1, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(h * w, num_classes)))
    if family == "mlp":
        return nn.Linear(math.prod(in_shape), num_classes)
    if family == "lstm":  # the paper's RNN critic: one fully-connected layer at every time step
        return nn.Linear(in_shape[-1], num_classes)
    raise ValueError(f"no critic shape for model family {family!r}")


class Synthesizer(nn.Module):
    """Predicts dL/dh from h (and, for cDNI, the one-hot label); three layers, last one zero-initialised.
    Convolutional modules have CRITIC_FILTERS (scaled by the width) hidden filters like the critics, so DNI
    and LCT attach modules of comparable size (the paper's Table VI shows them using about the same memory);
    hidden layers as wide as the boundary would outweigh the network itself at 1024 channels."""

    def __init__(self, family: str, in_shape: tuple[int, ...], num_classes: int, condition: bool,
                 width: float = 1.0):
        super().__init__()
        self.family, self.num_classes, self.condition = family, num_classes, condition
        extra = num_classes if condition else 0
        if family in ("resnet", "resnet_imagenet"):
            c, hidden = in_shape[0], max(1, round(CRITIC_FILTERS * width))
            self.layers = nn.Sequential(
                nn.Conv2d(c + extra, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, c, 3, padding=1))
        elif family in ("mlp", "lstm"):  # lstm: per time step, on the last axis of (B, T, H)
            d = math.prod(in_shape) if family == "mlp" else in_shape[-1]
            hidden = max(d, 64)
            self.layers = nn.Sequential(nn.Linear(d + extra, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, d))
        else:
            raise ValueError(f"no synthesizer shape for model family {family!r}")
        last = self.layers[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.condition:
            onehot = F.one_hot(y, self.num_classes).to(h.dtype)
            if h.dim() == 4:
                onehot = onehot[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
            h = torch.cat([h, onehot], dim=-1 if self.family == "lstm" else 1)
        return self.layers(h)
