"""The cell's own alarm: specific energy of each tap interval from measured signals.

Between two taps the rule integrates the measured cell voltage × line current over the cycles whose
both samples were accepted; at a tap (the cumulative tapped metal rises) the interval's specific
energy is that energy over the metal tapped. ``specific_energy_high`` is active from a tap whose
interval exceeds the recipe's ``alarms.specific_energy_max_kWh_kg`` until a tap that does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from apc.cycle_record import CycleRecord
from apc.recipe.schema import Recipe

_MIN_TAP_KG = 0.1
"""A rise of the cumulative tapped metal below this is noise, not a tap."""


def _input_with_unit(recipe: Recipe, unit: str, preferred: str) -> str:
    inputs = recipe.io.inputs
    if preferred in inputs and inputs[preferred].unit == unit:
        return preferred
    return next((n for n, s in inputs.items() if s.unit == unit), "")


class SpecificEnergyRule:
    """``specific_energy_high`` from measured voltage, current and tapped metal (module docstring)."""

    def __init__(self, recipe: Recipe) -> None:
        self.max_kWh_kg = recipe.alarms.specific_energy_max_kWh_kg
        self._voltage = _input_with_unit(recipe, "V", "cell_voltage")
        self._current = _input_with_unit(recipe, "kA", "line_current")
        self._tapped = _input_with_unit(recipe, "kg", "metal_tapped")
        self._energy_kWh = 0.0
        self._last_t_s: float | None = None
        self._last_tapped_kg: float | None = None
        self.last_kWh_kg = math.nan
        """Specific energy of the last complete tap interval (NaN before the first)."""

    def _accepted(self, record: CycleRecord, name: str) -> float | None:
        inp = record.inputs.get(name)
        if inp is None or inp.value is None or inp.verdict != "ok" or not math.isfinite(inp.value):
            return None
        return float(inp.value)

    def evaluate(self, record: CycleRecord) -> Mapping[str, str]:
        if self.max_kWh_kg is None or not (self._voltage and self._current and self._tapped):
            return {}
        volts, kiloamps = self._accepted(record, self._voltage), self._accepted(record, self._current)
        if self._last_t_s is not None and volts is not None and kiloamps is not None:
            self._energy_kWh += volts * kiloamps * max(record.t_s - self._last_t_s, 0.0) / 3600.0
        self._last_t_s = record.t_s
        tapped = self._accepted(record, self._tapped)
        if tapped is not None:
            if self._last_tapped_kg is None or tapped < self._last_tapped_kg:  # first sample or counter reset
                self._last_tapped_kg, self._energy_kWh = tapped, 0.0
            elif tapped - self._last_tapped_kg >= _MIN_TAP_KG:
                self.last_kWh_kg = self._energy_kWh / (tapped - self._last_tapped_kg)
                self._last_tapped_kg, self._energy_kWh = tapped, 0.0
        if self.last_kWh_kg > self.max_kWh_kg:
            return {"specific_energy_high": f"specific energy of the last tap interval {self.last_kWh_kg:.1f} kWh/kg "
                                            f"above {self.max_kWh_kg:g} kWh/kg"}
        return {}
