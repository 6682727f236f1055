"""Heads of the local-learning methods that followed DNI, as their authors built them: DGL's auxiliary
network (Belilovsky, Eickenberg & Oyallon 2020) and InfoPro's decoder and auxiliary head (Wang et al.,
ICLR 2021), for convolutional feature maps (C, H, W).

- `dgl_aux`: DGL's "MLP-SR" auxiliary net (eugenium/DGL, `auxillary_classifier2` with nlin=3, mlp=3, the
  default of its ImageNet and auxiliary-network code): average-pool to a quarter of the side, three 1x1
  conv-BN-ReLU at C channels, average-pool to 2x2, then three dense-BN-ReLU layers of 4C and a dense layer
  to the classes.
- `InfoProDecoder`: bilinear upsampling (align_corners) of h to the image's size, 3x3 conv to 12 channels,
  BN, ReLU, 3x3 conv to the image's channels, sigmoid (InfoPro-Pytorch, networks/auxiliary_nets.py,
  `Decoder`); its binary cross-entropy against the image in [0, 1] is the reconstruction term.
- `infopro_head`: their "1c2f" auxiliary net (`AuxClassifier`): one 3x3 conv-BN-ReLU, global average
  pooling, dense-ReLU-dense. The authors' conv doubles the channels with stride 2 on the 16- and 32-channel
  maps of ResNet-32/110 (32x32 and 16x16 pixels) and keeps 64 channels at stride 1 on the last 8x8 maps;
  written for any network, it doubles and halves wherever the map is larger than 8x8. Its output is
  `out` wide: the contrastive features (128) or the class logits.
Widths that follow the network (DGL's C, InfoPro's conv) come from the feature map, so they scale with
`--width`; InfoPro's 128 hidden features scale with it like the LCT critic's 128 filters; the decoder's 12
channels serve the image and stay.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INFOPRO_HIDDEN = 128      # the authors' aux_net_feature_dim
INFOPRO_DECODER = 12      # the decoder's hidden channels (12 x aux_net_widen, widen 1)
INFOPRO_SAME_SIZE = 8     # maps this small keep their channels and size in the head's conv


class _Pool(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, self.size)


def dgl_aux(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """DGL's MLP-SR auxiliary network on a (C, H, W) map."""
    c, h, _ = in_shape
    convs = [m for _ in range(3) for m in (nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))]
    dense = [m for _ in range(3) for m in (nn.Linear(4 * c, 4 * c), nn.BatchNorm1d(4 * c), nn.ReLU(inplace=True))]
    return nn.Sequential(_Pool(math.ceil(h / 4)), *convs, _Pool(2), nn.Flatten(), *dense, nn.Linear(4 * c, num_classes))


def infopro_head(in_shape: tuple[int, ...], out: int, width: float = 1.0) -> nn.Module:
    """InfoPro's 1c2f auxiliary net: conv-BN-ReLU, pool, dense-ReLU-dense to `out` features."""
    c, h, w = in_shape
    shrink = min(h, w) > INFOPRO_SAME_SIZE
    mid, hidden = 2 * c if shrink else c, max(1, round(INFOPRO_HIDDEN * width))
    return nn.Sequential(nn.Conv2d(c, mid, 3, stride=2 if shrink else 1, padding=1, bias=False), nn.BatchNorm2d(mid),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(mid, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


class InfoProDecoder(nn.Module):
    """Reconstructs the (C, H, W) image from a feature map; forward returns the reconstruction's BCE."""

    def __init__(self, in_channels: int, image_shape: tuple[int, ...]):
        super().__init__()
        self.size = tuple(image_shape[1:])
        self.layers = nn.Sequential(nn.Conv2d(in_channels, INFOPRO_DECODER, 3, padding=1),
                                    nn.BatchNorm2d(INFOPRO_DECODER), nn.ReLU(),
                                    nn.Conv2d(INFOPRO_DECODER, image_shape[0], 3, padding=1), nn.Sigmoid())

    def forward(self, h: torch.Tensor, image01: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(h, size=self.size, mode="bilinear", align_corners=True)
        return F.binary_cross_entropy(self.layers(up), image01)


def supervised_contrastive(features: torch.Tensor, y: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Khosla et al.'s supervised contrastive loss with one view, as InfoPro computes it (SupConLoss,
    base temperature = temperature): z = normalise(features); for anchor i, minus the mean over the other
    samples p of its class of log softmax_{a != i}(z_i . z_a / t) at p; an anchor alone in its class counts 0;
    the mean over anchors."""
    z = F.normalize(features, dim=1)
    logits = z @ z.T / temperature
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~eye
    mean_pos = log_prob.masked_fill(~positive, 0).sum(1) / positive.sum(1).clamp(min=1)
    return -mean_pos.mean()
