"""Plant KPIs of an electrolysis cell from its measured signals (no truth): current efficiency from
tapped metal against Faraday's law, and specific energy from measured voltage × current over the
tapped metal (``docs/performance_kpis.md``).

The record's inputs are found by unit, as the cell filter finds them (``estimators.cell_ekf.bindings_for``):
voltage the measurement in V, current the measurement in kA, tapped metal the input in kg, a cumulative
counter of the metal tapped (the plant's ``cell.metal_tapped_kg``). A rise of the counter is a tap; a
fall is a counter reset, not a tap.

Tap-to-tap window: metal made between two taps is what the later tap takes out (the heel stays), so
the window runs from the cycle the first tap is seen to the cycle the last one is seen; cycles before
the first tap and after the last do not count::

    current_efficiency_pct = 100 · Σ tapped (taps 2…n) / (ND_KG_PER_KAH · Σ I·Δt)
    energy_kWh_per_kg      = Σ U·I·Δt / Σ tapped (taps 2…n)

with I in kA, U in V, Δt the period in h, sums over the window; a cycle without a valid voltage or
current uses the last valid one (none before it: counts nothing).

Anode effects as the estimate flags them from the measured voltage (``anode_effect_detected``,
confirmed onset, ``docs/anode_effects.md``): ``anode_effects`` (onsets), ``anode_effect_minutes`` and
``pfc_kg_co2e_est``, the PFC emissions of those minutes by the recipe model's emission factors::

    pfc_kg_co2e_est = Σ_AE f_CF4 · I · M_CF4 / (4 F) · (GWP_CF4 + r_C2F6 · GWP_C2F6) · Δt

with ``f_CF4`` the share of the current making CF4 during an anode effect and ``r_C2F6`` the C2F6/CF4
mass ratio (the model's ``pfc_current_fraction`` and ``c2f6_to_cf4_mass_ratio``, assumptions of
``sim/models/nd_cell.py``; a plant replaces them with its measured emission factors in the recipe's
``model.parameters``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from apc.cycle_record import CycleRecord
from apc.kinds.electrolysis_cell.kpi import ND_KG_PER_KAH
from apc.kinds.electrolysis_cell.recipe import CellRecipe
from apc.plant_kpi import PLANT_KPI_HEADER_KEY, CvBand, header_period_s, input_value
from estimators.filtered import AE_DETECTED
from sim.models import get_model
from sim.models.nd_cell import F_C_PER_MOL, GWP_C2F6, GWP_CF4, M_CF4_KG_PER_MOL

__all__ = ["TAP_MIN_KG", "CellPlantKpis", "cell_cv_bands", "cell_plant_config"]

TAP_MIN_KG = 1e-6
"""A rise of the tapped-metal counter by more than this is a tap."""


def _input_with(io: Mapping[str, Any], unit: str, roles: tuple[str, ...] | None = None) -> str | None:
    for name, spec in (io.get("inputs") or {}).items():
        if spec.get("unit") == unit and (roles is None or spec.get("role") in roles):
            return str(name)
    return None


def cell_cv_bands(recipe: CellRecipe) -> tuple[CvBand, ...]:
    """The cell's CV bands: the MPC section's oxide and bath-temperature bands (none without it),
    measured by the lab and dip sample inputs, estimated by the cell filter."""
    mpc = recipe.controller.mpc
    if mpc is None:
        return ()
    io_ = recipe.io
    ekf = recipe.estimator.kind == "ekf"
    return (
        CvBand("oxide", *mpc.oxide_band_wtpct, "wt%", io_.input_with_unit("wt%", ("sample",)),
               "dissolved_oxide_wtpct" if ekf else None, "dissolved_oxide_std_wtpct" if ekf else None,
               "controller.mpc.oxide_band_wtpct"),
        CvBand("bath_temp", *mpc.bath_temp_band_degC, "degC", io_.input_with_unit("degC", ("sample",)),
               "bath_temp_degC" if ekf else None, "bath_temp_std_degC" if ekf else None,
               "controller.mpc.bath_temp_band_degC"),
    )


def _pfc_factor_kg_co2e_per_kAh(recipe: CellRecipe) -> float:
    """CO2-equivalent PFC mass per kAh passed in anode effect, from the recipe's model parameters."""
    model = get_model(recipe.model.name)
    names = model.parameter_names
    if "pfc_current_fraction" not in names or "c2f6_to_cf4_mass_ratio" not in names:
        return math.nan
    p = dict(zip(names, (float(v) for v in model.parameter_vector(recipe.model.parameters))))
    cf4_kg_per_kAh = p["pfc_current_fraction"] * 1000.0 * 3600.0 * M_CF4_KG_PER_MOL / (4.0 * F_C_PER_MOL)
    return cf4_kg_per_kAh * (GWP_CF4 + p["c2f6_to_cf4_mass_ratio"] * GWP_C2F6)


def cell_plant_config(recipe: CellRecipe) -> dict[str, Any]:
    """The header's ``plant_kpi`` object of a cell."""
    return {"cv_bands": [b.to_mapping() for b in cell_cv_bands(recipe)],
            "pfc_kg_co2e_per_kAh": _pfc_factor_kg_co2e_per_kAh(recipe),
            "no_bands_reason": "" if recipe.controller.mpc is not None else
            "the recipe has no controller.mpc section (its oxide and bath-temperature bands)"}


class CellPlantKpis:
    """Tap-to-tap current efficiency and specific energy (see the module docstring).

    Keys: ``taps``, ``metal_tapped_kg`` (every tap in the record), ``current_efficiency_pct``,
    ``energy_kWh_per_kg`` and ``tap_window_h`` (length of the tap-to-tap window)."""

    def __init__(self, header: Mapping[str, Any]) -> None:
        self.period_s = header_period_s(header)
        io = header.get("io") or {}
        self.voltage = _input_with(io, "V", ("measurement",))
        self.current = _input_with(io, "kA", ("measurement",))
        self.tapped = _input_with(io, "kg")
        self._last_counter: float | None = None
        self._last_u = self._last_i = math.nan
        self._taps = 0
        self._tapped_kg = 0.0
        self._window_kg = 0.0
        self._window_kAh = self._window_kWh = self._window_h = 0.0
        self._pend_kAh = self._pend_kWh = self._pend_h = 0.0
        factor = (header.get(PLANT_KPI_HEADER_KEY) or {}).get("pfc_kg_co2e_per_kAh")
        self._pfc_per_kAh = float(factor) if isinstance(factor, (int, float)) else math.nan
        self._in_ae = False
        self._aes = 0
        self._ae_h = self._ae_kAh = 0.0

    def add(self, record: CycleRecord) -> None:
        u, i = input_value(record, self.voltage), input_value(record, self.current)
        in_ae = record.estimate.extras.get(AE_DETECTED, 0.0) >= 0.5
        if in_ae:
            self._aes += not self._in_ae
            self._ae_h += self.period_s / 3600.0
            current = i if math.isfinite(i) else self._last_i
            self._ae_kAh += current * self.period_s / 3600.0 if math.isfinite(current) else 0.0
        self._in_ae = in_ae
        self._last_u = u if math.isfinite(u) else self._last_u
        self._last_i = i if math.isfinite(i) else self._last_i
        counter = input_value(record, self.tapped)
        if math.isfinite(counter):
            if self._last_counter is not None and counter - self._last_counter > TAP_MIN_KG:
                self._tap(counter - self._last_counter)
            self._last_counter = counter
        if self._taps:
            h = self.period_s / 3600.0
            if math.isfinite(self._last_i):
                self._pend_kAh += self._last_i * h
                if math.isfinite(self._last_u):
                    self._pend_kWh += self._last_u * self._last_i * h
            self._pend_h += h

    def _tap(self, kg: float) -> None:
        if self._taps:  # a later tap: it closes the window so far
            self._window_kg += kg
            self._window_kAh += self._pend_kAh
            self._window_kWh += self._pend_kWh
            self._window_h += self._pend_h
        self._pend_kAh = self._pend_kWh = self._pend_h = 0.0
        self._taps += 1
        self._tapped_kg += kg

    def result(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"anode_effects": self._aes, "anode_effect_minutes": 60.0 * self._ae_h}
        if math.isfinite(self._pfc_per_kAh):
            out["pfc_kg_co2e_est"] = self._pfc_per_kAh * self._ae_kAh
        if self.tapped is None:
            return out
        out["taps"] = self._taps
        out["metal_tapped_kg"] = self._tapped_kg
        if self._taps >= 2:
            out["tap_window_h"] = self._window_h
            if self.current is not None and self._window_kAh > 0.0:
                out["current_efficiency_pct"] = 100.0 * self._window_kg / (ND_KG_PER_KAH * self._window_kAh)
            if self.voltage is not None and self.current is not None and self._window_kg > 0.0:
                out["energy_kWh_per_kg"] = self._window_kWh / self._window_kg
        return out

    def not_computable(self) -> dict[str, str]:
        pfc = {} if math.isfinite(self._pfc_per_kAh) else {
            "pfc_kg_co2e_est": "the record's header has no PFC emission factor (an older record or a model "
                               "without pfc_current_fraction)"}
        return {**pfc, **self._tap_not_computable()}

    def _tap_not_computable(self) -> dict[str, str]:
        keys = ("current_efficiency_pct", "energy_kWh_per_kg")
        if self.tapped is None:
            why = "the recipe has no tapped-metal input (an input in kg)"
            return {"taps": why, "metal_tapped_kg": why, **dict.fromkeys(keys, why)}
        if self._taps == 0:
            return dict.fromkeys(keys, "no tapped-metal samples in the record (no rise of "
                                       f"{self.tapped})")
        if self._taps == 1:
            return dict.fromkeys(keys, "one tap in the record: a tap-to-tap window needs two taps")
        out: dict[str, str] = {}
        if self.current is None:
            out["current_efficiency_pct"] = "the recipe has no current measurement (kA)"
        elif self._window_kAh <= 0.0:
            out["current_efficiency_pct"] = "no charge measured between the taps"
        if self.voltage is None or self.current is None:
            out["energy_kWh_per_kg"] = "the recipe has no voltage (V) or current (kA) measurement"
        elif self._window_kg <= 0.0:
            out["energy_kWh_per_kg"] = "no metal tapped after the first tap"
        return out
