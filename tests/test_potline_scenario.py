"""The potline scenario's event kinds, its per-seed event series, and the series (line current) bench variant."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from pathlib import Path

import pytest

from apc.assembly import build_sim_unit, load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.recipe.group_schema import line_current_mv
from apc.simulate import run_on, simulate
from apc.types import Mode
from sim.cell_plant import CellPlant
from sim.plant_events import expand_series
from sim.scenario import Event, EventSeries, ScenarioError, load_scenario, scenario_from_mapping

from .test_cell_plant import nominal_mapping

NOMINAL = load_scenario("nominal")
POTLINE = load_scenario("potline_week")
ROOT = Path(__file__).resolve().parent.parent
DT = NOMINAL.plant_dt_s


def _fed_kg(events: tuple[Event, ...], hours: float, feed_kg_h: float = 10.0) -> float:
    plant = CellPlant(dataclasses.replace(NOMINAL, events=events), 3)
    plant.set_feed_rate(feed_kg_h)
    plant.advance_to(hours * 3600.0)
    return plant.oxide_fed_kg


def test_feeder_bias_delivers_one_plus_bias_times_the_command() -> None:
    """With a +20 % feeder bias the bath gets 1.2x the oxide of the unbiased feeder (within one shot)."""
    plain = _fed_kg((), 2.0)
    biased = _fed_kg((Event(0.0, "feeder_bias", duration_h=10.0, value=0.2),), 2.0)
    shot = NOMINAL.feeder_shot_kg
    assert plain == pytest.approx(10.0 * 2.0 - 10.0 * NOMINAL.feeder_dead_time_s / 3600.0, abs=shot)
    assert biased == pytest.approx(1.2 * plain, abs=shot)


def test_feeder_blockage_and_oxide_quality() -> None:
    """A blocked feeder delivers nothing while blocked; -10 % oxide content delivers 0.9x the oxide."""
    plain = _fed_kg((), 2.0)
    blocked = _fed_kg((Event(0.5, "feeder_blocked", duration_h=1.0),), 2.0)
    assert blocked == pytest.approx(plain - 10.0 * 1.0, abs=2 * NOMINAL.feeder_shot_kg)
    poor = _fed_kg((Event(0.0, "oxide_quality", duration_h=10.0, value=-0.1),), 2.0)
    assert poor == pytest.approx(0.9 * plain, abs=1e-9)


def test_thermocouple_drift_shifts_the_dip_reading() -> None:
    """A drift of 1.5 K/h from hour 0.5 makes the 2 h dip read 1.5 x (its time - 0.5 h) K higher, nothing else."""
    def dip(events: tuple[Event, ...]) -> tuple[float, float]:
        plant = CellPlant(dataclasses.replace(NOMINAL, events=events), 5)
        plant.set_feed_rate(9.0)
        plant.advance_to(2.0 * 3600.0 + NOMINAL.dip_duration_s + DT)
        return plant.measurements()["bath_temp_dip_degC"].value, plant.truth()["bath_temp_degC"]

    plain, t_plain = dip(())
    drifted, t_drifted = dip((Event(0.5, "thermocouple_drift", duration_h=10.0, value=1.5),))
    read_at_h = (2.0 * 3600.0 + NOMINAL.dip_duration_s) / 3600.0
    assert drifted - plain == pytest.approx(1.5 * (read_at_h - 0.5), abs=1e-6)
    assert t_drifted == t_plain  # the bath itself is untouched


def test_scheduled_anode_change_jumps_the_gap_and_the_cold_anode_cools_the_bath() -> None:
    """An anode change at 1 h closes the gap by its jump in one step; its heat_kJ then cools the bath."""
    change = Event(1.0, "anode_change", value=-0.7, heat_kJ=9000.0, duration_h=0.5)

    def run(events: tuple[Event, ...]) -> tuple[float, float, float]:
        plant = CellPlant(dataclasses.replace(NOMINAL, events=events), 7)
        plant.set_feed_rate(9.0)
        plant.advance_to(3600.0 - DT)
        before = plant.truth()["acd_cm"]
        plant.advance_to(3600.0 + DT)
        after = plant.truth()["acd_cm"]
        plant.advance_to(3.0 * 3600.0)
        return before, after, plant.truth()["bath_temp_degC"]

    b0, a0, _ = run(())
    b1, a1, t1 = run((dataclasses.replace(change, heat_kJ=0.0),))
    _, a2, t2 = run((change,))
    assert b1 == b0 and (a1 - b1) - (a0 - b0) == pytest.approx(-0.7, abs=1e-9)
    assert a2 == a1
    # 9 MJ on the bath's 900 kJ/K is 10 K, partly given back by the heat balance within 2 h.
    assert 2.0 < t1 - t2 < 10.0


def test_tap_jitter_moves_taps_within_the_stated_spread() -> None:
    """With a ±1 h tap jitter the first tap comes within 1 h of its 8 h schedule, and not exactly on it."""
    sc = dataclasses.replace(NOMINAL, tap_time_jitter_h=1.0, tap_heel_jitter_kg=5.0)
    plant = CellPlant(sc, 11)
    plant.set_feed_rate(9.0)
    plant.advance_to(7.0 * 3600.0 - DT)
    assert plant.metal_tapped_kg == 0.0
    tapped_at = None
    while plant.t_s < 9.0 * 3600.0 and tapped_at is None:
        plant.advance_to(plant.t_s + DT)
        if plant.metal_tapped_kg > 0.0:
            tapped_at = plant.t_s
    assert tapped_at is not None and abs(tapped_at - 8.0 * 3600.0) > DT
    heel = plant.truth()["metal_pool_kg"]
    assert 25.0 - 1.0 < heel < 35.0 + 1.0


def test_event_series_are_drawn_per_seed_within_their_spreads() -> None:
    """A series draws the same events for a seed, others for another seed, within first/every/jitter/value spreads."""
    s = {"changes": EventSeries(kind="anode_change", first_h=6.0, first_spread_h=24.0, every_h=24.0, jitter_h=1.0,
                                value=-0.72, value_spread=0.15)}
    a, b, c = (expand_series(s, seed, 6.0, DT, horizon_h=168.0) for seed in (1, 1, 2))
    assert a == b and a != c
    assert 6 <= len(a) <= 7
    for k, ev in enumerate(a):
        assert ev.kind == "anode_change" and -0.87 <= ev.value <= -0.57
        if k:
            assert 22.0 <= ev.at_h - a[k - 1].at_h <= 26.0
    assert 5.0 <= a[0].at_h <= 31.0


def test_rectifier_order_ramps_within_the_apc_rate_and_returns_the_line_current() -> None:
    """A rectifier order caps the current down to the order at its ramp rate, holds it, and a line current no
    one writes comes back to the scenario's current afterwards."""
    order = EventSeries(kind="rectifier_order", first_h=1.0, every_h=100.0, count=1, value=5.5, duration_h=1.0)
    events = expand_series({"o": order}, 4, 6.0, DT)
    caps = [e.value for e in events if e.kind == "output_limit"]
    assert min(caps) == pytest.approx(5.5) and caps[0] < 6.5
    assert all(0.0 < a - b <= order.ramp_kA_s * DT + 1e-12 for a, b in itertools.pairwise(caps))
    plant = CellPlant(dataclasses.replace(NOMINAL, events=events), 4)
    from plant_io.sim_plant import DcsSide
    dcs = DcsSide(plant, 30.0, 9.2, 1.0)
    seen = []
    while plant.t_s < 3.5 * 3600.0:
        plant.advance_to(plant.t_s + DT)
        dcs.scan(plant.t_s)
        seen.append((plant.t_s, plant.current_sp_kA))
    in_order = [i for t, i in seen if 1.3 * 3600.0 < t < 2.0 * 3600.0]
    assert in_order and all(i == pytest.approx(5.5) for i in in_order)
    assert seen[-1][1] == pytest.approx(6.0, abs=1e-9)


def test_potline_scenario_loads_and_bad_series_are_rejected() -> None:
    """potline_week loads with its six series; an unknown series kind or key names file and key."""
    assert POTLINE.hours == 168.0 and len(POTLINE.event_series) == 6
    assert {s.kind for s in POTLINE.event_series.values()} == {
        "anode_change", "feeder_bias", "feeder_blocked", "oxide_quality", "thermocouple_drift", "rectifier_order"}
    with pytest.raises(ScenarioError, match=r"x\.yaml.*event_series\.a\.kind"):
        scenario_from_mapping(nominal_mapping(event_series={"a": {"kind": "meteor", "every_h": 1.0}}), "x.yaml")
    with pytest.raises(ScenarioError, match=r"x\.yaml.*event_series\.a"):
        scenario_from_mapping(nominal_mapping(event_series={"a": {"kind": "anode_change", "evry_h": 1.0}}), "x.yaml")


def test_filtered_estimator_gives_the_baseline_the_same_decisions() -> None:
    """The tuning's shortcut holds: the baseline with estimator.kind filtered has the KPIs it has with the EKF."""
    import bench.tune_baseline as tune
    loaded = load(ROOT / "recipes" / "nd_cell_6ka.yaml")
    sc = dataclasses.replace(POTLINE, hours=2.0)
    full = asyncio.run(simulate(loaded, sc, seed=3, hours=2.0, controller="baseline")).kpis
    quick = asyncio.run(simulate(tune.with_tuning(loaded, {}, filtered_only=True), sc, seed=3, hours=2.0,
                                 controller="baseline")).kpis
    assert full == quick


def test_series_variant_never_writes_the_current_and_still_plans_feed_and_electrode() -> None:
    """With its current MV given to the line the MPC writes feed and electrode, never the current tag, and
    plans the current flat at its readback."""
    loaded = load(ROOT / "recipes" / "nd_cell_6ka.yaml")
    clock = VirtualClock()
    unit, io = build_sim_unit("t", loaded, NOMINAL, 31, clock, audit=null_logger(), controller_kind="mpc")
    mv, _ = line_current_mv(loaded.recipe, None)
    unit.give_to_line(mv, "line current is a line disturbance (test)", clock.utc())
    tag = loaded.recipe.io.mvs[mv].tag
    written: dict[str, int] = {}
    plans = []
    apply = io.dcs.apply

    def counted(t: str, value: float, now_s: float):  # type: ignore[no-untyped-def]
        written[t] = written.get(t, 0) + 1
        return apply(t, value, now_s)

    io.dcs.apply = counted  # type: ignore[method-assign]

    def observe(record: object) -> None:
        plan = getattr(unit.controller, "planned", None)
        if plan is not None and unit.modes.actual is Mode.ON:
            plans.append(list(plan(mv)))

    asyncio.run(run_on(unit, clock, 1.0, who="test", where="test", after_cycle=observe))  # ON after ~40 min
    assert written.get(tag, 0) == 0 and written.get(loaded.recipe.io.mvs[mv].active_flag or "", 0) == 0
    feed_tag = loaded.recipe.io.mvs["oxide_feed"].tag
    assert written.get(feed_tag, 0) > 10
    assert plans and all(max(p) - min(p) < 1e-9 for p in plans if p)
    assert not math.isnan(plans[-1][0]) and plans[-1][0] == pytest.approx(NOMINAL.current_kA, abs=0.05)
