"""Solve time of the cell MPC against a plain do-mpc set-up of the same problem.

1. Records one closed-loop sequence (estimates, readbacks, enable flags) from
   an MPC run of the recipe (default: the shipped recipe with --controller mpc, 24 h, seed 11), or
   takes an existing flight record (``--record``).
2. Replays that sequence, single-threaded (pinned to one CPU, BLAS/OpenMP
   threads 1), through a fresh ``CellMpc`` and through ``DoMpcPlain``
   (``bench/dompc_plain.py``: same model, horizon, step, objective and soft
   constraints in do-mpc's API with its default collocation and IPOPT,
   warm-started as do-mpc does; its docstring lists every difference).
   Both see the same inputs at the same cycles; each plans from its own
   last solution.
3. Prints the wall time per solve (median, p99, max) of both, and the ratios.
   "solve" is the whole ``Controller.step`` of a cycle that solved (NLP,
   bounds, guesses, read-out); the pure NLP-call times are printed too.
4. ``--closed-loop``: also runs the recipe closed loop with the do-mpc
   set-up as the controller (same plant, seed and hours) and prints the KPIs
   of both side by side (the do-mpc loop takes a while).

Target (issue): CellMpc p99 < 50 ms and >= 5x faster than the plain set-up,
each closed-loop KPI within 1 % of the plain set-up's.

    python bench/mpc_speed.py [--hours 24] [--seed 11] [--record FILE] [--closed-loop]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # single-threaded, before numpy/casadi load BLAS

import argparse
import asyncio
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from apc.assembly import build_sim_unit, load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.kinds.electrolysis_cell.kpi import KPI_KEYS
from apc.recipe.loader import LoadedRecipe
from apc.recorder import iter_record
from apc.simulate import run_on, simulate
from apc.types import Estimate, Mode, SolverStatus
from controllers.cell_mpc import CellMpc
from sim.models import get_model
from sim.scenario import load_scenario

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dompc_plain import DoMpcPlain

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"


@dataclasses.dataclass(frozen=True)
class Cycle:
    """What the unit handed its controller in one recorded cycle."""

    t_s: float
    estimate: Estimate
    applied: dict[str, float]
    enabled: dict[str, bool]
    disturbances: dict[str, float]
    called: bool
    """False: the unit did not call ``step`` (estimate or readback unusable); ``track`` only."""


def read_cycles(path: Path, loaded: LoadedRecipe) -> list[Cycle]:
    """The controller's inputs per cycle from a flight record (cycles not OFF)."""
    dist_inputs = [n for n, s in loaded.recipe.io.inputs.items() if s.role == "disturbance"]
    out = []
    for e in iter_record(path):
        if e.kind != "cycle":
            continue
        c = e.data
        if c["mode"]["actual"] == Mode.OFF.value:
            continue
        on = c["mode"]["actual"] == Mode.ON.value
        est = c["estimate"]
        estimate = Estimate(tuple(est["names"]), tuple("" for _ in est["names"]), tuple(est["x"]), None,
                            est["health"], est["extras"])
        dist = {n: c["inputs"][n][0] for n in dist_inputs
                if n in c["inputs"] and c["inputs"][n][5] == "ok" and c["inputs"][n][0] is not None}
        plan = c["plan"]
        called = plan is not None and plan["reason"] != "estimate or readback not usable"
        out.append(Cycle(c["t_s"], estimate, dict(c["readback"]),
                         {n: bool(v) and on for n, v in c["mode"]["mvs"].items()}, dist, called))
    return out


def make_controller(cls: type[CellMpc], loaded: LoadedRecipe) -> CellMpc:
    """``cls`` built from the recipe as ``apc.assembly`` builds the cell MPC."""
    r = loaded.recipe
    assert r.controller.mpc is not None, "the recipe has no controller.mpc section"
    model = get_model(r.model.name)
    return cls(model, model.parameter_vector(r.model.parameters), r.controller.mpc, r.io.mvs, r.limits,
               r.period_s, r.controller.period_multiple, r.controller.hold_cycles)


def replay(controller: CellMpc, cycles: Sequence[Cycle]) -> tuple[list[float], list[int], int]:
    """Feed ``cycles`` to ``controller``; wall seconds and iterations of each step that solved,
    and the number of solves that did not succeed."""
    step_s, iters, failed = [], [], 0
    for c in cycles:
        tracked = {n: v for n, v in c.applied.items() if not c.enabled.get(n, False)}
        if tracked:
            controller.track(tracked)
        if not c.called:
            continue
        t0 = time.perf_counter()
        plan = controller.step(c.t_s, c.estimate, c.applied, c.enabled, c.disturbances)
        wall = time.perf_counter() - t0
        if plan.status is not SolverStatus.NOT_RUN:
            step_s.append(wall)
            iters.append(plan.iterations)
            failed += plan.status is not SolverStatus.OK
    return step_s, iters, failed


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p99 and max in milliseconds."""
    a = np.asarray(seconds) * 1e3
    return {"median": float(np.median(a)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


async def closed_loop(loaded: LoadedRecipe, factory: Callable[[], CellMpc], seed: int,
                      hours: float) -> dict[str, Any]:
    """KPIs of one simulated run with the controller from ``factory`` (as ``apc.simulate``)."""
    clock = VirtualClock()
    unit, _ = build_sim_unit("bench", loaded, load_scenario("nominal"), seed, clock, audit=null_logger(),
                             controller_kind="mpc")
    unit.controller = factory()
    await run_on(unit, clock, hours, who="bench", where="mpc_speed")
    assert unit.kpi is not None
    return unit.kpi.result()


def pin_one_cpu() -> str:
    """Pin this process to one CPU (the last allowed one); returns a note for the report."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return f"pinned to CPU {cpus[-1]}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def print_timings(name: str, step_s: Sequence[float], solver_s: Sequence[float], iters: Sequence[int],
                  failed: int) -> None:
    """One table row per controller."""
    s, n = stats_ms(step_s), stats_ms(solver_s)
    it = np.asarray(iters)
    print(f"{name:16s} {len(step_s):6d} {s['median']:9.2f} {s['p99']:9.2f} {s['max']:9.2f} "
          f"{n['median']:9.2f} {n['p99']:9.2f} {np.median(it):6.0f} {np.percentile(it, 99):6.0f} {failed:6d}")


def print_kpis(ours: dict[str, Any], plain: dict[str, Any]) -> None:
    """KPIs side by side with the relative difference."""
    print(f"\n{'KPI':28s} {'CellMpc':>14s} {'do-mpc plain':>14s} {'diff %':>8s}")
    for key in KPI_KEYS:
        a, b = ours.get(key), plain.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            rel = (a - b) / abs(b) * 100.0 if b else (0.0 if a == b else math.inf)
            print(f"{key:28s} {a:14.6g} {b:14.6g} {rel:8.3f}")
        else:
            print(f"{key:28s} {a!s:>14s} {b!s:>14s}")


def main() -> None:
    """Record (or read) the sequence, time both controllers on it, print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", type=Path, default=RECIPE)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--record", type=Path, help="flight record of an MPC run to replay (else one is made)")
    ap.add_argument("--cycles", type=int, help="replay only the first N cycles (quick look)")
    ap.add_argument("--closed-loop", action="store_true", help="also run the do-mpc set-up closed loop")
    args = ap.parse_args()
    loaded = load(args.recipe)
    ours_kpis: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        record = args.record
        if record is None:
            record = Path(tmp) / "mpc.jsonl"
            print(f"recording {args.hours:g} h of {loaded.recipe.name}, seed {args.seed} ...", flush=True)
            res = asyncio.run(simulate(loaded, load_scenario("nominal"), seed=args.seed, hours=args.hours,
                                       controller="mpc", record_path=record))
            ours_kpis = res.kpis
        cycles = read_cycles(record, loaded)[:args.cycles]
    note = pin_one_cpu()
    ours, plain = make_controller(CellMpc, loaded), make_controller(DoMpcPlain, loaded)
    assert isinstance(plain, DoMpcPlain)
    print(f"{len(cycles)} cycles; {note}; CellMpc NLP compiled: {ours.compiled}", flush=True)
    ours_step, ours_it, ours_fail = replay(ours, cycles)
    plain_step, plain_it, plain_fail = replay(plain, cycles)
    print(f"\n{'controller':16s} {'solves':>6s} {'median ms':>9s} {'p99 ms':>9s} {'max ms':>9s} "
          f"{'nlp med':>9s} {'nlp p99':>9s} {'it med':>6s} {'it p99':>6s} {'failed':>6s}")
    print_timings("CellMpc", ours_step, ours.solve_times, ours_it, ours_fail)
    print_timings("do-mpc plain", plain_step, plain.solve_times, plain_it, plain_fail)
    s_ours, s_plain = stats_ms(ours_step), stats_ms(plain_step)
    ratio_med, ratio_p99 = s_plain["median"] / s_ours["median"], s_plain["p99"] / s_ours["p99"]
    print(f"\nratio do-mpc/CellMpc: median {ratio_med:.1f}x, p99 {ratio_p99:.1f}x")
    print(f"target p99 < 50 ms: {'met' if s_ours['p99'] < 50 else 'NOT met'}; "
          f">= 5x faster (median, p99): {'met' if ratio_med >= 5 else 'NOT met'}, "
          f"{'met' if ratio_p99 >= 5 else 'NOT met'}")
    if args.closed_loop:
        print(f"\nclosed loop {args.hours:g} h, seed {args.seed} ...", flush=True)
        if ours_kpis is None:
            ours_kpis = asyncio.run(closed_loop(loaded, lambda: make_controller(CellMpc, loaded), args.seed,
                                                args.hours))
        plain_kpis = asyncio.run(closed_loop(loaded, lambda: make_controller(DoMpcPlain, loaded), args.seed,
                                             args.hours))
        print_kpis(ours_kpis, plain_kpis)


if __name__ == "__main__":
    main()
