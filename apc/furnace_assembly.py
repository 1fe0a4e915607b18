"""Composition of furnace units: batch, furnace filter, PID baseline or curve MPC, simulated furnace.

The furnace half of :mod:`apc.assembly` (which dispatches here on the recipe's
``unit_kind``): the one place that knows the concrete furnace classes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from apc.assembly import AssemblyError
from apc.audit import null_logger
from apc.batch import Batch
from apc.curve_preview import CurvePreview
from apc.furnace_kpi import FurnaceKpiAccumulator, FurnaceKpiConfig
from apc.protocols import Clock, Controller, Estimator
from apc.recipe.loader import LoadedRecipe
from apc.recipe.curve_schema import BatchSection, CurveSection
from apc.recipe.schema import Recipe
from apc.recorder import FlightRecorder, NullRecorder, Recorder
from apc.types import Estimate, ValidatedInput
from apc.unit import Unit
from controllers.furnace_mpc import FurnaceMpc
from controllers.furnace_pid import FurnacePid
from estimators.furnace_ekf import TUNINGS, FurnaceEkf
from plant_io.sim_furnace import SimulatedFurnaceIO
from sim.furnace_plant import FurnacePlant, FurnaceScenario
from sim.scenario import ComputeFaultFeed

if TYPE_CHECKING:
    from apc.assembly import RecordFactory
    from apc.unit_parts import ComputeFactory
from sim.models import get_model

DEFAULT_SCENARIOS = {"vacuum_furnace": "vim_nominal", "annealing_furnace": "anneal_nominal"}
"""Furnace scenario used when none is named, per unit kind."""


class FurnaceAssemblyError(AssemblyError):
    """A furnace recipe asks for something this build cannot assemble."""


def furnace_signal_names(recipe: Recipe) -> Iterable[str]:
    """Estimate signals a furnace recipe may name (permissives, curve, hold-until conditions)."""
    model = get_model(recipe.model.name)
    tuning = TUNINGS.get(model.name)
    biases = tuple(b.name for b in tuning.biases) if tuning else ()
    stds = tuple(f"{n}_std" for n in model.state_names + (tuning.std_signals if tuning else ()))
    return model.state_names + model.aux_names + biases + stds + tuple(recipe.io.inputs)


class _MeasuredHealth:
    """The filter for a controller that reads only measurements (the PID baseline): the filter's
    own health is reported in ``extras['filter_healthy']`` and never holds the unit."""

    def __init__(self, inner: Estimator) -> None:
        self.inner = inner

    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> Estimate:
        """The filter's estimate, declared healthy; see the class docstring."""
        est = self.inner.update(t_s, inputs, applied)
        extras = {**est.extras, "filter_healthy": 1.0 if est.healthy else 0.0}
        return replace(est, health="ok", extras=extras)

    def reset(self) -> None:
        """Forget all history."""
        self.inner.reset()


def build_furnace_estimator(recipe: Recipe, controller_kind: str) -> Estimator:
    """The furnace filter on the recipe's nominal model; it gates only the MPC (which uses its states)."""
    model = get_model(recipe.model.name)
    io_ = recipe.io
    measurements = {n: s.model_output for n, s in io_.inputs.items() if s.model_output}
    if not measurements:
        raise FurnaceAssemblyError("a furnace recipe needs inputs with model_output (what the filter fuses)")
    try:
        ekf = FurnaceEkf(model, model.parameter_vector(recipe.model.parameters), measurements,
                         {n: mv.model_input for n, mv in io_.mvs.items()}, recipe.period_s)
    except ValueError as exc:
        raise FurnaceAssemblyError(str(exc)) from None
    return ekf if controller_kind == "mpc" else _MeasuredHealth(ekf)


def build_furnace_controller(recipe: Recipe, kind: str, preview_source: Callable[[], CurvePreview], *,
                             real_time: bool = False) -> Controller:
    """PID baseline or curve MPC, both reading the batch's preview from ``preview_source``."""
    c = recipe.controller
    try:
        if kind == "baseline":
            if c.pid is None:
                raise FurnaceAssemblyError("controller 'baseline' needs the controller.pid section")
            return FurnacePid(c.pid, recipe.limits, recipe.period_s, preview_source, c.hold_cycles)
        if kind == "mpc":
            if c.furnace_mpc is None:
                raise FurnaceAssemblyError("controller 'mpc' needs the controller.furnace_mpc section")
            model = get_model(recipe.model.name)
            return FurnaceMpc(model, model.parameter_vector(recipe.model.parameters), c.furnace_mpc, recipe.io.mvs,
                              recipe.limits, recipe.period_s, preview_source, c.period_multiple, c.hold_cycles,
                              real_time=real_time, biases=TUNINGS[model.name].biases)
    except ValueError as exc:
        raise FurnaceAssemblyError(str(exc)) from None
    raise FurnaceAssemblyError(f"controller {kind!r} is not available for furnaces")


def batch_for(recipe: Recipe, kind: str) -> tuple[CurveSection, BatchSection]:
    """Curve and batch settings for ``kind``: the MPC runs the recipe's as written; the PID
    baseline runs them as plants do, on its measured signal with the fixed soak extension."""
    assert recipe.curve is not None and recipe.batch is not None
    b = recipe.batch
    if kind != "baseline" or recipe.controller.pid is None:
        return recipe.curve, b
    signal = b.baseline_soak_signal or recipe.controller.pid.measurement
    return (replace(recipe.curve, controlled=signal),
            replace(b, soak_signal=signal, soak_extension_min=b.baseline_soak_extension_min))


def furnace_kpi_config(recipe: Recipe) -> FurnaceKpiConfig:
    """KPI judgement: the curve's controlled signal, soaks and process limits (the same for both
    controllers, whatever margins a controller keeps)."""
    curve = recipe.curve
    assert curve is not None
    return FurnaceKpiConfig(
        controlled=curve.controlled,
        soak_required_s=tuple(s.time_s for s in curve.segments if s.kind == "soak"),
        pressure_limit_Pa=curve.pressure_limit_Pa,
        core_surface_dT_max_K=curve.core_surface_dT_max_K,
    )


def build_furnace_sim_unit(
    name: str,
    loaded: LoadedRecipe,
    scenario: FurnaceScenario,
    seed: int,
    clock: Clock,
    *,
    audit: Any,
    controller_kind: str | None = None,
    record_path: Path | None = None,
    with_kpis: bool = True,
    header_extra: dict[str, Any] | None = None,
    real_time: bool = False,
    state_dir: Path | None = None,
    compute: ComputeFactory | None = None,
    record_factory: RecordFactory | None = None,
) -> tuple[Unit, SimulatedFurnaceIO, Batch]:
    """A unit controlling an in-process simulated furnace, with its batch (persisted under ``state_dir``;
    ``compute``: where its estimator and controller run, default this process)."""
    from apc.unit_parts import inline_compute

    recipe = loaded.recipe
    if recipe.curve is None or recipe.batch is None:
        raise FurnaceAssemblyError(f"recipe {loaded.path.name} has no curve or batch section")
    if scenario.model != recipe.model.name:
        raise FurnaceAssemblyError(f"scenario {scenario.name!r} simulates {scenario.model!r}, "
                                   f"the recipe controls {recipe.model.name!r}")
    plant = FurnacePlant(scenario, seed)
    io = SimulatedFurnaceIO(plant, clock.monotonic, clock.utc)
    missing = sorted(recipe.io.tags() - io.tags())
    if missing:
        raise FurnaceAssemblyError(f"recipe {loaded.path.name} binds tags the simulator does not serve: {missing}")
    kind = controller_kind or recipe.controller.kind
    bound = (audit or null_logger()).bind(unit=name)
    curve, section = batch_for(recipe, kind)
    state_path = None if state_dir is None else state_dir / section.state_file
    if state_path is not None and state_path.exists():
        batch = Batch.restore(curve, section, state_path, bound, clock.monotonic())
    else:
        batch = Batch(curve, section, state_path, bound)
    unit_compute = (compute or inline_compute)(name, loaded, kind, real_time, batch.preview)
    kpis = furnace_kpi_config(recipe)
    recorder: Recorder = NullRecorder()
    if record_path is not None:
        header = {"unit": name, "recipe": recipe.name, "recipe_sha256": loaded.sha256, "seed": seed,
                  "period_s": recipe.period_s, "started_utc": clock.utc(), "furnace_kpi": kpis.to_mapping(),
                  "scenario": scenario.name, "controller": kind, **(header_extra or {})}
        recorder = (record_factory or FlightRecorder)(record_path, header)
    unit = Unit(name, loaded, io, None, None, compute=unit_compute, clock=clock if real_time else None, audit=audit,
                recorder=recorder, kpi=FurnaceKpiAccumulator(kpis) if with_kpis else None, truth=io.truth,
                batch=batch, compute_faults=ComputeFaultFeed(scenario.events))
    return unit, io, batch

