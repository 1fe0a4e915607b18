"""The search spec file (``apc tune SPEC.yaml``): which recipe parameters, over what, scored how.

Example::

    recipe: ../recipes/nd_cell_6ka.yaml
    controller: baseline
    scenario: nominal
    hours: 24
    train_seeds: [1, 2, 3]          # every trial runs on these
    holdout_seeds: [51, 52]         # the winner and the recipe as it is, once the search is done
    trials: 24
    batch: 2                        # trials asked of the sampler at a time (part of what makes it reproducible)
    sampler_seed: 0
    startup_trials: 10              # random trials before the TPE model guides the search
    objective:
      minimise: bath_temp_std_degC  # or maximise: ...; a KPI expression (apc.sweep.expr)
      constraints: ["anode_effects == 0", "oxide_in_band_pct >= 95"]
      penalty: 10                   # added per violated constraint per seed (subtracted when maximising)
    parameters:                     # recipe field path: a range or choices
      controller.baseline.underfeed_ratio: {range: [0.6, 0.8]}
      controller.baseline.resistance_deadband_uohm: {range: [4, 14]}      # two integers: an integer parameter
      estimator.filtered.slope_window_s: {choices: [1800, 2400]}
    fixed: {}                       # overrides of every run (conditions of the search, not in the diff)
    compare:                        # further named override sets run on the held-out seeds
      previous_tuning: {controller.baseline.slope_trigger_uohm_per_h: 16.0}
    show: [oxide_in_band_pct, energy_kWh_per_kg]   # further KPIs in the summary

Every parameter's bounds (or choices) are loaded into the recipe when the spec is read, so a value
the recipe refuses is reported with the spec's file and line before any run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from apc.kinds import kind_of
from apc.recipe.errors import Problem, RecipeError
from apc.recipe.loader import Converter
from apc.recipe.overrides import Override, parse_override
from apc.sweep.expr import KpiExpr, KpiExprError, parse_kpi_expr
from apc.sweep.spec_common import compose_spec, kpi_problem, load_variant, overrides_of, take_section, value_text

__all__ = ["Objective", "ObjectiveSection", "Parameter", "TuneFields", "TuneSpec", "load_tune_spec"]


@dataclass(frozen=True)
class ObjectiveSection:
    """What a trial scores: one KPI expression to minimise or maximise, constraints as penalties."""

    minimise: str | None = None
    maximise: str | None = None
    constraints: tuple[str, ...] = ()
    penalty: float = 10.0

    def __post_init__(self) -> None:
        if (self.minimise is None) == (self.maximise is None):
            raise ValueError("minimise or maximise: give exactly one of them")
        if self.penalty < 0:
            raise ValueError("penalty must be zero or more")


@dataclass(frozen=True)
class TuneFields:
    """The spec's plain fields (``parameters``, ``fixed`` and ``compare`` are read separately)."""

    recipe: str
    train_seeds: tuple[int, ...]
    holdout_seeds: tuple[int, ...]
    trials: int
    objective: ObjectiveSection
    controller: Literal["baseline", "mpc"] | None = None
    scenario: str | None = None
    hours: float | None = None
    batch: int = 1
    sampler_seed: int = 0
    startup_trials: int = 10
    """Trials sampled at random before the TPE model guides the search (Optuna's default: 10)."""
    show: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.train_seeds or not self.holdout_seeds:
            raise ValueError("train_seeds and holdout_seeds must each list a seed")
        if set(self.train_seeds) & set(self.holdout_seeds):
            raise ValueError("train_seeds and holdout_seeds share seeds: held-out seeds must be unseen")
        if self.trials < 1 or self.batch < 1 or self.startup_trials < 1:
            raise ValueError("trials, batch and startup_trials must be at least 1")
        if self.hours is not None and self.hours <= 0:
            raise ValueError("hours must be positive")


@dataclass(frozen=True)
class Parameter:
    """One searched recipe field: a range (``integer``: both bounds integers) or YAML ``choices``."""

    path: str
    low: float = math.nan
    high: float = math.nan
    integer: bool = False
    log: bool = False
    step: float | None = None
    digits: int = 4
    """Significant digits a float is rounded to before it is run (and written into the diff)."""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Objective:
    """The parsed objective."""

    expr: KpiExpr
    minimise: bool
    constraints: tuple[KpiExpr, ...]
    penalty: float


@dataclass(frozen=True)
class TuneSpec:
    """A checked search spec."""

    path: Path
    recipe_path: Path
    fields: TuneFields
    parameters: tuple[Parameter, ...]
    fixed: tuple[Override, ...]
    compare: dict[str, tuple[Override, ...]]
    objective: Objective
    show: tuple[str, ...]
    kpi_names: tuple[str, ...] = field(default=())

    @property
    def n_runs(self) -> int:
        """Runs of the search and of the held-out comparison."""
        f = self.fields
        return f.trials * len(f.train_seeds) + (2 + len(self.compare)) * len(f.holdout_seeds)


def _scalar_number(node: Node) -> float | None:
    if isinstance(node, ScalarNode) and node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        try:
            return float(node.value)
        except ValueError:
            return None
    return None


def _parameter(conv: Converter, path: str, node: Node, where: str) -> Parameter | None:
    if not isinstance(node, MappingNode):
        conv.problem(conv.line(node), where, "expected {range: [LOW, HIGH]} or {choices: [...]}")
        return None
    pairs = {k: v for k, _, v in conv.pairs(node, where)}
    unknown = set(pairs) - {"range", "choices", "log", "step", "digits"}
    for k in sorted(unknown):
        conv.problem(conv.line(pairs[k]), f"{where}.{k}", "unknown key (known: range, choices, log, step, digits)")
    if ("range" in pairs) == ("choices" in pairs):
        conv.problem(conv.line(node), where, "give either range: [LOW, HIGH] or choices: [...]")
        return None
    if "choices" in pairs:
        ch = pairs["choices"]
        if not isinstance(ch, SequenceNode) or not ch.value:
            conv.problem(conv.line(ch), f"{where}.choices", "expected a non-empty list of values")
            return None
        return Parameter(path, choices=tuple(value_text(c) for c in ch.value))
    rng = pairs["range"]
    bounds = [_scalar_number(n) for n in rng.value] if isinstance(rng, SequenceNode) else []
    if len(bounds) != 2 or any(b is None for b in bounds):
        conv.problem(conv.line(rng), f"{where}.range", "expected [LOW, HIGH], two numbers")
        return None
    low, high = float(bounds[0] or 0.0), float(bounds[1] or 0.0)
    if not low < high:
        conv.problem(conv.line(rng), f"{where}.range", "LOW must be below HIGH")
        return None
    assert isinstance(rng, SequenceNode)
    integer = all(isinstance(n, ScalarNode) and n.tag == "tag:yaml.org,2002:int" for n in rng.value)
    log = conv.convert(bool, pairs["log"], f"{where}.log") if "log" in pairs else False
    step = conv.convert(float, pairs["step"], f"{where}.step") if "step" in pairs else None
    digits = conv.convert(int, pairs["digits"], f"{where}.digits") if "digits" in pairs else 4
    if not isinstance(log, bool) or (step is not None and not isinstance(step, float)) or not isinstance(digits, int):
        return None
    return Parameter(path, low, high, integer, log, step, digits)


def _bound_texts(p: Parameter) -> list[str]:
    if p.choices:
        return list(p.choices)
    if p.integer:
        return [str(int(p.low)), str(int(p.high))]
    return [repr(p.low), repr(p.high)]


def load_tune_spec(path: str | Path) -> TuneSpec:
    """Read and check a search spec; raises :class:`RecipeError` with file, line and field."""
    path = Path(path)
    root = compose_spec(path)
    conv = Converter(str(path))
    sections = {k: take_section(root, k) for k in ("parameters", "fixed", "compare")}
    fixed = () if sections["fixed"][1] is None else overrides_of(conv, sections["fixed"][1], "fixed")
    compare: dict[str, tuple[Override, ...]] = {}
    cnode = sections["compare"][1]
    if isinstance(cnode, MappingNode):
        for name, _, node in conv.pairs(cnode, "compare"):
            compare[name] = overrides_of(conv, node, f"compare.{name}")
    elif cnode is not None:
        conv.problem(conv.line(cnode), "compare", "expected a mapping of names to overrides")
    params: list[tuple[Parameter, int]] = []
    pnode = sections["parameters"][1]
    if not isinstance(pnode, MappingNode) or not pnode.value:
        conv.problem(conv.line(pnode) if pnode is not None else 1, "parameters",
                     "name at least one recipe field to search, e.g. controller.baseline.underfeed_ratio: "
                     "{range: [0.6, 0.8]}")
    else:
        for name, key_node, node in conv.pairs(pnode, "parameters"):
            p = _parameter(conv, name, node, f"parameters.{name}")
            if p is not None:
                params.append((p, int(key_node.start_mark.line) + 1))
    values = conv.fields(TuneFields, root, "")
    fields_ = None if values is None or conv.problems else conv.build(TuneFields, root, "", values)
    if fields_ is None or conv.problems:
        raise RecipeError(sorted(conv.problems, key=lambda p: p.line or 0))
    recipe_path = (path.parent / fields_.recipe).resolve()
    if not recipe_path.is_file():
        raise RecipeError([Problem(str(path), 1, "recipe", f"recipe file not found: {recipe_path}")])
    problems: list[Problem] = []
    kpis: tuple[str, ...] = ()
    try:
        kpis = tuple(kind_of(load_variant(recipe_path, fixed).recipe).kpi_labels)
        for overrides in compare.values():
            load_variant(recipe_path, fixed + overrides)
    except RecipeError as exc:
        problems.extend(exc.problems)
    for p, line in params:
        for text in _bound_texts(p):
            try:
                load_variant(recipe_path, (*fixed, parse_override(f"{p.path}={text}", source=f"{path}:{line}")))
            except RecipeError as exc:
                problems.extend(exc.problems)
    if problems:
        raise RecipeError(problems)
    obj = fields_.objective
    known = frozenset(kpis)
    try:
        expr = parse_kpi_expr(obj.minimise or obj.maximise or "", known)
        constraints = tuple(parse_kpi_expr(c, known) for c in obj.constraints)
    except KpiExprError as exc:
        raise RecipeError([Problem(str(path), _key_line(root, "objective"), "objective", str(exc))]) from None
    for name in fields_.show:
        if name not in known:
            kpi_problem(conv, _key_line(root, "show"), "show", name, kpis)
    if conv.problems:
        raise RecipeError(conv.problems)
    shown = tuple(dict.fromkeys([*sorted(expr.names), *(n for c in constraints for n in sorted(c.names)),
                                 *fields_.show]))
    return TuneSpec(path, recipe_path, fields_, tuple(p for p, _ in params), fixed, compare,
                    Objective(expr, obj.minimise is not None, constraints, obj.penalty), shown, kpis)


def _key_line(root: MappingNode, key: str) -> int:
    for k, _ in root.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return int(k.start_mark.line) + 1
    return 1
