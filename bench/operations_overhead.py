"""What operations add to a unit's cycle in ``apc run`` — Prometheus metrics (apc.metrics), the alarm
rules and book (apc.alarms), the live plant KPIs (apc.performance) — beside what a cycle already costs.

Runs the shipped recipe ``recipes/nd_cell_6ka.yaml`` closed loop (baseline controller, virtual
time, seed 31) and keeps its cycle records, timing the cycles. Then, over those same records, times
each per-cycle addition and, as the baseline beside them, ``record.to_json()`` (what the flight
recorder already does every cycle), and one scrape of the registry (``generate_latest``, done in the
HTTP server's thread, not on the cycle). The figures go to stdout and
``bench/results_operations_overhead.txt``.

    python bench/operations_overhead.py [--hours 6] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from prometheus_client import generate_latest

from apc.alarms.book import AlarmBook
from apc.alarms.monitor import SiteAlarms
from apc.assembly import build_sim_unit, load, record_header
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.cycle_record import CycleRecord
from apc.kinds import kind_of
from apc.metrics import RuntimeMetrics
from apc.performance import SitePerformance
from apc.scheduler import ScheduleStats
from apc.simulate import run_on
from apc.unit import Unit

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "nd_cell_6ka.yaml"
OUT = Path(__file__).with_name("results_operations_overhead.txt")
SEED = 31


def records(hours: float) -> tuple[list[CycleRecord], float, Unit]:
    """The cycle records of a closed-loop run, its wall time per cycle (s) and the unit."""
    loaded = load(RECIPE)
    clock = VirtualClock()
    scenario = kind_of(loaded.recipe).load_scenario(None)
    unit, _ = build_sim_unit("c1", loaded, scenario, SEED, clock, audit=null_logger(), real_time=True)
    recs: list[CycleRecord] = []
    t0 = time.perf_counter()
    asyncio.run(run_on(unit, clock, hours, who="bench", where="metrics_overhead", after_cycle=recs.append))
    return recs, (time.perf_counter() - t0) / len(recs), unit


def per_call_s(fn: object, recs: list[CycleRecord], repeat: int) -> float:
    """Best of ``repeat`` passes over ``recs``: wall seconds per call of ``fn(record)``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for r in recs:
            fn(r)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t0) / len(recs))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    recs, cycle_s, unit = records(args.hours)
    metrics = RuntimeMetrics()
    metrics.add_unit("c1", "electrolysis_cell", ScheduleStats())
    observe_s = per_call_s(lambda r: metrics.observe("c1", r), recs, args.repeat)
    to_json_s = per_call_s(lambda r: r.to_json(), recs, args.repeat)

    site_alarms = SiteAlarms(AlarmBook(None, audit=null_logger()))
    alarms_s = per_call_s(lambda r: site_alarms.observe(unit, r), recs, args.repeat)
    raised = len(site_alarms.book.alarms())
    header = record_header("c1", unit.loaded, VirtualClock(), "baseline")
    perf = SitePerformance()
    perf.add_unit("c1", header)
    perf_s = per_call_s(lambda r: perf.observe("c1", r), recs, args.repeat)
    many = RuntimeMetrics()
    for i in range(100):
        many.add_unit(f"c{i:03d}", "electrolysis_cell", ScheduleStats())
        for r in recs[:50]:
            many.observe(f"c{i:03d}", r)
    scrape_s = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        body = generate_latest(many.registry)
        scrape_s = min(scrape_s, time.perf_counter() - t0)
    lines = [
        (f"operations overhead: {RECIPE.name}, baseline controller, seed {SEED}, {len(recs)} cycles "
         f"({args.hours:g} h virtual time), best of {args.repeat} passes"),
        f"  unit cycle with its in-process simulated plant, for scale:            {cycle_s * 1e6:9.1f} us/cycle",
        f"  record.to_json() (the flight recorder, every cycle; baseline):       {to_json_s * 1e6:9.1f} us/cycle",
        f"  RuntimeMetrics.observe (apc run with metrics, every cycle):          {observe_s * 1e6:9.1f} us/cycle",
        (f"  SiteAlarms.observe (alarm rules and book, every cycle):              {alarms_s * 1e6:9.1f} us/cycle"
         f"  ({raised} conditions retained over the run)"),
        f"  SitePerformance.observe (live plant KPIs, every cycle):              {perf_s * 1e6:9.1f} us/cycle",
        (f"  one scrape of 100 units (HTTP server thread, not on the cycle):    {scrape_s * 1e3:9.1f} ms, "
         f"{len(body)} bytes"),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    OUT.write_text(text)


if __name__ == "__main__":
    main()
