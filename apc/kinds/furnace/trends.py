"""Trend figure of a furnace's record (``apc plot``), the same for every furnace kind: the curve's
controlled temperature against its target and band, the power and other MVs, and the chamber
pressure against its limit (see :mod:`apc.trend_layout`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from apc.record_table import input_key
from apc.trend_layout import (
    Band,
    Figure,
    Level,
    Panel,
    Series,
    TrendLayout,
    header_inputs,
    header_mvs,
    mv_panel,
    ylabel,
)


def temperature_panel(header: Mapping[str, Any], columns: frozenset[str]) -> Panel:
    """Curve target and band, the controlled temperature estimated (±2σ) and simulated, and every
    temperature input as measured."""
    controlled = str((header.get("furnace_kpi") or {}).get("controlled") or "")
    sigma = next((c for c in (f"estimate.{controlled}_sigma", f"estimate.{controlled}_std") if c in columns), None)
    measured = tuple(Series(input_key(header, name), f"{name} (measured)")
                     for name, spec in header_inputs(header).items() if spec.get("unit") == "degC")
    series = (Series("batch.target_degC", "curve target", "step"),
              Series(f"estimate.{controlled}", f"{controlled} estimate", sigma_column=sigma),
              *measured,
              Series(f"truth.{controlled}", f"{controlled} simulator truth", "dashed"))
    return Panel(ylabel("temperature", "degC"), series,
                 bands=(Band("curve band", "batch.lower_degC", "batch.upper_degC"),))


def pressure_panel(header: Mapping[str, Any]) -> Panel | None:
    """Every pressure input measured, its model output estimated (±2σ), and the process limit; None
    for a furnace without a pressure input."""
    series: list[Series] = []
    for name, spec in header_inputs(header).items():
        if spec.get("unit") != "Pa":
            continue
        series.append(Series(input_key(header, name), f"{name} (measured)"))
        out = spec.get("model_output")
        if out:
            series.append(Series(f"estimate.{out}", f"{out} estimate", sigma_column=f"estimate.{out}_sigma"))
    if not series:
        return None
    limit = (header.get("furnace_kpi") or {}).get("pressure_limit_Pa")
    levels = (Level(f"limit {limit:g} Pa", float(limit), "hard_limit"),) if limit is not None else ()
    return Panel(ylabel("chamber pressure", "Pa"), tuple(series), levels=levels)


def batch_figure(header: Mapping[str, Any], columns: frozenset[str]) -> Figure:
    """Temperature, MVs (a power MV with the curve's power stage) and pressure, one panel each."""
    panels = [temperature_panel(header, columns)]
    for name, spec in header_mvs(header, columns).items():
        panel = mv_panel(header, name, with_limits=spec.get("kind", "setpoint") == "setpoint")
        if str(spec.get("model_input") or "").endswith("_kW"):
            panel = replace(panel, series=(*panel.series, Series("batch.stage_power_kW", "curve power stage", "step")))
        panels.append(panel)
    pressure = pressure_panel(header)
    if pressure is not None:
        panels.append(pressure)
    return Figure("batch", f"Furnace batch ({header.get('unit_kind', 'furnace')})", tuple(panels))


def trend_layout(header: Mapping[str, Any], columns: frozenset[str]) -> TrendLayout:
    """The furnace's figure: ``batch.png``."""
    return TrendLayout((batch_figure(header, columns),))
