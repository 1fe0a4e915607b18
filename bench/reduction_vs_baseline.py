"""Reduction-furnace curve MPC against the industrial PID baseline, one whole batch per seed, KPIs side by side.

Runs ``recipes/reduction_furnace.yaml`` once with ``--controller baseline`` and once with
``--controller mpc`` per seed on a scenario of the kind (default ``reduction_nominal``, whose seeds
vary the charge, the reaction rate and the plant parameters around the recipe's nominal model).
Same plant, same seed, same noise for both. KPIs are judged on the simulator's truth (the true
charge temperature), with the fixed keys of :mod:`apc.kinds.furnace.kpi`.

Seeds used while tuning: 0 only (the baseline's PI grid, see the recipe); the MPC's weights are the
VIM recipe's, not tuned here. The default seeds (41-44) were never used for tuning.

Targets checked per seed for the MPC, as in ``bench/furnace_vs_baseline.py``: tracking RMSE at most
half the baseline's, zero overshoot beyond the band, zero pressure-limit violations, complete
soak, batch time no longer than the baseline's.

    python bench/reduction_vs_baseline.py [--seeds 41-44] [--scenario reduction_nominal] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import structlog
from furnace_vs_baseline import print_seed_rows  # same targets and table as the other furnaces (bench/ is on sys.path)

from apc.assembly import load
from apc.kinds import kind_of
from apc.kinds.furnace.kpi import FURNACE_KPI_KEYS
from apc.seeds import parse_seeds
from apc.simulate import SimResult, simulate

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "reduction_furnace.yaml"
CONTROLLERS = ("baseline", "mpc")
TUNING_SEEDS = (0,)


def _job(args: tuple[str, int, str]) -> tuple[int, str, dict[str, Any], dict[str, Any], float]:
    scenario_name, seed, controller = args
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))  # quiet workers
    loaded = load(RECIPE)
    scenario = kind_of(loaded.recipe).load_scenario(scenario_name)
    res: SimResult = asyncio.run(simulate(loaded, scenario, seed=seed, controller=controller))  # type: ignore[arg-type]
    return seed, controller, res.kpis, res.meta, res.wall_s


def main() -> None:
    """Run both controllers on every seed and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="41-44")
    ap.add_argument("--scenario", default="reduction_nominal")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    used = sorted(set(seeds) & set(TUNING_SEEDS))
    loaded = load(RECIPE)
    print(f"Reduction furnace MPC vs PID baseline, scenario {args.scenario}, seeds {seeds}"
          f" (tuning seeds {list(TUNING_SEEDS)}{'; WARNING: overlap ' + str(used) if used else ''})\n"
          f"simulator_sha256 {kind_of(loaded.recipe).simulator_sha256()}  recipe sha256 {loaded.sha256[:12]}",
          flush=True)
    jobs = [(args.scenario, s, c) for s in seeds for c in CONTROLLERS]
    runs: dict[tuple[int, str], dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for fut in as_completed([pool.submit(_job, j) for j in jobs]):
            seed, controller, kpis, meta, wall = fut.result()
            runs[(seed, controller)] = kpis
            print(f"done seed {seed} {controller:8s} in {wall:5.0f} s (batch {meta.get('batch')})", flush=True)
    keys = FURNACE_KPI_KEYS[:8]
    print(f"\n{'seed':>4s} {'ctrl':8s} " + " ".join(f"{k[:13]:>13s}" for k in keys))
    print_seed_rows(seeds, keys, lambda s, c: runs[(s, c)])


if __name__ == "__main__":
    main()
