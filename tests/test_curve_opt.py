"""Offline curve optimisation (apc.curve_opt, apc curve-opt): improves the objective, writes a valid curve
file, keeps quality limits, refuses bad requests clearly."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from apc.cli import main
from apc.curve_opt import PENALTY, CurveOptError, Objective, Term, check_terms, optimise
from apc.curve_opt_cli import OptResult, load_curve_file, write_curve_file
from apc.recipe.curve_schema import CurveSection, Segment

ROOT = Path(__file__).resolve().parent.parent
CURVE = CurveSection(
    controlled="charge_temp_degC", start_degC=25.0, max_heating_rate_degC_min=25.0, max_cooling_rate_degC_min=20.0,
    ramp_lag_limit_degC=20.0, pressure_limit_Pa=5.0,
    segments=(Segment("ramp", rate_degC_min=10.0, target_degC=950.0),
              Segment("melt", power_kW=70.0, condition="charge_tc > 1030", timeout_min=40.0),
              Segment("soak", time_min=10.0, band_degC=(940.0, 960.0))))


def toy(curve: CurveSection, seed: int) -> Mapping[str, Any]:
    """A stand-in for a simulated batch: faster ramps and more melt power shorten it; a melt above 85 kW
    breaks the pressure limit; energy grows with power."""
    rate, power = curve.segments[0].rate_degC_min, curve.segments[1].power_kW
    assert rate is not None and power is not None
    t = 925.0 / rate + 3000.0 / power + 10.0 + 0.1 * seed
    return {"batch_time_min": t, "energy_kWh": power * 1.2, "soak_complete": 1,
            "pressure_violations": int(power > 85.0), "core_surface_dT_violations": 0}


def test_nelder_mead_improves_the_objective_and_keeps_the_limits() -> None:
    """From the recipe's values the search lowers the cost and stops at the pressure limit, not beyond it."""
    terms = [Term.parse("0.rate_degC_min=5:25"), Term.parse("1.power_kW=60:100")]
    res = optimise(CURVE, terms, [0, 1], toy, Objective(), max_evals=30)
    assert res.start_cost == pytest.approx(925 / 10 + 3000 / 70 + 10.05)
    assert res.best_cost < res.start_cost - 40.0
    rate, power = res.best_values
    assert rate > 20.0 and power <= 85.0
    assert res.evaluations <= 30
    assert res.curve.segments[0].rate_degC_min == pytest.approx(rate)


def test_grid_covers_the_box_and_a_failing_candidate_is_never_best() -> None:
    """A grid evaluates every point; the fastest point (100 kW) breaks the pressure limit and costs PENALTY."""
    res = optimise(CURVE, [Term.parse("1.power_kW=60:100")], [0], toy, Objective(), method="grid", grid_points=5)
    costs = dict(res.history)
    assert sorted(costs) == [(60.0,), (70.0,), (80.0,), (90.0,), (100.0,)]  # the recipe's 70 kW is a grid point
    assert costs[(100.0,)] > PENALTY
    assert res.best_values == (80.0,)


def test_written_curve_file_is_a_valid_curve_section(tmp_path: Path) -> None:
    """The proposal is written as a recipe curve section that the loader's schema reads back unchanged."""
    res = optimise(CURVE, [Term.parse("0.rate_degC_min=5:25")], [0], toy, Objective(), max_evals=6)
    out = tmp_path / "curve.yaml"
    write_curve_file(out, res, ["proposal"])
    assert out.read_text().startswith("# proposal\n")
    assert load_curve_file(out) == res.curve


def test_energy_weight_trades_time_for_energy() -> None:
    """With energy costed heavily the melt power chosen is lower than with time alone."""
    term = [Term.parse("1.power_kW=60:85")]
    by_time = optimise(CURVE, term, [0], toy, Objective(1.0, 0.0), method="grid", grid_points=6)
    by_energy = optimise(CURVE, term, [0], toy, Objective(1.0, 1.0), method="grid", grid_points=6)
    assert by_energy.best_values[0] < by_time.best_values[0]


@pytest.mark.parametrize(("term", "message"), [
    ("0.rate=5", "expected SEGMENT.FIELD=LOW:HIGH"),
    ("0.rate_degC_min=25:5", "needs finite LOW < HIGH"),
    ("7.rate_degC_min=5:25", "the curve has 3 segments (0–2)"),
    ("1.rate_degC_min=5:25", "segment 1 is a melt; its adjustable field is power_kW"),
    ("2.time_min=5:25", "segment 2 is a soak; it has no adjustable field"),
    ("0.rate_degC_min=5:30", "the curve rejects rate_degC_min = 30"),
    ("0.rate_degC_min=12:20", "the recipe's rate_degC_min (10) lies outside 12:20"),
])
def test_bad_terms_are_refused_with_the_reason(term: str, message: str) -> None:
    """Each malformed or inapplicable term is refused, naming the term and what is wrong."""
    with pytest.raises(CurveOptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_terms(CURVE, [Term.parse(term)])


def test_duplicate_term_and_empty_requests_are_refused() -> None:
    """Naming a field twice, no term, or no seed is refused."""
    t = Term.parse("0.rate_degC_min=5:25")
    with pytest.raises(CurveOptError, match="named twice"):
        check_terms(CURVE, [t, t])
    with pytest.raises(CurveOptError, match="at least one term"):
        check_terms(CURVE, [])
    with pytest.raises(CurveOptError, match="at least one training seed"):
        optimise(CURVE, [t], [], toy, Objective())


def test_cli_refuses_overlapping_seeds_and_non_furnace_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    """apc curve-opt exits 2 with the reason on stderr: held-out seeds that train, a recipe without a curve."""
    vim = str(ROOT / "recipes" / "vim_furnace.yaml")
    assert main(["curve-opt", vim, "--terms", "4.rate_degC_min=5:25", "--seeds", "0,1", "--held-out", "1-2"]) == 2
    assert "seeds [1] are training seeds too" in capsys.readouterr().err
    cell = str(ROOT / "recipes" / "nd_cell_6ka.yaml")
    assert main(["curve-opt", cell, "--terms", "0.rate_degC_min=5:25", "--seeds", "0"]) == 2
    assert "needs a furnace recipe with a curve section" in capsys.readouterr().err


def test_cli_on_the_simulator_writes_a_loadable_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two simulated VIM batches with the PID (the recipe's melt power, then one grid alternative) give a
    curve file the loader reads, with the cheaper of the two melt powers."""
    out = tmp_path / "vim_curve.yaml"
    rc = main(["curve-opt", str(ROOT / "recipes" / "vim_furnace.yaml"), "--terms", "3.power_kW=70:85",
               "--seeds", "0", "--controller", "baseline", "--method", "grid", "--grid-points", "2",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "3.power_kW 70 -> 85" in text  # more melt power, within the pressure limit, shortens the batch
    curve = load_curve_file(out)
    assert curve.segments[3].power_kW == 85.0
    assert not math.isnan(float(curve.segments[4].rate_degC_min or math.nan))


def test_optresult_is_exported_for_callers() -> None:
    """The CLI module re-exports the result type it writes (one import for callers)."""
    assert OptResult.__name__ == "OptResult"
