"""A recipe's estimator and controller, built the same way wherever a unit computes: in the
runtime's own process (offline simulation, tests) or in a compute worker.

The recipe's unit kind builds them (:meth:`apc.kinds.UnitKind.build_parts`); controllers of kinds
with a batch read its curve preview from ``preview_source`` (the batch itself in the runtime's
process, a :class:`~apc.compute.PreviewHolder` in a worker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apc.compute import InlineCompute, Parts, UnitCompute
from apc.curve_preview import CurvePreview
from apc.kinds import kind_of
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

    A unit with a batch but without ``preview_source`` gets a :class:`~apc.compute.PreviewHolder`
    (set from each request)."""
    return kind_of(loaded.recipe).build_parts(loaded, controller_kind, real_time=real_time,
                                              preview_source=preview_source)


ComputeFactory = Callable[[str, LoadedRecipe, "str | None", bool, "Callable[[], CurvePreview] | None"], UnitCompute]
"""``factory(unit, loaded, controller_kind, real_time, preview_source)``: where a unit's parts run."""


def inline_compute(unit: str, loaded: LoadedRecipe, controller_kind: str | None, real_time: bool,
                   preview_source: Callable[[], CurvePreview] | None) -> UnitCompute:
    """Parts built and run in this process (offline simulation, tests, ``apc run --compute-workers 0``)."""
    def build(new: LoadedRecipe) -> Parts:
        return build_parts(new, controller_kind, real_time=real_time, preview_source=preview_source)

    return InlineCompute(build(loaded), build, loaded)
