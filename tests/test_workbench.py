"""The workbench: apc sim --set overrides, sweep specs and runs (pool and Ray), seeded search, recipe diffs."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import pytest
import yaml

from apc.assembly import load
from apc.cli import main
from apc.recipe.errors import RecipeError
from apc.recipe.override_text import recipe_diff, recipe_with_overrides
from apc.recipe.overrides import parse_overrides
from apc.sweep.expr import KpiExprError, parse_kpi_expr
from apc.sweep.results import format_table, summarise
from apc.sweep.runner import PoolBackend, Progress, RayBackend, RunJob, RunResult, run_all
from apc.sweep.spec import load_sweep_spec
from apc.sweep.sweep import run_sweep
from apc.sweep.tune import run_tune
from apc.sweep.tune_spec import load_tune_spec
from tests.helpers.sim_harness import ND_RECIPE, same_kpis

TINY_H = 0.5
"""Half an hour with the KPI warm-up at 0: every KPI is a number."""


def _sim_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    assert main(["sim", str(ND_RECIPE), "--hours", "0.25", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_set_override_is_applied_and_named_in_provenance(capsys: pytest.CaptureFixture[str]) -> None:
    """--set changes the field, the run's recipe hash and lists the override; without --set nothing of that shows."""
    plain = _sim_json(capsys)
    assert "overrides" not in plain
    assert plain["recipe_sha256"] == hashlib.sha256(ND_RECIPE.read_bytes()).hexdigest()
    changed = _sim_json(capsys, "--set", "limits.oxide_feed.rate_per_s=0.01", "--set", "kpi_warmup_h=0")
    assert changed["overrides"] == ["limits.oxide_feed.rate_per_s=0.01", "kpi_warmup_h=0"]
    assert changed["recipe_sha256"] != plain["recipe_sha256"]
    loaded = load(ND_RECIPE, parse_overrides(["limits.oxide_feed.rate_per_s=0.01",
                                              "controller.mpc.move_weights.oxide_feed=2.5",
                                              "io.inputs.cell_voltage.range[1]=70"]))
    assert loaded.recipe.limits["oxide_feed"].rate_per_s == 0.01
    assert loaded.recipe.io.inputs["cell_voltage"].range == (0.0, 70.0)


def test_set_bad_type_names_the_override(capsys: pytest.CaptureFixture[str]) -> None:
    """A value of the wrong type is refused by the recipe's own check, reported against the --set (no file line)."""
    assert main(["sim", str(ND_RECIPE), "--set", "controller.mpc.horizon_steps=abc"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "--set controller.mpc.horizon_steps=abc: expected an integer, got 'abc'"


def test_set_cross_check_names_the_override() -> None:
    """An operator limit set outside the engineering limits fails the same check as in the file."""
    with pytest.raises(RecipeError) as exc:
        load(ND_RECIPE, parse_overrides(["limits.oxide_feed.operator=[0, 30]"]))
    assert str(exc.value).startswith("--set limits.oxide_feed.operator=[0, 30]: operator limits")


def test_set_unknown_path_names_path_and_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown field names the path and the closest known key, at any depth."""
    assert main(["sim", str(ND_RECIPE), "--set", "controller.mpc.horizon=12"]) == 1
    assert capsys.readouterr().err.strip() == ("--set controller.mpc.horizon=12: unknown key "
                                               "(did you mean 'horizon_steps'?)")
    with pytest.raises(RecipeError) as exc:
        load(ND_RECIPE, parse_overrides(["controller.mpcc.x=1", "controller.mpc.horizon_steps.x=1", "nonsense"]))
    assert "--set nonsense: expected PATH=VALUE" in str(exc.value)
    with pytest.raises(RecipeError) as exc:
        load(ND_RECIPE, parse_overrides(["controller.mpcc.x=1"]))
    assert str(exc.value) == "--set controller.mpcc.x=1: controller.mpcc: unknown key (did you mean 'mpc'?)"


def test_recipe_diff_writes_overrides_into_the_text() -> None:
    """The diff changes only the overridden lines (flow mappings and new keys too) and reads back to the overrides."""
    ovs = parse_overrides(["controller.baseline.overfeed_ratio=1.42", "controller.mpc.move_weights.oxide_feed=2.0",
                           "modes.new_key=3"])
    diff = recipe_diff(ND_RECIPE, ovs)
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert changed == ["-    overfeed_ratio: 1.4", "+    overfeed_ratio: 1.42",
                       "-    move_weights: {oxide_feed: 1.0, current_sp: 10.0, anode_move: 1.0}",
                       "+    move_weights: {oxide_feed: 2.0, current_sp: 10.0, anode_move: 1.0}",
                       "+  new_key: 3"]
    data = yaml.safe_load(recipe_with_overrides(ND_RECIPE.read_text(), ovs[:2]))
    assert data["controller"]["baseline"]["overfeed_ratio"] == 1.42
    assert data["controller"]["mpc"]["move_weights"]["oxide_feed"] == 2.0


def test_kpi_expressions() -> None:
    """Objective expressions evaluate arithmetic and comparisons, give NaN on missing KPIs, refuse anything else."""
    e = parse_kpi_expr("bath_temp_std_degC + 0.1 * max(0, 98 - oxide_in_band_pct)")
    assert e.evaluate({"bath_temp_std_degC": 3.0, "oxide_in_band_pct": 96.0}) == pytest.approx(3.2)
    assert math.isnan(e.evaluate({"bath_temp_std_degC": 3.0}))
    assert parse_kpi_expr("anode_effects == 0").evaluate({"anode_effects": 0}) == 1.0
    with pytest.raises(KpiExprError, match=r"not allowed|only functions"):
        parse_kpi_expr("__import__('os').system('x')")
    with pytest.raises(KpiExprError, match="did you mean 'anode_effects'"):
        parse_kpi_expr("anode_efects == 0", frozenset({"anode_effects"}))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text.replace("RECIPE", str(ND_RECIPE)))
    return p


SWEEP = f"""\
recipe: RECIPE
variants:
  shipped: {{kpi_warmup_h: 0}}
controllers: [baseline]
seeds: [1, 2]
hours: [{TINY_H}]
compare: {{bath_temp_std_degC: lower, oxide_in_band_pct: higher}}
"""


def test_sweep_spec_errors_name_file_line_and_field(tmp_path: Path) -> None:
    """Bad fields, a bad override in a variant, an unknown reference and KPI are reported with the spec's file and line."""
    bad = _write(tmp_path, "bad.yaml", "recipe: RECIPE\nvariants:\n  a: {}\nseeds: [1, x]\nhorus: [1]\n"
                                      "compare: {bath_temp_std_degC: lower}\n")
    with pytest.raises(RecipeError) as exc:
        load_sweep_spec(bad)
    assert [str(p) for p in exc.value.problems] == [
        f"{bad}:4: seeds[1]: expected an integer, got 'x'",
        f"{bad}:5: horus: unknown key (did you mean 'hours'?)"]
    over = _write(tmp_path, "over.yaml", "recipe: RECIPE\nvariants:\n  a: {}\n  b:\n    controller.mpc.horizon_steps: "
                                        "abc\nseeds: [1]\ncompare: {bath_temp_std_degC: lower}\n")
    with pytest.raises(RecipeError) as exc:
        load_sweep_spec(over)
    assert str(exc.value) == f"{over}:5: controller.mpc.horizon_steps=abc: expected an integer, got 'abc'"
    ref = _write(tmp_path, "ref.yaml", "recipe: RECIPE\nvariants: {a: {}}\nreference: b\nseeds: [1]\n"
                                      "compare: {bath_temp_sdt_degC: lower}\n")
    with pytest.raises(RecipeError) as exc:
        load_sweep_spec(ref)
    assert [str(p) for p in exc.value.problems] == [
        f"{ref}:3: reference: no variant named 'b'; variants: a",
        f"{ref}:5: compare.bath_temp_sdt_degC: unknown KPI 'bath_temp_sdt_degC' (did you mean 'bath_temp_std_degC'?)"]


def test_tiny_sweep_on_the_pool_gives_table_files_and_report(tmp_path: Path) -> None:
    """Two runs on a two-process pool: one row each in CSV and Parquet, a table line per KPI, a report with plots."""
    import pandas as pd

    spec = load_sweep_spec(_write(tmp_path, "tiny.yaml", SWEEP))
    ticks = iter(float(t) for t in range(100))
    progress_out = io.StringIO()
    backend = PoolBackend(2)
    try:
        outcome = run_sweep(spec, backend, tmp_path / "out", progress=Progress(2, clock=lambda: next(ticks),
                                                                              out=progress_out))
    finally:
        backend.close()
    csv = pd.read_csv(tmp_path / "out" / "runs.csv")
    parquet = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    assert list(csv["seed"]) == [1, 2] and list(parquet["seed"]) == [1, 2]
    assert {"variant", "controller", "scenario", "hours", "wall_s", *spec.kpi_names} <= set(parquet.columns)
    assert parquet["bath_temp_std_degC"].notna().all()
    assert parquet["bath_temp_std_degC"].tolist() == pytest.approx(csv["bath_temp_std_degC"].tolist())
    lines = outcome.table.splitlines()
    assert lines[0].split()[:5] == ["variant", "controller", "scenario", "h", "KPI"]
    assert len(lines) == 3 and all("reference" in ln for ln in lines[1:])
    assert progress_out.getvalue().splitlines()[-1].startswith("[" + "#" * 24 + "] 2/2 elapsed 0m02s ETA 0m00s")
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("<img ") >= 4 and "Trends of the best run" in html
    assert "re-run for its record gave other KPIs" not in html


def test_comparison_counts_per_seed_wins_against_the_reference() -> None:
    """Wins count the seeds where a variant beats the reference on the same controller, scenario, hours and seed."""
    rows = [{"variant": v, "controller": "mpc", "scenario": "nominal", "hours": 24.0, "seed": s, "k": k}
            for v, s, k in [("ref", 1, 3.0), ("ref", 2, 2.0), ("ref", 3, 5.0), ("new", 1, 2.5), ("new", 2, 2.0),
                            ("new", 3, math.nan)]]
    lines = summarise(rows, {"k": "lower"}, "ref")
    assert (lines[0].wins, lines[1].wins, lines[1].paired, lines[1].n) == (None, 1, 2, 2)
    assert lines[0].median == 3.0 and (lines[0].q1, lines[0].q3) == (2.5, 4.0)
    assert "1/2" in format_table(lines, "ref").splitlines()[2]


def test_pool_and_ray_give_the_same_numbers(tmp_path: Path) -> None:
    """One sweep (1 variant × 2 seeds × 0.5 h) on the process pool and on a local Ray gives identical rows and table."""
    spec = load_sweep_spec(_write(tmp_path, "tiny.yaml", SWEEP))
    pool = PoolBackend(2)
    try:
        on_pool = run_sweep(spec, pool, tmp_path / "pool", report=False)
    finally:
        pool.close()
    ray_backend = RayBackend("local", num_cpus=1)
    try:
        on_ray = run_sweep(spec, ray_backend, tmp_path / "ray", report=False)
    finally:
        ray_backend.close()
    without_wall = [[{k: v for k, v in r.items() if k != "wall_s"} for r in o.rows] for o in (on_pool, on_ray)]
    assert [r["seed"] for r in without_wall[1]] == [1, 2]
    assert all(same_kpis(a, b) for a, b in zip(*without_wall))
    assert on_pool.table == on_ray.table
    assert not math.isnan(float(on_ray.rows[0]["bath_temp_std_degC"]))
    assert on_pool.rows[0]["bath_temp_std_degC"] != on_pool.rows[1]["bath_temp_std_degC"]  # seeds differ


def test_run_all_keeps_job_order_and_runs_a_repeated_job_once() -> None:
    """Results come back in the order of the jobs, one per job, a job listed twice run once."""
    job = RunJob(str(ND_RECIPE), ("kpi_warmup_h=0",), "baseline", None, 3, 0.1, tag="x")
    ran: list[RunJob] = []

    class Counting:
        name = "counting"

        def run(self, jobs: list[RunJob]) -> list[RunResult]:
            ran.extend(jobs)
            return [RunResult(j, "baseline", "nominal", 0.1, {"k": j.seed}) for j in reversed(jobs)]

        def close(self) -> None:
            pass

    other = RunJob(str(ND_RECIPE), (), None, None, 4, 0.1, tag="y")
    results = run_all(Counting(), [job, other, job])
    assert [r.job for r in results] == [job, other, job] and ran == [job, other]


TUNE = """\
recipe: RECIPE
controller: baseline
hours: 0.25
fixed: {kpi_warmup_h: 0}
train_seeds: [1]
holdout_seeds: [2]
trials: 2
sampler_seed: 7
objective:
  minimise: bath_temp_std_degC
  constraints: ["anode_effects == 0"]
parameters:
  controller.baseline.overfeed_ratio: {range: [1.2, 1.6]}
  controller.baseline.resistance_deadband_uohm: {range: [4, 14]}
compare:
  same_as_recipe: {controller.baseline.overfeed_ratio: 1.4}
"""


def test_tune_is_reproducible_and_writes_the_winner_as_a_diff(tmp_path: Path) -> None:
    """Two searches of one seeded spec pick the same trials and winner; the winner comes out as overrides and a diff."""
    spec = load_tune_spec(_write(tmp_path, "tune.yaml", TUNE))
    backend = PoolBackend(0)
    first = run_tune(spec, backend, tmp_path / "a")
    second = run_tune(spec, backend, tmp_path / "b")
    assert [t.overrides for t in first.trials] == [t.overrides for t in second.trials]
    assert [t.score for t in first.trials] == [t.score for t in second.trials]
    assert first.trials[0].overrides != first.trials[1].overrides
    assert first.holdout["same_as_recipe"].score == first.holdout["recipe as is"].score
    best = dict(o.split("=") for o in first.best.overrides)
    assert yaml.safe_load((tmp_path / "a" / "best_overrides.yaml").read_text()) == {
        k: yaml.safe_load(v) for k, v in best.items()}
    diff = (tmp_path / "a" / "best.diff").read_text()
    assert f"+    overfeed_ratio: {best['controller.baseline.overfeed_ratio']}" in diff
    assert f"+    resistance_deadband_uohm: {best['controller.baseline.resistance_deadband_uohm']}" in diff
    assert "held-out seeds" in (tmp_path / "a" / "summary.txt").read_text()


def test_tune_spec_errors_name_file_line_and_field(tmp_path: Path) -> None:
    """A parameter range the recipe refuses, a bad objective and overlapping seeds are reported with file and line."""
    bad_range = _write(tmp_path, "r.yaml", TUNE.replace("{range: [4, 14]}", "{range: [4.5, 14]}").replace(
        "controller.baseline.resistance_deadband_uohm", "controller.mpc.horizon_steps"))
    with pytest.raises(RecipeError) as exc:
        load_tune_spec(bad_range)
    assert str(exc.value).startswith(f"{bad_range}:14: controller.mpc.horizon_steps=4.5: expected an integer")
    bad_obj = _write(tmp_path, "o.yaml", TUNE.replace("minimise: bath_temp_std_degC", "minimise: bath_tmp"))
    with pytest.raises(RecipeError, match=r"o.yaml:9: objective: 'bath_tmp': unknown KPI"):
        load_tune_spec(bad_obj)
    overlap = _write(tmp_path, "s.yaml", TUNE.replace("holdout_seeds: [2]", "holdout_seeds: [1]"))
    with pytest.raises(RecipeError, match=r"s.yaml:5: train_seeds: train_seeds and holdout_seeds share seeds"):
        load_tune_spec(overlap)
