"""Heating-curve and batch sections of a furnace recipe (frozen, typed, validated at load).

A curve is a list of segments applied to one controlled temperature
(``curve.controlled``): ``ramp`` up at a rate to a target, ``soak`` for a time
inside a band, ``hold_until`` a permissive-style condition holds (with a
timeout), ``melt`` down at a stage power until a condition holds (with a
timeout), ``cool`` down at a rate to a target. :class:`CurveSection` checks the
segments against each other and against the rate limits the engineer states;
:func:`check_against_model` flags ramps the process model cannot follow at full
power. The batch that runs a curve is :class:`apc.batch.Batch`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from apc.recipe.permissive import PermissiveExpr, PermissiveSyntaxError, parse_permissive

if TYPE_CHECKING:
    from sim.models.base import ProcessModel

__all__ = [
    "CONDITION_KINDS",
    "BatchSection",
    "CurveSection",
    "CurveSegmentError",
    "Segment",
    "SegmentKind",
    "check_against_model",
]

SegmentKind = Literal["ramp", "soak", "hold_until", "melt", "cool"]

_FIELDS_OF: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (required fields, optional fields)
    "ramp": (("rate_degC_min", "target_degC"), ()),
    "soak": (("time_min", "band_degC"), ("target_degC",)),
    "hold_until": (("condition", "timeout_min"), ()),
    "melt": (("power_kW", "condition", "timeout_min"), ()),
    "cool": (("rate_degC_min", "target_degC"), ()),
}
_SEGMENT_FIELDS = ("rate_degC_min", "target_degC", "time_min", "band_degC", "condition", "timeout_min", "power_kW")
CONDITION_KINDS = ("hold_until", "melt")
"""Segment kinds that end when their ``condition`` holds (HELD on ``timeout_min``)."""


class CurveSegmentError(ValueError):
    """A cross-segment problem of a curve; ``index`` is the segment it concerns.

    The message starts with ``segments`` so that the recipe loader files it
    under ``curve.segments``; ``index`` lets a caller point at the segment's line.
    """

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        super().__init__(f"segments [{index}] {message}")


@dataclass(frozen=True)
class Segment:
    """One segment of a heating curve; which fields apply depends on ``kind``.

    ``ramp``/``cool``: ``rate_degC_min`` (> 0, the magnitude) and ``target_degC``;
    ``soak``: ``time_min`` and ``band_degC`` = [low, high], the reference is the
    band's middle unless ``target_degC`` (inside the band) is given;
    ``hold_until``: ``condition`` (permissive syntax over signal names) and
    ``timeout_min`` (then the batch goes HELD with the reason);
    ``melt``: a power stage (the melt-down of a VIM charge): the power input
    is driven to ``power_kW`` (less only where a process limit such as the
    chamber pressure demands) and the temperature is not tracked, since it sits
    on the melting plateau; ends like a hold_until, on ``condition`` (e.g. the
    thermocouple rising past the plateau) or HELD after ``timeout_min``.
    """

    kind: SegmentKind
    rate_degC_min: float | None = None
    target_degC: float | None = None
    time_min: float | None = None
    band_degC: tuple[float, float] | None = None
    condition: str | None = None
    timeout_min: float | None = None
    power_kW: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _FIELDS_OF:
            raise ValueError(f"kind must be one of {', '.join(_FIELDS_OF)}, not {self.kind!r}")
        required, optional = _FIELDS_OF[self.kind]
        takes = ", ".join(required + optional)
        for name in _SEGMENT_FIELDS:
            given = getattr(self, name) is not None
            if given and name not in required + optional:
                raise ValueError(f"{name} is not a field of a {self.kind} segment (it takes {takes})")
        for name in required:
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required for a {self.kind} segment")
        for name in ("rate_degC_min", "time_min", "timeout_min", "power_kW"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number > 0, got {value:g}")
        if self.band_degC is not None:
            lo, hi = self.band_degC
            if not lo < hi:
                raise ValueError(f"band_degC must be [low, high] with low < high, got [{lo:g}, {hi:g}]")
            if self.target_degC is not None and not lo <= self.target_degC <= hi:
                raise ValueError(f"target_degC {self.target_degC:g} lies outside band_degC [{lo:g}, {hi:g}]")
        if self.condition is not None:
            try:
                parse_permissive(self.condition)
            except PermissiveSyntaxError as exc:
                raise ValueError(f"condition has a syntax error at column {exc.column}: {exc.message}") from None

    @property
    def reference_degC(self) -> float | None:
        """Temperature the segment leads to or keeps (ramp/cool target, soak reference); None for
        hold_until and melt."""
        if self.kind == "soak":
            assert self.band_degC is not None
            return self.target_degC if self.target_degC is not None else 0.5 * sum(self.band_degC)
        return self.target_degC

    @property
    def time_s(self) -> float:
        """Soak time (s), without any extension."""
        return 60.0 * (self.time_min or 0.0)

    @property
    def timeout_s(self) -> float:
        """hold_until / melt timeout (s)."""
        return 60.0 * (self.timeout_min or 0.0)

    def condition_expr(self) -> PermissiveExpr:
        """The parsed hold_until / melt condition (ValueError for other kinds)."""
        if self.condition is None:
            raise ValueError(f"a {self.kind} segment has no condition")
        return parse_permissive(self.condition)

    def describe(self) -> str:
        """Short human text, e.g. ``ramp at 25 K/min to 950 °C``."""
        if self.kind in ("ramp", "cool"):
            return f"{self.kind} at {self.rate_degC_min:g} K/min to {self.target_degC:g} °C"
        if self.kind == "soak":
            assert self.band_degC is not None
            return (f"soak {self.time_min:g} min in [{self.band_degC[0]:g}, {self.band_degC[1]:g}] °C"
                    f" at {self.reference_degC:g} °C")
        if self.kind == "melt":
            return f"melt at {self.power_kW:g} kW until '{self.condition}' (timeout {self.timeout_min:g} min)"
        return f"hold until '{self.condition}' (timeout {self.timeout_min:g} min)"


@dataclass(frozen=True)
class CurveSection:
    """A heating curve: segments applied to ``controlled`` from ``start_degC``.

    Validated at construction: at least one segment; ramps go up and cools
    down from the temperature before them; ramp rates ≤
    ``max_heating_rate_degC_min`` and cool rates ≤ ``max_cooling_rate_degC_min``
    (what the recipe's power limits allow, stated by the engineer); a soak band
    contains the temperature before it (the previous target, or
    ``start_degC``).
    """

    controlled: str
    """Signal the curve applies to (``charge_temp_degC`` for VIM, the estimated
    ``core_temp_degC`` for the annealer)."""
    start_degC: float
    """Nominal start temperature (validates the first segment's direction)."""
    max_heating_rate_degC_min: float
    max_cooling_rate_degC_min: float
    segments: tuple[Segment, ...]
    ramp_lag_limit_degC: float | None = None
    """Guaranteed ramp: while the controlled temperature lags the ramp/cool
    reference by more than this, the reference waits (None: it never waits)."""
    pressure_limit_Pa: float | None = None
    """Vacuum furnaces: chamber pressure the batch must never exceed (the process limit that
    KPIs judge; a controller may keep its own margin below it)."""
    core_surface_dT_max_K: float | None = None
    """Annealing: largest |surface − core| the load may see (process limit, judged by KPIs)."""

    def __post_init__(self) -> None:
        if not self.controlled.strip():
            raise ValueError("controlled must name a signal")
        for name in ("pressure_limit_Pa", "core_surface_dT_max_K"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0 (or left out)")
        for name in ("max_heating_rate_degC_min", "max_cooling_rate_degC_min"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.ramp_lag_limit_degC is not None and not self.ramp_lag_limit_degC > 0:
            raise ValueError("ramp_lag_limit_degC must be > 0 (or null: the reference never waits)")
        if not self.segments:
            raise ValueError("segments must list at least one segment")
        for k, (seg, before) in enumerate(zip(self.segments, self.temperatures_before())):
            if seg.kind == "ramp":
                assert seg.target_degC is not None and seg.rate_degC_min is not None
                if not seg.target_degC > before:
                    raise CurveSegmentError(k, f"(ramp): target {seg.target_degC:g} °C is not above the "
                                               f"temperature before it ({before:g} °C); use a cool to go down")
                if seg.rate_degC_min > self.max_heating_rate_degC_min:
                    raise CurveSegmentError(k, f"(ramp): rate {seg.rate_degC_min:g} K/min exceeds "
                                               f"max_heating_rate_degC_min ({self.max_heating_rate_degC_min:g})")
            elif seg.kind == "cool":
                assert seg.target_degC is not None and seg.rate_degC_min is not None
                if not seg.target_degC < before:
                    raise CurveSegmentError(k, f"(cool): target {seg.target_degC:g} °C is not below the "
                                               f"temperature before it ({before:g} °C); use a ramp to go up")
                if seg.rate_degC_min > self.max_cooling_rate_degC_min:
                    raise CurveSegmentError(k, f"(cool): rate {seg.rate_degC_min:g} K/min exceeds "
                                               f"max_cooling_rate_degC_min ({self.max_cooling_rate_degC_min:g})")
            elif seg.kind == "soak":
                assert seg.band_degC is not None
                lo, hi = seg.band_degC
                if not lo <= before <= hi:
                    raise CurveSegmentError(k, f"(soak): band [{lo:g}, {hi:g}] °C does not contain the "
                                               f"temperature before it ({before:g} °C)")

    def temperatures_before(self) -> tuple[float, ...]:
        """Nominal reference at the start of each segment (``start_degC``, then each previous target)."""
        out: list[float] = []
        ref = self.start_degC
        for seg in self.segments:
            out.append(ref)
            nxt = seg.reference_degC
            if nxt is not None:
                ref = nxt
        return tuple(out)

    def signal_names(self) -> frozenset[str]:
        """Signals the curve reads: ``controlled`` and the names in hold_until / melt conditions."""
        names = {self.controlled}
        for seg in self.segments:
            if seg.condition is not None:
                names |= seg.condition_expr().names
        return frozenset(names)

    def fingerprint(self) -> str:
        """SHA-256 of the curve's content (a batch state file is tied to it)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class BatchSection:
    """How the batch runs its curve (persistence, soak clock, preview)."""

    state_file: str
    """Batch state file, relative to the state directory given at run time."""
    auto_resume_after_s: float | None = None
    """After a restart the batch comes back HELD; if set, it resumes by itself
    this long after the restore (audited as ``auto_resume``). None: an operator
    resumes."""
    soak_signal: str | None = None
    """Signal whose presence in the soak band runs the soak clock (default: the
    curve's controlled signal)."""
    soak_extension_min: float = 0.0
    """Fixed time added to every soak (the plant's baseline practice, sized for the worst-case load)."""
    soak_margin_sigmas: float = 0.0
    """Guaranteed soak on an estimate: the soak clock runs only while the signal is this many of its
    standard deviations (``<signal>_std``, where the estimator reports one) inside the band."""
    soak_confirm_signal: str | None = None
    """Guaranteed soak on an estimate beside the soak clock: when set, a soak also needs this signal
    to have been in the band (by ``soak_margin_sigmas`` of its std) for the soak's own time before it
    ends, whatever the clock's extension. The PID baseline's batch sets it to the curve's controlled
    (estimated) signal when learning shortens its extension (``learning.guarantee_soak``)."""
    baseline_soak_signal: str | None = None
    """The PID baseline's batch: the measured signal its soak clock (and ramp wait) runs on (plants
    cannot see the core); default ``soak_signal``."""
    baseline_soak_extension_min: float = 0.0
    """The PID baseline's batch: fixed extension of every soak, sized for the worst-case load."""
    preview_points: int = 60
    """Points of the preview handed to the controller each cycle."""
    preview_step_s: float = 60.0
    """Spacing of the preview points."""

    def __post_init__(self) -> None:
        text = self.state_file.strip()
        if not text or PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute():
            raise ValueError("state_file must be a relative path inside the state directory")
        if ".." in PurePosixPath(text.replace("\\", "/")).parts:
            raise ValueError("state_file must not leave the state directory ('..')")
        if self.auto_resume_after_s is not None and not self.auto_resume_after_s >= 0:
            raise ValueError("auto_resume_after_s must be >= 0 (or null: an operator resumes)")
        for key in ("soak_signal", "soak_confirm_signal"):
            name = getattr(self, key)
            if name is not None and not name.strip():
                raise ValueError(f"{key} must name a signal (or be left out)")
        if not self.soak_extension_min >= 0:
            raise ValueError("soak_extension_min must be >= 0")
        if not self.soak_margin_sigmas >= 0:
            raise ValueError("soak_margin_sigmas must be >= 0")
        if not self.baseline_soak_extension_min >= 0:
            raise ValueError("baseline_soak_extension_min must be >= 0")
        if self.preview_points < 1:
            raise ValueError("preview_points must be >= 1")
        if not self.preview_step_s > 0:
            raise ValueError("preview_step_s must be > 0")


# ---------------------------------------------------------------- physical check

_MAX_STEPS = 20000
_MIN_STEPS = 200


def check_against_model(
    curve: CurveSection,
    model: ProcessModel,
    p: Mapping[str, float] | Sequence[float] | np.ndarray | None,
    power_max_kW: float,
    *,
    power_input: str | None = None,
    inputs: Mapping[str, float] | None = None,
    disturbances: Mapping[str, float] | None = None,
) -> list[str]:
    """Ramps the model cannot follow at full power; one message per ramp, naming its index.

    For each ramp, the model is put in a steady hold at the temperature
    before the ramp (all states at rest, ``controlled`` there), then run at
    ``power_max_kW`` (RK4, CasADi). The ramp is impossible when the controlled
    signal never reaches the target within the horizon (4 × the ramp's
    duration plus 4 × the slowest time constant), or when its rate as it
    crosses the target is below the ramp rate. A hold is the state after a
    soak; after a ramp the furnace is hotter around the load than in a hold,
    so a ramp straight after another ramp is judged conservatively. Cools are
    not checked (forced cooling is not in the models).

    ``p``: parameter overrides by name, or a full parameter vector, or None
    (nominal). ``power_input``: the model input set to ``power_max_kW``
    (default: its only input in kW). ``inputs``: the other inputs (default: 1.0
    for inputs in unit ``1``, e.g. full gas circulation). ``disturbances``:
    default 25 for °C, else 0. ``controlled`` must be a state or aux signal.
    """
    import casadi as ca  # heavy; only needed here

    from sim.models.base import rk4

    name = curve.controlled
    if name not in model.state_names and name not in model.aux_names:
        return [f"controlled: '{name}' is not a state or aux signal of model '{model.name}'"]
    ramps = [k for k, s in enumerate(curve.segments) if s.kind == "ramp"]
    if not ramps:
        return []
    if power_input is None:
        kw = [s.name for s in model.inputs if s.unit == "kW"]
        if len(kw) != 1:
            raise ValueError(f"model '{model.name}' has {len(kw)} inputs in kW: name power_input")
        power_input = kw[0]
    u0 = np.zeros(len(model.inputs))
    for i, s in enumerate(model.inputs):
        if s.name == power_input:
            continue
        given = (inputs or {}).get(s.name)
        if given is None and s.unit != "1":
            raise ValueError(f"give a value for input '{s.name}' of model '{model.name}' (inputs=...)")
        u0[i] = 1.0 if given is None else float(given)
    i_pow = model.input_names.index(power_input)
    d0 = np.array([float((disturbances or {}).get(s.name, 25.0 if s.unit == "degC" else 0.0))
                   for s in model.disturbances])
    if p is None or isinstance(p, Mapping):
        p_vec = model.parameter_vector(p)
    else:
        p_vec = np.asarray(p, dtype=float)

    nx = len(model.states)
    x = ca.SX.sym("x", nx)
    u = ca.SX.sym("u", len(model.inputs))
    h = ca.SX.sym("h")
    d, pp = ca.DM(d0), ca.DM(p_vec)
    xdot = model.f(x, u, d, pp)
    if name in model.state_names:
        ctrl = x[model.state_names.index(name)]
    else:
        ctrl = model.aux(x, u, d, pp)[model.aux_names.index(name)]
    # Cumulative states (nothing depends on them, e.g. evaporated mass) stay at 0 and get no equation.
    jac_sp = ca.jacobian(ca.vertcat(xdot, ctrl), x).sparsity()
    keep = [j for j in range(nx) if jac_sp.colind()[j + 1] > jac_sp.colind()[j]]
    xk = ca.vertcat(*[x[j] for j in keep])
    pw = u[i_pow]
    # Steady hold: f(kept) = 0 and ctrl = T0, unknowns (kept states, power).
    T0 = ca.SX.sym("T0")
    z = ca.vertcat(xk, pw)
    u_hold = ca.vertcat(*[pw if i == i_pow else ca.DM(u0[i]) for i in range(len(model.inputs))])
    x_full = ca.vertcat(*[x[j] if j in keep else ca.DM(0.0) for j in range(nx)])
    f_hold = model.f(x_full, u_hold, d, pp)
    c_hold = ctrl if name in model.state_names else model.aux(x_full, u_hold, d, pp)[model.aux_names.index(name)]
    g = ca.vertcat(*[f_hold[j] for j in keep], c_hold - T0)
    G = ca.Function("hold", [z, T0], [g, ca.jacobian(g, z), ca.jacobian(f_hold, x)])
    # RK4 step with symbolic step length; also returns ctrl after the step.
    x_next = rk4(lambda z: model.f(z, u, d, pp), x, h)[-1]
    ctrl_fn = ca.Function("ctrl", [x, u], [ctrl])
    step = ca.Function("step", [x, u, h], [x_next, ctrl_fn(x_next, u)])

    unit_degC = [s.unit == "degC" for s in model.states]
    u_full = u0.copy()
    u_full[i_pow] = power_max_kW
    messages: list[str] = []
    before = curve.temperatures_before()
    for k in ramps:
        seg = curve.segments[k]
        assert seg.rate_degC_min is not None and seg.target_degC is not None
        T_start, target, rate = before[k], seg.target_degC, seg.rate_degC_min
        x0, jac = _steady_hold(G, keep, nx, unit_degC, T_start)
        if x0 is None:
            messages.append(f"segments[{k}]: cannot find a steady hold of model '{model.name}' at "
                            f"{T_start:g} °C to check the {seg.describe()}")
            continue
        eig = np.abs(np.linalg.eigvals(jac[np.ix_(keep, keep)]).real)
        eig = eig[eig > 1e-12]
        tau_slow = 1.0 / eig.min() if eig.size else 0.0
        duration_s = 60.0 * (target - T_start) / rate
        horizon_s = min(4.0 * duration_s + 4.0 * tau_slow, 400.0 * 3600.0)
        h_max = 1.5 / eig.max() if eig.size else horizon_s / _MIN_STEPS
        n = int(min(max(math.ceil(horizon_s / h_max), _MIN_STEPS), _MAX_STEPS))
        dt = horizon_s / n
        _, c = step.mapaccum("run", n)(x0, u_full, dt)
        traj = np.concatenate([[T_start], np.asarray(c).ravel()])
        hit = np.flatnonzero(traj >= target)
        where = f"segments[{k}] ({seg.describe()})"
        if hit.size == 0 or not np.all(np.isfinite(traj[: hit[0] + 1])):
            top = np.nanmax(traj)
            messages.append(f"{where} is impossible: at full power ({power_max_kW:g} kW) from a hold at "
                            f"{T_start:g} °C the model's {name} reaches only {top:.0f} °C in "
                            f"{horizon_s / 3600.0:.1f} h")
            continue
        i = int(hit[0])
        reach_rate = (traj[i] - traj[i - 1]) / dt * 60.0 if i > 0 else math.inf
        if reach_rate < rate:
            messages.append(f"{where} is impossible: at full power ({power_max_kW:g} kW) the model's {name} "
                            f"rises at only {reach_rate:.3g} K/min at {target:g} °C")
    return messages


_Residual = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _steady_hold(G: Callable[..., Any], keep: list[int], nx: int, unit_degC: list[bool],
                 T0: float) -> tuple[np.ndarray | None, np.ndarray]:
    """Full state of the steady hold at ``T0`` and df/dx there; (None, df/dx) if not found."""

    def residual(zz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g, J, A = G(zz, T0)
        return np.asarray(g).ravel(), np.asarray(J), np.asarray(A)

    z0 = np.array([T0 if unit_degC[j] else 0.0 for j in keep] + [0.0])
    with np.errstate(over="ignore", invalid="ignore"):
        z, A = _newton(residual, z0)
    if z is None:
        return None, A
    x0 = np.zeros(nx)
    x0[keep] = z[:-1]
    return x0, A


def _newton(residual: _Residual, z: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Damped Newton (backtracking on the residual norm); the root or None, and the last df/dx."""
    g, J, A = residual(z)
    for _ in range(100):
        norm = float(np.linalg.norm(g))
        if norm < 1e-10:
            break
        try:
            dz = np.linalg.solve(J, -g)
        except np.linalg.LinAlgError:
            return None, A
        alpha = 1.0
        while True:
            g_new, J_new, A_new = residual(z + alpha * dz)
            if np.all(np.isfinite(g_new)) and np.linalg.norm(g_new) < (1.0 - 1e-4 * alpha) * norm:
                break
            alpha *= 0.5
            if alpha < 1e-6:
                return None, A
        z = z + alpha * dz
        g, J, A = g_new, J_new, A_new
        if np.max(np.abs(alpha * dz)) < 1e-12 * (1.0 + np.max(np.abs(z))):
            break
    ok = bool(np.all(np.isfinite(g)) and np.linalg.norm(g) < 1e-6)
    return (z if ok else None), A
