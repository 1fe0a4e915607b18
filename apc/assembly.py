"""Composition root: turns recipes and plant specs into running units.

This is the one place in ``apc`` that knows the concrete estimators,
controllers, models and plant adapters; the core modules see only protocols.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from apc.kpi import KpiAccumulator, KpiConfig
from apc.protocols import Clock, Controller, Estimator
from apc.recipe.loader import LoadedRecipe, load_recipe, load_site, LoadedSite
from apc.recipe.schema import Recipe
from apc.recorder import FlightRecorder, NullRecorder, Recorder
from apc.unit import Unit
from controllers.cell_mpc import CellMpc
from controllers.tracking_feed import MvNames, TrackingFeedController
from estimators.filtered import NAMES as FILTERED_NAMES
from estimators.cell_ekf import BIASES, CellEkf, bindings_for
from estimators.composite import CompositeEstimator
from estimators.features import FeatureBindings, check_feature_names
from estimators.filtered import FilteredEstimator
from estimators.soft_sensor import SoftSensorError, load_soft_sensor
from plant_io.sim_plant import SimulatedCellIO
from sim.cell_plant import CellPlant
from sim.models import get_model, model_names
from sim.scenario import ComputeFaultFeed, Scenario

if TYPE_CHECKING:
    from apc.unit_parts import ComputeFactory

ControllerKind = Literal["baseline", "mpc"]

EKF_EXTRAS = ("dissolved_oxide_wtpct", "dissolved_oxide_std_wtpct", "oxide_saturation_wtpct", "ae_margin_A_cm2",
              "current_efficiency", "bath_temp_std_degC", "metal_temp_std_degC")
"""Estimate signals of the cell filter that permissives may name."""


class AssemblyError(ValueError):
    """A recipe asks for something this build cannot assemble."""


def recipe_signal_names(recipe: Recipe) -> Iterable[str]:
    """Names a permissive may use besides inputs and MVs: estimate signals.

    Also checks the model name and parameter names (raising names the problem).
    """
    if recipe.model.name not in model_names():
        raise ValueError(f"unknown model {recipe.model.name!r}; known: {list(model_names())}")
    if recipe.is_furnace:
        from apc.furnace_assembly import furnace_signal_names

        return furnace_signal_names(recipe)
    model = get_model(recipe.model.name)
    unknown = sorted(set(recipe.model.parameters) - set(model.parameter_names))
    if unknown:
        raise ValueError(f"model {model.name!r} has no parameter(s) {unknown}")
    inputs = set(model.input_names)
    for name, mv in recipe.io.mvs.items():
        if mv.model_input not in inputs:
            raise ValueError(f"io.mvs.{name}.model_input {mv.model_input!r} is not an input of "
                             f"{model.name!r} {sorted(inputs)}")
    soft = recipe.estimator.soft_sensor
    soft_names: tuple[str, ...] = ()
    if soft is not None:
        check_feature_names(soft.features)
        spec = recipe.io.inputs.get(soft.sample_input)
        if spec is None or spec.role != "sample":
            raise ValueError(f"estimator.soft_sensor.sample_input {soft.sample_input!r} must name an input "
                             "with role 'sample'")
        if recipe.estimator.kind != "ekf":
            raise ValueError("estimator.soft_sensor needs estimator.kind 'ekf'")
        soft_names = tuple(f"{soft.target}_soft{s}" for s in ("", "_raw", "_bias"))
    if recipe.estimator.kind == "ekf":
        return FILTERED_NAMES + model.state_names + tuple(b.name for b in BIASES) + EKF_EXTRAS + soft_names
    return FILTERED_NAMES


def recipe_file_problems(recipe: Recipe, recipe_dir: Path) -> list[tuple[str, str]]:
    """Files the recipe names that this build cannot use, as (field path, message): the soft
    sensor's ONNX model must load with the recipe's tensor names and features."""
    soft = recipe.estimator.soft_sensor
    if soft is None or recipe.estimator.kind != "ekf":
        return []
    try:
        load_soft_sensor(soft, recipe_dir, bindings=FeatureBindings.from_recipe(recipe))
    except (SoftSensorError, ValueError, KeyError) as exc:
        return [("estimator.soft_sensor.model_file", str(exc))]
    return []


def load(path: str | Path) -> LoadedRecipe:
    """Load and fully validate one recipe (with every file it names)."""
    return load_recipe(path, provider=recipe_signal_names, files=recipe_file_problems)


def load_site_file(path: str | Path) -> LoadedSite:
    """Load and fully validate a site and its recipes (with every file they name)."""
    return load_site(path, provider=recipe_signal_names, files=recipe_file_problems)


def _role_names(recipe: Recipe) -> MvNames:
    io_ = recipe.io
    return MvNames(feed=io_.mv_driving("feed_kg_h") or "", anode=io_.mv_driving("anode_move_cm_h") or "",
                   current=io_.mv_driving("current_kA") or "")


def build_estimator(recipe: Recipe, recipe_dir: Path | None = None,
                    controller_kind: ControllerKind | None = None) -> Estimator:
    """The recipe's estimator with its tuning.

    ``filtered``: the baseline signals; ``ekf``: those plus the cell's
    Kalman filter (and the ONNX soft sensor when the recipe names one). The
    filter's health gates the unit only for a controller that uses its
    states (``mpc``); the baseline is gated by the signals it reads.
    """
    signals = FilteredEstimator(
        recipe.estimator.filtered,
        voltage=recipe.io.input_with_unit("V") or "",
        current=recipe.io.input_with_unit("kA") or "",
        dip=recipe.io.input_with_unit("degC", ("sample",)) or "",
        electrode=_role_names(recipe).anode,
    )
    if recipe.estimator.kind == "filtered":
        return signals
    if recipe.estimator.kind == "ekf":
        model = get_model(recipe.model.name)
        try:
            bindings = bindings_for(recipe)
        except KeyError as exc:
            raise AssemblyError(str(exc)) from None
        ekf = CellEkf(model, model.parameter_vector(recipe.model.parameters), recipe.estimator.ekf, bindings,
                      recipe.period_s)
        soft = None
        if recipe.estimator.soft_sensor is not None:
            try:
                soft = load_soft_sensor(recipe.estimator.soft_sensor, recipe_dir or Path("."),
                                        bindings=FeatureBindings.from_recipe(recipe))
            except (SoftSensorError, ValueError) as exc:
                raise AssemblyError(f"estimator.soft_sensor: {exc}") from None
        kind = controller_kind or recipe.controller.kind
        return CompositeEstimator(signals, ekf, soft, gate_on_filter=kind != "baseline")
    raise AssemblyError(f"estimator kind {recipe.estimator.kind!r} is not available")


def build_controller(recipe: Recipe, kind: ControllerKind | None = None, *, real_time: bool = False) -> Controller:
    """The recipe's controller (or ``kind`` when the command line overrides it).

    ``real_time``: the unit runs on the wall clock (``apc run``); solvers then
    also honour their wall-time budget. Virtual-time runs cap iterations only,
    so they stay deterministic.
    """
    kind = kind or recipe.controller.kind
    if kind == "baseline":
        if recipe.controller.baseline is None:
            raise AssemblyError("controller.baseline section is missing")
        return TrackingFeedController(recipe.controller.baseline, _role_names(recipe))
    if kind == "mpc":
        return _build_mpc(recipe, real_time)
    raise AssemblyError(f"controller {kind!r} is not available in this version")


def _build_mpc(recipe: Recipe, real_time: bool) -> Controller:
    """The cell MPC on the recipe's nominal model; it predicts from the Kalman filter's states."""
    section = recipe.controller
    if section.mpc is None:
        raise AssemblyError("controller 'mpc' is not available for this recipe: "
                            "the controller.mpc section is missing")
    if recipe.estimator.kind != "ekf":
        raise AssemblyError(f"controller 'mpc' is not available for this recipe: it needs estimator.kind 'ekf' "
                            f"(model states with covariance), the recipe has {recipe.estimator.kind!r}")
    bad_inputs = {d: n for d, n in section.mpc.disturbance_inputs.items()
                  if n not in recipe.io.inputs or recipe.io.inputs[n].role != "disturbance"}
    if bad_inputs:
        raise AssemblyError(f"controller.mpc.disturbance_inputs: {bad_inputs} must name inputs with role "
                            "'disturbance'")
    model = get_model(recipe.model.name)
    try:
        return CellMpc(model, model.parameter_vector(recipe.model.parameters), section.mpc, recipe.io.mvs,
                       recipe.limits, recipe.period_s, section.period_multiple, section.hold_cycles,
                       real_time=real_time)
    except ValueError as exc:
        raise AssemblyError(str(exc)) from None


def kpi_config(recipe: Recipe, scenario: Scenario) -> KpiConfig:
    """KPI window from the recipe's warm-up, oxide band from the scenario."""
    return KpiConfig(warmup_s=recipe.kpi_warmup_h * 3600.0, oxide_band_wtpct=scenario.oxide_band_wtpct)


def build_sim_unit(
    name: str,
    loaded: LoadedRecipe,
    scenario: Scenario,
    seed: int,
    clock: Clock,
    *,
    audit: Any,
    controller_kind: ControllerKind | None = None,
    record_path: Path | None = None,
    with_kpis: bool = True,
    header_extra: dict[str, Any] | None = None,
    real_time: bool = False,
    compute: ComputeFactory | None = None,
    record_factory: RecordFactory | None = None,
) -> tuple[Unit, SimulatedCellIO]:
    """A unit controlling an in-process simulated cell (``real_time``: see :func:`build_controller`;
    ``compute``: where its estimator and controller run, default this process)."""
    from apc.unit_parts import inline_compute

    recipe = loaded.recipe
    plant = CellPlant(scenario, seed)
    io = SimulatedCellIO(plant, clock.monotonic, clock.utc)
    missing = sorted(recipe.io.tags() - io.tags())
    if missing:
        raise AssemblyError(f"recipe {loaded.path.name} binds tags the simulator does not serve: {missing}")
    kpis = kpi_config(recipe, scenario)
    unit_compute = (compute or inline_compute)(name, loaded, controller_kind, real_time, None)
    recorder: Recorder = NullRecorder()
    if record_path is not None:
        header = {
            "unit": name, "recipe": recipe.name, "recipe_sha256": loaded.sha256, "seed": seed,
            "period_s": recipe.period_s, "started_utc": clock.utc(), "kpi": kpis.to_mapping(),
            "scenario": scenario.name, "controller": controller_kind or recipe.controller.kind,
            **(header_extra or {}),
        }
        recorder = (record_factory or FlightRecorder)(record_path, header)
    unit = Unit(
        name, loaded, io, None, None, compute=unit_compute, clock=clock if real_time else None,
        audit=audit, recorder=recorder, kpi=KpiAccumulator(kpis) if with_kpis else None, truth=io.truth,
        compute_faults=ComputeFaultFeed(scenario.events),
    )
    return unit, io


RecorderFactory = Callable[[str], Path | None]
RecordFactory = Callable[[Path, dict[str, Any]], Recorder]
"""``factory(path, header)``: the recorder of a unit's flight record (default :class:`FlightRecorder`)."""
