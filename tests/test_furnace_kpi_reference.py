"""The furnace tracking KPI judges every controller against one common reference (apc.kinds.furnace.kpi)."""

from __future__ import annotations

import math

import pytest

from apc.cycle_record import BatchRecord
from apc.kinds.furnace.kpi import FurnaceKpiAccumulator, FurnaceKpiConfig, KpiSegment

RATE = 25.0  # K/min
LIMIT = 20.0
SEGMENTS = (KpiSegment("ramp", RATE, 950.0), KpiSegment("melt"), KpiSegment("ramp", 10.0, 1100.0),
            KpiSegment("soak"))


def config(segments: tuple[KpiSegment, ...] = SEGMENTS) -> FurnaceKpiConfig:
    """A VIM-like curve: ramp, melt, ramp, soak; the guaranteed ramp waits at a 20 K lag."""
    return FurnaceKpiConfig("charge_temp_degC", (600.0,), 5.0, None, segments, LIMIT)


def rec(segment: int, kind: str, target: float, state: str = "running") -> BatchRecord:
    """The batch's record of one cycle (band wide open)."""
    return BatchRecord(state, segment, kind, target, math.inf, -math.inf, None, 0.0, math.nan)


def feed(acc: FurnaceKpiAccumulator, rows: list[tuple[float, float, BatchRecord]]) -> float:
    """Feed (t_s, true temperature, batch record) rows; the tracking RMSE."""
    for t, y, b in rows:
        acc.account(t, {"charge_temp_degC": y, "energy_kWh": t / 100.0}, 0, False, b)
    return float(acc.result()["tracking_rmse_degC"])


def ramp_rows(truth_rate: float, own_ref: list[float]) -> list[tuple[float, float, BatchRecord]]:
    """A charge heating at ``truth_rate`` K/min from 25 °C, with the batch's own recorded references."""
    return [(5.0 * k, 25.0 + truth_rate * 5.0 * k / 60.0, rec(0, "ramp", r)) for k, r in enumerate(own_ref)]


def test_same_truth_same_rmse_whatever_reference_the_batch_waited_on() -> None:
    """Two runs with the same true temperature score the same RMSE although their batches recorded different
    references (one waiting on a lagging thermocouple, one on an estimate): the KPI's reference is common."""
    n = 200
    waits_on_tc = [25.0 + 22.0 * 5.0 * k / 60.0 for k in range(n)]  # a reference slowed by the thermocouple lag
    waits_on_est = [25.0 + 24.5 * 5.0 * k / 60.0 for k in range(n)]
    a = feed(FurnaceKpiAccumulator(config()), ramp_rows(20.0, waits_on_tc))
    b = feed(FurnaceKpiAccumulator(config()), ramp_rows(20.0, waits_on_est))
    assert a == pytest.approx(b, rel=1e-12)
    assert a > 5.0  # the charge lags a 25 K/min ramp: this is not a trivial zero


def test_reference_waits_on_the_true_temperature_at_the_lag_limit() -> None:
    """A pressure-limited charge (heating slower than the ramp) is judged against a reference at most the
    curve's lag limit (plus one cycle's step) ahead of its true temperature, not against the time schedule."""
    acc = FurnaceKpiAccumulator(config())
    rmse = feed(acc, ramp_rows(10.0, [math.nan] * 400))
    assert rmse + 1.0 >= LIMIT
    assert rmse <= LIMIT + RATE * 5.0 / 60.0


def test_a_faster_charge_tracks_better_on_the_common_reference() -> None:
    """Of two charges, the one heating closer to the curve's rate scores the lower RMSE."""
    slow = feed(FurnaceKpiAccumulator(config()), ramp_rows(21.0, [math.nan] * 300))
    fast = feed(FurnaceKpiAccumulator(config()), ramp_rows(24.0, [math.nan] * 300))
    assert fast < slow


def test_ramp_after_melt_restarts_from_the_true_temperature() -> None:
    """After a melt the common reference starts from the true temperature (not from the batch's entry value)."""
    rows = [(0.0, 1021.0, rec(1, "melt", math.nan)), (5.0, 1030.0, rec(2, "ramp", 1000.0))]
    rows += [(5.0 + 5.0 * k, 1030.0 + 10.0 * 5.0 * k / 60.0, rec(2, "ramp", 1000.0)) for k in range(1, 40)]
    acc = FurnaceKpiAccumulator(config())
    assert feed(acc, rows) == pytest.approx(0.0, abs=1e-9)  # truth follows the 10 K/min ramp from its own start


def test_soak_keeps_the_batch_reference() -> None:
    """In a soak the reference is the batch's own (the soak reference, identical for every controller)."""
    rows = [(5.0 * k, 1103.0, rec(3, "soak", 1100.0)) for k in range(10)]
    assert feed(FurnaceKpiAccumulator(config()), rows) == pytest.approx(3.0)


def test_config_round_trips_and_old_headers_judge_on_the_batch_target() -> None:
    """The header form carries the segments and the lag limit; a header without them (an older flight
    record) is judged against the batch's recorded target as before."""
    cfg = config()
    assert FurnaceKpiConfig.from_mapping(cfg.to_mapping()) == cfg
    old = {k: v for k, v in cfg.to_mapping().items() if k not in ("segments", "ramp_lag_limit_degC")}
    legacy = FurnaceKpiConfig.from_mapping(old)
    assert legacy.segments == ()
    rows = [(5.0 * k, 100.0, rec(0, "ramp", 104.0)) for k in range(10)]
    assert feed(FurnaceKpiAccumulator(legacy), rows) == pytest.approx(4.0)
