"""What every furnace kind shares (see :mod:`apc.kinds`): a batch along a heating curve, the furnace
filter with the kind's tuning per model, the PID baseline or the curve MPC, the simulated furnace and
the batch KPIs. A furnace kind is one :class:`FurnaceKind` with its name, default scenario, filter
tunings and simulator files."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apc.alarms.rules import AlarmRule
from apc.audit import null_logger
from apc.batch import Batch
from apc.batch_history import BatchHistory
from apc.compute import Parts, PreviewHolder
from apc.curve_preview import BatchState, CurvePreview
from apc.cycle_record import CycleRecord
from apc.kinds import RecipeChecks, SimDriver
from apc.kinds.furnace import trends
from apc.kinds.furnace.assembly import (
    FurnaceAssemblyError,
    batch_for,
    build_furnace_controller,
    build_furnace_estimator,
    curve_transform,
    furnace_kpi_config,
    furnace_signal_names,
    outcome_config,
)
from apc.kinds.furnace.kpi import FurnaceKpiAccumulator, FurnaceKpiConfig
from apc.kinds.furnace.learning_batch import LearningBatch
from apc.kinds.furnace.plant_kpi import FurnacePlantKpis, furnace_plant_config
from apc.kinds.furnace.recipe import FurnaceRecipe
from apc.plant_kpi import PlantKpiSink
from apc.protocols import BatchRunner, Clock, KpiSink
from apc.provenance import baseline_sha256, tree_sha256
from apc.recipe.curve_file import load_curve_file, load_plan
from apc.recipe.curve_schema import CurveSection, check_against_model
from apc.recipe.loader import LoadedRecipe
from apc.recipe.schema import Recipe
from apc.trend_layout import TrendLayout
from apc.types import Mode
from estimators.furnace_ekf import FurnaceFilterTuning
from plant_io.sim_furnace import SimulatedFurnaceIO
from sim.furnace_plant import FurnacePlant, FurnaceScenario, furnace_scenario_from_mapping
from sim.models import get_model
from sim.scenario_loader import load_scenario_file

_ROOT = Path(__file__).resolve().parents[3]

FURNACE_MAX_HOURS = 72.0
"""A furnace run of ``apc sim`` without ``hours`` ends with its batch, or after this long at the latest."""

COMMON_SIMULATOR_FILES = ("sim/models/base.py", "sim/furnace_plant.py", "sim/scenario_loader.py",
                          "sim/plant_events.py", "plant_io/sim_adapter.py", "plant_io/sim_furnace.py")
"""Simulator sources every furnace kind runs on (besides its model)."""
BASELINE_FILES = ("controllers/furnace_pid.py",)


def _resolve(loaded: LoadedRecipe, name: str) -> Path:
    """A curve or plan: a path relative to the recipe's folder, or a name in its ``curves`` folder.
    Commands come from the HMI: a path outside the recipe's folder (absolute, or through ``..``) is
    refused (``ValueError``), so a session cannot make the runtime read other files."""
    base = loaded.path.parent.resolve()
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        target = (base / path).resolve()
    else:
        target = (base / "curves" / f"{name}.yaml").resolve()
    if path.is_absolute() or not target.is_relative_to(base):
        raise ValueError(f"{name!r}: curves and plans are files in the recipe's folder ({base}), given relative to it")
    return target


def _furnace(recipe: Recipe) -> FurnaceRecipe:
    if not isinstance(recipe, FurnaceRecipe):
        raise TypeError(f"recipe {recipe.name!r} is not a furnace recipe")
    return recipe


class _BatchOperator:
    """``apc sim`` of a furnace: the operator starts the batch once the unit is ON (both controllers
    alike, from the estimate of the curve's controlled signal); the run ends with the batch."""

    def __init__(self, unit: Any, clock: Clock) -> None:
        self.unit, self.clock = unit, clock
        self.tried = False
        self.cycles = 0

    def after_cycle(self, record: CycleRecord, t_s: float) -> bool:
        self.cycles += 1
        batch = self.unit.batch
        state = batch.status()["state"]
        if state == BatchState.IDLE.value and record.mode.actual == Mode.ON.value and not self.tried:
            values = record.estimate.values()
            self.tried = True  # one start, as an operator would try it
            batch.start(self.clock.monotonic(), "apc sim", values.get(batch.curve.controlled))
            return False
        return state in (BatchState.COMPLETE.value, BatchState.ABORTED.value)

    def meta(self) -> Mapping[str, Any]:
        return {"hours": self.cycles * self.unit.recipe.period_s / 3600.0, "batch": self.unit.batch.status()["state"]}


@dataclass(frozen=True)
class FurnaceKind:
    """One furnace kind; see the module docstring."""

    name: str
    default_scenario: str
    tunings: Mapping[str, FurnaceFilterTuning]
    """Filter tuning per model this kind can run (``model.name`` of its recipes)."""
    model_files: tuple[str, ...]
    """Sources of its models (enter its simulator hash)."""
    scenario_dir: str = "sim/scenarios/furnace"
    """Folder (from the project root) of its named scenarios; the files directly in it enter its
    simulator hash, so a kind with its own folder leaves the other kinds' hashes alone."""
    recipe_class: type[Recipe] = FurnaceRecipe
    scenario_type: type = FurnaceScenario
    has_batch: bool = True
    kpi_header_key: str = "furnace_kpi"
    kpi_labels: Mapping[str, tuple[str, str, str]] = field(default_factory=lambda: MappingProxyType({}))

    def tuning(self, recipe: Recipe) -> FurnaceFilterTuning:
        """The filter tuning of ``recipe``'s model."""
        tuning = self.tunings.get(recipe.model.name)
        if tuning is None:
            raise FurnaceAssemblyError(f"unit kind {self.name!r} has no filter tuning for model "
                                       f"{recipe.model.name!r}; known: {sorted(self.tunings)}")
        return tuning

    # ------------------------------------------------------------------ recipe
    def cross_check(self, checks: RecipeChecks) -> None:
        """Curve and batch present and naming known signals, the controller section of its kind, an MV
        driving a power input, and a curve the model can heat at that MV's engineering high limit."""
        parts = checks.parts
        controller, curve, io = parts.get("controller"), parts.get("curve"), parts.get("io")
        known, batch = checks.known, parts.get("batch")
        if known is not None and curve is not None:
            for unknown in sorted(curve.signal_names() - known):
                checks.unknown_signal(("curve",), "curve", unknown, key_line=True)
        if known is not None and batch is not None:
            for key in ("soak_signal", "soak_confirm_signal", "baseline_soak_signal"):
                name = getattr(batch, key)
                if name is not None and name not in known:
                    checks.unknown_signal(("batch", key), f"batch.{key}", name)
        for key in ("curve", "batch"):
            if (key in parts and parts[key] is None) or (key not in parts and not checks.has_section(key)):
                checks.problem(("unit_kind",), key, "a furnace recipe needs this section")
        if controller is not None:
            if controller.kind == "baseline" and controller.pid is None:
                checks.problem(("controller",), "controller.pid",
                               "required when a furnace's controller.kind is 'baseline'")
            if controller.kind == "mpc" and controller.furnace_mpc is None:
                checks.problem(("controller",), "controller.furnace_mpc",
                               "required when a furnace's controller.kind is 'mpc'")
        model_sec, limits = parts.get("model"), parts.get("limits")
        if curve is None or model_sec is None or io is None or limits is None:
            return
        try:
            model = get_model(model_sec.name)
        except KeyError:
            return  # reported by the model-name check
        heat = [n for n, mv in io.mvs.items() if mv.model_input.endswith("_kW") and n in limits]
        if not heat:
            checks.problem(("io", "mvs"), "io.mvs", "a furnace needs an MV driving a power input (…_kW)")
            return
        mv = io.mvs[heat[0]]
        top_kW = limits[heat[0]].engineering[1]
        for k, seg in enumerate(curve.segments):
            if seg.power_kW is not None and seg.power_kW > top_kW:
                checks.problem(("curve", "segments", k, "power_kW"), f"curve.segments[{k}].power_kW",
                               f"{seg.power_kW:g} kW exceeds the engineering high limit of {heat[0]} ({top_kW:g} kW)")
        for message in check_against_model(curve, model, model_sec.parameters, limits[heat[0]].engineering[1],
                                           power_input=mv.model_input):
            checks.problem(("curve", "segments"), "curve.segments", message)

    def signal_names(self, recipe: Recipe) -> Iterable[str]:
        return furnace_signal_names(_furnace(recipe), self.tuning(recipe))

    def file_problems(self, recipe: Recipe, recipe_dir: Path) -> Iterable[tuple[str, str]]:
        return []

    # ------------------------------------------------------------------ parts
    def build_parts(self, loaded: LoadedRecipe, controller_kind: str | None, *, real_time: bool,
                    preview_source: Callable[[], CurvePreview] | None) -> Parts:
        """A furnace without ``preview_source`` gets a :class:`PreviewHolder` (set from each request)."""
        recipe = _furnace(loaded.recipe)
        kind = controller_kind or recipe.controller.kind
        tuning = self.tuning(recipe)
        holder = PreviewHolder() if preview_source is None else None
        source = preview_source if preview_source is not None else holder
        assert source is not None
        return Parts(build_furnace_estimator(recipe, kind, tuning),
                     build_furnace_controller(recipe, kind, source, tuning, real_time=real_time), holder)

    def new_batch(self, loaded: LoadedRecipe, controller_kind: str, state_dir: Path | None, audit: Any,
                  now_s: float) -> BatchRunner | None:
        """The batch (its state file under ``state_dir``), restored when that file exists."""
        recipe = _furnace(loaded.recipe)
        curve, section = batch_for(recipe, controller_kind)
        state_path = None if state_dir is None else state_dir / section.state_file
        bound = audit or null_logger()
        if recipe.learning is not None:
            assert recipe.curve is not None and recipe.batch is not None
            history = None if state_path is None else BatchHistory(state_path.parent / recipe.learning.history_file)
            return LearningBatch(recipe.curve, recipe.batch, recipe.learning, state_path, history, bound,
                                 furnace=recipe.name, controller=controller_kind,
                                 outcome=outcome_config(recipe, controller_kind),
                                 biases=tuple(b.name for b in self.tuning(recipe).biases),
                                 transform=curve_transform(recipe, controller_kind), utc=time.time, t_s=now_s,
                                 curves=lambda name: self.load_curve(loaded, name),
                                 plans=lambda file: load_plan(_resolve(loaded, file), recipe,
                                                              frozenset(self.signal_names(recipe))))
        if state_path is not None and state_path.exists():
            return Batch.restore(curve, section, state_path, bound, now_s)
        return Batch(curve, section, state_path, bound)

    def load_curve(self, loaded: LoadedRecipe, name: str) -> tuple[str, CurveSection]:
        """A per-batch curve by name (``curves/NAME.yaml`` beside the recipe) or file, validated like
        the recipe's curve (RecipeError naming file and line)."""
        return load_curve_file(_resolve(loaded, name), loaded.recipe, frozenset(self.signal_names(loaded.recipe)))

    def reload_refusal(self, old: Recipe, new: Recipe) -> str:
        a, b = _furnace(old), _furnace(new)
        if (b.controller.kind != a.controller.kind or b.curve != a.curve or b.batch != a.batch
                or b.learning != a.learning):
            return ("furnace controller kind, curve, batch or learning section changed: the batch in progress is kept; "
                    "restart (a per-batch curve needs no restart: docs/heating_curves.md)")
        return ""

    # ------------------------------------------------------------------ simulation
    def load_scenario(self, name_or_path: str | None) -> FurnaceScenario:
        """A furnace scenario (None or ``nominal``: this kind's default)."""
        name = self.default_scenario if name_or_path in (None, "nominal") else name_or_path
        assert name is not None
        return load_scenario_file(name, _ROOT / self.scenario_dir, furnace_scenario_from_mapping, "furnace scenario")

    def scenario_problem(self, loaded: LoadedRecipe, scenario: Any) -> str:
        recipe = loaded.recipe
        if not isinstance(scenario, FurnaceScenario):
            return f"{scenario!r} is not a furnace scenario"
        if scenario.model != recipe.model.name:
            return (f"scenario {scenario.name!r} simulates {scenario.model!r}, "
                    f"the recipe controls {recipe.model.name!r}")
        return ""

    def simulated_io(self, scenario: Any, seed: int, clock: Clock) -> SimulatedFurnaceIO:
        return SimulatedFurnaceIO(FurnacePlant(scenario, seed), clock.monotonic, clock.utc)

    def kpi(self, recipe: Recipe, scenario: Any) -> tuple[str, Mapping[str, Any], KpiSink]:
        """The batch KPIs: the curve's controlled signal, soaks and process limits (the same for both
        controllers, whatever margins a controller keeps)."""
        config = furnace_kpi_config(_furnace(recipe))
        return self.kpi_header_key, config.to_mapping(), FurnaceKpiAccumulator(config)

    def kpi_from_header(self, header: Mapping[str, Any]) -> KpiSink | None:
        data = header.get(self.kpi_header_key)
        return None if data is None else FurnaceKpiAccumulator(FurnaceKpiConfig.from_mapping(data))

    def plant_kpi_config(self, recipe: Recipe) -> Mapping[str, Any]:
        """The measured controlled temperature and the curve's controlled signal."""
        return furnace_plant_config(_furnace(recipe))

    def plant_kpis(self, header: Mapping[str, Any]) -> PlantKpiSink:
        """Batch KPIs from the measured (and estimated) controlled temperature against the curve."""
        return FurnacePlantKpis(header)

    def status_line(self, recipe: Recipe, record: CycleRecord) -> str:
        """Batch state, segment and target, the controlled temperature estimated (and simulated)."""
        truth = record.truth or {}
        values = record.estimate.values()
        batch = record.batch
        furnace = _furnace(recipe)
        controlled = furnace.curve.controlled if furnace.curve else ""
        where = "batch None segment None -" if batch is None else \
            f"batch {batch.state} segment {batch.segment} {batch.kind or '-'}"
        return (f"{where}  target={batch.target_degC if batch else float('nan'):7.1f} degC  "
                f"{controlled}={values.get(controlled, float('nan')):7.1f} (est) "
                f"{truth.get(controlled, float('nan')):7.1f} (sim) degC")

    def simulator_sha256(self) -> str:
        return tree_sha256(COMMON_SIMULATOR_FILES + self.model_files, (self.scenario_dir,))

    def baseline_sha256(self, recipe: Recipe) -> str:
        furnace = _furnace(recipe)
        return baseline_sha256(BASELINE_FILES, (furnace.controller.pid, furnace.batch))

    def sim_hours(self, scenario: Any, hours: float | None) -> float:
        return FURNACE_MAX_HOURS if hours is None else float(hours)

    def sim_driver(self, unit: Any, clock: Clock) -> SimDriver:
        return _BatchOperator(unit, clock)

    def trend_layout(self, header: Mapping[str, Any], columns: frozenset[str]) -> TrendLayout:
        """Temperature against the curve, MVs and pressure (see :mod:`apc.kinds.furnace.trends`)."""
        return trends.trend_layout(header, columns)

    def alarm_rules(self, recipe: Recipe) -> Sequence[AlarmRule]:
        """None besides the generic ones (a held batch is one of those)."""
        return ()
