"""Batch KPIs of a furnace from the measured controlled temperature (no truth), against the curve in
force that each cycle's ``batch`` entry records (target, upper and lower limit); see
``docs/performance_kpis.md``.

The measured controlled temperature is the thermocouple the PID baseline controls on
(``controller.pid.measurement``), else the input whose ``model_output`` is the curve's controlled
signal. The estimate of the curve's controlled signal is judged the same way (``…_est_…`` keys).

A batch starts in the cycle its state becomes ``running`` or ``held`` from anything else (idle,
complete, aborted, none) and ends in the cycle it becomes ``complete`` or ``aborted``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from apc.cycle_record import CycleRecord
from apc.kinds.furnace.recipe import FurnaceRecipe
from apc.plant_kpi import PLANT_KPI_HEADER_KEY, header_period_s, input_value

__all__ = ["FurnacePlantKpis", "furnace_plant_config"]

_IN_BATCH = ("running", "held")
_ENDED = ("complete", "aborted")


def furnace_plant_config(recipe: FurnaceRecipe) -> dict[str, Any]:
    """The header's ``plant_kpi`` object of a furnace: the measured and the estimated controlled signal."""
    controlled = recipe.curve.controlled if recipe.curve is not None else None
    pid = recipe.controller.pid
    measured = pid.measurement if pid is not None else None
    if measured is None and controlled is not None:
        measured = next((n for n, s in recipe.io.inputs.items() if s.model_output == controlled), None)
    return {"cv_bands": [], "measured": measured, "controlled": controlled}


class _Tracking:
    """RMS of value − target and time outside [lower, upper] over running cycles."""

    def __init__(self) -> None:
        self.sq, self.n, self.out_s = 0.0, 0, 0.0

    def add(self, y: float, target: float, lower: float, upper: float, dt: float) -> None:
        if not math.isfinite(y):
            return
        if math.isfinite(target):
            self.sq += (y - target) ** 2
            self.n += 1
        if not lower <= y <= upper:
            self.out_s += dt


class FurnacePlantKpis:
    """Batch KPIs from the record's ``batch`` entries and the measured (and estimated) controlled temperature.

    Keys: ``batches_started``, ``batches_complete``, ``batches_aborted``; ``batch_time_min`` (mean
    start → complete of the completed batches whose start the record holds); over running cycles
    with a finite target ``tracking_rmse_meas_degC`` / ``tracking_rmse_est_degC``; over running
    cycles ``out_of_band_meas_min`` / ``out_of_band_est_min`` (outside [lower, upper]); in soak
    segments while running ``soak_min`` and ``soak_in_band_meas_min`` (measured inside the band).
    """

    def __init__(self, header: Mapping[str, Any]) -> None:
        self.period_s = header_period_s(header)
        cfg = header.get(PLANT_KPI_HEADER_KEY)
        cfg = cfg if isinstance(cfg, Mapping) else {}
        self.measured: str | None = cfg.get("measured")
        self.controlled: str | None = cfg.get("controlled")
        self._has_config = bool(header.get(PLANT_KPI_HEADER_KEY))
        self._prev_state = ""
        self._start_s: float | None = None
        self._started = self._complete = self._aborted = 0
        self._durations_s: list[float] = []
        self._meas, self._est = _Tracking(), _Tracking()
        self._running_s = 0.0
        self._soak_s = self._soak_in_s = 0.0

    def add(self, record: CycleRecord) -> None:
        dt = self.period_s
        batch = record.batch
        state = "" if batch is None else batch.state
        prev, self._prev_state = self._prev_state, state
        if state in _IN_BATCH and prev not in _IN_BATCH:
            self._started += 1
            self._start_s = record.t_s
        elif state in _ENDED and prev in _IN_BATCH:
            if state == "complete":
                self._complete += 1
                if self._start_s is not None:
                    self._durations_s.append(record.t_s - self._start_s)
            else:
                self._aborted += 1
            self._start_s = None
        if batch is None or state != "running":
            return
        self._running_s += dt
        y = input_value(record, self.measured)
        x = math.nan
        if self.controlled and record.estimate.health == "ok":
            x = float(record.estimate.values().get(self.controlled, math.nan))
        lo, hi = batch.lower_degC, batch.upper_degC
        self._meas.add(y, batch.target_degC, lo, hi, dt)
        self._est.add(x, batch.target_degC, lo, hi, dt)
        if batch.kind == "soak":
            self._soak_s += dt
            if math.isfinite(y) and lo <= y <= hi:
                self._soak_in_s += dt

    def result(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"batches_started": self._started, "batches_complete": self._complete,
                                       "batches_aborted": self._aborted}
        if self._durations_s:
            out["batch_time_min"] = sum(self._durations_s) / len(self._durations_s) / 60.0
        if self._running_s > 0.0:
            out["running_min"] = self._running_s / 60.0
            for tag, tr, name in (("meas", self._meas, self.measured), ("est", self._est, self.controlled)):
                if name is None:
                    continue
                if tr.n:
                    out[f"tracking_rmse_{tag}_degC"] = math.sqrt(tr.sq / tr.n)
                out[f"out_of_band_{tag}_min"] = tr.out_s / 60.0
            if self._soak_s > 0.0:
                out["soak_min"] = self._soak_s / 60.0
                if self.measured is not None:
                    out["soak_in_band_meas_min"] = self._soak_in_s / 60.0
        return out

    def not_computable(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if not self._durations_s:
            out["batch_time_min"] = ("no batch both started and completed in the record" if self._started or
                                     self._complete else "no batch in the record")
        if self._running_s <= 0.0:
            why = "no cycle with a running batch in the record"
            keys = ("tracking_rmse_meas_degC", "out_of_band_meas_min", "tracking_rmse_est_degC",
                    "out_of_band_est_min", "soak_min", "soak_in_band_meas_min")
            return {**out, **dict.fromkeys(keys, why)}
        no_cfg = "the record's header has no 'plant_kpi' object (an older record)"
        if self.measured is None:
            why = no_cfg if not self._has_config else "the recipe names no measured controlled temperature"
            for k in ("tracking_rmse_meas_degC", "out_of_band_meas_min", "soak_in_band_meas_min"):
                out[k] = why
        elif not self._meas.n:
            out["tracking_rmse_meas_degC"] = f"no valid {self.measured} value while running on the curve"
        if self.controlled is None:
            for k in ("tracking_rmse_est_degC", "out_of_band_est_min"):
                out[k] = no_cfg if not self._has_config else "the recipe has no curve"
        elif not self._est.n:
            out["tracking_rmse_est_degC"] = f"no healthy estimate of {self.controlled} while running on the curve"
        if self._soak_s <= 0.0:
            out["soak_min"] = out["soak_in_band_meas_min"] = "no soak segment ran in the record"
        return out
