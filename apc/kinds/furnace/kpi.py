"""Batch KPIs of a furnace, judged on the simulator's truth (never on the estimate).

Fed once per cycle with the truth and the batch reference in force (the
``batch`` entry of the flight record: state, segment kind, target, upper and
lower limit of the controlled temperature), live in ``apc sim`` and replayed
by ``apc report``: the same values through the same arithmetic.

Keys (fixed; benchmarks and users rely on them):

==============================  ==================================================
``tracking_rmse_degC``          RMS of true controlled − common reference while RUNNING (below)
``overshoot_max_degC``          largest true controlled − upper limit (0 if never above)
``time_to_soak_min``            batch start → true controlled first inside a soak band
``batch_time_min``              batch start → COMPLETE (NaN when not completed)
``energy_kWh``                  energy drawn from batch start to its end
``pressure_violations``         excursions of the true chamber pressure above the limit
``core_surface_dT_violations``  excursions of the true |surface − core| above the limit
``soak_complete``               1 when the true controlled was in band for every soak's full time
==============================  ==================================================

The common reference. Each controller's batch times its ramps on the signal it
controls (the guaranteed ramp waits while *that* signal lags by more than
``ramp_lag_limit_degC``): the PID baseline's on its thermocouple, the MPC's on
its estimate. Judged against those, two controllers would be held to different
curves (a thermocouple lagging the charge by 6–9 K makes the PID's reference
wait sooner, so its charge is judged against a reference that never runs far
ahead of it). ``tracking_rmse_degC`` therefore judges every controller against
one reference, the curve's ramps re-timed on the *true* controlled temperature:
a ramp or cool starts from the true value (at the batch start, on a resume,
after a melt), else continues from the previous reference, moves at the
segment's rate while the true value lags it by at most the curve's
``ramp_lag_limit_degC`` and stops at the target; soaks and hold_untils keep the
batch's reference, melts have none. Segment changes are the batch's own (they
follow plant conditions and the soak clock). A config without segments (a
flight record written before this reference) judges against the batch's
target, as recorded.
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
class KpiSegment:
    """What the common reference needs of one curve segment."""

    kind: str
    rate_degC_min: float | None = None
    target_degC: float | None = None

    def to_mapping(self) -> dict[str, Any]:
        """Plain form for the flight-record header."""
        return {"kind": self.kind, "rate_degC_min": self.rate_degC_min, "target_degC": self.target_degC}


@dataclass(frozen=True)
class FurnaceKpiConfig:
    """What the furnace KPIs judge."""

    controlled: str
    """Truth key of the controlled temperature (e.g. ``core_temp_degC``, ``charge_temp_degC``)."""
    soak_required_s: tuple[float, ...]
    """Required soak time of each soak segment, in curve order."""
    pressure_limit_Pa: float | None = None
    core_surface_dT_max_K: float | None = None
    segments: tuple[KpiSegment, ...] = ()
    """The curve's segments, for the common reference (empty: judge against the batch's target)."""
    ramp_lag_limit_degC: float | None = None
    """The curve's guaranteed-ramp lag, applied to the true controlled temperature."""

    def to_mapping(self) -> dict[str, Any]:
        """Plain form for the flight-record header."""
        return {"controlled": self.controlled, "soak_required_s": list(self.soak_required_s),
                "pressure_limit_Pa": self.pressure_limit_Pa, "core_surface_dT_max_K": self.core_surface_dT_max_K,
                "segments": [g.to_mapping() for g in self.segments],
                "ramp_lag_limit_degC": self.ramp_lag_limit_degC}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FurnaceKpiConfig:
        """Inverse of :meth:`to_mapping` (a header without segments: judged against the batch's target)."""
        segments = tuple(KpiSegment(str(g["kind"]), g.get("rate_degC_min"), g.get("target_degC"))
                         for g in data.get("segments") or ())
        return cls(str(data["controlled"]), tuple(float(v) for v in data["soak_required_s"]),
                   data.get("pressure_limit_Pa"), data.get("core_surface_dT_max_K"), segments,
                   data.get("ramp_lag_limit_degC"))


class CommonReference:
    """The curve's ramps re-timed on the true controlled temperature (see the module docstring)."""

    def __init__(self, segments: tuple[KpiSegment, ...], ramp_lag_limit_degC: float | None) -> None:
        self.segments = segments
        self.lag_limit = ramp_lag_limit_degC
        self._last: tuple[int, float] | None = None  # (segment, reference) of the last RUNNING cycle

    def update(self, batch: BatchRecord, y: float, dt: float) -> float:
        """This cycle's reference, given the batch's record, the true controlled ``y`` and the time step."""
        k = batch.segment
        if batch.state != "running" or not self.segments or not 0 <= k < len(self.segments):
            self._last = None  # held, or no curve known: the next RUNNING cycle starts afresh
            return batch.target_degC
        seg, last = self.segments[k], self._last
        if seg.kind not in ("ramp", "cool") or seg.rate_degC_min is None or seg.target_degC is None:
            ref = batch.target_degC
        else:
            sign = 1.0 if seg.kind == "ramp" else -1.0
            clamp = min if sign > 0 else max
            if (last is None or not math.isfinite(last[1])
                    or (last[0] != k and self.segments[last[0]].kind == "melt")):
                ref = clamp(y, seg.target_degC) if math.isfinite(y) else batch.target_degC
            else:
                ref = last[1]
                lag = sign * (ref - y) if math.isfinite(y) else math.inf
                if self.lag_limit is None or lag <= self.lag_limit:
                    ref = clamp(ref + sign * seg.rate_degC_min * dt / 60.0, seg.target_degC)
        self._last = (k, ref)
        return ref


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
        self._reference = CommonReference(config.segments, config.ramp_lag_limit_degC)

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
        target = self._reference.update(batch, y, dt)
        upper, lower = batch.upper_degC, batch.lower_degC
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
