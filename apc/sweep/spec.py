"""The sweep spec file (``apc sweep SPEC.yaml``): which runs, and how to compare them.

Example::

    recipe: ../recipes/nd_cell_6ka.yaml      # relative to this file
    variants:                                # named sets of recipe overrides (PATH: VALUE)
      shipped: {}
      narrow_band: {controller.mpc.bath_temp_band_degC: [1046, 1049]}
    reference: shipped                       # wins are counted against this variant
    controllers: [baseline, mpc]             # default: the recipe's
    scenarios: [nominal]                     # default: the unit kind's
    seeds: [41, 42, 43, 44, 45]
    hours: [24]                              # default: the kind's (a cell: the scenario's)
    compare: {bath_temp_std_degC: lower, oxide_in_band_pct: higher}
    rank_by: bath_temp_std_degC              # best and worst run, whose trends the report draws

Every run is the product variant × controller × scenario × seed × hours. Each variant is loaded
with its overrides when the spec is read, so a bad override stops the sweep before any run, with
the spec's file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from yaml.nodes import MappingNode, ScalarNode

from apc.kinds import kind_of
from apc.recipe.errors import Problem, RecipeError
from apc.recipe.loader import Converter
from apc.recipe.overrides import Override
from apc.sweep.spec_common import compose_spec, kpi_problem, load_variant, overrides_of, take_section

__all__ = ["SweepFields", "SweepSpec", "load_sweep_spec"]

Direction = Literal["lower", "higher"]


@dataclass(frozen=True)
class SweepFields:
    """The spec's plain fields (``variants`` is read separately: its values are YAML of any type)."""

    recipe: str
    seeds: tuple[int, ...]
    reference: str | None = None
    controllers: tuple[Literal["baseline", "mpc"], ...] = ()
    scenarios: tuple[str, ...] = ()
    hours: tuple[float, ...] = ()
    compare: dict[str, Direction] = field(default_factory=dict)
    rank_by: str | None = None

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds lists a seed twice")
        if any(h <= 0 for h in self.hours):
            raise ValueError("hours must be positive")


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep: the recipe file, its variants and the runs' other dimensions."""

    path: Path
    recipe_path: Path
    variants: dict[str, tuple[Override, ...]]
    reference: str
    controllers: tuple[str | None, ...]
    scenarios: tuple[str | None, ...]
    seeds: tuple[int, ...]
    hours: tuple[float | None, ...]
    compare: dict[str, Direction]
    rank_by: str
    kpi_names: tuple[str, ...]

    @property
    def n_runs(self) -> int:
        """How many runs the sweep makes."""
        return (len(self.variants) * len(self.controllers) * len(self.scenarios) * len(self.seeds)
                * len(self.hours))


def _line_of(root: object, key: str) -> int:
    if isinstance(root, MappingNode):
        for k, _ in root.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return int(k.start_mark.line) + 1
    return 1


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec (and every variant of its recipe); raises :class:`RecipeError`."""
    path = Path(path)
    root = compose_spec(path)
    conv = Converter(str(path))
    vkey, vnode = take_section(root, "variants")
    variants: dict[str, tuple[Override, ...]] = {}
    if vnode is None:
        conv.problem(conv.line(root), "variants", "required field is missing (e.g. variants: {shipped: {}})")
    elif not isinstance(vnode, MappingNode):
        conv.problem(conv.line(vnode), "variants", "expected a mapping of variant names to overrides")
    else:
        for name, _, node in conv.pairs(vnode, "variants"):
            variants[name] = overrides_of(conv, node, f"variants.{name}")
        if not variants:
            conv.problem(conv.line(vnode), "variants", "name at least one variant")
    values = conv.fields(SweepFields, root, "")
    fields_ = None if values is None or conv.problems else conv.build(SweepFields, root, "", values)
    if fields_ is None or conv.problems:
        raise RecipeError(sorted(conv.problems, key=lambda p: p.line or 0))
    recipe_path = (path.parent / fields_.recipe).resolve()
    if not recipe_path.is_file():
        raise RecipeError([Problem(str(path), _line_of(root, "recipe"), "recipe",
                                   f"recipe file not found: {recipe_path}")])
    problems: list[Problem] = []
    kpis: tuple[str, ...] = ()
    for overrides in variants.values():
        try:
            loaded = load_variant(recipe_path, overrides)
            kpis = tuple(kind_of(loaded.recipe).kpi_labels)
        except RecipeError as exc:
            problems.extend(exc.problems)
    if problems:
        raise RecipeError(problems)
    reference = fields_.reference if fields_.reference is not None else next(iter(variants))
    if reference not in variants:
        conv.problem(_line_of(root, "reference"), "reference",
                     f"no variant named '{reference}'; variants: {', '.join(variants)}")
    for name in fields_.compare:
        if name not in kpis:
            kpi_problem(conv, _line_of(root, "compare"), f"compare.{name}", name, kpis)
    rank_by = fields_.rank_by or next(iter(fields_.compare), None)
    if rank_by is None:
        conv.problem(conv.line(root), "compare", "name at least one KPI to compare (e.g. bath_temp_std_degC: lower)")
    elif rank_by not in fields_.compare:
        conv.problem(_line_of(root, "rank_by"), "rank_by", f"'{rank_by}' is not one of the compare KPIs "
                     "(its direction says which run is best)")
    if conv.problems:
        raise RecipeError(conv.problems)
    assert rank_by is not None and vkey is not None
    return SweepSpec(path, recipe_path, variants, reference, tuple(fields_.controllers) or (None,),
                     tuple(fields_.scenarios) or (None,), fields_.seeds, tuple(fields_.hours) or (None,),
                     dict(fields_.compare), rank_by, kpis)
