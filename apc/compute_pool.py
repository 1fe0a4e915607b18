"""Compute workers for ``apc run``: each unit's estimator and controller in a worker process, with a
hard wall-clock deadline on every answer.

The pool starts ``workers`` processes (``python -m apc.compute_worker``, see that module) and gives
each unit to one of them for good (round robin: a unit's state stays in one worker). The real-time
core talks to them through :class:`PooledCompute`, the :class:`~apc.compute.UnitCompute` of one
unit: a request is one pickle frame on the worker's stdin, its answer one frame on its stdout; the
core awaits the answer until the cycle's deadline and never longer (:class:`~apc.compute.ComputeLate`;
an answer that comes later is dropped and counted).

Failures:

* a worker that exits (segfault, OOM, a ``compute_crash``) is respawned at once; its units are built
  again from their recipes in the new process and each unit's next request raises
  :class:`~apc.compute.ComputeLost` (the unit sheds and re-warms);
* a worker that stops answering its pings for ``hang_s`` (a native hang holding the GIL, a deadlock)
  is killed (SIGKILL) and respawned the same way;
* a unit whose own computation stalls (in its thread) only misses its own deadlines.

Messages (core → worker): ``("build"|"prepare", rid, unit, spec)``, ``("install", unit, rid)``,
``("estimate", rid, unit, t_s, inputs, applied, deadline)``, ``("control", rid, unit, request,
deadline)``, ``("stall", unit, seconds)``, ``("drop", unit)``, ``("ping", n)``, ``("crash",)``,
``("stop",)``. Worker → core: ``("built"|"prepared", rid, unit)``, ``("result", rid, unit, value,
cpu_s, late)``, ``("late", rid, unit)``, ``("error", rid, unit, message, traceback)``, ``("pong", n)``.
Deadlines are ``time.monotonic()`` values (one clock for all processes of the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apc.compute import ComputeError, ComputeLate, ComputeLost, ControlRequest
from apc.compute_worker import FRAME_HEADER, frame
from apc.kinds import kind_of
from apc.recipe.loader import LoadedRecipe
from apc.types import Estimate, Plan, ValidatedInput
from apc.unit_parts import PartsSpec

BUILD_TIMEOUT_S = 600.0
"""Longest a worker may take to build a unit (the first MPC compile of a machine takes a minute)."""
BUILD_HANG_S = 120.0
"""Silence tolerated from a worker while it builds units: building CasADi functions holds the
interpreter lock for seconds at a time, and a start of hundreds of units on a loaded machine keeps a
worker from answering its pings for longer than ``hang_s``. A build that never ends is caught by
:data:`BUILD_TIMEOUT_S`."""


def default_workers() -> int:
    """One worker per core (the core itself is light: it reads, guards, writes and records)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass
class WorkerStats:
    """What one worker did (for the benchmark and the log)."""

    answers: int = 0
    late: int = 0
    cpu_s: float = 0.0
    restarts: int = 0


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    units: dict[str, PartsSpec] = field(default_factory=dict)
    pong: int = 0
    builds: set[int] = field(default_factory=set)
    """Request ids of builds and prepares not yet answered."""
    ping: int = 0
    last_pong_mono: float = 0.0
    stats: WorkerStats = field(default_factory=WorkerStats)


class ComputePool:
    """``workers`` compute processes shared by a runtime's units (see module docstring)."""

    def __init__(self, workers: int, *, log: Any, speed: Callable[[], float] = lambda: 1.0, ping_s: float = 1.0,
                 hang_s: float = 10.0) -> None:
        if workers < 1:
            raise ValueError("a compute pool needs at least one worker")
        self.speed = speed
        """The run's real-time multiple (a stall of plant seconds lasts this much shorter)."""
        self._log = log
        self._ping_s = ping_s
        self._hang_s = hang_s
        self._workers = [_Worker(i) for i in range(workers)]
        self._rid = itertools.count(1)
        self._next = 0
        self._units: dict[str, PooledCompute] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._closing = False

    def deadline_text(self, remaining_s: float) -> str:
        """How long the request had, for a reason shown to operators."""
        return f"the cycle's deadline ({max(remaining_s, 0.0) * 1000:.0f} ms wall left at the request)"

    @property
    def workers(self) -> int:
        """Number of worker processes."""
        return len(self._workers)

    def stats(self) -> list[WorkerStats]:
        """Per-worker counters."""
        return [w.stats for w in self._workers]

    # ------------------------------------------------------------------ life
    async def start(self) -> None:
        """Start every worker process and the ping monitor."""
        for w in self._workers:
            await self._spawn(w)
        self._monitor = asyncio.create_task(self._watch())

    async def close(self) -> None:
        """Stop every worker (politely, then for good)."""
        self._closing = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for w in self._workers:
            proc = w.process
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(Exception):
                self._write(w, ("stop",))
                await asyncio.wait_for(proc.wait(), 2.0)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for w in self._workers:
            if w.reader is not None:
                w.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w.reader
            self._fail_pending(w, ComputeLost("the compute pool is closing"))

    async def _spawn(self, w: _Worker) -> None:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")  # one core per worker: no hidden BLAS threads
        w.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "apc.compute_worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env)
        w.last_pong_mono = time.monotonic()
        w.reader = asyncio.create_task(self._read(w))

    # ------------------------------------------------------------------ units
    def factory(self, unit: str, loaded: LoadedRecipe, controller_kind: str | None, real_time: bool,
                preview_source: object = None) -> PooledCompute:
        """A :data:`~apc.unit_parts.ComputeFactory`: ``unit``'s parts built in a worker from ``loaded``'s file."""
        spec = PartsSpec(unit, str(loaded.path), loaded.sha256, controller_kind, real_time)
        return self.attach(unit, spec, batch=kind_of(loaded.recipe).has_batch)

    def attach(self, unit: str, spec: PartsSpec, *, batch: bool) -> PooledCompute:
        """Give ``unit`` to the next worker and have it built there (see :meth:`ready`)."""
        w = self._workers[self._next % len(self._workers)]
        self._next += 1
        compute = PooledCompute(self, w, unit, spec, batch)
        self._units[unit] = compute
        w.units[unit] = spec
        compute.building = self._request(w, ("build", next(self._rid), unit, spec))
        return compute

    async def ready(self, timeout_s: float = BUILD_TIMEOUT_S) -> None:
        """Wait until every attached unit is built; :class:`ComputeError` names the first that failed."""
        for name, compute in self._units.items():
            if compute.building is None:
                continue
            try:
                await asyncio.wait_for(compute.building, timeout_s)
            except TimeoutError:
                raise ComputeError(f"unit {name}: its estimator and controller were not built in {timeout_s:g} s") \
                    from None
            except (ComputeError, ComputeLost) as exc:
                raise ComputeError(f"unit {name}: {exc}") from None
            compute.building = None

    # ------------------------------------------------------------------ wire
    def _write(self, w: _Worker, message: Any) -> None:
        proc = w.process
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise ComputeLost(f"compute worker {w.index} is not running")
        proc.stdin.write(frame(message))

    def _request(self, w: _Worker, message: tuple[Any, ...]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        w.pending[message[1]] = fut
        if message[0] in ("build", "prepare"):
            w.builds.add(message[1])
        try:
            self._write(w, message)
        except ComputeLost as exc:
            w.pending.pop(message[1], None)
            w.builds.discard(message[1])
            fut.set_exception(exc)
        return fut

    async def _read(self, w: _Worker) -> None:
        proc = w.process
        assert proc is not None and proc.stdout is not None
        stdout = proc.stdout
        try:
            while True:
                head = await stdout.readexactly(FRAME_HEADER)
                body = await stdout.readexactly(int.from_bytes(head, "big"))
                self._answer(w, pickle.loads(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        if not self._closing:
            await self._respawn(w, f"worker exited (status {await proc.wait()})")

    def _answer(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "pong":
            w.pong, w.last_pong_mono = max(w.pong, msg[1]), time.monotonic()
            return
        fut = w.pending.pop(msg[1], None)
        w.builds.discard(msg[1])
        if kind == "result":
            w.stats.answers += 1
            w.stats.cpu_s += msg[4]
        if fut is None or fut.done():  # the core stopped waiting for it: a late answer, never used
            if kind in ("result", "late"):
                w.stats.late += 1
            return
        if kind in ("built", "prepared"):
            fut.set_result(msg[1])
        elif kind == "result":
            fut.set_result(msg[3])
        elif kind == "late":
            fut.set_exception(ComputeLate("the worker started it after its deadline"))
        elif kind == "error":
            fut.set_exception(ComputeError(msg[3]))

    def _fail_pending(self, w: _Worker, exc: Exception) -> None:
        pending, w.pending = w.pending, {}
        w.builds.clear()
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.add_done_callback(_retrieved)  # nobody may be waiting for it any more

    async def _respawn(self, w: _Worker, why: str) -> None:
        """A worker is gone: fail what it owed, start a new one, rebuild its units (they re-warm)."""
        w.stats.restarts += 1
        self._fail_pending(w, ComputeLost(f"compute worker {w.index} {why}"))
        self._log.error("compute_worker_restarted", worker=w.index, why=why, units=sorted(w.units),
                        restarts=w.stats.restarts)
        await self._spawn(w)
        for unit, spec in w.units.items():
            compute = self._units[unit]
            compute.lost = f"compute worker {w.index} {why}"
            compute.building = self._request(w, ("build", next(self._rid), unit, spec))

    async def _watch(self) -> None:
        """Ping every worker; kill one that has not answered for ``hang_s`` (it is then respawned)."""
        while True:
            await asyncio.sleep(self._ping_s)
            now = time.monotonic()
            for w in self._workers:
                proc = w.process
                if proc is None or proc.returncode is not None:
                    continue
                if now - w.last_pong_mono > (max(self._hang_s, BUILD_HANG_S) if w.builds else self._hang_s):
                    self._log.error("compute_worker_hung", worker=w.index, silent_s=round(now - w.last_pong_mono, 1))
                    proc.kill()  # the reader sees the end of its output and respawns it
                    w.last_pong_mono = now
                    continue
                w.ping += 1
                with contextlib.suppress(ComputeLost):
                    self._write(w, ("ping", w.ping))


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (an answer the core had already given up on)."""
    if not fut.cancelled():
        fut.exception()


class PooledCompute:
    """One unit's :class:`~apc.compute.UnitCompute` in a :class:`ComputePool` worker."""

    def __init__(self, pool: ComputePool, worker: _Worker, unit: str, spec: PartsSpec, batch: bool) -> None:
        self._pool = pool
        self._worker = worker
        self.unit = unit
        self.spec = spec
        self._batch = batch
        self.building: asyncio.Future[Any] | None = None
        self.lost = ""
        """Why the unit's parts were lost (a worker restart), reported once by the next request."""

    @property
    def needs_preview(self) -> bool:
        """Controllers of units with a batch read its preview from each control request in a worker."""
        return self._batch

    @property
    def worker_index(self) -> int:
        """The worker this unit computes in."""
        return self._worker.index

    async def _ask(self, message: tuple[Any, ...], deadline_mono: float | None) -> Any:
        if self.lost:
            why, self.lost = self.lost, ""
            raise ComputeLost(why)
        worker = self._worker
        fut = self._pool._request(worker, message)
        if deadline_mono is None:
            return await fut
        remaining = deadline_mono - time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(remaining, 0.0))
        except TimeoutError:
            worker.pending.pop(message[1], None)  # its answer, if it comes, is counted late and dropped
            fut.cancel()
            raise ComputeLate(f"no answer within {self._pool.deadline_text(remaining)}") from None

    async def estimate(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float],
                       deadline_mono: float | None) -> Estimate:
        """The worker's estimator update, until the deadline."""
        est = await self._ask(("estimate", next(self._pool._rid), self.unit, t_s, dict(inputs), dict(applied),
                               deadline_mono), deadline_mono)
        assert isinstance(est, Estimate)
        return est

    async def control(self, request: ControlRequest, deadline_mono: float | None) -> Plan | None:
        """The worker's track and step, until the deadline."""
        plan = await self._ask(("control", next(self._pool._rid), self.unit, request, deadline_mono),
                               deadline_mono)
        assert plan is None or isinstance(plan, Plan)
        return plan

    async def prepare(self, loaded: LoadedRecipe) -> Any:
        """Have the worker build parts for ``loaded`` (kept there until :meth:`install`)."""
        spec = PartsSpec(self.unit, str(loaded.path), loaded.sha256, self.spec.controller_kind, self.spec.real_time)
        rid = await self._ask(("prepare", next(self._pool._rid), self.unit, spec), None)
        return rid, spec

    def install(self, prepared: Any) -> None:
        """Swap in the parts :meth:`prepare` built (in order with this unit's requests)."""
        rid, spec = prepared
        self._pool._write(self._worker, ("install", self.unit, rid))
        self.spec = spec
        self._worker.units[self.unit] = spec

    def prime(self, prior: Mapping[str, tuple[float, float]]) -> None:
        """Hand the estimator a parameter prior (in order with this unit's requests)."""
        self._pool._write(self._worker, ("prime", self.unit, dict(prior)))

    def inject(self, fault: str, duration_s: float = 0.0) -> None:
        """A scenario fault: ``stall`` the unit's thread for ``duration_s`` plant seconds, or ``crash`` its worker."""
        if fault == "stall":
            self._pool._write(self._worker, ("stall", self.unit, duration_s / self._pool.speed()))
        elif fault == "crash":
            self._pool._write(self._worker, ("crash",))
        else:
            raise ValueError(f"unknown compute fault {fault!r} (stall, crash)")
