"""Tests of learning across batches: the SQLite history, the carried prior, run-to-run terms, the
learning batch (per-batch curves, plans, restart), the recipe section and the estimator prime."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apc.assembly import load
from apc.batch_history import BatchHistory, BatchRecord
from apc.batch_learning import OutcomeConfig, apply_terms, carried_prior, propose_terms, terms_in_force
from apc.curve_preview import BatchState
from apc.kinds import kind_of
from apc.kinds.furnace.learning_batch import LearningBatch
from apc.recipe.curve_schema import BatchSection, CurveSection, Segment
from apc.recipe.errors import Problem, RecipeError
from apc.recipe.learning_schema import AdjustableTerm, LearningSection
from apc.recipe.loader import load_recipe
from tests.test_batch import Audit

ROOT = Path(__file__).resolve().parent.parent
T = "charge_temp_degC"


def tiny_curve(power: float = 70.0) -> CurveSection:
    """ramp 10 K/min to 100, melt at ``power`` until tc > 0, soak 1 min in [95, 105]."""
    return CurveSection(T, 20.0, 20.0, 30.0, (
        Segment("ramp", rate_degC_min=10.0, target_degC=100.0),
        Segment("melt", power_kW=power, condition="tc > 0", timeout_min=5.0),
        Segment("soak", time_min=1.0, band_degC=(95.0, 105.0)),
    ), pressure_limit_Pa=5.0)


def learning(**kw: Any) -> LearningSection:
    kw.setdefault("enabled", True)
    kw.setdefault("apply", "auto")
    kw.setdefault("random_walk_std", {"coupling_bias": 0.1})
    kw.setdefault("adjust", {"melt_power_kW": AdjustableTerm(50.0, 100.0, 10.0, 0.8)})
    return LearningSection(**kw)


def record(batch_id: str = "B1", **kw: Any) -> BatchRecord:
    base: dict[str, Any] = {"lot": "L1", "furnace": "f", "final_state": "complete", "started_s": 0.0,
                            "ended_s": 60.0, "ended_utc": 1.0, "curve_name": "recipe", "curve_sha256": "ab",
                            "controller": "mpc", "learned": False, "parameters": {"coupling_bias": (0.2, 0.05)},
                            "kpis": {"batch_time_min": 1.0}, "terms": {"melt_power_kW": 70.0},
                            "proposal": {"melt_power_kW": 80.0}}
    base.update(kw)
    return BatchRecord(batch_id=batch_id, **base)


def _curve_of(curves: dict[str, CurveSection], name: str) -> tuple[str, CurveSection]:
    if name not in curves:
        raise RecipeError([Problem(f"{name}.yaml", 1, "curve", "no such curve")])
    return name, curves[name]


def make_batch(tmp_path: Path, sec: LearningSection | None = None, curves: dict[str, CurveSection] | None = None
               ) -> tuple[LearningBatch, Audit]:
    audit = Audit()
    history = BatchHistory(tmp_path / "history.sqlite")
    b = LearningBatch(tiny_curve(), BatchSection("b.json", preview_points=5, preview_step_s=60.0),
                      sec or learning(), tmp_path / "b.json", history, audit, furnace="f", controller="mpc",
                      outcome=OutcomeConfig(T, ("power_sp",), "gauge", 5.0), biases=("coupling_bias",),
                      transform=lambda c, s: (c, s),
                      curves=lambda name: _curve_of(curves or {}, name))
    return b, audit


def run_batch(b: LearningBatch, t0: float = 0.0, peak_Pa: float = 3.0, bias: float = 0.3) -> float:
    """Drive ``b`` through its tiny curve; the time it ended."""
    assert b.start(t0, "op", 20.0, lot=b._lot or "L1") if b.batch.state is not BatchState.RUNNING else True
    t = t0
    for _ in range(200):
        t += 5.0
        kind = b.batch.status()["kind"]
        temp = 100.0 if b.batch.segment >= 1 else min(100.0, 20.0 + (t - t0) / 6.0)
        values = {T: temp, "tc": 1.0 if kind == "melt" else -1.0, "power_sp": 60.0,
                  "gauge": peak_Pa if kind == "melt" else 0.5, "coupling_bias": bias, "coupling_bias_std": 0.02}
        b.update(t, values)
        if b.batch.state is BatchState.COMPLETE:
            return t
    raise AssertionError("the tiny batch did not complete")


# ------------------------------------------------------------------ history


def test_history_keeps_batches_and_resets(tmp_path: Path) -> None:
    """Stored batches read back equal, in WAL mode; a reset hides them from learning but keeps them."""
    h = BatchHistory(tmp_path / "h.sqlite")
    seq = h.add(record("B1"))
    assert h.last() is not None and h.last().batch_id == "B1" and h.last().seq == seq  # type: ignore[union-attr]
    assert h.records()[0].parameters == {"coupling_bias": (0.2, 0.05)}
    h.reset("eng", "coil rebuilt", 2.0)
    assert h.last() is None and len(h.records()) == 1
    h.add(record("B2"))
    assert h.last().batch_id == "B2"  # type: ignore[union-attr]
    assert h._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert h._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(ValueError, match="who and why"):
        h.reset("", "x", 3.0)


_WRITER = textwrap.dedent("""
    import sys, os
    from apc.batch_history import BatchHistory, BatchRecord
    h = BatchHistory(__import__("pathlib").Path(sys.argv[1]))
    for i in range(100000):
        h.add(BatchRecord(f"B{i}", "L", "f", "complete", 0.0, 1.0, 1.0, "recipe", "ab", "mpc", False,
                          {"coupling_bias": (0.1, 0.01)}, {"batch_time_min": float(i)}, {}, {}))
        print(i, flush=True)
""")


def test_history_survives_sigkill_mid_run(tmp_path: Path) -> None:
    """A writer killed with SIGKILL leaves a history that opens with every committed batch intact."""
    path = tmp_path / "h.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    committed = -1
    for line in proc.stdout:
        committed = int(line)
        if committed >= 30:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    records = BatchHistory(path).records()
    assert len(records) >= committed + 1
    assert [r.batch_id for r in records] == [f"B{i}" for i in range(len(records))]
    assert all(r.kpis["batch_time_min"] == float(i) for i, r in enumerate(records))
    assert sqlite3.connect(str(path)).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ------------------------------------------------------------------ pure learning


def test_carried_prior_inflates_and_adds_the_random_walk() -> None:
    """The prior keeps the value; variance = inflate·std² + random-walk² (+ the lot spread² on a new lot)."""
    prior = carried_prior(learning(inflate_factor=4.0), record())
    assert prior["coupling_bias"][0] == 0.2
    assert prior["coupling_bias"][1] == pytest.approx(np.sqrt(4 * 0.05**2 + 0.1**2))
    lots = learning(inflate_factor=4.0, lot_change_std={"coupling_bias": 0.3})
    assert carried_prior(lots, record(), "L1")["coupling_bias"][1] == pytest.approx(np.sqrt(4 * 0.05**2 + 0.1**2))
    assert carried_prior(lots, record(), "L2")["coupling_bias"][1] == pytest.approx(
        np.sqrt(4 * 0.05**2 + 0.1**2 + 0.3**2))  # another material lot: the lot's spread joins
    assert carried_prior(learning(enabled=False), record()) == {}
    assert carried_prior(learning(), None) == {}


def test_run_to_run_steps_toward_target_within_bounds_and_step() -> None:
    """Low peak pressure raises the melt power by at most max_step; a violation in the melt lowers it; bounds hold."""
    sec = learning()
    up = propose_terms(sec, {"melt_power_kW": 70.0}, {"soak_complete": 1, "melt_peak_pressure_Pa": 1.0}, 5.0)
    assert up["melt_power_kW"] == 80.0
    down = propose_terms(sec, {"melt_power_kW": 70.0}, {"soak_complete": 1, "melt_peak_pressure_Pa": 4.5,
                                                         "melt_pressure_violations": 2}, 5.0)
    assert down["melt_power_kW"] == 60.0
    elsewhere = propose_terms(sec, {"melt_power_kW": 70.0}, {"soak_complete": 1, "melt_peak_pressure_Pa": 1.0,
                                                              "pressure_violations": 1}, 5.0)
    assert elsewhere["melt_power_kW"] == 80.0  # a violation outside the melt is not the melt power's doing
    high = propose_terms(sec, {"melt_power_kW": 98.0}, {"soak_complete": 1, "melt_peak_pressure_Pa": 1.0}, 5.0)
    assert high["melt_power_kW"] == 100.0
    same = propose_terms(sec, {"melt_power_kW": 70.0}, {"soak_complete": 0, "melt_peak_pressure_Pa": 1.0}, 5.0)
    assert same["melt_power_kW"] == 70.0
    soak = learning(adjust={"soak_extension_min": AdjustableTerm(0.0, 1200.0, 120.0, 30.0, gain=1.0)})
    assert propose_terms(soak, {"soak_extension_min": 1140.0}, {"soak_complete": 1, "core_soak_excess_min": 900.0},
                         None)["soak_extension_min"] == 1020.0


def test_melt_power_answers_the_melt_time_as_well_as_its_pressure() -> None:
    """A timed-out melt steps up; a slow pressure-limited melt is held; a slow melt with room steps up."""
    sec = learning(adjust={"melt_power_kW": AdjustableTerm(50.0, 100.0, 10.0, 0.8, time_target=0.5)})
    ran = {"melt_power_kW": 70.0}
    timed_out = {"soak_complete": 0, "melt_timed_out": 1, "melt_peak_pressure_Pa": 2.0, "melt_time_min": 40.0}
    assert propose_terms(sec, ran, timed_out, 5.0, 40.0)["melt_power_kW"] == 80.0
    assert propose_terms(sec, ran, {**timed_out, "melt_pressure_violations": 1}, 5.0, 40.0)["melt_power_kW"] == 60.0
    limited = {"soak_complete": 1, "melt_peak_pressure_Pa": 4.6, "melt_time_min": 30.0}
    assert propose_terms(sec, ran, limited, 5.0, 40.0)["melt_power_kW"] == 70.0
    assert propose_terms(sec, ran, {**limited, "melt_time_min": 15.0}, 5.0, 40.0)["melt_power_kW"] < 70.0
    room = {"soak_complete": 1, "melt_peak_pressure_Pa": 3.9, "melt_time_min": 24.0}  # pressure +0.9 kW, time +7 kW
    assert propose_terms(sec, ran, room, 5.0, 40.0)["melt_power_kW"] == pytest.approx(77.0)
    plain = learning()  # no time_target: the pressure alone
    assert propose_terms(plain, ran, limited, 5.0, 40.0)["melt_power_kW"] < 70.0
    with pytest.raises(ValueError, match="time_target"):
        AdjustableTerm(50.0, 100.0, 10.0, 0.8, time_target=1.5)
    with pytest.raises(ValueError, match="melt_power_kW only"):
        learning(adjust={"soak_extension_min": AdjustableTerm(0.0, 100.0, 10.0, 5.0, time_target=0.5)})


def test_a_melt_timeout_is_recorded_and_raises_the_next_melt_power(tmp_path: Path) -> None:
    """A melt that times out (HELD, then aborted) is stored as timed out and the next melt gets more power."""
    b, _ = make_batch(tmp_path)
    assert b.start(0.0, "op", 20.0, "B1", lot="L1")
    t = 0.0
    while b.batch.state is BatchState.RUNNING and t < 3600.0:
        t += 5.0
        b.update(t, {T: min(100.0, 20.0 + t / 6.0), "tc": -1.0, "power_sp": 70.0, "gauge": 2.0})
    assert b.batch.state is BatchState.HELD and any("melt timeout" in r for r in b.batch.reasons)
    b.update(t + 5.0, {T: 100.0, "tc": -1.0, "power_sp": 70.0, "gauge": 2.0})
    assert b.abort(t + 10.0, "op", "melt timed out")
    last = b.history.records()[-1]  # type: ignore[union-attr]
    assert last.kpis["melt_timed_out"] == 1.0 and last.kpis["melt_time_min"] == pytest.approx(5.0, abs=0.1)
    assert last.proposal["melt_power_kW"] == 80.0


def test_terms_apply_to_the_curve_and_are_validated() -> None:
    """Applied terms rebuild the curve (so a bad value is refused like any curve)."""
    sec = learning(adjust={"melt_power_kW": AdjustableTerm(50, 100, 10, 0.8),
                           "ramp_rate_degC_min": AdjustableTerm(1, 40, 5, 0.8, segment=0)})
    curve, bsec = apply_terms(tiny_curve(), BatchSection("b.json"), {"melt_power_kW": 90.0, "ramp_rate_degC_min": 15.0},
                              sec)
    assert terms_in_force(sec, curve, bsec) == {"melt_power_kW": 90.0, "ramp_rate_degC_min": 15.0}
    with pytest.raises(ValueError, match="max_heating_rate"):
        apply_terms(tiny_curve(), BatchSection("b.json"), {"ramp_rate_degC_min": 35.0}, sec)


# ------------------------------------------------------------------ the learning batch


def test_batches_learn_from_the_last_one_and_audit_it(tmp_path: Path) -> None:
    """Batch 2 starts from batch 1's parameters and its proposal (auto), both stored and audited."""
    b, audit = make_batch(tmp_path)
    assert b.estimator_prior() == ("", {})
    run_batch(b, peak_Pa=2.0)
    first = b.history.records()[0]  # type: ignore[union-attr]
    assert first.parameters["coupling_bias"] == (0.3, 0.02) and first.kpis["soak_complete"] == 1.0
    assert first.proposal["melt_power_kW"] == 80.0 and not first.learned
    b.start(10_000.0, "op", 20.0, "B2", lot="L2")
    token, prior = b.estimator_prior()
    assert token == "B2" and prior["coupling_bias"][0] == 0.3
    assert b.batch.curve.segments[1].power_kW == 80.0
    start = audit.named("batch_learning_start")[-1]
    assert start["proposal_applied"] and start["learned_from"] == first.batch_id


def test_propose_mode_shows_but_never_applies(tmp_path: Path) -> None:
    """With apply: propose the next batch runs the recipe's terms; the proposal is in the status."""
    b, _ = make_batch(tmp_path, learning(apply="propose"))
    run_batch(b, peak_Pa=2.0)
    b.start(10_000.0, "op", 20.0)
    assert b.batch.curve.segments[1].power_kW == 70.0
    assert b.status()["learning"]["proposal"] == {"melt_power_kW": 80.0}


def test_reset_learning_starts_the_next_batch_from_the_recipe(tmp_path: Path) -> None:
    """After an audited reset the next batch carries nothing and runs the recipe's terms."""
    b, audit = make_batch(tmp_path)
    run_batch(b, peak_Pa=2.0)
    assert not b.command(9000.0, "eng", "reset_learning", 20.0)  # needs a reason
    assert b.command(9000.0, "eng", "reset_learning coil relined", 20.0)
    assert audit.named("batch_learning_reset")[0]["why"] == "coil relined"
    b.start(10_000.0, "op", 20.0)
    assert b.estimator_prior() == ("", {}) and b.batch.curve.segments[1].power_kW == 70.0


def test_restart_mid_learned_batch_comes_back_held_with_its_learned_start(tmp_path: Path) -> None:
    """A restart in a learned batch restores HELD with its prior, terms, lot and per-batch curve."""
    other = tiny_curve(power=60.0)
    b, _ = make_batch(tmp_path, curves={"short": other})
    run_batch(b, peak_Pa=2.0)
    assert b.command(10_000.0, "op", "start id=B2 lot=L7 curve=short", 20.0)
    b.update(10_005.0, {T: 30.0})
    b.history.close()  # type: ignore[union-attr]
    again, _ = make_batch(tmp_path, curves={"short": other})
    assert again.batch.state is BatchState.HELD
    assert again.estimator_prior()[1]["coupling_bias"][0] == 0.3
    status = again.status()
    assert status["lot"] == "L7" and status["curve_name"] == "short"
    assert again.batch.curve.segments[1].power_kW == 60.0  # the curve that ran, not the recipe's


def test_per_batch_curve_only_between_batches_and_bad_curve_refused(tmp_path: Path) -> None:
    """A curve is queued only between batches; an unknown one is refused with the loader's reason."""
    b, audit = make_batch(tmp_path, curves={"short": tiny_curve(60.0)})
    refused = b.command(0.0, "op", "curve nothere", 20.0)
    assert not refused and "nothere.yaml:1" in refused.reason
    assert b.command(0.0, "op", "start", 20.0)
    refused = b.command(1.0, "op", "curve short", 20.0)  # a batch is running now
    assert not refused and "between batches" in refused.reason
    assert audit.named("batch_command_refused")


# ------------------------------------------------------------------ recipe, files, estimator


def test_shipped_recipes_declare_learning_and_errors_name_the_line(tmp_path: Path) -> None:
    """Both furnace recipes load a learning section; a bad term is refused with file:line and field."""
    for name in ("vim_furnace.yaml", "annealing_furnace.yaml"):
        assert load(ROOT / "recipes" / name).recipe.learning is not None  # type: ignore[attr-defined]
    text = (ROOT / "recipes" / "vim_furnace.yaml").read_text()
    bad = text.replace("melt_power_kW: {low: 50, high: 120", "melt_power_kW: {low: 150, high: 120")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    line = next(i for i, t in enumerate(bad.splitlines(), 1) if "low: 150" in t)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"bad.yaml:{line}: learning.adjust.melt_power_kW" in str(info.value)
    assert "low must be below high" in str(info.value)


def test_curve_files_and_plans_validate_like_the_recipe(tmp_path: Path) -> None:
    """A plan's curve is checked like the recipe's (an impossible ramp names its file and line)."""
    recipe = tmp_path / "vim_furnace.yaml"  # curve files lie in the recipe's folder
    recipe.write_text((ROOT / "recipes" / "vim_furnace.yaml").read_text())
    loaded = load(recipe)
    kind = kind_of(loaded.recipe)
    good = tmp_path / "fast_melt.yaml"
    good.write_text((ROOT / "recipes" / "vim_furnace.yaml").read_text().split("curve:\n", 1)[1]
                    .split("\nbatch:", 1)[0].join(["name: fast\ncurve:\n", "\n"]).replace("power_kW: 70", "power_kW: 90"))
    name, curve = kind.load_curve(loaded, good.name)  # type: ignore[attr-defined]
    assert name == "fast" and curve.segments[3].power_kW == 90.0
    bad = tmp_path / "bad_curve.yaml"
    bad.write_text(good.read_text().replace("rate_degC_min: 10, target_degC: 1005", "rate_degC_min: 10, "
                                            "target_degC: 1005, colour: red"))
    with pytest.raises(RecipeError, match=r"bad_curve.yaml:\d+: curve.segments\[2\]"):
        kind.load_curve(loaded, bad.name)  # type: ignore[attr-defined]
    plan = tmp_path / "plan.yaml"
    plan.write_text("batches:\n  - {batch_id: P1, lot: L1, curve: fast_melt.yaml, charge_kg: 150}\n"
                    "  - {batch_id: P2, lot: L1}\n")
    from apc.recipe.curve_file import load_plan

    entries = load_plan(plan, loaded.recipe)
    assert [e.batch_id for e, _ in entries] == ["P1", "P2"] and entries[0][1] is not None
    assert entries[1][1] is None


def test_filter_prime_sets_the_biases_before_and_after_seeding() -> None:
    """A prime given before the first update is applied when the filter seeds, and again live."""
    loaded = load(ROOT / "recipes" / "vim_furnace.yaml")
    parts = kind_of(loaded.recipe).build_parts(loaded, "mpc", real_time=False, preview_source=None)
    ekf: Any = parts.estimator
    ekf.prime({"coupling_bias": (0.25, 0.03)})
    from apc.types import Quality, Sample, ValidatedInput, Verdict

    def inp(v: float) -> ValidatedInput:
        return ValidatedInput("x", Sample(v, Quality.GOOD, 0.0, 0.0), Verdict.OK)

    est = ekf.update(0.0, {"charge_tc": inp(25.0), "vacuum_gauge": inp(0.05)}, {"power_sp": 0.0})
    values = est.as_dict() | dict(est.extras)
    assert values["coupling_bias"] == pytest.approx(0.25) and values["coupling_bias_std"] == pytest.approx(0.03)
    ekf.prime({"coupling_bias": (-0.1, 0.01)})
    assert ekf.filter.x[ekf.filter.index("coupling_bias")] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="not parameter biases"):
        ekf.prime({"charge_mass_kg": (1.0, 0.1)})


def test_hmi_batch_values_show_lot_and_learned_parameters(tmp_path: Path) -> None:
    """The HMI Batch values of a learning batch carry the last batch id, lot, learned parameters and outcome."""
    from apc.runtime import hmi_batch_status

    b, _ = make_batch(tmp_path)
    run_batch(b, peak_Pa=2.0)
    values = hmi_batch_status(b.status())
    assert values["LastBatchId"] == b.history.records()[0].batch_id  # type: ignore[union-attr]
    assert values["LastLot"] == "L1" and "coupling_bias=+0.3000" in values["LearnedParameters"]
    assert values["Proposal"] == "melt_power_kW=80" and values["ProposalApply"] == "auto"
    assert "melt_timed_out=0" in values["LastOutcome"] and "soak_complete=1" in values["LastOutcome"]
    assert "LastBatchId" not in hmi_batch_status({"state": "idle"})


def test_apc_batches_lists_the_history_and_resets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`apc batches` prints each batch with its parameters; --reset needs who and why and is audited."""
    from apc.cli import main

    h = BatchHistory(tmp_path / "h.sqlite")
    h.add(record("B1"))
    h.close()
    assert main(["batches", str(tmp_path / "h.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "B1" in out and "coupling_bias=+0.200" in out and "melt_power_kW=80" in out
    assert main(["batches", str(tmp_path / "h.sqlite"), "--reset"]) == 2
    assert main(["batches", str(tmp_path / "h.sqlite"), "--reset", "--who", "eng", "--why", "relined",
                 "--audit", str(tmp_path / "a.jsonl")]) == 0
    assert "batch_learning_reset" in (tmp_path / "a.jsonl").read_text()
    assert BatchHistory(tmp_path / "h.sqlite").last() is None
    assert main(["batches", str(tmp_path / "missing.sqlite")]) == 2


@pytest.mark.parametrize("enabled", [True, False])
def test_learning_guarantees_the_baseline_soak_on_the_estimated_core(enabled: bool) -> None:
    """With learning enabled the PID baseline's batch soaks on its thermocouple and also waits for the
    estimated core (the recipe curve's controlled signal); without learning it soaks as plants do."""
    from apc.kinds.furnace.assembly import batch_for
    from apc.recipe.overrides import parse_overrides

    loaded = load(ROOT / "recipes" / "annealing_furnace.yaml",
                  parse_overrides([f"learning.enabled={'true' if enabled else 'false'}"]))
    recipe = loaded.recipe
    curve, section = batch_for(recipe, "baseline")  # type: ignore[arg-type]
    assert section.soak_signal == recipe.batch.baseline_soak_signal  # type: ignore[attr-defined]
    assert curve.controlled == section.soak_signal
    expected = recipe.curve.controlled if enabled else None  # type: ignore[attr-defined]
    assert section.soak_confirm_signal == expected
    _, mpc_section = batch_for(recipe, "mpc")  # type: ignore[arg-type]
    assert mpc_section.soak_confirm_signal is None
