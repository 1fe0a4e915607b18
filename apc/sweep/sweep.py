"""``apc sweep SPEC.yaml``: every run of a spec on a backend, then the table, the files and the report."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from apc.sweep.report import trend_pngs, write_report
from apc.sweep.results import best_and_worst, format_table, result_rows, summarise, write_tables
from apc.sweep.runner import Backend, Progress, RunJob, RunResult, run_all
from apc.sweep.spec import SweepSpec

__all__ = ["SweepOutcome", "run_sweep", "sweep_jobs"]


def sweep_jobs(spec: SweepSpec) -> list[RunJob]:
    """The product variant × controller × scenario × seed × hours, in that order."""
    return [RunJob(str(spec.recipe_path), tuple(f"{o.path}={o.value_text}" for o in spec.variants[v]), c, s, seed, h,
                   tag=v)
            for v, c, s, h, seed in itertools.product(spec.variants, spec.controllers, spec.scenarios, spec.hours,
                                                      spec.seeds)]


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep produced."""

    rows: list[dict[str, Any]]
    table: str
    files: list[Path]
    wall_s: float


def run_sweep(spec: SweepSpec, backend: Backend, out: Path, *, report: bool = True,
              progress: Progress | None = None, clock: Callable[[], float] = time.monotonic) -> SweepOutcome:
    """Run every job of ``spec`` on ``backend``; write ``runs.csv``, ``runs.parquet`` and (with ``report``)
    ``report.html`` in ``out``; the best and worst run are re-run on the same backend with a flight record."""
    t0 = clock()
    jobs = sweep_jobs(spec)
    results = run_all(backend, jobs, progress)
    rows = result_rows(results, spec.kpi_names)
    wall = clock() - t0
    lines = summarise(rows, spec.compare, spec.reference)
    table = format_table(lines, spec.reference)
    files = list(write_tables(rows, out))
    if report:
        files.append(_report(spec, backend, out, results, rows, lines, wall))
    return SweepOutcome(rows, table, files, wall)


def _report(spec: SweepSpec, backend: Backend, out: Path, results: list[RunResult], rows: list[dict[str, Any]],
            lines: list[Any], wall_s: float) -> Path:
    notes = [(f"recipe {spec.recipe_path.name}, {spec.n_runs} runs on {backend.name} in {wall_s:.0f} s; "
              f"reference variant {spec.reference}; best and worst by {spec.rank_by} "
              f"({spec.compare[spec.rank_by]} is better).")]
    of_note: list[tuple[str, dict[str, Any], list[Path]]] = []
    picked = best_and_worst(rows, spec.rank_by, spec.compare[spec.rank_by])
    if picked is not None:
        records = out / "records"
        records.mkdir(parents=True, exist_ok=True)
        names = ("best", "worst")
        again = [replace(results[i].job, record_path=str(records / f"{n}.apcrec")) for n, i in zip(names, picked)]
        reruns = run_all(backend, again)
        for name, i, rerun in zip(names, picked, reruns):
            if rerun.kpis != results[i].kpis:
                notes.append(f"the {name} run re-run for its record gave other KPIs than in the sweep")
            pngs = trend_pngs(Path(str(rerun.job.record_path)), out / f"{name}_trends")
            of_note.append((f"Trends of the {name} run by {spec.rank_by} ({rows[i][spec.rank_by]:.4g})",
                            rows[i], pngs))
    return write_report(out / "report.html", f"Sweep {spec.path.name}", lines, spec.reference, rows,
                        list(spec.compare), of_note, notes)
