"""The plain do-mpc set-up the cell MPC's speed is compared with still runs against the controller API."""

from __future__ import annotations

import sys
from pathlib import Path

from apc.assembly import load
from apc.types import Estimate, SolverStatus
from sim.models import get_model

BENCH = Path(__file__).resolve().parent.parent / "bench"
STATES = ("dissolved_oxide_kg", "undissolved_oxide_kg", "bath_temp_degC", "metal_temp_degC", "acd_cm",
          "metal_pool_kg", "heat_loss_bias", "ce_bias")


def test_plain_dompc_setup_solves_one_step_through_the_controller_api() -> None:
    """DoMpcPlain (bench/dompc_plain.py) builds on the shipped recipe and returns an OK plan for one step."""
    sys.path.insert(0, str(BENCH))
    try:
        from dompc_plain import DoMpcPlain
    finally:
        sys.path.remove(str(BENCH))
    recipe = load(Path(__file__).resolve().parent.parent / "recipes" / "nd_cell_6ka.yaml").recipe
    assert recipe.controller.mpc is not None
    model = get_model(recipe.model.name)
    c = DoMpcPlain(model, model.parameter_vector(recipe.model.parameters), recipe.controller.mpc, recipe.io.mvs,
                   recipe.limits, recipe.period_s, 1, recipe.controller.hold_cycles)
    est = Estimate(STATES, ("kg", "kg", "degC", "degC", "cm", "kg", "1", "1"),
                   (11.0, 2.0, 1047.0, 1035.0, 8.0, 40.0, 0.0, 0.0), None, "ok", {"current_kA": 6.0})
    applied = {"oxide_feed": 9.2, "anode_move": 0.0, "current_sp": 6.0}
    plan = c.step(0.0, est, applied, dict.fromkeys(applied, True), {})
    assert plan.status is SolverStatus.OK and set(plan.moves) == set(applied)
