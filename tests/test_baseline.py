"""The industrial baseline: tracking feed, electrode moves, current hold, and its estimate."""

from __future__ import annotations

import math

import numpy as np

from apc.kinds.electrolysis_cell.recipe import FilteredEstimatorSection, TrackingFeedSection
from apc.types import Estimate, MvConstraint, Quality, Sample, ValidatedInput, Verdict
from controllers.tracking_feed import FeedPhase, MvNames, TrackingFeedController
from estimators.filtered import NAMES, UNITS, FilteredEstimator

CFG = TrackingFeedSection(nominal_feed_kg_h=10.0, slope_trigger_uohm_per_h=16.0, min_underfeed_s=1800.0,
                          max_underfeed_s=10800.0, overfeed_duration_s=3600.0, target_resistance_uohm=1200.0,
                          resistance_deadband_uohm=8.0, electrode_step_cm=0.1, electrode_min_interval_s=1800.0,
                          electrode_uohm_per_cm=133.0, target_correction_uohm_per_K=0.5)
APPLIED = {"oxide_feed": 10.0, "anode_move": 0.0, "current_sp": 6.0}


def est(voltage: float = 8.8, r: float = 1200.0, slope: float = 0.0, dip: float = 1050.0,
        anode_effect: bool = False) -> Estimate:
    return Estimate(NAMES, UNITS, (voltage, 6.0, r, slope, dip), None, "ok",
                    {"anode_effect_detected": 1.0 if anode_effect else 0.0})


def step(c: TrackingFeedController, t: float, e: Estimate, since_move_s: float = math.inf) -> dict[str, float]:
    lim = {"anode_move": MvConstraint(-5.0, 5.0, since_last_move_s=since_move_s)}
    return dict(c.step(t, e, APPLIED, dict.fromkeys(APPLIED, True), {}, lim).moves)


def test_feed_cycle_switches_on_slope_after_minimum_underfeed() -> None:
    """Overfeed lasts its duration; underfeed ignores a high slope before min_underfeed_s and switches after."""
    c = TrackingFeedController(CFG, MvNames("oxide_feed", "anode_move", "current_sp"))
    assert step(c, 0.0, est())["oxide_feed"] == 14.0
    assert step(c, 3600.0, est())["oxide_feed"] == 7.0 and c.phase is FeedPhase.UNDERFEED
    assert step(c, 3600.0 + 1000.0, est(slope=30.0))["oxide_feed"] == 7.0
    assert step(c, 3600.0 + 1900.0, est(slope=30.0))["oxide_feed"] == 14.0


def test_confirmed_anode_effect_forces_overfeed_at_once() -> None:
    """A confirmed anode effect ends the underfeed immediately; a high filtered voltage alone does not."""
    c = TrackingFeedController(CFG, MvNames("oxide_feed", "anode_move", "current_sp"))
    step(c, 0.0, est())
    step(c, 3600.0, est())
    assert c.phase is FeedPhase.UNDERFEED
    assert step(c, 3605.0, est(voltage=25.0))["oxide_feed"] == 7.0
    assert step(c, 3610.0, est(voltage=25.0, anode_effect=True))["oxide_feed"] == 14.0


def test_electrode_moves_toward_target_with_deadband_and_interval() -> None:
    """R above target moves the anode in (positive), limited to one step, once per interval counted from the unit's last confirmed move; inside the deadband nothing."""
    c = TrackingFeedController(CFG, MvNames("oxide_feed", "anode_move", "current_sp"))
    assert step(c, 0.0, est(r=1205.0))["anode_move"] == 0.0
    assert step(c, 5.0, est(r=1260.0))["anode_move"] == 0.1
    assert step(c, 10.0, est(r=1260.0), since_move_s=5.0)["anode_move"] == 0.0
    c.track({"anode_move": 0.0})  # STANDBY and back: the interval is the plant's, not the controller's
    assert step(c, 15.0, est(r=1260.0), since_move_s=10.0)["anode_move"] == 0.0
    assert math.isclose(step(c, 1900.0, est(r=1190.0), since_move_s=1895.0)["anode_move"], -10.0 / 133.0)


def test_current_is_held() -> None:
    """The baseline never moves the line current: its move equals the DCS readback."""
    c = TrackingFeedController(CFG, MvNames("oxide_feed", "anode_move", "current_sp"))
    assert step(c, 0.0, est())["current_sp"] == APPLIED["current_sp"]


def test_hot_dip_lowers_the_resistance_target() -> None:
    """A dip 10 K above target lowers the resistance target by gain·10 and the electrode moves accordingly."""
    c = TrackingFeedController(CFG, MvNames("oxide_feed", "anode_move", "current_sp"))
    step(c, 0.0, est(dip=1060.0))
    assert c.target_correction_uohm == -5.0
    step(c, 5.0, est(dip=1060.0))  # the same dip is applied once
    assert c.target_correction_uohm == -5.0


def _vi(value: float, verdict: Verdict = Verdict.OK) -> ValidatedInput:
    return ValidatedInput("x", Sample(value, Quality.GOOD, 0.0, 0.0), verdict)


def test_filtered_estimator_slope_matches_a_ramp_and_resets_on_electrode_moves() -> None:
    """A resistance ramp of 20 uOhm/h gives that slope; an electrode move clears the fit (slope NaN) but stays healthy."""
    rng = np.random.default_rng(3)
    f = FilteredEstimator(FilteredEstimatorSection(mean_interval_s=120.0, slope_window_s=1200.0),
                          voltage="u", current="i", dip="d", electrode="anode_move")
    e = None
    for k in range(400):
        t = k * 5.0
        r_uohm = 1200.0 + 20.0 * t / 3600.0
        u = 1.6 + r_uohm * 1e-6 * 6000.0 + 0.001 * rng.standard_normal()
        e = f.update(t, {"u": _vi(u), "i": _vi(6.0)}, {"anode_move": 0.0})
    assert e is not None and e.healthy
    assert abs(e.value("resistance_slope_uohm_h") - 20.0) < 1.0
    e = f.update(2000.0, {"u": _vi(8.8), "i": _vi(6.0)}, {"anode_move": 0.1})
    assert math.isnan(e.value("resistance_slope_uohm_h")) and e.healthy


def test_filtered_estimator_reports_invalid_voltage_and_keeps_last_value() -> None:
    """An invalid voltage makes the estimate unhealthy with a reason and never enters the filter."""
    f = FilteredEstimator(FilteredEstimatorSection(), voltage="u", current="i", dip="d")
    f.update(0.0, {"u": _vi(8.8), "i": _vi(6.0)}, {})
    e = f.update(5.0, {"u": _vi(float("nan"), Verdict.NOT_FINITE), "i": _vi(6.0)}, {})
    assert not e.healthy and "u invalid" in e.health
    assert e.value("cell_voltage_V") == 8.8
