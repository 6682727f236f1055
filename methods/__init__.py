"""Training methods, one file each, behind two rule classes (methods.base) and a registry (methods.registry).

    from methods import create_method, list_methods, load_plugins
    cls = create_method("lct")             # unknown name -> BenchError listing the valid ones
    load_plugins(["my_methods.py"])        # a user's @register_method classes join the registry
"""
from __future__ import annotations

# Importing a method's module registers it: an explicit list, no scanning.
from . import admm, asyncbp, auxnet, auxvar, blockadmm, bp, ddp, dni, gpipe, greedy, infopro, joint, lct, localsgd, resist  # noqa: F401
from .base import Backend, Feedback, GroupContext, GroupRule, Hyper, Look, Method, Option, WholeStepRule
from .registry import create_method, list_methods, load_plugin, load_plugins, register_method

__all__ = ["Backend", "Feedback", "GroupContext", "GroupRule", "Hyper", "Look", "Method", "Option",
           "WholeStepRule", "create_method", "list_methods", "load_plugin", "load_plugins", "register_method"]
