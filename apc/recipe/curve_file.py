"""Per-batch heating curves and production plans (see ``docs/heating_curves.md``).

A curve file holds ``name`` (optional; default the file's stem) and ``curve`` (exactly a recipe's
``curve:`` section). It is validated as the recipe's own curve is: the same converter, the signals it
names known to the recipe, melt powers within the heating MV's engineering high limit, and ramps the
model can follow at that limit. A production plan lists ``batches``: ``batch_id``, ``lot``,
``curve`` (a curve file, relative to the plan; absent: the recipe's curve) and ``charge_kg``
(recorded). Every problem is a :class:`~apc.recipe.errors.RecipeError` naming file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import MappingNode, Node

from apc.recipe.curve_schema import CurveSection, check_against_model
from apc.recipe.errors import Problem, RecipeError
from apc.recipe.loader import Converter, _compose, _line
from apc.recipe.schema import Recipe

__all__ = ["PlanEntry", "load_curve_file", "load_plan"]


@dataclass(frozen=True)
class PlanEntry:
    """One batch of a production plan."""

    batch_id: str
    lot: str
    curve: str | None = None
    """Curve file (relative to the plan); None: the recipe's curve."""
    charge_kg: float | None = None

    def __post_init__(self) -> None:
        if not self.batch_id.strip():
            raise ValueError("batch_id must not be empty")
        if self.charge_kg is not None and not self.charge_kg > 0:
            raise ValueError("charge_kg must be > 0")


@dataclass(frozen=True)
class _PlanFile:
    batches: tuple[PlanEntry, ...]


@dataclass(frozen=True)
class _CurveFile:
    curve: CurveSection
    name: str | None = None


def _root(path: Path) -> Node:
    problems: list[Problem] = []
    _, root = _compose(path, problems)
    if root is None:
        raise RecipeError(problems)
    return root


def load_curve_file(path: Path, recipe: Recipe, known: frozenset[str] | None = None) -> tuple[str, CurveSection]:
    """(name, curve) of a curve file, validated against ``recipe`` (``known``: the signal names the
    recipe may use; None: not checked). Raises :class:`RecipeError`."""
    root = _root(path)
    conv = Converter(str(path))
    value = conv.convert(_CurveFile, root, "")
    if conv.problems or not isinstance(value, _CurveFile):
        raise RecipeError(conv.problems)
    curve = value.curve
    line = _line(next(v for k, v in root.value if k.value == "curve")) if isinstance(root, MappingNode) else 1
    problems = [Problem(str(path), line, "curve", f"'{n}' is not a signal this recipe knows")
                for n in sorted(curve.signal_names() - known)] if known is not None else []
    problems += [Problem(str(path), line, "curve.segments", m) for m in _physical(curve, recipe)]
    if problems:
        raise RecipeError(problems)
    return value.name or path.stem, curve


def _physical(curve: CurveSection, recipe: Recipe) -> list[str]:
    from sim.models import get_model

    heat = [n for n, mv in recipe.io.mvs.items() if mv.model_input.endswith("_kW") and n in recipe.limits]
    if not heat:
        return []
    top_kW = recipe.limits[heat[0]].engineering[1]
    out = [f"segments[{k}].power_kW {s.power_kW:g} kW exceeds the engineering high limit of {heat[0]} ({top_kW:g} kW)"
           for k, s in enumerate(curve.segments) if s.power_kW is not None and s.power_kW > top_kW]
    model = get_model(recipe.model.name)
    out += check_against_model(curve, model, recipe.model.parameters, top_kW,
                               power_input=recipe.io.mvs[heat[0]].model_input)
    return out


def load_plan(path: Path, recipe: Recipe, known: frozenset[str] | None = None
              ) -> list[tuple[PlanEntry, tuple[str, CurveSection] | None]]:
    """The plan's batches with their validated curves (None: the recipe's). Raises :class:`RecipeError`."""
    root = _root(path)
    conv = Converter(str(path))
    value = conv.convert(_PlanFile, root, "")
    if conv.problems or not isinstance(value, _PlanFile):
        raise RecipeError(conv.problems)
    seen: set[str] = set()
    out: list[tuple[PlanEntry, tuple[str, CurveSection] | None]] = []
    problems: list[Problem] = []
    for i, entry in enumerate(value.batches):
        if entry.batch_id in seen:
            problems.append(Problem(str(path), None, f"batches[{i}].batch_id", f"{entry.batch_id!r} is planned twice"))
        seen.add(entry.batch_id)
        curve = None
        if entry.curve is not None:
            try:
                curve = load_curve_file(path.parent / entry.curve, recipe, known)
            except RecipeError as exc:
                problems.extend(exc.problems)
                continue
        out.append((entry, curve))
    if problems:
        raise RecipeError(problems)
    return out
