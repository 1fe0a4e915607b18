"""Batch KPIs of a furnace, judged on the simulator's truth (never on the estimate).

Fed once per cycle with the truth and the batch reference in force (the
``batch`` entry of the flight record: state, segment kind, target, upper and
lower limit of the controlled temperature), live in ``apc sim`` and replayed
by ``apc report``: the same values through the same arithmetic.

Keys (fixed; benchmarks and users rely on them):

==============================  ==================================================
``tracking_rmse_degC``          RMS of true controlled − curve target while RUNNING
``overshoot_max_degC``          largest true controlled − upper limit (0 if never above)
``time_to_soak_min``            batch start → true controlled first inside a soak band
``batch_time_min``              batch start → COMPLETE (NaN when not completed)
``energy_kWh``                  energy drawn from batch start to its end
``pressure_violations``         excursions of the true chamber pressure above the limit
``core_surface_dT_violations``  excursions of the true |surface − core| above the limit
``soak_complete``               1 when the true controlled was in band for every soak's full time
==============================  ==================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apc.cycle_record import BatchRecord, CycleRecord

FURNACE_KPI_KEYS = ("tracking_rmse_degC", "overshoot_max_degC", "time_to_soak_min", "batch_time_min",
                    "energy_kWh", "pressure_violations", "core_surface_dT_violations", "soak_complete",
                    "guard_clamps", "sheds", "cycles")


@dataclass(frozen=True)
class FurnaceKpiConfig:
    """What the furnace KPIs judge."""

    controlled: str
    """Truth key of the controlled temperature (e.g. ``core_temp_degC``, ``charge_temp_degC``)."""
    soak_required_s: tuple[float, ...]
    """Required soak time of each soak segment, in curve order."""
    pressure_limit_Pa: float | None = None
    core_surface_dT_max_K: float | None = None

    def to_mapping(self) -> dict[str, Any]:
        """Plain form for the flight-record header."""
        return {"controlled": self.controlled, "soak_required_s": list(self.soak_required_s),
                "pressure_limit_Pa": self.pressure_limit_Pa, "core_surface_dT_max_K": self.core_surface_dT_max_K}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FurnaceKpiConfig:
        """Inverse of :meth:`to_mapping`."""
        return cls(str(data["controlled"]), tuple(float(v) for v in data["soak_required_s"]),
                   data.get("pressure_limit_Pa"), data.get("core_surface_dT_max_K"))


class FurnaceKpiAccumulator:
    """Accumulates one batch's KPIs cycle by cycle."""

    def __init__(self, config: FurnaceKpiConfig) -> None:
        self.config = config
        self._sq, self._n = 0.0, 0
        self._overshoot = 0.0
        self._start_s: float | None = None
        self._soak_entry_s: float | None = None
        self._end_s: float | None = None
        self._complete_s: float | None = None
        self._e0: float | None = None
        self._e_last = math.nan
        self._p_above = self._dt_above = False
        self._p_viol = self._dt_viol = 0
        self._in_band_s: dict[int, float] = {}
        self._soak_order: list[int] = []
        self._last_t: float | None = None
        self._clamps = self._sheds = self._cycles = 0

    def add(self, record: CycleRecord) -> None:
        """One cycle's record (simulated: it carries the truth)."""
        if record.truth is None:
            raise KeyError("truth")
        self.account(record.t_s, record.truth, record.guard_clamps, record.shed, record.batch)

    def account(self, t_s: float, truth: Mapping[str, float], guard_clamps: int, shed: bool,
                batch: BatchRecord | None = None) -> None:
        """One cycle: ``truth`` from the simulator, ``batch`` the reference in force."""
        cfg = self.config
        self._cycles += 1
        self._clamps += guard_clamps
        self._sheds += int(shed)
        dt = 0.0 if self._last_t is None else t_s - self._last_t
        self._last_t = t_s
        if batch is None:
            return
        state = batch.state
        if state == "running" and self._start_s is None:
            self._start_s, self._e0 = t_s, truth.get("energy_kWh", math.nan)
        if self._start_s is None or self._end_s is not None:
            return
        self._e_last = truth.get("energy_kWh", math.nan)
        if state in ("complete", "aborted"):
            self._end_s = t_s
            if state == "complete":
                self._complete_s = t_s
            return
        y = float(truth[cfg.controlled])
        target, upper, lower = batch.target_degC, batch.upper_degC, batch.lower_degC
        if state == "running" and math.isfinite(target):
            self._sq += (y - target) ** 2
            self._n += 1
        if math.isfinite(upper):
            self._overshoot = max(self._overshoot, y - upper)
        if batch.kind == "soak":
            seg = batch.segment
            if seg not in self._in_band_s:
                self._in_band_s[seg] = 0.0
                self._soak_order.append(seg)
            if lower <= y <= upper:
                self._in_band_s[seg] += dt
                if self._soak_entry_s is None:
                    self._soak_entry_s = t_s
        if cfg.pressure_limit_Pa is not None and "chamber_pressure_Pa" in truth:
            above = truth["chamber_pressure_Pa"] > cfg.pressure_limit_Pa
            self._p_viol += int(above and not self._p_above)
            self._p_above = above
        if cfg.core_surface_dT_max_K is not None and "core_surface_dT_K" in truth:
            above = abs(truth["core_surface_dT_K"]) > cfg.core_surface_dT_max_K
            self._dt_viol += int(above and not self._dt_above)
            self._dt_above = above

    def result(self) -> dict[str, float | int]:
        """The KPIs so far (keys in :data:`FURNACE_KPI_KEYS`)."""
        start = self._start_s
        completed = self._complete_s
        required = self.config.soak_required_s
        done = [self._in_band_s.get(seg, 0.0) for seg in self._soak_order]
        soak_ok = len(done) >= len(required) and all(d >= r - 1e-6 for d, r in zip(done, required))
        return {
            "tracking_rmse_degC": math.sqrt(self._sq / self._n) if self._n else math.nan,
            "overshoot_max_degC": max(self._overshoot, 0.0),
            "time_to_soak_min": (self._soak_entry_s - start) / 60.0
            if start is not None and self._soak_entry_s is not None else math.nan,
            "batch_time_min": (completed - start) / 60.0 if start is not None and completed is not None else math.nan,
            "energy_kWh": self._e_last - self._e0 if self._e0 is not None else math.nan,
            "pressure_violations": self._p_viol,
            "core_surface_dT_violations": self._dt_viol,
            "soak_complete": int(soak_ok and completed is not None),
            "guard_clamps": self._clamps,
            "sheds": self._sheds,
            "cycles": self._cycles,
        }
