"""What both MPCs do around one IPOPT solve: the attempt itself, and the disturbance vector it predicts with."""

from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import casadi as ca
import numpy as np

SUCCESS = ("Solve_Succeeded", "Solved_To_Acceptable_Level")
"""IPOPT return statuses whose solution is used."""


def ipopt_attempt(solver: ca.Function, args: dict[str, object]) -> tuple[dict[str, object] | None, int, float, str]:
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
