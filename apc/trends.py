"""``apc plot``: a flight record's trends as PNG files (matplotlib, the ``plot`` extra; Agg canvas,
never a window). The record's unit kind says what each figure shows (``trend_layout``, see
:mod:`apc.trend_layout`); this module draws any layout the same way and shades, on every panel, the
cycles not in ON (STANDBY, OFF) and marks the cycles that shed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from apc.export import require
from apc.kinds import UnitKind, get_kind, kind_names
from apc.record_table import RecordTable, read_table
from apc.trend_layout import Band, Figure, Panel, Series

_MODE_SHADES = {"STANDBY": ("#d9d9d9", "STANDBY"), "OFF": ("#a6a6a6", "OFF")}
"""Fill and legend label of the modes shaded (ON is not)."""
_OTHER_MODE = ("#c6dbef", "other mode")


def _floats(table: RecordTable, name: str) -> np.ndarray | None:
    col = table.get(name)
    if col is None:
        return None
    return np.array([np.nan if v is None else float(v) for v in col.values], dtype=float)


def _runs(labels: Sequence[Any]) -> list[tuple[int, int, Any]]:
    """(first, last + 1, label) of each run of equal labels."""
    runs: list[tuple[int, int, Any]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((start, i, labels[start]))
            start = i
    return runs


def _shade_modes(ax: Any, table: RecordTable, x_h: np.ndarray, legend: bool) -> None:
    mode = table.get("mode_actual")
    if mode is not None and len(x_h):
        seen: set[str] = set()
        step = float(np.nanmedian(np.diff(x_h))) if len(x_h) > 1 else 0.0
        for a, b, label in _runs(mode.values):
            if label == "ON":
                continue
            color, name = _MODE_SHADES.get(str(label), _OTHER_MODE)
            ax.axvspan(x_h[a], x_h[b - 1] + step, color=color, alpha=0.5, lw=0,
                       label=name if legend and name not in seen else None)
            seen.add(name)
    shed = table.get("shed")
    if shed is not None:
        first = True
        for i, v in enumerate(shed.values):
            if v:
                ax.axvline(x_h[i], color="#d62728", lw=1.2, ls="-",
                           label="shed" if legend and first else None)
                first = False


def _band_values(table: RecordTable, bound: str | float, n: int) -> np.ndarray | None:
    if isinstance(bound, str):
        return _floats(table, bound)
    return np.full(n, float(bound))


def _draw_series(ax: Any, table: RecordTable, s: Series, x_h: np.ndarray, t_s: np.ndarray,
                 utc: np.ndarray | None) -> bool:
    y = _floats(table, s.column)
    if y is None or not np.isfinite(y).any():
        return False
    if s.style == "markers":
        keep = np.isfinite(y)
        where = table.get(s.where_column) if s.where_column else None
        if where is not None:
            keep &= np.array([bool(v) for v in where.values])
        xs = x_h
        times = _floats(table, s.time_column) if s.time_column else None
        if times is not None and utc is not None:
            keep &= np.isfinite(times)
            _, first = np.unique(np.where(keep, times, np.nan), return_index=True)
            once = np.zeros_like(keep)
            once[first] = True
            keep &= once
            xs = (t_s + (times - utc)) / 3600.0
        if not keep.any():
            return False
        ax.plot(xs[keep], y[keep], ls="none", marker="o", ms=5, mfc="none", mew=1.4, label=s.label)
        return True
    kwargs: dict[str, Any] = {"lw": 1.3, "label": s.label}
    if s.style == "dashed":
        kwargs.update(ls="--", lw=1.1)
    line = (ax.step(x_h, y, where="post", **kwargs) if s.style == "step" else ax.plot(x_h, y, **kwargs))[0]
    if s.sigma_column:
        sig = _floats(table, s.sigma_column)
        if sig is not None and np.isfinite(sig).any():
            ax.fill_between(x_h, y - 2 * sig, y + 2 * sig, color=line.get_color(), alpha=0.2, lw=0,
                            label=f"{s.label} ±2σ")
    return True


def _draw_band(ax: Any, table: RecordTable, band: Band, x_h: np.ndarray) -> bool:
    lo, hi = _band_values(table, band.lower, len(x_h)), _band_values(table, band.upper, len(x_h))
    if lo is None or hi is None or not (np.isfinite(lo) & np.isfinite(hi)).any():
        return False
    ax.fill_between(x_h, lo, hi, color="#2ca02c", alpha=0.12, lw=0, label=band.label, step="post")
    return True


def _draw_panel(ax: Any, table: RecordTable, panel: Panel, x_h: np.ndarray, t_s: np.ndarray,
                utc: np.ndarray | None, first: bool) -> bool:
    drawn = False
    for band in panel.bands:
        drawn |= _draw_band(ax, table, band, x_h)
    for s in panel.series:
        drawn |= _draw_series(ax, table, s, x_h, t_s, utc)
    for level in panel.levels:
        color = "#d62728" if level.style == "hard_limit" else "#ff7f0e"
        ax.axhline(level.value, color=color, lw=1.0, ls="--" if level.style == "hard_limit" else ":",
                   label=level.label or None)
    _shade_modes(ax, table, x_h, legend=first)
    if panel.log_y:
        ax.set_yscale("log")
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return drawn


def _title(table: RecordTable, figure: Figure) -> str:
    h = table.header
    controller = h.get("controller")
    controller = controller if isinstance(controller, str) else (controller or {}).get("kind", "")
    return (f"{figure.title} — unit {h.get('unit', '?')}, recipe {h.get('recipe', '?')}, "
            f"controller {controller or '?'}")


def draw(table: RecordTable, figure: Figure, out: Path) -> Path:
    """Draw ``figure`` of ``table`` to ``out / <file_stem>.png``."""
    require("matplotlib", "plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    t_s = _floats(table, "t_s")
    t_s = np.zeros(0) if t_s is None else t_s
    x_h, utc = t_s / 3600.0, _floats(table, "utc")
    n = max(1, len(figure.panels))
    fig = MplFigure(figsize=(12.0, 2.4 * n + 1.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, panel) in enumerate(zip(axes, figure.panels)):
        if not _draw_panel(ax, table, panel, x_h, t_s, utc, first=i == 0):
            ax.text(0.5, 0.5, "not in this record", transform=ax.transAxes, ha="center", va="center",
                    color="#7f7f7f")
    axes[-1].set_xlabel("run time (h)")
    fig.suptitle(_title(table, figure), fontsize=11)
    path = out / f"{figure.file_stem}.png"
    fig.savefig(path, dpi=100)
    return path


def record_kind(header: dict[str, Any] | Any) -> UnitKind:
    """The unit kind a record header names; a header from before headers named their kind: the
    kind whose KPI configuration it holds."""
    named = header.get("unit_kind")
    if named:
        return get_kind(str(named))
    for name in kind_names():
        if get_kind(name).kpi_from_header(header) is not None:
            return get_kind(name)
    raise KeyError("the record's header names no unit kind")


def plot_record(record: Path, out: Path) -> list[Path]:
    """Every figure the record's unit kind lays out, as PNG files in ``out`` (created)."""
    require("matplotlib", "plot")
    table = read_table(record)
    kind = record_kind(table.header)
    layout = kind.trend_layout(table.header, frozenset(table.names()))
    out.mkdir(parents=True, exist_ok=True)
    return [draw(table, figure, out) for figure in layout.figures]
