"""Tests for the KPI accumulator and the record replay (apc.kpi)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apc.cycle_record import CycleRecord
from apc.kinds.electrolysis_cell.kpi import KPI_KEYS, KPI_LABELS, ND_KG_PER_KAH, KpiAccumulator, KpiConfig
from apc.kpi import format_kpis, kpis_to_json, report
from apc.recorder import FlightRecorder, RecordError
from sim.models.nd_cell import F_C_PER_MOL, M_ND_KG_PER_MOL

CONTRACT_KEYS = [
    "anode_effects",
    "anode_effect_min",
    "bath_temp_mean_degC",
    "bath_temp_std_degC",
    "oxide_in_band_pct",
    "current_efficiency_pct",
    "energy_kWh_per_kg",
    "metal_kg",
    "pfc_kg_co2e",
    "sludge_final_kg",
    "guard_clamps",
    "sheds",
    "cycles",
]


def truth(**kw: float) -> dict[str, float]:
    """A truth dict with neutral defaults, overridden by ``kw``."""
    base = {
        "bath_temp_degC": 1050.0,
        "dissolved_oxide_wtpct": 3.0,
        "anode_effect": 0.0,
        "metal_kg": 0.0,
        "charge_kAh": 0.0,
        "energy_kWh": 0.0,
        "pfc_kg_co2e": 0.0,
        "sludge_kg": 0.0,
    }
    base.update(kw)
    return base


def run(cfg: KpiConfig, rows: list[tuple[float, dict[str, float]]]) -> dict[str, float | int]:
    acc = KpiAccumulator(cfg)
    for t, tr in rows:
        acc.account(t, tr, 0, False)
    return acc.result()


def ae_rows(ae_times: set[float], *, period: float = 10.0, end: float = 400.0) -> list[tuple[float, dict[str, float]]]:
    n = int(end / period) + 1
    return [(i * period, truth(anode_effect=1.0 if i * period in ae_times else 0.0)) for i in range(n)]


def test_result_has_exactly_the_contract_keys() -> None:
    """result() returns exactly the contracted KPI names, counts as ints."""
    acc = KpiAccumulator(KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0)))
    acc.account(0.0, truth(), 1, True)
    res = acc.result()
    assert list(res) == CONTRACT_KEYS == list(KPI_KEYS)
    for key in ("anode_effects", "guard_clamps", "sheds", "cycles"):
        assert type(res[key]) is int


def test_anode_effects_30s_apart_merge_into_one_event() -> None:
    """Two AE episodes whose gap is 30 s (< 60 s merge window) count as one event."""
    cfg = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0), ae_merge_s=60.0)
    # Episode 1: 100..130 s, episode 2 starts 30 s after the last AE cycle.
    res = run(cfg, ae_rows({100.0, 110.0, 120.0, 130.0, 160.0, 170.0}))
    assert res["anode_effects"] == 1
    assert res["anode_effect_min"] == pytest.approx(6 * 10.0 / 60.0, abs=1e-12)


def test_anode_effects_120s_apart_count_twice() -> None:
    """Two AE episodes 120 s apart count as two events; minutes add up per cycle spacing."""
    cfg = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0), ae_merge_s=60.0)
    res = run(cfg, ae_rows({100.0, 110.0, 120.0, 130.0, 250.0, 260.0}))
    assert res["anode_effects"] == 2
    assert res["anode_effect_min"] == pytest.approx(60.0 / 60.0, abs=1e-12)


def test_anode_effect_minutes_use_actual_cycle_spacing() -> None:
    """AE minutes sum the real t_s differences, so irregular cycles are weighted by their length."""
    cfg = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0))
    rows = [(0.0, truth()), (5.0, truth(anode_effect=1.0)), (17.0, truth(anode_effect=1.0)), (20.0, truth())]
    res = run(cfg, rows)
    assert res["anode_effects"] == 1
    assert res["anode_effect_min"] == pytest.approx((5.0 + 12.0) / 60.0, abs=1e-12)


def test_oxide_band_is_inclusive() -> None:
    """Oxide exactly on either band edge is in band; values just outside are not."""
    cfg = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0))
    values = [2.0, 4.0, 3.0, 1.999, 4.001]
    res = run(cfg, [(i * 5.0, truth(dissolved_oxide_wtpct=v)) for i, v in enumerate(values)])
    assert res["oxide_in_band_pct"] == pytest.approx(60.0, abs=1e-12)


def test_energy_per_kg_and_no_metal_is_nan() -> None:
    """Specific energy is window energy over window metal, and NaN when no metal was made."""
    cfg = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0))
    rows = [(i * 5.0, truth(metal_kg=100.0 + 12.5 * i, energy_kWh=7000.0 + 125.0 * i)) for i in range(5)]
    res = run(cfg, rows)
    assert res["metal_kg"] == pytest.approx(50.0, abs=1e-12)
    assert res["energy_kWh_per_kg"] == pytest.approx(500.0 / 50.0, abs=1e-12)

    res = run(cfg, [(i * 5.0, truth(energy_kWh=10.0 * i)) for i in range(5)])
    assert math.isnan(res["energy_kWh_per_kg"])
    assert res["metal_kg"] == 0.0


def test_faraday_constant_is_computed_from_molar_mass_and_faraday() -> None:
    """The Nd Faraday yield equals M_Nd/(3F) per kA*h with the model's constants, about 1.7939 kg."""
    assert M_ND_KG_PER_MOL == 0.144242 and F_C_PER_MOL == 96485.33212
    expected = 1000.0 * 3600.0 / (3 * 96485.33212) * 0.144242
    assert pytest.approx(expected, rel=1e-15) == ND_KG_PER_KAH
    assert 1.7939 <= ND_KG_PER_KAH < 1.7940


def test_current_efficiency_75_percent() -> None:
    """Metal built at 75 % of the Faraday yield gives CE = 75.0 within 1e-9."""
    cfg = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0))
    amps_kA = 6.0
    rows = []
    for i in range(200):
        charge = 1000.0 + amps_kA * (i * 5.0) / 3600.0
        rows.append((i * 5.0, truth(charge_kAh=charge, metal_kg=0.75 * ND_KG_PER_KAH * charge)))
    res = run(cfg, rows)
    assert abs(res["current_efficiency_pct"] - 75.0) < 1e-9


def test_warmup_cycles_are_excluded_from_windowed_kpis() -> None:
    """Cycles before warmup_s affect no windowed KPI; deltas start at the first post-warm-up cycle."""
    cfg = KpiConfig(warmup_s=100.0, oxide_band_wtpct=(2.0, 4.0))
    acc = KpiAccumulator(cfg)
    # Warm-up: wild temperature, AE, out-of-band oxide, clamps and sheds.
    for i in range(10):  # t = 0..90
        acc.account(
            i * 10.0,
            truth(bath_temp_degC=900.0, anode_effect=1.0, dissolved_oxide_wtpct=9.0, metal_kg=float(i), energy_kWh=5.0 * i),
            2,
            True,
        )
    # Window: t = 100..190, metal 10..19, energy 100..190 (step 10 per cycle).
    for i in range(10, 20):
        acc.account(i * 10.0, truth(bath_temp_degC=1050.0, metal_kg=float(i), energy_kWh=10.0 * i, sludge_kg=0.5 * i), 1, False)
    res = acc.result()
    assert res["anode_effects"] == 0
    assert res["anode_effect_min"] == 0.0
    assert res["bath_temp_mean_degC"] == 1050.0
    assert res["bath_temp_std_degC"] == 0.0
    assert res["oxide_in_band_pct"] == 100.0
    assert res["metal_kg"] == 9.0
    assert res["energy_kWh_per_kg"] == pytest.approx(90.0 / 9.0, abs=1e-12)
    # Whole-run counters and the last sludge value are not windowed.
    assert res["guard_clamps"] == 10 * 2 + 10 * 1
    assert res["sheds"] == 10
    assert res["cycles"] == 20
    assert res["sludge_final_kg"] == 9.5


def test_ae_in_progress_at_end_of_warmup_counts_once() -> None:
    """An AE spanning the warm-up boundary counts as one event, with only post-warm-up minutes."""
    cfg = KpiConfig(warmup_s=100.0, oxide_band_wtpct=(2.0, 4.0))
    res = run(cfg, ae_rows({80.0, 90.0, 100.0, 110.0}, end=200.0))
    assert res["anode_effects"] == 1
    assert res["anode_effect_min"] == pytest.approx(20.0 / 60.0, abs=1e-12)


def test_no_cycle_past_warmup_gives_nan_and_zero_counts() -> None:
    """Without any post-warm-up cycle, windowed KPIs are NaN and AE counts are 0."""
    cfg = KpiConfig(warmup_s=1e9, oxide_band_wtpct=(2.0, 4.0))
    acc = KpiAccumulator(cfg)
    acc.account(0.0, truth(anode_effect=1.0, sludge_kg=3.0), 4, True)
    res = acc.result()
    for key in (
        "bath_temp_mean_degC",
        "bath_temp_std_degC",
        "oxide_in_band_pct",
        "current_efficiency_pct",
        "energy_kWh_per_kg",
        "metal_kg",
        "pfc_kg_co2e",
    ):
        assert math.isnan(res[key]), key
    assert res["anode_effects"] == 0 and res["anode_effect_min"] == 0.0
    assert (res["guard_clamps"], res["sheds"], res["cycles"], res["sludge_final_kg"]) == (4, 1, 1, 3.0)


def test_temperature_mean_and_std_match_numpy() -> None:
    """Welford mean and population std match numpy on a large-offset series."""
    rng = np.random.default_rng(7)
    temps = 1050.0 + rng.normal(0.0, 2.5, size=5000)
    cfg = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0))
    res = run(cfg, [(i * 5.0, truth(bath_temp_degC=float(v))) for i, v in enumerate(temps)])
    assert res["bath_temp_mean_degC"] == pytest.approx(float(np.mean(temps)), rel=1e-14)
    assert res["bath_temp_std_degC"] == pytest.approx(float(np.std(temps)), rel=1e-10)


def test_out_of_order_cycles_are_rejected() -> None:
    """Feeding a cycle earlier than the previous one is an error."""
    acc = KpiAccumulator(KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0)))
    acc.account(10.0, truth(), 0, False)
    with pytest.raises(ValueError, match="out of order"):
        acc.account(5.0, truth(), 0, False)


def test_config_validation_and_mapping_round_trip() -> None:
    """KpiConfig rejects inverted bands and survives its header mapping round trip."""
    with pytest.raises(ValueError, match="oxide_band_wtpct must be finite with low <= high"):
        KpiConfig(warmup_s=0.0, oxide_band_wtpct=(4.0, 2.0))
    with pytest.raises(ValueError, match="warmup_s must be finite and >= 0"):
        KpiConfig(warmup_s=-1.0, oxide_band_wtpct=(2.0, 4.0))
    cfg = KpiConfig(warmup_s=3600.0, oxide_band_wtpct=(2.5, 4.5), ae_merge_s=90.0)
    assert KpiConfig.from_mapping(json.loads(json.dumps(cfg.to_mapping()))) == cfg
    assert KpiConfig.from_mapping({"warmup_s": 1, "oxide_band_wtpct": [1, 2]}).ae_merge_s == 60.0


def _simulated_cycles(n: int, period: float = 5.0) -> list[dict[str, Any]]:
    """Cycle records shaped like the unit loop's, with irregular float truth."""
    rng = np.random.default_rng(11)
    metal = charge = energy = pfc = 0.0
    cycles = []
    for k in range(n):
        t = k * period + float(rng.uniform(-0.01, 0.01))
        dq = 6.0 * period / 3600.0 * float(rng.uniform(0.98, 1.02))
        charge += dq
        metal += dq * ND_KG_PER_KAH * float(rng.uniform(0.7, 0.8))
        energy += float(rng.uniform(0.08, 0.09)) * 6.0 * period
        ae = 1.0 if 300 <= k < 310 or 330 <= k < 335 or 500 <= k < 503 else 0.0
        pfc += ae * float(rng.uniform(0.5, 1.5))
        cycles.append(
            {
                "k": k,
                "t_s": t,
                "truth": {
                    "bath_temp_degC": 1050.0 + float(rng.normal(0.0, 3.0)),
                    "dissolved_oxide_wtpct": float(rng.normal(3.0, 0.8)),
                    "anode_effect": ae,
                    "metal_kg": metal,
                    "charge_kAh": charge,
                    "energy_kWh": energy,
                    "pfc_kg_co2e": pfc,
                    "sludge_kg": float(rng.uniform(0.0, 5.0)),
                },
                "guard": {"clamps": int(rng.integers(0, 3)), "decisions": {
                    "feed": {"proposed": 1.0, "value": 0.9, "write": True, "clamps": ["rate"], "reason": ""}}},
                "shed": bool(rng.random() < 0.02),
                "shed_reason": "",
                "plan": {"moves": {"feed": 1.0}, "predicted": {}, "status": "ok", "iterations": 4,
                         "solve_time_s": float(rng.uniform(0, 0.1)), "reason": ""},
            }
        )
    return cycles


def test_report_replay_equals_live_accumulator_exactly(tmp_path: Path) -> None:
    """report() on a recorded run returns exactly (==) what the live accumulator computed."""
    cfg = KpiConfig(warmup_s=600.0, oxide_band_wtpct=(2.5, 3.5), ae_merge_s=60.0)
    path = tmp_path / "sim.jsonl"
    live = KpiAccumulator(cfg)
    header = {"unit": "cell-01", "recipe": "nd", "recipe_sha256": "0" * 64, "seed": 11, "period_s": 5.0,
              "started_utc": "2025-01-01T00:00:00Z", "kpi": cfg.to_mapping(), "scenario": "day", "controller": "mpc"}
    with FlightRecorder(path, header) as rec:
        for c in _simulated_cycles(2000):
            live.add(CycleRecord.from_json(c))
            rec.append(c)
    live_res = live.result()
    replay = report(path)
    assert replay == live_res
    assert live_res["anode_effects"] == 3 and live_res["cycles"] == 2000
    assert 70.0 < live_res["current_efficiency_pct"] < 80.0


def test_report_replay_equal_when_kpis_are_nan(tmp_path: Path) -> None:
    """Replay equality (==) also holds when some KPIs are NaN."""
    cfg = KpiConfig(warmup_s=1e9, oxide_band_wtpct=(2.5, 3.5))
    path = tmp_path / "short.jsonl"
    live = KpiAccumulator(cfg)
    with FlightRecorder(path, {"kpi": cfg.to_mapping()}) as rec:
        for c in _simulated_cycles(20):
            live.add(CycleRecord.from_json(c))
            rec.append(c)
    assert report(path) == live.result()


def test_report_ignores_truncated_tail_and_follows_resumed_record(tmp_path: Path) -> None:
    """report() replays across a resumed header and ignores a cut-off final cycle."""
    cfg = KpiConfig(warmup_s=100.0, oxide_band_wtpct=(2.5, 3.5))
    cycles = _simulated_cycles(300)
    path = tmp_path / "resumed.jsonl"
    live = KpiAccumulator(cfg)
    for part in (cycles[:150], cycles[150:]):
        with FlightRecorder(path, {"kpi": cfg.to_mapping()}) as rec:
            for c in part:
                live.add(CycleRecord.from_json(c))
                rec.append(c)
    with open(path, "ab") as f:
        f.write(b'{"k":300,"t_s":1500.0,"truth":{"bath_')
    assert report(path) == live.result()


def test_report_errors_name_the_line(tmp_path: Path) -> None:
    """A cycle without truth, or a header without KPI config, is reported with its line number."""
    cfg = KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.5, 3.5))
    path = tmp_path / "plant.jsonl"
    with FlightRecorder(path, {"kpi": cfg.to_mapping()}) as rec:
        rec.append({"k": 0, "t_s": 0.0, "truth": truth(), "guard": {"clamps": 0}, "shed": False})
        rec.append({"k": 1, "t_s": 5.0, "guard": {"clamps": 0}, "shed": False})
    with pytest.raises(RecordError, match=r"plant\.jsonl:3: .*truth") as info:
        report(path)
    assert info.value.line_no == 3

    nokpi = tmp_path / "nokpi.jsonl"
    with FlightRecorder(nokpi, {"unit": "x"}):
        pass
    with pytest.raises(RecordError, match="kpi"):
        report(nokpi)


def test_format_and_json_output() -> None:
    """The table lists every KPI aligned, NaN as n/a; JSON is strict, sorted, NaN as null."""
    acc = KpiAccumulator(KpiConfig(warmup_s=0.0, oxide_band_wtpct=(2.0, 4.0)))
    acc.account(0.0, truth(), 0, False)
    acc.account(5.0, truth(), 0, False)
    kpis = acc.result()
    table = format_kpis(kpis, KPI_LABELS)
    lines = table.splitlines()
    assert len(lines) == len(KPI_KEYS)
    assert "n/a" in table  # CE and energy/kg: no metal, no charge
    # Values are right-aligned in one column: it ends where the unit-less "Cycles" row ends.
    col = len(lines[-1])
    assert lines[-1].startswith("Cycles") and lines[-1].endswith(" 2")
    for line in lines:
        assert line[col - 1] != " " and (len(line) == col or line[col : col + 2] == "  "), line

    text = kpis_to_json(kpis)
    data = json.loads(text)
    assert list(data) == sorted(KPI_KEYS)
    assert data["current_efficiency_pct"] is None and data["cycles"] == 2
    assert "NaN" not in text
