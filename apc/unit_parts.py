"""A recipe's estimator and controller, built the same way wherever a unit computes: in the
runtime's own process (offline simulation, tests) or in a compute worker.

The one place besides the assemblies that knows which concrete estimator and controller a recipe
asks for; furnace controllers read the batch's curve preview from ``preview_source`` (the batch
itself in the runtime's process, a :class:`~apc.compute.PreviewHolder` in a worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from apc.compute import InlineCompute, Parts, PreviewHolder, UnitCompute
from apc.curve_preview import CurvePreview
from apc.recipe.loader import LoadedRecipe


@dataclass(frozen=True)
class PartsSpec:
    """What a compute worker needs to build a unit's parts (picklable)."""

    unit: str
    recipe_path: str
    recipe_sha256: str
    controller_kind: str | None = None
    """``None``: the recipe's."""
    real_time: bool = True


def build_parts(loaded: LoadedRecipe, controller_kind: str | None = None, *, real_time: bool = False,
                preview_source: Callable[[], CurvePreview] | None = None) -> Parts:
    """The estimator and controller ``loaded`` asks for (``controller_kind`` overrides the recipe's).

    A furnace without ``preview_source`` gets a :class:`PreviewHolder` (set from each request)."""
    from apc.assembly import build_controller, build_estimator
    from apc.furnace_assembly import build_furnace_controller, build_furnace_estimator

    recipe = loaded.recipe
    kind = controller_kind or recipe.controller.kind
    if recipe.is_furnace:
        holder = PreviewHolder() if preview_source is None else None
        source = preview_source if preview_source is not None else holder
        assert source is not None
        return Parts(build_furnace_estimator(recipe, kind),
                     build_furnace_controller(recipe, kind, source, real_time=real_time), holder)
    return Parts(build_estimator(recipe, loaded.path.parent, kind),
                 build_controller(recipe, kind, real_time=real_time))  # type: ignore[arg-type]


ComputeFactory = Callable[[str, LoadedRecipe, "str | None", bool, "Callable[[], CurvePreview] | None"], UnitCompute]
"""``factory(unit, loaded, controller_kind, real_time, preview_source)``: where a unit's parts run."""


def inline_compute(unit: str, loaded: LoadedRecipe, controller_kind: str | None, real_time: bool,
                   preview_source: Callable[[], CurvePreview] | None) -> UnitCompute:
    """Parts built and run in this process (offline simulation, tests, ``apc run --compute-workers 0``)."""
    def build(new: LoadedRecipe) -> Parts:
        return build_parts(new, controller_kind, real_time=real_time, preview_source=preview_source)

    return InlineCompute(build(loaded), build, loaded)
