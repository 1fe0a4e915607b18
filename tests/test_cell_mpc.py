"""Nonlinear MPC of the Nd cell: holds, failures, limits, determinism and a closed-loop run."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import casadi as ca
import pytest

from apc.assembly import AssemblyError, load
from apc.kinds.electrolysis_cell.assembly import build_controller
from apc.kinds.electrolysis_cell.recipe import MpcSection
from apc.recipe.loader import LoadedRecipe
from apc.recipe.schema import Recipe
from apc.recorder import iter_record
from apc.simulate import simulate
from apc.types import Estimate, MvConstraint, MvKind, SolverStatus
from controllers import cell_mpc
from controllers.cell_mpc import PREDICTED, CellMpc, cache_dir, compile_functions
from sim.models import get_model
from sim.scenario import Event, load_scenario

MPC_RECIPE = Path(__file__).parent / "fixtures" / "mpc" / "nd_cell_mpc.yaml"
STATES = ("dissolved_oxide_kg", "undissolved_oxide_kg", "bath_temp_degC", "metal_temp_degC", "acd_cm",
          "metal_pool_kg", "heat_loss_bias", "ce_bias")
APPLIED = {"oxide_feed": 9.2, "anode_move": 0.0, "current_sp": 6.0}


@pytest.fixture(scope="module")
def loaded() -> LoadedRecipe:
    return load(MPC_RECIPE)


def make(recipe: Recipe, period_multiple: int = 1, **tuning: Any) -> CellMpc:
    """A cell MPC on the fixture recipe, solving every call unless told otherwise."""
    assert recipe.controller.mpc is not None
    cfg = dataclasses.replace(recipe.controller.mpc, **tuning)
    model = get_model(recipe.model.name)
    return CellMpc(model, model.parameter_vector(recipe.model.parameters), cfg, recipe.io.mvs, recipe.limits,
                   recipe.period_s, period_multiple, recipe.controller.hold_cycles)


def est(oxide_kg: float = 11.0, bath: float = 1050.0, metal: float = 1035.0, acd: float = 8.0) -> Estimate:
    x = (oxide_kg, 2.0, bath, metal, acd, 40.0, 0.0, 0.0)
    return Estimate(STATES, ("kg", "kg", "degC", "degC", "cm", "kg", "1", "1"), x, None, "ok", {"current_kA": 6.0})


def all_on() -> dict[str, bool]:
    return dict.fromkeys(APPLIED, True)


def test_disabled_mv_is_held_in_prediction_and_moves(loaded: LoadedRecipe) -> None:
    """A disabled current and anode stay at their readback in every move and every planned step."""
    c = make(loaded.recipe)
    enabled = {"oxide_feed": True, "anode_move": False, "current_sp": False}
    for k, e in enumerate((est(), est(oxide_kg=8.0, bath=1060.0), est(oxide_kg=14.0, bath=1038.0))):
        plan = c.step(60.0 * k, e, APPLIED, enabled, {})
        assert plan.status is SolverStatus.OK
        assert plan.moves["current_sp"] == APPLIED["current_sp"]
        assert plan.moves["anode_move"] == 0.0
        assert set(c.planned("current_sp")) == {APPLIED["current_sp"]}
        assert set(c.planned("anode_move")) == {0.0}
    assert len(set(c.planned("oxide_feed"))) > 1  # the enabled feed does move


def test_production_gives_way_to_anode_effect_margin(loaded: LoadedRecipe) -> None:
    """Low oxide (AE margin below its minimum): the plan cuts the current and feeds hard, restoring the margin."""
    c = make(loaded.recipe)
    plan = c.step(0.0, est(oxide_kg=5.5), APPLIED, all_on(), {})  # 1.1 wt%
    margin = plan.predicted["ae_margin_A_cm2"]
    assert plan.status is SolverStatus.OK
    assert margin[0] < loaded.recipe.controller.mpc.min_ae_margin_A_cm2  # type: ignore[union-attr]
    assert c.planned("current_sp")[0] < APPLIED["current_sp"] and plan.moves["current_sp"] < APPLIED["current_sp"]
    assert plan.moves["oxide_feed"] > 15.0
    assert min(margin[3:]) >= loaded.recipe.controller.mpc.min_ae_margin_A_cm2 - 0.01  # type: ignore[union-attr]


def test_iteration_cap_without_plan_fails_at_once(loaded: LoadedRecipe) -> None:
    """With max_iter 1 the first solve runs out of iterations: FAILED with a reason, every MV held."""
    c = make(loaded.recipe, max_iter=1)
    plan = c.step(0.0, est(), APPLIED, all_on(), {})
    assert plan.status is SolverStatus.FAILED
    assert plan.iterations == 1 and "Maximum_Iterations_Exceeded" in plan.reason
    assert plan.moves == {"oxide_feed": 9.2, "anode_move": 0.0, "current_sp": 6.0}


def test_failed_solves_follow_last_plan_for_hold_cycles_then_fail(loaded: LoadedRecipe) -> None:
    """After a good solve, NaN estimates give HELD (moves from the old plan) hold_cycles times, then FAILED."""
    hold = loaded.recipe.controller.hold_cycles
    c = make(loaded.recipe)
    ok = c.step(0.0, est(), APPLIED, all_on(), {})
    assert ok.status is SolverStatus.OK
    feed_plan = c.planned("oxide_feed")
    bad = est(oxide_kg=math.nan)
    for k in range(1, hold + 1):
        plan = c.step(5.0 * k, bad, APPLIED, all_on(), {})
        assert plan.status is SolverStatus.HELD, plan.reason
        assert "non-finite" in plan.reason
        assert plan.predicted == ok.predicted
        assert plan.moves["oxide_feed"] == pytest.approx(feed_plan[0])  # the feed rate limit is not binding
    plan = c.step(5.0 * (hold + 1), bad, APPLIED, all_on(), {})
    assert plan.status is SolverStatus.FAILED and "hold_cycles" in plan.reason
    assert plan.moves["oxide_feed"] == APPLIED["oxide_feed"] and plan.moves["anode_move"] == 0.0
    assert c.step(5.0 * (hold + 2), est(), APPLIED, all_on(), {}).status is SolverStatus.OK  # recovers


def test_runs_at_period_multiple_and_follows_plan_in_between(loaded: LoadedRecipe) -> None:
    """With period_multiple 12 the NLP is solved every 12th call; in between NOT_RUN with the plan's move."""
    c = make(loaded.recipe, period_multiple=12)
    statuses = [c.step(5.0 * k, est(), APPLIED, all_on(), {}).status for k in range(25)]
    assert [k for k, s in enumerate(statuses) if s is SolverStatus.OK] == [0, 12, 24]
    assert all(s is SolverStatus.NOT_RUN for k, s in enumerate(statuses) if k % 12)
    # A change of the enable flags is solved at once.
    assert c.step(130.0, est(), APPLIED, {**all_on(), "current_sp": False}, {}).status is SolverStatus.OK


def test_measured_disturbance_is_fed_forward(loaded: LoadedRecipe) -> None:
    """With every MV disabled the prediction is open loop: a hotter measured ambient predicts a hotter bath."""
    c = make(loaded.recipe, disturbance_inputs={"ambient_temp_degC": "ambient"})
    off = dict.fromkeys(APPLIED, False)
    cold = c.step(0.0, est(), APPLIED, off, {"ambient": 30.0}).predicted["bath_temp_degC"]
    hot = c.step(5.0, est(), APPLIED, off, {"ambient": 130.0}).predicted["bath_temp_degC"]
    assert cold[0] == hot[0] and hot[-1] > cold[-1] + 1.0
    missing = c.step(10.0, est(), APPLIED, off, {}).predicted["bath_temp_degC"]  # falls back to the recipe value
    assert missing == pytest.approx(cold)


def test_mpc_needs_ekf_estimator_and_its_section(loaded: LoadedRecipe) -> None:
    """build_controller refuses the MPC with the filtered estimator or without a controller.mpc section."""
    r = loaded.recipe
    filtered = dataclasses.replace(r, estimator=dataclasses.replace(r.estimator, kind="filtered"))
    with pytest.raises(AssemblyError, match=r"estimator.kind 'ekf'"):
        build_controller(filtered, "mpc")
    no_section = dataclasses.replace(r, controller=dataclasses.replace(r.controller, mpc=None))
    with pytest.raises(AssemblyError, match=r"controller.mpc section is missing"):
        build_controller(no_section, "mpc")
    with pytest.raises(ValueError, match="strictly decreasing"):
        MpcSection(rank_penalties=(1.0, 10.0, 1.0e-1, 1.0e-2))


def _plans(path: Path) -> list[tuple[Any, ...]]:
    out = []
    for e in iter_record(path):
        if e.kind == "cycle" and e.data["plan"] is not None:
            p = e.data["plan"]
            out.append((p["status"], p["iterations"], p["moves"], p["predicted"], p["reason"]))
    return out


@pytest.mark.slow
def test_deterministic_with_iteration_cap(loaded: LoadedRecipe, tmp_path: Path) -> None:
    """Two 1-h closed-loop runs with the same seed give identical plans, moves and KPIs."""
    sc = load_scenario("nominal")
    runs = []
    for i in range(2):
        rec = tmp_path / f"run{i}.jsonl"
        res = asyncio.run(simulate(loaded, sc, seed=17, hours=1.0, controller="mpc", record_path=rec))
        runs.append((res.kpis, _plans(rec)))
    assert any(p[0] == "ok" for p in runs[0][1])
    assert runs[0][1] == runs[1][1]
    assert runs[0][0] == runs[1][0]


@pytest.fixture(scope="module")
def closed_loop(loaded: LoadedRecipe, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    rec = tmp_path_factory.mktemp("mpc") / "mpc_12h.jsonl"
    res = asyncio.run(simulate(loaded, load_scenario("nominal"), seed=31, hours=12.0, controller="mpc",
                               record_path=rec))
    return res.kpis, rec


@pytest.mark.slow
def test_closed_loop_12h_no_anode_effect_metal_liquid(closed_loop: tuple[dict[str, Any], Path]) -> None:
    """12 h on the simulated plant (seed 31): no anode effect, metal always above its melting point, no shed."""
    kpis, rec = closed_loop
    truths = [e.data["truth"] for e in iter_record(rec) if e.kind == "cycle"]
    assert kpis["anode_effects"] == 0 and kpis["sheds"] == 0
    assert max(t["anode_effect"] for t in truths) == 0.0
    assert max(t["metal_below_melting"] for t in truths) == 0.0
    assert kpis["oxide_in_band_pct"] == 100.0


@pytest.mark.slow
def test_closed_loop_moves_within_limits_and_rates(loaded: LoadedRecipe,
                                                   closed_loop: tuple[dict[str, Any], Path]) -> None:
    """Every proposed move respects limits, rate, step size and interval: the guard never clamps."""
    kpis, rec = closed_loop
    recipe = loaded.recipe
    assert kpis["guard_clamps"] == 0
    last_move: float | None = None
    n_moves = dict.fromkeys(recipe.io.mvs, 0)
    for e in iter_record(rec):
        if e.kind != "cycle" or e.data["mode"]["actual"] != "ON":
            continue
        c = e.data
        for name, d in c["guard"]["decisions"].items():
            assert d["clamps"] == [], (c["k"], name, d)
            lim = recipe.limits[name]
            lo, hi = max(lim.operator[0], lim.engineering[0]), min(lim.operator[1], lim.engineering[1])
            proposed, readback = d["proposed"], c["readback"][name]
            if recipe.io.mvs[name].kind is MvKind.SETPOINT:
                assert lo <= proposed <= hi
                assert abs(proposed - readback) <= lim.rate_per_s * recipe.period_s
                n_moves[name] += proposed != readback
            elif proposed != 0.0:
                assert lim.max_step is not None and abs(proposed) <= lim.max_step
                assert lo <= readback + proposed <= hi
                assert last_move is None or c["t_s"] - last_move >= lim.min_interval_s
                last_move = c["t_s"]
                n_moves[name] += 1
    assert all(n > 0 for n in n_moves.values()), n_moves  # every MV was actually used


def test_predicted_trajectories_cover_the_horizon(loaded: LoadedRecipe) -> None:
    """Plan.predicted holds the four CVs with horizon + 1 finite points, starting at the estimate."""
    c = make(loaded.recipe)
    plan = c.step(0.0, est(bath=1052.0), APPLIED, all_on(), {})
    assert set(plan.predicted) == set(PREDICTED)
    n = loaded.recipe.controller.mpc.horizon_steps + 1  # type: ignore[union-attr]
    assert all(len(v) == n and all(math.isfinite(x) for x in v) for v in plan.predicted.values())
    assert plan.predicted["bath_temp_degC"][0] == 1052.0
    assert plan.iterations > 0 and plan.solve_time_s > 0.0


def test_compiled_and_interpreted_nlp_give_the_same_plan(loaded: LoadedRecipe) -> None:
    """The compiled NLP functions and the interpreted fallback plan the same moves and trajectories."""
    compiled, interpreted = make(loaded.recipe), make(loaded.recipe, compile_nlp=False)
    assert compiled.compiled and not interpreted.compiled
    for k, e in enumerate((est(), est(oxide_kg=8.0, bath=1058.0))):
        a = compiled.step(60.0 * k, e, APPLIED, all_on(), {})
        b = interpreted.step(60.0 * k, e, APPLIED, all_on(), {})
        assert a.status is b.status is SolverStatus.OK and a.iterations == b.iterations
        assert a.moves == pytest.approx(b.moves, rel=1e-7, abs=1e-9)
        for name in PREDICTED:
            assert a.predicted[name] == pytest.approx(b.predicted[name], rel=1e-7, abs=1e-9)


def test_missing_compiler_falls_back_to_interpreter_with_log(loaded: LoadedRecipe, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A compiler that is not installed: a warning names it, nothing is cached, the MPC still solves."""
    with caplog.at_level(logging.WARNING, logger="controllers.cell_mpc"):
        c = make(loaded.recipe, compiler="no-such-cc-3f9a", compile_cache_dir=str(tmp_path))
    assert not c.compiled
    assert any("no-such-cc-3f9a" in r.getMessage() and "interpreted" in r.getMessage() for r in caplog.records)
    assert list(tmp_path.iterdir()) == []
    assert c.step(0.0, est(), APPLIED, all_on(), {}).status is SolverStatus.OK


def _square() -> dict[str, ca.Function]:
    x = ca.SX.sym("x", 2)
    return {"f": ca.Function("bench_square", [x], [ca.sumsqr(x)], ["x"], ["y"])}


def test_compile_cache_keyed_by_source_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One library per generated source, loaded again without compiling; a failing compiler gives None."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc on this machine")
    first = compile_functions(_square(), "gcc", tmp_path)
    assert first is not None and float(first["f"]([1.0, 2.0])) == 5.0
    libs = list(tmp_path.glob("cell_mpc_*.so"))
    assert len(libs) == 1

    def no_compiler(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("compiled again although cached")

    monkeypatch.setattr(cell_mpc.subprocess, "run", no_compiler)
    again = compile_functions(_square(), "gcc", tmp_path)
    assert again is not None and float(again["f"]([3.0, 0.0])) == 9.0
    monkeypatch.undo()
    assert list(tmp_path.glob("cell_mpc_*.so")) == libs
    assert compile_functions(_square(), "false", tmp_path / "other") is None  # compiler exits non-zero
    assert cache_dir("").name == "cell_mpc" and cache_dir(str(tmp_path)) == tmp_path


def test_compiled_code_is_not_loaded_from_a_shared_directory(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A cache directory others may write to is refused (interpreted fallback, logged), never loaded from."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc on this machine")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger=cell_mpc.__name__):
        assert compile_functions(_square(), "gcc", shared) is None
    assert "not private" in caplog.text and not list(shared.glob("*.so"))
    private = tmp_path / "private"
    assert compile_functions(_square(), "gcc", private) is not None
    assert private.stat().st_mode & 0o777 == 0o700


def test_new_tuning_fields_have_working_defaults() -> None:
    """Compilation is on by default with gcc, MUMPS scaling off; an empty compiler is refused."""
    cfg = MpcSection()
    assert cfg.compile_nlp and cfg.compiler == "gcc" and cfg.compile_cache_dir == "" and not cfg.mumps_scaling
    with pytest.raises(ValueError, match="compiler"):
        MpcSection(compiler="")


def test_wall_time_budget_applies_in_real_time_only(loaded: LoadedRecipe) -> None:
    """A tiny max_solve_wall_s fails a real-time solve (one attempt, reason given); offline it is ignored."""
    offline = make(loaded.recipe, max_solve_wall_s=1e-9)
    assert offline.step(0.0, est(), APPLIED, all_on(), {}).status is SolverStatus.OK
    r = loaded.recipe
    cfg = dataclasses.replace(r.controller.mpc, max_solve_wall_s=1e-9)  # type: ignore[arg-type]
    model = get_model(r.model.name)
    online = CellMpc(model, model.parameter_vector(r.model.parameters), cfg, r.io.mvs, r.limits, r.period_s,
                     real_time=True)
    plan = online.step(0.0, est(), APPLIED, all_on(), {})
    assert plan.status is SolverStatus.FAILED and "User_Requested_Stop" in plan.reason
    assert "cold" in plan.reason and "warm" not in plan.reason  # first solve: one cold attempt only
    with pytest.raises(ValueError, match="max_solve_wall_s"):
        MpcSection(max_solve_wall_s=-1.0)


def test_the_cycle_deadline_stops_warm_and_cold_attempts_together(loaded: LoadedRecipe) -> None:
    """A deadline already past when a real-time solve starts stops its warm attempt at once and leaves the cold one no budget of its own."""
    r = loaded.recipe
    model = get_model(r.model.name)
    online = CellMpc(model, model.parameter_vector(r.model.parameters), r.controller.mpc, r.io.mvs, r.limits,  # type: ignore[arg-type]
                     r.period_s, real_time=True)
    assert online.step(0.0, est(), APPLIED, all_on(), {}).status is SolverStatus.OK  # a plan to warm-start from
    online.set_deadline(time.monotonic() - 1.0)
    lim = {n: MvConstraint(b.lo, b.hi) for n, b in online.bindings.items()}
    lim["current_sp"] = MvConstraint(5.0, 5.8)  # new limits: a solve is due now
    plan = online.step(5.0, est(), APPLIED, all_on(), {}, lim)
    assert "User_Requested_Stop (warm, 0 iterations in all)" in plan.reason and "cold" not in plan.reason
    assert plan.status is SolverStatus.HELD  # the last plan is followed meanwhile


def test_runtime_builds_the_mpc_for_wall_clock_and_sim_for_virtual_time(tmp_path: Path) -> None:
    """apc run's units get real_time=True (wall-time budget applies); apc sim's get False (deterministic)."""
    from apc.assembly import build_sim_unit
    from apc.audit import null_logger
    from apc.clock import VirtualClock
    from tests.helpers.sim_harness import ND_RECIPE

    loaded = load(ND_RECIPE)
    for real_time in (True, False):
        unit, _ = build_sim_unit("u", loaded, load_scenario("nominal"), 1, VirtualClock(), audit=null_logger(),
                                 controller_kind="mpc", real_time=real_time)
        assert isinstance(unit.controller, CellMpc) and unit.controller.real_time is real_time


def test_bath_band_gives_way_to_metal_above_melting(loaded: LoadedRecipe) -> None:
    """When metal above melting (rank 2) and the bath band (rank 4) conflict, the bath band is the one violated."""
    cfg = loaded.recipe.controller.mpc
    assert cfg is not None
    band = (1045.0, 1050.0)
    # Metal must be 40 K above its melting point (>= 1061 degC): only a bath above its band can get it there.
    conflict = make(loaded.recipe, bath_temp_band_degC=band, metal_melting_margin_K=40.0)
    plan = conflict.step(0.0, est(bath=1050.0, metal=1035.0), APPLIED, all_on(), {})
    assert plan.status in (SolverStatus.OK, SolverStatus.HELD)
    bath, metal = plan.predicted["bath_temp_degC"], plan.predicted["metal_temp_degC"]
    assert max(bath) > band[1] + 2.0  # the lower rank gives way ...
    assert metal[-1] > metal[0] + 2.0  # ... to push the metal toward its margin
    assert conflict.planned("current_sp")[0] >= APPLIED["current_sp"]  # heats with more current
    # Without the conflict the same start keeps the bath inside its band.
    relaxed = make(loaded.recipe, bath_temp_band_degC=band, metal_melting_margin_K=10.0)
    plan = relaxed.step(0.0, est(bath=1050.0, metal=1035.0), APPLIED, all_on(), {})
    assert max(plan.predicted["bath_temp_degC"]) <= band[1] + 0.5


def test_dcs_high_limit_stops_pushing_that_way(loaded: LoadedRecipe) -> None:
    """With the current loop at its DCS high limit the plan never raises current; it still may lower it."""
    free = make(loaded.recipe)
    free.step(0.0, est(), APPLIED, all_on(), {})
    assert max(free.planned("current_sp")) > APPLIED["current_sp"]  # left alone it pushes current up
    c = make(loaded.recipe)
    lim = {n: MvConstraint(b.lo, b.hi) for n, b in c.bindings.items()}
    lim["current_sp"] = dataclasses.replace(lim["current_sp"], hold_up=True)
    for k, e in enumerate((est(), est(oxide_kg=14.0, bath=1040.0))):
        plan = c.step(60.0 * k, e, APPLIED, all_on(), {}, lim)
        assert plan.status is SolverStatus.OK
        assert plan.moves["current_sp"] <= APPLIED["current_sp"]
        assert max(c.planned("current_sp")) <= APPLIED["current_sp"] + 1e-6  # IPOPT's bound relaxation
    plan = c.step(120.0, est(oxide_kg=5.5), APPLIED, all_on(), {}, lim)  # AE margin short: cut current
    assert plan.moves["current_sp"] < APPLIED["current_sp"]


def test_limits_in_force_reach_the_plan_and_trigger_a_solve(loaded: LoadedRecipe) -> None:
    """An operator high limit below the readback (passed per cycle) brings the setpoint down at once."""
    c = make(loaded.recipe, period_multiple=12)
    c.step(0.0, est(), APPLIED, all_on(), {})
    lim = {n: MvConstraint(b.lo, b.hi) for n, b in c.bindings.items()}
    lim["current_sp"] = MvConstraint(5.0, 5.8)
    plan = c.step(10.0, est(), APPLIED, all_on(), {}, lim)  # not due by the period: due by the new limits
    assert plan.status is SolverStatus.OK and plan.iterations > 0
    assert plan.moves["current_sp"] < APPLIED["current_sp"]
    assert c.planned("current_sp")[-1] <= 5.8 + 1e-6


def _current_cap_run(loaded: LoadedRecipe, path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sc = dataclasses.replace(load_scenario("nominal"), events=(
        Event(at_h=1.0, kind="output_limit", signal="current", value=5.95, duration_h=1.5),))
    res = asyncio.run(simulate(loaded, sc, seed=31, hours=3.0, controller="mpc", record_path=path))
    return res.kpis, [e.data for e in iter_record(path) if e.kind == "cycle"]


@pytest.mark.slow
def test_rectifier_limit_reported_by_dcs_is_respected_in_closed_loop(loaded: LoadedRecipe, tmp_path: Path) -> None:
    """A DCS-capped current (at_high_limit bound): while reported, no current write above the readback;
    no shed, no clamp. Without the status bound the MPC winds up against the cap and the readback
    check sheds the unit."""
    kpis, cycles = _current_cap_run(loaded, tmp_path / "bound.jsonl")
    held = [c for c in cycles if c["dcs_at_limit"].get("current_sp") == "high"]
    assert len(held) > 60 and all(3600.0 <= c["t_s"] <= 2.5 * 3600.0 + 5.0 for c in held)
    for c in held:
        written = [w["value"] for w in c["writes"] if w["tag"] == "current.sp_kA"]
        assert written == [c["readback"]["current_sp"]] or written[0] < c["readback"]["current_sp"], c["k"]
    assert kpis["sheds"] == 0 and kpis["guard_clamps"] == 0
    assert max(c["plan"]["moves"]["current_sp"] for c in cycles if c["t_s"] > 2.6 * 3600.0) > 5.95  # cap lifted

    io_ = loaded.recipe.io
    mvs = {n: dataclasses.replace(m, high_limit_status=None) for n, m in io_.mvs.items()}
    blind = dataclasses.replace(loaded, recipe=dataclasses.replace(loaded.recipe,
                                                                   io=dataclasses.replace(io_, mvs=mvs)))
    kpis, cycles = _current_cap_run(blind, tmp_path / "blind.jsonl")
    assert kpis["sheds"] >= 1
    assert any("current_sp" in (c["shed_reason"] or "") for c in cycles if c["shed"])
