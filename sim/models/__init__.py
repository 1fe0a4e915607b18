"""Process models, each defined once in CasADi, looked up by name."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from sim.models.base import ProcessModel



def _register() -> dict[str, Callable[[], ProcessModel]]:
    from sim.models import annealing_furnace, nd_cell, vim_furnace

    return {
        "nd_electrolysis_cell": nd_cell.build,
        "vim_furnace": vim_furnace.build,
        "annealing_furnace": annealing_furnace.build,
    }


@lru_cache(maxsize=None)
def get_model(name: str) -> ProcessModel:
    """The process model registered under ``name`` (built once per process)."""
    builders = _register()
    if name not in builders:
        raise KeyError(f"unknown model {name!r}; known: {sorted(builders)}")
    return builders[name]()


def model_names() -> tuple[str, ...]:
    """Names of all registered models."""
    return tuple(sorted(_register()))
