"""What every MPC of the project shares (implements the runtime side of :class:`apc.protocols.Controller`).

A specialisation (:class:`controllers.cell_mpc.CellMpc`, :class:`controllers.furnace_mpc.FurnaceMpc`)
builds its NLP and says how one solve is set up (:meth:`MpcSkeleton._solve`); the skeleton holds
the rest, identically for every unit kind:

* MV bindings from the recipe (:func:`bind_mvs`) and the checks of the model's disturbances;
* when to solve: every ``period_multiple`` cycles, and at once when the enable flags, the limits in
  force or the specialisation's state key change; a change of enables or state solves cold;
* IPOPT options shared by all, the wall-clock deadline (real time only) and the warm-then-cold
  attempt (:meth:`MpcSkeleton._attempts`) with its solve statistics;
* holding the last plan after failed solves (:func:`controllers.plan_hold.plan_status`);
* the moves: each setpoint MV toward its plan within the limits in force, never toward a limit the
  DCS reports, rate-limited from the readback and the last output (so the output guard never
  clamps); each increment MV by the plan's displacement over its minimum interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from apc.recipe.schema import MvLimits, MvSpec
from apc.types import Estimate, MvConstraint, MvKind, Plan
from controllers.nlp_attempt import OUT_OF_TIME, NlpOption, NlpValue, SolveDeadline, ipopt_attempt, solve_deadline
from controllers.plan_hold import plan_status
from sim.models.base import ProcessModel

REL_MARGIN = 1e-6
"""Moves stay this share inside rate and step limits (float rounding vs the guard)."""
HOLD_DEADBAND = 0.01
"""At a DCS-reported limit, moves away from it smaller than this share of a cycle's rate are not made."""
SLACK_START = 0.1
"""Cold initial guess: each slack this far (violation units) above what its soft constraint needs,
so the interior-point start is feasible and off the slack bounds."""


class MpcTuning(Protocol):
    """The recipe fields every MPC section has."""

    @property
    def horizon_steps(self) -> int: ...
    @property
    def step_multiple(self) -> int: ...
    @property
    def move_weights(self) -> Mapping[str, float]: ...
    @property
    def disturbance_values(self) -> Mapping[str, float]: ...
    @property
    def disturbance_inputs(self) -> Mapping[str, str]: ...
    @property
    def max_iter(self) -> int: ...
    @property
    def tol(self) -> float: ...
    @property
    def acceptable_tol(self) -> float: ...
    @property
    def max_solve_wall_s(self) -> float: ...


@dataclass(frozen=True)
class MvBinding:
    """One recipe MV as an MPC sees it."""

    name: str
    kind: MvKind
    input_index: int
    lo: float
    """Operator ∩ engineering low limit (increments: position)."""
    hi: float
    rate_per_s: float
    max_step: float | None = None
    min_interval_s: float = 0.0

    def step_cap(self, period_s: float) -> float:
        """Increments: largest single move."""
        return self.max_step if self.max_step is not None else self.rate_per_s * period_s

    def max_rate_h(self, period_s: float) -> float:
        """Increments: largest average move rate per hour (step cap over the minimum interval)."""
        return self.step_cap(period_s) / max(self.min_interval_s, period_s) * 3600.0


def bind_mvs(model: ProcessModel, mvs: Mapping[str, MvSpec], limits: Mapping[str, MvLimits],
             check: Callable[[str, MvSpec], None]) -> dict[str, MvBinding]:
    """The recipe's MVs as bindings; ``check(name, spec)`` raises ``ValueError`` for an MV the
    specialisation cannot drive (e.g. a kind it does not support)."""
    out: dict[str, MvBinding] = {}
    for name, spec in mvs.items():
        if spec.model_input not in model.input_names:
            raise ValueError(f"MV {name!r}: model input {spec.model_input!r} unknown")
        check(name, spec)
        if name not in limits:
            raise ValueError(f"MV {name!r}: no limits")
        lim = limits[name]
        lo = max(lim.operator[0], lim.engineering[0])
        hi = min(lim.operator[1], lim.engineering[1])
        out[name] = MvBinding(name, spec.kind, model.input_names.index(spec.model_input), lo, hi, lim.rate_per_s,
                              lim.max_step, lim.min_interval_s)
    return out


@dataclass
class Solution:
    """A converged solve: the plan and what the warm start needs."""

    t_s: float
    x0: np.ndarray
    xs: np.ndarray
    w: np.ndarray
    U: np.ndarray
    """nu × N, absolute inputs (increment MVs: rates per hour)."""
    predicted: dict[str, tuple[float, ...]]
    lam_x: np.ndarray | None = None
    lam_g: np.ndarray | None = None


Attempt = tuple[dict[str, Any] | None, int, float, str]
"""(IPOPT result or None, iterations, wall seconds, how it went: ``warm``/``cold`` or the failure)."""


class MpcSkeleton:
    """The shared runtime of the MPCs; see the module docstring.

    ``ipopt_options`` (class attribute) adds or overrides IPOPT/nlpsol options (benchmarks only;
    recipes tune through their MPC section). Specialisations call :meth:`_setup` from their
    constructor, build their NLP (with :meth:`_ipopt_common`) and implement :meth:`_solve`; they
    may override :meth:`_before_solve` (state the solve key depends on, an early plan) and
    :meth:`_solve_failed`.
    """

    ipopt_options: ClassVar[dict[str, NlpOption]] = {}
    section = "controller.mpc"
    """Recipe section named in configuration errors."""

    model: ProcessModel
    cfg: MpcTuning
    bindings: dict[str, MvBinding]

    def _setup(self, model: ProcessModel, p_nominal: np.ndarray, cfg: MpcTuning, period_s: float,
               period_multiple: int, hold_cycles: int, real_time: bool) -> None:
        """Fields every MPC has (before its bindings and NLP are built)."""
        if not period_s > 0 or period_multiple < 1:
            raise ValueError("period_s must be > 0 and period_multiple >= 1")
        self.model = model
        self.cfg = cfg
        self.p_nominal = np.asarray(p_nominal, dtype=float)
        self.period_s = float(period_s)
        self.solve_every_s = float(period_multiple) * self.period_s
        self.hold_cycles = int(hold_cycles)
        self.real_time = bool(real_time)
        self.N = cfg.horizon_steps
        self.step_s = cfg.step_multiple * self.period_s
        self.nx, self.nu = len(model.states), len(model.inputs)
        self.solve_times: list[float] = []
        """Wall time of every solve, seconds (for benchmarks)."""
        self._deadline: float | None = None
        self._stop: SolveDeadline | None = None

    def _check_disturbances(self) -> None:
        """Every model disturbance has a value or an input; nothing else is named; move weights name MVs."""
        m, cfg, where = self.model, self.cfg, self.section
        missing = [d for d in m.disturbance_names
                   if d not in cfg.disturbance_values and d not in cfg.disturbance_inputs]
        if missing:
            raise ValueError(f"{where}: model disturbance(s) {missing} need a value in disturbance_values "
                             "or an input in disturbance_inputs")
        unknown = sorted((set(cfg.disturbance_values) | set(cfg.disturbance_inputs)) - set(m.disturbance_names))
        if unknown:
            raise ValueError(f"{where}: {unknown} are not disturbances of model {m.name!r}")
        unknown_mv = sorted(set(cfg.move_weights) - set(self.bindings))
        if unknown_mv:
            raise ValueError(f"{where}.move_weights: unknown MV(s) {unknown_mv}")

    def _ipopt_common(self, name: str, n_w: int, n_g: int) -> dict[str, NlpOption]:
        """IPOPT options of every attempt, with the wall-clock deadline callback in real time."""
        cfg = self.cfg
        common: dict[str, NlpOption] = {
            "ipopt.print_level": 0, "print_time": False, "ipopt.sb": "yes", "calc_lam_p": False,
            "ipopt.max_iter": cfg.max_iter, "ipopt.tol": cfg.tol, "ipopt.acceptable_tol": cfg.acceptable_tol,
            "ipopt.acceptable_iter": 5,
        }
        if self.real_time:  # one wall-clock budget for the warm and the cold attempt of a solve
            self._stop = SolveDeadline(f"{name}_deadline", n_w, n_g)
            common["iteration_callback"] = self._stop
        return common

    # ------------------------------------------------------------ protocol
    def reset(self) -> None:
        """Forget plans, warm start, failure count and move memory."""
        self._sol: Solution | None = None
        self._fails = 0
        self._next_solve_t: float | None = None
        self._last_key: tuple[object, ...] | None = None
        self._t_prev: float | None = None
        self._last_out: dict[str, float] = {}

    def set_deadline(self, deadline_mono: float | None) -> None:
        """Real time: the next solves stop by this ``time.monotonic()`` (and within ``max_solve_wall_s``)."""
        self._deadline = deadline_mono

    def track(self, applied: Mapping[str, float]) -> None:
        """MVs the APC does not drive: forget the last value sent (moves start from the readback). An
        increment's minimum interval comes from the unit's ``since_last_move_s``, never from memory
        this could lose."""
        for name in applied:
            self._last_out.pop(name, None)

    def step(self, t_s: float, estimate: Estimate, applied: Mapping[str, float],
             enabled: Mapping[str, bool], disturbances: Mapping[str, float],
             constraints: Mapping[str, MvConstraint] | None = None) -> Plan:
        """Solve when due, else follow the plan; see the module docstring. Without ``constraints``
        the recipe limits hold."""
        dt = self.period_s if self._t_prev is None else t_s - self._t_prev
        self._t_prev = t_s
        en = {n: bool(enabled.get(n, False)) and n in applied for n in self.bindings}
        lim = {n: (constraints or {}).get(n) or MvConstraint(b.lo, b.hi) for n, b in self.bindings.items()}
        lim, ctx, state, early = self._before_solve(t_s, dt, estimate, applied, en, lim)
        if early is not None:
            return early
        key = (tuple(sorted(en.items())), tuple(sorted(lim.items())), state)
        changed = key != self._last_key
        # a new limit keeps the warm start (clipped to the new bounds); new enables or state do not
        cold = self._last_key is None or key[0] != self._last_key[0] or key[2] != self._last_key[2]
        due = changed or self._next_solve_t is None or t_s >= self._next_solve_t - 1e-9 * self.period_s
        iterations, solve_time, reason = 0, 0.0, ""
        if due:
            self._next_solve_t = t_s + self.solve_every_s
            self._last_key = key
            if self._stop is not None:
                self._stop.arm(solve_deadline(self._deadline, self.cfg.max_solve_wall_s))
            sol, iterations, solve_time, reason = self._solve(t_s, estimate, applied, en, lim, disturbances, ctx,
                                                              warm=not cold)
            if sol is not None:
                self._sol, self._fails = sol, 0
            else:
                self._fails += 1
                self._solve_failed(reason)
        plan = self._valid_plan(t_s)
        status, reason, follow = plan_status(self._fails, self.hold_cycles, plan is not None, due, reason)
        plan = plan if follow else None
        moves = self._emit(t_s, dt, applied, en, lim, self._plan_target(plan, t_s), plan)
        return Plan(moves, plan.predicted if plan is not None else {}, status, iterations, solve_time, reason)

    def planned(self, mv: str) -> tuple[float, ...]:
        """The last converged plan of one MV per step: setpoint values, or rates per hour for
        increment MVs; empty without a plan."""
        if self._sol is None:
            return ()
        return tuple(float(v) for v in self._sol.U[self.bindings[mv].input_index])

    def solve_time_stats(self) -> dict[str, float]:
        """Count, median, 99th percentile and maximum of the solve wall times so far, seconds."""
        if not self.solve_times:
            return {"n": 0.0, "median_s": math.nan, "p99_s": math.nan, "max_s": math.nan}
        a = np.array(self.solve_times)
        return {"n": float(len(a)), "median_s": float(np.median(a)), "p99_s": float(np.percentile(a, 99)),
                "max_s": float(a.max())}

    # ------------------------------------------------------------ hooks
    def _before_solve(self, t_s: float, dt: float, estimate: Estimate, applied: Mapping[str, float],
                      en: Mapping[str, bool], lim: dict[str, MvConstraint]
                      ) -> tuple[dict[str, MvConstraint], Any, object, Plan | None]:
        """(limits to plan with, context for :meth:`_solve`, state in the solve key, a plan that
        replaces this step's solve or None)."""
        return lim, None, None, None

    def _solve(self, t_s: float, estimate: Estimate, applied: Mapping[str, float], en: Mapping[str, bool],
               lim: Mapping[str, MvConstraint], measured: Mapping[str, float], ctx: Any,
               warm: bool = True) -> tuple[Solution | None, int, float, str]:
        """One solve: (solution or None, iterations, wall seconds, reason)."""
        raise NotImplementedError

    def _solve_failed(self, reason: str) -> None:
        """Called after each failed solve (the plan hold has counted it)."""

    # ------------------------------------------------------------ solving
    def _valid_plan(self, t_s: float) -> Solution | None:
        """The last converged plan while its remainder covers ``t_s``."""
        sol = self._sol
        if sol is None or t_s - sol.t_s >= self.N * self.step_s:
            return None
        return sol

    def _attempts(self, warm_solver: Any, cold_solver: Any, bounds: Mapping[str, NlpValue],
                  warm_start: Callable[[], dict[str, NlpValue]] | None,
                  cold_start: Callable[[], np.ndarray]) -> Attempt:
        """A warm attempt (``warm_start`` gives its initial point and multipliers) and, when it fails
        for another reason than time, a cold one from ``cold_start()``; the wall time joins
        :attr:`solve_times`. ``how`` is ``warm``/``cold`` (with the warm failure) or, without a
        result, the reason."""
        res, iters, elapsed, status, how = None, 0, 0.0, "", "cold"
        if warm_start is not None:
            res, iters, elapsed, status = ipopt_attempt(warm_solver, {**warm_start(), **bounds})
            how = "warm"
        if res is None and status not in OUT_OF_TIME:  # a timed-out attempt used the solve's budget
            first = f"warm {status} after {iters} it, " if how == "warm" else ""
            res, it2, t2, status = ipopt_attempt(cold_solver, {"x0": cold_start(), **bounds})
            iters, elapsed, how = iters + it2, elapsed + t2, f"{first}cold"
        self.solve_times.append(elapsed)
        if res is None:
            return None, iters, elapsed, f"IPOPT {status} ({how}, {iters} iterations in all)"
        return res, iters, elapsed, how

    # ------------------------------------------------------------ moves
    def _plan_target(self, plan: Solution | None, t_s: float) -> Callable[[MvBinding], float | None]:
        """Each setpoint MV's value in the plan at ``t_s`` (None without a plan: held)."""
        if plan is None:
            return lambda b: None
        j = min(max(int((t_s - plan.t_s) / self.step_s + 1e-9), 0), self.N - 1)
        return lambda b: float(plan.U[b.input_index, j])

    def _emit(self, t_s: float, dt: float, applied: Mapping[str, float], en: Mapping[str, bool],
              lim: Mapping[str, MvConstraint], target: Callable[[MvBinding], float | None],
              plan: Solution | None) -> dict[str, float]:
        """This cycle's move of each MV: a setpoint toward ``target(b)`` (limited by :meth:`_move`; a
        disabled MV or a None target stays at its readback), an increment by the plan's displacement
        (:meth:`_increment`); an MV without a readback gets none."""
        moves: dict[str, float] = {}
        rate_dt = min(max(dt, 0.0), self.period_s) if dt > 0 else self.period_s
        for b in self.bindings.values():
            if b.name not in applied:
                continue
            a, c = float(applied[b.name]), lim[b.name]
            if b.kind is MvKind.SETPOINT:
                want = target(b) if en[b.name] else None
                if want is None:
                    moves[b.name] = a
                    self._last_out.pop(b.name, None)
                else:
                    moves[b.name] = self._move(b, want, a, c, rate_dt)
            else:
                moves[b.name] = 0.0
                if en[b.name] and plan is not None:
                    delta = self._increment(b, a, c, rate_dt, plan, t_s)
                    if delta is not None:
                        moves[b.name] = delta
        return moves

    def _move(self, b: MvBinding, target: float, a: float, c: MvConstraint, rate_dt: float) -> float:
        """``target`` inside the limits in force, never toward a DCS limit (and no creeping off it by
        the solver's interior tolerance, which would clear the DCS status and start a push-clamp
        chatter), within the rate from the readback ``a`` and the last output."""
        target = min(max(target, c.low), c.high)
        r = b.rate_per_s * rate_dt * (1.0 - REL_MARGIN)
        if c.hold_up:
            target = a if target > a - HOLD_DEADBAND * r else target
        if c.hold_down:
            target = a if target < a + HOLD_DEADBAND * r else target
        lo, hi = a - r, a + r
        last = self._last_out.get(b.name)
        if last is not None and max(lo, last - r) <= min(hi, last + r):
            lo, hi = max(lo, last - r), min(hi, last + r)
        value = min(max(target, lo), hi)
        self._last_out[b.name] = value
        return value

    def _increment(self, b: MvBinding, a: float, c: MvConstraint, rate_dt: float, plan: Solution,
                   t_s: float) -> float | None:
        """An increment MV's move: the plan's displacement over its minimum interval, once the interval
        since its last move has passed, capped by its step and the limits in force (never toward a DCS
        limit); None below :meth:`_min_increment` or while blocked."""
        if not c.since_last_move_s >= b.min_interval_s:
            return None
        window = max(b.min_interval_s, self.period_s)
        delta = self._planned_displacement(plan, b.input_index, t_s, window)
        cap = b.step_cap(rate_dt) * (1.0 - REL_MARGIN)
        lo = 0.0 if c.hold_down else max(-cap, min(0.0, c.low - a))
        hi = 0.0 if c.hold_up else min(cap, max(0.0, c.high - a))
        delta = min(max(delta, lo), hi)
        while delta > 0 and a + delta > c.high:
            delta = math.nextafter(delta, 0.0)
        while delta < 0 and a + delta < c.low:
            delta = math.nextafter(delta, 0.0)
        if abs(delta) < self._min_increment():
            return None
        return delta

    def _min_increment(self) -> float:
        """Planned increment moves smaller than this (MV unit) are not made."""
        return 0.0

    def _planned_displacement(self, sol: Solution, i: int, t_s: float, window_s: float) -> float:
        """Integral of the planned rate (per hour) of input ``i`` over [t_s, t_s + window_s]."""
        total = 0.0
        t_a, t_b = t_s - sol.t_s, t_s - sol.t_s + window_s
        for k in range(self.N):
            lo, hi = max(t_a, k * self.step_s), min(t_b, (k + 1) * self.step_s)
            if hi > lo:
                total += float(sol.U[i, k]) * (hi - lo) / 3600.0
        return total


def setpoint_bounds(b: MvBinding, a: float, c: MvConstraint, step_s: float, N: int,
                    cap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of a setpoint MV over the horizon: the limits in force reachable at its rate per step
    from ``a``; at a DCS-reported limit only away from it; above/below the limits in force it comes
    back at full rate. ``cap``: a further upper bound per step (NaN: none)."""
    r = b.rate_per_s * step_s
    top = min(c.high, a) if c.hold_up else c.high
    bottom = max(c.low, a) if c.hold_down else c.low
    lo_k, hi_k = np.empty(N), np.empty(N)
    for k in range(N):
        top_k = min(top, cap[k]) if cap is not None and math.isfinite(cap[k]) else top
        lo, hi = max(bottom, a - r * (k + 1)), min(top_k, a + r * (k + 1))
        if lo > hi:
            lo = hi = (a - r * (k + 1)) if a > top_k else (a + r * (k + 1)) if a < bottom else a
        lo_k[k], hi_k[k] = lo, hi
    return lo_k, hi_k

