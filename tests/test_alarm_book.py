"""The alarm book and rules without a server: one condition per cause, operator actions, shelving, persistence."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from apc.alarms.book import AlarmBook, AlarmRefused, AlarmStateError
from apc.alarms.rules import ActiveCause, UnitAlarmRules, UnitSignals
from apc.audit import make_logger
from apc.cycle_record import CycleRecord, EstimateRecord, InputRecord, ModeRecord, PlanRecord
from apc.kinds.electrolysis_cell.alarms import SpecificEnergyRule
from apc.recipe.schema import AlarmsSection
from tests.helpers.sim_harness import ND_RECIPE

OK = UnitSignals("", "", "", 0)


def _audit() -> tuple[Any, io.StringIO]:
    buf = io.StringIO()
    return make_logger(buf), buf


def _events(buf: io.StringIO) -> list[str]:
    return [json.loads(x)["event"] for x in buf.getvalue().splitlines() if x]


def _record(k: int, *, shed: str = "", health: str = "ok", plan: str | None = None,
            extras: dict[str, float] | None = None, inputs: dict[str, float] | None = None) -> CycleRecord:
    return CycleRecord(
        k=k, t_s=5.0 * k, scheduled_mono_s=5.0 * k, actual_mono_s=5.0 * k, utc=1e9 + 5.0 * k,
        inputs={n: InputRecord(v, "good", None, None, None, "ok") for n, v in (inputs or {}).items()},
        estimate=EstimateRecord(("x",), (1.0,), (0.1,), health, extras or {}),
        mode=ModeRecord("ON", "ON" if not shed else "STANDBY", "", {}),
        plan=None if plan is None else PlanRecord({}, {}, plan, 1, 0.01, ""),
        guard_clamps=0, decisions={}, writes=(), readback={}, dcs_at_limit={}, shed=bool(shed), shed_reason=shed)


def test_a_cause_active_for_many_cycles_is_raised_once_and_cleared_once() -> None:
    """Fifty cycles of the same shed give one 'raised', no updates, and one 'cleared' when it goes."""
    audit, buf = _audit()
    book, rules = AlarmBook(None, audit=audit), UnitAlarmRules(AlarmsSection())
    whats = []
    for k in range(50):
        whats += [c.what for c in book.evaluate("u", rules.evaluate(_record(k, shed="bad inputs"), OK), 1e9 + k)]
    whats += [c.what for c in book.evaluate("u", rules.evaluate(_record(50), OK), 1e9 + 50)]
    assert whats == ["raised", "cleared"]
    assert _events(buf) == ["alarm_raised", "alarm_cleared"]
    (a,) = book.alarms("u")  # cleared but unacknowledged: still retained
    assert not a.active and not a.acked and a.retain


def test_message_changes_are_sent_at_most_once_a_minute_and_severity_changes_at_once() -> None:
    """A changing message updates after update_min_s only; a new severity updates immediately."""
    book = AlarmBook(None, audit=_audit()[0], update_min_s=60.0)
    assert [c.what for c in book.evaluate("u", {"shed": ActiveCause(700, "a")}, 0.0)] == ["raised"]
    assert book.evaluate("u", {"shed": ActiveCause(700, "b")}, 30.0) == []
    assert [c.what for c in book.evaluate("u", {"shed": ActiveCause(700, "b")}, 61.0)] == ["updated"]
    assert [c.what for c in book.evaluate("u", {"shed": ActiveCause(900, "b")}, 62.0)] == ["updated"]
    assert book.get("u.Alarms.shed").severity == 900  # type: ignore[union-attr]


def test_acknowledge_confirm_and_their_refusals() -> None:
    """Ack once (a second is refused), confirm only after ack; an acked cleared alarm is no longer retained."""
    book = AlarmBook(None, audit=_audit()[0])
    book.evaluate("u", {"link_lost": ActiveCause(800, "timeout")}, 0.0)
    with pytest.raises(AlarmRefused) as early:
        book.confirm("u.Alarms.link_lost", "olga", "t", "", 1.0)
    assert early.value.code == "not_acked"
    book.acknowledge("u.Alarms.link_lost", "olga", "t", "seen", 2.0)
    with pytest.raises(AlarmRefused) as twice:
        book.acknowledge("u.Alarms.link_lost", "olga", "t", "", 3.0)
    assert twice.value.code == "already_acked"
    assert book.confirm("u.Alarms.link_lost", "olga", "t", "fixed", 4.0).alarm.confirmed
    book.evaluate("u", {}, 5.0)
    assert book.alarms("u") == [] and book.get("u.Alarms.link_lost").active is False  # type: ignore[union-attr]
    with pytest.raises(AlarmRefused) as gone:
        book.acknowledge("u.Alarms.nothing", "olga", "t", "", 6.0)
    assert gone.value.code == "unknown"


def test_timed_shelve_expires_and_one_shot_shelve_ends_when_the_alarm_clears() -> None:
    """A timed shelve ends after its duration (longer than max_shelve_s is refused); a one-shot one at the clear."""
    book = AlarmBook(None, audit=_audit()[0], max_shelve_s=3600.0)
    book.evaluate("u", {"solver_failing": ActiveCause(500, "x"), "shed": ActiveCause(700, "y")}, 0.0)
    with pytest.raises(AlarmRefused) as long:
        book.shelve("u.Alarms.solver_failing", "olga", "t", 1.0, 7200.0)
    assert long.value.code == "bad_duration"
    assert book.shelve("u.Alarms.solver_failing", "olga", "t", 1.0, 600.0).alarm.shelved == "timed"
    assert book.shelve("u.Alarms.shed", "olga", "t", 1.0, None).alarm.shelved == "oneshot"
    active = {"solver_failing": ActiveCause(500, "x"), "shed": ActiveCause(700, "y")}
    assert book.evaluate("u", active, 500.0) == []
    assert [(c.alarm.cause, c.what) for c in book.evaluate("u", active, 601.0)] == [("solver_failing", "unshelved")]
    changes = book.evaluate("u", {"solver_failing": ActiveCause(500, "x")}, 602.0)
    assert [(c.alarm.cause, c.what, c.alarm.shelved) for c in changes] == [("shed", "cleared", "")]
    with pytest.raises(AlarmRefused):
        book.unshelve("u.Alarms.shed", "olga", "t", 603.0)


def test_retained_alarms_survive_a_restart_and_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    """The state file holds active or unacknowledged alarms with their state; a new book restores them; garbage is an error naming the file."""
    path = tmp_path / "alarms.json"
    book = AlarmBook(path, audit=_audit()[0])
    book.evaluate("u", {"shed": ActiveCause(700, "bad inputs"), "link_lost": ActiveCause(800, "down")}, 0.0)
    book.acknowledge("u.Alarms.link_lost", "olga", "t", "", 1.0)
    book.evaluate("u", {"shed": ActiveCause(700, "bad inputs")}, 2.0)  # link back: acked and cleared → dropped
    again = AlarmBook(path, audit=_audit()[0])
    assert [(c.alarm.condition_id, c.what) for c in again.load(3.0)] == [("u.Alarms.shed", "restored")]
    a = again.get("u.Alarms.shed")
    assert a is not None and a.active and not a.acked and a.active_since_utc == 0.0
    path.write_text("{not json")
    with pytest.raises(AlarmStateError, match=r"alarms\.json"):
        AlarmBook(path, audit=_audit()[0]).load(4.0)


def test_solver_failing_needs_n_of_the_last_m_solves() -> None:
    """With n=3 of m=5, two failures raise nothing, a third does; runs that were not solves do not count."""
    rules = UnitAlarmRules(AlarmsSection(solver_failing_n=3, solver_failing_m=5))
    seq = ["failed", "ok", "not_run", "held", "ok", "not_run", "failed"]
    found = ["solver_failing" in rules.evaluate(_record(k, plan=s), OK) for k, s in enumerate(seq)]
    assert found == [False, False, False, False, False, False, True]


def test_unit_signals_and_estimate_extras_map_to_their_causes() -> None:
    """Link, heartbeat, journal, a compute restart (once), anode effect and a forecast above threshold each raise their cause; disabled causes never."""
    rules = UnitAlarmRules(AlarmsSection(ae_forecast_probability=0.6, disabled=("estimator_unhealthy",)))
    sig = UnitSignals("read timeout", "counter frozen 20 s", "recorder failed: disk full", 1)
    extras = {"anode_effect_detected": 1.0, "ae_forecast_probability": 0.7, "ae_forecast_lead_s": 240.0}
    found = rules.evaluate(_record(0, health="warming up", extras=extras), sig)
    assert set(found) == {"link_lost", "dcs_heartbeat_lost", "recorder_failed", "compute_restarted", "anode_effect",
                          "anode_effect_forecast"}
    assert "about 4 min" in found["anode_effect_forecast"].message
    again = rules.evaluate(_record(1, extras={"ae_forecast_probability": 0.5}), sig)
    assert "compute_restarted" not in again and "anode_effect_forecast" not in again
    warming = UnitAlarmRules(AlarmsSection()).evaluate(_record(2, health="warming up: 4/15 resistance means"), OK)
    stale = UnitAlarmRules(AlarmsSection()).evaluate(_record(3, health="stale voltage"), OK)
    assert "estimator_unhealthy" not in warming and stale["estimator_unhealthy"].message == "estimator: stale voltage"


def test_specific_energy_of_a_tap_interval_above_the_threshold_raises_until_a_better_tap() -> None:
    """4 V × 6 kA for 1 h over 2 kg is 12 kWh/kg: above 10 it is active until a tap interval at 8 kWh/kg."""
    from apc.assembly import load

    recipe = load(ND_RECIPE).recipe
    import dataclasses

    recipe = dataclasses.replace(recipe, alarms=AlarmsSection(specific_energy_max_kWh_kg=10.0))
    rule = SpecificEnergyRule(recipe)
    tapped, active = 0.0, []
    for k in range(1, 2 * 720 + 2):
        if k == 721:
            tapped += 2.0
        if k == 1441:
            tapped += 3.0
        rec = _record(k, inputs={"cell_voltage": 4.0, "line_current": 6.0, "metal_tapped": tapped})
        active.append(bool(rule.evaluate(rec)))
    assert not any(active[:719]) and all(active[720:1439]) and not active[1440]
    assert rule.last_kWh_kg == pytest.approx(8.0) and math.isfinite(rule.last_kWh_kg)


def test_without_a_threshold_the_forecast_alarm_follows_the_forecasts_own_lead_time() -> None:
    """No alarms.ae_forecast_probability: active exactly while ae_forecast_lead_s is finite (the forecast's own threshold)."""
    rules = UnitAlarmRules(AlarmsSection())
    lit = rules.evaluate(_record(0, extras={"ae_forecast_probability": 0.25, "ae_forecast_lead_s": 600.0}), OK)
    dark = rules.evaluate(_record(1, extras={"ae_forecast_probability": 0.9, "ae_forecast_lead_s": math.nan}), OK)
    assert "anode_effect_forecast" in lit and "about 10 min" in lit["anode_effect_forecast"].message
    assert "anode_effect_forecast" not in dark
