"""Cell MPC against the frozen industrial baseline, closed loop on the simulator, KPIs side by side.

Runs the shipped recipe ``recipes/nd_cell_6ka.yaml`` once with
``--controller baseline`` and once with ``--controller mpc`` per seed, on the
nominal scenario, for ``--days`` (default 7) each, on seeds 31–40 (the
baseline was tuned on seeds 1–10, the filter on 1–6, the MPC looked at 11–13;
neither controller has seen these). Same plant, same seed, same noise for
both. Prints the KPIs (``apc.kpi`` keys) side by side, plus the lowest true
metal temperature, the MPC solve time per solve (median, p99) and the
targets of the MPC issue checked per seed:

* zero anode effects;
* bath temperature standard deviation at most half the baseline's;
* oxide in band at least 98 % of the time;
* energy per kg of metal at least 3 % lower;
* metal produced not lower;
* metal never below its melting point.

The simulator and baseline are the frozen ones: their hashes are printed.

    python bench/mpc_vs_baseline.py [--days 7] [--seeds 31-40] [--workers 2] [--scenario nominal]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apc.assembly import build_sim_unit, load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.kinds import kind_of
from apc.simulate import run_on
from sim.models import get_model
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"
CONTROLLERS = ("baseline", "mpc")
SHOWN = ("anode_effects", "bath_temp_mean_degC", "bath_temp_std_degC", "oxide_in_band_pct",
         "current_efficiency_pct", "energy_kWh_per_kg", "metal_kg", "guard_clamps", "sheds")


@dataclass(frozen=True)
class Run:
    """KPIs and extra figures of one closed-loop run."""

    seed: int
    controller: str
    kpis: dict[str, Any]
    metal_temp_min_degC: float
    solve_median_s: float
    solve_p99_s: float
    solves: int
    wall_s: float


async def _run(seed: int, controller: str, hours: float, scenario_name: str) -> Run:
    loaded = load(RECIPE)
    clock = VirtualClock()
    unit, io = build_sim_unit("bench", loaded, load_scenario(scenario_name), seed, clock, audit=null_logger(),
                              controller_kind=controller)  # type: ignore[arg-type]
    lowest = [math.inf]

    def observe(record: object) -> None:
        lowest[0] = min(lowest[0], float(io.truth()["metal_temp_degC"]))

    t0 = time.perf_counter()
    await run_on(unit, clock, hours, who="bench", where="mpc_vs_baseline", after_cycle=observe)
    wall = time.perf_counter() - t0
    stats = getattr(unit.controller, "solve_time_stats", lambda: {"n": 0, "median_s": math.nan,
                                                                   "p99_s": math.nan})()
    assert unit.kpi is not None
    return Run(seed, controller, unit.kpi.result(), lowest[0], stats["median_s"], stats["p99_s"], int(stats["n"]),
               wall)


def _job(args: tuple[int, str, float, str]) -> Run:
    return asyncio.run(_run(*args))


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def _checks(b: Run, m: Run, melting_degC: float) -> dict[str, bool]:
    kb, km = b.kpis, m.kpis
    return {
        "AE=0": km["anode_effects"] == 0,
        "σT<=½": km["bath_temp_std_degC"] <= 0.5 * kb["bath_temp_std_degC"],
        "ox>=98%": km["oxide_in_band_pct"] >= 98.0,
        "kWh/kg-3%": km["energy_kWh_per_kg"] <= 0.97 * kb["energy_kWh_per_kg"],
        "metal>=": km["metal_kg"] >= kb["metal_kg"],
        "Tm>melt": m.metal_temp_min_degC > melting_degC,
    }


def main() -> None:
    """Run both controllers on every seed and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seeds", default="31-40")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenario", default="nominal")
    args = ap.parse_args()
    seeds = _seeds(args.seeds)
    loaded = load(RECIPE)
    model = get_model(loaded.recipe.model.name)
    melting = float(model.parameter_vector(loaded.recipe.model.parameters)[
        model.parameter_names.index("metal_melting_degC")])
    print(f"MPC vs baseline: {RECIPE.name} (sha256 {loaded.sha256[:12]}), scenario {args.scenario}, "
          f"seeds {seeds}, {args.days:g} days each\n"
          f"simulator_sha256 {kind_of(loaded.recipe).simulator_sha256()}\n"
          f"baseline_sha256  {kind_of(loaded.recipe).baseline_sha256(loaded.recipe)}",
          flush=True)
    jobs = [(s, c, args.days * 24.0, args.scenario) for s in seeds for c in CONTROLLERS]
    runs: dict[tuple[int, str], Run] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for fut in as_completed([pool.submit(_job, j) for j in jobs]):
            r = fut.result()
            runs[(r.seed, r.controller)] = r
            print(f"done seed {r.seed} {r.controller:8s} in {r.wall_s:5.0f} s: "
                  + ", ".join(f"{k} {float(r.kpis[k]):.3f}" for k in SHOWN)
                  + f", metal min {r.metal_temp_min_degC:.1f} degC", flush=True)
    head = " ".join(f"{k[:14]:>14s}" for k in SHOWN)
    print(f"\n{'seed':>4s} {'ctrl':8s} {head} {'Tmetal min':>10s} {'solve med/p99 ms':>17s}")
    all_checks: dict[str, list[bool]] = {}
    for s in seeds:
        for c in CONTROLLERS:
            r = runs[(s, c)]
            vals = " ".join(f"{float(r.kpis[k]):14.3f}" for k in SHOWN)
            solve = (f"{r.solve_median_s * 1e3:7.1f}/{r.solve_p99_s * 1e3:7.1f}" if r.solves else f"{'-':>17s}")
            print(f"{s:4d} {c:8s} {vals} {r.metal_temp_min_degC:10.1f} {solve:>17s}")
        checks = _checks(runs[(s, "baseline")], runs[(s, "mpc")], melting)
        for name, ok in checks.items():
            all_checks.setdefault(name, []).append(ok)
        print("     targets: " + ", ".join(f"{n} {'ok' if ok else 'MISSED'}" for n, ok in checks.items()))
    print("\nper target, seeds met: " + ", ".join(f"{n} {sum(v)}/{len(v)}" for n, v in all_checks.items()))
    for key in ("bath_temp_std_degC", "oxide_in_band_pct", "energy_kWh_per_kg", "metal_kg"):
        b = [float(runs[(s, "baseline")].kpis[key]) for s in seeds]
        m = [float(runs[(s, "mpc")].kpis[key]) for s in seeds]
        print(f"mean {key:22s} baseline {sum(b) / len(b):10.3f}   mpc {sum(m) / len(m):10.3f}   "
              f"change {100.0 * (sum(m) - sum(b)) / abs(sum(b)):+6.1f} %")
    solves = [runs[(s, "mpc")] for s in seeds]
    print(f"MPC solve time over seeds: worst median {max(r.solve_median_s for r in solves) * 1e3:.1f} ms, "
          f"worst p99 {max(r.solve_p99_s for r in solves) * 1e3:.1f} ms (target p99 < 50 ms); "
          f"wall per 7-day MPC run {sum(r.wall_s for r in solves) / len(solves):.0f} s")


if __name__ == "__main__":
    main()
