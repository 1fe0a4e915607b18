"""``apc run``: every unit of a site on one event loop, in real (or accelerated) time.

Each unit runs its own periodic task; an exception in one unit is counted
and logged while the others go on. Ctrl-C (SIGINT) or SIGTERM stops every
unit at its next cycle boundary and flushes the recorders.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from apc.alarms.book import ALARMS_FILE_NAME, AlarmBook
from apc.alarms.monitor import SiteAlarms
from apc.assembly import build_sim_unit, load, record_header
from apc.audit import make_logger
from apc.clock import RealClock
from apc.compute import ComputeError, ComputeLost
from apc.compute_pool import ComputePool, default_workers
from apc.cycle_record import CycleRecord
from apc.groups import give_line_current, share_line_limits, site_groups
from apc.hmi.server import HmiServer, ReloadCallback
from apc.hmi.users import load_users
from apc.journal import DeferredStream, RotatingTextFile, sync_periodically
from apc.kinds import kind_of
from apc.kpi import format_kpis
from apc.metrics import MetricsServer, RuntimeMetrics, link_probe, metrics_endpoint
from apc.performance import SitePerformance
from apc.plant_sim_cli import PlantFile, default_scan_s, virtual_units
from apc.protocols import Reconnecting
from apc.recipe.errors import RecipeError
from apc.recipe.loader import LoadedSite
from apc.recipe.schema import Site, SiteUnit
from apc.recorder import RotatingRecorder
from apc.remote_assembly import build_remote_unit
from apc.scheduler import ScheduleStats, run_periodic, stop_on_signals
from apc.service_notify import ServiceNotifier, feed_watchdog
from apc.speed_governor import govern_speed
from apc.types import Mode
from apc.unit import Unit
from apc.unit_state import STATE_FILE_NAME, UnitStateFile
from plant_io.virtual_plant import VirtualPlant, generate_bindings
from sim.scenario_loader import ComputeFaultFeed


def _status_line(unit: Unit, rec: CycleRecord) -> str:
    """One status line: modes, the kind's own figures, shed or hold."""
    mode = rec.mode
    shed = f" shed: {rec.shed_reason}" if rec.shed_reason else ""
    hold = f" hold: {mode.hold}" if mode.hold and not shed else ""
    middle = kind_of(unit.recipe).status_line(unit.recipe, rec)
    return f"{unit.name:10s} {mode.requested:>7s}/{mode.actual:<7s} {middle}{shed}{hold}"


async def run_site(
    loaded: LoadedSite,
    *,
    speed: float | None = None,
    hours: float | None = None,
    record_dir: Path | None = None,
    out: TextIO | None = None,
    status_every_s: float = 3600.0,
    stop: asyncio.Event | None = None,
    bindings_dir: Path | None = None,
    virtual_plant: PlantFile | None = None,
    compute_workers: int | None = None,
    metrics_port: int | None = None,
) -> int:
    """Run all units of a site until ``hours`` of plant time pass or a stop signal.

    ``virtual_plant``: first start the site's simulated units on real loopback OPC UA / Modbus
    servers (as ``apc plant-sim`` does, same clock) and control them through those protocols.
    ``compute_workers``: processes the units' estimators and controllers run in (default the site's;
    0: in this process, without deadlines' isolation — for debugging only).
    ``metrics_port``: serve the Prometheus metrics on this port (the site's ``metrics`` host, else
    loopback; see ``docs/metrics.md``).
    """
    out = out if out is not None else sys.stdout  # looked up now: sys.stdout may have been redirected
    site = loaded.site
    run_speed = speed if speed is not None else site.speed
    clock = RealClock(run_speed)
    rdir = record_dir or Path(site.record_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    # Until the start is accepted nothing is written: audit events wait here, new records are removed.
    journal = DeferredStream()
    audit = make_logger(journal, site=site.site)
    audit_file: RotatingTextFile | None = None
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    units: list[Unit] = []
    starts: list[Mode] = []
    new_records: list[Path] = []
    hmi: HmiServer | None = None
    metrics: RuntimeMetrics | None = None
    metrics_server: MetricsServer | None = None
    vp: VirtualPlant | None = None
    vp_task: asyncio.Task[None] | None = None
    durability: asyncio.Task[None] | None = None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock.utc()))
    results: list[ScheduleStats] = []
    notifier = ServiceNotifier()
    n_workers = site.compute_workers if compute_workers is None else compute_workers
    pool = ComputePool(default_workers() if n_workers < 0 else n_workers, log=audit, speed=lambda: clock.speed) \
        if n_workers != 0 else None
    alarms = SiteAlarms(AlarmBook(loaded.path.parent / site.state_dir / ALARMS_FILE_NAME, audit=audit))
    performance = SitePerformance()
    try:
        alarms.book.load(clock.utc())  # active and unacknowledged alarms survive a restart
        if pool is not None:
            await pool.start()
        if virtual_plant is not None:
            vunits = virtual_units(loaded, virtual_plant)
            vp = VirtualPlant(vunits, clock, host=virtual_plant.host,
                              scan_s=virtual_plant.scan_s or default_scan_s(vunits),
                              allow_remote_insecure=virtual_plant.allow_remote_insecure)
            await vp.start()
            bindings_dir = rdir / "bindings"
            generate_bindings(vp, bindings_dir)
        for su in site.units:
            record = rdir / f"{su.name}-{stamp}.apcrec"
            existed = record.exists()
            records = _record_factory(site, su.name)
            unit, real_plant = _build_unit(loaded, su, clock, audit, record, bindings_dir,
                                           simulated_bindings=virtual_plant is not None, pool=pool, vp=vp,
                                           record_factory=records)
            if not existed and record.exists():
                new_records.append(record)
            units.append(unit)
            performance.add_unit(su.name, record_header(su.name, unit.loaded, clock, unit.recipe.controller.kind))
            give_line_current(site.groups, {su.name: unit}, clock.utc())  # before restore: never re-enabled
            unit.restore(clock.utc())
            starts.append(_first_mode(unit, Mode(su.requested_mode), real_plant))
        share_line_limits(site.groups, {u.name: u for u in units}, clock.utc())  # every member is built
        if pool is not None:
            await pool.ready()  # every unit's estimator and controller built in its worker
        if site.hmi is not None:
            hmi = _hmi_server(loaded, units, audit, clock, alarms.book, performance)
            await hmi.start()
        endpoint = metrics_endpoint(site.metrics, metrics_port)
        if endpoint is not None:
            metrics = RuntimeMetrics(worker_restarts=None if pool is None else
                                     lambda: [w.restarts for w in pool.stats()],
                                     alarms_active=alarms.book.active_count)
            metrics_server = MetricsServer(metrics, endpoint)
            metrics_server.start()
        # The start is accepted: from here on everything is journalled.
        audit_file = RotatingTextFile(rdir / "audit.jsonl", max_bytes=int(site.rotate_mb * 1e6),
                                      daily=site.rotate_daily, keep_days=site.keep_days, utc=clock.utc)
        journal.commit(audit_file)  # type: ignore[arg-type]
        new_records = []
        if vp is not None:
            vp_task = asyncio.create_task(vp.serve_until(stop))
            print(f"virtual plant: {len(vp.units)} unit(s) on loopback "
                  + ", ".join(f"{u.name} {u.protocol}:{u.port}" for u in vp.units), file=out, flush=True)
        for unit, mode in zip(units, starts):
            unit.start_mode(mode, who="site file", where=str(loaded.path), utc=clock.utc())
        for u in units:  # a plant that is not there yet: the unit starts unlinked and retries each cycle
            if isinstance(u.io, Reconnecting):
                await u.io.reconnect_if_due()
        durability = asyncio.create_task(sync_periodically(
            lambda: [audit_file] + [u.recorder for u in units], site.fsync_interval_s, stop))
        # Models, solvers and sessions built above live as long as the process: keep them out of
        # every later collection, so a full collection scans only what the cycles allocate.
        gc.collect()
        gc.freeze()
        print(f"site {site.site}: {len(units)} unit(s), {clock_speed(clock)}x real time, "
              f"records and audit log in {rdir}", file=out, flush=True)
        if pool is not None:
            print(f"compute: {pool.workers} worker process(es)", file=out, flush=True)
        if metrics_server is not None:
            print(f"metrics: {metrics_server.url}", file=out, flush=True)
        start_s = clock.monotonic()  # plant time went on while the units were built: start from now
        last_cycle = {u.name: time.monotonic() for u in units}
        unit_stats = [ScheduleStats() for _ in units]
        if metrics is not None:
            for u, s in zip(units, unit_stats):
                metrics.add_unit(u.name, u.recipe.unit_kind, s, link_probe(u.io))
        tasks = [asyncio.create_task(_run_unit(u, clock, hours, stop, audit, out, status_every_s, hmi, alarms,
                                               performance,
                                               phase=i / len(units), deadlines=pool is not None,
                                               start_s=start_s, last_cycle=last_cycle, stats=unit_stats[i],
                                               metrics=metrics))
                 for i, u in enumerate(units)]
        periods = {u.name: u.recipe.period_s for u in units}
        watchdog = asyncio.create_task(feed_watchdog(notifier, last_cycle,
                                                     lambda u: max(3 * periods[u] / clock.speed, 5.0), stop))
        governor = asyncio.create_task(govern_speed(clock, lambda: sum(u.compute_late for u in units), unit_stats,
                                                    stop, out, audit))
        notifier.notify("READY=1", f"STATUS=site {site.site}: {len(units)} unit(s) running")
        results = await asyncio.gather(*tasks)
        stop.set()
        await watchdog
        await governor
    finally:  # every resource is released even when another one fails to close
        notifier.notify("STOPPING=1")
        closers: list[Callable[[], Awaitable[None]]] = []
        if durability is not None:
            task_d = durability

            async def synced() -> None:
                stop.set()
                await task_d

            closers.append(synced)
        if hmi is not None:
            closers.append(hmi.stop)
        if metrics_server is not None:
            closers.append(metrics_server.stop)
        for u in units:
            closers += [_async(u.recorder.close), u.io.close]
        if pool is not None:
            closers.append(pool.close)
        if vp is not None:  # after the units' clients have closed their sessions
            if vp_task is not None:
                task = vp_task

                async def plant_served() -> None:
                    stop.set()
                    await task

                closers.append(plant_served)
            closers.append(vp.close)
        for close in closers:
            try:
                await close()
            except Exception as exc:  # logged, the others still close
                audit.error("shutdown_close_failed", utc=clock.utc(), error=f"{type(exc).__name__}: {exc}")
        for path in new_records:  # a refused start leaves no records behind
            path.unlink(missing_ok=True)
        if audit_file is not None:
            audit_file.close()
    errors = [stats.errors + sum(u.stage_faults.values()) for u, stats in zip(units, results)]
    for u, stats, n_errors in zip(units, results, errors):
        print(f"\n{u.name}: {stats.cycles} cycles, {stats.overruns} overruns, {n_errors} errors", file=out)
        if u.stage_faults:
            print("  faults by block: " + ", ".join(f"{k} {v}" for k, v in sorted(u.stage_faults.items())), file=out)
        if u.kpi is not None:
            print(format_kpis(u.kpi.result(), kind_of(u.recipe).kpi_labels), file=out)
    out.flush()
    return 0 if all(n == 0 for n in errors) else 1


def clock_speed(clock: RealClock) -> float:
    """The clock's real-time multiple."""
    return clock.speed


def _record_factory(site: Site, unit: str) -> Callable[[Path, dict[str, Any]], RotatingRecorder]:
    """A unit's flight record in rotated, gzipped segments with the site's retention."""
    def make(path: Path, header: dict[str, Any]) -> RotatingRecorder:
        return RotatingRecorder(path, header, max_bytes=int(site.rotate_mb * 1e6), daily=site.rotate_daily,
                                keep_days=site.keep_days, prefix=unit)
    return make


def _build_unit(loaded: LoadedSite, su: SiteUnit, clock: RealClock, audit: Any, record: Path,
                bindings_dir: Path | None = None, *, simulated_bindings: bool = False, pool: ComputePool | None = None,
                vp: VirtualPlant | None = None,
                record_factory: Callable[[Path, dict[str, Any]], RotatingRecorder] | None = None) -> tuple[Unit, bool]:
    """One unit of the site, and whether its plant outlives this process (a real plant).

    Against its plant over OPC UA / Modbus (a binding file in the site, or
    ``bindings_dir/<unit>.yaml`` for a unit served by ``apc plant-sim``: real plants, whose unit keeps
    a state file across restarts; or by this process's own virtual plant, ``simulated_bindings``),
    else against the in-process simulator (a cell, or a furnace with its batch)."""
    recipe = loaded.recipes[su.name]
    state_dir = loaded.path.parent / loaded.site.state_dir / su.name
    compute = pool.factory if pool is not None else None
    binding_file = (loaded.path.parent / su.plant.bindings if su.plant.bindings
                    else bindings_dir / f"{su.name}.yaml" if bindings_dir is not None else None)
    if binding_file is not None:
        real_plant = su.plant.bindings is not None or not simulated_bindings
        state = UnitStateFile(state_dir / STATE_FILE_NAME, su.name) if real_plant else None
        faults = ComputeFaultFeed(vp.io(su.name).plant.scenario.events) if vp is not None and not real_plant else None
        return build_remote_unit(su.name, recipe, binding_file, clock, audit=audit, record_path=record,
                                 state_dir=state_dir, state=state, compute=compute, compute_faults=faults,
                                 record_factory=record_factory), real_plant
    scenario = kind_of(recipe.recipe).load_scenario(su.plant.scenario)
    unit, _ = build_sim_unit(su.name, recipe, scenario, su.plant.seed, clock, audit=audit, record_path=record,
                             real_time=True, state_dir=state_dir, compute=compute, record_factory=record_factory)
    return unit, False


def reload_callback(units: Mapping[str, Unit], utc: Callable[[], float]) -> ReloadCallback:
    """The HMI's ``reload(unit, who, where)``: re-read the unit's recipe file, have the unit's compute
    build a fresh estimator and controller (off the event loop) and call :meth:`Unit.request_reload`.
    Returns '' when the reload is pending for the next cycle, else why not (audited as
    ``recipe_reload_refused``)."""

    async def reload(unit_name: str, who: str, where: str) -> str:
        unit = units[unit_name]
        try:
            loaded = await asyncio.to_thread(load, unit.loaded.path)
        except (RecipeError, OSError) as exc:
            return unit.refuse_reload(f"recipe refused: {exc}", who, where, utc())
        why = unit.reload_refusal(loaded)  # refuse early, before building solvers
        if why:
            return unit.refuse_reload(why, who, where, utc(), loaded.sha256)
        try:
            parts = await unit.compute.prepare(loaded)  # off the real-time path: a thread or a worker
        except (ValueError, ComputeError, ComputeLost) as exc:  # AssemblyError and the builders' ValueErrors
            return unit.refuse_reload(f"cannot build estimator/controller: {exc}", who, where, utc(), loaded.sha256)
        return unit.request_reload(loaded, parts, who=who, where=where, utc=utc())

    return reload


def _async(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        fn()
    return call


def hmi_batch_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """A batch's status as HMI ``Batch/<key>`` values, each key always of one OPC UA type."""
    def num(key: str) -> float:
        v = status.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan

    return {
        "State": str(status.get("state", "")),
        "Segment": str(status.get("segment", "")),
        "SegmentKind": str(status.get("kind", "")),
        "SegmentText": str(status.get("segment_text", "")),
        "ReferenceDegC": num("reference_degC"),
        "HoldDegC": num("hold_degC"),
        "SoakDoneS": num("soak_done_s"),
        "SoakRequiredS": num("soak_required_s"),
        "Reasons": "; ".join(str(r) for r in status.get("reasons") or ()),
        "Note": str(status.get("note") or ""),
        "BatchId": str(status.get("batch_id") or ""),
        "PersistError": str(status.get("persist_error") or ""),
        **_learning_status(status),
    }


def _learning_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """A learning batch's read-only HMI values (none for a batch that does not learn)."""
    learning = status.get("learning")
    if not isinstance(learning, Mapping):
        return {}
    params = learning.get("last_parameters") or {}
    return {
        "Lot": str(status.get("lot") or ""),
        "CurveName": str(status.get("curve_name") or ""),
        "LastBatchId": str(learning.get("last_batch_id") or ""),
        "LastLot": str(learning.get("last_lot") or ""),
        "LearnedParameters": ", ".join(f"{k}={v[0]:+.4f}±{v[1]:.4f}" for k, v in sorted(params.items())),
        "Learned": bool(learning.get("learned")),
        "Proposal": ", ".join(f"{k}={v:g}" for k, v in sorted((learning.get("proposal") or {}).items())),
        "ProposalApply": str(learning.get("apply") or ""),
        "LastOutcome": ", ".join(f"{k}={'-' if v is None else f'{v:g}'}"
                                 for k, v in sorted((learning.get("last_kpis") or {}).items())),
    }


def _first_mode(unit: Unit, requested: Mode, real_plant: bool) -> Mode:
    """The mode a process start asks for: the site file's, but on a real plant never above STANDBY
    (after a crash or restart an operator re-engages each unit), and a furnace batch restored
    after a restart starts no higher than STANDBY (the DCS keeps holding it until an operator asks)."""
    held = unit.batch is not None and unit.batch.status().get("state") == "held"
    if requested is Mode.ON and (real_plant or held):
        return Mode.STANDBY
    return requested


def _hmi_server(loaded: LoadedSite, units: list[Unit], audit: Any, clock: RealClock, alarms: AlarmBook,
                performance: SitePerformance) -> HmiServer:
    hs = loaded.site.hmi
    assert hs is not None
    base = loaded.path.parent
    return HmiServer({u.name: u for u in units}, load_users(base / hs.users), endpoint_url=hs.endpoint_url,
                     cert_path=base / hs.certificate, key_path=base / hs.private_key,
                     allow_insecure_loopback=hs.allow_insecure_loopback, audit=audit, clock_utc=clock.utc,
                     trusted_clients=None if hs.trusted_clients is None else base / hs.trusted_clients,
                     reload=reload_callback({u.name: u for u in units}, clock.utc), alarms=alarms,
                     performance=performance,
                     groups=site_groups(loaded.site.groups, {u.name: u for u in units}, audit))


async def _run_unit(unit: Unit, clock: RealClock, hours: float | None, stop: asyncio.Event, audit: Any,
                    out: TextIO, status_every_s: float, hmi: HmiServer | None = None,
                    alarms: SiteAlarms | None = None, performance: SitePerformance | None = None, *,
                    phase: float = 0.0,
                    deadlines: bool = True, start_s: float = 0.0, last_cycle: dict[str, float] | None = None,
                    stats: ScheduleStats | None = None, metrics: RuntimeMetrics | None = None) -> ScheduleStats:
    """One unit's cycles on its slots ``t0 + k·period`` for ``hours`` from ``start_s``, ``t0`` the first
    period boundary after ``start_s`` plus ``phase·period`` (units of a site are spread over the period
    so their reads, solves and writes do not land on one instant)."""
    period = unit.recipe.period_s
    every = max(1, round(status_every_s / period))
    t0_s = math.ceil(start_s / period) * period + phase * period
    end_s = None if hours is None else start_s + hours * 3600.0
    log = audit.bind(unit=unit.name)

    async def cycle(k: int, slot: float) -> None:
        if isinstance(unit.io, Reconnecting):
            await unit.io.reconnect_if_due()  # bounded by the endpoint's timeout; never raises
        deadline = time.monotonic() + unit.compute_deadline_s / clock.speed if deadlines else None
        rec = await unit.cycle(k, slot, clock.monotonic(), clock.utc(), deadline)
        if last_cycle is not None:
            last_cycle[unit.name] = time.monotonic()  # what the service watchdog is fed on
        changes = alarms.observe(unit, rec) if alarms is not None else []
        if performance is not None:
            performance.observe(unit.name, rec)
        if hmi is not None:
            await hmi.publish(unit.name, rec)
            await hmi.publish_alarms(changes)  # in the cycle that raised them
            if unit.batch is not None:
                await hmi.update_batch(unit.name, hmi_batch_status(unit.batch.status()))
        if metrics is not None:
            metrics.observe(unit.name, rec)
        if k % every == 0 or rec.shed:
            print(f"{(slot - start_s) / 3600.0:6.2f} h  {_status_line(unit, rec)}", file=out, flush=True)

    def on_error(k: int, exc: BaseException) -> None:
        log.error("cycle_failed", utc=clock.utc(), cycle=k, error=f"{type(exc).__name__}: {exc}")

    return await run_periodic(cycle, clock, period, t0_s=t0_s, end_s=end_s, stop=stop, on_error=on_error, stats=stats)
