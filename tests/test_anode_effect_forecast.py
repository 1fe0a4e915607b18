"""Anode-effect forecast: its math on hand-computable inputs, the recipe fields, and in closed loop a
forecast ahead of the first detected anode effect that changes no setpoint."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from apc.kinds.electrolysis_cell.anode_effect_forecast import (
    AeForecastConfig,
    combined_forecast,
    forecast,
    oxide_probabilities,
    voltage_probability,
)
from apc.kinds.electrolysis_cell.recipe import CellEstimatorSection, CellRecipe
from apc.recipe.errors import RecipeError
from apc.recipe.loader import load_recipe
from apc.types import Mode
from estimators.ae_forecast import AE_FORECAST_LEAD, AE_FORECAST_PROBABILITY, ForecastingEstimator
from estimators.filtered import AE_DETECTED
from tests.helpers.sim_harness import ND_RECIPE, SimUnit, move_writes, scenario

CFG = AeForecastConfig(horizon_s=3600.0, step_s=60.0, threshold=0.2, slope_uohm_h=40.0, slope_width_uohm_h=10.0)
PHI_MINUS_1, PHI_MINUS_2, PHI_MINUS_HALF = 0.15865525393145707, 0.022750131948179195, 0.3085375387259869


def p_now(c: float, std: float, crit: float = 1.0) -> float:
    """P(oxide < critical) at t = 0 with no rate."""
    return oxide_probabilities(c, std, crit, 0.0, 0.0, 0.0, CFG)[0]


def test_probability_rises_as_the_mean_approaches_critical() -> None:
    """σ 0.1 wt%, critical 1.0: P strictly rises from 2.0 to 1.0 wt% and is Φ(−1) one σ above critical, ½ at it."""
    ps = [p_now(c, 0.1) for c in (2.0, 1.5, 1.2, 1.1, 1.05, 1.0)]
    assert all(a < b for a, b in itertools.pairwise(ps))
    assert ps[3] == pytest.approx(PHI_MINUS_1, abs=1e-12) and ps[5] == pytest.approx(0.5, abs=1e-12)


def test_probability_rises_with_sigma_near_critical() -> None:
    """0.1 wt% above critical: σ 0.05, 0.1, 0.2 give Φ(−2), Φ(−1), Φ(−½); a zero σ gives 0 above and 1 below."""
    assert [p_now(1.1, s) for s in (0.05, 0.1, 0.2)] == pytest.approx([PHI_MINUS_2, PHI_MINUS_1, PHI_MINUS_HALF],
                                                                       abs=1e-12)
    assert p_now(1.1, 0.0) == 0.0 and p_now(0.9, 0.0) == 1.0


def test_mean_and_sigma_propagate_over_the_horizon() -> None:
    """c 2.0 ± 0.1, rate −1 ± 0.2 wt%/h uncorrelated: at 1 h μ = 1.0 so P = ½; at 30 min μ = 1.5, σ = √0.02: Φ(−0.5/√0.02)."""
    p = oxide_probabilities(2.0, 0.1, 1.0, -1.0, 0.2, 0.0, CFG)
    assert p[60] == pytest.approx(0.5, abs=1e-12)
    assert p[30] == pytest.approx(0.5 * math.erfc(0.5 / math.sqrt(0.02) / math.sqrt(2.0)), abs=1e-12)
    assert all(a <= b for a, b in itertools.pairwise(p))


def test_lead_time_from_a_known_consumption_rate() -> None:
    """c 2.0 wt%, critical 1.0, falling 2 wt%/h, tiny σ: the oxide reaches critical in 30 min: lead 1800 s, P ≈ 1."""
    fc = forecast(2.0, 0.001, 1.0, -2.0, 0.0, 0.0, math.nan, CFG)
    assert fc.lead_s == 1800.0 and fc.probability == pytest.approx(1.0)
    assert fc.voltage_probability == 0.0
    slower = forecast(2.0, 0.001, 1.0, -1.5, 0.0, 0.0, math.nan, CFG)
    assert slower.lead_s == 2400.0  # 1.0 wt% at 1.5 wt%/h = 40 min


def test_no_forecast_when_the_oxide_rises_or_is_far() -> None:
    """Rising oxide far above critical: probability ≈ 0 and lead NaN; a NaN oxide estimate drops the oxide route."""
    fc = forecast(2.0, 0.1, 1.0, 0.5, 0.05, 0.0, math.nan, CFG)
    assert fc.probability < 1e-6 and math.isnan(fc.lead_s)
    nan_fc = forecast(math.nan, 0.1, 1.0, -2.0, 0.0, 0.0, math.nan, CFG)
    assert nan_fc.probability == 0.0 and math.isnan(nan_fc.lead_s)


def test_voltage_route_and_the_noisy_or() -> None:
    """The logistic gives ½ at the slope point; with P_oxide ½ throughout the combination is ¾, lead 0 (now)."""
    assert voltage_probability(40.0, CFG) == 0.5 and voltage_probability(math.nan, CFG) == 0.0
    assert voltage_probability(50.0, CFG) == pytest.approx(1.0 / (1.0 + math.exp(-1.0)))
    fc = combined_forecast([0.5] * (CFG.n_steps + 1), 0.5, CFG)
    assert fc.probability == pytest.approx(0.75) and fc.lead_s == 0.0
    below = combined_forecast([0.0] * (CFG.n_steps + 1), 0.1, CFG)
    assert below.probability == pytest.approx(0.1) and math.isnan(below.lead_s)
    beyond = combined_forecast([0.0] * CFG.n_steps + [0.3], 0.0, CFG)
    assert beyond.probability == pytest.approx(0.3) and beyond.lead_s == CFG.horizon_s  # median past the horizon


def test_bad_settings_are_refused_with_the_field_name() -> None:
    """Zero horizon or step, a threshold outside (0, 1] and a non-finite slope point are refused by name."""
    for kwargs in ({"ae_forecast_horizon_s": 0.0}, {"ae_forecast_step_s": -60.0}, {"ae_forecast_threshold": 1.5},
                   {"ae_forecast_threshold": 0.0}, {"ae_forecast_slope_uohm_h": math.inf}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            CellEstimatorSection(**kwargs)  # type: ignore[arg-type]


def test_recipe_fields_load_and_a_bad_threshold_is_refused_at_its_line(tmp_path: Path) -> None:
    """estimator.ae_forecast_* load into the forecast config; a threshold of 1.5 is refused at its own line."""
    text = ND_RECIPE.read_text().replace("model_file: models/", f"model_file: {ND_RECIPE.parent}/models/")
    anchor = "  warmup_s: 600\n"
    assert anchor in text
    good = tmp_path / "good.yaml"
    good.write_text(text.replace(anchor, anchor + "  ae_forecast_horizon_s: 2400\n  ae_forecast_threshold: 0.4\n"))
    recipe = load_recipe(good, extra_names=frozenset({AE_DETECTED})).recipe
    assert isinstance(recipe, CellRecipe)
    cfg = AeForecastConfig.from_recipe(recipe)
    assert (cfg.horizon_s, cfg.threshold, cfg.n_steps) == (2400.0, 0.4, 40)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(anchor, anchor + "  ae_forecast_threshold: 1.5\n"))
    with pytest.raises(RecipeError) as info:
        load_recipe(bad)
    line = bad.read_text().splitlines().index("  ae_forecast_threshold: 1.5") + 1
    hits = [p for p in info.value.problems if "ae_forecast_threshold" in p.message + p.path]
    assert hits and hits[0].line == line, [str(p) for p in info.value.problems]


FEEDER_BLOCKED = [{"at_h": 0.5, "kind": "output_limit", "signal": "feed", "value": 0.0, "duration_h": 1.0}]
CYCLES = 1200  # 1 h 40 min: the first anode effect comes about 50 min after the blockage


@pytest.mark.parametrize("seed", [5, 8])
def test_forecast_comes_before_the_first_detected_anode_effect(seed: int) -> None:
    """Feeder blocked at 0.5 h, baseline: the forecast reaches the recipe's threshold ≥ 10 min before the first detected anode effect, with a finite lead, and not before the blockage."""
    su = SimUnit(ND_RECIPE, scenario(events=FEEDER_BLOCKED), seed=seed)
    su.go_on()
    su.step(CYCLES - su.k)
    thr = AeForecastConfig.from_recipe(su.recipe).threshold  # type: ignore[arg-type]
    detected = next(r.t_s for r in su.records if r.estimate.extras[AE_DETECTED] >= 0.5)
    raised = next(r for r in su.records if r.estimate.extras[AE_FORECAST_PROBABILITY] >= thr)
    assert 0.5 * 3600.0 < raised.t_s <= detected - 600.0
    assert math.isfinite(raised.estimate.extras[AE_FORECAST_LEAD])


def test_the_forecast_alarm_is_raised_before_the_anode_effect_alarm() -> None:
    """Feeder blocked, seed 5, with the site's alarm rules: anode_effect_forecast is raised ≥ 10 min before anode_effect, each raised once until it clears."""
    from apc.alarms.book import AlarmBook
    from apc.alarms.monitor import SiteAlarms
    from apc.audit import null_logger

    su = SimUnit(ND_RECIPE, scenario(events=FEEDER_BLOCKED), seed=5)
    alarms = SiteAlarms(AlarmBook(None, audit=null_logger()))
    raised: dict[str, list[float]] = {}
    su.request(Mode.ON)
    for _ in range(CYCLES):
        rec = su.step()[0]
        for ch in alarms.observe(su.unit, rec):
            if ch.what == "raised":
                raised.setdefault(ch.alarm.cause, []).append(rec.t_s)
    assert raised["anode_effect_forecast"][0] <= raised["anode_effect"][0] - 600.0


def test_forecast_changes_no_setpoint_and_no_truth() -> None:
    """The same seeded feeder-blocked run with the forecast and with the estimator it wraps: identical writes and plant truth every cycle."""
    runs = []
    for wrapped in (True, False):
        su = SimUnit(ND_RECIPE, scenario(events=FEEDER_BLOCKED), seed=5)
        est = su.unit.estimator
        assert isinstance(est, ForecastingEstimator)
        if not wrapped:
            su.unit.estimator = est.inner
        su.go_on()
        su.step(CYCLES - su.k)
        runs.append(su)
    with_fc, without = runs
    assert AE_FORECAST_PROBABILITY not in without.records[-1].estimate.extras
    assert AE_FORECAST_PROBABILITY in with_fc.records[-1].estimate.extras
    assert any(r.estimate.extras[AE_DETECTED] >= 0.5 for r in with_fc.records)  # the run reaches anode effects
    for a, b in zip(with_fc.records, without.records, strict=True):
        assert move_writes(a, with_fc.recipe) == move_writes(b, without.recipe)
        assert a.truth == b.truth
        assert a.mode == b.mode
