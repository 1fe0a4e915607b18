"""Industrial baseline of a furnace: PID on a measured temperature following the ramped curve.

Form: positional ISA PID, computed every cycle,

    v = kp·(β·r_f − y) + I + D,      D = −kp·td·dy_f/dt (on the measurement, filtered by td/N)
    u = clamp(v, limits in force) then rate-limited from the readback and the last output

with ``r`` the curve's ramped target ``preview.target_degC[0]`` (``r_f`` filtered when
``setpoint_filter_s`` > 0). Positional form because the plant's furnace controllers are set up
that way and because back-calculation needs the unlimited output ``v``.

Anti-windup (``FurnacePidSection.anti_windup``):

* ``back_calculation``: ``I += kp·dt/ti·e + dt/Tt·(u − v)``, so the integral tracks the output
  actually sent (limits, rates, DCS at-limit status) with time constant ``Tt``;
* ``conditional``: the integral is frozen while the output is limited and the error pushes it
  further into the limit.

Controlled measurement: only what the plant measures, read from the estimate under the recipe
input name (``FurnaceEkf`` reports each raw input there; never a hidden state). VIM: the immersion
thermocouple. Annealer: plant practice is to control the furnace (gas) thermocouple to a ramped
setpoint and let the load follow; the load thermocouple lags the gas by hours and a PID on it
overheats the outer wraps (the step test, ``bench/furnace_step_test.py``, shows the lag), so the
recipes use the gas thermocouple.

VIM pressure override (``pressure_measurement``/``pressure_limit_Pa``): as on the plant, while the
chamber pressure is above the limit the power is cut at ``pressure_cut_per_Pa_s`` kW per s per Pa
of excess (a high-limit override selected below the PID), and the PID's integral is reset to the
override's output (external reset), so it takes over without a bump once the pressure is back.

Power stage (a ``melt`` segment, ``preview.stage_power_at(0)`` finite): as on the plant, the loop
goes to a power program: the output is driven to the stage power (rate-limited, under the same
pressure override) and the PID restarts bumplessly from the readback when the curve asks for a
temperature again.

Batch state (``preview_source()``): RUNNING follows the curve; otherwise the PID holds
``hold_degC``, or with no hold temperature makes no heat (output to its low limit, rate-limited).
Bumpless: on the first step, after :meth:`track` and whenever the MV was not enabled, the
integral is set so that the output starts at the readback. ``fixed_mvs`` (e.g. the annealer's gas
flow) are driven to their value, rate-limited.

A missing measurement or setpoint holds the output (status HELD) for up to ``hold_cycles`` cycles,
then FAILED.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import structlog

from apc.curve_preview import CurvePreview
from apc.recipe.furnace_tuning import FurnacePidSection
from apc.recipe.schema import MvLimits
from apc.types import Estimate, MvConstraint, Plan, SolverStatus

_REL_MARGIN = 1e-6
"""Moves stay this share inside the rate limit (float rounding vs the guard)."""


def _signal(estimate: Estimate, name: str) -> float:
    """A signal of the estimate, NaN when absent."""
    try:
        return float(estimate.value(name))
    except (KeyError, ValueError):
        return math.nan


class FurnacePid:
    """PID furnace controller (implements :class:`apc.protocols.Controller`); see the module docstring.

    Parameters
    ----------
    cfg : FurnacePidSection
        Tuning, controlled measurement and MV.
    limits : Mapping[str, MvLimits]
        Recipe limits and rates of ``cfg.mv`` and the ``cfg.fixed_mvs``.
    period_s : float
        Base period of the unit loop (rate limit per cycle).
    preview_source : Callable[[], CurvePreview]
        The batch's curve preview, updated by the unit before each step.
    hold_cycles : int
        Cycles without a usable measurement or setpoint held before FAILED.
    """

    def __init__(self, cfg: FurnacePidSection, limits: Mapping[str, MvLimits], period_s: float,
                 preview_source: Callable[[], CurvePreview], hold_cycles: int = 6) -> None:
        missing = [n for n in (cfg.mv, *cfg.fixed_mvs) if n not in limits]
        if missing:
            raise ValueError(f"controller.pid: no limits for MV(s) {missing}")
        if not period_s > 0:
            raise ValueError("period_s must be > 0")
        self.cfg = cfg
        self.limits = dict(limits)
        self.period_s = float(period_s)
        self.preview_source = preview_source
        self.hold_cycles = int(hold_cycles)
        self._log = structlog.get_logger(__name__).bind(mv=cfg.mv)
        self.reset()

    # ------------------------------------------------------------ protocol
    def reset(self) -> None:
        """Forget the integral, filters, last outputs and failure count."""
        self.integral = 0.0
        self._init_pending = True
        self._r_f = math.nan
        self._y_prev = math.nan
        self._d = 0.0
        self._t_prev: float | None = None
        self._last_out: dict[str, float] = {}
        self._fails = 0
        self.override_active = False

    def track(self, applied: Mapping[str, float]) -> None:
        """MVs the APC does not drive: restart bumplessly from their readback."""
        if self.cfg.mv in applied:
            self._init_pending = True
        for name in applied:
            self._last_out.pop(name, None)

    def step(self, t_s: float, estimate: Estimate, applied: Mapping[str, float],
             enabled: Mapping[str, bool], disturbances: Mapping[str, float],
             constraints: Mapping[str, MvConstraint] | None = None) -> Plan:
        """One PID cycle; see the module docstring."""
        cfg = self.cfg
        dt = self.period_s if self._t_prev is None else t_s - self._t_prev
        self._t_prev = t_s
        rate_dt = min(max(dt, 0.0), self.period_s) if dt > 0 else self.period_s
        lim = {n: (constraints or {}).get(n) or self._recipe_constraint(n) for n in (cfg.mv, *cfg.fixed_mvs)}
        moves: dict[str, float] = {}
        for name, value in cfg.fixed_mvs.items():
            if name not in applied:
                continue
            if enabled.get(name, False):
                moves[name] = self._limited(name, value, applied[name], lim[name], rate_dt)
            else:
                moves[name] = float(applied[name])
                self._last_out.pop(name, None)
        mv = cfg.mv
        if mv not in applied:
            return Plan(moves, {}, SolverStatus.FAILED, 0, 0.0, f"no readback of {mv!r}")
        a = float(applied[mv])
        if not enabled.get(mv, False):
            moves[mv] = a
            self._init_pending = True
            self._last_out.pop(mv, None)
            return Plan(moves, {}, SolverStatus.OK, 0, 0.0, f"{mv} not enabled: held")
        preview = self.preview_source()
        y = _signal(estimate, cfg.measurement)
        pressure_Pa = _signal(estimate, cfg.pressure_measurement) if cfg.pressure_measurement else math.nan
        stage_kW = preview.stage_power_at(0) if preview.running else math.nan
        if math.isfinite(stage_kW):
            self._fails = 0
            self._init_pending = True
            cap = self._override_cap(a, pressure_Pa, dt)
            c = lim[mv] if cap is None else MvConstraint(lim[mv].low, max(lim[mv].low, min(lim[mv].high, cap)),
                                                          lim[mv].hold_up, lim[mv].hold_down)
            moves[mv] = self._limited(mv, stage_kW, a, c, rate_dt)
            reason = f"power stage {stage_kW:g} kW" + ("; pressure override" if self.override_active else "")
            return Plan(moves, {}, SolverStatus.OK, 0, 0.0, reason)
        if preview.running:
            r = float(preview.target_degC[0])
        elif preview.hold_degC is not None:
            r = float(preview.hold_degC)
        else:
            moves[mv] = self._limited(mv, lim[mv].low, a, lim[mv], rate_dt)
            self._init_pending = True
            return Plan(moves, {}, SolverStatus.OK, 0, 0.0, f"no heat: batch {preview.state.value}")
        if not (math.isfinite(r) and math.isfinite(y) and math.isfinite(a)):
            self._fails += 1
            moves[mv] = a
            what = "setpoint" if not math.isfinite(r) else cfg.measurement if not math.isfinite(y) else "readback"
            reason = f"{what} not usable ({self._fails}/{self.hold_cycles})"
            status = SolverStatus.HELD if self._fails <= self.hold_cycles else SolverStatus.FAILED
            return Plan(moves, {}, status, 0, 0.0, reason)
        self._fails = 0
        moves[mv] = self._pid(r, y, a, lim[mv], dt, rate_dt, pressure_Pa)
        reason = "pressure override" if self.override_active else ""
        return Plan(moves, {}, SolverStatus.OK, 0, 0.0, reason)

    # ------------------------------------------------------------- internals
    def _recipe_constraint(self, name: str) -> MvConstraint:
        lim = self.limits[name]
        return MvConstraint(max(lim.operator[0], lim.engineering[0]), min(lim.operator[1], lim.engineering[1]))

    def _limited(self, name: str, target: float, applied: float, c: MvConstraint, rate_dt: float) -> float:
        """``target`` inside the limits in force, never toward a DCS-reported limit, and within the
        rate from both the readback and the last output (the guard's base)."""
        a = float(applied)
        hi = min(c.high, a) if c.hold_up else c.high
        lo = max(c.low, a) if c.hold_down else c.low
        value = min(max(target, lo), hi) if lo <= hi else a
        r = self.limits[name].rate_per_s * rate_dt * (1.0 - _REL_MARGIN)
        lo_r, hi_r = a - r, a + r
        last = self._last_out.get(name)
        if last is not None and max(lo_r, last - r) <= min(hi_r, last + r):
            lo_r, hi_r = max(lo_r, last - r), min(hi_r, last + r)
        value = min(max(value, lo_r), hi_r)
        self._last_out[name] = value
        return value

    def _override_cap(self, a: float, pressure_Pa: float, dt: float) -> float | None:
        """The pressure override's ceiling on the output while the pressure is above its limit, else None;
        ``override_active`` says whether it is in force."""
        cfg = self.cfg
        self.override_active = False
        if cfg.pressure_limit_Pa is None or not math.isfinite(pressure_Pa) or pressure_Pa <= cfg.pressure_limit_Pa:
            return None
        self.override_active = True
        base = min(a, self._last_out.get(cfg.mv, a))
        return base - cfg.pressure_cut_per_Pa_s * (pressure_Pa - cfg.pressure_limit_Pa) * max(dt, 0.0)

    def _pid(self, r: float, y: float, a: float, c: MvConstraint, dt: float, rate_dt: float,
             pressure_Pa: float) -> float:
        cfg = self.cfg
        if self._init_pending or not math.isfinite(self._r_f):
            self._r_f = r
            self._y_prev = y
            self._d = 0.0
        elif cfg.setpoint_filter_s > 0 and dt > 0:
            self._r_f += (r - self._r_f) * (1.0 - math.exp(-dt / cfg.setpoint_filter_s))
        else:
            self._r_f = r
        if cfg.td_s > 0 and dt > 0 and not self._init_pending:
            tf = cfg.td_s / cfg.derivative_filter_ratio
            self._d = (tf * self._d - cfg.kp * cfg.td_s * (y - self._y_prev)) / (tf + dt)
        self._y_prev = y
        p_term = cfg.kp * (cfg.setpoint_weight * self._r_f - y)
        if self._init_pending:
            self.integral = a - p_term - self._d  # bumpless: v = readback
            self._init_pending = False
        v = p_term + self.integral + self._d
        c_eff = c
        cap = self._override_cap(a, pressure_Pa, dt)
        self.override_active = cap is not None and cap < v
        if cap is not None and cap < v:
            c_eff = MvConstraint(c.low, max(c.low, min(c.high, cap)), c.hold_up, c.hold_down)
        u = self._limited(cfg.mv, v, a, c_eff, rate_dt)
        e = self._r_f - y
        ki_dt = cfg.kp * dt / cfg.ti_s if math.isfinite(cfg.ti_s) and dt > 0 else 0.0
        if self.override_active:
            self.integral = u - p_term - self._d  # external reset: the override's output
        elif cfg.anti_windup == "back_calculation":
            # min(1, ·): a cycle longer than Tt resets the integral to the limited output, no further
            self.integral += ki_dt * e + min(1.0, max(dt, 0.0) / cfg.effective_tracking_time_s) * (u - v)
        else:
            pushing = (v > u and e > 0) or (v < u and e < 0)
            if not pushing:
                self.integral += ki_dt * e
        return u
