"""How a cell recipe becomes an estimator and a controller: the baseline signals, the cell Kalman
filter with its soft sensor, the tracking-feed baseline and the cell MPC."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from apc.assembly import AssemblyError
from apc.kinds.electrolysis_cell.anode_effect import AnodeEffectConfig
from apc.kinds.electrolysis_cell.anode_effect_forecast import AeForecastConfig
from apc.kinds.electrolysis_cell.recipe import CellRecipe
from apc.protocols import Controller, Estimator
from controllers.cell_mpc import CellMpc
from controllers.tracking_feed import MvNames, TrackingFeedController
from estimators.ae_forecast import FORECAST_EXTRAS, ForecastingEstimator
from estimators.cell_ekf import BIASES, CellEkf, bindings_for
from estimators.composite import CompositeEstimator
from estimators.features import FeatureBindings, check_feature_names
from estimators.filtered import AE_DETECTED, FilteredEstimator
from estimators.filtered import NAMES as FILTERED_NAMES
from estimators.soft_sensor import SoftSensorError, load_soft_sensor
from sim.models import get_model

EKF_EXTRAS = ("dissolved_oxide_wtpct", "dissolved_oxide_std_wtpct", "oxide_saturation_wtpct", "ae_margin_A_cm2",
              "current_efficiency", "bath_temp_std_degC", "metal_temp_std_degC", "critical_oxide_wtpct",
              "dissolved_oxide_rate_wtpct_h")
"""Estimate signals of the cell filter that permissives may name."""

FEED_INPUT, ANODE_INPUT, CURRENT_INPUT = "feed_kg_h", "anode_move_cm_h", "current_kA"
"""Model inputs of the cell's three MVs (the baseline finds its MVs by them)."""


def signal_names(recipe: CellRecipe) -> Iterable[str]:
    """Names a permissive may use besides inputs and MVs: estimate signals. Checks the model's
    parameter and input names and the soft sensor (raising names the problem)."""
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
        return (*FILTERED_NAMES, AE_DETECTED, *FORECAST_EXTRAS, *model.state_names, *(b.name for b in BIASES),
                *EKF_EXTRAS, *soft_names)
    return (*FILTERED_NAMES, AE_DETECTED, *FORECAST_EXTRAS)


def file_problems(recipe: CellRecipe, recipe_dir: Path) -> list[tuple[str, str]]:
    """The soft sensor's ONNX model must load with the recipe's tensor names and features."""
    soft = recipe.estimator.soft_sensor
    if soft is None or recipe.estimator.kind != "ekf" or not (recipe_dir / soft.model_file).is_file():
        return []  # a missing file is reported by the cross-check
    try:
        load_soft_sensor(soft, recipe_dir, bindings=FeatureBindings.from_recipe(recipe))
    except (SoftSensorError, ValueError, KeyError) as exc:
        return [("estimator.soft_sensor.model_file", str(exc))]
    return []


def mv_names(recipe: CellRecipe) -> MvNames:
    """The recipe's feed, anode and current MVs (by the model input each drives)."""
    io_ = recipe.io
    return MvNames(feed=io_.mv_driving(FEED_INPUT) or "", anode=io_.mv_driving(ANODE_INPUT) or "",
                   current=io_.mv_driving(CURRENT_INPUT) or "")


def build_estimator(recipe: CellRecipe, recipe_dir: Path | None = None,
                    controller_kind: str | None = None) -> Estimator:
    """The recipe's estimator with its tuning.

    ``filtered``: the baseline signals; ``ekf``: those plus the cell's
    Kalman filter (and the ONNX soft sensor when the recipe names one). The
    filter's health gates the unit only for a controller that uses its
    states (``mpc``); the baseline is gated by the signals it reads. Either
    carries the anode-effect forecast in its extras (the oxide route only with
    the filter), whichever controller reads it.
    """
    forecast_cfg = AeForecastConfig.from_recipe(recipe)
    return ForecastingEstimator(_build_estimator(recipe, recipe_dir, controller_kind), forecast_cfg)


def _build_estimator(recipe: CellRecipe, recipe_dir: Path | None, controller_kind: str | None) -> Estimator:
    """The recipe's estimator without the forecast."""
    signals = FilteredEstimator(
        recipe.estimator.filtered,
        voltage=recipe.io.input_with_unit("V") or "",
        current=recipe.io.input_with_unit("kA") or "",
        dip=recipe.io.input_with_unit("degC", ("sample",)) or "",
        electrode=mv_names(recipe).anode,
        anode_effect_voltage_V=AnodeEffectConfig.from_recipe(recipe).voltage_V,
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


def build_controller(recipe: CellRecipe, kind: str | None = None, *, real_time: bool = False) -> Controller:
    """The recipe's controller (or ``kind`` when the command line overrides it).

    ``real_time``: the unit runs on the wall clock (``apc run``); solvers then
    also honour their wall-time budget. Virtual-time runs cap iterations only,
    so they stay deterministic.
    """
    kind = kind or recipe.controller.kind
    if kind == "baseline":
        if recipe.controller.baseline is None:
            raise AssemblyError("controller.baseline section is missing")
        return TrackingFeedController(recipe.controller.baseline, mv_names(recipe))
    if kind == "mpc":
        return _build_mpc(recipe, real_time)
    raise AssemblyError(f"controller {kind!r} is not available in this version")


def _build_mpc(recipe: CellRecipe, real_time: bool) -> Controller:
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
