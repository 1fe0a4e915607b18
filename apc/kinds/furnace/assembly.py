"""How a furnace recipe becomes a batch, a filter and a controller: the furnace Kalman filter with
the kind's tuning, the PID baseline or the curve MPC, and the KPIs a batch is judged by."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from apc.assembly import AssemblyError
from apc.batch_learning import OutcomeConfig
from apc.curve_preview import CurvePreview
from apc.kinds.furnace.kpi import FurnaceKpiConfig, KpiSegment
from apc.kinds.furnace.recipe import FurnaceRecipe
from apc.protocols import Controller, Estimator
from apc.recipe.curve_schema import BatchSection, CurveSection
from apc.types import Estimate, ValidatedInput
from controllers.furnace_mpc import FurnaceMpc
from controllers.furnace_pid import FurnacePid
from estimators.furnace_ekf import FurnaceEkf, FurnaceFilterTuning
from sim.models import get_model


class FurnaceAssemblyError(AssemblyError):
    """A furnace recipe asks for something this build cannot assemble."""


def furnace_signal_names(recipe: FurnaceRecipe, tuning: FurnaceFilterTuning) -> Iterable[str]:
    """Estimate signals a furnace recipe may name (permissives, curve, hold-until conditions)."""
    model = get_model(recipe.model.name)
    biases = tuple(b.name for b in tuning.biases)
    stds = tuple(f"{n}_std" for n in model.state_names + tuning.std_signals)
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

    def prime(self, prior: Mapping[str, tuple[float, float]]) -> None:
        """Pass a parameter prior on to the filter (see :meth:`FurnaceEkf.prime`)."""
        prime = getattr(self.inner, "prime", None)
        if prime is not None:
            prime(prior)


def build_furnace_estimator(recipe: FurnaceRecipe, controller_kind: str, tuning: FurnaceFilterTuning) -> Estimator:
    """The furnace filter on the recipe's nominal model; it gates only the MPC (which uses its states)."""
    model = get_model(recipe.model.name)
    io_ = recipe.io
    measurements = {n: s.model_output for n, s in io_.inputs.items() if s.model_output}
    if not measurements:
        raise FurnaceAssemblyError("a furnace recipe needs inputs with model_output (what the filter fuses)")
    try:
        ekf = FurnaceEkf(model, model.parameter_vector(recipe.model.parameters), measurements,
                         {n: mv.model_input for n, mv in io_.mvs.items()}, recipe.period_s, tuning=tuning)
    except ValueError as exc:
        raise FurnaceAssemblyError(str(exc)) from None
    return ekf if controller_kind == "mpc" else _MeasuredHealth(ekf)


def build_furnace_controller(recipe: FurnaceRecipe, kind: str, preview_source: Callable[[], CurvePreview],
                             tuning: FurnaceFilterTuning, *, real_time: bool = False) -> Controller:
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
                              real_time=real_time, biases=tuning.biases)
    except ValueError as exc:
        raise FurnaceAssemblyError(str(exc)) from None
    raise FurnaceAssemblyError(f"controller {kind!r} is not available for furnaces")


def batch_for(recipe: FurnaceRecipe, kind: str) -> tuple[CurveSection, BatchSection]:
    """Curve and batch settings for ``kind``: the MPC runs the recipe's as written; the PID
    baseline runs them as plants do, on its measured signal with the fixed soak extension."""
    assert recipe.curve is not None and recipe.batch is not None
    return curve_transform(recipe, kind)(recipe.curve, recipe.batch)


def furnace_kpi_config(recipe: FurnaceRecipe) -> FurnaceKpiConfig:
    """KPI judgement: the curve's controlled signal, soaks, process limits and the common reference
    (the recipe's curve re-timed on the truth: the same for both controllers, whatever signal a
    controller's batch waits on and whatever margins it keeps)."""
    curve = recipe.curve
    assert curve is not None
    return FurnaceKpiConfig(
        controlled=curve.controlled,
        soak_required_s=tuple(s.time_s for s in curve.segments if s.kind == "soak"),
        pressure_limit_Pa=curve.pressure_limit_Pa,
        core_surface_dT_max_K=curve.core_surface_dT_max_K,
        segments=tuple(KpiSegment(s.kind, s.rate_degC_min, s.target_degC) for s in curve.segments),
        ramp_lag_limit_degC=curve.ramp_lag_limit_degC,
    )


def curve_transform(recipe: FurnaceRecipe, kind: str) -> Callable[[CurveSection, BatchSection],
                                                                   tuple[CurveSection, BatchSection]]:
    """What the controller kind makes of a curve (the recipe's or a per-batch one): the MPC runs it
    as written; the PID baseline soaks on its measured signal with the fixed extension, and, with
    learning enabled and ``guarantee_soak``, also waits for the estimated controlled signal's soak."""
    b = recipe.batch
    pid = recipe.controller.pid
    if kind != "baseline" or pid is None or b is None:
        return lambda c, s: (c, s)
    signal = b.baseline_soak_signal or pid.measurement
    extension = b.baseline_soak_extension_min
    guarantee = recipe.learning is not None and recipe.learning.enabled and recipe.learning.guarantee_soak
    return lambda c, s: (replace(c, controlled=signal),
                         replace(s, soak_signal=signal, soak_extension_min=extension,
                                 soak_confirm_signal=c.controlled if guarantee else s.soak_confirm_signal))


def outcome_config(recipe: FurnaceRecipe, kind: str) -> OutcomeConfig:
    """Signals a batch's measured outcome is computed from (power readbacks, gauge, estimates)."""
    curve, b = recipe.curve, recipe.batch
    assert curve is not None and b is not None
    run_curve, _ = batch_for(recipe, kind)
    pressure = next((n for n, s in recipe.io.inputs.items() if s.model_output == "chamber_pressure_Pa"), None)
    return OutcomeConfig(
        controlled=run_curve.controlled,
        power_mvs=tuple(n for n, mv in recipe.io.mvs.items() if mv.model_input.endswith("_kW")),
        pressure_signal=pressure, pressure_limit_Pa=curve.pressure_limit_Pa,
        dT_signal="core_surface_dT_K" if curve.core_surface_dT_max_K is not None else None,
        dT_max_K=curve.core_surface_dT_max_K,
        core_signal=curve.controlled, core_margin_sigmas=b.soak_margin_sigmas,
        soak_time_s=sum(s.time_s for s in curve.segments if s.kind == "soak"))
