"""Nonlinear MPC of a furnace following its heating curve (implements :class:`apc.protocols.Controller`).

One NLP per controller, built once with CasADi: multiple shooting over ``horizon_steps`` steps
of ``step_multiple × period_s``, RK4 (``rk4_substeps`` per step) of the shared model
``f(x, u, d, p)`` with the recipe's nominal parameters corrected by the estimator's biases
(:func:`estimators.furnace_ekf.biased_parameters`; offset-free), solved by IPOPT with an
iteration cap (deterministic in virtual time) and, only when ``real_time``, a wall-time cap. The
NLP is expanded to SX and interpreted (no C compilation: a solve takes milliseconds).

Decision variables: the scaled state at each step, every model input at each step and one slack
per soft constraint and step. Inputs that no enabled MV drives are fixed by their bounds (a
disabled MV at its readback, an input without an MV at ``fixed_inputs``); an enabled MV lies in
the limits in force (``MvConstraint.low/high``), never moves further toward a limit the DCS
reports its output at (``hold_up``/``hold_down``) and changes at most its rate per step. Power
inputs also may not rise while the chamber pressure (estimated or measured) is at its backed-off
limit (in a power stage: once it has reached it, until the stage ends).

Objective per point k = 1 … N of the horizon (the preview ``CurvePreview`` interpolated onto the
prediction grid):

* ``tracking_weight·(cv_k − target_k)²``, cv = ``controlled`` (state or aux signal), at points
  where the curve asks for a temperature; at points of a power stage (a ``melt`` segment:
  ``preview.stage_power_kW``) instead ``stage_power_weight·((P_stage − P_k) / range)²`` per power
  input, which the stage power also caps there (the pressure limit still wins);
* ``move_weight·(Δu_k / range)²`` per MV, ``energy_weight·u_k / range`` per power input (kW)
  outside power stages;
* soft constraints, penalty ``pen·(s + quadratic_penalty_ratio·s²)`` on slacks s ≥ 0:
  cv ≤ upper (no overshoot beyond the band; ``band_signals`` too), cv ≥ lower (soak band),
  |cv_k − cv_{k−1}| ≤ ramp rate, chamber pressure ≤ ``pressure_limit_Pa`` (VIM),
  |surface − core| ≤ ``core_surface_dT_max_K`` (annealer). The upper, pressure and ΔT limits are
  tightened by ``backoff_sigmas`` standard deviations of the estimate where it reports one
  (``charge_temp_degC_std``, ``core_surface_dT_K_std``). The pressure limit is tightened per point
  by ``backoff_sigmas`` standard deviations of the predicted pressure, from the estimate's own and
  from the filter's parameter biases propagated along the last plan and combined with the filter's
  correlations (:meth:`_pressure_backoff`),
  and by the filtered excess of the measured over the estimated pressure (a DMC-style bias
  correction of the prediction, upward only).

Runtime: solve every ``period_multiple`` cycles, and at once when the enable flags, the limits in
force or the batch state change; in between follow the plan. Warm start from the shifted last
solution, a cold retry when it fails. A failed solve (IPOPT failure, iteration cap, bad numbers)
follows the still-valid rest of the last plan for up to ``hold_cycles`` failed solves (HELD),
then FAILED with the reason. Moves are rate-limited per cycle from the readback and the last
output and kept inside the limits in force, so the output guard never clamps. Outside RUNNING
the MPC holds ``preview.hold_degC``; with no hold temperature it makes no heat: power inputs go
to their low limit (rate-limited), other MVs are held.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import casadi as ca
import numpy as np
import structlog

from apc.curve_preview import CurvePreview
from apc.recipe.furnace_tuning import FurnaceMpcSection
from apc.recipe.schema import MvLimits, MvSpec
from apc.types import Estimate, MvConstraint, MvKind, Plan, SolverStatus
from controllers.mpc_skeleton import SLACK_START, MpcSkeleton, Solution, bind_mvs, setpoint_bounds
from controllers.nlp_attempt import NlpOption, disturbance_vector
from estimators.ekf import BiasState
from estimators.furnace_ekf import biased_parameters
from sim.models.base import ProcessModel, rk4

PRESSURE = "chamber_pressure_Pa"
"""Model state limited by ``pressure_limit_Pa``."""
CORE_SURFACE_DT = "core_surface_dT_K"
"""Model aux signal limited by ``core_surface_dT_max_K``."""

_BIG = 1.0e4
"""Stands for an infinite limit in the NLP parameters (K, K per step)."""


@dataclass(frozen=True)
class _StepContext:
    """What a step hands its solve: the batch's preview."""

    preview: CurvePreview


class FurnaceMpc(MpcSkeleton):
    """Nonlinear MPC of a furnace; see the module docstring.

    ``ipopt_options`` (class attribute) adds or overrides IPOPT/nlpsol options (benchmarks only).

    Parameters
    ----------
    model : ProcessModel
        The registered furnace model (shared with the estimator and simulator).
    p_nominal : np.ndarray
        Recipe parameters (``model.parameter_vector(recipe.model.parameters)``).
    cfg : FurnaceMpcSection
        Tuning.
    mvs, limits : Mapping
        The recipe's MV specs and limits by MV name (setpoint MVs only).
    period_s : float
        Base period of the unit loop.
    preview_source : Callable[[], CurvePreview]
        The batch's curve preview, updated by the unit before each step.
    period_multiple : int
        Solve every this many base periods.
    hold_cycles : int
        Failed solves during which the last plan is followed before FAILED.
    real_time : bool
        Running against the wall clock: applies ``cfg.max_solve_wall_s``; offline only
        ``cfg.max_iter`` limits a solve (deterministic).
    """

    cfg: FurnaceMpcSection

    def __init__(self, model: ProcessModel, p_nominal: np.ndarray, cfg: FurnaceMpcSection,
                 mvs: Mapping[str, MvSpec], limits: Mapping[str, MvLimits], period_s: float,
                 preview_source: Callable[[], CurvePreview], period_multiple: int = 1, hold_cycles: int = 6,
                 real_time: bool = False, biases: Sequence[BiasState] = ()) -> None:
        self._setup(model, p_nominal, cfg, period_s, period_multiple, hold_cycles, real_time)
        self.preview_source = preview_source
        self.biases = tuple(biases)
        """The filter's parameter biases (the kind's filter tuning): applied to the nominal parameters,
        and their σ propagated into the pressure back-off."""
        self._check_model()
        self.bindings = bind_mvs(model, mvs, limits, self._check_mv)
        driven = {b.input_index for b in self.bindings.values()}
        free = [n for i, n in enumerate(model.input_names) if i not in driven and n not in cfg.fixed_inputs]
        if free:
            raise ValueError(f"controller.mpc: model input(s) {free} need an MV or a value in fixed_inputs")
        unknown = sorted(set(cfg.fixed_inputs) - set(model.input_names))
        if unknown:
            raise ValueError(f"controller.mpc.fixed_inputs: {unknown} are not inputs of model {model.name!r}")
        self._check_disturbances()
        self._heat = [i for i, s in enumerate(model.inputs) if s.unit == "kW"]
        self._log = structlog.get_logger(__name__).bind(model=model.name)
        self._build()
        self.reset()

    # ------------------------------------------------------------- set-up
    def _signal_kind(self, name: str) -> str | None:
        m = self.model
        if name in m.state_names:
            return "state"
        if name in m.aux_names:
            return "aux"
        if name in m.output_names:
            return "output"
        return None

    def _check_model(self) -> None:
        cfg, m = self.cfg, self.model
        for name in (cfg.controlled, *cfg.band_signals):
            if self._signal_kind(name) is None:
                raise ValueError(f"controller.mpc: {name!r} is no state, aux signal or output of {m.name!r}")
        if cfg.pressure_limit_Pa is not None and PRESSURE not in m.state_names:
            raise ValueError(f"controller.mpc.pressure_limit_Pa: model {m.name!r} has no state {PRESSURE!r}")
        if cfg.core_surface_dT_max_K is not None and CORE_SURFACE_DT not in m.aux_names:
            raise ValueError(f"controller.mpc.core_surface_dT_max_K: model {m.name!r} has no aux {CORE_SURFACE_DT!r}")

    def _check_mv(self, name: str, spec: MvSpec) -> None:
        """The furnace MPC drives setpoint MVs only."""
        if spec.kind is not MvKind.SETPOINT:
            raise ValueError(f"MV {name!r}: the furnace MPC drives setpoint MVs only, not {spec.kind.value}")

    def _sym_signal(self, name: str, x: ca.SX, u: ca.SX, d: ca.SX, p: ca.SX) -> ca.SX:
        m = self.model
        kind = self._signal_kind(name)
        if kind == "state":
            return x[m.state_names.index(name)]
        if kind == "aux":
            return m.aux(x, u, d, p)[m.aux_names.index(name)]
        return m.h(x, u, d, p)[m.output_names.index(name)]

    def _build(self) -> None:
        """The NLP (once), the cold-guess simulation and the read-out of a solution."""
        m, cfg, N, nx, nu = self.model, self.cfg, self.N, self.nx, self.nu
        nd, npar = len(m.disturbances), len(m.parameters)
        x, u = ca.SX.sym("x", nx), ca.SX.sym("u", nu)
        d, p = ca.SX.sym("d", nd), ca.SX.sym("p", npar)
        # states at the substep ends inside a step (fast constraints are checked there too)
        *inner, xk = rk4(lambda z: m.f(z, u, d, p), x, self.step_s / cfg.rk4_substeps, cfg.rk4_substeps)
        n_in = len(inner)
        step = ca.Function("furnace_mpc_step", [x, u, d, p], [xk])
        # Signals at one point: controlled, band signals, pressure, ΔT (the ones configured).
        sig = [self._sym_signal(cfg.controlled, x, u, d, p)]
        sig += [self._sym_signal(n, x, u, d, p) for n in cfg.band_signals]
        self._has_p = cfg.pressure_limit_Pa is not None
        self._has_dT = cfg.core_surface_dT_max_K is not None
        if self._has_p:
            sig.append(x[m.state_names.index(PRESSURE)])
        if self._has_dT:
            sig.append(m.aux(x, u, d, p)[m.aux_names.index(CORE_SURFACE_DT)])
        point = ca.Function("furnace_mpc_point", [x, u, d, p], [ca.vertcat(*sig)])
        nb = len(cfg.band_signals)

        # Parameters of one solve.
        x0, xs = ca.MX.sym("x0", nx), ca.MX.sym("xs", nx)
        u_prev, dd, pp = ca.MX.sym("u_prev", nu), ca.MX.sym("d", nd), ca.MX.sym("p", npar)
        u_range = ca.MX.sym("u_range", nu)
        ref, upper, lower, rate = (ca.MX.sym(n, 1, N) for n in ("ref", "upper", "lower", "rate"))
        track, stage = ca.MX.sym("track", 1, N), ca.MX.sym("stage", 1, N)  # 1/0 per point; stage power
        lims = ca.MX.sym("lims", 2)  # pressure limit (less the measured bias), ΔT limit (after back-off)
        pback = ca.MX.sym("pback", 1, N)  # pressure back-off per point
        P = ca.vertcat(x0, xs, u_prev, dd, pp, u_range, ref.T, upper.T, lower.T, rate.T, track.T, stage.T, lims,
                       pback.T)
        self._p_offset = 2 * nx + nu + nd  # where the parameters sit in P

        DZ = ca.MX.sym("dz", nx, N)  # x_k = x0 + xs·dz_k, k = 1..N
        U = ca.MX.sym("u", nu, N)
        names = ["upper", "lower", "rate"] + (["band"] if nb else []) + (["pressure"] if self._has_p else []) \
            + (["dT"] if self._has_dT else [])
        self._slack_names = tuple(names)
        ns = len(names)
        S = ca.MX.sym("s", ns, N)
        w = ca.vertcat(ca.vec(DZ), ca.vec(U), ca.vec(S))
        self._n_dz, self._n_u, self._n_s = nx * N, nu * N, ns * N

        xs_n = ca.repmat(xs, 1, N)
        X = ca.horzcat(x0, ca.repmat(x0, 1, N) + xs_n * DZ)
        g_dyn = (step.map(N)(X[:, :N], U, dd, pp) - X[:, 1:]) / xs_n
        g_du = U - ca.horzcat(u_prev, U[:, :N - 1])
        SIG = point.map(N)(X[:, 1:], U, dd, pp)  # n_sig × N
        sig0 = point(x0, u_prev, dd, pp)
        cv = SIG[0, :]
        cv_prev = ca.horzcat(sig0[0], cv[:, :N - 1])
        j = {n: i for i, n in enumerate(names)}
        res = [upper - cv + S[j["upper"], :], cv - lower + S[j["lower"], :],
               rate - (cv - cv_prev) + S[j["rate"], :], rate + (cv - cv_prev) + S[j["rate"], :]]
        pens = {"upper": cfg.overshoot_penalty, "lower": cfg.undershoot_penalty, "rate": cfg.rate_penalty * 60.0
                / self.step_s, "band": cfg.overshoot_penalty, "pressure": cfg.pressure_penalty, "dT": cfg.dT_penalty}
        for i in range(nb):
            res.append(upper - SIG[1 + i, :] + S[j["band"], :])
        r = 1 + nb
        # Pressure and ΔT move within seconds: also checked at the substep ends inside each step,
        # sharing the step's slack.
        if n_in and (self._has_p or self._has_dT):
            step_inner = ca.Function("furnace_mpc_inner", [x, u, d, p], [ca.horzcat(*inner)])
            X_in = step_inner.map(N)(X[:, :N], U, dd, pp)  # nx × (N·n_in), step k's at k·n_in + i
            SIG_in = point.map(N * n_in)(X_in, ca.kron(U, ca.DM.ones(1, n_in)), dd, pp)
        if self._has_p:
            plim = lims[0] - pback
            res.append(plim - SIG[r, :] + S[j["pressure"], :])
            if n_in:
                res.append(ca.kron(plim, ca.DM.ones(1, n_in)) - SIG_in[r, :]
                           + ca.kron(S[j["pressure"], :], ca.DM.ones(1, n_in)))
            r += 1
        if self._has_dT:
            res += [lims[1] - SIG[r, :] + S[j["dT"], :], lims[1] + SIG[r, :] + S[j["dT"], :]]
            if n_in:
                s_in = ca.kron(S[j["dT"], :], ca.DM.ones(1, n_in))
                res += [lims[1] - SIG_in[r, :] + s_in, lims[1] + SIG_in[r, :] + s_in]
        g_soft = ca.vertcat(*[ca.vec(q) for q in res])
        self._n_gsoft = g_soft.numel()

        J = cfg.tracking_weight * ca.sumsqr(track * (cv - ref))
        for b in self.bindings.values():
            wgt = cfg.move_weights.get(b.name, cfg.move_weight)
            J += wgt * ca.sumsqr(g_du[b.input_index, :] / u_range[b.input_index])
        for i in self._heat:
            J += cfg.energy_weight * ca.sum2(track * U[i, :]) / u_range[i]  # a power stage sets the power
            J += cfg.stage_power_weight * ca.sumsqr((1 - track) * (stage - U[i, :]) / u_range[i])
        pen = ca.DM([pens[n] for n in names])
        J += ca.dot(pen, ca.sum2(S + cfg.quadratic_penalty_ratio * S ** 2))

        g = ca.vertcat(ca.vec(g_dyn), ca.vec(g_du), g_soft)
        self._n_gdyn, self._n_gdu = nx * N, nu * N
        nlp = {"x": w, "p": P, "f": J, "g": g}
        common: dict[str, NlpOption] = {**self._ipopt_common("furnace_mpc", w.numel(), g.numel()), "expand": True}
        warm = {**common, "ipopt.warm_start_init_point": "yes", "ipopt.warm_start_bound_push": 1e-6,
                "ipopt.warm_start_mult_bound_push": 1e-6, "ipopt.mu_init": 1e-4, **self.ipopt_options}
        cold = {**common, **self.ipopt_options}
        self._warm = ca.nlpsol("furnace_mpc_warm", "ipopt", nlp, warm)
        self._cold = ca.nlpsol("furnace_mpc_cold", "ipopt", nlp, cold)

        # Cold guess: states simulated with given inputs, slacks what the soft constraints need.
        Xr = step.mapaccum("furnace_mpc_sim", N)(x0, U, dd, pp)
        self._sim = ca.Function("furnace_mpc_guess", [U, P], [(Xr - ca.repmat(x0, 1, N)) / xs_n])
        self._residuals = ca.Function("furnace_mpc_res", [w, P], [g_soft])
        self._readout = ca.Function("furnace_mpc_readout", [w, P], [X, U, ca.horzcat(sig0, SIG)])

    # ------------------------------------------------------------ protocol
    def reset(self) -> None:
        """Forget plans, warm start, failure count, move memory and the pressure corrections."""
        super().reset()
        self._p_hold = False
        self._p_bias = 0.0
        self._p_bias_t: float | None = None
        self._plim_first: float | None = None

    def _before_solve(self, t_s: float, dt: float, estimate: Estimate, applied: Mapping[str, float],
                      en: Mapping[str, bool], lim: dict[str, MvConstraint]
                      ) -> tuple[dict[str, MvConstraint], _StepContext, object, Plan | None]:
        """The batch's preview (its state is part of the solve key), the pressure corrections and the
        power hold at the pressure limit; outside RUNNING without a hold temperature: no heat."""
        preview = self.preview_source()
        p_est, p_meas = self._pressures(estimate)
        self._update_pressure_bias(t_s, p_est, p_meas)
        if self._at_pressure_limit(estimate, float(np.fmax(p_est, p_meas)),
                                   preview.running and math.isfinite(preview.stage_power_at(0))):
            lim = {n: dataclasses.replace(c, hold_up=True) if self.bindings[n].input_index in self._heat else c
                   for n, c in lim.items()}
        ctx = _StepContext(preview)
        if not preview.running and preview.hold_degC is None:
            self._sol, self._fails, self._next_solve_t, self._last_key = None, 0, None, None
            # no heat: power inputs to their low limit, other MVs held
            moves = self._emit(t_s, dt, applied, en, lim,
                               lambda b: lim[b.name].low if b.input_index in self._heat else None, None)
            return lim, ctx, preview.state, Plan(moves, {}, SolverStatus.OK, 0, 0.0,
                                                 f"no heat: batch {preview.state.value}")
        return lim, ctx, preview.state, None

    def _solve_failed(self, reason: str) -> None:
        self._log.warning("furnace_mpc_solve_failed", reason=reason, fails=self._fails)

    # ------------------------------------------------------------- solving
    def _pressures(self, estimate: Estimate) -> tuple[float, float]:
        """(estimated, measured) chamber pressure this cycle; NaN where unknown (or no pressure limit).
        The measured one is ``chamber_pressure_Pa_measured`` where the estimator reports it."""
        if not self._has_p:
            return math.nan, math.nan
        try:
            est = float(estimate.value(PRESSURE))
        except (KeyError, ValueError):
            est = math.nan
        return est, float(estimate.extras.get(f"{PRESSURE}_measured", math.nan))

    def _update_pressure_bias(self, t_s: float, est: float, meas: float) -> None:
        """Measured − estimated chamber pressure, filtered over ``pressure_bias_filter_s``: the prediction
        bias a DMC-style correction adds to the predicted pressure (upward only, i.e. the limit is
        tightened by it and never loosened). While the filter has not yet learned a gas load the model
        does not know (a batch's first minutes, a melt), its estimate trails the gauge."""
        if not (math.isfinite(est) and math.isfinite(meas)):
            return
        tau = self.cfg.pressure_bias_filter_s
        if self._p_bias_t is None or tau <= 0:
            a = 1.0
        else:
            a = 1.0 - math.exp(-max(t_s - self._p_bias_t, 0.0) / tau)
        self._p_bias_t = t_s
        self._p_bias += a * ((meas - est) - self._p_bias)

    def _at_pressure_limit(self, estimate: Estimate, p_now: float, staged: bool) -> bool:
        """Whether power may not rise: while the chamber pressure ``p_now`` (the higher of estimated and
        measured, NaN when neither is known: the hold stays as it was) is at or above the limit
        the last solve held its first point to (before any solve: the limit less the estimate's
        back-off), whatever the prediction says; in a power stage (``staged``), from then on until the
        stage ends. On the melting plateau the thermocouple says nothing of the melting front, the
        filter is least sure where the melt ends, and a plan that counts on the melt's gas stopping
        would raise the power into a pressure spike."""
        plim = self.cfg.pressure_limit_Pa
        if plim is None:  # no pressure limit (``_has_p`` false)
            return False
        if not math.isfinite(p_now):
            return self._p_hold
        limit = self._plim_first if self._plim_first is not None else \
            float(plim) - self.cfg.backoff_sigmas * self._std(estimate, PRESSURE)
        if p_now >= limit:
            self._p_hold = True
        elif not staged:
            self._p_hold = False
        return self._p_hold

    def _reference(self, preview: CurvePreview) -> tuple[np.ndarray, ...]:
        """Target, upper, lower (K), ramp rate (K per step) and stage power (kW, NaN where the curve
        asks for a temperature) at the prediction points k = 1..N."""
        N = self.N
        tk = self.step_s * np.arange(1, N + 1)
        if not preview.running:
            hold = float(preview.hold_degC if preview.hold_degC is not None else math.nan)
            return np.full(N, hold), np.full(N, _BIG), np.full(N, -_BIG), np.full(N, _BIG), np.full(N, math.nan)
        tp = preview.step_s * np.arange(len(preview.target_degC))
        points = np.asarray(preview.target_degC, dtype=float)
        idx = np.minimum(np.searchsorted(tp, tk, side="right") - 1, len(tp) - 1)
        nxt = np.minimum(idx + 1, len(tp) - 1)
        target = np.interp(tk, tp, points)
        target = np.where(np.isfinite(target), target, points[idx])  # next to a power stage: the last point
        stage = (np.asarray(preview.stage_power_kW, dtype=float)[idx] if preview.stage_power_kW
                 else np.full(N, math.nan))

        def clean(a: tuple[float, ...], fill: float) -> np.ndarray:
            v = np.asarray(a, dtype=float)
            return np.where(np.isfinite(v), np.clip(v, -_BIG, _BIG), fill)

        up = clean(preview.upper_degC, _BIG)
        lo = clean(preview.lower_degC, -_BIG)
        rt = clean(preview.max_rate_degC_min, _BIG)
        upper = np.minimum(up[idx], up[nxt])
        lower = lo[idx]
        rate = np.minimum(np.minimum(rt[idx], rt[nxt]) * self.step_s / 60.0, _BIG)
        return target, upper, lower, rate, stage


    def _std(self, estimate: Estimate, name: str) -> float:
        v = estimate.extras.get(f"{name}_std", 0.0)
        return float(v) if math.isfinite(float(v)) and v > 0 else 0.0

    def _bounds(self, u_now: np.ndarray, en: Mapping[str, bool], lim: Mapping[str, MvConstraint],
                stage: np.ndarray) -> tuple[np.ndarray, ...]:
        """Variable and constraint bounds; a power input stays at or below a power stage's ``stage``."""
        N, nu = self.N, self.nu
        lbu = np.repeat(u_now[:, None], N, axis=1)
        ubu = lbu.copy()
        lbdu = np.zeros((nu, N))
        ubdu = np.zeros((nu, N))
        for b in self.bindings.values():
            if not en[b.name]:
                continue
            i = b.input_index
            lbu[i, :], ubu[i, :] = setpoint_bounds(b, float(u_now[i]), lim[b.name], self.step_s, N,
                                                   stage if i in self._heat else None)
            lbdu[i, :], ubdu[i, :] = -b.rate_per_s * self.step_s, b.rate_per_s * self.step_s
        lbx = np.concatenate([np.full(self._n_dz, -np.inf), lbu.ravel(order="F"), np.zeros(self._n_s)])
        ubx = np.concatenate([np.full(self._n_dz, np.inf), ubu.ravel(order="F"), np.full(self._n_s, np.inf)])
        lbg = np.concatenate([np.zeros(self._n_gdyn), lbdu.ravel(order="F"), np.zeros(self._n_gsoft)])
        ubg = np.concatenate([np.zeros(self._n_gdyn), ubdu.ravel(order="F"), np.full(self._n_gsoft, np.inf)])
        return lbx, ubx, lbg, ubg

    def _with_slacks(self, dz: np.ndarray, U: np.ndarray, P: np.ndarray) -> np.ndarray:
        """Decision vector with each slack set to what its soft constraints need plus a margin."""
        w = np.concatenate([dz.ravel(order="F"), U.ravel(order="F"), np.zeros(self._n_s)])
        res = np.asarray(self._residuals(w, P)).ravel()
        ns, N = len(self._slack_names), self.N
        need = np.zeros((ns, N))
        # residual blocks in the order built: upper, lower, rate×2, band×nb, pressure (+ inner), dT×2 (+ inner×2)
        n_in = self.cfg.rk4_substeps - 1
        blocks = [(n, 1) for n in ["upper", "lower", "rate", "rate"] + ["band"] * len(self.cfg.band_signals)]
        if self._has_p:
            blocks += [("pressure", 1)] + ([("pressure", n_in)] if n_in else [])
        if self._has_dT:
            blocks += [("dT", 1), ("dT", 1)] + ([("dT", n_in), ("dT", n_in)] if n_in else [])
        pos = 0
        for name, per in blocks:
            row = self._slack_names.index(name)
            block = -res[pos:pos + N * per].reshape((N, per)).max(axis=1)
            need[row] = np.maximum(need[row], block)
            pos += N * per
        w[self._n_dz + self._n_u:] = (need + SLACK_START).ravel(order="F")
        return w

    def _cold_guess(self, P: np.ndarray, u_now: np.ndarray, lbx: np.ndarray, ubx: np.ndarray) -> np.ndarray:
        N, nu = self.N, self.nu
        i1, i2 = self._n_dz, self._n_dz + self._n_u
        U = np.repeat(u_now[:, None], N, axis=1) if self._sol is None else self._sol.U
        U = np.clip(U.ravel(order="F"), lbx[i1:i2], ubx[i1:i2]).reshape((nu, N), order="F")
        dz = np.nan_to_num(np.asarray(self._sim(U, P)))
        w: np.ndarray = np.clip(self._with_slacks(dz, U, P), lbx, ubx)
        return w

    def _warm_guess(self, t_s: float, x0: np.ndarray, xs: np.ndarray, P: np.ndarray, lbx: np.ndarray,
                    ubx: np.ndarray) -> np.ndarray:
        prev = self._sol
        assert prev is not None
        N, nx, nu = self.N, self.nx, self.nu
        shift = max(round((t_s - prev.t_s) / self.step_s), 0)
        cols = np.minimum(np.arange(N) + shift, N - 1)
        Xp = prev.x0[:, None] + prev.xs[:, None] * prev.w[:self._n_dz].reshape((nx, N), order="F")
        dz = (Xp[:, cols] - x0[:, None]) / xs[:, None]
        U = prev.U[:, cols]
        i1, i2 = self._n_dz, self._n_dz + self._n_u
        U = np.clip(U.ravel(order="F"), lbx[i1:i2], ubx[i1:i2]).reshape((nu, N), order="F")
        w: np.ndarray = np.clip(self._with_slacks(dz, U, P), lbx, ubx)
        return w


    def _problem(self, estimate: Estimate, applied: Mapping[str, float], measured: Mapping[str, float],
                 preview: CurvePreview) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | str:
        """(x0, u_now, P without bounds, state scale, stage power) of this solve, or why there is none."""
        m, cfg = self.model, self.cfg
        try:
            x0 = np.array([float(estimate.value(n)) for n in m.state_names])
        except (KeyError, ValueError) as exc:
            return f"estimate lacks model states ({exc})"
        p = biased_parameters(m, self.p_nominal, estimate.as_dict(), self.biases)
        u_now = np.array([float(cfg.fixed_inputs.get(n, math.nan)) for n in m.input_names])
        for b in self.bindings.values():
            u_now[b.input_index] = float(applied.get(b.name, math.nan))
        d = disturbance_vector(self.model.disturbance_names, self.cfg.disturbance_inputs,
                               self.cfg.disturbance_values, measured)
        target, upper, lower, rate, stage = self._reference(preview)
        if not np.all(np.isfinite(np.concatenate([x0, p, u_now, d]))):
            return "non-finite estimate, parameter, readback or disturbance"
        staged = np.isfinite(stage)
        if not np.all(np.isfinite(target) | staged):
            return "curve target not finite"
        track = np.where(staged, 0.0, 1.0)
        target = np.where(staged, 0.0, target)
        k = cfg.backoff_sigmas
        upper = np.where(upper < _BIG, upper - k * self._std(estimate, cfg.controlled), upper)
        lims = np.array([
            (cfg.pressure_limit_Pa or _BIG) - max(self._p_bias, 0.0),
            max((cfg.core_surface_dT_max_K or _BIG) - k * self._std(estimate, CORE_SURFACE_DT), 1.0),
        ])
        xs = np.maximum(0.1 * np.abs(x0), 1.0)
        u_range = np.ones(self.nu)
        for b in self.bindings.values():
            u_range[b.input_index] = max(b.hi - b.lo, 1e-9)
        P = np.concatenate([x0, xs, u_now, d, p, u_range, target, upper, lower, rate, track,
                            np.where(staged, stage, 0.0), lims, np.zeros(self.N)])
        if self._has_p:
            P[-self.N:] = self._pressure_backoff(estimate, P, x0, xs, u_now)
            self._plim_first = float(lims[0] - P[-self.N])
        return x0, u_now, P, xs, stage

    def _pressure_backoff(self, estimate: Estimate, P: np.ndarray, x0: np.ndarray, xs: np.ndarray,
                          u_now: np.ndarray) -> np.ndarray:
        """Back-off of the pressure limit per prediction point: ``backoff_sigmas`` standard deviations of
        the predicted pressure, from the estimate's own (``chamber_pressure_Pa_std``) and from each of the
        filter's parameter biases (``<bias>_std``), propagated along the last plan (or the inputs held)
        by re-simulating it with the bias moved by one standard deviation. The contributions are
        combined with the filter's correlations between the pressure and the biases (``estimate.P``;
        independent when it has none): the measured pressure ties the gas biases together, so one
        that is high is known to go with another that is low, and adding their variances alone would
        count the same uncertainty twice. While the filter has not learned a gas load (a batch's
        first minutes, the start of a melt) the limit is far off; as the biases settle it comes back
        to the estimate's own uncertainty."""
        N, i_p, off = self.N, self.model.state_names.index(PRESSURE), self._p_offset
        npar = len(self.model.parameters)
        if self._sol is not None:
            U = self._sol.U[:, np.minimum(np.arange(N) + 1, N - 1)]
        else:
            U = np.repeat(u_now[:, None], N, axis=1)
        base = x0[i_p] + xs[i_p] * np.asarray(self._sim(U, P))[i_p]
        names = [PRESSURE]
        rows = [np.full(N, self._std(estimate, PRESSURE))]
        values = estimate.as_dict()
        for bias in self.biases:
            sigma = self._std(estimate, bias.name)
            if sigma <= 0 or not math.isfinite(float(values.get(bias.name, math.nan))):
                continue
            moved = P.copy()
            moved[off:off + npar] = biased_parameters(self.model, self.p_nominal,
                                                      {**values, bias.name: values[bias.name] + sigma}, self.biases)
            traj = x0[i_p] + xs[i_p] * np.asarray(self._sim(U, moved))[i_p]
            names.append(bias.name)
            rows.append(np.nan_to_num(traj - base, nan=0.0))
        D = np.vstack(rows)
        var = np.maximum(np.einsum("in,ij,jn->n", D, _correlation(estimate, names), D), 0.0)
        backoff: np.ndarray = self.cfg.backoff_sigmas * np.sqrt(var)
        return backoff

    def _solve(self, t_s: float, estimate: Estimate, applied: Mapping[str, float], en: Mapping[str, bool],
               lim: Mapping[str, MvConstraint], measured: Mapping[str, float], ctx: object = None,
               warm: bool = True) -> tuple[Solution | None, int, float, str]:
        """Warm attempt from the shifted last solution, a cold one when it fails."""
        assert isinstance(ctx, _StepContext)
        data = self._problem(estimate, applied, measured, ctx.preview)
        if isinstance(data, str):
            return None, 0, 0.0, data
        x0, u_now, P, xs, stage = data
        lbx, ubx, lbg, ubg = self._bounds(u_now, en, lim, stage)
        bounds = {"p": P, "lbx": lbx, "ubx": ubx, "lbg": lbg, "ubg": ubg}
        res, iters, elapsed, how = self._attempts(
            self._warm, self._cold, bounds,
            (lambda: {"x0": self._warm_guess(t_s, x0, xs, P, lbx, ubx)}) if warm and self._sol is not None else None,
            lambda: self._cold_guess(P, u_now, lbx, ubx))
        if res is None:
            return None, iters, elapsed, how
        w = np.asarray(res["x"]).ravel()
        _, U, SIG = (np.asarray(v) for v in self._readout(w, P))
        names = [self.cfg.controlled, *self.cfg.band_signals]
        names += [PRESSURE] if self._has_p else []
        names += [CORE_SURFACE_DT] if self._has_dT else []
        predicted = {n: tuple(float(v) for v in SIG[r]) for r, n in enumerate(names)}
        S = w[self._n_dz + self._n_u:].reshape((len(self._slack_names), self.N), order="F")
        active = [f"{n} {S[r].max():.2g}" for r, n in enumerate(self._slack_names) if S[r].max() > 1e-3]
        reason = f"ok ({how}, {iters} it)" + (f"; soft: {', '.join(active)}" if active else "")
        return Solution(t_s, x0, xs, w, np.array(U), predicted), iters, elapsed, reason


def _correlation(estimate: Estimate, names: Sequence[str]) -> np.ndarray:
    """Correlation matrix of ``names`` from the estimate's covariance; the identity where it has none
    (no covariance, a name not among its states, a non-finite or non-positive variance), and the
    identity altogether when the pieces do not make a positive semi-definite matrix (a back-off
    must never come out of a negative variance)."""
    n = len(names)
    R = np.eye(n)
    if estimate.P is None:
        return R
    idx = [estimate.names.index(m) if m in estimate.names else -1 for m in names]
    cov = np.asarray(estimate.P, dtype=float)
    for a in range(n):
        for b in range(a + 1, n):
            i, j = idx[a], idx[b]
            if i < 0 or j < 0:
                continue
            vi, vj, c = cov[i, i], cov[j, j], cov[i, j]
            if vi > 0 and vj > 0 and math.isfinite(c) and math.isfinite(vi * vj):
                R[a, b] = R[b, a] = max(-1.0, min(1.0, c / math.sqrt(vi * vj)))
    if float(np.linalg.eigvalsh(R).min()) < -1e-9:
        return np.eye(n)
    return R
