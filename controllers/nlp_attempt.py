"""What both MPCs do around one IPOPT solve: the attempt itself, and the disturbance vector it predicts with."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import casadi as ca
import numpy as np

NlpOption: TypeAlias = bool | int | float | str | ca.Function | Sequence["NlpOption"] | Mapping[str, "NlpOption"] | None
"""An option value of ``ca.nlpsol`` (IPOPT settings, the deadline callback)."""
NlpValue: TypeAlias = float | np.ndarray | ca.DM
"""A numeric argument of one solve (initial point, multipliers, parameters, bounds)."""

SUCCESS = ("Solve_Succeeded", "Solved_To_Acceptable_Level")
"""IPOPT return statuses whose solution is used."""
OUT_OF_TIME = ("Maximum_WallTime_Exceeded", "User_Requested_Stop")
"""IPOPT return statuses of an attempt stopped by its wall-clock budget (no retry: the budget is spent)."""


class SolveDeadline(ca.Callback):
    """An IPOPT iteration callback that stops the solve at a wall-clock deadline (``time.monotonic()``).

    One deadline serves every attempt of a solve (warm, then cold): :meth:`arm` it once per solve.
    IPOPT calls it after each iteration, so a solve stops within one iteration of the deadline (a
    few milliseconds here); a computation stuck inside one iteration is the compute worker's
    deadline and watchdog's business."""

    def __init__(self, name: str, nx: int, ng: int) -> None:
        ca.Callback.__init__(self)
        self._nx, self._ng = nx, ng
        self.deadline_mono: float | None = None
        self.construct(name, {})

    def arm(self, deadline_mono: float | None) -> None:
        """Stop at ``deadline_mono`` (``None``: never)."""
        self.deadline_mono = deadline_mono

    def get_n_in(self) -> int:
        return int(ca.nlpsol_n_out())

    def get_n_out(self) -> int:
        return 1

    def get_name_in(self, i: int) -> str:
        return str(ca.nlpsol_out(i))

    def get_name_out(self, i: int) -> str:
        return "stop"

    def get_sparsity_in(self, i: int) -> ca.Sparsity:
        name = ca.nlpsol_out(i)
        if name == "f":
            return ca.Sparsity.scalar()
        if name in ("x", "lam_x"):
            return ca.Sparsity.dense(self._nx)
        if name in ("g", "lam_g"):
            return ca.Sparsity.dense(self._ng)
        return ca.Sparsity(0, 0)

    def eval(self, arg: object) -> list[int]:
        deadline = self.deadline_mono
        return [1 if deadline is not None and time.monotonic() > deadline else 0]


def solve_deadline(request_deadline_mono: float | None, max_solve_wall_s: float) -> float | None:
    """When this solve must stop: the cycle's deadline, or ``max_solve_wall_s`` from now if sooner
    (0: no budget of its own)."""
    own = time.monotonic() + max_solve_wall_s if max_solve_wall_s > 0 else None
    candidates = [d for d in (request_deadline_mono, own) if d is not None]
    return min(candidates) if candidates else None


def ipopt_attempt(solver: ca.Function, args: Mapping[str, NlpValue]) -> tuple[dict[str, ca.DM] | None, int, float, str]:
    """One IPOPT attempt: (result, or None unless it succeeded with finite numbers; iterations; wall
    seconds; IPOPT status). CasADi raises on evaluation errors (NaN in functions): that is a failure."""
    t0 = time.perf_counter()
    try:
        res = solver(**args)
    except RuntimeError as exc:
        return None, 0, time.perf_counter() - t0, f"solver error: {exc}"
    elapsed = time.perf_counter() - t0
    stats = solver.stats()
    iters = int(stats.get("iter_count", 0))
    status = str(stats.get("return_status", "unknown"))
    ok = status in SUCCESS and bool(np.all(np.isfinite(np.asarray(res["x"]))))
    return (res if ok else None), iters, elapsed, status


def disturbance_vector(names: Sequence[str], inputs: Mapping[str, str], values: Mapping[str, float],
                       measured: Mapping[str, float]) -> np.ndarray:
    """The model's disturbances in order: the measured input bound to each (``inputs``), else, when
    unbound or not finite this cycle, the recipe's value (``values``; NaN when there is none)."""
    out = []
    for name in names:
        src = inputs.get(name)
        v = float(measured.get(src, math.nan)) if src else math.nan
        if not math.isfinite(v):
            v = float(values.get(name, math.nan))
        out.append(v)
    return np.array(out)
