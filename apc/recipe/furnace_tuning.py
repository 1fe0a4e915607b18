"""Recipe tuning sections of the furnace controllers (``controllers.furnace_pid``, ``controllers.furnace_mpc``).

Frozen like the rest of :mod:`apc.recipe.schema`; every check is in ``__post_init__`` and its
message names the field. Temperatures in °C or K, times in s, MV units as the recipe's MV
(power in kW).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

AntiWindup = Literal["back_calculation", "conditional"]


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class FurnacePidSection:
    """Industrial furnace PID on a measured temperature (positional ISA form, see ``controllers.furnace_pid``).

    ``u = kp·(β·r − y) + I + D``; ``I`` integrates ``kp/ti·(r − y)``; ``D = −kp·td·dy_f/dt`` on the
    measurement, filtered with ``td/derivative_filter_ratio``. The setpoint ``r`` is the curve's
    ramped target ``preview.target_degC[0]``, optionally low-pass filtered.
    """

    kp: float
    """Proportional gain, MV units per K (kW/K)."""
    ti_s: float
    """Integral time, s (``inf``: no integral action)."""
    measurement: str
    """Estimate signal with the measured temperature: the recipe input name (e.g. the charge
    thermocouple); only measured values, never hidden states."""
    mv: str
    """Recipe MV the PID drives (the heating power)."""
    td_s: float = 0.0
    """Derivative time, s (0: PI)."""
    derivative_filter_ratio: float = 10.0
    """N of the derivative filter: time constant ``td_s / N``."""
    setpoint_weight: float = 1.0
    """β, share of the setpoint in the proportional term (1: error feedback)."""
    anti_windup: AntiWindup = "back_calculation"
    """``back_calculation``: the integral is corrected by (u_applied − u_unlimited)/tracking_time_s;
    ``conditional``: the integral stops while the output is limited and the error pushes further."""
    tracking_time_s: float | None = None
    """Back-calculation tracking time Tt, s; None: √(ti·td) with derivative, else ti/2."""
    setpoint_filter_s: float = 0.0
    """First-order filter on the setpoint, s (0: none; the curve is already ramped)."""
    fixed_mvs: dict[str, float] = field(default_factory=dict)
    """Other MVs driven (rate-limited) to a fixed value while enabled, e.g. the annealer's gas flow at 1.0."""
    pressure_measurement: str | None = None
    """VIM: estimate signal with the measured chamber pressure (recipe input name) for the override."""
    pressure_limit_Pa: float | None = None
    """VIM: above this pressure the override lowers the power (set it below the vessel's limit)."""
    pressure_cut_per_Pa_s: float = 2.0
    """Override speed: MV units per s per Pa of excess pressure (kW/(Pa·s))."""

    def __post_init__(self) -> None:
        if not (_finite(self.kp) and self.kp > 0):
            raise ValueError("kp must be a finite number > 0")
        if not (self.ti_s > 0):
            raise ValueError("ti_s must be > 0 (inf: no integral action)")
        if not (_finite(self.td_s) and self.td_s >= 0):
            raise ValueError("td_s must be a finite number >= 0")
        if not (_finite(self.derivative_filter_ratio) and self.derivative_filter_ratio > 0):
            raise ValueError("derivative_filter_ratio must be > 0")
        if not (_finite(self.setpoint_weight) and 0 <= self.setpoint_weight <= 1):
            raise ValueError("setpoint_weight must lie in [0, 1]")
        if self.anti_windup not in ("back_calculation", "conditional"):
            raise ValueError("anti_windup must be 'back_calculation' or 'conditional'")
        if self.tracking_time_s is not None and not (_finite(self.tracking_time_s) and self.tracking_time_s > 0):
            raise ValueError("tracking_time_s must be a finite number > 0 (or None)")
        if not (_finite(self.setpoint_filter_s) and self.setpoint_filter_s >= 0):
            raise ValueError("setpoint_filter_s must be a finite number >= 0")
        if not self.measurement.strip():
            raise ValueError("measurement must name the measured temperature")
        if not self.mv.strip():
            raise ValueError("mv must name the MV")
        if self.mv in self.fixed_mvs:
            raise ValueError(f"fixed_mvs must not contain the PID's own mv {self.mv!r}")
        if not all(_finite(v) for v in self.fixed_mvs.values()):
            raise ValueError("fixed_mvs values must be finite numbers")
        if (self.pressure_measurement is None) != (self.pressure_limit_Pa is None):
            raise ValueError("pressure_measurement and pressure_limit_Pa go together (both or neither)")
        if self.pressure_limit_Pa is not None and not (_finite(self.pressure_limit_Pa) and self.pressure_limit_Pa > 0):
            raise ValueError("pressure_limit_Pa must be a finite number > 0")
        if not (_finite(self.pressure_cut_per_Pa_s) and self.pressure_cut_per_Pa_s > 0):
            raise ValueError("pressure_cut_per_Pa_s must be a finite number > 0")

    @property
    def effective_tracking_time_s(self) -> float:
        """Tt in use: ``tracking_time_s`` or the Åström–Hägglund default."""
        if self.tracking_time_s is not None:
            return self.tracking_time_s
        if self.td_s > 0 and math.isfinite(self.ti_s):
            return math.sqrt(self.ti_s * self.td_s)
        return 0.5 * self.ti_s if math.isfinite(self.ti_s) else 1.0


@dataclass(frozen=True)
class FurnaceMpcSection:
    """Nonlinear MPC of a furnace following its heating curve (``controllers.furnace_mpc``).

    Objective per prediction point: ``tracking_weight·(cv − target)²`` + move suppression
    ``move_weight·(Δu/range)²`` + ``energy_weight·P/P_range`` for power inputs (kW) (at points of a
    power stage, ``stage_power_weight·((P_stage − P)/P_range)²`` instead of tracking), plus soft
    constraints with L1 + L2 penalties (per K, Pa, K/min of violation): cv ≤ curve upper,
    cv ≥ curve lower (soak), |Δcv| ≤ curve ramp rate, chamber pressure ≤ ``pressure_limit_Pa``,
    |surface − core| ≤ ``core_surface_dT_max_K``.
    """

    controlled: str
    """Model signal that follows the curve: a state or aux signal (VIM ``charge_temp_degC``,
    annealer ``core_temp_degC``)."""
    horizon_steps: int = 30
    """Prediction steps N."""
    step_multiple: int = 2
    """Length of a prediction step as a multiple of the unit's ``period_s`` (VIM: 10 s steps, the
    chamber pressure settles in ≈10 s; annealer: 10 min)."""
    rk4_substeps: int = 1
    """RK4 substeps per prediction step; with more than one, pressure and ΔT are also held at
    the substep ends."""
    tracking_weight: float = 1.0
    """Cost per K² of tracking error per point."""
    move_weight: float = 20.0
    """Cost per (Δu per step / MV range)² for MVs not in ``move_weights``."""
    move_weights: dict[str, float] = field(default_factory=dict)
    """Move suppression per MV name."""
    energy_weight: float = 1.0
    """Cost per point of power inputs (unit kW) as a share of their range."""
    stage_power_weight: float = 1.0e3
    """Power stages (``melt`` segments): cost per (shortfall of the power inputs from the stage power /
    their range)² per point; the stage power also caps them there. Process limits (pressure) win."""
    overshoot_penalty: float = 1.0e4
    """L1 penalty per K of the controlled signal above the curve's upper limit."""
    undershoot_penalty: float = 1.0e2
    """L1 penalty per K below the curve's lower limit (soak band)."""
    rate_penalty: float = 1.0e2
    """L1 penalty per K/min beyond the curve's ramp-rate limit."""
    pressure_limit_Pa: float | None = None
    """VIM: chamber pressure limit (soft), Pa; needs the model state ``chamber_pressure_Pa``."""
    pressure_penalty: float = 1.0e6
    """L1 penalty per Pa above ``pressure_limit_Pa``."""
    pressure_bias_filter_s: float = 20.0
    """Time constant over which the measured − estimated pressure is filtered before it tightens the
    pressure limit (0: unfiltered)."""
    core_surface_dT_max_K: float | None = None
    """Annealer: limit of |surface − core|, K (soft); needs the aux ``core_surface_dT_K``."""
    dT_penalty: float = 1.0e5
    """L1 penalty per K beyond ``core_surface_dT_max_K``."""
    band_signals: tuple[str, ...] = ()
    """Further model signals kept below the curve's upper limit like the controlled one (annealer:
    ``surface_temp_degC``, so the outer wraps do not overheat while the core comes up)."""
    backoff_sigmas: float = 2.0
    """The upper, pressure and ΔT limits are tightened by this many standard deviations of the
    estimate (extras ``<signal>_std``) where the estimator reports one."""
    quadratic_penalty_ratio: float = 0.1
    """L2 slack penalty as a share of the L1 one (per squared unit); keeps the NLP smooth."""
    max_iter: int = 60
    """IPOPT iteration cap per solve (deterministic in virtual time)."""
    tol: float = 1.0e-6
    """IPOPT tolerance."""
    acceptable_tol: float = 1.0e-4
    """IPOPT acceptable tolerance."""
    max_solve_wall_s: float = 0.0
    """Wall-time budget per IPOPT attempt, applied only in real-time operation (0: none)."""
    disturbance_values: dict[str, float] = field(default_factory=dict)
    """Model disturbances not measured: value used in the prediction."""
    disturbance_inputs: dict[str, str] = field(default_factory=dict)
    """Model disturbance → recipe input fed forward (falls back to ``disturbance_values``)."""
    fixed_inputs: dict[str, float] = field(default_factory=dict)
    """Model inputs no MV drives (e.g. the annealer's fan with no fan MV): value in the prediction."""

    def __post_init__(self) -> None:
        if not self.controlled.strip():
            raise ValueError("controlled must name a model state or aux signal")
        if self.horizon_steps < 2:
            raise ValueError("horizon_steps must be >= 2")
        if self.step_multiple < 1:
            raise ValueError("step_multiple must be >= 1")
        if self.rk4_substeps < 1:
            raise ValueError("rk4_substeps must be >= 1")
        for name in ("tracking_weight", "move_weight", "energy_weight", "stage_power_weight",
                     "quadratic_penalty_ratio"):
            v = getattr(self, name)
            if not (_finite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0")
        for name in ("overshoot_penalty", "undershoot_penalty", "rate_penalty", "pressure_penalty", "dT_penalty"):
            v = getattr(self, name)
            if not (_finite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0")
        if any(not (_finite(w) and w >= 0) for w in self.move_weights.values()):
            raise ValueError("move_weights must be finite numbers >= 0")
        if self.pressure_limit_Pa is not None and not (_finite(self.pressure_limit_Pa) and self.pressure_limit_Pa > 0):
            raise ValueError("pressure_limit_Pa must be a finite number > 0 (or None)")
        if self.core_surface_dT_max_K is not None and not (
                _finite(self.core_surface_dT_max_K) and self.core_surface_dT_max_K > 0):
            raise ValueError("core_surface_dT_max_K must be a finite number > 0 (or None)")
        if not (_finite(self.pressure_bias_filter_s) and self.pressure_bias_filter_s >= 0):
            raise ValueError("pressure_bias_filter_s must be a finite number >= 0")
        if not (_finite(self.backoff_sigmas) and self.backoff_sigmas >= 0):
            raise ValueError("backoff_sigmas must be a finite number >= 0")
        if any(not n.strip() for n in self.band_signals):
            raise ValueError("band_signals must name model signals")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if not (0 < self.tol <= self.acceptable_tol):
            raise ValueError("tol and acceptable_tol need 0 < tol <= acceptable_tol")
        if not (_finite(self.max_solve_wall_s) and self.max_solve_wall_s >= 0):
            raise ValueError("max_solve_wall_s must be a finite number >= 0 (0: no budget)")
        for name in ("disturbance_values", "fixed_inputs"):
            if not all(_finite(v) for v in getattr(self, name).values()):
                raise ValueError(f"{name} values must be finite numbers")
