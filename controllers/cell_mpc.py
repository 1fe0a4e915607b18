"""Nonlinear MPC of the Nd electrolysis cell (implements :class:`apc.protocols.Controller`).

One NLP, built once with CasADi: multiple shooting over ``horizon_steps``
steps of ``step_multiple × period_s``, RK4 of the shared model ``f(x, u, d, p)``
with the recipe's nominal parameters (never the plant's), solved by IPOPT with
an iteration cap so that virtual-time runs stay deterministic.

Decision variables per step: the states (as scaled deviations from the
estimate), the model inputs (line current, feed rate, anode move rate) and
one slack per soft constraint. Every model input is a decision variable; its
bounds say what may move: an MV's operator ∩ engineering limits in force
(the unit passes them every cycle, so an operator's change applies at once)
and rate, a disabled MV or an input without an MV is fixed at its current
value, and an MV whose DCS loop reports its output at a limit may only move
away from that limit (``MvConstraint.hold_up``/``hold_down``). The
anode is an increment MV: the NLP plans a move *rate* within the average
rate its step size and minimum interval allow (steps during which the next
move is still blocked get rate 0) and keeps the position inside its limits;
the move written is the displacement planned over the next minimum interval.

Objective, ranked: anode-effect margin > metal above its melting point >
oxide band > bath-temperature band (soft constraints with L1 + small L2
penalties, separated by orders of magnitude, so the lowest rank gives way
first) > production (metal kg/h) > energy per kg, plus move suppression.

Speed: one RK4 step and one CV point are small SX functions mapped over the
horizon, so the constraint Jacobian and the Lagrangian Hessian are built per
step (derivatives of the nonlinear parts taken apart from the linear and
quadratic ones keep AD at one step's 9 directions). Those NLP functions are
compiled to C once per generated source with the system compiler and cached
by its hash (``MpcSection.compile_nlp``, ``compiler``, ``compile_cache_dir``);
without a working compiler they are expanded to SX and interpreted, with a
log message (same optimum, slower). ``max_solve_wall_s`` caps an IPOPT
attempt in real time only (``real_time=True``); offline only ``max_iter`` does.

Runtime behaviour: solve every ``period_multiple`` cycles (and at once when
the enable flags, the limits in force or the DCS at-limit status change); in
between return the current move of the plan, rate-limited per cycle so the guard never clamps. Warm start from the
shifted last solution. A failed solve (IPOPT failure, iteration cap, bad
numbers) follows the still-valid remainder of the last plan for up to
``hold_cycles`` failed solves (status HELD), then returns FAILED.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import casadi as ca
import numpy as np

from apc.kinds.electrolysis_cell.recipe import MPC_CV_RANKS, MpcSection
from apc.recipe.schema import MvLimits, MvSpec
from apc.types import Estimate, MvConstraint, MvKind
from controllers.mpc_skeleton import SLACK_START, MpcSkeleton, Solution, bind_mvs, setpoint_bounds
from controllers.nlp_attempt import NlpValue, disturbance_vector
from estimators.cell_ekf import BIASES, INTERNAL_BIASES
from sim.models.base import ProcessModel, rk4

NOT_PREDICTED_WITH = ("dissolution_bias",)
"""Filter biases the MPC predicts without: the dissolution-rate bias (added to the filter after the
MPC's published figures were measured; applying it changes the plans, so it waits for a rerun)."""

BIAS_PARAMETERS = tuple((b.name, b.parameter, b.kind) for b in (*BIASES, *INTERNAL_BIASES)
                        if b.name not in NOT_PREDICTED_WITH)
"""Estimator biases applied to the nominal parameters as the cell filter applies them
(``log``: p·exp(b), ``add``: p + b). A bias missing from the estimate is taken as 0."""

PREDICTED = ("bath_temp_degC", "dissolved_oxide_wtpct", "metal_temp_degC", "ae_margin_A_cm2")
"""CV trajectories reported in :attr:`Plan.predicted` (N + 1 points, one per step)."""

_SOFT_RANK = (0, 1, 2, 2, 3, 3)
"""Rank (index in ``MPC_CV_RANKS``) of each soft-constraint residual at one point."""

_log = logging.getLogger(__name__)


COMPILE_FLAGS = ("-O1", "-fPIC", "-shared")
"""Flags of the compiled NLP functions (part of the cache key)."""

_COMPILE_TIMEOUT_S = 600.0
"""A compiler that has not finished by then counts as missing."""


def cache_dir(configured: str) -> Path:
    """Directory of compiled NLP libraries: ``configured``, else ``$XDG_CACHE_HOME/apc/cell_mpc``
    (``~/.cache/apc/cell_mpc``)."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "apc" / "cell_mpc"


def generate_c(funcs: Mapping[str, ca.Function]) -> str:
    """C source of ``funcs`` in one translation unit (deterministic for the same functions)."""
    cg = ca.CodeGenerator("cell_mpc_nlp.c", {"with_header": False})
    for f in funcs.values():
        cg.add(f)
    return str(cg.dump())


def compile_functions(funcs: Mapping[str, ca.Function], compiler: str,
                      directory: Path) -> dict[str, ca.Function] | None:
    """``funcs`` as compiled C, built once per generated source and cached in ``directory`` by the
    hash of source, compiler and flags; None (logged) when the compiler is missing or fails."""
    src = generate_c(funcs)
    key = hashlib.sha256("\0".join((src, compiler, *COMPILE_FLAGS, ca.CasadiMeta.version())).encode()).hexdigest()
    lib = directory / f"cell_mpc_{key[:24]}.so"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private(directory) or (lib.exists() and not _private(lib)):
        _log.warning("cell MPC: %s is not private to this user (owner or group/other write); compiled code "
                     "is not loaded from it, NLP functions stay interpreted (slower)", directory)
        return None
    if not lib.exists():
        exe = shutil.which(compiler)
        if exe is None:
            _log.warning("cell MPC: C compiler %r not found; NLP functions stay interpreted (slower)", compiler)
            return None
        try:
            _compile(exe, src, lib)
        except (OSError, subprocess.SubprocessError) as exc:
            _log.warning("cell MPC: compiling the NLP functions failed (%s); they stay interpreted (slower)",
                         exc)
            return None
        _log.info("cell MPC: compiled NLP functions to %s", lib)
    try:
        return {k: ca.external(f.name(), str(lib)) for k, f in funcs.items()}
    except RuntimeError as exc:
        _log.warning("cell MPC: loading %s failed (%s); NLP functions stay interpreted (slower)", lib, exc)
        return None


def _private(path: Path) -> bool:
    """Owned by this user and writable by nobody else: a shared library loaded from it runs in
    the control process."""
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _compile(exe: str, src: str, lib: Path) -> None:
    """Compile ``src`` into ``lib`` atomically (a temporary name, then a rename)."""
    with tempfile.TemporaryDirectory(dir=lib.parent, prefix=".build_") as tmp:
        c_file = Path(tmp) / "cell_mpc_nlp.c"
        c_file.write_text(src)
        out = Path(tmp) / lib.name
        proc = subprocess.run([exe, *COMPILE_FLAGS, str(c_file), "-o", str(out), "-lm"],
                              capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise subprocess.SubprocessError(f"{exe} exited {proc.returncode}: {proc.stderr.strip()[:500]}")
        os.replace(out, lib)


class CellMpc(MpcSkeleton):
    """Nonlinear MPC of the cell; see the module docstring.

    ``ipopt_options`` (class attribute) adds or overrides IPOPT/nlpsol options
    (benchmarks only; recipes tune through :class:`MpcSection`).

    Parameters
    ----------
    model : ProcessModel
        The registered cell model (shared with the estimator and simulator).
    p_nominal : np.ndarray
        Recipe parameters (``model.parameter_vector(recipe.model.parameters)``).
    cfg : MpcSection
        Tuning.
    mvs, limits : Mapping
        The recipe's MV specs and limits, by MV name.
    period_s : float
        Base period of the unit loop.
    period_multiple : int
        Solve every this many base periods.
    hold_cycles : int
        Failed solves during which the last plan is followed before FAILED.
    real_time : bool
        Running against the wall clock (the runtime): applies ``cfg.max_solve_wall_s``. Offline
        simulation leaves it False, so that only the iteration cap limits a solve (deterministic).
    """

    cfg: MpcSection

    def __init__(self, model: ProcessModel, p_nominal: np.ndarray, cfg: MpcSection, mvs: Mapping[str, MvSpec],
                 limits: Mapping[str, MvLimits], period_s: float, period_multiple: int = 1,
                 hold_cycles: int = 6, real_time: bool = False) -> None:
        self._setup(model, p_nominal, cfg, period_s, period_multiple, hold_cycles, real_time)
        self._check_model()
        self.bindings = bind_mvs(model, mvs, limits, self._check_mv)
        self._check_disturbances()
        self._build()
        self.reset()

    # ------------------------------------------------------------- set-up
    def _check_model(self) -> None:
        m = self.model
        need = {"state": ("dissolved_oxide_kg", "undissolved_oxide_kg", "bath_temp_degC", "metal_temp_degC"),
                "aux": ("ae_margin_A_cm2", "metal_rate_kg_h", "power_kW", "dissolved_oxide_wtpct"),
                "parameter": ("metal_melting_degC",)}
        have = {"state": m.state_names, "aux": m.aux_names, "parameter": m.parameter_names}
        for group, names in need.items():
            absent = [n for n in names if n not in have[group]]
            if absent:
                raise ValueError(f"model {m.name!r} has no {group}(s) {absent} the cell MPC needs")

    def _check_mv(self, name: str, spec: MvSpec) -> None:
        """The cell MPC drives setpoints and increments whose model input is a rate in their unit per hour."""
        if spec.kind is MvKind.PULSE:
            raise ValueError(f"MV {name!r}: pulse MVs are not supported by the cell MPC")
        if spec.kind is MvKind.INCREMENT:
            rate_unit = self.model.unit_of(spec.model_input)
            if rate_unit != f"{spec.unit}/h":
                raise ValueError(f"increment MV {name!r} ({spec.unit}) must drive a rate input in "
                                 f"{spec.unit}/h; {spec.model_input!r} is in {rate_unit}")

    def _stage_functions(self) -> tuple[ca.Function, ca.Function]:
        """One prediction step (RK4) and one point (soft residuals, CVs, economic cost), both SX;
        the NLP maps them over the horizon, so derivatives and generated code stay per step."""
        m, cfg = self.model, self.cfg
        x, u = ca.SX.sym("x", len(m.states)), ca.SX.sym("u", len(m.inputs))
        d, p = ca.SX.sym("d", len(m.disturbances)), ca.SX.sym("p", len(m.parameters))
        xk = rk4(lambda z: m.f(z, u, d, p), x, self.step_s / cfg.rk4_substeps, cfg.rk4_substeps)[-1]
        nondiff = {"is_diff_in": [True, True, False, False]}  # no derivatives for d, p (not decided)
        step = ca.Function("cell_mpc_step", [x, u, d, p], [xk], ["x", "u", "d", "p"], ["x_next"], nondiff)
        si = {n: i for i, n in enumerate(m.state_names)}
        ai = {n: i for i, n in enumerate(m.aux_names)}
        i_melt = m.parameter_names.index("metal_melting_degC")
        units = cfg.violation_units
        (ox_lo, ox_hi), (tb_lo, tb_hi) = cfg.oxide_band_wtpct, cfg.bath_temp_band_degC
        a = m.aux(x, u, d, p)
        margin, c = a[ai["ae_margin_A_cm2"]], a[ai["dissolved_oxide_wtpct"]]
        t_b, t_m = x[si["bath_temp_degC"]], x[si["metal_temp_degC"]]
        res = ca.vertcat(  # >= 0 when met, in violation units; rank of each: _SOFT_RANK
            (margin - cfg.min_ae_margin_A_cm2) / units[0],
            (t_m - p[i_melt] - cfg.metal_melting_margin_K) / units[1],
            (c - ox_lo) / units[2],
            (ox_hi - c) / units[2],
            (t_b - tb_lo) / units[3],
            (tb_hi - t_b) / units[3],
        )
        metal = a[ai["metal_rate_kg_h"]]
        econ = (-cfg.production_weight * metal + cfg.energy_weight * a[ai["power_kW"]] / metal
                + cfg.undissolved_weight * x[si["undissolved_oxide_kg"]])
        point = ca.Function("cell_mpc_point", [x, u, d, p], [res, ca.vertcat(t_b, c, t_m, margin), econ],
                            ["x", "u", "d", "p"], ["res", "cv", "econ"], nondiff)
        return step, point

    def _build(self) -> None:
        """The NLP (once, compiled when configured) and the functions that make cold guesses and
        read trajectories out of a solution."""
        m, cfg, N = self.model, self.cfg, self.N
        nx, nu, nd, npar = len(m.states), len(m.inputs), len(m.disturbances), len(m.parameters)
        nr = len(MPC_CV_RANKS)
        step, point = self._stage_functions()

        x0, xs = ca.MX.sym("x0", nx), ca.MX.sym("xs", nx)
        u_prev, d, p = ca.MX.sym("u_prev", nu), ca.MX.sym("d", nd), ca.MX.sym("p", npar)
        u_range = ca.MX.sym("u_range", nu)  # scale of move suppression per input
        P = ca.vertcat(x0, xs, u_prev, d, p, u_range)
        DZ = ca.MX.sym("dz", nx, N)  # x_{k+1} = x0 + xs·dz_k, k = 0..N-1
        U = ca.MX.sym("u", nu, N)
        S = ca.MX.sym("s", nr, N + 1)  # slacks, scaled by violation_units
        w = ca.vertcat(ca.vec(DZ), ca.vec(U), ca.vec(S))
        self._n_dz, self._n_u, self._n_s = nx * N, nu * N, nr * (N + 1)

        xs_n = ca.repmat(xs, 1, N)
        X = ca.horzcat(x0, ca.repmat(x0, 1, N) + xs_n * DZ)  # nx × (N+1)
        U_pts = ca.horzcat(U, U[:, N - 1])  # input at each point
        F_scaled = step.map(N)(X[:, :N], U, d, p) / xs_n
        X_scaled = X[:, 1:] / xs_n
        g_du = U - ca.horzcat(u_prev, U[:, :N - 1])
        # Increment MVs: position after each step (their input is a rate per hour).
        self._inc = [b for b in self.bindings.values() if b.kind is MvKind.INCREMENT]
        cum = ca.DM(np.triu(np.ones((N, N)))) * (self.step_s / 3600.0)
        g_pos = ca.vertcat(*[ca.transpose(ca.mtimes(U[b.input_index, :], cum)) for b in self._inc])
        res, cv, econ = point.map(N + 1)(X, U_pts, d, p)
        S_res = S[list(_SOFT_RANK), :]  # the slack of each residual

        pen = ca.DM(list(cfg.rank_penalties))
        J_quad = ca.dot(pen, ca.sum2(S + cfg.quadratic_penalty_ratio * S ** 2))  # soft penalties
        for b in self.bindings.values():  # move suppression
            wgt, i = cfg.move_weights.get(b.name, 1.0), b.input_index
            moved = U[i, :] if b.kind is MvKind.INCREMENT else g_du[i, :]
            J_quad += wgt * ca.sumsqr(moved / u_range[i])
        J_nl = ca.sum2(econ[:, :N]) / N
        if cfg.terminal_temp_rate_weight > 0:
            dT_h = m.f(X[:, N], U[:, N - 1], d, p)[m.state_names.index("bath_temp_degC")] * 3600.0
            J_nl += cfg.terminal_temp_rate_weight * dT_h ** 2

        # Constraints: nonlinear (per step) and linear parts, kept apart for the derivatives.
        g_nl = ca.vertcat(ca.vec(F_scaled), ca.MX(nu * N + g_pos.numel(), 1), ca.vec(res))
        g_lin = ca.vertcat(-ca.vec(X_scaled), ca.vec(g_du), g_pos, ca.vec(S_res))
        self._n_gdyn, self._n_gdu, self._n_gsoft = nx * N, nu * N, len(_SOFT_RANK) * (N + 1)
        self._n_gpos = g_pos.numel()
        g = ca.vertcat(ca.vec(F_scaled - X_scaled), ca.vec(g_du), g_pos, ca.vec(res + S_res))
        self._make_solvers(self._nlp_functions(w, P, (J_nl, J_quad / N), (g_nl, g_lin), g))
        self._guess = self._guess_function(step, point, P, U)
        self._readout = ca.Function("cell_mpc_readout", [w, P], [X, U, cv, S])

    @staticmethod
    def _nlp_functions(w: ca.MX, P: ca.MX, J_parts: tuple[ca.MX, ca.MX], g_parts: tuple[ca.MX, ca.MX],
                       g: ca.MX) -> dict[str, ca.Function]:
        """Objective, constraints and their derivatives as IPOPT needs them. Derivatives of the
        nonlinear (per-step) and the linear/quadratic parts are taken apart, so that their
        sparsity colours stay those of one step (few AD directions)."""
        J = J_parts[0] + J_parts[1]
        lam_f, lam_g = ca.MX.sym("lam_f"), ca.MX.sym("lam_g", g.numel())
        jac = ca.jacobian(g_parts[0], w) + ca.jacobian(g_parts[1], w)
        lag_nl = lam_f * J_parts[0] + ca.dot(lam_g, g_parts[0])
        hess = ca.hessian(lag_nl, w)[0] + ca.hessian(lam_f * J_parts[1], w)[0]
        return {
            "nlp": ca.Function("cell_mpc_nlp", [w, P], [J, g], ["x", "p"], ["f", "g"]),
            "grad_f": ca.Function("nlp_grad_f", [w, P], [J, ca.gradient(J, w)], ["x", "p"], ["f", "grad_f_x"]),
            "jac_g": ca.Function("nlp_jac_g", [w, P], [g, jac], ["x", "p"], ["g", "jac_g_x"]),
            "hess_lag": ca.Function("nlp_hess_l", [w, P, lam_f, lam_g], [ca.triu(hess)],
                                    ["x", "p", "lam_f", "lam_g"], ["triu_hess_gamma_x_x"]),
        }

    def _guess_function(self, step: ca.Function, point: ca.Function, P: ca.MX, U: ca.MX) -> ca.Function:
        """Cold initial guess for given inputs: states simulated from x0 (dynamics met) and the
        slacks the soft constraints need plus ``_SLACK_START`` (met too)."""
        N, nx, nu, nd = self.N, self.nx, self.nu, len(self.model.disturbances)
        x0, xs = P[:nx], P[nx:2 * nx]
        d = P[2 * nx + nu:2 * nx + nu + nd]
        p = P[2 * nx + nu + nd:-nu]
        Xr = step.mapaccum("cell_mpc_sim", N)(x0, U, d, p)  # nx × N
        res = point.map(N + 1)(ca.horzcat(x0, Xr), ca.horzcat(U, U[:, N - 1]), d, p)[0]
        r_sym = ca.SX.sym("r", len(_SOFT_RANK))
        need = []
        for r in range(len(MPC_CV_RANKS)):
            worst = ca.mmin(ca.vertcat(*[r_sym[j] for j, rank in enumerate(_SOFT_RANK) if rank == r]))
            need.append(ca.fmax(0.0, -worst) + SLACK_START)
        need_fn = ca.Function("cell_mpc_need", [r_sym], [ca.vertcat(*need)])
        DZr = (Xr - ca.repmat(x0, 1, N)) / ca.repmat(xs, 1, N)
        return ca.Function("cell_mpc_guess", [U, P], [DZr, need_fn.map(N + 1)(res)])

    def _make_solvers(self, funcs: dict[str, ca.Function]) -> None:
        """Warm and cold IPOPT solvers sharing one set of NLP functions: compiled C when configured
        and a compiler works, else expanded to CasADi's SX interpreter."""
        cfg = self.cfg
        nlp_fn = funcs["nlp"]
        common = self._ipopt_common("cell_mpc", nlp_fn.nnz_in(0), nlp_fn.nnz_out(1))
        common["no_nlp_grad"] = True  # no parameter multipliers: nothing to derive
        if not cfg.mumps_scaling:
            common.update({"ipopt.mumps_scaling": 0, "ipopt.mumps_permuting_scaling": 0})
        # Warm: from the shifted last solution. Gradient-based scaling would shrink the objective
        # by the soft penalties and drown the economic terms in the barrier; unscaled with a small
        # initial barrier a warm solve takes a few iterations.
        warm = {**common, "ipopt.warm_start_init_point": "yes", "ipopt.warm_start_bound_push": 1e-6,
                "ipopt.warm_start_mult_bound_push": 1e-6, "ipopt.nlp_scaling_method": "none",
                "ipopt.obj_scaling_factor": 0.1, "ipopt.mu_init": 1e-6, **self.ipopt_options}
        # Cold: first solve, and retry when the warm one fails (far from the last solution a small
        # barrier crawls); IPOPT's robust defaults from a simulated initial guess.
        cold = {**common, "ipopt.mu_init": 0.1, **self.ipopt_options}
        compiled = None
        if cfg.compile_nlp:
            compiled = compile_functions(funcs, cfg.compiler, cache_dir(cfg.compile_cache_dir))
        self.compiled = compiled is not None
        """True when the NLP functions run as compiled C (see ``MpcSection.compile_nlp``)."""
        funcs = compiled if compiled is not None else {k: f.expand() for k, f in funcs.items()}
        shared = {k: v for k, v in funcs.items() if k != "nlp"}
        self._warm = ca.nlpsol("cell_mpc_warm", "ipopt", funcs["nlp"], {**warm, **shared})
        self._cold = ca.nlpsol("cell_mpc_cold", "ipopt", funcs["nlp"], {**cold, **shared})

    # ------------------------------------------------------------- solving
    def _parameters(self, estimate: Estimate) -> np.ndarray:
        p = self.p_nominal.copy()
        names = self.model.parameter_names
        values = estimate.as_dict()
        for bias, par, how in BIAS_PARAMETERS:
            if par not in names or bias not in values:
                continue
            i, b = names.index(par), float(values[bias])
            p[i] = p[i] * math.exp(b) if how == "log" else p[i] + b
        return p

    def _inputs_now(self, estimate: Estimate, applied: Mapping[str, float]) -> np.ndarray:
        """Current model inputs: MV readbacks (rates of increment MVs are 0), else estimate signals."""
        u = np.zeros(self.nu)
        values = estimate.as_dict()
        for i, name in enumerate(self.model.input_names):
            u[i] = float(values.get(name, 0.0))
        for b in self.bindings.values():
            if b.kind is MvKind.SETPOINT:
                u[b.input_index] = float(applied[b.name])
            else:
                u[b.input_index] = 0.0
        return u


    def _bounds(self, t_s: float, u_now: np.ndarray, applied: Mapping[str, float],
                en: Mapping[str, bool], lim: Mapping[str, MvConstraint]) -> tuple[np.ndarray, ...]:
        """Bounds of the decision variables and constraints for this solve: limits in force, rates,
        and no push into a limit the DCS reports its output at."""
        N, nu = self.N, self.nu
        lbu = np.repeat(u_now[:, None], N, axis=1)
        ubu = lbu.copy()
        lbdu = np.zeros((nu, N))
        ubdu = np.zeros((nu, N))
        lbpos, ubpos = [], []
        for b in self.bindings.values():
            i, c = b.input_index, lim[b.name]
            if b.kind is MvKind.SETPOINT:
                if not en[b.name]:
                    continue
                lbu[i, :], ubu[i, :] = setpoint_bounds(b, float(u_now[i]), c, self.step_s, N)
                lbdu[i, :], ubdu[i, :] = -b.rate_per_s * self.step_s, b.rate_per_s * self.step_s
            else:
                pos = float(applied[b.name])
                lo, hi = min(c.low, pos), max(c.high, pos)
                lbpos += [lo - pos] * N
                ubpos += [hi - pos] * N
                if not en[b.name]:
                    continue
                vmax = b.max_rate_h(self.period_s)
                blocked_s = max(0.0, b.min_interval_s - c.since_last_move_s)
                for k in range(N):
                    if (k + 1) * self.step_s > blocked_s:
                        lbu[i, k], ubu[i, k] = (0.0 if c.hold_down else -vmax), (0.0 if c.hold_up else vmax)
                lbdu[i, :], ubdu[i, :] = -np.inf, np.inf
        n_s = self._n_s
        lbx = np.concatenate([np.full(self._n_dz, -np.inf), lbu.ravel(order="F"), np.zeros(n_s)])
        ubx = np.concatenate([np.full(self._n_dz, np.inf), ubu.ravel(order="F"), np.full(n_s, np.inf)])
        lbg = np.concatenate([np.zeros(self._n_gdyn), lbdu.ravel(order="F"), lbpos, np.zeros(self._n_gsoft)])
        ubg = np.concatenate([np.zeros(self._n_gdyn), ubdu.ravel(order="F"), ubpos,
                              np.full(self._n_gsoft, np.inf)])
        return lbx, ubx, lbg, ubg

    def _cold_guess(self, P: np.ndarray, u_now: np.ndarray, lbx: np.ndarray, ubx: np.ndarray) -> np.ndarray:
        """Inputs of the last plan (else held), states simulated from the estimate with them and
        the slacks they need (plus a margin): feasible, away from the bounds."""
        N, nu = self.N, self.nu
        i1, i2 = self._n_dz, self._n_dz + self._n_u
        prev = self._sol
        U = np.repeat(u_now[:, None], N, axis=1) if prev is None else prev.U
        U = np.clip(U.ravel(order="F"), lbx[i1:i2], ubx[i1:i2]).reshape((nu, N), order="F")
        dz, S = (np.asarray(v) for v in self._guess(U, P))
        w = np.concatenate([dz.ravel(order="F"), U.ravel(order="F"), S.ravel(order="F")])
        w0: np.ndarray = np.clip(np.nan_to_num(w), lbx, ubx)
        return w0

    def _warm_guess(self, t_s: float, x0: np.ndarray, xs: np.ndarray, lbx: np.ndarray,
                    ubx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The last solution shifted by the steps elapsed (states re-expressed around the new
        estimate), with its multipliers when not shifted (shifted ones measured worse than none)."""
        prev = self._sol
        if prev is None:
            raise ValueError("no previous solution to warm-start from")
        N, nx, nu = self.N, self.nx, self.nu
        i1, i2 = self._n_dz, self._n_dz + self._n_u
        shift = round((t_s - prev.t_s) / self.step_s)

        def take(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
            return block.reshape((rows, cols), order="F")[:, np.minimum(np.arange(cols) + shift, cols - 1)]

        X = prev.x0[:, None] + prev.xs[:, None] * take(prev.w[:i1], nx, N)
        dz = (X - x0[:, None]) / xs[:, None]
        U = take(prev.w[i1:i2], nu, N)
        S = take(prev.w[i2:], len(MPC_CV_RANKS), N + 1)
        w = np.clip(np.concatenate([dz.ravel(order="F"), U.ravel(order="F"), S.ravel(order="F")]), lbx, ubx)
        if shift != 0:
            return w, None, None
        return w, prev.lam_x, prev.lam_g


    def _problem_data(self, estimate: Estimate, applied: Mapping[str, float], measured: Mapping[str, float]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | str:
        """(x0, parameters, inputs now, disturbances) of this solve, or why there is none (missing
        states; a non-finite number, increment positions included)."""
        try:
            x0 = np.array([float(estimate.value(n)) for n in self.model.state_names])
        except (ValueError, KeyError) as exc:
            return f"estimate lacks model states ({exc})"
        p = self._parameters(estimate)
        u_now = self._inputs_now(estimate, applied)
        d = disturbance_vector(self.model.disturbance_names, self.cfg.disturbance_inputs,
                               self.cfg.disturbance_values, measured)
        pos = [float(applied[b.name]) for b in self._inc]
        if not np.all(np.isfinite(np.concatenate([x0, p, u_now, d, pos]))):
            return "non-finite estimate, parameter, readback or disturbance"
        return x0, p, u_now, d

    def _solve(self, t_s: float, estimate: Estimate, applied: Mapping[str, float], en: Mapping[str, bool],
               lim: Mapping[str, MvConstraint], measured: Mapping[str, float], ctx: object = None,
               warm: bool = True) -> tuple[Solution | None, int, float, str]:
        """Warm attempt from the last solution (when there is one and ``warm``), else or when it
        fails a cold attempt; returns (solution or None, iterations, wall seconds, reason)."""
        data = self._problem_data(estimate, applied, measured)
        if isinstance(data, str):
            return None, 0, 0.0, data
        x0, p, u_now, d = data
        xs = np.maximum(0.1 * np.abs(x0), 1.0)
        u_range = np.ones(self.nu)
        for b in self.bindings.values():
            u_range[b.input_index] = (max(b.hi - b.lo, 1e-9) if b.kind is MvKind.SETPOINT
                                      else max(b.max_rate_h(self.period_s), 1e-9))
        P = np.concatenate([x0, xs, u_now, d, p, u_range])
        lbx, ubx, lbg, ubg = self._bounds(t_s, u_now, applied, en, lim)
        bounds = {"p": P, "lbx": lbx, "ubx": ubx, "lbg": lbg, "ubg": ubg}

        def warm_start() -> dict[str, NlpValue]:
            w0, lam_x0, lam_g0 = self._warm_guess(t_s, x0, xs, lbx, ubx)
            if lam_x0 is None or lam_g0 is None:  # a plan keeps both multipliers or neither
                return {"x0": w0}
            return {"x0": w0, "lam_x0": lam_x0, "lam_g0": lam_g0}

        res, iters, elapsed, how = self._attempts(self._warm, self._cold, bounds,
                                                  warm_start if warm and self._sol is not None else None,
                                                  lambda: self._cold_guess(P, u_now, lbx, ubx))
        if res is None:
            return None, iters, elapsed, how
        w = np.asarray(res["x"]).ravel()
        _, U, cv, S = (np.asarray(v) for v in self._readout(w, P))
        predicted = {name: tuple(float(v) for v in cv[r]) for r, name in enumerate(PREDICTED)}
        sol = Solution(t_s, x0, xs, w, np.array(U), predicted, np.asarray(res["lam_x"]).ravel(),
                       np.asarray(res["lam_g"]).ravel())
        active = [f"{name} {S[r].max():.2g}u" for r, name in enumerate(MPC_CV_RANKS) if S[r].max() > 1e-3]
        reason = f"ok ({how}, {iters} it)" + (f"; soft: {', '.join(active)}" if active else "")
        return sol, iters, elapsed, reason

    def _min_increment(self) -> float:
        """Increment MVs: planned moves smaller than ``min_increment`` are rounded to zero."""
        return self.cfg.min_increment
