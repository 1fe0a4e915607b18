"""A plain do-mpc set-up of the cell MPC's problem, for benchmarks only (``bench/mpc_speed.py``).

Same model (``model.f`` and ``model.aux`` of the shared ProcessModel, recipe
parameters with the estimator's biases), same horizon and step length, same
objective terms and soft constraints as ``controllers.cell_mpc.CellMpc``,
written with do-mpc's API and defaults: orthogonal collocation (Radau,
degree 2, one finite element per step), IPOPT with MUMPS and default options
(output suppressed only), warm start as do-mpc does it (the last solution as
the initial guess, unshifted).

:class:`DoMpcPlain` is a ``CellMpc`` whose NLP solve is replaced by do-mpc's
``make_step``; everything around the solve (parameters from the estimate,
input bounds, hold/fail logic, rate-limited moves) is CellMpc's, so a closed
loop differs only in the optimiser.

Differences from CellMpc's NLP that do-mpc's API cannot express (honestly):

* Soft constraints are checked at the start of each step, k = 0..N-1
  (do-mpc's default); CellMpc also checks the end point k = N.
* One slack per soft-constraint residual (6 per step) instead of one per rank
  (4 per point; a band's two sides share one); penalties are linear only
  (``penalty_term_cons``): CellMpc's small quadratic slack term
  (``quadratic_penalty_ratio``) is missing.
* Setpoint MVs: the per-step reachable range (rate x steps) is set as input
  bounds per step (``lb_opt_x``/``ub_opt_x``), but the step-to-step rate
  constraint |u_k - u_k-1| <= rate x step is not expressible (do-mpc only
  penalises changes, ``set_rterm``). Increment MVs: the planned rate bound
  and the blocked steps are input bounds per step; the position limit of
  the anode over the horizon is not expressed.
* The terminal bath-temperature-rate cost needs the last input, which
  do-mpc's terminal cost cannot see: only ``terminal_temp_rate_weight: 0``
  is supported.
* No scaling of states (do-mpc default); CellMpc uses scaled deviations.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import casadi as ca
import numpy as np

with warnings.catch_warnings():  # do-mpc warns that its optional PyTorch part is missing
    warnings.simplefilter("ignore", UserWarning)
    import do_mpc

from apc.types import Estimate, MvConstraint, MvKind
from controllers.cell_mpc import _SOFT_RANK, PREDICTED, CellMpc
from controllers.mpc_skeleton import Solution


class DoMpcPlain(CellMpc):
    """CellMpc's runtime around a plain do-mpc NLP (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.cfg.terminal_temp_rate_weight > 0:
            raise ValueError("plain do-mpc set-up: terminal_temp_rate_weight > 0 is not expressible")
        self._point = self._stage_functions()[1]
        self._mpc, self._p_template = self._setup_dompc()
        self._dompc_started = False
        self.make_step_times: list[float] = []
        """Wall time of every do-mpc ``make_step``, seconds."""

    def reset(self) -> None:
        """CellMpc's reset; the next solve starts do-mpc from a fresh initial guess."""
        super().reset()
        self._dompc_started = False

    # ------------------------------------------------------------- set-up
    def _u_ranges(self) -> np.ndarray:
        """Move-suppression scale per input, as CellMpc computes it."""
        u_range = np.ones(self.nu)
        for b in self.bindings.values():
            u_range[b.input_index] = (max(b.hi - b.lo, 1e-9) if b.kind is MvKind.SETPOINT
                                      else max(b.max_rate_h(self.period_s), 1e-9))
        return u_range

    def _setup_dompc(self) -> tuple[Any, Any]:
        m, cfg, N = self.model, self.cfg, self.N
        model = do_mpc.model.Model("continuous", "SX")
        x = model.set_variable("_x", "x", shape=(self.nx, 1))
        u = model.set_variable("_u", "u", shape=(self.nu, 1))
        d = model.set_variable("_p", "d", shape=(len(m.disturbances), 1))
        p = model.set_variable("_p", "p", shape=(len(m.parameters), 1))
        model.set_rhs("x", m.f(x, u, d, p))
        model.setup()

        mpc = do_mpc.controller.MPC(model)
        mpc.settings.n_horizon = N
        mpc.settings.t_step = self.step_s
        mpc.settings.supress_ipopt_output()
        res, _, econ = self._point(x, u, d, p)
        u_range = self._u_ranges()
        lterm = econ
        for b in self.bindings.values():
            wgt, i = cfg.move_weights.get(b.name, 1.0), b.input_index
            if b.kind is MvKind.INCREMENT:
                lterm = lterm + wgt * (u[i] / u_range[i]) ** 2
        mpc.set_objective(lterm=lterm / N, mterm=ca.DM(0.0))
        factors = np.zeros(self.nu)
        for b in self.bindings.values():
            if b.kind is MvKind.SETPOINT:
                factors[b.input_index] = cfg.move_weights.get(b.name, 1.0) / u_range[b.input_index] ** 2 / N
        mpc.set_rterm(u=factors)
        for j, rank in enumerate(_SOFT_RANK):
            mpc.set_nl_cons(f"soft_{j}", -res[j], ub=0.0, soft_constraint=True,
                            penalty_term_cons=cfg.rank_penalties[rank] / N)
        p_template = mpc.get_p_template(1)
        mpc.set_p_fun(lambda t_now: p_template)
        with warnings.catch_warnings():  # do-mpc calls numpy on casadi values (legacy-mode notice)
            warnings.simplefilter("ignore", FutureWarning)
            mpc.setup()
        return mpc, p_template

    # ------------------------------------------------------------- solving
    def _solve(self, t_s: float, estimate: Estimate, applied: Mapping[str, float], en: Mapping[str, bool],
               lim: Mapping[str, MvConstraint], measured: Mapping[str, float], ctx: object = None,
               warm: bool = True) -> tuple[Solution | None, int, float, str]:
        """One do-mpc ``make_step`` with this cycle's parameters and input bounds (limits in force)."""
        data = self._problem_data(estimate, applied, measured)
        if isinstance(data, str):
            return None, 0, 0.0, data
        x0, p, u_now, d = data
        mpc = self._mpc
        lbx, ubx, _, _ = self._bounds(t_s, u_now, applied, en, lim)
        i1 = self._n_dz
        lbu = lbx[i1:i1 + self._n_u].reshape((self.nu, self.N), order="F")
        ubu = ubx[i1:i1 + self._n_u].reshape((self.nu, self.N), order="F")
        for k in range(self.N):
            mpc.lb_opt_x["_u", k, 0] = lbu[:, k]
            mpc.ub_opt_x["_u", k, 0] = ubu[:, k]
        self._p_template["_p", 0, "d"] = d
        self._p_template["_p", 0, "p"] = p
        mpc.u0 = u_now
        if not self._dompc_started:
            mpc.x0 = x0
            mpc.set_initial_guess()
            self._dompc_started = True
        t0 = time.perf_counter()
        mpc.make_step(x0)
        elapsed = time.perf_counter() - t0
        self.make_step_times.append(elapsed)
        self.solve_times.append(float(mpc.solver_stats.get("t_wall_total", elapsed)))
        stats = mpc.solver_stats
        iters = int(stats.get("iter_count", 0))
        status = str(stats.get("return_status", "unknown"))
        if not stats.get("success", False):
            return None, iters, elapsed, f"do-mpc IPOPT {status} ({iters} iterations)"
        U = np.hstack([np.asarray(mpc.opt_x_num["_u", k, 0]) for k in range(self.N)])
        X = np.hstack([np.asarray(mpc.opt_x_num["_x", k, 0, -1]) for k in range(self.N + 1)])
        U_pts = np.hstack([U, U[:, -1:]])
        cv = np.hstack([np.asarray(self._point(X[:, k], U_pts[:, k], d, p)[1]) for k in range(self.N + 1)])
        predicted = {name: tuple(float(v) for v in cv[r]) for r, name in enumerate(PREDICTED)}
        sol = Solution(t_s, x0, np.ones(self.nx), np.zeros(0), U, predicted)
        return sol, iters, elapsed, f"ok (do-mpc, {iters} it)"
