"""The molten-salt electrolysis cell (Nd / PrNd) as a unit kind (see :mod:`apc.kinds`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from apc.alarms.rules import AlarmRule
from apc.compute import Parts
from apc.curve_preview import CurvePreview
from apc.cycle_record import CycleRecord
from apc.kinds import RecipeChecks, SimDriver
from apc.kinds.electrolysis_cell import assembly, trends
from apc.kinds.electrolysis_cell.alarms import SpecificEnergyRule
from apc.kinds.electrolysis_cell.kpi import KPI_LABELS, KpiAccumulator, KpiConfig
from apc.kinds.electrolysis_cell.plant_kpi import CellPlantKpis, cell_plant_config
from apc.kinds.electrolysis_cell.recipe import CellRecipe
from apc.plant_kpi import PlantKpiSink
from apc.protocols import BatchRunner, Clock, KpiSink
from apc.provenance import baseline_sha256, tree_sha256
from apc.recipe.loader import LoadedRecipe
from apc.recipe.schema import Recipe
from apc.trend_layout import TrendLayout
from plant_io.sim_plant import SimulatedCellIO
from sim.cell_plant import CellPlant
from sim.scenario import Scenario, load_scenario

SIMULATOR_FILES = ("sim/models/base.py", "sim/models/buffered.py", "sim/models/nd_cell.py", "sim/cell_plant.py",
                   "sim/scenario.py", "sim/scenario_loader.py", "sim/plant_events.py", "plant_io/sim_adapter.py",
                   "plant_io/sim_plant.py")
SIMULATOR_DIRS = ("sim/scenarios",)
BASELINE_FILES = ("controllers/tracking_feed.py", "estimators/filtered.py")


class _NoOperator:
    """``apc sim`` of a cell: nothing to do after ON; the run lasts its hours."""

    def after_cycle(self, record: Any, t_s: float) -> bool:
        return False

    def meta(self) -> Mapping[str, Any]:
        return {}


def _cell(recipe: Recipe) -> CellRecipe:
    if not isinstance(recipe, CellRecipe):
        raise TypeError(f"recipe {recipe.name!r} is not an electrolysis-cell recipe")
    return recipe


class ElectrolysisCell:
    """The cell kind: tracking-feed baseline or cell MPC, cell filter and soft sensor, simulated cell."""

    name = "electrolysis_cell"
    recipe_class: type[Recipe] = CellRecipe
    default_scenario = "nominal"
    scenario_type = Scenario
    has_batch = False
    kpi_header_key = "kpi"
    kpi_labels = KPI_LABELS

    def cross_check(self, checks: RecipeChecks) -> None:
        """The soft sensor's model file exists; the controller's section is there; the MPC needs the
        Kalman filter."""
        controller, estimator = checks.parts.get("controller"), checks.parts.get("estimator")
        soft = estimator.soft_sensor if estimator is not None else None
        if soft is not None and not (checks.recipe_dir / soft.model_file).is_file():
            checks.problem(("estimator", "soft_sensor", "model_file"), "estimator.soft_sensor.model_file",
                           f"file not found: {checks.recipe_dir / soft.model_file}")
        if controller is None:
            return
        if controller.kind == "baseline" and controller.baseline is None:
            checks.problem(("controller",), "controller.baseline", "required when controller.kind is 'baseline'")
        if controller.kind == "mpc" and controller.mpc is None:
            checks.problem(("controller",), "controller.mpc", "required when controller.kind is 'mpc'")
        if controller.mpc is not None and estimator is not None and estimator.kind != "ekf":
            checks.problem(("controller", "mpc"), "controller.mpc",
                           f"the MPC predicts from the Kalman filter's states: needs estimator.kind 'ekf', "
                           f"not {estimator.kind!r}", key_line=True)

    def signal_names(self, recipe: Recipe) -> Iterable[str]:
        return assembly.signal_names(_cell(recipe))

    def file_problems(self, recipe: Recipe, recipe_dir: Path) -> Iterable[tuple[str, str]]:
        return assembly.file_problems(_cell(recipe), recipe_dir)

    def build_parts(self, loaded: LoadedRecipe, controller_kind: str | None, *, real_time: bool,
                    preview_source: Callable[[], CurvePreview] | None) -> Parts:
        recipe = _cell(loaded.recipe)
        kind = controller_kind or recipe.controller.kind
        return Parts(assembly.build_estimator(recipe, loaded.path.parent, kind),
                     assembly.build_controller(recipe, kind, real_time=real_time))

    def new_batch(self, loaded: LoadedRecipe, controller_kind: str, state_path: Path | None, audit: Any,
                  now_s: float) -> BatchRunner | None:
        return None

    def reload_refusal(self, old: Recipe, new: Recipe) -> str:
        return ""

    def load_scenario(self, name_or_path: str | None) -> Scenario:
        return load_scenario(name_or_path or self.default_scenario)

    def scenario_problem(self, loaded: LoadedRecipe, scenario: Any) -> str:
        return "" if isinstance(scenario, Scenario) else f"{scenario!r} is not an electrolysis-cell scenario"

    def simulated_io(self, scenario: Any, seed: int, clock: Clock) -> SimulatedCellIO:
        return SimulatedCellIO(CellPlant(scenario, seed), clock.monotonic, clock.utc)

    def kpi(self, recipe: Recipe, scenario: Any) -> tuple[str, Mapping[str, Any], KpiSink]:
        """KPI window from the recipe's warm-up, oxide band from the scenario."""
        config = KpiConfig(warmup_s=recipe.kpi_warmup_h * 3600.0, oxide_band_wtpct=scenario.oxide_band_wtpct)
        return self.kpi_header_key, config.to_mapping(), KpiAccumulator(config)

    def kpi_from_header(self, header: Mapping[str, Any]) -> KpiSink | None:
        data = header.get(self.kpi_header_key)
        return None if data is None else KpiAccumulator(KpiConfig.from_mapping(data))

    def plant_kpi_config(self, recipe: Recipe) -> Mapping[str, Any]:
        """The oxide and bath-temperature bands (the MPC section's) with their lab, dip and filter signals."""
        return cell_plant_config(_cell(recipe))

    def plant_kpis(self, header: Mapping[str, Any]) -> PlantKpiSink:
        """Tap-to-tap current efficiency and specific energy from the measured signals."""
        return CellPlantKpis(header)

    def status_line(self, recipe: Recipe, record: CycleRecord) -> str:
        """Cell voltage and feed, with the simulator's bath temperature and oxide where there is a truth."""
        truth = record.truth or {}
        values = record.estimate.values()
        feed = assembly.mv_names(_cell(recipe)).feed
        sim = (f"  T_bath(sim)={truth.get('bath_temp_degC', float('nan')):7.1f} degC  "
               f"oxide(sim)={truth.get('dissolved_oxide_wtpct', float('nan')):4.2f} wt%") if truth else ""
        return (f"U={values.get('cell_voltage_V', float('nan')):6.3f} V  "
                f"feed={record.readback.get(feed, float('nan')):5.2f} kg/h{sim}")

    def simulator_sha256(self) -> str:
        return tree_sha256(SIMULATOR_FILES, SIMULATOR_DIRS)

    def baseline_sha256(self, recipe: Recipe) -> str:
        cell = _cell(recipe)
        return baseline_sha256(BASELINE_FILES, (cell.controller.baseline, cell.estimator.filtered))

    def sim_hours(self, scenario: Any, hours: float | None) -> float:
        return float(scenario.hours) if hours is None else float(hours)

    def sim_driver(self, unit: Any, clock: Clock) -> SimDriver:
        return _NoOperator()

    def trend_layout(self, header: Mapping[str, Any], columns: frozenset[str]) -> TrendLayout:
        """CVs (voltage, bath temperature, oxide) and MVs (see :mod:`apc.kinds.electrolysis_cell.trends`)."""
        return trends.trend_layout(header, columns)

    def alarm_rules(self, recipe: Recipe) -> Sequence[AlarmRule]:
        """Specific energy per tap interval (:mod:`apc.kinds.electrolysis_cell.alarms`)."""
        return (SpecificEnergyRule(recipe),)


KIND = ElectrolysisCell()
"""The registered cell kind."""
