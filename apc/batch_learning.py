"""Learning from one batch to the next: the carried parameter prior, run-to-run steps on the curve's
adjustable terms, and a batch's outcome measured from what the unit sees (no simulator truth).

Pure functions and one accumulator; no clock, no I/O (see ``docs/batch_learning.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from apc.batch_history import BatchRecord
from apc.curve_preview import BatchState
from apc.recipe.curve_schema import BatchSection, CurveSection
from apc.recipe.learning_schema import AdjustableTerm, LearningSection

__all__ = ["OutcomeConfig", "OutcomeTracker", "apply_terms", "carried_prior", "propose_terms", "terms_in_force"]


def carried_prior(section: LearningSection, last: BatchRecord | None,
                  lot: str | None = None) -> dict[str, tuple[float, float]]:
    """Bias name → (value, std) the next batch's filter starts from: the last batch's identified
    value; variance ``inflate_factor``·std² + ``random_walk_std``² (its drift over one batch), plus
    ``lot_change_std``² when the next batch's ``lot`` is not the last batch's (None: not known to
    differ). Empty when nothing is carried (disabled, no history, or nothing identified)."""
    if not (section.enabled and section.carry_parameters) or last is None:
        return {}
    new_lot = lot is not None and lot != last.lot
    out: dict[str, tuple[float, float]] = {}
    for name, (v, std) in last.parameters.items():
        if not (math.isfinite(v) and math.isfinite(std)):
            continue
        rw = section.random_walk_std.get(name, 0.0)
        jump = section.lot_change_std.get(name, 0.0) if new_lot else 0.0
        out[name] = (v, math.sqrt(section.inflate_factor * std * std + rw * rw + jump * jump))
    return out


def terms_in_force(section: LearningSection, curve: CurveSection, batch: BatchSection) -> dict[str, float]:
    """The adjustable terms' values in ``curve`` / ``batch`` (the first melt's power, the soak extension,
    the named ramp's rate)."""
    out: dict[str, float] = {}
    for name, term in section.adjust.items():
        if name == "melt_power_kW":
            melts = [s.power_kW for s in curve.segments if s.kind == "melt" and s.power_kW is not None]
            if melts:
                out[name] = float(melts[0])
        elif name == "soak_extension_min":
            out[name] = float(batch.soak_extension_min)
        elif name == "ramp_rate_degC_min" and term.segment is not None and 0 <= term.segment < len(curve.segments):
            rate = curve.segments[term.segment].rate_degC_min
            if rate is not None:
                out[name] = float(rate)
    return out


def apply_terms(curve: CurveSection, batch: BatchSection, terms: Mapping[str, float],
                section: LearningSection) -> tuple[CurveSection, BatchSection]:
    """``curve`` and ``batch`` with ``terms`` in force (rebuilt, so validated like any curve: a
    ValueError names what is wrong)."""
    segs = list(curve.segments)
    for name, value in terms.items():
        if name == "melt_power_kW":
            segs = [replace(s, power_kW=value) if s.kind == "melt" else s for s in segs]
        elif name == "soak_extension_min":
            batch = replace(batch, soak_extension_min=value)
        elif name == "ramp_rate_degC_min":
            k = section.adjust[name].segment
            if k is None or not 0 <= k < len(segs) or segs[k].kind != "ramp":
                raise ValueError(f"adjust ramp_rate_degC_min: segment {k} is not a ramp of the curve")
            segs[k] = replace(segs[k], rate_degC_min=value)
    return replace(curve, segments=tuple(segs)), batch


def propose_terms(section: LearningSection, ran: Mapping[str, float], kpis: Mapping[str, Any],
                  pressure_limit_Pa: float | None, melt_timeout_min: float | None = None) -> dict[str, float]:
    """Run-to-run step of each adjustable term from the batch that ran with ``ran``.

    ``melt_power_kW`` / ``ramp_rate_degC_min``: relative step ``gain·(target − peak)/target`` of the
    melt's / ramp's measured peak pressure against ``target``·``pressure_limit_Pa``; a measured
    pressure violation during the melt / that ramp steps down by ``max_step`` (one elsewhere in the
    batch is not the term's doing). ``melt_power_kW`` also answers the melt's time: a
    melt that timed out (within the pressure limit) steps up by ``max_step``; with ``time_target``,
    a melt longer than ``time_target``·``melt_timeout_min`` is not stepped down on its pressure and
    steps up by ``gain·(time − goal)/goal`` when the pressure step is not negative.
    ``soak_extension_min``: ``−gain·(excess − target)`` of the estimated core's soak time beyond the
    required time. Each step is clipped to ±``max_step``, the result to [low, high]. A term whose
    measure is missing keeps its value; so does every term of a batch that did not complete, except
    the melt power after a melt timeout or a pressure violation in the melt."""
    out: dict[str, float] = {}
    complete = bool(kpis.get("soak_complete"))
    for name, term in section.adjust.items():
        if name not in ran:
            continue
        x = ran[name]
        step = 0.0
        if name in ("melt_power_kW", "ramp_rate_degC_min") and pressure_limit_Pa:
            phase = "melt" if name == "melt_power_kW" else "ramp"
            if (kpis.get(f"{phase}_pressure_violations") or 0) > 0:
                step = -term.max_step
            elif name == "melt_power_kW" and kpis.get("melt_timed_out"):
                step = term.max_step
            elif complete:
                step = _pressure_step(term, x, kpis.get(f"{phase}_peak_pressure_Pa"), pressure_limit_Pa)
                if name == "melt_power_kW":
                    step = _melt_time_step(term, x, step, kpis.get("melt_time_min"), melt_timeout_min)
        elif complete and name == "soak_extension_min":
            excess = kpis.get("core_soak_excess_min")
            if isinstance(excess, (int, float)) and math.isfinite(excess):
                step = -term.gain * (excess - term.target)
        step = max(-term.max_step, min(term.max_step, step))
        out[name] = round(max(term.low, min(term.high, x + step)), 6)
    return out


def _pressure_step(term: AdjustableTerm, x: float, peak: Any, pressure_limit_Pa: float) -> float:
    if not (isinstance(peak, (int, float)) and math.isfinite(peak) and peak > 0):
        return 0.0
    goal = term.target * pressure_limit_Pa
    return term.gain * x * (goal - peak) / goal


def _melt_time_step(term: AdjustableTerm, x: float, pressure_step: float, melt_min: Any,
                    timeout_min: float | None) -> float:
    """The melt power's step once its duration is weighed: a melt slower than the time goal is held
    (not stepped down) and pushed up when the pressure leaves room."""
    if term.time_target is None or not timeout_min or not isinstance(melt_min, (int, float)):
        return pressure_step
    goal = term.time_target * timeout_min
    if not (math.isfinite(melt_min) and melt_min > goal):
        return pressure_step
    if pressure_step < 0:
        return 0.0
    return max(pressure_step, term.gain * x * (melt_min - goal) / goal)


@dataclass(frozen=True)
class OutcomeConfig:
    """What a batch's measured outcome is computed from (names of the unit's signals)."""

    controlled: str
    """The curve's controlled signal in force (tracking RMSE against the reference)."""
    power_mvs: tuple[str, ...]
    """MVs in kW (their readback integrates to the energy)."""
    pressure_signal: str | None = None
    """Measured chamber pressure (recipe input name)."""
    pressure_limit_Pa: float | None = None
    dT_signal: str | None = None
    """Estimated |core − surface| (``core_surface_dT_K``)."""
    dT_max_K: float | None = None
    core_signal: str | None = None
    """Soak judged on this estimated signal (the recipe curve's controlled one), for the soak excess."""
    core_margin_sigmas: float = 0.0
    soak_time_s: float = 0.0
    """Required soak time (without extension) of the curve's soaks, summed."""


class OutcomeTracker:
    """A batch's KPIs from the values the batch sees each cycle (measured inputs, readbacks, the
    estimate); survives a restart through :meth:`to_mapping` / :meth:`from_mapping`."""

    def __init__(self, config: OutcomeConfig) -> None:
        self.config = config
        self.elapsed_s = 0.0
        self.energy_kWh = 0.0
        self.sq_err = 0.0
        self.n_err = 0
        self.pressure_violations = 0
        self.dT_violations = 0
        self.melt_peak_Pa = math.nan
        self.ramp_peak_Pa = math.nan
        self.core_soak_s = 0.0
        self.melt_s = 0.0
        self.melt_timed_out = False
        self.melt_violations = 0
        self.ramp_violations = 0
        self._t_last: float | None = None

    def to_mapping(self) -> dict[str, float | int | None]:
        """Plain data for the batch state file."""
        return {"elapsed_s": self.elapsed_s, "energy_kWh": self.energy_kWh, "sq_err": self.sq_err,
                "n_err": self.n_err, "pressure_violations": self.pressure_violations,
                "dT_violations": self.dT_violations, "melt_peak_Pa": _num(self.melt_peak_Pa),
                "ramp_peak_Pa": _num(self.ramp_peak_Pa), "core_soak_s": self.core_soak_s,
                "melt_s": self.melt_s, "melt_timed_out": int(self.melt_timed_out),
                "melt_violations": self.melt_violations, "ramp_violations": self.ramp_violations}

    @classmethod
    def from_mapping(cls, config: OutcomeConfig, data: Mapping[str, Any]) -> OutcomeTracker:
        """The tracker recorded in a state file (missing entries count from zero)."""
        t = cls(config)
        for key in ("elapsed_s", "energy_kWh", "sq_err", "core_soak_s", "melt_s"):
            setattr(t, key, float(data.get(key) or 0.0))
        for key in ("n_err", "pressure_violations", "dT_violations", "melt_violations", "ramp_violations"):
            setattr(t, key, int(data.get(key) or 0))
        for key in ("melt_peak_Pa", "ramp_peak_Pa"):
            v = data.get(key)
            setattr(t, key, math.nan if v is None else float(v))
        t.melt_timed_out = bool(data.get("melt_timed_out"))
        return t

    def add(self, t_s: float, values: Mapping[str, float], status: Mapping[str, Any], *,
            ramp_segment: int | None) -> None:
        """One cycle of a running (or held) batch: ``status`` is the batch's after the update."""
        dt = 0.0 if self._t_last is None else max(0.0, t_s - self._t_last)
        self._t_last = t_s
        c = self.config
        self.elapsed_s += dt
        power = sum(_get(values, n) for n in c.power_mvs)
        if math.isfinite(power):
            self.energy_kWh += power * dt / 3600.0
        if status.get("state") != BatchState.RUNNING.value:
            if status.get("kind") == "melt" and any(str(r).startswith("melt timeout")
                                                     for r in status.get("reasons") or ()):
                self.melt_timed_out = True
            return
        if status.get("kind") == "melt":
            self.melt_s += dt
        ref, y = status.get("reference_degC"), _get(values, c.controlled)
        if isinstance(ref, (int, float)) and math.isfinite(ref) and math.isfinite(y):
            self.sq_err += (y - ref) ** 2
            self.n_err += 1
        p = _get(values, c.pressure_signal)
        if math.isfinite(p):
            over = c.pressure_limit_Pa is not None and p > c.pressure_limit_Pa
            self.pressure_violations += over
            if status.get("kind") == "melt":
                self.melt_peak_Pa = p if not math.isfinite(self.melt_peak_Pa) else max(self.melt_peak_Pa, p)
                self.melt_violations += over
            if ramp_segment is not None and status.get("segment") == ramp_segment:
                self.ramp_peak_Pa = p if not math.isfinite(self.ramp_peak_Pa) else max(self.ramp_peak_Pa, p)
                self.ramp_violations += over
        d = _get(values, c.dT_signal)
        if c.dT_max_K is not None and math.isfinite(d) and abs(d) > c.dT_max_K:
            self.dT_violations += 1
        band = status.get("band_degC")
        core = _get(values, c.core_signal)
        if status.get("kind") == "soak" and band is not None and math.isfinite(core):
            margin = c.core_margin_sigmas * (_get(values, f"{c.core_signal}_std") if c.core_signal else 0.0)
            margin = margin if math.isfinite(margin) else math.inf
            if band[0] + margin <= core <= band[1] - margin:
                self.core_soak_s += dt

    def kpis(self, complete: bool) -> dict[str, float | None]:
        """The outcome (keys as the furnace KPIs where they mean the same)."""
        return {
            "batch_time_min": self.elapsed_s / 60.0 if complete else None,
            "energy_kWh": self.energy_kWh,
            "tracking_rmse_degC": math.sqrt(self.sq_err / self.n_err) if self.n_err else None,
            "soak_complete": 1.0 if complete else 0.0,
            "pressure_violations": float(self.pressure_violations),
            "core_surface_dT_violations": float(self.dT_violations),
            "melt_peak_pressure_Pa": _num(self.melt_peak_Pa),
            "melt_pressure_violations": float(self.melt_violations),
            "ramp_pressure_violations": float(self.ramp_violations),
            "ramp_peak_pressure_Pa": _num(self.ramp_peak_Pa),
            "melt_time_min": self.melt_s / 60.0 if self.melt_s > 0 else None,
            "melt_timed_out": 1.0 if self.melt_timed_out else 0.0,
            "core_soak_excess_min": ((self.core_soak_s - self.config.soak_time_s) / 60.0
                                     if self.config.core_signal and complete else None),
        }


def _get(values: Mapping[str, float], name: str | None) -> float:
    if name is None:
        return math.nan
    v = values.get(name)
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def _num(v: float) -> float | None:
    return v if math.isfinite(v) else None
