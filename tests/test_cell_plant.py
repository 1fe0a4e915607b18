"""Tests for the simulated "true" cell (sim.cell_plant) and the scenario loader (sim.scenario)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import pytest
import yaml

from sim.cell_plant import CellPlant
from sim.models import get_model
from sim.scenario import SCENARIO_DIR, Scenario, ScenarioError, load_scenario, scenario_from_mapping

NOMINAL = load_scenario("nominal")
MODEL = get_model("nd_electrolysis_cell")
DT = NOMINAL.plant_dt_s


def nominal_mapping(**changes: Any) -> dict[str, Any]:
    """The shipped nominal scenario as a raw mapping, with top-level keys replaced."""
    data = yaml.safe_load((SCENARIO_DIR / "nominal.yaml").read_text())
    data.update(changes)
    return data


def total_oxide_kg(plant: CellPlant) -> float:
    """Dissolved plus undissolved (suspended) oxide in the bath."""
    t = plant.truth()
    return t["dissolved_oxide_wtpct"] * plant.params["bath_mass_kg"] / 100.0 + t["undissolved_oxide_kg"]


def run_recording(plant: CellPlant, until_s: float) -> list[dict[str, float]]:
    """Advance step by step to ``until_s``, returning the truth after every step."""
    out = []
    while plant.t_s + 1e-9 < until_s:
        plant.advance_to(plant.t_s + DT)
        out.append(plant.truth())
    return out


# ------------------------------------------------------------------ per-seed parameters
def test_seed_parameters_spread_around_nominal() -> None:
    """Spread parameters differ from nominal (within 3 sigma), others equal nominal, seeds differ."""
    nominal = dict(zip(MODEL.parameter_names, MODEL.parameter_vector()))
    p1 = CellPlant(NOMINAL, 1).params
    p2 = CellPlant(NOMINAL, 2).params
    assert set(p1) == set(nominal)
    assert NOMINAL.parameter_spread
    for name, sigma in NOMINAL.parameter_spread.items():
        assert p1[name] != nominal[name], name
        assert abs(p1[name] / nominal[name] - 1.0) <= 3.0 * sigma + 1e-12, name
        assert p1[name] != p2[name], name
    for name in set(nominal) - set(NOMINAL.parameter_spread):
        assert p1[name] == nominal[name], name


def test_same_seed_same_parameters_and_bit_identical_trajectory() -> None:
    """Same seed → identical parameters, truth and measurements after 2 h (exact float equality)."""
    runs = []
    for _ in range(2):
        plant = CellPlant(NOMINAL, 7)
        for k in range(4):
            plant.set_feed_rate(8.0 + 1.5 * k)
            plant.move_anode(0.05)
            plant.advance_to((k + 1) * 1800.0)
        runs.append((plant.params, plant.truth(), plant.measurements()))
    (pa, ta, ma), (pb, tb, mb) = runs
    assert pa == pb
    assert ta == tb
    assert {k: (r.value, r.quality, r.sample_ts) for k, r in ma.items()} == \
        {k: (r.value, r.quality, r.sample_ts) for k, r in mb.items()}
    other = CellPlant(NOMINAL, 8)
    other.set_feed_rate(8.0)
    other.advance_to(1800.0)
    assert other.truth()["bath_temp_degC"] != ta["bath_temp_degC"]


def test_parameter_spread_naming_unknown_parameter_is_rejected() -> None:
    """A parameter_spread entry naming no model parameter raises ScenarioError naming it and the scenario."""
    sc = dataclasses.replace(NOMINAL, parameter_spread={"no_such_param": 0.1})
    with pytest.raises(ScenarioError, match=r"nominal.*no_such_param"):
        CellPlant(sc, 0)


# ------------------------------------------------------------------ plant ≠ model
def test_plant_bath_temperature_differs_from_the_model() -> None:
    """Same inputs and initial state: the plant's bath trajectory differs from the model's (nominal and own p)."""
    plant = CellPlant(NOMINAL, 0)
    nx = len(MODEL.states)
    x_nom = plant._x[:nx].copy()
    x_own = x_nom.copy()
    step = MODEL.rk4_step(DT)
    p_nom, p_own = MODEL.parameter_vector(), np.array([plant.params[n] for n in MODEL.parameter_names])
    feed = 9.4
    plant.set_feed_rate(feed)
    d = [NOMINAL.ambient_temp_degC, 0.0, 0.0]
    diff_nom, diff_own = [], []
    for _ in range(int(4 * 3600 / DT)):
        plant.advance_to(plant.t_s + DT)
        x_nom = np.asarray(step(x_nom, [NOMINAL.current_kA, feed, 0.0], d, p_nom)).ravel()
        x_own = np.asarray(step(x_own, [NOMINAL.current_kA, feed, 0.0], d, p_own)).ravel()
        tb = plant.truth()["bath_temp_degC"]
        diff_nom.append(tb - x_nom[2])
        diff_own.append(tb - x_own[2])
    assert abs(diff_nom[0]) < 0.1  # same start
    assert max(abs(v) for v in diff_nom) > 2.0  # per-seed parameters
    assert max(abs(v) for v in diff_own) > 0.3  # wall node and shots alone


def test_plant_settles_like_the_model_without_spread() -> None:
    """No spread, ACD held, oxide held: the plant bath settles near the model's 1050 ± 10 °C (wall node is dynamic only)."""
    sc = dataclasses.replace(NOMINAL, parameter_spread={}, tap_interval_h=1000.0)
    plant = CellPlant(sc, 0)
    period = 60.0
    wear = plant.params["anode_wear_cm_kAh"] * sc.current_kA * period / 3600.0
    for _ in range(int(24 * 3600 / period)):
        plant.set_feed_rate(9.3 + 20.0 * (2.2 - plant.truth()["dissolved_oxide_wtpct"]))
        plant.move_anode(wear)
        plant.advance_to(plant.t_s + period)
    t = plant.truth()
    assert t["bath_temp_degC"] == pytest.approx(1050.0, abs=10.0)
    assert t["metal_temp_degC"] > plant.params["metal_melting_degC"]
    assert t["acd_cm"] == pytest.approx(8.0, abs=0.01)


# ------------------------------------------------------------------ feeder
@pytest.mark.parametrize("dead_time_s", [NOMINAL.feeder_dead_time_s, 60.0])
def test_feed_step_lands_after_the_dead_time(dead_time_s: float) -> None:
    """A feed-rate step raises dissolved+undissolved oxide only after feeder_dead_time_s."""
    sc = dataclasses.replace(NOMINAL, feeder_dead_time_s=dead_time_s)
    plant = CellPlant(sc, 3)
    plant.advance_to(600.0)
    t_step = plant.t_s
    plant.set_feed_rate(360.0)  # two 0.25 kg shots per 5 s step
    totals = [(plant.t_s, total_oxide_kg(plant))]
    while plant.t_s < t_step + dead_time_s + 30.0:
        plant.advance_to(plant.t_s + DT)
        totals.append((plant.t_s, total_oxide_kg(plant)))
    rises = [t for (t0, m0), (t, m) in itertools.pairwise(totals) if m > m0]
    assert rises, "the feed never arrived"
    assert rises[0] >= t_step + dead_time_s
    assert rises[0] <= t_step + dead_time_s + 2 * DT
    before = [m for t, m in totals if t <= t_step + dead_time_s]
    assert all(b < a for a, b in itertools.pairwise(before))  # consumption only
    jump = dict(totals)[rises[0]] - dict(totals)[rises[0] - DT]
    assert jump == pytest.approx(2 * sc.feeder_shot_kg, abs=0.05)


# ------------------------------------------------------------------ dips and lab samples
def test_thermocouple_dip_and_lab_sample_timing_and_values() -> None:
    """Dips appear after interval + duration with sample_ts = dip start; lab results appear lab_delay_h late."""
    sc = NOMINAL
    plant = CellPlant(sc, 4)
    plant.set_feed_rate(9.0)
    dip_start = sc.dip_interval_h * 3600.0
    dip_ready = dip_start + sc.dip_duration_s
    lab_taken = sc.lab_interval_h * 3600.0
    lab_ready = lab_taken + sc.lab_delay_h * 3600.0
    assert lab_ready > dip_ready
    truth_at: dict[float, dict[str, float]] = {}
    seen_dip, seen_lab = None, None
    while plant.t_s < lab_ready + DT:
        plant.advance_to(plant.t_s + DT)
        truth_at[plant.t_s] = plant.truth()
        meas = plant.measurements()
        if plant.t_s < dip_ready:
            assert "bath_temp_dip_degC" not in meas, plant.t_s
        elif seen_dip is None:
            assert plant.t_s == dip_ready
            seen_dip = meas["bath_temp_dip_degC"]
        if plant.t_s < lab_ready:
            assert "oxide_lab_wtpct" not in meas, plant.t_s
        elif seen_lab is None:
            assert plant.t_s == lab_ready
            seen_lab = meas["oxide_lab_wtpct"]
    assert seen_dip is not None and seen_lab is not None
    assert seen_dip.sample_ts == dip_start and seen_dip.quality == "good"
    tb = truth_at[dip_start]["bath_temp_degC"]
    lag = (tb - sc.ambient_temp_degC) * math.exp(-sc.dip_duration_s / sc.dip_tau_s)
    assert seen_dip.value < tb + 4.0 * sc.dip_noise_degC
    assert abs(seen_dip.value - (tb - lag)) < 4.0 * sc.dip_noise_degC + 0.5
    assert seen_lab.sample_ts == lab_taken and seen_lab.quality == "good"
    c_true = truth_at[lab_taken]["dissolved_oxide_wtpct"]
    assert seen_lab.value == pytest.approx(c_true, abs=4.0 * sc.lab_noise_wtpct)


# ------------------------------------------------------------------ anode effect
def test_starving_triggers_anode_effect_and_feeding_ends_it() -> None:
    """Feed 0 drives the cell into a latched anode effect (PFC, voltage jump) before oxide is gone; feed ends it."""
    plant = CellPlant(NOMINAL, 5)
    plant.set_feed_rate(0.0)
    prev = plant.truth()
    onset = None
    while plant.t_s < 4 * 3600.0:
        plant.advance_to(plant.t_s + DT)
        now = plant.truth()
        if now["anode_effect"] == 1.0:
            onset = (prev, now)
            break
        assert now["pfc_kg_co2e"] == 0.0
        prev = now
    assert onset is not None, "no anode effect after 4 h without feed"
    before, at = onset
    assert before["ae_margin_A_cm2"] < 0.0  # latch follows the margin
    assert at["dissolved_oxide_wtpct"] > 0.5
    assert at["cell_voltage_V"] > before["cell_voltage_V"] + 10.0
    assert plant.measurements()["cell_voltage_V"].value > before["cell_voltage_V"] + 10.0
    plant.advance_to(plant.t_s + 60.0)
    assert plant.truth()["anode_effect"] == 1.0
    assert plant.truth()["pfc_kg_co2e"] > 0.0
    # Restore feed: the effect ends, but only once the margin exceeds the recovery margin.
    plant.set_feed_rate(30.0)
    held_in_band = False
    ended = None
    last_in_ae = plant.truth()
    while plant.t_s < onset[1]["t_s"] + 3 * 3600.0:
        plant.advance_to(plant.t_s + DT)
        t = plant.truth()
        if t["anode_effect"] == 0.0:
            ended = t
            break
        if 0.0 < t["ae_margin_A_cm2"] <= NOMINAL.ae_recover_margin_A_cm2:
            held_in_band = True
        last_in_ae = t
    assert ended is not None, "anode effect did not end after feeding"
    assert held_in_band  # hysteresis: not released at margin 0
    assert last_in_ae["ae_margin_A_cm2"] > NOMINAL.ae_recover_margin_A_cm2  # the margin the latch saw
    assert ended["cell_voltage_V"] < at["cell_voltage_V"] - 10.0
    pfc = ended["pfc_kg_co2e"]
    plant.advance_to(plant.t_s + 600.0)
    assert plant.truth()["pfc_kg_co2e"] == pfc


# ------------------------------------------------------------------ input faults
@pytest.mark.parametrize("fault", ["bad", "frozen", "nan", "uncertain"])
def test_input_fault_on_cell_voltage_only_during_event(fault: str) -> None:
    """An input_fault event changes the cell_voltage_V reading (quality/value) only while it is in force."""
    at_h, duration_h = 0.25, 0.25
    data = nominal_mapping(events=[{"at_h": at_h, "kind": "input_fault", "signal": "cell_voltage_V",
                                    "fault": fault, "duration_h": duration_h}])
    sc = scenario_from_mapping(data, "test")
    plant = CellPlant(sc, 6)
    plant.set_feed_rate(9.0)
    start, end = at_h * 3600.0, (at_h + duration_h) * 3600.0
    during: list[float] = []
    after: list[float] = []
    while plant.t_s < end + 600.0:
        plant.advance_to(plant.t_s + DT)
        m = plant.measurements()
        v = m["cell_voltage_V"]
        assert m["current_kA"].quality == "good" and math.isfinite(m["current_kA"].value)
        truth_v = plant.truth()["cell_voltage_V"]
        if start < plant.t_s < end:
            if fault == "bad":
                assert v.quality == "bad" and abs(v.value - truth_v) < 0.5
            elif fault == "uncertain":
                assert v.quality == "uncertain" and abs(v.value - truth_v) < 0.5
            elif fault == "nan":
                assert math.isnan(v.value)
            else:
                assert v.quality == "good"
            during.append(v.value)
        elif plant.t_s < start or plant.t_s >= end:
            assert v.quality == "good", plant.t_s
            assert math.isfinite(v.value) and abs(v.value - truth_v) < 0.5, plant.t_s
            if plant.t_s >= end:
                after.append(v.value)
    assert len(during) > 100
    if fault == "frozen":
        assert len(set(during)) == 1
        assert len(set(after)) > 10  # live again afterwards


# ------------------------------------------------------------------ tapping and integrals
def test_tapping_keeps_heel_and_integrals_are_monotone() -> None:
    """At the tap interval the pool drops to the heel; metal_kg, energy_kWh and charge_kAh keep rising."""
    sc = NOMINAL
    plant = CellPlant(sc, 9)
    plant.set_feed_rate(9.0)
    tap_t = sc.tap_interval_h * 3600.0
    plant.advance_to(tap_t - 600.0)
    hist = run_recording(plant, tap_t + 600.0)
    pools = {t["t_s"]: t["metal_pool_kg"] for t in hist}
    assert pools[tap_t] > sc.tap_heel_kg + 40.0
    assert pools[tap_t + DT] == pytest.approx(sc.tap_heel_kg, abs=0.1)
    assert min(pools.values()) >= sc.tap_heel_kg - 1e-6
    drops = [t for t in pools if t - DT in pools and pools[t] < pools[t - DT]]
    assert drops == [tap_t + DT]
    for key in ("metal_kg", "energy_kWh", "charge_kAh"):
        series = [t[key] for t in hist]
        assert all(b > a for a, b in itertools.pairwise(series)), key
    last = hist[-1]
    assert last["charge_kAh"] == pytest.approx(sc.current_kA * last["t_s"] / 3600.0, rel=1e-6)
    assert last["metal_kg"] > last["metal_pool_kg"]


# ------------------------------------------------------------------ scenario loader
def test_shipped_scenarios_load() -> None:
    """Every shipped scenario loads; voltage_fault carries its input_fault event."""
    assert isinstance(NOMINAL, Scenario) and NOMINAL.name == "nominal"
    vf = load_scenario("voltage_fault")
    assert [(e.kind, e.signal, e.fault) for e in vf.events] == [("input_fault", "cell_voltage_V", "bad")]


def test_unknown_top_level_key_names_the_key() -> None:
    """An unknown top-level key raises ScenarioError naming the key and the source."""
    with pytest.raises(ScenarioError, match="feeder_shot_kgs") as exc:
        scenario_from_mapping(nominal_mapping(feeder_shot_kgs=0.3), "my.yaml")
    assert "my.yaml" in str(exc.value)


def test_unknown_event_key_and_kind_are_rejected() -> None:
    """An unknown event key or event kind raises ScenarioError naming the key / kind."""
    with pytest.raises(ScenarioError, match=r"events\[0\].*colour"):
        scenario_from_mapping(nominal_mapping(events=[{"at_h": 1.0, "kind": "ambient_step", "colour": 1}]), "x")
    with pytest.raises(ScenarioError, match=r"events\[1\]\.kind"):
        scenario_from_mapping(nominal_mapping(events=[{"at_h": 1.0, "kind": "ambient_step"},
                                                      {"at_h": 2.0, "kind": "meteor_strike"}]), "x")


def test_unknown_scenario_lists_shipped_ones() -> None:
    """load_scenario('nope') raises ScenarioError listing the shipped scenarios."""
    with pytest.raises(ScenarioError, match="nope") as exc:
        load_scenario("nope")
    for name in ("nominal", "voltage_fault"):
        assert name in str(exc.value)
