"""Training methods, one file each, behind one interface (methods.base.Stage) and a registry.

    from methods import create_method, list_methods
    stage_cls = create_method("lct")     # unknown name -> BenchError listing the valid ones
"""
from __future__ import annotations

import importlib
from typing import Callable, TypeVar

from bench.errors import BenchError

from .base import Hyper, Stage, StageContext

_REGISTRY: dict[str, type[Stage]] = {}
S = TypeVar("S", bound=type[Stage])


def register_method(name: str) -> Callable[[S], S]:
    """Class decorator: make a Stage subclass available under `name`."""

    def add(cls: S) -> S:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def create_method(name: str) -> type[Stage]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BenchError(f"unknown method {name!r}; valid methods: {', '.join(list_methods())}") from None


# Importing a method's module registers it: an explicit list, one module a line, no scanning.
_METHOD_MODULES = (
    "bp",
    "ddp",
    "dni",
    "gpipe",
    "joint",
    "lct",
    "greedy",
    "admm",
    "resist",
    "localsgd",
    "auxvar",
)
for _module in _METHOD_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Hyper", "Stage", "StageContext", "create_method", "list_methods", "register_method"]
