"""Tune the industrial baseline (tracking feed) on all its parameters, on training seeds, as a plant engineer would.

A small random search with successive halving, on the evaluation scenario (``potline_week``) and
horizon (7 days), on training seeds 1–6 only (every comparison uses other seeds):

1. the shipped tuning and ``--candidates - 1`` random ones, each drawing every parameter of the
   baseline (feed ratios and the nominal feed, overfeed time, under-feed limits, slope trigger and
   window, target resistance, deadband, electrode step, interval and gain, temperature correction and
   its limit) uniformly within the ranges of :data:`SPACE`, run on the first two seeds;
2. the best ``--finalists`` of round 1 run on the other four seeds and are ranked on all six.

Candidates are ranked the way a potroom ranks them: fewest anode effects first, then most time with
oxide in band, then the steadiest bath temperature. The ranges are the plausible settings of each
parameter around the reference's example (70 %/140 % feed, 1 h overfeed; reference §2) and the
recipe's limits (electrode step at most the recipe's ``max_step``, interval at least its
``min_interval_s``); they were fixed before any run.

Cost: the baseline reads only the filtered signals (pseudo-resistance, slope, dip, anode-effect
flag), so the runs use the recipe with ``estimator.kind: filtered``: the same baseline decisions,
without computing the Kalman filter the baseline never reads (checked by
``tests/test_potline_scenario.py``). Default: 10 candidates x 2 seeds + 2 finalists x 4 seeds =
28 runs of 7 days (about 40 core-minutes).

    python bench/tune_baseline.py [--days 7] [--candidates 10] [--finalists 2] [--workers 2]

Prints every candidate and the winner; the winner goes into recipes/nd_cell_6ka.yaml by hand (with
the run's output in bench/results_tune_baseline.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from apc.assembly import load
from apc.recipe.loader import LoadedRecipe
from apc.simulate import simulate
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"
SCENARIO = "potline_week"
TUNING_SEEDS = (1, 2, 3, 4, 5, 6)
ROUND1_SEEDS = TUNING_SEEDS[:2]
SPACE: dict[str, tuple[float, float]] = {
    "nominal_feed_kg_h": (8.7, 9.7),
    "underfeed_ratio": (0.55, 0.85),
    "overfeed_ratio": (1.2, 1.7),
    "overfeed_duration_s": (2400.0, 5400.0),
    "min_underfeed_s": (900.0, 3600.0),
    "max_underfeed_s": (7200.0, 14400.0),
    "slope_trigger_uohm_per_h": (8.0, 24.0),
    "slope_window_s": (1200.0, 2400.0),
    "target_resistance_uohm": (1170.0, 1240.0),
    "resistance_deadband_uohm": (4.0, 20.0),
    "electrode_step_cm": (0.05, 0.2),
    "electrode_min_interval_s": (1800.0, 3600.0),
    "electrode_uohm_per_cm": (100.0, 170.0),
    "target_correction_uohm_per_K": (0.0, 1.5),
    "target_correction_limit_uohm": (50.0, 200.0),
}
"""Every tuned parameter and the range it is drawn from."""
ESTIMATOR_KEYS = {"slope_window_s", "mean_interval_s", "voltage_filter_tau_s"}


def shipped(loaded: LoadedRecipe) -> dict[str, float]:
    """The recipe's current values of every tuned parameter."""
    r = loaded.recipe
    assert r.controller.baseline is not None
    out = {}
    for k in SPACE:
        src = r.estimator.filtered if k in ESTIMATOR_KEYS else r.controller.baseline
        out[k] = float(getattr(src, k))
    return out


def with_tuning(loaded: LoadedRecipe, tuning: dict[str, float], filtered_only: bool = False) -> LoadedRecipe:
    """The recipe with baseline controller and estimator values replaced (``filtered_only``: the
    estimator computes only the filtered signals the baseline reads)."""
    r = loaded.recipe
    ctl = {k: v for k, v in tuning.items() if k not in ESTIMATOR_KEYS}
    est = {k: v for k, v in tuning.items() if k in ESTIMATOR_KEYS}
    assert r.controller.baseline is not None
    controller = dataclasses.replace(r.controller, baseline=dataclasses.replace(r.controller.baseline, **ctl))
    estimator = dataclasses.replace(r.estimator, filtered=dataclasses.replace(r.estimator.filtered, **est))
    if filtered_only:
        estimator = dataclasses.replace(estimator, kind="filtered", soft_sensor=None)
    return dataclasses.replace(loaded, recipe=dataclasses.replace(r, controller=controller, estimator=estimator))


def run_one(args: tuple[dict[str, float], int, float]) -> dict[str, Any]:
    """One closed-loop run of one candidate on one seed."""
    tuning, seed, hours = args
    loaded = with_tuning(load(RECIPE), tuning, filtered_only=True)
    res = asyncio.run(simulate(loaded, load_scenario(SCENARIO), seed=seed, hours=hours, controller="baseline"))
    return res.kpis


def score(kpis: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Rank key: anode effects, then minus oxide-in-band, then bath-temperature std."""
    ae = sum(k["anode_effects"] for k in kpis)
    band = sum(k["oxide_in_band_pct"] for k in kpis) / len(kpis)
    std = sum(k["bath_temp_std_degC"] for k in kpis) / len(kpis)
    return (ae, -band, std if not math.isnan(std) else 1e9)


def candidates(base: dict[str, float], n: int, seed: int = 0) -> list[dict[str, float]]:
    """The shipped tuning, then ``n - 1`` drawn uniformly within :data:`SPACE` (seeded)."""
    rng = np.random.default_rng(seed)
    out = [dict(base)]
    for _ in range(n - 1):
        c = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in SPACE.items()}
        c["electrode_min_interval_s"] = float(round(c["electrode_min_interval_s"] / 300.0) * 300.0)
        c["slope_window_s"] = float(round(c["slope_window_s"] / 120.0) * 120.0)  # whole 2-min means
        out.append({k: round(v, 3) for k, v in c.items()})
    return out


def _row(kp: list[dict[str, Any]], c: dict[str, float]) -> str:
    ae, nband, std = score(kp)
    energy = sum(k["energy_kWh_per_kg"] for k in kp) / len(kp)
    metal = sum(k["metal_kg"] for k in kp) / len(kp)
    clamps = sum(k["guard_clamps"] for k in kp)
    return f"{ae:4.0f} {-nband:7.2f} {std:6.2f} {energy:7.3f} {metal:8.1f} {clamps:6d}  {c}"


HEAD = f"{'AE':>4s} {'band %':>7s} {'T std':>6s} {'kWh/kg':>7s} {'metal kg':>8s} {'clamps':>6s}  tuning"


def main() -> None:
    """Run both rounds and print the ranking."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--finalists", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    hours = args.days * 24.0
    cands = candidates(shipped(load(RECIPE)), args.candidates)
    rest = TUNING_SEEDS[len(ROUND1_SEEDS):]
    with ProcessPoolExecutor(args.workers) as pool:
        r1 = list(pool.map(run_one, [(c, s, hours) for c in cands for s in ROUND1_SEEDS]))
        per = [r1[i * len(ROUND1_SEEDS):(i + 1) * len(ROUND1_SEEDS)] for i in range(len(cands))]
        order = sorted(range(len(cands)), key=lambda i: score(per[i]))
        finalists = order[:args.finalists]
        r2 = list(pool.map(run_one, [(cands[i], s, hours) for i in finalists for s in rest]))
    print(f"scenario {SCENARIO}, {args.days:g} days per run; round 1: {len(cands)} candidates on seeds "
          f"{list(ROUND1_SEEDS)} (candidate 0 = the tuning shipped before)")
    print(HEAD)
    for i in order:
        print(f"{i:2d} " + _row(per[i], cands[i]))
    print(f"\nround 2: the best {len(finalists)} on all seeds {list(TUNING_SEEDS)}")
    print(HEAD)
    final = []
    for j, i in enumerate(finalists):
        kp = per[i] + r2[j * len(rest):(j + 1) * len(rest)]
        final.append((score(kp), i, kp))
    final.sort(key=lambda f: f[0])
    for _, i, kp in final:
        print(f"{i:2d} " + _row(kp, cands[i]))
    print(f"best: candidate {final[0][1]}: {cands[final[0][1]]}")


if __name__ == "__main__":
    main()
