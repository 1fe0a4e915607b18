"""Furnace curve MPC against the industrial PID baseline, one whole batch per seed, KPIs side by side.

Runs each shipped furnace recipe (``recipes/vim_furnace.yaml``,
``recipes/annealing_furnace.yaml``) once with ``--controller baseline`` and
once with ``--controller mpc`` per seed on the furnace's nominal scenario,
whose seeds vary the load (charge / coil mass) and the plant parameters
around the recipe's nominal model. Same plant, same seed, same noise for
both. KPIs are judged on the simulator's truth (the true load core or
charge), with the fixed keys of :mod:`apc.kinds.furnace.kpi`; a batch whose true
core did not complete its soak fails, whatever the estimate said.

Tracking is judged for both controllers against one common reference, the
curve re-timed on the true controlled temperature (see
:mod:`apc.kinds.furnace.kpi`), not against each controller's own batch
reference (which waits on the thermocouple for the PID, on the estimate for
the MPC).

Targets checked per seed for the MPC: tracking RMSE no worse than the
baseline's, and at most half of it, zero overshoot beyond the band, zero
pressure-limit violations, complete soak, batch time no longer than the
baseline's.

    python bench/furnace_vs_baseline.py [--seeds 41-46] [--furnace vim|annealing|both] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import structlog

from apc.assembly import load
from apc.kinds import kind_of
from apc.kinds.furnace.kpi import FURNACE_KPI_KEYS
from apc.seeds import parse_seeds
from apc.simulate import SimResult, simulate

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"vim": ROOT / "recipes" / "vim_furnace.yaml", "annealing": ROOT / "recipes" / "annealing_furnace.yaml"}
CONTROLLERS = ("baseline", "mpc")


def _job(args: tuple[str, int, str]) -> tuple[str, int, str, dict[str, Any], float]:
    furnace, seed, controller = args
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # quiet workers
    loaded = load(RECIPES[furnace])
    scenario = kind_of(loaded.recipe).load_scenario(None)
    res: SimResult = asyncio.run(simulate(loaded, scenario, seed=seed, controller=controller))  # type: ignore[arg-type]
    return furnace, seed, controller, res.kpis, res.wall_s


def _checks(b: dict[str, Any], m: dict[str, Any]) -> dict[str, bool | None]:
    """Targets per seed; None where it cannot be judged (the baseline's batch did not finish)."""
    time_ok: bool | None
    if math.isnan(m["batch_time_min"]):
        time_ok = False
    elif math.isnan(b["batch_time_min"]):
        time_ok = None  # baseline unfinished within the run's cap: no comparison
    else:
        time_ok = m["batch_time_min"] <= b["batch_time_min"]
    return {
        "rmse<=": m["tracking_rmse_degC"] <= b["tracking_rmse_degC"],
        "rmse<=½": m["tracking_rmse_degC"] <= 0.5 * b["tracking_rmse_degC"],
        "no overshoot": m["overshoot_max_degC"] <= 0.0,
        "no p-viol": m["pressure_violations"] == 0,
        "soak done": m["soak_complete"] == 1,
        "time<=": time_ok,
    }


def print_seed_rows(seeds: list[int], keys: tuple[str, ...],
                    kpis: Callable[[int, str], dict[str, Any]]) -> None:
    """Each seed's KPI rows for both controllers, its targets, and the targets met over all seeds."""
    totals: dict[str, list[bool | None]] = {}
    for s in seeds:
        for c in CONTROLLERS:
            k = kpis(s, c)
            print(f"{s:4d} {c:8s} " + " ".join(f"{float(k[x]):13.2f}" for x in keys))
        checks = _checks(kpis(s, "baseline"), kpis(s, "mpc"))
        for name, ok in checks.items():
            totals.setdefault(name, []).append(ok)
        print(f"{'':13s} targets: " + ", ".join(
            f"{n} {'n/a (baseline unfinished)' if ok is None else 'ok' if ok else 'MISSED'}"
            for n, ok in checks.items()))
    print("targets met, per seed judged: " + ", ".join(
        f"{n} {sum(1 for x in v if x)}/{sum(1 for x in v if x is not None)}" for n, v in totals.items()))


def main() -> None:
    """Run both controllers on every seed of the chosen furnaces and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="41-46")
    ap.add_argument("--furnace", choices=("vim", "annealing", "both"), default="both")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    furnaces = list(RECIPES) if args.furnace == "both" else [args.furnace]
    hashes = "\n".join(f"{f} simulator_sha256 {kind_of(load(RECIPES[f]).recipe).simulator_sha256()}" for f in furnaces)
    print(f"Furnace MPC vs PID baseline, seeds {seeds}\n{hashes}", flush=True)
    jobs = [(f, s, c) for f in furnaces for s in seeds for c in CONTROLLERS]
    runs: dict[tuple[str, int, str], dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for fut in as_completed([pool.submit(_job, j) for j in jobs]):
            furnace, seed, controller, kpis, wall = fut.result()
            runs[(furnace, seed, controller)] = kpis
            print(f"done {furnace} seed {seed} {controller:8s} in {wall:5.0f} s", flush=True)
    keys = FURNACE_KPI_KEYS[:8]
    for furnace in furnaces:
        loaded = load(RECIPES[furnace])
        print(f"\n{furnace}: {RECIPES[furnace].name} (sha256 {loaded.sha256[:12]})")
        print(f"{'seed':>4s} {'ctrl':8s} " + " ".join(f"{k[:13]:>13s}" for k in keys))
        print_seed_rows(seeds, keys, lambda s, c, f=furnace: runs[(f, s, c)])


if __name__ == "__main__":
    main()
