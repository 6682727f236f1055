"""The registry of training methods, and user plugins that add to it."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Callable, TypeVar

from bench.errors import BenchError

from .base import GroupRule, Method, WholeStepRule

_REGISTRY: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def _origin(cls: type) -> tuple[str, str]:
    try:
        source = str(Path(inspect.getfile(cls)).resolve())
    except (TypeError, OSError):
        source = cls.__module__
    return source, cls.__qualname__


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make a GroupRule or WholeStepRule subclass available under `name`."""

    def add(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, (GroupRule, WholeStepRule))):
            raise TypeError(f"register_method({name!r}): {cls!r} is not a GroupRule or WholeStepRule")
        old = _REGISTRY.get(name)
        if old is not None and _origin(old) != _origin(cls):  # the same file imported twice is no clash
            raise BenchError(f"method {name!r} registered twice ({old.__module__} and {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def create_method(name: str) -> type[Method]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BenchError(f"unknown method {name!r}; valid methods: {', '.join(list_methods())}") from None


def load_plugin(spec: str) -> None:
    """Import a user's module (an importable name, or a path to a .py file) so its methods register. A file's
    folder joins sys.path, as for a script, so that it can import the modules beside it."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise BenchError(f"--plugin {spec}: no such file")
        path = path.resolve()
        if any(getattr(m, "__file__", None) and Path(m.__file__).resolve() == path for m in list(sys.modules.values())):
            return  # already imported (e.g. the test module that defines the method)
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        name = f"lctbench_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        loader = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except BenchError:
            raise
        except Exception as e:
            del sys.modules[name]
            raise BenchError(f"--plugin {spec}: {type(e).__name__}: {e}") from None
        return
    try:
        importlib.import_module(spec)
    except ImportError as e:
        raise BenchError(f"--plugin {spec}: cannot import it ({e})") from None


def load_plugins(specs) -> None:
    for spec in specs or ():
        load_plugin(spec)
