"""Unit kinds as plug-ins: one object per kind, looked up by a recipe's ``unit_kind``.

A kind holds everything that differs between an electrolysis cell, a vacuum furnace or an
annealing furnace: its recipe sections (a :class:`~apc.recipe.schema.Recipe` subclass) and their
cross-checks, the signal names its recipes may use, its estimator and controller builders, its
batch (furnaces), its simulated plant and scenarios, its KPIs (on the simulator's truth, and from plant
data), its status line, its trend figures and the provenance hashes of its simulator and baseline. The
generic runtime (loader, unit, assembly, runtime, simulation, virtual plant, report) asks the kind and
never branches on one.

Kinds are registered in :mod:`apc.kinds.registry` (one line each) and imported on first use.
See ``docs/adding_a_unit_kind.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from apc.alarms.rules import AlarmRule
    from apc.compute import Parts
    from apc.curve_preview import CurvePreview
    from apc.cycle_record import CycleRecord
    from apc.plant_kpi import PlantKpiSink
    from apc.protocols import BatchRunner, Clock, KpiSink
    from apc.recipe.loader import LoadedRecipe
    from apc.recipe.schema import Recipe
    from apc.trend_layout import TrendLayout
    from plant_io.sim_adapter import SimulatedPlantIO


class RecipeChecks(Protocol):
    """What a kind's cross-checks see of a recipe being loaded: the sections that converted, and
    where to report a problem (at the line of a key path)."""

    @property
    def parts(self) -> Mapping[str, Any]:
        """Converted sections by name (a section that failed conversion is absent)."""
    known: frozenset[str] | None
    """Every signal name the recipe provides (None when they could not be listed)."""
    recipe_dir: Path
    """The folder of the recipe file (files it names are relative to it)."""

    def problem(self, keys: tuple[str | int, ...], field: str, message: str, key_line: bool = False) -> None:
        """Report ``message`` for ``field`` at the line of ``keys`` in the file."""

    def has_section(self, key: str) -> bool:
        """True when the file has the top-level section ``key`` (converted or not)."""

    def unknown_signal(self, keys: tuple[str | int, ...], field: str, name: str, key_line: bool = False) -> None:
        """Report that ``name`` is no signal the recipe provides."""


class SimDriver(Protocol):
    """What an operator does to a simulated unit in ``apc sim`` (e.g. start a furnace batch once the
    unit is ON), called after each cycle; True once the run is complete."""

    def after_cycle(self, record: CycleRecord, t_s: float) -> bool:
        """Act on this cycle's record; True when the run is over."""

    def meta(self) -> Mapping[str, Any]:
        """What the run's result reports besides the KPIs (e.g. the batch's final state)."""


class UnitKind(Protocol):
    """One kind of unit (see the module docstring)."""

    name: str
    """The recipes' ``unit_kind``."""
    recipe_class: type[Recipe]
    """The recipe dataclass with this kind's sections."""
    default_scenario: str
    """Simulator scenario used when none is named (a site's ``nominal``)."""
    scenario_type: type
    """The scenario dataclass of its simulated plant."""
    has_batch: bool
    """Units of this kind run batches along a curve (their controllers read its preview)."""
    kpi_header_key: str
    """Key of the KPI configuration in a flight record's header."""
    kpi_labels: Mapping[str, tuple[str, str, str]]
    """(label, unit, format) of each KPI key (``apc.kpi.format_kpis``)."""

    def cross_check(self, checks: RecipeChecks) -> None:
        """Checks across this kind's sections while a recipe loads."""

    def signal_names(self, recipe: Recipe) -> Iterable[str]:
        """Names a recipe may use besides inputs and MVs (estimate signals); raises ``ValueError``
        naming the problem for a model or section this build cannot use."""

    def file_problems(self, recipe: Recipe, recipe_dir: Path) -> Iterable[tuple[str, str]]:
        """(field path, message) for every file the recipe names that cannot be used."""

    def build_parts(self, loaded: LoadedRecipe, controller_kind: str | None, *, real_time: bool,
                    preview_source: Callable[[], CurvePreview] | None) -> Parts:
        """The estimator and controller ``loaded`` asks for (``controller_kind`` overrides the recipe's)."""

    def new_batch(self, loaded: LoadedRecipe, controller_kind: str, state_path: Path | None, audit: Any,
                  now_s: float) -> BatchRunner | None:
        """The unit's batch (restored from ``state_path`` when it exists); None for kinds without one."""

    def reload_refusal(self, old: Recipe, new: Recipe) -> str:
        """Why ``new`` may not replace ``old`` while the unit runs ('' when it may)."""

    def load_scenario(self, name_or_path: str | None) -> Any:
        """A simulator scenario of this kind (None or ``nominal``: the default)."""

    def scenario_problem(self, loaded: LoadedRecipe, scenario: Any) -> str:
        """Why ``scenario`` cannot back ``loaded`` ('' when it can)."""

    def simulated_io(self, scenario: Any, seed: int, clock: Clock) -> SimulatedPlantIO[Any, Any]:
        """The in-process simulated plant with its DCS side, on ``clock``."""

    def kpi(self, recipe: Recipe, scenario: Any) -> tuple[str, Mapping[str, Any], KpiSink]:
        """(record-header key, its configuration, a fresh accumulator) of this kind's KPIs."""

    def kpi_from_header(self, header: Mapping[str, Any]) -> KpiSink | None:
        """The accumulator a record header configures (None when it has no configuration of this kind)."""

    def plant_kpi_config(self, recipe: Recipe) -> Mapping[str, Any]:
        """The record header's ``plant_kpi`` object: what this kind's plant KPIs (measured, no truth)
        need to know of the recipe, e.g. its CV bands (``docs/performance_kpis.md``)."""

    def plant_kpis(self, header: Mapping[str, Any]) -> PlantKpiSink:
        """A fresh accumulator of this kind's own plant KPIs, configured by a record ``header``
        (the generic ones are :class:`apc.plant_kpi.PlantKpis`')."""

    def status_line(self, recipe: Recipe, record: CycleRecord) -> str:
        """One line for ``apc run``'s periodic status."""

    def simulator_sha256(self) -> str:
        """Hash of this kind's simulated plant (model, plant, scenarios, DCS side)."""

    def baseline_sha256(self, recipe: Recipe) -> str:
        """Hash of the industrial baseline this kind compares against, with the recipe's tuning of it."""

    def sim_hours(self, scenario: Any, hours: float | None) -> float:
        """How long ``apc sim`` runs (``hours`` when given)."""

    def sim_driver(self, unit: Any, clock: Clock) -> SimDriver:
        """The operator of ``apc sim`` for ``unit``."""

    def trend_layout(self, header: Mapping[str, Any], columns: frozenset[str]) -> TrendLayout:
        """The figures ``apc plot`` draws of a record with this ``header`` and these table columns
        (:mod:`apc.record_table`)."""

    def alarm_rules(self, recipe: Recipe) -> Sequence[AlarmRule]:
        """The kind's own alarm rules besides the generic ones (:mod:`apc.alarms.rules`)."""


class UnknownKindError(KeyError):
    """A recipe names a unit kind that is not registered."""


@cache
def get_kind(name: str) -> UnitKind:
    """The kind registered as ``name`` (imported once)."""
    from apc.kinds.registry import KINDS

    target = KINDS.get(name)
    if target is None:
        raise UnknownKindError(f"unknown unit kind {name!r}; known: {sorted(KINDS)}")
    module, _, attr = target.partition(":")
    kind: UnitKind = getattr(importlib.import_module(module), attr)
    return kind


def kind_names() -> tuple[str, ...]:
    """Every registered unit kind."""
    from apc.kinds.registry import KINDS

    return tuple(sorted(KINDS))


def kind_of(recipe: Recipe) -> UnitKind:
    """The kind of ``recipe``."""
    return get_kind(recipe.unit_kind)
