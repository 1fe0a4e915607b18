"""Speed of offline simulation: simulated hours of one cell under the baseline and the MPC.

Prints wall and CPU seconds and the speed-up over real time for each
controller beside the plant alone (the simulator with the DCS fallback only,
no runtime) measured in the same process, so the runtime's own share is
visible; then a cProfile of a shorter baseline run (top entries by own time)
showing what remains. The machine's load (1-minute load average, CPUs the
process may run on) is printed with the figures: on a shared machine wall
time grows with the other jobs, CPU time much less. Targets on one idle core:
24 h under the baseline in 8.6 s (10,000x real time), under the MPC in 43 s
(2,000x). Pin it to one core for comparable figures:

    taskset -c 0 python bench/sim_speed.py [--hours 24] [--seed 11] [--profile-hours 6]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from apc.assembly import ControllerKind, load
from apc.simulate import SimResult, simulate
from sim.cell_plant import CellPlant
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"
TARGET_S_PER_24H = {"baseline": 8.6, "mpc": 43.0}
"""Wall seconds for 24 simulated hours on one idle core."""


def plant_only(hours: float, seed: int) -> tuple[float, float]:
    """(wall s, CPU s) to integrate the plant alone for ``hours`` in 5 s steps, reading it every step."""
    plant = CellPlant(load_scenario("nominal"), seed)
    plant.set_feed_rate(9.2)
    t0, c0 = time.perf_counter(), time.process_time()
    n = int(hours * 3600 / 5)
    for k in range(1, n + 1):
        plant.advance_to(k * 5.0)
        plant.measurements()
    return time.perf_counter() - t0, time.process_time() - c0


def closed_loop(controller: str, hours: float, seed: int) -> SimResult:
    """One ``apc sim`` run of the shipped recipe (its wall and CPU seconds cover the cycles only)."""
    loaded = load(RECIPE)
    return asyncio.run(simulate(loaded, load_scenario("nominal"), seed=seed, hours=hours,
                                controller=cast(ControllerKind, controller)))


def profile(fn: Callable[[], Any], top: int) -> str:
    """cProfile of ``fn()``: the ``top`` entries by own time."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    head = next((line.strip() for line in lines if "function calls" in line), "")
    return "\n".join([head, *lines[start:]]).rstrip()


def load_note() -> str:
    """1-minute load average and the CPUs this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; pinned to CPU(s) {cpus}"


def main() -> None:
    """Run the plant alone, both controllers and a profile; print the figures side by side."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--controllers", nargs="+", default=["baseline", "mpc"], choices=["baseline", "mpc"])
    ap.add_argument("--profile-hours", type=float, default=6.0, help="baseline run profiled (0: none)")
    ap.add_argument("--top", type=int, default=25, help="profile entries printed")
    args = ap.parse_args()
    sim_s = args.hours * 3600.0
    cycles = sim_s / 5.0
    print(f"{args.hours:g} simulated h of {RECIPE.name}, seed {args.seed}, scenario nominal")
    print(f"before: {load_note()}")
    plant_wall, plant_cpu = plant_only(args.hours, args.seed)
    rows = [("plant alone (no runtime)", plant_wall, plant_cpu, "")]
    for ctl in args.controllers:
        result = closed_loop(ctl, args.hours, args.seed)
        cpu = result.cpu_s
        target = TARGET_S_PER_24H[ctl] * args.hours / 24.0
        verdict = f"target {target:.1f} s: {'met' if result.wall_s <= target else 'NOT met'} (wall)"
        rows.append((f"apc sim, {ctl} (runtime + plant)", result.wall_s, cpu, verdict))
        print(f"  {ctl}: runtime share {(result.wall_s - plant_wall) / result.wall_s * 100:.0f} % of the wall "
              f"time, {(result.wall_s - plant_wall) / cycles * 1e6:.0f} us wall per 5 s cycle")
    print(f"after: {load_note()}")
    print(f"{'what':36s} {'wall s':>8s} {'cpu s':>8s} {'x real (wall)':>14s} {'x real (cpu)':>13s}")
    for what, wall, cpu, verdict in rows:
        print(f"{what:36s} {wall:8.2f} {cpu:8.2f} {sim_s / wall:14.0f} {sim_s / cpu:13.0f}  {verdict}")
    if args.profile_hours > 0:
        print(f"\nprofile: {args.profile_hours:g} h under the baseline, top {args.top} by own time")
        print(profile(lambda: closed_loop("baseline", args.profile_hours, args.seed), args.top))


if __name__ == "__main__":
    main()
