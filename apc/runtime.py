"""``apc run``: every unit of a site on one event loop, in real (or accelerated) time.

Each unit runs its own periodic task; an exception in one unit is counted
and logged while the others go on. Ctrl-C (SIGINT) or SIGTERM stops every
unit at its next cycle boundary and flushes the recorders.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from apc.assembly import build_sim_unit
from apc.audit import make_logger
from apc.clock import RealClock
from apc.kpi import format_kpis
from apc.recipe.loader import LoadedSite
from apc.scheduler import ScheduleStats, run_periodic
from apc.types import Mode
from apc.unit import Unit
from sim.scenario import load_scenario


def _status_line(unit: Unit, rec: dict[str, Any]) -> str:
    truth = rec.get("truth") or {}
    est = rec["estimate"]
    values = dict(zip(est["names"], est["x"]))
    mode = rec["mode"]
    shed = f" shed: {rec['shed_reason']}" if rec["shed_reason"] else ""
    hold = f" hold: {mode['hold']}" if mode["hold"] and not shed else ""
    return (
        f"{unit.name:10s} {mode['requested']:>7s}/{mode['actual']:<7s} "
        f"U={values.get('cell_voltage_V', float('nan')):6.3f} V  "
        f"feed={rec['readback'].get('oxide_feed', float('nan')):5.2f} kg/h  "
        f"T_bath(sim)={truth.get('bath_temp_degC', float('nan')):7.1f} degC  "
        f"oxide(sim)={truth.get('dissolved_oxide_wtpct', float('nan')):4.2f} wt%{shed}{hold}"
    )


async def run_site(
    loaded: LoadedSite,
    *,
    speed: float | None = None,
    hours: float | None = None,
    record_dir: Path | None = None,
    out: TextIO | None = None,
    status_every_s: float = 3600.0,
    stop: asyncio.Event | None = None,
) -> int:
    """Run all units of a site until ``hours`` of plant time pass or a stop signal."""
    out = out if out is not None else sys.stdout  # looked up now: sys.stdout may have been redirected
    site = loaded.site
    clock = RealClock(speed if speed is not None else site.speed)
    rdir = record_dir or Path(site.record_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    audit_file = open(rdir / "audit.jsonl", "a", encoding="utf-8")
    audit = make_logger(audit_file, site=site.site)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not on the main thread / platform
            pass
    units: list[Unit] = []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock.utc()))
    try:
        for su in site.units:
            scenario = load_scenario(su.plant.scenario)
            unit, _ = build_sim_unit(
                su.name, loaded.recipes[su.name], scenario, su.plant.seed, clock, audit=audit,
                record_path=rdir / f"{su.name}-{stamp}.apcrec", real_time=True,
            )
            unit.request_mode(Mode(su.requested_mode), who="site file", where=str(loaded.path), utc=clock.utc())
            units.append(unit)
        # Models, solvers and sessions built above live as long as the process: keep them out of
        # every later collection, so a full collection scans only what the cycles allocate.
        gc.collect()
        gc.freeze()
        print(f"site {site.site}: {len(units)} unit(s), {clock_speed(clock)}x real time, "
              f"records and audit log in {rdir}", file=out, flush=True)
        tasks = [asyncio.create_task(_run_unit(u, clock, hours, stop, audit, out, status_every_s)) for u in units]
        results: list[ScheduleStats] = await asyncio.gather(*tasks)
    finally:
        for u in units:
            u.recorder.close()
        audit_file.close()
    for u, stats in zip(units, results):
        print(f"\n{u.name}: {stats.cycles} cycles, {stats.overruns} overruns, {stats.errors} errors", file=out)
        if u.kpi is not None:
            print(format_kpis(u.kpi.result()), file=out)
    out.flush()
    return 0 if all(s.errors == 0 for s in results) else 1


def clock_speed(clock: RealClock) -> float:
    """The clock's real-time multiple."""
    return clock._speed  # noqa: SLF001 - read-only view for the banner


async def _run_unit(unit: Unit, clock: RealClock, hours: float | None, stop: asyncio.Event, audit: Any,
                    out: TextIO, status_every_s: float) -> ScheduleStats:
    period = unit.recipe.period_s
    every = max(1, int(round(status_every_s / period)))
    end_s = None if hours is None else hours * 3600.0
    log = audit.bind(unit=unit.name)

    async def cycle(k: int, slot: float) -> None:
        rec = await unit.cycle(k, slot, clock.monotonic(), clock.utc())
        if k % every == 0 or rec["shed"]:
            print(f"{slot / 3600.0:6.2f} h  {_status_line(unit, rec)}", file=out, flush=True)

    def on_error(k: int, exc: BaseException) -> None:
        log.error("cycle_failed", utc=clock.utc(), cycle=k, error=f"{type(exc).__name__}: {exc}")

    return await run_periodic(cycle, clock, period, t0_s=0.0, end_s=end_s, stop=stop, on_error=on_error)
