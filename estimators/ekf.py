"""Extended Kalman filter on a :class:`~sim.models.base.ProcessModel` (filterpy based).

Notation (filterpy / textbook): ``x`` state, ``P`` its covariance, ``F`` the
Jacobian of the discrete state map, ``Q`` process noise, ``z`` a measurement,
``H`` its Jacobian, ``R`` its noise variance, ``y`` the innovation, ``S`` its
variance, ``K`` the gain.

The filter state is the model state augmented with random-walk parameter
biases that enter the model through its parameters (``log``:
``p = p_nom·exp(b)``; ``add``: ``p = p_nom + b``) and, optionally, coloured
measurement-noise states (first-order Gauss–Markov, added to one measurement). Propagation is one CasADi
function, built once, returning an RK4 step over a symbolic ``dt`` and its
Jacobian ``F = ∂x⁺/∂x`` (CasADi ``jacobian``); measurement functions are built
the same way from ``model.h``, ``model.aux`` or a state.

Delayed samples (lab results, dips) are fused at their sample time by
re-filtering: every cycle's prior, inputs, transition Jacobian ``F`` and noise
``Q``, and its accepted measurements with their linearisation, are kept in a
bounded history. A late sample rolls the filter back to the newest buffered
time at or before its sample time and is fused there exactly; the buffered
cycles since are re-filtered *linearised about the trajectory the filter
took*: x⁻ = x⁻_old + F (x⁺_prev − x⁺_prev,old), P⁻ = F P⁺ F' + Q, and each
measurement is re-applied with h(x) ≈ h(x_lin) + H (x − x_lin). That is the
extended Kalman filter's own first-order model of the interval, costs linear
algebra only (no model evaluations: about 30 ms for an hour of 5 s cycles
against 0.2–0.8 s for re-propagating the model), and differs from a full
nonlinear re-run by second-order terms of the correction.

The filter is pure: no clocks, no I/O. Problems (held inputs, gated outliers,
samples too old, covariance repairs) are appended to :attr:`ModelEkf.events`
for the owner to log and drain.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import casadi as ca
import numpy as np
from filterpy.kalman import ExtendedKalmanFilter

from sim.models.base import ProcessModel, rk4
from sim.models.buffered import BufferedFunction

_SPD_JITTER_REL = 1e-9
"""Diagonal inflation (relative to the mean variance) tried first when P is not SPD."""


@dataclass(frozen=True)
class BiasState:
    """A random-walk parameter bias appended to the model state.

    ``kind="log"``: ``p = p_nom·exp(b)`` (relative bias, unit 1);
    ``kind="add"``: ``p = p_nom + b`` (unit of the parameter).
    """

    name: str
    parameter: str
    kind: Literal["log", "add"]
    unit: str = "1"


@dataclass(frozen=True)
class NoiseState:
    """Coloured (first-order Gauss–Markov) noise on one measurement, carried as a state.

    ``b⁺ = e^(−dt/τ)·b + w`` with stationary std ``std``; the measurement
    ``measurement`` is modelled as ``h(x) + b`` (plus its white noise ``R``).
    Without it, noise correlated over several samples is read as signal, and
    in closed loop (moves made on the noisy signal) it biases the estimate.
    """

    name: str
    measurement: str
    tau_s: float
    std: float
    unit: str = ""


@dataclass(frozen=True)
class FilterEvent:
    """Something the owner should log: a rejected sample, a held input, a repair.

    ``kind`` is one of ``rejected_outlier``, ``rejected_too_old``,
    ``rejected_not_finite``, ``input_held``, ``bad_dt``, ``covariance_repaired``.
    ``sigma`` is the normalised innovation |y|/sqrt(S) (NaN when not computed).
    """

    kind: str
    name: str
    t_s: float
    value: float = math.nan
    sigma: float = math.nan
    t_sample_s: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of one measurement update."""

    name: str
    accepted: bool
    z: float
    innovation: float = math.nan
    sigma: float = math.nan
    reason: str = ""
    delayed: bool = False


@dataclass
class _Meas:
    """One accepted scalar measurement of a buffered cycle, with the linearisation it was fused with."""

    name: str
    z: float
    R: float
    H: np.ndarray
    """Its Jacobian row at ``x_lin``."""
    hx: float
    """h(x_lin)."""
    x_lin: np.ndarray
    """The state it was fused at."""


@dataclass
class _Step:
    """One buffered cycle: prior at ``t_s`` after a step of ``dt_s`` with ``u``, ``d``."""

    t_s: float
    dt_s: float
    u: np.ndarray
    d: np.ndarray
    x_prior: np.ndarray
    P_prior: np.ndarray
    meas: list[_Meas] = field(default_factory=list)
    F: np.ndarray | None = None
    """Transition Jacobian of the step that led here (``None`` for the first)."""
    Q: np.ndarray | None = None
    """Its process noise."""
    x_post: np.ndarray | None = None
    """The state after this cycle's measurements (set when the next cycle predicts)."""


class _Ekf(ExtendedKalmanFilter):  # type: ignore[misc]
    """filterpy's EKF with the state propagation replaced by the model's discrete map."""

    x_next: np.ndarray

    def predict_x(self, u: object = 0) -> None:
        """x = f(x, u, d, p; dt), evaluated before :meth:`predict` is called."""
        self.x = self.x_next


class ModelEkf:
    """EKF whose state is ``model.states`` plus random-walk parameter biases.

    Parameters
    ----------
    model : ProcessModel
    p_nominal : np.ndarray(n_p)
        Nominal parameter vector (biases act on it).
    x0 : Mapping[str, float]
        Initial state by name (every model state and bias).
    std0 : Mapping[str, float]
        Initial standard deviation by name (missing: 0).
    process_std_per_sqrt_h : Mapping[str, float]
        Random-walk process noise per state, std per sqrt(hour): ``Q = diag(q²·dt/3600)``.
    biases : sequence of BiasState
    noise_states : sequence of NoiseState
        Coloured measurement noise; initial value 0 and std its stationary std
        unless ``x0``/``std0`` say otherwise.
    gate_sigma : float
        Innovations with |y|/sqrt(S) above this are rejected.
    history_h : float
        Length of the buffered history used for delayed samples.
    max_step_s : float
        Longest single RK4 step; longer ``dt`` are split.
    bounds : Mapping[str, (lo, hi)]
        Physical bounds; the posterior state is projected into them.
    u0, d0 : np.ndarray, optional
        Inputs held when the first inputs are not finite (default zeros).
    t0_s : float
        Time of ``x0``.
    """

    def __init__(
        self,
        model: ProcessModel,
        p_nominal: np.ndarray,
        x0: Mapping[str, float],
        std0: Mapping[str, float],
        process_std_per_sqrt_h: Mapping[str, float],
        *,
        biases: Sequence[BiasState] = (),
        noise_states: Sequence[NoiseState] = (),
        gate_sigma: float = 4.0,
        history_h: float = 2.0,
        max_step_s: float = 10.0,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        u0: np.ndarray | None = None,
        d0: np.ndarray | None = None,
        t0_s: float = 0.0,
        max_events: int = 1000,
    ) -> None:
        self.model = model
        self.biases = tuple(biases)
        self.noise_states = tuple(noise_states)
        if any(not c.tau_s > 0.0 or not c.std >= 0.0 for c in self.noise_states):
            raise ValueError("noise states need tau_s > 0 and std >= 0")
        self.names: tuple[str, ...] = (model.state_names + tuple(b.name for b in self.biases)
                                       + tuple(c.name for c in self.noise_states))
        self.units: tuple[str, ...] = (tuple(s.unit for s in model.states) + tuple(b.unit for b in self.biases)
                                       + tuple(c.unit for c in self.noise_states))
        x0 = {**{c.name: 0.0 for c in self.noise_states}, **x0}
        std0 = {**{c.name: c.std for c in self.noise_states}, **std0}
        unknown = (set(x0) | set(std0) | set(process_std_per_sqrt_h) | set(bounds or {})) - set(self.names)
        if unknown:
            raise KeyError(f"unknown state name(s) {sorted(unknown)}; states: {list(self.names)}")
        missing = set(self.names) - set(x0)
        if missing:
            raise KeyError(f"x0 lacks state(s) {sorted(missing)}")
        self.p = np.asarray(p_nominal, dtype=float).copy()
        if self.p.shape != (len(model.parameters),):
            raise ValueError(f"p_nominal must have {len(model.parameters)} entries")
        n = len(self.names)
        self.n = n
        self.gate_sigma = float(gate_sigma)
        self.history_s = float(history_h) * 3600.0
        self.max_step_s = float(max_step_s)
        self._q_var_per_s = np.array(
            [float(process_std_per_sqrt_h.get(k, 0.0)) ** 2 / 3600.0 for k in self.names]
        )
        lo = np.full(n, -np.inf)
        hi = np.full(n, np.inf)
        for k, (a, b) in (bounds or {}).items():
            lo[self.names.index(k)], hi[self.names.index(k)] = a, b
        self._lo, self._hi = lo, hi
        self._noise_idx = np.array([self.names.index(c.name) for c in self.noise_states], dtype=int)
        self._noise_tau = np.array([c.tau_s for c in self.noise_states])
        self._noise_var = np.array([c.std**2 for c in self.noise_states])
        self._x0 = np.array([float(x0[k]) for k in self.names])
        self._P0 = np.diag([float(std0.get(k, 0.0)) ** 2 for k in self.names])
        nu, nd = len(model.inputs), len(model.disturbances)
        self._u0 = np.zeros(nu) if u0 is None else np.asarray(u0, dtype=float).copy()
        self._d0 = np.zeros(nd) if d0 is None else np.asarray(d0, dtype=float).copy()
        self._t0 = float(t0_s)
        self._max_events = int(max_events)
        self._step_fn = BufferedFunction(self._build_step())
        self._q_step: dict[float, np.ndarray] = {}
        """diag(q²·h) by sub-step length h."""
        self._meas_fns: dict[str, BufferedFunction] = {}
        self._aux_fn: BufferedFunction | None = None
        self.reset()

    # ------------------------------------------------------------------ build
    def _effective_parameters(self, p: ca.SX, b: ca.SX) -> ca.SX:
        """Parameters with the biases applied: p_i·exp(b) or p_i + b."""
        parts = [p[i] for i in range(p.shape[0])]
        for j, bias in enumerate(self.biases):
            i = self.model.parameter_names.index(bias.parameter)
            parts[i] = parts[i] * ca.exp(b[j]) if bias.kind == "log" else parts[i] + b[j]
        return ca.vertcat(*parts)

    def _symbols(self) -> tuple[ca.SX, ca.SX, ca.SX, ca.SX, ca.SX]:
        return self.symbols()

    def symbols(self) -> tuple[ca.SX, ca.SX, ca.SX, ca.SX, ca.SX]:
        """Fresh symbols ``(xa, u, d, p, p_eff)``: filter state, model inputs, disturbances, nominal
        parameters and the parameters with the biases applied, for functions of the estimate that
        take ``(self.x, u_last, d_last, self.p)``."""
        m = self.model
        xa = ca.SX.sym("xa", self.n)
        u = ca.SX.sym("u", len(m.inputs))
        d = ca.SX.sym("d", len(m.disturbances))
        p = ca.SX.sym("p", len(m.parameters))
        nx = len(m.states)
        return xa, u, d, p, self._effective_parameters(p, xa[nx:])

    def _build_step(self) -> ca.Function:
        """F(xa, u, d, p, dt) -> (x_next, A = ∂x_next/∂xa), one classical RK4 step (A dense)."""
        xa, u, d, p, pe = self._symbols()
        dt = ca.SX.sym("dt")
        nx = len(self.model.states)
        nb = nx + len(self.biases)
        x = xa[:nx]
        f = self.model.f
        decay = [ca.exp(-dt / c.tau_s) * xa[nb + j] for j, c in enumerate(self.noise_states)]  # b⁺ = e^(−dt/τ) b
        x_next = ca.vertcat(rk4(lambda z: f(z, u, d, pe), x, dt)[-1], xa[nx:nb], *decay)  # biases: b⁺ = b
        A = ca.densify(ca.jacobian(x_next, xa))
        return ca.Function("ekf_step", [xa, u, d, p, dt], [x_next, A], {"cse": True})

    def _measurement_fn(self, *names: str) -> BufferedFunction:
        """h(xa, u, d, p) -> (y, H) for outputs, aux signals or states called ``names`` (H dense)."""
        key = ",".join(names)
        fn = self._meas_fns.get(key)
        if fn is not None:
            return fn
        m = self.model
        xa, u, d, p, pe = self._symbols()
        nx = len(m.states)
        h, a = m.h(xa[:nx], u, d, pe), m.aux(xa[:nx], u, d, pe)
        ys = []
        for name in names:
            if name in m.output_names:
                ys.append(h[m.output_names.index(name)])
            elif name in m.aux_names:
                ys.append(a[m.aux_names.index(name)])
            elif name in self.names:
                ys.append(xa[self.names.index(name)])
            else:
                raise KeyError(f"{name!r} is neither an output, aux signal nor state of {m.name!r}")
        for j, name in enumerate(names):
            for c in self.noise_states:
                if c.measurement == name:
                    ys[j] = ys[j] + xa[self.names.index(c.name)]  # y = h(x) + b
        y = ca.vertcat(*ys)
        fn = BufferedFunction(ca.Function(f"ekf_h_{len(self._meas_fns)}", [xa, u, d, p],
                                          [y, ca.densify(ca.jacobian(y, xa))], {"cse": True}))
        self._meas_fns[key] = fn
        return fn

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Back to ``x0``, ``P0`` at ``t0_s``; history and events cleared."""
        self._kf = _Ekf(self.n, 1)
        self._kf.x = self._x0.reshape(-1, 1).copy()
        self._kf.P = self._P0.copy()
        self.t_s = self._t0
        self._u_last = self._u0.copy()
        self._d_last = self._d0.copy()
        self._hist: deque[_Step] = deque()
        self._hist.append(_Step(self.t_s, 0.0, self._u_last.copy(), self._d_last.copy(),
                                self.x.copy(), self.P.copy()))
        self.events: list[FilterEvent] = []
        self.repaired = False
        self.n_rejected = 0

    @property
    def x(self) -> np.ndarray:
        """Current state estimate, shape (n,)."""
        return np.asarray(self._kf.x, dtype=float).reshape(-1)

    @property
    def P(self) -> np.ndarray:
        """Current covariance, shape (n, n)."""
        return np.asarray(self._kf.P, dtype=float)

    @property
    def u_last(self) -> np.ndarray:
        """Inputs used in the last prediction (after holding non-finite ones)."""
        return self._u_last.copy()

    @property
    def d_last(self) -> np.ndarray:
        """Disturbances used in the last prediction (after holding non-finite ones)."""
        return self._d_last.copy()

    def index(self, name: str) -> int:
        """Position of a state in ``x``."""
        return self.names.index(name)

    def set_states(self, values: Mapping[str, tuple[float, float]]) -> None:
        """Overwrite states by name with (value, std): value clipped to its bounds, variance std²,
        no correlation with the other states (a prior from elsewhere, e.g. the last batch's biases).
        The delayed-sample history restarts here (a late sample cannot roll back past it)."""
        x, P = self.x.copy(), self.P.copy()
        for name, (v, std) in values.items():
            i = self.names.index(name)
            if not (math.isfinite(v) and math.isfinite(std) and std >= 0.0):
                raise ValueError(f"state {name!r}: value and std must be finite (std >= 0)")
            x[i] = min(max(v, self._lo[i]), self._hi[i])
            P[i, :] = 0.0
            P[:, i] = 0.0
            P[i, i] = std * std
        self._kf.x = x.reshape(-1, 1)
        self._kf.P = P
        self._hist = deque([_Step(self.t_s, 0.0, self._u_last.copy(), self._d_last.copy(), x.copy(), P.copy())])

    def inflate(self, name: str, std: float) -> None:
        """Widen a state's variance by ``std²`` now (a step of that state the model does not know
        of); it joins this step's process noise, so a late sample's re-filter keeps it."""
        i, v = self.names.index(name), float(std) ** 2
        if not (math.isfinite(v) and v > 0.0):
            return
        P = self.P.copy()
        P[i, i] += v
        self._kf.P = P
        step = self._hist[-1]
        step.P_prior = step.P_prior.copy()
        step.P_prior[i, i] += v
        if step.Q is not None:
            step.Q = step.Q.copy()
            step.Q[i, i] += v

    def _event(self, ev: FilterEvent) -> None:
        self.events.append(ev)
        if len(self.events) > self._max_events:
            del self.events[: len(self.events) - self._max_events]

    def drain_events(self) -> list[FilterEvent]:
        """Return and forget the events recorded so far."""
        out, self.events = self.events, []
        return out

    # --------------------------------------------------------------- predict
    def _hold(self, v: np.ndarray, last: np.ndarray, what: str) -> np.ndarray:
        """Replace non-finite entries by the last valid ones (reported)."""
        v = np.asarray(v, dtype=float).reshape(-1)
        if v.shape != last.shape:
            raise ValueError(f"{what} must have {last.shape[0]} entries, got {v.shape[0]}")
        bad = ~np.isfinite(v)
        if bad.any():
            v = np.where(bad, last, v)
            names = self.model.input_names if what == "u" else self.model.disturbance_names
            self._event(FilterEvent("input_held", ",".join(n for n, b in zip(names, bad) if b), self.t_s,
                                    detail=f"non-finite {what} held at last valid value"))
        return v

    def _propagate(self, x: np.ndarray, dt: float, u: np.ndarray,
                   d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x⁺, F and Q over ``dt`` (split into steps of at most ``max_step_s``)."""
        n_sub = max(1, math.ceil(dt / self.max_step_s - 1e-9))
        h = dt / n_sub
        Qh = self._q_step.get(h)
        if Qh is None:
            q = self._q_var_per_s * h
            q[self._noise_idx] = self._noise_var * (1.0 - np.exp(-2.0 * h / self._noise_tau))
            Qh = np.diag(q)
            if len(self._q_step) < 8:  # the cycle's few step lengths
                self._q_step[h] = Qh
        x_next, F = self._step_fn(x, u, d, self.p, h)
        Q = Qh.copy()  # first sub-step: F = A, Q = diag(q²·h)
        for _ in range(n_sub - 1):
            x_next, A = self._step_fn(x_next, u, d, self.p, h)
            F = A @ F
            # Q = A Q A' + diag(q²·h): the noise of every sub-step, carried to the end
            Q = A @ Q @ A.T + Qh
        return x_next.reshape(-1), F, Q

    def _predict_kf(self, dt: float, u: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kf = self._kf
        x_next, F, Q = self._propagate(self.x, dt, u, d)
        if not np.all(np.isfinite(x_next)) or not np.all(np.isfinite(F)):
            # Never let a failed integration into the state: keep x, inflate P by Q.
            self._event(FilterEvent("bad_dt", "predict", self.t_s, detail="non-finite model step; state held"))
            x_next, F = self.x, np.eye(self.n)
        kf.x_next = np.clip(x_next, self._lo, self._hi).reshape(-1, 1)
        kf.F, kf.Q = F, Q
        kf.predict()  # x = f(x); P = F P F' + Q
        self._check_spd("predict")
        return F, Q

    def predict(self, dt: float, u: np.ndarray, d: np.ndarray) -> None:
        """Advance ``dt`` seconds with inputs ``u`` and disturbances ``d``.

        Non-finite entries of ``u``/``d`` are replaced by the last valid ones
        (event ``input_held``); a non-finite or non-positive ``dt`` leaves the
        filter unchanged (event ``bad_dt``).
        """
        if not (math.isfinite(dt) and dt > 0.0):
            self._event(FilterEvent("bad_dt", "predict", self.t_s, value=float(dt), detail="dt not > 0; no predict"))
            return
        u = self._hold(u, self._u_last, "u")
        d = self._hold(d, self._d_last, "d")
        self._u_last, self._d_last = u, d
        self._hist[-1].x_post = self.x.copy()
        F, Q = self._predict_kf(dt, u, d)
        self.t_s += dt
        self._hist.append(_Step(self.t_s, dt, u, d, self.x.copy(), self.P.copy(), F=F, Q=Q))
        while len(self._hist) > 1 and self._hist[1].t_s <= self.t_s - self.history_s:
            self._hist.popleft()

    # ---------------------------------------------------------------- update
    def _check_spd(self, where: str) -> None:
        """P = (P + P')/2; if Cholesky fails, inflate the diagonal until it succeeds (logged)."""
        kf = self._kf
        P = 0.5 * (kf.P + kf.P.T)
        try:
            np.linalg.cholesky(P)
        except np.linalg.LinAlgError:
            scale = max(float(np.mean(np.abs(np.diag(P)))), 1e-300)
            jitter = _SPD_JITTER_REL * scale
            min_eig = float(np.linalg.eigvalsh(P)[0])
            jitter = max(jitter, -min_eig + jitter)
            for _ in range(60):
                try:
                    np.linalg.cholesky(P + jitter * np.eye(self.n))
                    break
                except np.linalg.LinAlgError:
                    jitter *= 10.0
            P = P + jitter * np.eye(self.n)
            self.repaired = True
            self._event(FilterEvent("covariance_repaired", where, self.t_s, value=jitter,
                                    detail=f"P not SPD after {where}; diagonal inflated by {jitter:.3g}"))
        kf.P = P

    def _eval_h(self, name: str, u: np.ndarray, d: np.ndarray) -> tuple[float, np.ndarray]:
        y, H = self._measurement_fn(name)(self.x, u, d, self.p)
        return float(y[0, 0]), H


    def _apply(self, name: str, z: float, R: float, u: np.ndarray, d: np.ndarray,
               gate: bool, lin: tuple[np.ndarray, float, np.ndarray] | None = None) -> tuple[bool, float, float, _Meas]:
        """Gate, then fuse one scalar measurement with filterpy's Joseph-form update; ``lin`` = (H,
        h(x_lin), x_lin) fuses it linearised about ``x_lin`` instead of evaluating the model."""
        if lin is None:
            hx, H = self._eval_h(name, u, d)
            meas = _Meas(name, z, R, H, hx, self.x.copy())
        else:
            H, hx0, x_lin = lin
            hx = hx0 + (H @ (self.x - x_lin)).item()  # h(x) ≈ h(x_lin) + H (x − x_lin)
            meas = _Meas(name, z, R, H, hx0, x_lin)
        # y = z - h(x);  S = H P H' + R
        y = z - hx
        S = (H @ self.P @ H.T).item() + R
        sigma = abs(y) / math.sqrt(S) if S > 0 else math.inf
        if gate and not sigma <= self.gate_sigma:
            return False, y, sigma, meas
        x_prior = self._kf.x.copy()
        P_prior = self._kf.P.copy()
        # K = P H' S⁻¹;  x = x + K y;  P = (I - K H) P (I - K H)' + K R K'
        self._kf.update(np.array([[z]]), lambda _x: H, lambda _x: np.array([[hx]]), R=np.array([[R]]))
        x = self.x
        if not np.all(np.isfinite(x)) or not np.all(np.isfinite(self._kf.P)):
            self._kf.x, self._kf.P = x_prior, P_prior
            return False, y, math.nan, meas
        self._kf.x = np.clip(x, self._lo, self._hi).reshape(-1, 1)
        self._check_spd(f"update {name}")
        return True, y, sigma, meas

    def update(self, name: str, z: float, R: float, t_sample_s: float | None = None, *,
               gate: bool = True) -> UpdateResult:
        """Fuse the scalar measurement ``z`` of ``name`` with noise variance ``R``.

        ``name`` is a model output, aux signal or state. With ``t_sample_s``
        earlier than the filter time the sample is fused at its sample time by
        re-filtering the buffered history; samples older than the history are
        rejected (event ``rejected_too_old``). A non-finite ``z`` or ``R`` is
        not fused (predict only). Innovations beyond ``gate_sigma`` are
        rejected (event ``rejected_outlier``) unless ``gate`` is false.
        """
        z, R = float(z), float(R)
        if not (math.isfinite(z) and math.isfinite(R) and R > 0.0):
            self._event(FilterEvent("rejected_not_finite", name, self.t_s, value=z, t_sample_s=t_sample_s,
                                    detail="measurement or variance not finite/positive"))
            return UpdateResult(name, False, z, reason="not finite")
        if t_sample_s is None or t_sample_s >= self._hist[-1].t_s:
            step = self._hist[-1]
            ok, y, sigma, meas = self._apply(name, z, R, step.u, step.d, gate=gate)
            if ok:
                step.meas.append(meas)
            return self._result(name, z, ok, y, sigma, t_sample_s, delayed=False)
        return self._update_delayed(name, z, R, float(t_sample_s), gate)

    def _result(self, name: str, z: float, ok: bool, y: float, sigma: float,
                t_sample_s: float | None, delayed: bool) -> UpdateResult:
        if ok:
            return UpdateResult(name, True, z, y, sigma, delayed=delayed)
        self.n_rejected += 1
        reason = f"innovation {sigma:.1f} sigma > gate {self.gate_sigma:g}"
        self._event(FilterEvent("rejected_outlier", name, self.t_s, value=z, sigma=sigma,
                                t_sample_s=t_sample_s, detail=reason))
        return UpdateResult(name, False, z, y, sigma, reason, delayed)

    def _update_delayed(self, name: str, z: float, R: float, t_sample_s: float, gate: bool) -> UpdateResult:
        """Roll back to the buffered step at or before ``t_sample_s``, fuse, re-filter to now."""
        hist = self._hist
        if t_sample_s < hist[0].t_s:
            reason = (f"sample {self.t_s - t_sample_s:.0f} s old, history covers "
                      f"{self.t_s - hist[0].t_s:.0f} s")
            self._event(FilterEvent("rejected_too_old", name, self.t_s, value=z, t_sample_s=t_sample_s,
                                    detail=reason))
            return UpdateResult(name, False, z, reason=reason, delayed=True)
        k = len(hist) - 1
        while hist[k].t_s > t_sample_s:
            k -= 1
        kf = self._kf
        x_now, P_now = kf.x.copy(), kf.P.copy()
        hist[-1].x_post = x_now.reshape(-1).copy()
        step = hist[k]
        kf.x, kf.P = step.x_prior.reshape(-1, 1).copy(), step.P_prior.copy()
        # At the sample's cycle: exactly (the model evaluated), with that cycle's own measurements.
        old_meas = list(step.meas)
        step.meas = [self._apply(m.name, m.z, m.R, step.u, step.d, gate=False)[3] for m in old_meas]
        ok, y, sigma, meas = self._apply(name, z, R, step.u, step.d, gate=gate)
        if not ok:
            kf.x, kf.P = x_now, P_now
            step.meas = old_meas
            return self._result(name, z, False, y, sigma, t_sample_s, delayed=True)
        step.meas.append(meas)
        # Since then: linearised about the trajectory the filter took (see module docstring).
        x_old_prev = step.x_post if step.x_post is not None else x_now.reshape(-1)
        if k < len(hist) - 1:
            step.x_post = self.x.copy()
        for j in range(k + 1, len(hist)):
            s = hist[j]
            x_new_prev = self.x.copy()
            step_prev_old = x_old_prev
            x_old_prev = s.x_post if s.x_post is not None else x_now.reshape(-1)
            assert s.F is not None and s.Q is not None
            # x⁻ = x⁻_old + F (x⁺_prev − x⁺_prev,old);  P⁻ = F P⁺ F' + Q
            x_prior = np.clip(s.x_prior + s.F @ (x_new_prev - step_prev_old), self._lo, self._hi)
            kf.x, kf.P = x_prior.reshape(-1, 1), s.F @ kf.P @ s.F.T + s.Q
            self._check_spd("re-filter")
            s.x_prior, s.P_prior = self.x.copy(), self.P.copy()
            s.meas = [self._apply(m.name, m.z, m.R, s.u, s.d, gate=False, lin=(m.H, m.hx, m.x_lin))[3]
                      for m in s.meas]
            if j < len(hist) - 1:
                s.x_post = self.x.copy()
        return self._result(name, z, True, y, sigma, t_sample_s, delayed=True)

    # ------------------------------------------------------------- read-outs
    def state_at(self, t_s: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Filtered (x, P) at the newest buffered time at or before ``t_s``, with the
        measurements fused there (including late ones); ``None`` before the history."""
        hist = self._hist
        if t_s < hist[0].t_s:
            return None
        k = len(hist) - 1
        while hist[k].t_s > t_s:
            k -= 1
        step, kf, n_events = hist[k], self._kf, len(self.events)
        x_now, P_now = kf.x.copy(), kf.P.copy()
        try:
            kf.x, kf.P = step.x_prior.reshape(-1, 1).copy(), step.P_prior.copy()
            for m in step.meas:
                self._apply(m.name, m.z, m.R, step.u, step.d, gate=False)
            return self.x.copy(), self.P.copy()
        finally:
            kf.x, kf.P = x_now, P_now
            del self.events[n_events:]

    def outputs(self, names: Sequence[str], u: np.ndarray | None = None,
                d: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Values of outputs/aux signals/states at the estimate and their std sqrt(diag(H P H')).

        ``u``/``d`` default to the inputs of the last prediction.
        """
        u = self._u_last if u is None else u
        d = self._d_last if d is None else d
        y, H = self._measurement_fn(*names)(self.x, u, d, self.p)
        var = np.einsum("ij,jk,ik->i", H, self.P, H)
        return y.reshape(-1), np.sqrt(np.maximum(var, 0.0))

    def aux(self, u: np.ndarray | None = None, d: np.ndarray | None = None) -> dict[str, float]:
        """All aux signals at the current estimate (biases applied to the parameters)."""
        if self._aux_fn is None:
            xa, uu, dd, p, pe = self._symbols()
            nx = len(self.model.states)
            self._aux_fn = BufferedFunction(
                ca.Function("ekf_aux", [xa, uu, dd, p], [self.model.aux(xa[:nx], uu, dd, pe)]))
        u = self._u_last if u is None else u
        d = self._d_last if d is None else d
        a = self._aux_fn(self.x, u, d, self.p)[0].reshape(-1)
        return dict(zip(self.model.aux_names, (float(v) for v in a)))
