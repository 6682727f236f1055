"""The paper's networks as ordered lists of units (bench.models.unit), by name.

    model = build_model("resnet50", num_classes=10, input_shape=(3, 32, 32), width=0.125)

Families: bottleneck ResNets and pre-activation ResNets (resnet.py), the CIFAR basic-block ResNet-32/110 of
DGL and InfoPro (cifar_resnet.py), the MLP (mlp.py), the character-level LSTMs (lstm.py); critics, exits,
synthesizers and local-learning heads (heads.py); cuts into groups (split.py).
"""
from __future__ import annotations

from torch import nn

from bench.errors import BenchError

from .cifar_resnet import BASIC_SECTIONS, cifar_resnet
from .lstm import LSTM_UNITS, LSTMLayer, lstm, recurrent_layers
from .mlp import MLP_WIDTHS, mlp
from .resnet import CLASSIFIERS, PREACT_MODELS, RESNET_SECTIONS, preact_resnet, resnet
from .unit import UnitModel

MODELS = tuple(RESNET_SECTIONS) + ("mlp",) + tuple(LSTM_UNITS) + PREACT_MODELS + tuple(BASIC_SECTIONS)
IMAGE_MODELS = tuple(m for m in MODELS if m not in LSTM_UNITS)  # stateless: for methods that run a step twice
IMAGENET_STEM_MIN_SIZE = 64  # inputs this large get the ImageNet stem


def is_lstm(model: str) -> bool:
    return model in LSTM_UNITS


def check_model(name: str) -> None:
    if name not in MODELS:
        raise BenchError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")


def set_bn_momentum(modules, momentum: float) -> None:
    """torch's BatchNorm momentum (1 - TensorFlow's decay) for every BatchNorm in `modules`."""
    for m in modules:
        for bn in m.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.momentum = momentum


def project_group_starts(model: UnitModel, bounds: list[int]) -> None:
    """The authors' networks build each layer group as its own block layer, whose first block has a
    projection shortcut even where the shape does not change (LCT_n1.py's conv4_11): give those blocks one."""
    for a in bounds[1:-1]:
        if hasattr(model.units[a], "project"):
            model.units[a].project()


def num_units(name: str) -> int:
    """How many units the model has (stem, blocks, classifier), without building it."""
    check_model(name)
    if name in LSTM_UNITS:
        return int(name[4:]) + 1
    if name == "mlp":
        return len(MLP_WIDTHS) + 1
    if name in BASIC_SECTIONS:
        return sum(BASIC_SECTIONS[name]) + 2
    return sum(RESNET_SECTIONS[name.removeprefix("preact_")]) + 2


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], width: float = 1.0,
                stem: str | None = None, hidden: int | None = None, classifier: str = "pool") -> UnitModel:
    """Build a model by name; unknown names raise a one-line BenchError listing the valid ones.
    A ResNet's stem defaults to "imagenet" for inputs of IMAGENET_STEM_MIN_SIZE pixels or more, else "cifar".
    An LSTM (lstm2/3/4) has `hidden` units per layer (default: the paper's 950/750/600); num_classes is
    the vocabulary and input_shape (bptt,)."""
    check_model(name)
    if name in LSTM_UNITS:
        return lstm(int(name[4:]), num_classes, hidden or LSTM_UNITS[name])
    if name == "mlp":
        c, h, w = input_shape
        return mlp(num_classes, c * h * w)
    if name in BASIC_SECTIONS:  # CIFAR networks: always their own 3x3 stem
        return cifar_resnet(name, num_classes, input_shape[0], width)
    if stem is None:
        stem = "imagenet" if min(input_shape[1:]) >= IMAGENET_STEM_MIN_SIZE else "cifar"
    build = preact_resnet if name in PREACT_MODELS else resnet
    return build(name, num_classes, input_shape[0], width, stem, classifier, min(input_shape[1:]))


__all__ = ["BASIC_SECTIONS", "CLASSIFIERS", "IMAGE_MODELS", "LSTM_UNITS", "LSTMLayer", "MLP_WIDTHS", "MODELS",
           "PREACT_MODELS", "RESNET_SECTIONS", "UnitModel", "build_model", "check_model", "is_lstm", "num_units",
           "project_group_starts", "recurrent_layers", "set_bn_momentum"]
