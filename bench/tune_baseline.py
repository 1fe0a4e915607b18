"""Tune the industrial baseline (tracking feed) on seeds 1–10, as a plant engineer would.

Grid search over the tuning a cell-controller engineer sets (slope trigger,
slope window, temperature correction of the resistance target), each
candidate run closed-loop on seeds 1–10 of the nominal scenario. Candidates
are ranked the way a potroom ranks them: fewest anode effects first, then
most time with oxide in band, then the steadiest bath temperature. Seeds 1–10
are reserved for this script; every comparison uses other seeds.

    python bench/tune_baseline.py [--hours 48] [--workers 2]

Prints every candidate and the winner; the winner goes into
recipes/nd_cell_6ka.yaml by hand (with the run's output in the commit).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from apc.assembly import load
from apc.recipe.loader import LoadedRecipe
from apc.simulate import simulate
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
TUNING_SEEDS = tuple(range(1, 11))
# A coarse round (trigger 8/12/16/24 uOhm/h, window 1200/1800 s, correction
# 0/0.5 uOhm/K, 30 h runs) ranked trigger 16 with the 1800 s window first;
# this grid refines around it over 48 h runs, long enough for the slow
# temperature correction of the resistance target to show.
GRID = {
    "slope_trigger_uohm_per_h": (16.0, 20.0),
    "slope_window_s": (1800.0, 2400.0),
    "target_correction_uohm_per_K": (0.0, 0.2, 0.5),
}
ESTIMATOR_KEYS = {"slope_window_s", "mean_interval_s", "voltage_filter_tau_s"}


def with_tuning(loaded: LoadedRecipe, tuning: dict[str, float]) -> LoadedRecipe:
    """The recipe with baseline controller and estimator values replaced."""
    r = loaded.recipe
    ctl = {k: v for k, v in tuning.items() if k not in ESTIMATOR_KEYS}
    est = {k: v for k, v in tuning.items() if k in ESTIMATOR_KEYS}
    assert r.controller.baseline is not None
    controller = dataclasses.replace(r.controller, baseline=dataclasses.replace(r.controller.baseline, **ctl))
    estimator = dataclasses.replace(r.estimator, filtered=dataclasses.replace(r.estimator.filtered, **est))
    return dataclasses.replace(loaded, recipe=dataclasses.replace(r, controller=controller, estimator=estimator))


def run_one(args: tuple[dict[str, float], int, float]) -> dict[str, Any]:
    """One closed-loop run of one candidate on one seed."""
    tuning, seed, hours = args
    loaded = with_tuning(load(ROOT / "recipes" / "nd_cell_6ka.yaml"), tuning)
    res = asyncio.run(simulate(loaded, load_scenario("nominal"), seed=seed, hours=hours))
    return res.kpis


def score(kpis: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Rank key: anode effects, then minus oxide-in-band, then bath-temperature std."""
    ae = sum(k["anode_effects"] for k in kpis)
    band = sum(k["oxide_in_band_pct"] for k in kpis) / len(kpis)
    std = sum(k["bath_temp_std_degC"] for k in kpis) / len(kpis)
    return (ae, -band, std if not math.isnan(std) else 1e9)


def main() -> None:
    """Run the grid and print the ranking."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=48.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    names = list(GRID)
    candidates = [dict(zip(names, values)) for values in itertools.product(*GRID.values())]
    jobs = [(c, s, args.hours) for c in candidates for s in TUNING_SEEDS]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run_one, jobs))
    rows = []
    for i, c in enumerate(candidates):
        kp = results[i * len(TUNING_SEEDS):(i + 1) * len(TUNING_SEEDS)]
        rows.append((score(kp), c, kp))
    rows.sort(key=lambda r: r[0])
    print(f"seeds {TUNING_SEEDS[0]}–{TUNING_SEEDS[-1]}, {args.hours:g} h each")
    print(f"{'AE':>4s} {'band %':>7s} {'T std':>6s} {'sludge':>7s} {'kWh/kg':>7s}  tuning")
    for (ae, nband, std), c, kp in rows:
        sludge = sum(k["sludge_final_kg"] for k in kp) / len(kp)
        energy = sum(k["energy_kWh_per_kg"] for k in kp) / len(kp)
        print(f"{ae:4.0f} {-nband:7.1f} {std:6.2f} {sludge:7.2f} {energy:7.3f}  {c}")
    print(f"best: {rows[0][1]}")


if __name__ == "__main__":
    main()
