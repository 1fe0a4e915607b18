"""Requested vs actual mode, warm-up, latched sheds (apc.modes) and their effect on a unit's writes."""

from __future__ import annotations

import math

import pytest

from apc.modes import ModeConditions, ModeManager
from apc.types import Mode
from tests.helpers.sim_harness import (
    SimUnit,
    event_from_cycle,
    is_on,
    move_writes,
    scenario,
    written,
)

WARMUP = 600.0
SHED_AFTER = 6
PERIOD = 5.0


def cond(t: float, *, healthy: bool = True, link: bool = True, failure: str = "", immediate: str = "") -> ModeConditions:
    return ModeConditions(
        t_s=t, healthy=healthy, health_reason="" if healthy else "bad", link_ok=link,
        link_reason="" if link else "link lost", failure=failure, immediate_shed=immediate,
    )


def warm_manager() -> tuple[ModeManager, float]:
    """A manager requested ON that has just become ON; returns it and the next time."""
    m = ModeManager(WARMUP, SHED_AFTER)
    m.request(Mode.ON)
    t = 0.0
    while m.decide(cond(t)).actual is not Mode.ON:
        t += PERIOD
        assert t <= WARMUP
    return m, t + PERIOD


# ----------------------------------------------------------------- ModeManager


def test_starts_off_and_stays_off_until_requested() -> None:
    """A new manager is requested OFF and actually OFF, whatever the conditions."""
    m = ModeManager(WARMUP, SHED_AFTER)
    for t in range(0, 2000, 5):
        d = m.decide(cond(float(t)))
        assert (d.requested, d.actual, d.new_shed) == (Mode.OFF, Mode.OFF, False)


def test_on_refused_until_healthy_for_warmup() -> None:
    """ON is granted exactly when conditions have been healthy for warmup_s; STANDBY with a reason before."""
    m = ModeManager(WARMUP, SHED_AFTER)
    m.request(Mode.ON)
    t = 0.0
    while t < WARMUP:
        d = m.decide(cond(t))
        assert (d.requested, d.actual) == (Mode.ON, Mode.STANDBY)
        assert "warming up" in d.hold_reason
        t += PERIOD
    assert m.decide(cond(WARMUP)).actual is Mode.ON


def test_unhealthy_or_link_loss_restarts_warmup() -> None:
    """Any unhealthy or link-down cycle during warm-up restarts the warm-up clock."""
    m = ModeManager(WARMUP, SHED_AFTER)
    m.request(Mode.ON)
    for t in (0.0, 100.0, 200.0):
        m.decide(cond(t))
    assert m.decide(cond(205.0, healthy=False)).actual is Mode.STANDBY
    assert m.decide(cond(300.0)).actual is Mode.STANDBY  # healthy again from 300
    assert m.decide(cond(400.0, link=False)).actual is Mode.STANDBY
    assert m.decide(cond(500.0)).actual is Mode.STANDBY  # healthy again from 500
    assert m.decide(cond(500.0 + WARMUP - PERIOD)).actual is Mode.STANDBY
    assert m.decide(cond(500.0 + WARMUP)).actual is Mode.ON


def test_link_loss_before_on_holds_without_latching() -> None:
    """Link loss while not yet ON holds in STANDBY with the link reason but latches no shed."""
    m = ModeManager(WARMUP, SHED_AFTER)
    m.request(Mode.ON)
    d = m.decide(cond(0.0, link=False))
    assert d.actual is Mode.STANDBY and d.hold_reason == "link lost"
    assert (d.new_shed, d.shed_reason, m.shed_reason) == (False, "", "")


def test_shed_after_n_consecutive_failures_then_latched() -> None:
    """ON holds for shed_after-1 failing cycles, sheds on the n-th, and stays STANDBY when conditions recover."""
    m, t = warm_manager()
    for _ in range(SHED_AFTER - 1):
        d = m.decide(cond(t, healthy=False, failure="bad inputs: x"))
        assert d.actual is Mode.ON and d.hold_reason == "bad inputs: x" and not d.new_shed
        t += PERIOD
    d = m.decide(cond(t, healthy=False, failure="bad inputs: x"))
    assert d.actual is Mode.STANDBY and d.new_shed
    assert "bad inputs: x" in d.shed_reason
    for _ in range(2 * int(WARMUP / PERIOD)):
        t += PERIOD
        d = m.decide(cond(t))
        assert d.actual is Mode.STANDBY and not d.new_shed
        assert "bad inputs: x" in d.shed_reason  # latched, with its reason
    assert d.requested is Mode.ON


def test_good_cycle_resets_failure_count() -> None:
    """Failures must be consecutive: one good cycle in between prevents the shed."""
    m, t = warm_manager()
    for _ in range(3):
        for _ in range(SHED_AFTER - 1):
            assert m.decide(cond(t, failure="f")).actual is Mode.ON
            t += PERIOD
        assert m.decide(cond(t)).actual is Mode.ON
        t += PERIOD


def test_immediate_shed_and_link_loss_shed_at_once() -> None:
    """An immediate-shed condition or link loss while ON sheds in the same cycle, with its reason."""
    m, t = warm_manager()
    d = m.decide(cond(t, immediate="DCS took loop(s) out of remote: feed"))
    assert (d.actual, d.new_shed, d.shed_reason) == (Mode.STANDBY, True, "DCS took loop(s) out of remote: feed")
    m2, t2 = warm_manager()
    d2 = m2.decide(cond(t2, link=False))
    assert (d2.actual, d2.new_shed, d2.shed_reason) == (Mode.STANDBY, True, "link lost")


def test_fresh_request_clears_latch_and_reengages_after_warmup() -> None:
    """A new ON request clears the latch; the unit re-engages after a fresh warm-up."""
    m, t = warm_manager()
    d = m.decide(cond(t, link=False))
    assert d.new_shed
    t += PERIOD
    m.request(Mode.ON)
    assert m.shed_reason == ""
    t_ok = t
    while m.decide(cond(t)).actual is not Mode.ON:
        t += PERIOD
        assert t <= t_ok + WARMUP
    assert t == t_ok + WARMUP


def test_request_standby_and_off_override_on() -> None:
    """Requesting STANDBY gives STANDBY, requesting OFF gives OFF, even when everything is healthy."""
    m, t = warm_manager()
    m.request(Mode.STANDBY)
    d = m.decide(cond(t))
    assert (d.requested, d.actual, d.previous) == (Mode.STANDBY, Mode.STANDBY, Mode.ON)
    m.request(Mode.OFF)
    d = m.decide(cond(t + PERIOD))
    assert (d.requested, d.actual, d.previous) == (Mode.OFF, Mode.OFF, Mode.STANDBY)


# ------------------------------------------------------- unit against the plant


def first_index(records: list[dict], pred) -> int:  # type: ignore[no-untyped-def]
    return next(i for i, r in enumerate(records) if pred(r))


def test_sim_on_granted_warmup_after_first_healthy_cycle() -> None:
    """Against the plant, ON comes exactly estimator.warmup_s after inputs and estimator became healthy."""
    su = SimUnit(seed=11)
    su.request(Mode.ON)
    su.run_until(is_on, 1500)
    recs = su.records
    healthy = first_index(recs, lambda r: r.estimate.health == "ok")
    on = len(recs) - 1
    warmup = su.recipe.estimator.warmup_s
    assert recs[on].actual_mono_s - recs[healthy].actual_mono_s == warmup
    for r in recs[:on]:
        assert (r.mode.requested, r.mode.actual) == ("ON", "STANDBY")
        assert r.mode.hold, "a refused ON must say why"
        assert move_writes(r, su.recipe) == []


def test_sim_input_fault_during_warmup_restarts_it() -> None:
    """A bad cell voltage during warm-up delays ON until warmup_s after inputs and estimator are healthy again."""
    recipe = SimUnit(seed=11).recipe
    f = recipe.estimator.filtered
    healthy_at = round(f.slope_window_s / recipe.period_s) + 1  # one full slope window of means
    fault_from = healthy_at + round(recipe.estimator.warmup_s / recipe.period_s / 2)  # mid warm-up
    ev = {"kind": "input_fault", "signal": "cell_voltage_V", "fault": "bad",
          "at_h": event_from_cycle(fault_from), "duration_h": 0.05}
    su = SimUnit(scen=scenario(events=[ev]), seed=11)
    su.request(Mode.ON)
    su.run_until(is_on, 2000)
    recs = su.records
    on = len(recs) - 1

    def healthy(r: dict) -> bool:  # type: ignore[type-arg]
        return bool(r.estimate.health == "ok" and r.inputs["cell_voltage"].verdict == "ok")

    assert first_index(recs, healthy) < fault_from < on  # the fault did interrupt a warm-up
    bad = [i for i, r in enumerate(recs) if r.inputs["cell_voltage"].verdict != "ok"]
    assert bad[0] == fault_from
    again = next(i for i in range(bad[-1] + 1, len(recs)) if healthy(recs[i]))
    assert all(healthy(r) for r in recs[again:])
    warmup = su.recipe.estimator.warmup_s
    assert recs[on].actual_mono_s - recs[again].actual_mono_s == warmup


def test_sim_off_writes_no_setpoint_and_no_active_flag() -> None:
    """In OFF (initially and after ON) no setpoint or active=1 is written; the hand-back clears every loop."""
    su = SimUnit(seed=12)
    off_recs = su.step(50)  # never requested: OFF
    su.go_on()
    su.step(20)
    su.request(Mode.OFF)
    handback = su.step()[0]
    off_recs += su.step(100)
    active_flags = [mv.active_flag for mv in su.recipe.io.mvs.values()]
    assert handback.mode.actual == "OFF"
    assert sorted(written(handback, f)[0] for f in active_flags) == [0.0, 0.0, 0.0]
    for r in [*off_recs, handback]:
        assert r.mode.actual == "OFF"
        assert r.plan is None
        assert move_writes(r, su.recipe) == []
        assert all(w.value == 0.0 for w in r.writes if w.tag in active_flags)
        assert len(written(r, su.recipe.io.heartbeat.apc_tag)) == 1
    assert not any(loop.remote for loop in su.io.dcs.loops.values())
    assert off_recs[-1].readback["oxide_feed"] == su.io.plant.scenario.dcs_local_feed_kg_h


def test_sim_standby_computes_plan_but_writes_nothing() -> None:
    """Requested STANDBY: the controller runs (plan with moves in the record) but no setpoint and active=0."""
    su = SimUnit(seed=13)
    su.request(Mode.STANDBY)
    recs = su.step(600)
    planned = [r for r in recs if r.plan is not None and r.plan.status == "ok"]
    assert len(planned) > 200
    for r in planned:
        assert set(r.plan.moves) == set(su.recipe.io.mvs)
    for r in recs:
        assert r.mode.actual == "STANDBY"
        assert move_writes(r, su.recipe) == []
        flags = [w.value for w in r.writes if w.tag.endswith("apc_active")]
        assert flags == [0.0, 0.0, 0.0]
    assert not any(loop.remote for loop in su.io.dcs.loops.values())


def test_sim_shed_latches_until_requested_again() -> None:
    """A bad-input shed latches STANDBY with its reason after the input recovers; a fresh ON request re-engages."""
    fault_from = 900  # well after ON (slope window + warm-up)
    ev = {"kind": "input_fault", "signal": "cell_voltage_V", "fault": "bad",
          "at_h": event_from_cycle(fault_from), "duration_h": 0.1}
    su = SimUnit(scen=scenario(events=[ev]), seed=14)
    su.go_on()
    assert su.k < fault_from
    su.step(fault_from - su.k)
    su.run_until(lambda r: r.shed, 50)
    latched = su.step(400)  # fault lasts 72 cycles; afterwards everything is healthy again
    assert latched[-1].inputs["cell_voltage"].verdict == "ok"
    assert latched[-1].estimate.health == "ok"
    for r in latched:
        assert r.mode.requested == "ON" and r.mode.actual == "STANDBY"
        assert "cell_voltage" in r.shed_reason and not r.shed
        assert move_writes(r, su.recipe) == []
    su.request(Mode.ON)
    after = su.step()[0]
    assert after.shed_reason == ""
    # The inputs have been healthy for far longer than warmup_s: ON at once.
    assert is_on(after)
    assert written(after, "feed.sp_kg_h") and written(after, "current.sp_kA")


def test_sim_loop_taken_local_sheds_at_once_naming_the_loop() -> None:
    """The DCS taking the feed loop to local while ON sheds in that very cycle, naming the MV; no writes follow."""
    ev_k = 700
    ev = {"kind": "loop_local", "signal": "feed", "at_h": event_from_cycle(ev_k), "duration_h": 0.2}
    su = SimUnit(scen=scenario(events=[ev]), seed=15)
    su.go_on()
    before = su.step(ev_k - su.k)
    assert all(is_on(r) for r in before[-5:])
    shed = su.step()[0]
    assert shed.shed is True
    assert "oxide_feed" in shed.shed_reason and "remote" in shed.shed_reason
    rest = su.step(200)
    for r in [shed, *rest]:
        assert r.mode.actual == "STANDBY"
        assert move_writes(r, su.recipe) == []
    assert sum(r.shed for r in su.records) == 1
    assert rest[-1].readback["oxide_feed"] == su.io.plant.scenario.dcs_local_feed_kg_h


def test_sim_dcs_heartbeat_freeze_goes_standby_without_writes() -> None:
    """A frozen DCS heartbeat takes the unit to STANDBY within the timeout; no setpoint is written during the freeze."""
    ev_k = 700
    freeze_h = 0.25
    ev = {"kind": "dcs_heartbeat_freeze", "at_h": event_from_cycle(ev_k), "duration_h": freeze_h}
    su = SimUnit(scen=scenario(events=[ev]), seed=16)
    su.go_on()
    su.step(ev_k - su.k)
    timeout_cycles = su.recipe.io.heartbeat.dcs_timeout_s / su.period
    freeze = su.step(int(freeze_h * 3600 / su.period) - 2)
    first_standby = first_index(freeze, lambda r: not is_on(r))
    assert timeout_cycles - 1 <= first_standby <= math.ceil(timeout_cycles) + 1
    assert freeze[first_standby].shed and "heartbeat" in freeze[first_standby].shed_reason
    for r in freeze[first_standby:]:
        assert r.mode.actual == "STANDBY"
        assert move_writes(r, su.recipe) == []
        assert written(r, su.recipe.io.heartbeat.apc_tag)  # our heartbeat keeps counting


@pytest.mark.parametrize("mode", [Mode.STANDBY, Mode.OFF])
def test_sim_requested_mode_is_recorded_separately_from_actual(mode: Mode) -> None:
    """The record carries the requested mode and the actual one; a request other than ON ends ON at once."""
    su = SimUnit(seed=17)
    su.go_on()
    su.request(mode)
    r = su.step()[0]
    assert r.mode.requested == mode.value and r.mode.actual == mode.value
    assert move_writes(r, su.recipe) == []


def test_sim_link_loss_shed_names_the_link_not_the_remote_status() -> None:
    """A lost plant link sheds the ON unit with the link as the reason (the first cause), not "DCS took loop(s) out of remote"."""
    su = SimUnit(seed=16)
    su.go_on()
    su.step(3)

    async def lost(tags: object) -> object:
        raise ConnectionError("plant link down")

    su.unit.io.read = lost  # type: ignore[method-assign]
    shed = su.step()[0]
    assert shed.shed and shed.shed_reason.startswith("read failed: ConnectionError: plant link down")
