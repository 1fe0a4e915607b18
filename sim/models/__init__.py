"""Process models, each defined once in CasADi, looked up by name.

Every module of this package that defines ``MODEL_NAME`` and ``build() -> ProcessModel`` is a model;
adding one is adding its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from functools import cache, lru_cache

from sim.models.base import ProcessModel


@lru_cache(maxsize=1)
def _register() -> dict[str, Callable[[], ProcessModel]]:
    builders: dict[str, Callable[[], ProcessModel]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        name = getattr(module, "MODEL_NAME", None)
        if name is None:
            continue
        if name in builders:
            raise RuntimeError(f"two models named {name!r} in {__name__}")
        builders[name] = module.build
    return builders


@cache
def get_model(name: str) -> ProcessModel:
    """The process model registered under ``name`` (built once per process)."""
    builders = _register()
    if name not in builders:
        raise KeyError(f"unknown model {name!r}; known: {sorted(builders)}")
    return builders[name]()


def model_names() -> tuple[str, ...]:
    """Names of all registered models."""
    return tuple(sorted(_register()))
