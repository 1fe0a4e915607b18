"""Speed of offline simulation: 24 simulated hours of one cell under the baseline.

Prints wall time and the speed-up over real time, beside the plant alone
(the simulator with the DCS fallback only, no runtime) measured in the same
run, so the runtime's own share is visible. Target: 24 h in under 30 s on a
2-core machine.

    python bench/sim_speed.py [--hours 24] [--seed 11]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from apc.assembly import load
from apc.simulate import simulate
from sim.cell_plant import CellPlant
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent


def plant_only(hours: float, seed: int) -> float:
    """Wall seconds to integrate the plant alone for ``hours`` in 5 s steps."""
    plant = CellPlant(load_scenario("nominal"), seed)
    plant.set_feed_rate(9.2)
    t0 = time.perf_counter()
    n = int(hours * 3600 / 5)
    for k in range(1, n + 1):
        plant.advance_to(k * 5.0)
        plant.measurements()
    return time.perf_counter() - t0


def main() -> None:
    """Run both and print the figures side by side."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    loaded = load(ROOT / "recipes" / "nd_cell_6ka.yaml")
    result = asyncio.run(simulate(loaded, load_scenario("nominal"), seed=args.seed, hours=args.hours))
    plant_s = plant_only(args.hours, args.seed)
    sim_s = args.hours * 3600
    print(f"{'what':38s} {'wall s':>8s} {'x real time':>12s}")
    print(f"{'apc sim (runtime + baseline + plant)':38s} {result.wall_s:8.2f} {sim_s / result.wall_s:12.0f}")
    print(f"{'plant alone (no runtime)':38s} {plant_s:8.2f} {sim_s / plant_s:12.0f}")
    print(f"runtime share: {(result.wall_s - plant_s) / result.wall_s * 100:.0f} % of the closed-loop run; "
          f"{(result.wall_s - plant_s) / (sim_s / 5) * 1e6:.0f} us per 5 s cycle")
    print(f"target: {args.hours:g} h in < 30 s -> {'met' if result.wall_s < 30 else 'NOT met'}")


if __name__ == "__main__":
    main()
