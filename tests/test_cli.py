"""The ``apc`` command line: check, sim (deterministic), report, run; errors without tracebacks."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from apc.assembly import load
from apc.cli import main
from apc.recorder import read_record
from apc.simulate import simulate
from sim.scenario import load_scenario
from tests.helpers.sim_harness import ND_RECIPE, SITE_DEMO, same_kpis

SLOW_FEED_RECIPE = Path(__file__).parent / "fixtures" / "unit" / "nd_cell_slow_feed.yaml"
HOURS = "6.5"  # KPI warm-up is 6 h: half an hour of windowed KPIs


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle)]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def test_check_shipped_recipe_and_site_ok(capsys: pytest.CaptureFixture[str]) -> None:
    """apc check on the shipped recipe and site exits 0 and reports both ok."""
    assert main(["check", str(ND_RECIPE), str(SITE_DEMO)]) == 0
    out, err = capsys.readouterr()
    assert f"{ND_RECIPE}: ok" in out and f"{SITE_DEMO}: ok" in out
    assert err == ""


def test_check_broken_recipe_names_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken recipe exits 1 with 'file:line: field.path' per problem on stderr and no traceback."""
    text = ND_RECIPE.read_text()
    text = text.replace("period_s: 5\n", "period_s: fast\n", 1)
    text = text.replace("    rate_per_s: 0.002\n", "    rate_per_s: -1\n    rate_per_sec: 3\n", 1)
    bad = tmp_path / "broken.yaml"
    bad.write_text(text)
    assert main(["check", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "ok" not in out
    assert f"{bad}:{line_of(text, 'period_s:')}: period_s:" in err
    assert f"{bad}:{line_of(text, '    rate_per_sec:')}: limits.current_sp.rate_per_sec:" in err
    for line in err.strip().splitlines():
        assert re.match(rf"{re.escape(str(bad))}:\d+: \S", line), line


def test_check_good_and_bad_together_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One bad file among good ones makes apc check exit 1 while the good one is still reported ok."""
    bad = tmp_path / "syntax.yaml"
    bad.write_text("schema_version: 1\nname: [unclosed\n")
    assert main(["check", str(ND_RECIPE), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert f"{ND_RECIPE}: ok" in out
    assert err.startswith(f"{bad}:") and "Traceback" not in err


def test_sim_mpc_without_mpc_section_is_refused_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    """apc sim --controller mpc on a recipe without an MPC section exits non-zero naming it, no traceback."""
    code = main(["sim", str(SLOW_FEED_RECIPE), "--controller", "mpc", "--hours", "0.1"])
    out, err = capsys.readouterr()
    assert code != 0
    assert "mpc" in err and "not available" in err
    assert "Traceback" not in err and out == ""


def test_sim_shipped_recipe_runs_either_controller(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped recipe runs under --controller baseline and --controller mpc, each named in the JSON."""
    for kind in ("baseline", "mpc"):
        assert main(["sim", str(ND_RECIPE), "--controller", kind, "--hours", "0.5", "--seed", "3", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["controller"] == kind
        assert result["kpis"]["sheds"] == 0


@pytest.mark.parametrize(("args", "needle"), [
    (["sim", "RECIPE", "--scenario", "no_such_scenario"], "no_such_scenario"),
    (["report", "NO_FILE"], "no_such.apcrec"),
    (["sim", "BROKEN"], "period_s"),
])
def test_errors_exit_1_without_traceback(args: list[str], needle: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown scenario, missing record and broken recipe: exit 1, message on stderr, no traceback."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(ND_RECIPE.read_text().replace("period_s: 5\n", "period_s: fast\n", 1))
    subst = {"RECIPE": str(ND_RECIPE), "NO_FILE": str(tmp_path / "no_such.apcrec"), "BROKEN": str(broken)}
    assert main([subst.get(a, a) for a in args]) == 1
    _, err = capsys.readouterr()
    assert needle in err and "Traceback" not in err


def sim_json(capsys: pytest.CaptureFixture[str], seed: int, *extra: str) -> str:
    assert main(["sim", str(ND_RECIPE), "--hours", HOURS, "--seed", str(seed), "--json", *extra]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_sim_json_is_deterministic_and_seed_dependent(capsys: pytest.CaptureFixture[str]) -> None:
    """Same seed: byte-identical apc sim --json output; another seed: different KPIs."""
    a = sim_json(capsys, 5)
    b = sim_json(capsys, 5)
    c = sim_json(capsys, 6)
    assert a == b
    ka, kc = json.loads(a)["kpis"], json.loads(c)["kpis"]
    assert ka["cycles"] == kc["cycles"] == int(float(HOURS) * 3600 / 5)
    assert isinstance(ka["metal_kg"], float) and ka["metal_kg"] > 0  # windowed KPIs really computed
    assert ka != kc
    meta = json.loads(a)
    assert (meta["seed"], meta["scenario"], meta["recipe"], meta["hours"]) == (5, "nominal", "nd_cell_6ka", 6.5)


def test_simulate_is_deterministic_and_matches_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """Two simulate() runs with one seed give identical KPIs (NaN-aware), equal to apc sim --json; seeds differ."""
    loaded, scen = load(ND_RECIPE), load_scenario("voltage_fault")
    r1 = asyncio.run(simulate(loaded, scen, seed=9, hours=6.5))
    r2 = asyncio.run(simulate(loaded, scen, seed=9, hours=6.5))
    r3 = asyncio.run(simulate(loaded, scen, seed=10, hours=6.5))
    assert same_kpis(r1.kpis, r2.kpis) and r1.meta == r2.meta
    assert not same_kpis(r1.kpis, r3.kpis)
    out = sim_json(capsys, 9, "--scenario", "voltage_fault")
    assert same_kpis(json.loads(out)["kpis"], r1.kpis)


def test_sim_record_then_report_gives_the_same_kpis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """apc sim --record F then apc report F --json gives exactly the KPIs the sim printed."""
    rec = tmp_path / "run.apcrec"
    sim_out = json.loads(sim_json(capsys, 13, "--scenario", "voltage_fault", "--record", str(rec)))
    assert main(["report", str(rec), "--json"]) == 0
    rep_out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(rep_out)["kpis"] == sim_out["kpis"]
    assert sim_out["kpis"]["sheds"] >= 1  # a run with a shed, so 'sheds' is checked too
    record = read_record(rec)
    assert not record.truncated_tail
    assert len(record.cycles) == sim_out["kpis"]["cycles"]
    assert record.headers[0]["seed"] == 13 and record.headers[0]["scenario"] == "voltage_fault"
    # The human-readable report is the same numbers as a table.
    assert main(["report", str(rec)]) == 0
    table, _ = capsys.readouterr()
    assert re.search(rf"^Cycles\s+{sim_out['kpis']['cycles']}$", table, re.M)


def test_sim_audit_file_gets_one_event_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """apc sim --audit F appends JSON audit events (mode request, writes) to F."""
    audit = tmp_path / "audit.jsonl"
    assert main(["sim", str(ND_RECIPE), "--hours", "0.6", "--seed", "1", "--audit", str(audit)]) == 0
    capsys.readouterr()
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {"mode_request", "mode_change", "write"} <= kinds
    assert events[0]["event"] == "mode_request" and events[0]["who"] == "apc sim"


def test_run_site_for_a_short_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """apc run SITE --hours --speed runs every unit, writes complete records and exits 0."""
    site = tmp_path / "site.yaml"
    site.write_text(
        "schema_version: 1\nsite: t\nspeed: 1\nunits:\n"
        f"  - {{name: a, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 1}}, requested_mode: 'ON'}}\n"
        f"  - {{name: b, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 2}}}}\n"
    )
    rdir = tmp_path / "rec"
    assert main(["run", str(site), "--hours", "0.5", "--speed", "1000", "--record-dir", str(rdir)]) == 0
    out, _ = capsys.readouterr()
    for name in ("a", "b"):
        rec = read_record(next(rdir.glob(f"{name}-*.apcrec")))
        assert not rec.truncated_tail
        assert re.search(rf"^{name}: {len(rec.cycles)} cycles, \d+ overruns, 0 errors$", out, re.M)
        assert len(rec.cycles) >= 10
    assert (rdir / "audit.jsonl").read_text().count("mode_request") == 2
