"""Offline closed-loop simulation in virtual time (``apc sim``).

Deterministic: virtual clock, seeded plant, iteration-capped solvers. Wall
time is measured only for ``--timings`` and benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apc.assembly import ControllerKind, build_sim_unit
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.cycle_record import CycleRecord
from apc.kinds import kind_of
from apc.recipe.loader import LoadedRecipe
from apc.scheduler import ScheduleStats, run_periodic
from apc.types import Mode
from apc.unit import Unit


@dataclass(frozen=True)
class SimResult:
    """KPIs and provenance of one simulated run."""

    kpis: dict[str, Any]
    meta: dict[str, Any]
    wall_s: float
    sim_s: float
    overruns: int
    errors: int
    cpu_s: float = 0.0
    """CPU seconds of this process over the same span as ``wall_s`` (the cycles, not the build)."""

    @property
    def speedup(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.sim_s / self.wall_s if self.wall_s > 0 else float("inf")


async def simulate(
    loaded: LoadedRecipe,
    scenario: Any,
    *,
    seed: int,
    hours: float | None = None,
    controller: ControllerKind | None = None,
    record_path: Path | None = None,
    audit: Any = None,
) -> SimResult:
    """Run one unit against its kind's simulated plant for ``hours`` (default: the kind's, e.g. the
    scenario's for a cell, one whole batch for a furnace), with the kind's simulated operator
    (:meth:`apc.kinds.UnitKind.sim_driver`, e.g. starting a furnace batch once the unit is ON)."""
    kind = kind_of(loaded.recipe)
    run_h = kind.sim_hours(scenario, hours)
    clock = VirtualClock()
    audit = audit if audit is not None else null_logger()
    meta: dict[str, Any] = {
        "recipe": loaded.recipe.name,
        "recipe_sha256": loaded.sha256,
        "scenario": scenario.name,
        "seed": seed,
        "hours": run_h,
        "controller": controller or loaded.recipe.controller.kind,
        "simulator_sha256": kind.simulator_sha256(),
        "baseline_sha256": kind.baseline_sha256(loaded.recipe),
    }
    if loaded.overrides:
        meta["overrides"] = list(loaded.overrides)
    unit, _ = build_sim_unit(
        "sim", loaded, scenario, seed, clock, audit=audit, controller_kind=controller,
        record_path=record_path, header_extra={"simulator_sha256": meta["simulator_sha256"]},
    )
    driver = kind.sim_driver(unit, clock)
    done = asyncio.Event()

    def after_cycle(record: CycleRecord) -> None:
        if driver.after_cycle(record, clock.monotonic()):
            done.set()

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        stats = await run_on(unit, clock, run_h, who="apc sim", where="command line", after_cycle=after_cycle,
                             stop=done)
    finally:
        unit.recorder.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert unit.kpi is not None
    meta.update(driver.meta())
    period = loaded.recipe.period_s
    return SimResult(dict(unit.kpi.result()), meta, wall, stats.cycles * period, stats.overruns, stats.errors,
                     cpu)


async def run_on(unit: Unit, clock: VirtualClock, hours: float, *, who: str, where: str,
                 after_cycle: Callable[[CycleRecord], None] | None = None,
                 stop: asyncio.Event | None = None) -> ScheduleStats:
    """Request ON for ``unit`` and run its cycles for ``hours`` of virtual time from 0 (or until
    ``stop``); ``after_cycle(record)`` is called after each cycle (benchmarks observe the plant there)."""
    period = unit.recipe.period_s
    unit.request_mode(Mode.ON, who=who, where=where, utc=clock.utc())

    async def cycle(k: int, slot: float) -> None:
        record = await unit.cycle(k, slot, clock.monotonic(), clock.utc())
        if after_cycle is not None:
            after_cycle(record)

    return await run_periodic(cycle, clock, period, t0_s=0.0, max_cycles=round(hours * 3600.0 / period),
                              stop=stop)
