"""Trend figures of an electrolysis cell's record (``apc plot``): the controlled variables and the
MVs (see :mod:`apc.trend_layout`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apc.record_table import input_key
from apc.trend_layout import Band, Figure, Panel, Series, TrendLayout, header_mvs, input_with_unit, mv_panel, ylabel


def _sample(header: Mapping[str, Any], name: str | None, label: str) -> tuple[Series, ...]:
    if name is None:
        return ()
    key = input_key(header, name)
    return (Series(key, label, "markers", time_column=key + ".sample_utc"),)


def cv_figure(header: Mapping[str, Any]) -> Figure:
    """Cell voltage (measured, filtered), bath temperature and dissolved oxide (estimate ±2σ, dip
    and lab samples at their sample time, the simulator's truth when recorded, the KPI oxide band)."""
    voltage = input_with_unit(header, "V") or "cell_voltage"
    band = (header.get("kpi") or {}).get("oxide_band_wtpct")
    bands = (Band(f"KPI band {band[0]:g}–{band[1]:g} wt%", float(band[0]), float(band[1])),) if band else ()
    panels = (
        Panel(ylabel("cell voltage", "V"), (
            Series(input_key(header, voltage), f"{voltage} (measured)"),
            Series("estimate.cell_voltage_V", "filtered"),
        )),
        Panel(ylabel("bath temperature", "degC"), (
            Series("estimate.bath_temp_degC", "estimate", sigma_column="estimate.bath_temp_degC_sigma"),
            Series("estimate.bath_temp_degC_soft", "soft sensor", "dashed"),
            Series("truth.bath_temp_degC", "simulator truth", "dashed"),
            *_sample(header, input_with_unit(header, "degC", ("sample",)), "dip sample"),
        )),
        Panel(ylabel("dissolved oxide", "wt%"), (
            Series("estimate.dissolved_oxide_wtpct", "estimate", sigma_column="estimate.dissolved_oxide_std_wtpct"),
            Series("truth.dissolved_oxide_wtpct", "simulator truth", "dashed"),
            *_sample(header, input_with_unit(header, "wt%", ("sample",)), "lab sample"),
        ), bands=bands),
    )
    return Figure("cvs", "Cell: controlled variables", panels)


def mv_figure(header: Mapping[str, Any], columns: frozenset[str]) -> Figure:
    """Every MV: readback, the plan's proposal, and (setpoints) the operator and engineering
    limits; an increment MV's limits bound its moves, not the position read back, so none are drawn."""
    panels = tuple(mv_panel(header, name, with_limits=spec.get("kind", "setpoint") == "setpoint")
                   for name, spec in header_mvs(header, columns).items())
    return Figure("mvs", "Cell: manipulated variables", panels)


def trend_layout(header: Mapping[str, Any], columns: frozenset[str]) -> TrendLayout:
    """The cell's figures: ``cvs.png`` and ``mvs.png``."""
    return TrendLayout((cv_figure(header), mv_figure(header, columns)))
