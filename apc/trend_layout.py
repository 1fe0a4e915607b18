"""What a trend figure shows, as data: a unit kind describes its figures with these (the kind's
``trend_layout``), :mod:`apc.trends` draws them from a record's table (:mod:`apc.record_table`)
without knowing the kind. Every series names a table column."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SeriesStyle = Literal["line", "step", "dashed", "markers"]


@dataclass(frozen=True)
class Series:
    """One column drawn against run time."""

    column: str
    label: str
    style: SeriesStyle = "line"
    sigma_column: str | None = None
    """A column of this series' standard deviation: drawn as a ±2σ band."""
    time_column: str | None = None
    """Markers only: a column of POSIX times at which each value holds (lab and dip samples are
    drawn at their sample time, once per distinct time)."""
    where_column: str | None = None
    """Markers only: a boolean column; a value is drawn only in rows where it is true."""


@dataclass(frozen=True)
class Band:
    """A shaded band: between two columns (e.g. the curve's tolerance) or two constants."""

    label: str
    lower: str | float
    upper: str | float


@dataclass(frozen=True)
class Level:
    """A horizontal line at a constant (a limit)."""

    label: str
    value: float
    style: Literal["limit", "hard_limit"] = "limit"


@dataclass(frozen=True)
class Panel:
    """One axes: its y-axis label with the unit, its series, bands and levels."""

    ylabel: str
    series: tuple[Series, ...]
    bands: tuple[Band, ...] = ()
    levels: tuple[Level, ...] = ()
    log_y: bool = False


@dataclass(frozen=True)
class Figure:
    """One PNG file: ``<file_stem>.png``, its title and panels sharing the time axis."""

    file_stem: str
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class TrendLayout:
    """Every figure of one record."""

    figures: tuple[Figure, ...]


# -- building blocks the kinds' layouts share ----------------------------------------------------


def header_inputs(header: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """The record header's inputs (name → unit, role, model output); empty for older records."""
    return (header.get("io") or {}).get("inputs") or {}


def header_mvs(header: Mapping[str, Any], columns: frozenset[str]) -> Mapping[str, Mapping[str, Any]]:
    """The record header's MVs (name → unit, kind, model input, limits); for older records, the MVs
    with a ``readback.`` column (no unit or limits known)."""
    mvs: Mapping[str, Mapping[str, Any]] | None = (header.get("io") or {}).get("mvs")
    if mvs:
        return mvs
    return {c[len("readback."):]: {} for c in sorted(columns) if c.startswith("readback.")}


def input_with_unit(header: Mapping[str, Any], unit: str, roles: tuple[str, ...] | None = None) -> str | None:
    """The first input of the header in ``unit`` (and one of ``roles``), else None."""
    for name, spec in header_inputs(header).items():
        if spec.get("unit") == unit and (roles is None or spec.get("role") in roles):
            return name
    return None


def ylabel(quantity: str, unit: str | None) -> str:
    """An axis label: ``quantity (unit)`` (``(–)`` for a dimensionless one, the quantity alone
    when the unit is not known)."""
    if not unit:
        return quantity
    return f"{quantity} (–)" if unit == "1" else f"{quantity} ({unit})"


def mv_panel(header: Mapping[str, Any], name: str, *, with_limits: bool = True) -> Panel:
    """One MV: its readback (an increment MV: the position) and the plan's proposal, with its
    operator and engineering limits at the start of the record (``with_limits``)."""
    from apc.record_table import mv_key

    spec = (header.get("io") or {}).get("mvs", {}).get(name) or {}
    unit = spec.get("unit")
    position = spec.get("kind") == "increment"  # its readback is the position the moves add up to
    quantity = name.replace("_", " ") + (" position" if position else "")
    series = [Series(mv_key(header, "readback", name), f"{name} {'position ' if position else ''}readback", "step"),
              Series(mv_key(header, "plan", name), f"{name} {'move ' if position else ''}proposed (plan)", "dashed")]
    levels: list[Level] = []
    if with_limits:
        for key, label, style in (("operator", "operator limit", "limit"),
                                  ("engineering", "engineering limit", "hard_limit")):
            lim = spec.get(key)
            if lim:
                levels += [Level(f"{label} {lim[0]:g}–{lim[1]:g}", float(lim[0]), style),  # type: ignore[arg-type]
                           Level("", float(lim[1]), style)]  # type: ignore[arg-type]
    return Panel(ylabel(quantity, unit), tuple(series), levels=tuple(levels))
