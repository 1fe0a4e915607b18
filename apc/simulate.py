"""Offline closed-loop simulation in virtual time (``apc sim``).

Deterministic: virtual clock, seeded plant, iteration-capped solvers. Wall
time is measured only for ``--timings`` and benchmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
import asyncio
from typing import Any, Callable

from apc.assembly import ControllerKind, build_sim_unit
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.furnace_assembly import build_furnace_sim_unit
from apc.provenance import baseline_sha256, furnace_simulator_sha256, simulator_sha256
from apc.recipe.loader import LoadedRecipe
from apc.scheduler import ScheduleStats, run_periodic
from apc.types import Mode
from apc.unit import Unit
from apc.curve_preview import BatchState
from sim.furnace_plant import FurnaceScenario
from sim.scenario import Scenario


@dataclass(frozen=True)
class SimResult:
    """KPIs and provenance of one simulated run."""

    kpis: dict[str, Any]
    meta: dict[str, Any]
    wall_s: float
    sim_s: float
    overruns: int
    errors: int

    @property
    def speedup(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.sim_s / self.wall_s if self.wall_s > 0 else float("inf")


FURNACE_MAX_HOURS = 72.0
"""A furnace run without ``hours`` ends with its batch, or after this long at the latest."""


async def simulate(
    loaded: LoadedRecipe,
    scenario: Scenario | FurnaceScenario,
    *,
    seed: int,
    hours: float | None = None,
    controller: ControllerKind | None = None,
    record_path: Path | None = None,
    audit: Any = None,
) -> SimResult:
    """Run one unit against the simulated plant for ``hours`` (default: the scenario's; a furnace:
    one whole batch)."""
    if isinstance(scenario, FurnaceScenario):
        return await _simulate_furnace(loaded, scenario, seed=seed, hours=hours, controller=controller,
                                       record_path=record_path, audit=audit)
    hours = scenario.hours if hours is None else hours
    clock = VirtualClock()
    audit = audit if audit is not None else null_logger()
    kind = controller or loaded.recipe.controller.kind
    meta = {
        "recipe": loaded.recipe.name,
        "recipe_sha256": loaded.sha256,
        "scenario": scenario.name,
        "seed": seed,
        "hours": hours,
        "controller": kind,
        "simulator_sha256": simulator_sha256(),
        "baseline_sha256": baseline_sha256((loaded.recipe.controller.baseline, loaded.recipe.estimator.filtered)),
    }
    unit, _ = build_sim_unit(
        "sim", loaded, scenario, seed, clock, audit=audit, controller_kind=controller,
        record_path=record_path, header_extra={"simulator_sha256": meta["simulator_sha256"]},
    )
    t0 = time.perf_counter()
    try:
        stats = await run_on(unit, clock, hours, who="apc sim", where="command line")
    finally:
        unit.recorder.close()
    wall = time.perf_counter() - t0
    assert unit.kpi is not None
    n = int(round(hours * 3600.0 / loaded.recipe.period_s))
    return SimResult(unit.kpi.result(), meta, wall, n * loaded.recipe.period_s, stats.overruns, stats.errors)


async def run_on(unit: Unit, clock: VirtualClock, hours: float, *, who: str, where: str,
                 after_cycle: Callable[[], None] | None = None) -> ScheduleStats:
    """Request ON for ``unit`` and run its cycles for ``hours`` of virtual time from 0;
    ``after_cycle`` is called after each cycle (benchmarks observe the plant there)."""
    period = unit.recipe.period_s
    unit.request_mode(Mode.ON, who=who, where=where, utc=clock.utc())

    async def cycle(k: int, slot: float) -> None:
        await unit.cycle(k, slot, clock.monotonic(), clock.utc())
        if after_cycle is not None:
            after_cycle()

    return await run_periodic(cycle, clock, period, t0_s=0.0, max_cycles=int(round(hours * 3600.0 / period)))


async def _simulate_furnace(loaded: LoadedRecipe, scenario: FurnaceScenario, *, seed: int, hours: float | None,
                            controller: ControllerKind | None, record_path: Path | None, audit: Any) -> SimResult:
    """One furnace batch: request ON, start the batch from the estimate once the unit is ON, run
    until it is complete or aborted (or ``hours`` / :data:`FURNACE_MAX_HOURS` pass)."""
    clock = VirtualClock()
    audit = audit if audit is not None else null_logger()
    recipe = loaded.recipe
    kind = controller or recipe.controller.kind
    meta = {"recipe": recipe.name, "recipe_sha256": loaded.sha256, "scenario": scenario.name, "seed": seed,
            "hours": hours, "controller": kind, "simulator_sha256": furnace_simulator_sha256(),
            "baseline_sha256": baseline_sha256((recipe.controller.pid, recipe.batch))}
    unit, _, batch = build_furnace_sim_unit(
        "sim", loaded, scenario, seed, clock, audit=audit, controller_kind=controller, record_path=record_path,
        header_extra={"simulator_sha256": meta["simulator_sha256"]})
    assert recipe.curve is not None
    controlled = batch.curve.controlled
    period = recipe.period_s
    done = asyncio.Event()
    started: list[bool] = []

    async def cycle(k: int, slot: float) -> None:
        rec = await unit.cycle(k, slot, clock.monotonic(), clock.utc())
        state = batch.status()["state"]
        if state == BatchState.IDLE.value and rec["mode"]["actual"] == Mode.ON.value and not started:
            # The operator starts the batch once the unit is ON (both controllers alike).
            values = dict(zip(rec["estimate"]["names"], rec["estimate"]["x"]))
            values.update(rec["estimate"]["extras"])
            started.append(batch.start(clock.monotonic(), "apc sim", values.get(controlled)).accepted)
        elif state in (BatchState.COMPLETE.value, BatchState.ABORTED.value):
            done.set()

    t0 = time.perf_counter()
    unit.request_mode(Mode.ON, who="apc sim", where="command line", utc=clock.utc())
    limit_h = FURNACE_MAX_HOURS if hours is None else hours
    try:
        stats = await run_periodic(cycle, clock, period, t0_s=0.0, max_cycles=int(round(limit_h * 3600.0 / period)),
                                   stop=done)
    finally:
        unit.recorder.close()
    wall = time.perf_counter() - t0
    assert unit.kpi is not None
    meta["hours"] = stats.cycles * period / 3600.0
    meta["batch"] = batch.status()["state"]
    return SimResult(unit.kpi.result(), meta, wall, stats.cycles * period, stats.overruns, stats.errors)
