"""A sweep's results: one row per run (CSV, Parquet) and the comparison table.

The table has one line per variant × controller × scenario × hours and compared KPI: the median over
seeds, the spread (interquartile range and min–max) and, for each variant other than the reference,
the seeds on which it did better than the reference on the same controller, scenario, hours and seed
(ties and missing values are no wins).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apc.export import require
from apc.sweep.runner import RunResult

__all__ = ["GROUP_KEYS", "SummaryLine", "best_and_worst", "format_table", "result_rows", "summarise",
           "write_tables"]

GROUP_KEYS = ("variant", "controller", "scenario", "hours")


def result_rows(results: Sequence[RunResult], kpi_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per run: variant, controller, scenario, seed, hours, every KPI, wall time."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"variant": r.job.tag, "controller": r.controller, "scenario": r.scenario,
                               "seed": r.job.seed, "hours": r.hours}
        for k in kpi_names:
            v = r.kpis.get(k, math.nan)
            row[k] = math.nan if v is None else v
        row["wall_s"] = r.wall_s
        rows.append(row)
    return rows


def write_tables(rows: Sequence[Mapping[str, Any]], out: Path) -> tuple[Path, Path]:
    """``runs.csv`` and ``runs.parquet`` in ``out`` (pandas and pyarrow: the ``export`` extra)."""
    pd = require("pandas", "export")
    require("pyarrow", "export")
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(list(rows))
    csv, parquet = out / "runs.csv", out / "runs.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return csv, parquet


@dataclass(frozen=True)
class SummaryLine:
    """One KPI of one group of runs over its seeds."""

    group: tuple[Any, ...]
    kpi: str
    n: int
    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    wins: int | None
    """Seeds better than the reference (``None`` for the reference itself)."""
    paired: int
    """Seeds compared with the reference (both values finite)."""


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "lower" else a > b


def summarise(rows: Sequence[Mapping[str, Any]], compare: Mapping[str, str], reference: str) -> list[SummaryLine]:
    """Median, spread and wins against ``reference`` of each ``compare`` KPI, per group (first-seen order)."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(row)
    lines = []
    for group, members in groups.items():
        ref_key = (reference, *group[1:])
        ref = {r["seed"]: r for r in groups.get(ref_key, [])}
        for kpi, direction in compare.items():
            values = np.array([float(r[kpi]) for r in members], dtype=float)
            finite = values[np.isfinite(values)]
            if finite.size:
                q1, med, q3 = (float(v) for v in np.percentile(finite, [25, 50, 75]))
                lo, hi = float(finite.min()), float(finite.max())
            else:
                q1 = med = q3 = lo = hi = math.nan
            wins: int | None = None
            paired = 0
            if group[0] != reference:
                wins = 0
                for r in members:
                    other = ref.get(r["seed"])
                    if other is None:
                        continue
                    a, b = float(r[kpi]), float(other[kpi])
                    if math.isfinite(a) and math.isfinite(b):
                        paired += 1
                        wins += _better(a, b, direction)
            lines.append(SummaryLine(group, kpi, int(finite.size), med, q1, q3, lo, hi, wins, paired))
    return lines


def _num(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def table_rows(lines: Sequence[SummaryLine], reference: str) -> list[list[str]]:
    """The comparison table as text cells, header first."""
    head = ["variant", "controller", "scenario", "h", "KPI", "median", "IQR", "min–max", f"wins vs {reference}"]
    out = [head]
    for ln in lines:
        v, c, s, h = ln.group
        wins = "reference" if ln.wins is None else f"{ln.wins}/{ln.paired}"
        out.append([str(v), str(c), str(s), f"{float(h):g}", ln.kpi, _num(ln.median),
                    f"{_num(ln.q1)}–{_num(ln.q3)}", f"{_num(ln.lo)}–{_num(ln.hi)}", wins])
    return out


def format_table(lines: Sequence[SummaryLine], reference: str) -> str:
    """The comparison table, aligned for a terminal."""
    cells = table_rows(lines, reference)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def best_and_worst(rows: Sequence[Mapping[str, Any]], kpi: str, direction: str) -> tuple[int, int] | None:
    """Indexes of the best and worst run by ``kpi`` (``None`` when no run has a finite value)."""
    scored = [(float(r[kpi]), i) for i, r in enumerate(rows) if math.isfinite(float(r[kpi]))]
    if not scored:
        return None
    scored.sort()
    low, high = scored[0][1], scored[-1][1]
    return (low, high) if direction == "lower" else (high, low)
