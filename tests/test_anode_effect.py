"""Anode-effect detection on measured voltage and current: confirmation, termination, duration, the
recipe fields, and the baseline answering only confirmed anode effects (a spike changes no setpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from apc.kinds.electrolysis_cell.anode_effect import AnodeEffectConfig, AnodeEffectDetector, AnodeEffectPhase
from apc.kinds.electrolysis_cell.recipe import CellRecipe, FilteredEstimatorSection, TrackingFeedSection
from apc.recipe.errors import RecipeError
from apc.recipe.loader import load_recipe
from apc.types import Quality, Sample, ValidatedInput, Verdict
from controllers.tracking_feed import FeedPhase, MvNames, TrackingFeedController
from estimators.filtered import AE_DETECTED, FilteredEstimator
from tests.helpers.sim_harness import ND_RECIPE, SimUnit, event_from_cycle, move_writes, scenario

PERIOD_S = 5.0
NORMAL_V, AE_V = 8.8, 28.8


def run(detector: AnodeEffectDetector, volts: list[float], current_kA: float = 6.0) -> list[bool]:
    """Feed one voltage sample per 5 s cycle; the detected flag after each."""
    return [detector.update(k * PERIOD_S, v, current_kA).detected for k, v in enumerate(volts)]


def test_one_or_two_spike_samples_are_not_an_anode_effect() -> None:
    """One 55 V sample, and two in a row, stay unconfirmed with the default 10 s: nothing is detected, both are counted as rejected."""
    det = AnodeEffectDetector(AnodeEffectConfig())
    flags = run(det, [NORMAL_V] * 5 + [55.0] + [NORMAL_V] * 5 + [55.0, 55.0] + [NORMAL_V] * 5)
    assert not any(flags)
    assert det.events == () and det.rejected == 2


def test_sustained_excursion_is_confirmed_after_the_confirmation_time() -> None:
    """Above 15 V from sample 10 on: confirmed at the sample 10 s later (sample 12), onset at sample 10, peak recorded."""
    det = AnodeEffectDetector(AnodeEffectConfig())
    volts = [NORMAL_V] * 10 + [AE_V, AE_V + 2.0] + [AE_V] * 20
    states = [det.update(k * PERIOD_S, v, 6.0) for k, v in enumerate(volts)]
    first = next(k for k, s in enumerate(states) if s.detected)
    assert first == 12 and states[12].confirmed_now
    assert states[11].phase is AnodeEffectPhase.SUSPECT and not states[11].detected
    event = states[12].event
    assert event is not None and event.onset_t_s == 50.0 and event.confirmed_t_s == 60.0
    assert event.peak_voltage_V == AE_V + 2.0 and event.duration_s is None


def test_termination_needs_the_hold_time_and_duration_runs_onset_to_drop() -> None:
    """A 5 min anode effect with one sample dipping below mid-way: one event, ended at the first sample of the drop that held 30 s, duration 300 s."""
    det = AnodeEffectDetector(AnodeEffectConfig(clear_s=30.0))
    # onset at sample 10 (50 s), a single low sample at 40 (not held), back below for good at 70 (350 s)
    volts = [NORMAL_V] * 10 + [AE_V] * 30 + [NORMAL_V] + [AE_V] * 29 + [NORMAL_V] * 20
    states = [det.update(k * PERIOD_S, v, 6.0) for k, v in enumerate(volts)]
    assert len(det.events) == 1
    ev = det.events[0]
    assert ev.onset_t_s == 50.0 and ev.end_t_s == 350.0 and ev.duration_s == 300.0
    assert ev.terminated_t_s == 380.0  # 30 s after the drop
    assert states[75].detected and states[76].ended_now and not states[76].detected
    assert states[40].phase is AnodeEffectPhase.CLEARING and states[41].phase is AnodeEffectPhase.ACTIVE


def test_invalid_or_currentless_samples_change_nothing() -> None:
    """NaN or missing voltage and samples at a current below min_current_kA neither confirm nor cancel."""
    det = AnodeEffectDetector(AnodeEffectConfig())
    det.update(0.0, AE_V, 6.0)
    assert det.update(5.0, float("nan"), 6.0).phase is AnodeEffectPhase.SUSPECT
    assert det.update(10.0, None, 6.0).phase is AnodeEffectPhase.SUSPECT
    assert det.update(15.0, AE_V, 0.2).phase is AnodeEffectPhase.SUSPECT
    assert det.update(20.0, AE_V, 6.0).detected  # 20 s above, judged on valid samples only
    det2 = AnodeEffectDetector(AnodeEffectConfig())
    assert not any(run(det2, [40.0] * 10, current_kA=0.0))


def test_config_refuses_bad_values() -> None:
    """Negative or non-finite times and a zero threshold are refused with the field's name."""
    for kwargs in ({"confirm_s": -1.0}, {"clear_s": float("inf")}, {"voltage_V": 0.0}, {"min_current_kA": -0.1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            AnodeEffectConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ae_confirm_s"):
        FilteredEstimatorSection(ae_confirm_s=-5.0)


def test_recipe_field_loads_and_a_bad_value_is_refused_at_its_line(tmp_path: Path) -> None:
    """estimator.filtered.ae_confirm_s loads into the detector config; a negative one is refused at its own line."""
    text = ND_RECIPE.read_text().replace("model_file: models/", f"model_file: {ND_RECIPE.parent}/models/")
    anchor = "    back_emf_V: 1.6\n"
    assert anchor in text
    good = tmp_path / "good.yaml"
    good.write_text(text.replace(anchor, anchor + "    ae_confirm_s: 15\n    ae_clear_s: 60\n"))
    recipe = load_recipe(good, extra_names=frozenset({AE_DETECTED})).recipe
    assert isinstance(recipe, CellRecipe)
    cfg = AnodeEffectConfig.from_recipe(recipe)
    assert (cfg.voltage_V, cfg.confirm_s, cfg.clear_s) == (15.0, 15.0, 60.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(anchor, anchor + "    ae_confirm_s: -5\n"))
    with pytest.raises(RecipeError) as info:
        load_recipe(bad)
    line = bad.read_text().splitlines().index("    ae_confirm_s: -5") + 1
    hits = [p for p in info.value.problems if "ae_confirm_s" in p.message or "ae_confirm_s" in p.path]
    assert hits and hits[0].line == line, [str(p) for p in info.value.problems]


def _vi(value: float) -> ValidatedInput:
    return ValidatedInput("x", Sample(value, Quality.GOOD, 0.0, 0.0), Verdict.OK)


def test_baseline_answers_a_sustained_anode_effect_but_not_a_spike() -> None:
    """Signals plus baseline in underfeed: a 55 V spike keeps the underfeed; a sustained 28.8 V excursion switches to overfeed once confirmed."""
    cfg = TrackingFeedSection(nominal_feed_kg_h=10.0, slope_trigger_uohm_per_h=1e9)
    names = MvNames("oxide_feed", "anode_move", "current_sp")
    applied = {"oxide_feed": 10.0, "current_sp": 6.0}

    def drive(volts: list[float]) -> list[float]:
        signals = FilteredEstimator(FilteredEstimatorSection(), voltage="u", current="i", dip="d")
        ctrl = TrackingFeedController(cfg, names)
        ctrl._switch(FeedPhase.UNDERFEED, 0.0)
        feeds = []
        for k, v in enumerate(volts):
            t = 3600.0 + k * PERIOD_S
            est = signals.update(t, {"u": _vi(v), "i": _vi(6.0)}, {})
            feeds.append(ctrl.step(t, est, applied, {}, {}).moves["oxide_feed"])
        return feeds

    assert drive([NORMAL_V] * 10 + [55.0] + [NORMAL_V] * 20) == [7.0] * 31
    sustained = drive([NORMAL_V] * 10 + [AE_V] * 20)
    assert sustained[:12] == [7.0] * 12 and sustained[12:] == [14.0] * 18


def test_one_voltage_spike_changes_no_setpoint_in_closed_loop() -> None:
    """The shipped recipe against the simulated cell: a 55 V spike in the underfeed (in range, accepted by the validator) writes exactly the same setpoints as the run without it."""
    spike_k, end_k = 1110, 1500  # underfeed from cycle 1095 on (seed 7); the slope window is 1800 s
    spike = [{"at_h": event_from_cycle(spike_k), "kind": "input_fault", "signal": "cell_voltage_V",
              "fault": "spike", "value": 55.0}]
    runs = []
    for events in ([], spike):
        su = SimUnit(ND_RECIPE, scenario(events=events), seed=7)
        su.go_on()
        su.step(end_k - su.k)
        runs.append(su)
    plain, spiked = runs
    rec = spiked.records[spike_k]
    assert rec.inputs["cell_voltage"].value == 55.0 and rec.inputs["cell_voltage"].verdict == "ok"
    assert plain.records[spike_k].plan.reason == "underfeed"
    assert [r.estimate.extras[AE_DETECTED] for r in spiked.records] == [0.0] * end_k
    assert [move_writes(r, plain.recipe) for r in plain.records] == \
        [move_writes(r, spiked.recipe) for r in spiked.records]
    assert [r.plan.reason for r in plain.records] == [r.plan.reason for r in spiked.records]
