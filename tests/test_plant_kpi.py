"""Plant KPIs from flight records without truth: hand-computed figures on small synthetic records, the
split per day and shift, the audit log's interventions and ``apc report`` on plant records."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from apc.cli import main
from apc.cycle_record import CycleRecord
from apc.kinds.electrolysis_cell.kpi import ND_KG_PER_KAH
from apc.kinds.electrolysis_cell.plant_kpi import CellPlantKpis
from apc.kinds.furnace.plant_kpi import FurnacePlantKpis
from apc.plant_kpi import CvBand, CvBandKpis, PlantKpis, ServiceKpis, current_figures, in_band_probability
from apc.plant_report import Split, parse_hhmm, plant_report, report_json
from apc.recorder import FlightRecorder

MIDNIGHT = 1767225600.0  # 2026-01-01T00:00:00Z

CELL_IO = {"inputs": {"cell_voltage": {"unit": "V", "role": "measurement"},
                      "line_current": {"unit": "kA", "role": "measurement"},
                      "oxide_lab": {"unit": "wt%", "role": "sample"},
                      "metal_tapped": {"unit": "kg", "role": "auxiliary"}},
           "mvs": {"feed": {"unit": "kg/h"}, "current": {"unit": "kA"}}}
BANDS = [CvBand("oxide", 2.0, 3.0, "wt%", "oxide_lab", "ox", "ox_std").to_mapping()]


PFC_PER_KAH = 100.0
"""A round emission factor for hand computations, kg CO2e per kAh in anode effect."""


def header(period_s: float = 5.0, unit: str = "cell-01", kind: str = "electrolysis_cell", **extra: Any) -> dict[str, Any]:
    return {"unit": unit, "unit_kind": kind, "period_s": period_s, "io": CELL_IO,
            "plant_kpi": {"cv_bands": BANDS, "pfc_kg_co2e_per_kAh": PFC_PER_KAH}, **extra}


def cycle(k: int, utc: float = MIDNIGHT, *, requested: str = "ON", actual: str = "ON",
          mvs: dict[str, bool] | None = None, inputs: dict[str, list[Any]] | None = None,
          estimate: dict[str, Any] | None = None, shed: bool = False, reason: str = "",
          decisions: dict[str, list[str]] | None = None, dcs_at_limit: dict[str, str] | None = None,
          batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """One cycle object as a plant record holds it (no truth)."""
    rec: dict[str, Any] = {
        "k": k, "t_s": 5.0 * k, "utc": utc,
        "inputs": inputs or {},
        "estimate": estimate or {"names": [], "x": [], "P_diag": None, "health": "ok", "extras": {}},
        "mode": {"requested": requested, "actual": actual, "hold": "",
                 "mvs": mvs if mvs is not None else {"feed": True, "current": True}},
        "plan": None,
        "guard": {"clamps": sum(1 for c in (decisions or {}).values() if c),
                  "decisions": {n: {"proposed": 1.0, "value": 1.0, "write": True, "clamps": c, "reason": ""}
                                for n, c in (decisions or {}).items()}},
        "writes": [], "readback": {}, "dcs_at_limit": dcs_at_limit or {},
        "shed": shed, "shed_reason": reason,
    }
    if batch is not None:
        rec["batch"] = batch
    return rec


def records(rows: list[dict[str, Any]]) -> list[CycleRecord]:
    return [CycleRecord.from_json(r) for r in rows]


def ok(value: float) -> list[Any]:
    return [value, "good", None, None, None, "ok"]


def write(path: Path, head: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    with FlightRecorder(path, head) as rec:
        for r in rows:
            rec.append(r)
    return path


def test_service_factor_and_mv_utilisation_by_hand() -> None:
    """2 cycles OFF-requested, 8 available of which 6 ON: factor 0.75; a limit clamp and a DCS at-limit count
    against the MV, a rate clamp does not; a disabled MV is not utilised."""
    rows = [cycle(0, requested="OFF", actual="OFF"), cycle(1, requested="OFF", actual="OFF"),
            cycle(2, actual="STANDBY"), cycle(3, actual="STANDBY"),
            cycle(4, decisions={"feed": ["operator_high"]}), cycle(5, dcs_at_limit={"feed": "high"}),
            cycle(6, decisions={"feed": ["rate_up"]}),
            cycle(7, mvs={"feed": True, "current": False}), cycle(8, mvs={"feed": True, "current": False}),
            cycle(9, mvs={"feed": True, "current": False})]
    acc = ServiceKpis(5.0, ("feed", "current"))
    for r in records(rows):
        acc.add(r)
    res = acc.result()
    assert res["service_factor"] == pytest.approx(6 / 8)
    assert res["available_h"] == pytest.approx(8 * 5 / 3600) and res["on_h"] == pytest.approx(6 * 5 / 3600)
    assert res["mv_utilisation_pct.feed"] == pytest.approx(100 * 4 / 6)
    assert res["mv_utilisation_pct.current"] == pytest.approx(100 * 3 / 6)
    assert acc.not_computable() == {}


def test_sheds_are_counted_by_reason_and_a_never_available_unit_says_why() -> None:
    """Three shed cycles with two reasons are counted per reason; OFF all along: no service factor, with the reason."""
    rows = [cycle(0, shed=True, reason="plant link down"), cycle(1), cycle(2, shed=True, reason="bad inputs for 6 cycles"),
            cycle(3, shed=True, reason="plant link down")]
    acc = ServiceKpis(5.0, ("feed",))
    for r in records(rows):
        acc.add(r)
    res = acc.result()
    assert res["sheds"] == 3
    assert res["sheds_by_reason.plant link down"] == 2 and res["sheds_by_reason.bad inputs for 6 cycles"] == 1
    off = ServiceKpis(5.0, ("feed",))
    off.add(records([cycle(0, requested="OFF", actual="OFF")])[0])
    assert "service_factor" not in off.result()
    assert "never requested" in off.not_computable()["service_factor"]
    assert off.not_computable()["mv_utilisation_pct.feed"] == "the unit was never ON"


def test_cv_in_band_from_samples_estimate_and_sigma_by_hand() -> None:
    """Measured: each new sample once (2 of 3 inside); estimate: 2 of 3 healthy cycles inside; with σ the mean
    of P(inside) = (erf(1/√2) + 1 + 0) / 3; an unhealthy cycle does not count."""
    def est(x: float, std: float, health: str = "ok") -> dict[str, Any]:
        return {"names": ["ox"], "x": [x], "P_diag": [9.0], "health": health, "extras": {"ox_std": std}}
    stale = [2.5, "good", None, None, 1.0, "no_new_sample"]
    rows = [cycle(0, inputs={"oxide_lab": ok(2.5)}, estimate=est(2.5, 0.5)),
            cycle(1, inputs={"oxide_lab": stale}, estimate=est(2.0, 0.0)),  # on the edge, σ 0: inside
            cycle(2, inputs={"oxide_lab": ok(3.5)}, estimate=est(4.0, 0.0)),
            cycle(3, inputs={"oxide_lab": ok(2.0)}, estimate=est(2.5, 0.5, health="warming up"))]
    band = CvBand("oxide", 2.0, 3.0, "wt%", "oxide_lab", "ox", "ox_std")
    acc = CvBandKpis(5.0, [band])
    for r in records(rows):
        acc.add(r)
    res = acc.result()
    assert res["oxide_samples"] == 3
    assert res["oxide_in_band_meas_pct"] == pytest.approx(100 * 2 / 3)
    assert res["oxide_in_band_est_pct"] == pytest.approx(100 * 2 / 3)
    assert res["oxide_in_band_prob_pct"] == pytest.approx(100 * (math.erf(1 / math.sqrt(2)) + 1 + 0) / 3)
    assert in_band_probability(2.5, 0.5, 2.0, 3.0) == pytest.approx(0.682689, abs=1e-6)
    no_std = CvBand("oxide", 2.0, 3.0, "wt%", None, "ox", None)  # σ from the covariance diagonal: √9 = 3
    acc2 = CvBandKpis(5.0, [no_std])
    acc2.add(records([cycle(0, estimate={"names": ["ox"], "x": [2.5], "P_diag": [9.0], "health": "ok"})])[0])
    assert acc2.result()["oxide_in_band_prob_pct"] == pytest.approx(100 * math.erf(0.5 / (3 * math.sqrt(2))))
    assert acc2.not_computable()["oxide_in_band_meas_pct"] == "the recipe has no input measuring it"


def test_cell_current_efficiency_and_specific_energy_tap_to_tap() -> None:
    """Counter 0, 0, 10 (tap 1), 10, 10, 30 (tap 2), 30 at 6 kA and 4 V, 1 h cycles: the window is 3 h,
    18 kAh and 72 kWh for 20 kg: CE = 100·20/(ND_KG_PER_KAH·18), 3.6 kWh/kg; a counter reset is no tap."""
    counter = [0.0, 0.0, 10.0, 10.0, 10.0, 30.0, 30.0, 0.0]
    acc = CellPlantKpis(header(period_s=3600.0))
    for k, c in enumerate(counter):
        acc.add(records([cycle(k, inputs={"cell_voltage": ok(4.0), "line_current": ok(6.0),
                                           "metal_tapped": ok(c)})])[0])
    res = acc.result()
    assert res["taps"] == 2 and res["metal_tapped_kg"] == pytest.approx(30.0)
    assert res["tap_window_h"] == pytest.approx(3.0)
    assert res["current_efficiency_pct"] == pytest.approx(100 * 20 / (ND_KG_PER_KAH * 18))
    assert res["energy_kWh_per_kg"] == pytest.approx(72 / 20)
    assert acc.not_computable() == {}


def test_anode_effects_minutes_and_pfc_from_the_detected_flag() -> None:
    """Flags 0,1,1,0,1 at 6 kA with 60 s cycles: two anode effects, 3 minutes, 3·0.1 kAh·PFC_PER_KAH kg CO2e."""
    acc = CellPlantKpis(header(period_s=60.0))
    for k, flag in enumerate([0.0, 1.0, 1.0, 0.0, 1.0]):
        acc.add(records([cycle(k, inputs={"line_current": ok(6.0)},
                               estimate={"names": [], "x": [], "P_diag": None, "health": "ok",
                                         "extras": {"anode_effect_detected": flag}})])[0])
    res = acc.result()
    assert (res["anode_effects"], res["anode_effect_minutes"]) == (2, pytest.approx(3.0))
    assert res["pfc_kg_co2e_est"] == pytest.approx(3 * 0.1 * PFC_PER_KAH)


def test_the_shipped_recipe_carries_the_models_pfc_factor() -> None:
    """The cell header's PFC factor is the model's: f_CF4 · 1 kAh · M_CF4/(4F) · (GWP_CF4 + r · GWP_C2F6)."""
    from apc.assembly import load
    from apc.kinds.electrolysis_cell.plant_kpi import cell_plant_config
    from sim.models.nd_cell import F_C_PER_MOL, GWP_C2F6, GWP_CF4, M_CF4_KG_PER_MOL
    from tests.helpers.sim_harness import ND_RECIPE

    factor = cell_plant_config(load(ND_RECIPE).recipe)["pfc_kg_co2e_per_kAh"]  # type: ignore[arg-type]
    assert factor == pytest.approx(0.3 * 3.6e6 * M_CF4_KG_PER_MOL / (4 * F_C_PER_MOL) * (GWP_CF4 + 0.1 * GWP_C2F6))


def test_cell_without_taps_says_why() -> None:
    """No rise of the tapped-metal counter: CE and specific energy are not computable, with the reason."""
    acc = CellPlantKpis(header())
    acc.add(records([cycle(0, inputs={"metal_tapped": ok(5.0)})])[0])
    why = acc.not_computable()
    assert why["current_efficiency_pct"].startswith("no tapped-metal samples in the record")
    assert "current_efficiency_pct" not in acc.result() and acc.result()["taps"] == 0


def test_furnace_batch_kpis_on_the_measured_temperature_by_hand() -> None:
    """Ramp at 95 and 115 against 100 ±10, a soak at 100, then complete: RMSE √((25+225+0)/3), one cycle (5 s)
    out of band, 5 s of soak in band, batch time from the first running cycle to complete."""
    def b(state: str, kind: str = "ramp") -> dict[str, Any]:
        return {"state": state, "segment": 0 if kind == "ramp" else 1, "kind": kind, "target_degC": 100.0,
                "upper_degC": 110.0, "lower_degC": 90.0, "hold_degC": None, "soak_done_s": 0.0}
    tc = "charge_tc"
    rows = [cycle(0, batch=b("idle")), cycle(1, batch=b("running"), inputs={tc: ok(95.0)}),
            cycle(2, batch=b("running"), inputs={tc: ok(115.0)}),
            cycle(3, batch=b("running", "soak"), inputs={tc: ok(100.0)}), cycle(4, batch=b("complete"))]
    acc = FurnacePlantKpis({"period_s": 5.0, "plant_kpi": {"cv_bands": [], "measured": tc, "controlled": "core"}})
    for r in records(rows):
        acc.add(r)
    res = acc.result()
    assert res["tracking_rmse_meas_degC"] == pytest.approx(math.sqrt((25 + 225 + 0) / 3))
    assert res["out_of_band_meas_min"] == pytest.approx(5 / 60)
    assert res["soak_min"] == res["soak_in_band_meas_min"] == pytest.approx(5 / 60)
    assert res["batch_time_min"] == pytest.approx((20.0 - 5.0) / 60)
    assert (res["batches_started"], res["batches_complete"], res["batches_aborted"]) == (1, 1, 0)
    assert "no healthy estimate of core" in acc.not_computable()["tracking_rmse_est_degC"]


def test_plant_kpis_combine_generic_and_kind_figures_live() -> None:
    """current_figures() of a live accumulator holds the generic and the kind's KPIs, and why the others are missing."""
    head = header()
    acc = PlantKpis(head, CellPlantKpis(head))
    acc.add(records([cycle(0, inputs={"metal_tapped": ok(0.0)})])[0])
    fig = current_figures(acc)
    assert fig.values["service_factor"] == 1.0 and fig.values["cycles"] == 1
    assert "current_efficiency_pct" in fig.not_computable and "limit_changes" in fig.not_computable
    assert not set(fig.values) & set(fig.not_computable)


def test_by_day_splits_across_midnight(tmp_path: Path) -> None:
    """Cycles 23:50–00:10 every 5 min split into two UTC days with their own cycles and service factor."""
    utcs = [MIDNIGHT - 600.0, MIDNIGHT - 300.0, MIDNIGHT, MIDNIGHT + 300.0, MIDNIGHT + 600.0]
    rows = [cycle(k, u, actual="ON" if k != 0 else "STANDBY") for k, u in enumerate(utcs)]
    rec = write(tmp_path / "cell-01-x.apcrec", header(period_s=300.0), rows)
    (report,) = plant_report([rec], split=Split("day"))
    assert [p.label for p in report.periods] == ["2025-12-31", "2026-01-01"]
    before, after = report.periods
    assert (before.values["cycles"], after.values["cycles"]) == (2, 3)
    assert before.values["service_factor"] == 0.5 and after.values["service_factor"] == 1.0
    assert report.whole.values["service_factor"] == pytest.approx(4 / 5)
    (shifts,) = plant_report([rec], split=Split("shift", parse_hhmm("23:55"), 12))
    assert [p.label for p in shifts.periods] == ["2025-12-31T11:55Z", "2025-12-31T23:55Z"]
    assert [p.values["cycles"] for p in shifts.periods] == [1, 4]


def test_default_shifts_start_at_six_and_bad_definitions_are_refused() -> None:
    """Three 8 h shifts from 06:00 UTC: 05:59 belongs to the 22:00 shift of the day before; 7 h shifts and 25:00 are refused."""
    s = Split("shift")
    assert s.label(s.start_of(MIDNIGHT + 5 * 3600 + 3540)) == "2025-12-31T22:00Z"
    assert s.label(s.start_of(MIDNIGHT + 6 * 3600)) == "2026-01-01T06:00Z"
    assert s.label(s.start_of(MIDNIGHT + 14 * 3600)) == "2026-01-01T14:00Z"
    with pytest.raises(ValueError, match="divide 24"):
        Split("shift", shift_hours=7)
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm("25:00")


def audit_line(event: str, ts: str, **fields: Any) -> str:
    return json.dumps({"event": event, "ts": ts, "unit": fields.pop("unit", "cell-01"), **fields})


def test_interventions_come_from_the_audit_log_beside_the_record(tmp_path: Path) -> None:
    """The audit log beside the record gives mode requests (not the process start), limit changes and MV
    disables of this unit inside the record's time; without it the record's own changes are counted."""
    rows = [cycle(0, MIDNIGHT, requested="STANDBY", actual="STANDBY"), cycle(1, MIDNIGHT + 5),
            cycle(2, MIDNIGHT + 10, mvs={"feed": False, "current": True}), cycle(3, MIDNIGHT + 15)]
    rdir = tmp_path / "records"
    rdir.mkdir()
    rec = write(rdir / "cell-01-x.apcrec", header(), rows)
    plain = report_json(plant_report([rec]))
    kpis = json.loads(plain)["units"]["cell-01"]["plant"]
    assert (kpis["kpis"]["mode_requests"], kpis["kpis"]["mv_disables"]) == (1, 1)
    assert "limit_changes" in kpis["not_computable"] and "interventions" in kpis["not_computable"]
    lines = [audit_line("mode_request", "2026-01-01T00:00:00.000+00:00", why="process start", new="STANDBY"),
             audit_line("mode_request", "2026-01-01T00:00:04.000+00:00", new="ON"),
             audit_line("mode_request", "2026-01-01T00:00:06.000+00:00", new="ON", unit="cell-02"),
             audit_line("mv_enable", "2026-01-01T00:00:09.000+00:00", mv="feed", old=True, new=False),
             audit_line("operator_limits", "2026-01-01T00:00:12.000+00:00", mv="feed", old=[0, 20], new=[0, 15]),
             audit_line("operator_limits", "2026-01-01T05:00:00.000+00:00", mv="feed", old=[0, 15], new=[0, 20])]
    (rdir / "audit.jsonl").write_text("\n".join(lines[:3]) + "\n")
    with gzip.open(rdir / "audit.0001.jsonl.gz", "wt") as f:
        f.write("\n".join(lines[3:]) + "\n")
    (report,) = plant_report([rec])
    v = report.whole.values
    assert (v["mode_requests"], v["limit_changes"], v["mv_disables"], v["mv_enables"], v["interventions"]) == \
        (1, 1, 1, 0, 3)
    assert report.interventions_source.startswith("audit log")


def test_report_cli_on_a_plant_record_says_what_it_could_not_compute(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """apc report on a record without truth exits 0, lists the plant KPIs and the reasons for the others;
    --json is deterministic and has no truth 'kpis'; two segments (one gzipped) of a unit read as one."""
    rows = [cycle(k, MIDNIGHT + 5 * k, inputs={"metal_tapped": ok(0.0)}) for k in range(4)]
    first = write(tmp_path / "cell-01-x.0001.apcrec", header(), rows[:2])
    second = write(tmp_path / "cell-01-x.apcrec", header(segment=2), rows[2:])
    with open(first, "rb") as src, gzip.open(first.with_name(first.name + ".gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    first.unlink()
    files = [str(second), str(first) + ".gz"]
    assert main(["report", *files]) == 0
    out = capsys.readouterr().out
    assert "current_efficiency_pct: no tapped-metal samples in the record" in out
    assert "2 files" in out
    assert main(["report", *files, "--json", "--by", "shift"]) == 0
    a = capsys.readouterr().out
    assert main(["report", *files, "--json", "--by", "shift"]) == 0
    assert capsys.readouterr().out == a
    data = json.loads(a)
    assert "kpis" not in data
    unit = data["units"]["cell-01"]
    assert unit["plant"]["kpis"]["cycles"] == 4 and unit["periods"][0]["period"] == "2025-12-31T22:00Z"
    assert main(["report", *files, "--by", "shift", "--shift-hours", "5"]) == 2
