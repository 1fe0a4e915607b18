"""Furnaces that learn: a sequence of batches on one furnace whose plant drifts, learning on and off.

For each furnace (VIM, annealing) the same sequence of ``--batches`` batches runs twice on one
furnace (one state directory, one batch history): once with the recipe's ``learning:`` section
enabled (``apply: auto``), once with it disabled (every batch starts from the recipe). Same plant,
same seeds, same drift for both. The plant drifts per batch (stated, never tuned to the result):

* VIM: wall ageing (wall loss resistance −1 %/batch), coupling change (coupling efficiency
  −0.5 %/batch), per lot of 4 batches: charge mass ×N(1, 0.06), thermal outgassing and melt
  degassing ×N(1, 0.2) (clipped at 3 sigma, drawn from the lot's seed);
* annealing: wall ageing (loss resistance −1 %/batch), convection drift (gas-to-load hA
  −0.5 %/batch), per lot of 4 batches: load mass ×N(1, 0.10), core resistance ×N(1, 0.15).

Per batch: the KPIs judged on the simulator's truth (:mod:`apc.kinds.furnace.kpi`: batch time,
energy, tracking RMSE, soak complete on the true core / charge, pressure and ΔT violations) and the
terms the batch ran with; then the mean over the last 10 batches and the targets (with learning:
batch time and energy below those without, zero violations, every soak complete).

Controllers (CPU): by default both furnaces with the PID baseline (2–10 s per batch);
``--controller mpc`` runs the curve MPCs instead (20–60 s per batch).

    python bench/furnace_learning.py [--batches 20] [--furnace vim|annealing|both] [--controller baseline|mpc]
        [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from apc.assembly import build_sim_unit, load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.curve_preview import BatchState
from apc.cycle_record import CycleRecord
from apc.kinds import kind_of
from apc.kinds.furnace.learning_batch import LearningBatch
from apc.recipe.loader import LoadedRecipe
from apc.simulate import run_on
from apc.types import Mode
from sim.furnace_plant import FurnaceScenario
from sim.models import get_model

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"vim": ROOT / "recipes" / "vim_furnace.yaml", "annealing": ROOT / "recipes" / "annealing_furnace.yaml"}
LOT_SIZE = 4
MAX_BATCH_H = 120.0
"""Virtual time a batch may take (the annealing curve with its worst-case soak extension takes ≈ 73 h)."""
KEYS = ("batch_time_min", "energy_kWh", "tracking_rmse_degC", "soak_complete", "pressure_violations",
        "core_surface_dT_violations")

DRIFT = {
    # parameter: (relative change per batch, relative std per lot)
    "vim": {"wall_loss_resistance_K_kW": (-0.01, 0.0), "coupling_efficiency": (-0.005, 0.0),
            "charge_mass_kg": (0.0, 0.06), "outgassing_per_K_Pa_m3_K": (0.0, 0.2),
            "melt_degassing_Pa_m3_kg": (0.0, 0.2)},
    "annealing": {"loss_resistance_K_kW": (-0.01, 0.0), "convective_hA_kW_K": (-0.005, 0.0),
                  "load_mass_t": (0.0, 0.10), "core_resistance_K_kW": (0.0, 0.15)},
}


def drifted(scenario: FurnaceScenario, furnace: str, n: int, seed: int) -> FurnaceScenario:
    """Batch ``n``'s plant: the nominal parameters with the furnace's drift (no per-seed spread)."""
    model = get_model(scenario.model)
    nominal = dict(zip(model.parameter_names, model.parameter_vector(scenario.plant_parameters)))
    lot = n // LOT_SIZE
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, lot]))
    params = dict(nominal)
    for name in model.parameter_names:  # model order: reproducible draws
        if name not in DRIFT[furnace]:
            continue
        per_batch, per_lot = DRIFT[furnace][name]
        lot_factor = 1.0 + per_lot * float(np.clip(rng.standard_normal(), -3.0, 3.0)) if per_lot else 1.0
        params[name] = nominal[name] * (1.0 + per_batch * n) * lot_factor
    return dataclasses.replace(scenario, name=f"{scenario.name}_drift{n}", plant_parameters=params,
                               parameter_spread={})


def _loaded(furnace: str, learn: bool) -> LoadedRecipe:
    loaded = load(RECIPES[furnace])
    learning = loaded.recipe.learning  # type: ignore[attr-defined]
    assert learning is not None, "the recipe has no learning section"
    learning = dataclasses.replace(learning, enabled=learn, apply="auto")
    return dataclasses.replace(loaded, recipe=dataclasses.replace(loaded.recipe, learning=learning))


async def _one_batch(loaded: LoadedRecipe, controller: str, scenario: FurnaceScenario, seed: int, state_dir: Path,
                     batch_id: str, lot: str) -> dict[str, Any]:
    clock = VirtualClock()
    unit, _ = build_sim_unit("bench", loaded, scenario, seed, clock, audit=null_logger(),
                             controller_kind=controller, state_dir=state_dir)  # type: ignore[arg-type]
    batch = unit.batch
    assert isinstance(batch, LearningBatch)
    done = asyncio.Event()
    tried = False

    def after(record: CycleRecord) -> None:
        nonlocal tried
        state = batch.batch.state
        if state is not BatchState.RUNNING and not tried and record.mode.actual == Mode.ON.value:
            tried = True
            batch.start(clock.monotonic(), "bench", record.estimate.values().get(batch.curve.controlled),
                        batch_id, lot=lot)
        elif tried and state is BatchState.HELD:
            # A hold here is a timeout (nobody resumes it): the crew aborts the batch, it counts as not
            # complete, and the next batch starts fresh instead of being restored held.
            batch.abort(clock.monotonic(), "bench", f"held: {'; '.join(batch.batch.reasons)}")
            done.set()
        elif tried and state in (BatchState.COMPLETE, BatchState.ABORTED):
            done.set()

    try:
        await run_on(unit, clock, MAX_BATCH_H, who="bench", where="bench", after_cycle=after, stop=done)
    finally:
        unit.recorder.close()
    assert unit.kpi is not None
    kpis = dict(unit.kpi.result())
    kpis["terms"] = dict(batch.status()["learning"]["terms"])
    kpis["learned"] = batch.status()["learning"]["learned"]
    measured = batch.status()["learning"]["last_kpis"]  # what the unit saw (the learning's input)
    kpis["measured"] = dict(measured)
    return kpis


def run_sequence(args: tuple[str, bool, int, int, str]) -> tuple[str, bool, list[dict[str, Any]], float]:
    """All batches of one furnace with learning on or off, in one history."""
    furnace, learn, batches, seed, controller = args
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    loaded = _loaded(furnace, learn)
    base = kind_of(loaded.recipe).load_scenario(None)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(batches):
            sc = drifted(base, furnace, n, seed)
            rows.append(asyncio.run(_one_batch(loaded, controller, sc, seed + n, Path(tmp), f"B{n:02d}",
                                               f"L{n // LOT_SIZE:02d}")))
            print(f"{furnace} learning={'on' if learn else 'off'} batch {n:2d} done", flush=True)
    return furnace, learn, rows, time.perf_counter() - t0


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def main() -> None:
    """Run the sequences and print per-batch KPIs, the learning curve and the last-10 means."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--furnace", choices=("vim", "annealing", "both"), default="both")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--controller", choices=("baseline", "mpc"), default="baseline",
                    help="the furnaces' controller (the MPCs cost 20-60 s per batch)")
    args = ap.parse_args()
    furnaces = list(RECIPES) if args.furnace == "both" else [args.furnace]
    print(f"Furnace learning across {args.batches} batches, seed {args.seed}, lots of {LOT_SIZE}")
    for f in furnaces:
        print(f"{f}: controller {args.controller}, drift (per batch, per lot std): {DRIFT[f]}")
    jobs = [(f, learn, args.batches, args.seed, args.controller) for f in furnaces for learn in (True, False)]
    results: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for furnace, learn, rows, wall in pool.map(run_sequence, jobs):
            results[(furnace, learn)] = rows
            print(f"done {furnace} learning={'on' if learn else 'off'} in {wall:.0f} s", flush=True)
    for f in furnaces:
        on, off = results[(f, True)], results[(f, False)]
        print(f"\n{f} ({RECIPES[f].name}, controller {args.controller}): per batch, learning on | off")
        print(f"{'n':>3s} " + " ".join(f"{k[:12]:>12s}" for k in KEYS) + " | "
              + " ".join(f"{k[:12]:>12s}" for k in KEYS) + "  terms (on), its measured melt")
        for n, (a, b) in enumerate(zip(on, off)):
            terms = ", ".join(f"{k}={v:g}" for k, v in a["terms"].items())
            melt = a["measured"].get("melt_time_min")
            if melt is not None:  # what the run-to-run rule saw of the melt (measured, not the truth)
                terms += (f" (melt {melt:.1f} min{', timed out' if a['measured'].get('melt_timed_out') else ''},"
                          f" peak {_f(a['measured'].get('melt_peak_pressure_Pa')):.2f} Pa)")
            print(f"{n:3d} " + " ".join(f"{_f(a[k]):12.2f}" for k in KEYS) + " | "
                  + " ".join(f"{_f(b[k]):12.2f}" for k in KEYS) + f"  {terms}")
        last = slice(max(0, len(on) - 10), len(on))
        mean_on = {k: float(np.nanmean([_f(r[k]) for r in on[last]])) for k in KEYS}
        mean_off = {k: float(np.nanmean([_f(r[k]) for r in off[last]])) for k in KEYS}
        print(f"mean of the last {len(on[last])}:")
        print(f"{'on':>3s} " + " ".join(f"{mean_on[k]:12.2f}" for k in KEYS))
        print(f"{'off':>3s} " + " ".join(f"{mean_off[k]:12.2f}" for k in KEYS))
        viol = sum(_f(r["pressure_violations"]) + _f(r["core_surface_dT_violations"]) for r in on)
        soaks = sum(1 for r in on if _f(r["soak_complete"]) == 1.0)
        checks = {
            "batch time lower": mean_on["batch_time_min"] < mean_off["batch_time_min"],
            "energy lower": mean_on["energy_kWh"] < mean_off["energy_kWh"],
            "zero violations": viol == 0,
            "every soak complete": soaks == len(on),
        }
        print("targets (learning on, last 10 / all batches): "
              + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in checks.items())
              + f" (soaks complete {soaks}/{len(on)}, violations {viol:g})")


if __name__ == "__main__":
    main()
