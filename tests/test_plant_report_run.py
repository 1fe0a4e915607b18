"""``apc report`` on the record of a real ``apc run --virtual-plant`` (OPC UA on loopback, accelerated real
clock) in which the cell voltage goes bad and the unit sheds."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
import yaml

import apc.runtime as runtime
from apc.assembly import load_site_file
from apc.cli import main
from apc.plant_sim_cli import load_plant_file
from apc.recorder import read_record
from sim.scenario import SCENARIO_DIR
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ROOT

QUICK = ROOT / "tests" / "fixtures" / "unit" / "nd_cell_quick_warmup.yaml"
HOURS = 0.3
FAULTS_AT_H = [round(0.1 + 0.09 * i, 3) for i in range(12)]
"""Bad voltage for 54 s (about 10 cycles) every 324 s of plant time: however long the start-up took,
the unit reaches ON between two faults (it needs about 185 s of good data) and the next fault sheds it
(after 6 bad cycles); the shed stays latched, so there is exactly one."""


def test_report_of_an_apc_run_record_counts_the_shed_and_matches_the_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run that goes ON, then sheds on a bad voltage: service factor in (0, 1) equal to ON/available cycles,
    one shed with its reason, no operator intervention (the site file's start is none) and the oxide's
    estimated in-band share equal to the count over the record's cycles."""
    nominal = yaml.safe_load((SCENARIO_DIR / "nominal.yaml").read_text())
    scenario = tmp_path / "fault.yaml"
    scenario.write_text(yaml.safe_dump({**nominal, "name": "voltage-bad", "events": [
        {"at_h": at_h, "kind": "input_fault", "signal": "cell_voltage_V", "fault": "bad", "duration_h": 0.015}
        for at_h in FAULTS_AT_H]}))
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"schema_version": 1, "site": "kpi", "units": [
        {"name": "cell-01", "recipe": str(QUICK), "requested_mode": "ON",
         "plant": {"kind": "sim", "scenario": str(scenario), "seed": 21}}]}))
    plant = tmp_path / "plant.yaml"
    plant.write_text(yaml.safe_dump({"schema_version": 1, "host": "127.0.0.1", "scan_s": 5,
                                     "units": {"cell-01": {"protocol": "opcua", "port": free_port()}}}))
    rdir = tmp_path / "records"
    out = io.StringIO()
    code = asyncio.run(runtime.run_site(load_site_file(site), speed=150.0, hours=HOURS, record_dir=rdir, out=out,
                                        virtual_plant=load_plant_file(plant), compute_workers=0))
    assert code == 0, out.getvalue()
    (rec,) = rdir.glob("cell-01-*.apcrec")
    cycles = read_record(rec).cycle_records()

    capsys.readouterr()  # what the run logged
    assert main(["report", str(rec), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "kpis" not in data  # a plant record: no simulator truth
    unit = data["units"]["cell-01"]
    kpis, missing = unit["plant"]["kpis"], unit["plant"]["not_computable"]
    assert unit["interventions_source"].startswith("audit log")

    on = sum(c.mode.actual == "ON" for c in cycles)
    available = sum(c.mode.requested != "OFF" for c in cycles)
    assert kpis["cycles"] == len(cycles) and on > 0
    assert 0.0 < kpis["service_factor"] < 1.0
    assert kpis["service_factor"] == pytest.approx(on / available)
    shed_reasons = [k for k in kpis if k.startswith("sheds_by_reason.")]
    assert kpis["sheds"] == 1 and len(shed_reasons) == 1 and "cell_voltage" in shed_reasons[0]
    assert kpis["interventions"] == 0

    healthy = [c for c in cycles if c.estimate.health == "ok" and "dissolved_oxide_wtpct" in c.estimate.extras]
    lo, hi = 1.8, 2.7  # the fixture's controller.mpc.oxide_band_wtpct
    inside = sum(lo <= c.estimate.extras["dissolved_oxide_wtpct"] <= hi for c in healthy)
    assert healthy and kpis["oxide_in_band_est_pct"] == pytest.approx(100.0 * inside / len(healthy))
    assert "current_efficiency_pct" in missing  # no tap in a quarter of an hour
