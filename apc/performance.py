"""Live plant KPIs of a running site: each unit's :class:`apc.plant_kpi.PlantKpis` fed from its
cycles (the same figures ``apc report`` computes from the record), and their roll-up over a group."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from apc.cycle_record import CycleRecord
from apc.kinds import get_kind
from apc.plant_kpi import PlantFigures, PlantKpis, current_figures


@dataclass(frozen=True)
class GroupFigures:
    """A group's plant KPIs: time-weighted over its members."""

    service_factor: float
    """Members' ON time over their available time (NaN before any available time)."""
    on_h: float
    available_h: float
    sheds: int


class SitePerformance:
    """Plant KPIs per unit since the process started."""

    def __init__(self) -> None:
        self._kpis: dict[str, PlantKpis] = {}

    def add_unit(self, name: str, header: dict[str, Any]) -> None:
        """Start a unit's accumulator from its flight-record header (``apc.assembly.record_header``)."""
        self._kpis[name] = PlantKpis(header, get_kind(str(header["unit_kind"])).plant_kpis(header))

    def observe(self, unit: str, record: CycleRecord) -> None:
        """One cycle of ``unit`` (a no-op for a unit not added)."""
        kpis = self._kpis.get(unit)
        if kpis is not None:
            kpis.add(record)

    def figures(self, unit: str) -> PlantFigures | None:
        """The unit's figures now."""
        kpis = self._kpis.get(unit)
        return None if kpis is None else current_figures(kpis)

    def group(self, members: Iterable[str]) -> GroupFigures:
        """The members' figures rolled up."""
        on_h = available_h = 0.0
        sheds = 0
        for m in members:
            kpis = self._kpis.get(m)
            if kpis is None:
                continue
            r = kpis.result()
            on_h += float(r.get("on_h", 0.0))
            available_h += float(r.get("available_h", 0.0))
            sheds += int(r.get("sheds", 0))
        return GroupFigures(on_h / available_h if available_h > 0.0 else math.nan, on_h, available_h, sheds)
