"""A sweep's HTML report: one static file with the comparison table and its plots embedded as PNG.

Plots: each compared KPI's distribution over seeds per variant × controller × scenario × hours, and
the trends (the unit kind's ``apc plot`` figures, :mod:`apc.trends`) of the best and the worst run
by the spec's ``rank_by`` KPI, from flight records of those two runs.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from apc.export import require
from apc.sweep.results import GROUP_KEYS, SummaryLine, table_rows

__all__ = ["kpi_figure_png", "trend_pngs", "write_report"]


_STYLE = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:nth-child(-n+5){text-align:left}"
          "img{max-width:100%;display:block;margin:1em 0}</style></head><body>")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def kpi_figure_png(rows: Sequence[Mapping[str, Any]], kpi: str) -> bytes:
    """Box plot, with each seed as a point, of ``kpi`` per group of runs."""
    require("matplotlib", "plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups: dict[str, list[float]] = {}
    for r in rows:
        label = " / ".join(f"{r[k]:g}" if isinstance(r[k], float) else str(r[k]) for k in GROUP_KEYS)
        groups.setdefault(label, []).append(float(r[kpi]))
    fig = Figure(figsize=(max(5.0, 1.6 * len(groups) + 2.0), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    labels = list(groups)
    data = [[v for v in groups[g] if math.isfinite(v)] for g in labels]
    ax.boxplot([d if d else [math.nan] for d in data], showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, ha="right", fontsize=8)
    for i, d in enumerate(data, start=1):
        ax.plot([i] * len(d), d, "o", ms=4, mfc="none", color="#1f77b4")
    ax.set_title(f"{kpi} over seeds (variant / controller / scenario / h)", fontsize=10)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def trend_pngs(record: Path, out: Path) -> list[Path]:
    """The record's trend figures as PNG files in ``out`` (what ``apc plot`` draws)."""
    from apc.trends import plot_record

    return plot_record(record, out)


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def write_report(path: Path, title: str, lines: Sequence[SummaryLine], reference: str,
                 rows: Sequence[Mapping[str, Any]], compare: Sequence[str],
                 runs_of_note: Sequence[tuple[str, Mapping[str, Any], Sequence[Path]]],
                 notes: Sequence[str] = ()) -> Path:
    """Write the report: ``runs_of_note`` is (heading, the run's row, its trend PNG files)."""
    cells = table_rows(lines, reference)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        _STYLE,
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(n)}</p>" for n in notes),
        "<h2>Comparison</h2>", f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        "<h2>KPI distributions</h2>",
        *(_img(kpi_figure_png(rows, k), k) for k in compare),
    ]
    for heading, row, pngs in runs_of_note:
        what = ", ".join(f"{k} {row[k]}" for k in ("variant", "controller", "scenario", "seed", "hours"))
        parts.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(what)}</p>")
        parts.extend(_img(p.read_bytes(), p.stem) for p in pngs)
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
