"""One unit's cycle against the simulated plant: bumpless starts, bad inputs, fallback, write list, audit."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from apc.assembly import load
from apc.audit import make_logger
from apc.recorder import read_record
from apc.simulate import SimResult, simulate
from apc.types import Estimate, Mode, MvConstraint, Plan, WriteResult
from sim.scenario import load_scenario
from tests.helpers.sim_harness import (
    ND_RECIPE,
    SLOW_FEED_RECIPE,
    SimUnit,
    event_from_cycle,
    is_on,
    move_writes,
    rate_step,
    scenario,
    setpoint_tags,
    verdict,
    written,
)

BENIGN = ("ok", "no_new_sample")


def first_write(rec: dict[str, Any], tag: str) -> float:
    values = written(rec, tag)
    assert len(values) == 1, (tag, rec.writes)
    return values[0]


# ------------------------------------------------------------------ bumpless


@pytest.mark.parametrize(("away", "away_cycles"), [(Mode.STANDBY, 2), (Mode.STANDBY, 40), (Mode.OFF, 2), (Mode.OFF, 40)])
def test_first_on_write_is_within_one_rate_step_of_readback(away: Mode, away_cycles: int) -> None:
    """After STANDBY or OFF, the first ON write of oxide_feed and current_sp is within one rate step of the readback."""
    back_k = 700  # ON at ~490; the feed ramps 0.05 kg/h a cycle towards the controller's wish meanwhile
    ev = {"kind": "current_order", "value": 5.5, "at_h": event_from_cycle(back_k)}  # DCS changes the current SP
    su = SimUnit(SLOW_FEED_RECIPE, scenario(events=[ev]), seed=21)
    su.go_on()
    su.step(back_k - away_cycles - su.k)
    last_on = su.records[-1]
    assert is_on(last_on)
    su.request(away)
    su.step(away_cycles)
    assert all(r.mode.actual == away.value for r in su.records[-away_cycles:])
    su.request(Mode.ON)
    rec = su.run_until(is_on, 5)
    rb = rec.readback
    # Preconditions: APC memory and controller wish both differ from the DCS value by many rate steps.
    assert rb["oxide_feed"] == su.io.plant.scenario.dcs_local_feed_kg_h
    feed_step, current_step = rate_step(su.recipe, "oxide_feed"), rate_step(su.recipe, "current_sp")
    wish = rec.plan.moves["oxide_feed"]
    assert abs(written(last_on, "feed.sp_kg_h")[0] - rb["oxide_feed"]) > 10 * feed_step
    assert abs(wish - rb["oxide_feed"]) > 10 * feed_step
    assert rb["current_sp"] == 5.5
    assert abs(written(last_on, "current.sp_kA")[0] - rb["current_sp"]) > 10 * current_step
    for mv in ("oxide_feed", "current_sp"):
        tag = su.recipe.io.mvs[mv].tag
        assert abs(first_write(rec, tag) - rb[mv]) <= rate_step(su.recipe, mv) + 1e-12, mv
    # ... and the feed does move (one full step) towards the wish.
    assert first_write(rec, "feed.sp_kg_h") - rb["oxide_feed"] == pytest.approx(
        math.copysign(feed_step, wish - rb["oxide_feed"]))


def test_reenabled_mv_starts_from_its_readback() -> None:
    """A disabled MV is handed to the DCS; re-enabled, its first write is within one rate step of the readback."""
    su = SimUnit(SLOW_FEED_RECIPE, seed=22)
    su.go_on()
    su.step(120)
    assert abs(written(su.records[-1], "feed.sp_kg_h")[0] - su.io.plant.scenario.dcs_local_feed_kg_h) > 1.0
    su.enable("oxide_feed", False)
    disabled = su.step(30)
    for r in disabled:
        assert is_on(r)
        assert written(r, "feed.sp_kg_h") == [] and written(r, "feed.apc_active") == [0.0]
        assert written(r, "current.apc_active") == [1.0]
    local = su.io.plant.scenario.dcs_local_feed_kg_h
    assert disabled[-1].readback["oxide_feed"] == local
    su.enable("oxide_feed", True)
    rec = su.step()[0]
    assert is_on(rec)
    step = rate_step(su.recipe, "oxide_feed")
    wish = rec.plan.moves["oxide_feed"]
    assert abs(wish - local) > 10 * step
    assert first_write(rec, "feed.sp_kg_h") - local == pytest.approx(math.copysign(step, wish - local))
    assert written(rec, "feed.apc_active") == [1.0]


@pytest.mark.parametrize("mv", ["oxide_feed", "anode_move", "current_sp"])
def test_disabled_mv_is_never_written_while_others_run(mv: str) -> None:
    """A disabled MV gets no setpoint/increment and apc_active 0 all along, while the other MVs run ON."""
    su = SimUnit(seed=23)
    su.enable(mv, False)
    su.go_on()
    recs = su.step(900)
    spec = su.recipe.io.mvs[mv]
    mine = {spec.tag} | ({spec.sequence_tag} if spec.sequence_tag else set())
    assert all(is_on(r) for r in recs)
    for r in su.records:
        assert [w for w in r.writes if w.tag in mine] == []
        assert all(v == 0.0 for v in written(r, spec.active_flag))
    for other, ospec in su.recipe.io.mvs.items():
        if other == mv:
            continue
        assert all(written(r, ospec.active_flag) == [1.0] for r in recs)
        if ospec.kind.value == "setpoint":
            assert all(len(written(r, ospec.tag)) == 1 for r in recs)
    # The controller did want to move it (else "never written" would prove nothing).
    if mv == "anode_move":
        assert any(r.plan.moves[mv] != 0.0 for r in recs)
    elif mv == "oxide_feed":
        assert any(r.plan.moves[mv] != r.readback[mv] for r in recs)
    loop = spec.tag.partition(".")[0]
    assert not su.io.dcs.loops[loop].remote


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("fault", ["bad", "nan", "frozen", "uncertain"])
def test_bad_input_never_reaches_a_write_and_sheds(fault: str) -> None:
    """While cell_voltage is judged bad no move is written; after shed_after_bad_cycles the unit sheds naming it."""
    fault_k = 700
    ev = {"kind": "input_fault", "signal": "cell_voltage_V", "fault": fault,
          "at_h": event_from_cycle(fault_k), "duration_h": 0.25}
    su = SimUnit(scen=scenario(events=[ev]), seed=24)
    su.go_on()
    su.step(fault_k + 300 - su.k)
    recs = su.records
    required = list(su.unit.required_inputs)
    flagged = [i for i, r in enumerate(recs) if any(verdict(r, n) not in BENIGN for n in required)]
    assert flagged, "the fault was never detected"
    first = flagged[0]
    frozen_cycles = su.recipe.io.inputs["cell_voltage"].frozen.cycles  # type: ignore[union-attr]
    assert fault_k <= first <= fault_k + (frozen_cycles - 1 if fault == "frozen" else 0)
    for i in flagged:
        assert move_writes(recs[i], su.recipe) == [], recs[i].k
    sheds = [i for i, r in enumerate(recs) if r.shed]
    assert sheds == [first + su.recipe.modes.shed_after_bad_cycles - 1]
    assert "cell_voltage" in recs[sheds[0]].shed_reason
    assert all(is_on(r) for r in recs[first:sheds[0]])  # held ON (no writes) until the shed
    assert all(r.mode.actual == "STANDBY" for r in recs[sheds[0]:])
    beats = [first_write(r, su.recipe.io.heartbeat.apc_tag) for r in recs]
    assert beats == [float(i + 1) for i in range(len(recs))]


def test_short_input_fault_holds_without_shed_then_resumes() -> None:
    """A bad input for fewer than shed_after_bad_cycles cycles holds the writes, keeps ON and resumes after."""
    fault_k = 700
    ev = {"kind": "input_fault", "signal": "cell_voltage_V", "fault": "nan",
          "at_h": event_from_cycle(fault_k), "duration_h": 20.0 / 3600}  # visible for 3 cycles
    su = SimUnit(scen=scenario(events=[ev]), seed=30)
    su.go_on()
    su.step(fault_k - su.k)
    recs = su.step(10)
    bad = [i for i, r in enumerate(recs) if verdict(r, "cell_voltage") != "ok"]
    assert bad == [0, 1, 2]
    assert all(is_on(r) and not r.shed for r in recs)
    assert all(move_writes(recs[i], su.recipe) == [] for i in bad)
    assert all(r.mode.hold for r in recs[:3])
    for r in recs[3:]:
        assert r.mode.hold == ""
        assert len(written(r, "feed.sp_kg_h")) == 1 and len(written(r, "current.sp_kA")) == 1


def test_bad_input_is_held_by_the_guard_even_if_the_estimator_says_ok() -> None:
    """With an estimator that ignores input quality, the guard still writes nothing while an input is bad."""

    class Oblivious:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def update(self, t_s: float, inputs: Any, applied: Mapping[str, float]) -> Estimate:
            return dataclasses.replace(self.inner.update(t_s, inputs, applied), health="ok")

        def reset(self) -> None:
            self.inner.reset()

    fault_k = 700
    ev = {"kind": "input_fault", "signal": "cell_voltage_V", "fault": "bad",
          "at_h": event_from_cycle(fault_k), "duration_h": 0.1}
    su = SimUnit(scen=scenario(events=[ev]), seed=29)
    su.go_on()
    su.unit.estimator = Oblivious(su.unit.estimator)
    su.step(fault_k - su.k)
    recs = su.step(20)
    assert verdict(recs[0], "cell_voltage") == "bad_quality"
    assert recs[0].plan.status == "ok" and recs[0].plan.moves  # the controller did propose
    shed_at = su.recipe.modes.shed_after_bad_cycles - 1
    for r in recs[:shed_at]:
        assert is_on(r)
        assert move_writes(r, su.recipe) == []
        assert all(not d.write and "inputs_not_ok" in d.reason for d in r.decisions.values())
    assert recs[shed_at].shed and "cell_voltage" in recs[shed_at].shed_reason
    assert all(move_writes(r, su.recipe) == [] for r in recs)


def test_controller_exception_sheds_at_once_and_cycle_survives() -> None:
    """A controller that raises while ON makes the unit shed that cycle (reason recorded), write nothing, and go on."""

    class Raising:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def step(self, t_s: float, estimate: Estimate, applied: Mapping[str, float],
                 enabled: Mapping[str, bool], disturbances: Mapping[str, float],
                 constraints: Mapping[str, MvConstraint]) -> Plan:
            raise RuntimeError("solver exploded")

        def track(self, applied: Mapping[str, float]) -> None:
            self.inner.track(applied)

    su = SimUnit(seed=25)
    su.go_on()
    su.step(5)
    su.unit.controller = Raising(su.unit.controller)
    recs = su.step(20)
    assert recs[0].shed and "controller failed" in recs[0].shed_reason
    assert "solver exploded" in recs[0].shed_reason
    assert [r.shed for r in recs[1:]] == [False] * 19
    for r in recs:
        assert r.mode.actual == "STANDBY"
        assert move_writes(r, su.recipe) == []
        assert written(r, su.recipe.io.heartbeat.apc_tag)


# ------------------------------------------------------- 4 h shed under DCS fallback


@pytest.fixture(scope="module")
def voltage_fault_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimResult, Path]:
    path = tmp_path_factory.mktemp("vf") / "vf.apcrec"
    result = asyncio.run(simulate(load(ND_RECIPE), load_scenario("voltage_fault"), seed=21, hours=10,
                                  record_path=path))
    return result, path


def test_voltage_fault_shed_falls_back_without_anode_effect(voltage_fault_run: tuple[SimResult, Path]) -> None:
    """apc sim voltage_fault 10 h seed 21: the unit sheds, the DCS fallback runs the cell and no anode effect occurs."""
    result, path = voltage_fault_run
    assert result.errors == 0
    assert result.kpis["sheds"] >= 1
    assert result.kpis["anode_effects"] == 0
    rec = read_record(path)
    assert not rec.truncated_tail and len(rec.cycles) == 7200
    cycles = rec.cycle_records()
    assert all(c.truth["anode_effect"] == 0.0 for c in cycles)
    sc = load_scenario("voltage_fault")
    fault = sc.events[0]
    shed = [i for i, c in enumerate(cycles) if c.shed]
    assert len(shed) == 1
    s = shed[0]
    assert fault.at_h * 3600 < cycles[s].t_s <= fault.at_h * 3600 + 10 * 5.0
    position = cycles[s].readback["anode_move"]
    recipe = load(ND_RECIPE).recipe
    for c in cycles[s + 1:]:  # latched until the end: the DCS runs the cell
        assert c.mode.actual == "STANDBY"
        assert c.readback["oxide_feed"] == sc.dcs_local_feed_kg_h
        assert c.readback["anode_move"] == position
        assert move_writes(c, recipe) == []
    assert cycles[-1].t_s > (fault.at_h + fault.duration_h) * 3600  # the fault is over and still no AE


# ------------------------------------------------------------- write list


def test_every_write_is_on_the_write_list_and_increments_are_sent_once() -> None:
    """Over 8 h only write-list tags reach the DCS, and each anode move is written once with a new sequence number."""
    su = SimUnit(seed=26)
    applied: list[tuple[str, float, bool]] = []
    moves: list[float] = []
    dcs_apply, plant_move = su.io.dcs.apply, su.io.plant.move_anode

    def spy_apply(tag: str, value: float, now_s: float) -> WriteResult:
        res = dcs_apply(tag, value, now_s)
        applied.append((tag, value, res.ok))
        return res

    def spy_move(delta_cm: float) -> None:
        moves.append(delta_cm)
        plant_move(delta_cm)

    su.io.dcs.apply = spy_apply  # type: ignore[method-assign]
    su.io.plant.move_anode = spy_move  # type: ignore[method-assign]
    su.request(Mode.ON)
    su.step(int(8 * 3600 / su.period))
    io_ = su.recipe.io
    allowed = {io_.heartbeat.apc_tag}
    for mv in io_.mvs.values():
        allowed |= {t for t in (mv.tag, mv.active_flag, mv.sequence_tag) if t}
    assert {t for t, _, _ in applied} <= allowed
    assert all(ok for _, _, ok in applied)
    # What the record says was written is exactly what reached the DCS, in order.
    recorded = [(w.tag, w.value) for r in su.records for w in r.writes]
    assert recorded == [(t, v) for t, v, _ in applied]
    assert all(w.ok for r in su.records for w in r.writes)
    anode = io_.mvs["anode_move"]
    seqs = [v for t, v, _ in applied if t == anode.sequence_tag]
    assert len(seqs) >= 2
    assert seqs == [float(i) for i in range(1, len(seqs) + 1)]
    for r in su.records:
        tags = [w.tag for w in r.writes]
        if anode.tag in tags:
            i = tags.index(anode.tag)
            assert tags.count(anode.tag) == 1 and tags[i + 1] == anode.sequence_tag
        else:
            assert anode.sequence_tag not in tags
    increments = [v for t, v, _ in applied if t == anode.tag]
    assert moves == increments  # each move executed exactly once by the DCS
    assert su.records[-1].readback["anode_move"] == pytest.approx(sum(increments), abs=1e-12)
    assert sum(is_on(r) for r in su.records) > 0.9 * len(su.records)


# ------------------------------------------------------------------ audit


def test_audit_events_for_writes_mode_changes_and_requests() -> None:
    """Each setpoint write is one audit 'write' event, each actual-mode change a 'mode_change', each request a 'mode_request'."""
    stream = io.StringIO()
    ev = {"kind": "input_fault", "signal": "cell_voltage_V", "fault": "bad",
          "at_h": event_from_cycle(700), "duration_h": 0.05}
    su = SimUnit(scen=scenario(events=[ev]), seed=27, audit=make_logger(stream))
    su.go_on()  # request at k=0
    su.step(800 - su.k)  # shed at ~705, latched
    su.request(Mode.ON, who="operator jane", where="HMI console 2")
    su.run_until(is_on, 200)  # after a fresh warm-up
    su.step(20)
    su.request(Mode.OFF, who="operator jane", where="HMI console 2")
    su.step(5)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events and all(e["unit"] == "cell-t" for e in events)

    requests = [e for e in events if e["event"] == "mode_request"]
    assert [(e["who"], e["where"], e["new"]) for e in requests] == [
        ("pytest", "test", "ON"), ("operator jane", "HMI console 2", "ON"), ("operator jane", "HMI console 2", "OFF")]
    assert all("ts" in e for e in requests)

    mv_tags = {mv.tag: name for name, mv in su.recipe.io.mvs.items()}
    expected_writes = [(r.k, w.tag, w.value, r.readback.get(mv_tags[w.tag]))
                       for r in su.records for w in r.writes if w.tag in mv_tags]
    writes = [e for e in events if e["event"] == "write" and e["what"] in mv_tags]
    assert len(expected_writes) > 100
    assert [(e["cycle"], e["what"], e["new"], e["old"]) for e in writes] == expected_writes
    assert all(e["who"] == "apc" and e["mode"] == "ON" and e["ok"] is True for e in writes)

    expected_changes = []
    prev = "OFF"
    for r in su.records:
        if r.mode.actual != prev:
            expected_changes.append((r.k, prev, r.mode.actual))
            prev = r.mode.actual
    changes = [e for e in events if e["event"] == "mode_change"]
    assert [(e["cycle"], e["old"], e["new"]) for e in changes] == expected_changes
    assert [c[2] for c in expected_changes] == ["STANDBY", "ON", "STANDBY", "ON", "OFF"]
    assert all(e["why"] for e in changes)
    assert "cell_voltage" in changes[2]["why"]


def test_record_carries_cycle_time() -> None:
    """Each cycle record carries t_s (the cycle's run time) as the flight-record format requires."""
    su = SimUnit(seed=28)
    recs = su.step(3)
    assert [r.t_s for r in recs] == [0.0, 5.0, 10.0]
    assert all(math.isfinite(r.utc) for r in recs)


def test_setpoint_tags_cover_recipe() -> None:
    """The helper's notion of move tags matches the recipe (guards the other tests' assertions)."""
    recipe = load(ND_RECIPE).recipe
    assert setpoint_tags(recipe) == {"feed.sp_kg_h", "anode.move_cm", "anode.move_seq", "current.sp_kA"}


def test_bad_auxiliary_input_never_holds_the_unit() -> None:
    """A bad tapped-metal counter (role auxiliary) is flagged but neither holds the writes nor sheds."""
    fault_k = 700
    ev = {"kind": "input_fault", "signal": "metal_tapped_kg", "fault": "bad",
          "at_h": event_from_cycle(fault_k), "duration_h": 0.25}
    su = SimUnit(scen=scenario(events=[ev]), seed=24)
    assert su.recipe.io.inputs["metal_tapped"].role == "auxiliary"
    su.go_on()
    su.step(fault_k + 120 - su.k)
    recs = su.records[fault_k + 1:]
    assert all(verdict(r, "metal_tapped") == "bad_quality" for r in recs)
    assert all(is_on(r) and not r.shed and r.mode.hold == "" for r in recs)
    assert all(len(written(r, "feed.sp_kg_h")) == 1 for r in recs)


def test_controller_gets_limits_in_force_and_dcs_limit_status() -> None:
    """Each cycle the controller sees operator ∩ engineering limits and the DCS at-limit status;
    an unreadable status counts as at the limit and is recorded."""
    seen: list[Mapping[str, MvConstraint]] = []

    class Spy:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def step(self, t_s: float, estimate: Estimate, applied: Mapping[str, float],
                 enabled: Mapping[str, bool], disturbances: Mapping[str, float],
                 constraints: Mapping[str, MvConstraint]) -> Plan:
            seen.append(dict(constraints))
            return self.inner.step(t_s, estimate, applied, enabled, disturbances, constraints)

        def track(self, applied: Mapping[str, float]) -> None:
            self.inner.track(applied)

    su = SimUnit(seed=26)
    su.unit.controller = Spy(su.unit.controller)
    su.go_on()
    rec = su.step(1)[0]
    assert rec.dcs_at_limit == {}
    c = seen[-1]["current_sp"]
    assert (c.low, c.high, c.hold_up, c.hold_down) == (5.0, 6.5, False, False)
    mv = su.unit.mvs["current_sp"]
    mv.limits = dataclasses.replace(mv.limits, operator=(5.2, 6.1))
    inner_read = su.io.read

    async def read_without_status(tags: Any) -> Any:
        return {t: s for t, s in (await inner_read(tags)).items() if t != "current.at_high_limit"}

    su.io.read = read_without_status  # type: ignore[method-assign]
    rec = su.step(1)[0]
    c = seen[-1]["current_sp"]
    assert (c.low, c.high, c.hold_up, c.hold_down) == (5.2, 6.1, True, False)
    assert rec.dcs_at_limit == {"current_sp": "high"}
    assert not seen[-1]["oxide_feed"].hold_up
