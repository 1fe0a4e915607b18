"""Runs of a sweep or a search, on a local process pool or a Ray cluster, behind one protocol.

A run is a :class:`RunJob` (recipe file, overrides, controller, scenario, seed, hours): plain data,
so any backend can ship it to another process or machine, where :func:`run_job` loads the recipe
and simulates. Runs are deterministic per seed, so every backend gives the same KPIs.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

__all__ = ["Backend", "PoolBackend", "Progress", "RayBackend", "RunJob", "RunResult", "make_backend", "run_all",
           "run_job"]


@dataclass(frozen=True)
class RunJob:
    """One closed-loop run: the recipe file with ``overrides`` (``PATH=VALUE``), and what to run it on."""

    recipe_path: str
    overrides: tuple[str, ...]
    controller: str | None
    scenario: str | None
    seed: int
    hours: float | None
    tag: str = ""
    """The caller's name for the recipe variant (a sweep's variant, a search's trial)."""
    record_path: str | None = None


@dataclass(frozen=True)
class RunResult:
    """KPIs of one run, with what it actually ran (the recipe's controller, the scenario's name and hours)."""

    job: RunJob
    controller: str
    scenario: str
    hours: float
    kpis: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def run_job(job: RunJob) -> RunResult:
    """Load the recipe with the job's overrides and simulate it (in whatever process runs this)."""
    from apc.assembly import load
    from apc.kinds import kind_of
    from apc.recipe.overrides import parse_overrides
    from apc.simulate import simulate

    loaded = load(job.recipe_path, parse_overrides(job.overrides))
    scenario = kind_of(loaded.recipe).load_scenario(job.scenario)
    t0 = time.perf_counter()
    res = asyncio.run(simulate(loaded, scenario, seed=job.seed, hours=job.hours,
                               controller=job.controller,  # type: ignore[arg-type]
                               record_path=None if job.record_path is None else Path(job.record_path)))
    return RunResult(job, str(res.meta["controller"]), str(res.meta["scenario"]), float(res.meta["hours"]),
                     dict(res.kpis), time.perf_counter() - t0)


class Backend(Protocol):
    """Runs jobs somewhere and yields each result as it finishes (in any order)."""

    name: str

    def run(self, jobs: Sequence[RunJob]) -> Iterator[RunResult]:
        """Results of ``jobs``, as they complete."""
        ...

    def close(self) -> None:
        """Release the workers."""
        ...


class PoolBackend:
    """A local :class:`~concurrent.futures.ProcessPoolExecutor` of ``workers`` processes (0: in this process)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.name = f"process pool, {self.workers} workers" if self.workers else "this process"
        self._pool = ProcessPoolExecutor(self.workers) if self.workers > 0 else None

    def run(self, jobs: Sequence[RunJob]) -> Iterator[RunResult]:
        if self._pool is None:
            for job in jobs:
                yield run_job(job)
            return
        futures = [self._pool.submit(run_job, j) for j in jobs]
        for fut in as_completed(futures):
            yield fut.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class RayBackend:
    """A Ray cluster: ``address`` as for ``ray.init`` (``ray://HOST:10001``, ``auto``), or ``local`` for a
    Ray started in this process (``num_cpus`` then limits its workers). The cluster's nodes need this
    package installed (or a ``runtime_env`` of the cluster that provides it)."""

    def __init__(self, address: str, num_cpus: int | None = None) -> None:
        import ray

        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            if address == "local":
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        self.name = f"Ray ({address})"
        self._remote = ray.remote(num_cpus=1)(run_job)

    def run(self, jobs: Sequence[RunJob]) -> Iterator[RunResult]:
        pending = [self._remote.remote(j) for j in jobs]
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            for ref in done:
                result: RunResult = self._ray.get(ref)
                yield result

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()


def make_backend(ray_address: str | None, workers: int | None) -> Backend:
    """The Ray backend when ``ray_address`` is given, else the local process pool."""
    if ray_address:
        return RayBackend(ray_address, num_cpus=workers)
    return PoolBackend(workers)


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """A plain-text progress line per finished run, with elapsed time and ETA (on ``out``, stderr by default)."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic, out: TextIO | None = None,
                 width: int = 24) -> None:
        self.total, self.done, self._clock, self._out, self._width = total, 0, clock, out, width
        self._t0 = clock()

    def step(self, what: str) -> str:
        """Count one finished run and print (and return) the progress line."""
        self.done += 1
        elapsed = self._clock() - self._t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else math.inf
        filled = round(self._width * self.done / max(1, self.total))
        line = (f"[{'#' * filled}{'.' * (self._width - filled)}] {self.done}/{self.total} "
                f"elapsed {_duration(elapsed)} ETA {_duration(eta)}  {what}")
        print(line, file=self._out or sys.stderr, flush=True)
        return line


def run_all(backend: Backend, jobs: Sequence[RunJob], progress: Progress | None = None) -> list[RunResult]:
    """Every job's result, in the order of ``jobs`` (whatever order they finished in); a job listed
    twice runs once."""
    unique = list(dict.fromkeys(jobs))
    by_job: dict[RunJob, RunResult] = {}
    for res in backend.run(unique):
        by_job[res.job] = res
        if progress is not None:
            j = res.job
            progress.step(f"{j.tag} {res.controller} {res.scenario} seed {j.seed} {res.hours:g} h "
                          f"({res.wall_s:.0f} s)")
    return [by_job[j] for j in jobs]
