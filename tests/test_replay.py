"""``apc replay``: a recipe's estimator, controller and guard over a real ``apc run --virtual-plant`` record
(OPC UA on loopback, accelerated real clock), and over an ``apc sim`` record."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import apc.runtime as runtime
from apc.assembly import load, load_site_file
from apc.cli import main
from apc.export import write_csv
from apc.plant_sim_cli import load_plant_file
from apc.replay import replay
from apc.replay_summary import summarise
from apc.replay_table import replay_table
from sim.scenario import SCENARIO_DIR
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ND_RECIPE, ROOT

QUICK = ROOT / "tests" / "fixtures" / "unit" / "nd_cell_quick_warmup.yaml"
VIM = ROOT / "recipes" / "vim_furnace.yaml"
NAN_TOKENS = {"nan", "NaN", "inf", "-inf", "Infinity", "-Infinity"}


@pytest.fixture(scope="module")
def run_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.3 plant hours of ``apc run --virtual-plant`` (one cell over OPC UA, 150x), dips and lab samples
    every 0.04 h: the unit reaches ON after its quick warm-up."""
    tmp = tmp_path_factory.mktemp("replay_run")
    nominal = yaml.safe_load((SCENARIO_DIR / "nominal.yaml").read_text())
    scenario = tmp / "samples.yaml"
    scenario.write_text(yaml.safe_dump({**nominal, "name": "samples", "dip_interval_h": 0.04,
                                        "lab_interval_h": 0.04, "lab_delay_h": 0.02, "events": []}))
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({"schema_version": 1, "site": "replay", "units": [
        {"name": "cell-01", "recipe": str(QUICK), "requested_mode": "ON",
         "plant": {"kind": "sim", "scenario": str(scenario), "seed": 21}}]}))
    plant = tmp / "plant.yaml"
    plant.write_text(yaml.safe_dump({"schema_version": 1, "host": "127.0.0.1", "scan_s": 5,
                                     "units": {"cell-01": {"protocol": "opcua", "port": free_port()}}}))
    out = io.StringIO()
    code = asyncio.run(runtime.run_site(load_site_file(site), speed=150.0, hours=0.3, record_dir=tmp / "records",
                                        out=out, virtual_plant=load_plant_file(plant), compute_workers=0))
    assert code == 0, out.getvalue()
    (rec,) = (tmp / "records").glob("cell-01-*.apcrec")
    return rec


def _variant(tmp: Path, name: str, edits: dict[str, str]) -> Path:
    """A copy of the quick-warm-up cell recipe with text replacements (each must apply once)."""
    text = QUICK.read_text().replace("../../../recipes/models/", f"{ROOT / 'recipes' / 'models'}/")
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp / name
    path.write_text(text)
    return path


def _replay_json(record: Path, recipe: Path, out: Path, capsys: pytest.CaptureFixture[str],
                 *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["replay", str(record), "--recipe", str(recipe), "--out", str(out), "--json", *extra]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def _replay_api(record: Path, recipe: Path, table: Path) -> dict[str, Any]:
    """The summary (as ``--json`` prints it) of replaying ``record`` with ``recipe``; its table in ``table``."""
    result = replay(record, load(recipe))
    write_csv(replay_table(result), table)
    return {**summarise(result).to_json(), "table": str(table)}


def _same(a: Any, b: Any) -> bool:
    """Equal as the flight record writes them (NaN equals NaN, bit for bit otherwise)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_same_recipe_reproduces_the_recorded_estimates_and_moves_exactly(
        run_record: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Replaying an OPC UA run with its own recipe gives bit-identical estimates, plans and guard
    decisions in every cycle, equal sample residuals, and writes the table and three figures."""
    result = replay(run_record, load(QUICK))
    on = [c for c in result.cycles if c.recorded.mode.actual == "ON"]
    assert len(on) > 100 and any(c.recorded.decisions for c in on)
    for c in result.cycles:
        assert _same(c.estimate.to_json(), c.recorded.estimate.to_json()), c.recorded.k
        assert (c.plan is None) == (c.recorded.plan is None) or c.recorded.mode.actual == "OFF"
        if c.plan is not None and c.recorded.plan is not None:
            assert c.plan.moves == c.recorded.plan.moves and c.plan.status == c.recorded.plan.status, c.recorded.k
        assert c.decisions == c.recorded.decisions, c.recorded.k

    data = _replay_json(run_record, QUICK, tmp_path / "same", capsys)
    assert data["on_cycles"] == len(on)
    for mv in data["mvs"]:
        assert mv["cycles_different"] == 0 and mv["plan_cycles_different"] == 0 and mv["on_cycles"] == len(on)
        assert mv["written_recorded"] == mv["written_replayed"]
    assert {e["name"] for e in data["estimates"]} >= {"dissolved_oxide_wtpct", "bath_temp_degC"}
    assert all(e["max_abs_diff"] == 0.0 and e["cycles"] > 0 for e in data["estimates"])
    samples = {s["input"]: s for s in data["samples"]}
    assert samples["oxide_lab"]["samples"] >= 3 and samples["bath_temp_dip"]["samples"] >= 3
    assert all(s["recorded_rms"] == s["replayed_rms"] is not None for s in samples.values())
    assert sorted(Path(f).name for f in data["figures"]) == ["replay_cvs.png", "replay_mvs.png", "replay_states.png"]
    assert all(Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in data["figures"])
    rows = _rows(Path(data["table"]))
    assert len(rows) == len(result.cycles)
    assert {"recorded.oxide_feed_kg_h", "replayed.oxide_feed_kg_h", "recorded.est.dissolved_oxide_wtpct",
            "replayed.est.dissolved_oxide_wtpct", "replayed.est.bath_temp_degC_sigma"} <= set(rows[0])


def test_a_changed_recipe_moves_differently_and_the_summary_counts_it(run_record: Path, tmp_path: Path) -> None:
    """A lower nominal feed and a noisier voltage model: every ON cycle's feed differs by the mean the
    table shows, the current does not, and the estimates move away from the recorded ones."""
    new = _variant(tmp_path, "changed.yaml", {"nominal_feed_kg_h: 9.2": "nominal_feed_kg_h: 8.0",
                                              "voltage_std_V: 0.03 ": "voltage_std_V: 0.06 "})
    data = _replay_api(run_record, new, tmp_path / "changed.csv")
    mvs = {m["name"]: m for m in data["mvs"]}
    feed, current = mvs["oxide_feed"], mvs["current_sp"]
    assert feed["on_cycles"] > 100 and feed["cycles_different"] == feed["on_cycles"]
    assert current["cycles_different"] == 0
    rows = [r for r in _rows(Path(data["table"])) if r["mode_actual"] == "ON"]
    diffs = [abs(float(r["replayed.oxide_feed_kg_h"]) - float(r["recorded.oxide_feed_kg_h"])) for r in rows]
    assert feed["mean_abs_diff"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-12)
    assert feed["mean_abs_diff"] > 1.0  # 9.2 → 8.0 kg/h nominal, times the 0.7 / 1.4 phase ratios
    oxide = next(e for e in data["estimates"] if e["name"] == "dissolved_oxide_wtpct")
    assert oxide["mean_abs_diff"] > 0 and oxide["replayed_sigma_mean"] > 0


def test_the_new_recipes_validation_rules_judge_the_recorded_samples(run_record: Path, tmp_path: Path) -> None:
    """A cell-voltage range the recorded voltage lies outside: every replayed verdict is out_of_range, the
    new estimate is unhealthy and the new unit would have written nothing where the recorded one wrote."""
    new = _variant(tmp_path, "narrow.yaml", {"range: [0, 60]": "range: [0, 5]"})
    data = _replay_api(run_record, new, tmp_path / "narrow.csv")
    rows = _rows(Path(data["table"]))
    assert {r["replayed.input.cell_voltage_V.verdict"] for r in rows} == {"out_of_range"}
    assert {r["recorded.input.cell_voltage_V.verdict"] for r in rows} == {"ok"}
    feed = next(m for m in data["mvs"] if m["name"] == "oxide_feed")
    assert feed["written_recorded"] > 100 and feed["written_replayed"] == 0
    on = [r for r in rows if r["mode_actual"] == "ON"]
    assert on and all(r["replayed.est.health"] == "cell_voltage invalid" and r["replayed.plan.status"] == "not_run"
                      and r["replayed.oxide_feed_kg_h.written"] == "" for r in on)  # no plan, nothing to write


def test_a_recipe_that_does_not_fit_the_record_is_refused_naming_what_differs(
        cell_record_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A furnace recipe on a cell record names the kinds, inputs and MVs; a cell recipe with another period
    names the period; nothing is written."""
    capsys.readouterr()
    out = tmp_path / "refused"
    assert main(["replay", str(cell_record_path), "--recipe", str(VIM), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "unit_kind: the record's is 'electrolysis_cell', the recipe's 'vacuum_furnace'" in err
    assert "inputs in the record but not in the recipe: bath_temp_dip, cell_voltage" in err
    assert "MVs in the recipe but not in the record: power_sp" in err
    slow = _variant(tmp_path, "slow.yaml", {"period_s: 5": "period_s: 10"})
    assert main(["replay", str(cell_record_path), "--recipe", str(slow), "--out", str(out)]) == 1
    assert "period_s: the record's is 5, the recipe's 10" in capsys.readouterr().err
    assert not out.exists()


def test_the_table_holds_no_nan_tokens_and_a_replay_is_deterministic(cell_record_path: Path, tmp_path: Path) -> None:
    """The record holds NaN tokens; the replay's CSV has none (empty fields instead), and two replays
    give byte-identical tables and summaries."""
    assert re.search(rb"\bNaN\b", cell_record_path.read_bytes())
    first = _replay_api(cell_record_path, ND_RECIPE, tmp_path / "a.csv")
    second = _replay_api(cell_record_path, ND_RECIPE, tmp_path / "b.csv")
    a, b = Path(first.pop("table")), Path(second.pop("table"))
    assert a.read_bytes() == b.read_bytes() and first == second
    with open(a, newline="", encoding="utf-8") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    assert not NAN_TOKENS & set(cells)
    slope = {r["recorded.est.resistance_slope_uohm_h"] for r in _rows(a)}
    assert slope == {""}  # NaN in every cycle of the record (still warming up): an empty field in the table
