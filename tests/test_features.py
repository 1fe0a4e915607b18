"""Tests of the soft-sensor feature builder (estimators.features)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from apc.types import Quality, Sample, ValidatedInput, Verdict
from estimators.features import FEATURES, FeatureBindings, FeatureBuilder, check_feature_names

UTC0 = 1_767_225_600.0
PERIOD = 5.0
ALL = tuple(FEATURES)


def ok(name: str, value: float, t: float) -> ValidatedInput:
    return ValidatedInput(name, Sample(value, Quality.GOOD, UTC0 + t, UTC0 + t), Verdict.OK)


def bad(name: str, value: float, t: float) -> ValidatedInput:
    return ValidatedInput(name, Sample(value, Quality.BAD, UTC0 + t, UTC0 + t), Verdict.BAD_QUALITY)


def drive(fb: FeatureBuilder, t_end: float, *, u: Callable[[float], float] = lambda t: 8.8,
          i: Callable[[float], float] = lambda t: 6.0, feed: Callable[[float], float] = lambda t: 10.0,
          anode: Callable[[float], float] = lambda t: 0.0, t_start: float = 0.0) -> dict[float, dict[str, float]]:
    """Run cycles every PERIOD seconds from t_start to t_end inclusive; return features by time."""
    out = {}
    for k in range(round(t_start / PERIOD), round(t_end / PERIOD) + 1):
        t = k * PERIOD
        inputs = {"cell_voltage": ok("cell_voltage", u(t), t), "line_current": ok("line_current", i(t), t)}
        out[t] = fb.update(t, inputs, {"oxide_feed": feed(t), "anode_move": anode(t)})
    return out


def test_unknown_feature_names_are_refused_with_the_known_list() -> None:
    """An unknown name raises ValueError naming it and listing every known feature."""
    with pytest.raises(ValueError) as exc:  # noqa: PT011 (the message is checked below)
        FeatureBuilder(("voltage_V", "bath_colour"))
    msg = str(exc.value)
    assert "bath_colour" in msg
    assert all(n in msg for n in FEATURES)
    with pytest.raises(ValueError, match="more than once"):
        check_feature_names(["voltage_V", "voltage_V"])
    with pytest.raises(ValueError, match="no features"):
        check_feature_names([])


def test_feature_needing_an_unbound_signal_is_refused() -> None:
    """A feature whose signal the bindings leave empty is refused at construction."""
    with pytest.raises(ValueError, match=r"anode_moves_2h_cm.*anode"):
        FeatureBuilder(("voltage_V", "anode_moves_2h_cm"), FeatureBindings(anode=""))
    FeatureBuilder(("voltage_V",), FeatureBindings(anode=""))  # not needed: fine


def test_values_on_a_constructed_sequence() -> None:
    """Slope, filtered voltage, 1 h feed mean, 2 h anode move sum and pseudo-resistance match hand calculations."""
    fb = FeatureBuilder(ALL)
    # Voltage ramps at 0.6 V/h; feed 10 kg/h, 14 kg/h from 2.5 h; anode moves +0.2 at 1 h, -0.1 at 2.2 h, +0.3 at 2.9 h.
    moves = [(3600.0, 0.2), (7920.0, -0.1), (10440.0, 0.3)]
    x = drive(fb, 3 * 3600.0, u=lambda t: 8.0 + 0.6 * t / 3600.0,
              feed=lambda t: 14.0 if t >= 9000.0 else 10.0,
              anode=lambda t: sum(d for tm, d in moves if t >= tm))
    f = x[3 * 3600.0]
    assert f["dVdt_V_h"] == pytest.approx(0.6, rel=1e-9)
    # The sampled first-order filter (tau 30 s, a = 1 - exp(-dt/tau)) lags a ramp by slope * dt * (1 - a)/a.
    a = 1.0 - math.exp(-PERIOD / 30.0)
    assert f["voltage_V"] == pytest.approx(8.0 + 0.6 * 3 - 0.6 / 3600 * PERIOD * (1 - a) / a, abs=1e-9)
    assert f["current_kA"] == pytest.approx(6.0)
    # Last hour: 10 kg/h until 9000 s, 14 kg/h after -> (1800*10 + 1800*14)/3600.
    assert f["feed_mean_1h_kg_h"] == pytest.approx(12.0, rel=1e-12)
    # Last 2 h (3600..10800 s]: the move at exactly 3600 s is outside; -0.1 + 0.3 inside.
    assert f["anode_moves_2h_cm"] == pytest.approx(0.2, abs=1e-12)
    assert f["pseudo_resistance_uohm"] == pytest.approx((f["voltage_V"] - 1.6) / 6.0 * 1e3, rel=1e-12)
    assert f["power_kW"] == pytest.approx(f["voltage_V"] * 6.0, rel=1e-12)
    # Windows longer than the history are not computable yet.
    assert math.isnan(f["feed_mean_4h_kg_h"]) and math.isnan(f["anode_moves_8h_cm"])
    assert fb.warmup_s == 8 * 3600.0


def test_window_features_are_nan_until_covered() -> None:
    """Windowed features are NaN until their whole window lies in the history, instantaneous ones are not."""
    fb = FeatureBuilder(("voltage_V", "dVdt_V_h", "feed_mean_1h_kg_h"))
    x = drive(fb, 3600.0)
    assert math.isnan(x[0.0]["dVdt_V_h"]) and not math.isnan(x[0.0]["voltage_V"])
    assert math.isnan(x[595.0]["dVdt_V_h"]) and x[600.0]["dVdt_V_h"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(x[3595.0]["feed_mean_1h_kg_h"]) and x[3600.0]["feed_mean_1h_kg_h"] == pytest.approx(10.0)


def test_invalid_signals_and_gaps_give_nan() -> None:
    """A bad voltage for longer than max_gap_s makes voltage features NaN; a readback gap voids the 1 h mean."""
    fb = FeatureBuilder(("voltage_V", "pseudo_resistance_uohm", "feed_mean_1h_kg_h"), max_gap_s=60.0)
    drive(fb, 3600.0)
    t = 3600.0
    for k in range(1, 20):  # 95 s of bad voltage and no feed readback
        t = 3600.0 + k * PERIOD
        x = fb.update(t, {"cell_voltage": bad("cell_voltage", 8.8, t), "line_current": ok("line_current", 6.0, t)}, {})
    assert math.isnan(x["voltage_V"]) and math.isnan(x["pseudo_resistance_uohm"])
    assert math.isnan(x["feed_mean_1h_kg_h"])
    x = drive(fb, t + 600.0, t_start=t + PERIOD)[t + 600.0]
    assert x["voltage_V"] == pytest.approx(8.8)
    assert math.isnan(x["feed_mean_1h_kg_h"])  # the gap is still inside the last hour
    x = drive(fb, t + 3700.0, t_start=t + 605.0)[t + 3700.0]
    assert x["feed_mean_1h_kg_h"] == pytest.approx(10.0)


def test_at_reproduces_past_features() -> None:
    """at(t) returns exactly the features computed at the last cycle at or before t, within the history."""
    rng = np.random.default_rng(7)
    noise = {k * PERIOD: float(rng.normal(0, 0.03)) for k in range(2 * 720 + 1)}
    fb = FeatureBuilder(("voltage_V", "dVdt_V_h", "feed_mean_1h_kg_h", "anode_moves_2h_cm"), history_s=3600.0)
    x = drive(fb, 7200.0, u=lambda t: 8.8 + noise[t], feed=lambda t: 9.0 + (t // 1800) % 2,
              anode=lambda t: 0.1 * (t // 2400))
    for t in (3600.0, 4000.0, 5555.0, 7195.0, 7200.0):
        assert fb.at(t) == x[t]
    assert fb.at(4002.5) == x[4000.0]  # between cycles: the cycle before
    assert fb.at(7230.0) == x[7200.0]  # just after the newest, within max_gap_s
    assert fb.at(3590.0) is None  # before the buffered history
    assert fb.at(7200.0 + 61.0) is None  # too far after the newest


def test_history_and_buffers_stay_bounded() -> None:
    """Over 30 simulated hours, the feature history and signal buffers stay within their windows."""
    fb = FeatureBuilder(ALL, history_s=3600.0)
    drive(fb, 30 * 3600.0, anode=lambda t: 0.1 * (t // 1800))
    per_h = 3600.0 / PERIOD
    sizes = fb.buffer_lengths()
    assert len(fb) <= per_h + 2
    assert sizes["history"] <= 2 * per_h + 260  # includes trimmed rows awaiting compaction
    assert sizes["anode"] <= 2 * 8 * per_h + 260  # longest anode window: 8 h
    assert sizes["feed"] <= 2 * 4 * per_h + 260
    assert sizes["voltage"] <= 2 * (600.0 / PERIOD) + 260
    span = fb.span_s
    assert span is not None and span[1] - span[0] <= 3600.0 + PERIOD


def test_hard_entry_cap_bounds_the_history() -> None:
    """max_entries caps the history even when history_s would allow more."""
    fb = FeatureBuilder(("voltage_V",), history_s=1e9, max_entries=100)
    drive(fb, 5000 * PERIOD)
    assert len(fb) == 100
    assert fb.buffer_lengths()["history"] <= 2 * 100 + 260


def test_time_going_backwards_restarts_the_history() -> None:
    """A non-increasing t_s clears the history instead of mixing two time lines."""
    fb = FeatureBuilder(("voltage_V", "dVdt_V_h"))
    drive(fb, 1200.0)
    assert fb.at(600.0) is not None
    fb.update(10.0, {"cell_voltage": ok("cell_voltage", 9.0, 10.0)}, {})
    assert len(fb) == 1 and fb.at(600.0) is None


def test_bindings_from_the_shipped_recipe() -> None:
    """Bindings from the shipped recipe name its voltage, current, feed and anode signals and its E0."""
    from apc.assembly import load
    from tests.helpers.sim_harness import ND_RECIPE

    b = FeatureBindings.from_recipe(load(ND_RECIPE).recipe)
    assert (b.voltage, b.current, b.feed, b.anode) == ("cell_voltage", "line_current", "oxide_feed", "anode_move")
    assert b.back_emf_V == 1.6 and b.voltage_filter_tau_s == 30.0
