"""Offline optimisation of a heating curve's adjustable terms on the simulator (``apc curve-opt``).

A *term* is one number of one curve segment with the range it may take,
written ``SEGMENT.FIELD=LOW:HIGH`` (``0.rate_degC_min=10:25``,
``3.power_kW=60:90``): a ramp's or cool's ``rate_degC_min``, a melt's
``power_kW``. Each candidate curve is run as whole simulated batches (one per
training seed, the recipe's controller or the one asked for) and scored on the
simulator's truth, through the furnace KPIs:

    cost = time_weight · batch_time_min + energy_weight · energy_kWh   (mean over the seeds)

plus :data:`PENALTY` per quality failure of any seed: a soak not completed on
the true core/charge, an excursion above the pressure limit, an excursion of
|surface − core| above its limit, a batch that did not complete. The search is
scipy's bounded Nelder–Mead from the recipe's values (deterministic: no
random draw) or a full grid; both are capped in evaluations, since a VIM batch
costs about 2 s with the PID and 20 s with the MPC.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import minimize

from apc.recipe.curve_schema import CurveSection, Segment

__all__ = ["PENALTY", "CurveOptError", "Objective", "OptResult", "Term", "apply_terms", "curve_to_mapping",
           "optimise", "simulated_kpis"]

PENALTY = 1000.0
"""Cost added per quality failure of one seed (cost units: weighted minutes)."""

ADJUSTABLE: Mapping[str, tuple[str, ...]] = {
    "ramp": ("rate_degC_min",), "cool": ("rate_degC_min",), "melt": ("power_kW",),
}
"""Which fields a term may adjust, per segment kind."""

_TERM = re.compile(r"^\s*(\d+)\.([a-zA-Z_]+)\s*=\s*([-+0-9.eE]+)\s*:\s*([-+0-9.eE]+)\s*$")


class CurveOptError(ValueError):
    """A curve optimisation was refused; the message says which argument and why."""


@dataclass(frozen=True)
class Term:
    """One adjustable number of the curve: ``segments[segment].<field>`` within [low, high]."""

    segment: int
    field: str
    low: float
    high: float

    @classmethod
    def parse(cls, text: str) -> Term:
        """``SEGMENT.FIELD=LOW:HIGH``; raises :class:`CurveOptError` naming the text."""
        m = _TERM.match(text)
        if m is None:
            raise CurveOptError(f"--terms {text!r}: expected SEGMENT.FIELD=LOW:HIGH (e.g. 0.rate_degC_min=10:25)")
        try:
            low, high = float(m.group(3)), float(m.group(4))
        except ValueError:
            raise CurveOptError(f"--terms {text!r}: LOW and HIGH must be numbers") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise CurveOptError(f"--terms {text!r}: needs finite LOW < HIGH")
        return cls(int(m.group(1)), m.group(2), low, high)

    def __str__(self) -> str:
        return f"{self.segment}.{self.field}={self.low:g}:{self.high:g}"


@dataclass(frozen=True)
class Objective:
    """Weights of the cost (per minute of batch time, per kWh)."""

    time_weight: float = 1.0
    energy_weight: float = 0.0

    def __post_init__(self) -> None:
        if not (self.time_weight >= 0 and self.energy_weight >= 0 and self.time_weight + self.energy_weight > 0):
            raise CurveOptError("--time-weight and --energy-weight must be >= 0, not both 0")

    def failures(self, kpis: Mapping[str, Any]) -> list[str]:
        """The quality limits one batch broke (empty: acceptable)."""
        out = []
        if not math.isfinite(float(kpis["batch_time_min"])):
            out.append("batch not complete")
        if int(kpis["soak_complete"]) != 1:
            out.append("soak not complete on the truth")
        if int(kpis["pressure_violations"]) > 0:
            out.append(f"{int(kpis['pressure_violations'])} pressure excursion(s)")
        if int(kpis["core_surface_dT_violations"]) > 0:
            out.append(f"{int(kpis['core_surface_dT_violations'])} core-surface dT excursion(s)")
        return out

    def cost(self, runs: Sequence[Mapping[str, Any]]) -> float:
        """Mean weighted time and energy over ``runs`` plus :data:`PENALTY` per failure."""
        total = 0.0
        for k in runs:
            fails = self.failures(k)
            t = float(k["batch_time_min"])
            e = float(k["energy_kWh"])
            t = t if math.isfinite(t) else 0.0
            e = e if math.isfinite(e) else 0.0
            total += self.time_weight * t + self.energy_weight * e + PENALTY * len(fails)
        return total / len(runs)


def check_terms(curve: CurveSection, terms: Sequence[Term]) -> None:
    """Refuse terms that name no segment, a field its kind lacks, twice the same, or bounds the curve rejects."""
    if not terms:
        raise CurveOptError("--terms: name at least one term (SEGMENT.FIELD=LOW:HIGH)")
    seen: set[tuple[int, str]] = set()
    n = len(curve.segments)
    for t in terms:
        if not 0 <= t.segment < n:
            raise CurveOptError(f"--terms {t}: the curve has {n} segments (0–{n - 1})")
        kind = curve.segments[t.segment].kind
        fields = ADJUSTABLE.get(kind, ())
        if t.field not in fields:
            can = f"its adjustable field is {', '.join(fields)}" if fields else "it has no adjustable field"
            raise CurveOptError(f"--terms {t}: segment {t.segment} is a {kind}; {can}")
        if (t.segment, t.field) in seen:
            raise CurveOptError(f"--terms {t}: segment {t.segment}'s {t.field} is named twice")
        seen.add((t.segment, t.field))
        if t.low <= 0:
            raise CurveOptError(f"--terms {t}: LOW must be > 0")
        now = float(getattr(curve.segments[t.segment], t.field))
        if not t.low <= now <= t.high:
            raise CurveOptError(f"--terms {t}: the recipe's {t.field} ({now:g}) lies outside {t.low:g}:{t.high:g} "
                                "(the search starts from the recipe's curve)")
        for v in (t.low, t.high):
            try:
                apply_terms(curve, [t], [v])
            except ValueError as exc:
                raise CurveOptError(f"--terms {t}: the curve rejects {t.field} = {v:g}: {exc}") from None


def apply_terms(curve: CurveSection, terms: Sequence[Term], values: Sequence[float]) -> CurveSection:
    """``curve`` with each term set to its value (validated by :class:`CurveSection`)."""
    segs = list(curve.segments)
    for t, v in zip(terms, values, strict=True):
        if t.field == "rate_degC_min":
            segs[t.segment] = replace(segs[t.segment], rate_degC_min=float(v))
        elif t.field == "power_kW":
            segs[t.segment] = replace(segs[t.segment], power_kW=float(v))
        else:
            raise CurveOptError(f"--terms {t}: {t.field} is not adjustable")
    return replace(curve, segments=tuple(segs))


def _segment_mapping(seg: Segment) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": seg.kind}
    for name in ("rate_degC_min", "target_degC", "time_min", "band_degC", "condition", "timeout_min", "power_kW"):
        v = getattr(seg, name)
        if v is not None:
            out[name] = [float(x) for x in v] if name == "band_degC" else v
    return out


def curve_to_mapping(curve: CurveSection) -> dict[str, Any]:
    """The curve in the form of a recipe's ``curve:`` section (fields left at None are left out)."""
    out: dict[str, Any] = {"controlled": curve.controlled, "start_degC": curve.start_degC,
                           "max_heating_rate_degC_min": curve.max_heating_rate_degC_min,
                           "max_cooling_rate_degC_min": curve.max_cooling_rate_degC_min}
    for name in ("ramp_lag_limit_degC", "pressure_limit_Pa", "core_surface_dT_max_K"):
        v = getattr(curve, name)
        if v is not None:
            out[name] = v
    out["segments"] = [_segment_mapping(s) for s in curve.segments]
    return out


Evaluate = Callable[[CurveSection, int], Mapping[str, Any]]
"""KPIs (keys of :data:`apc.kinds.furnace.kpi.FURNACE_KPI_KEYS`) of one batch of a curve on one seed."""


@dataclass(frozen=True)
class OptResult:
    """What the search found."""

    terms: tuple[Term, ...]
    start_values: tuple[float, ...]
    best_values: tuple[float, ...]
    start_cost: float
    best_cost: float
    evaluations: int
    """Distinct candidate curves simulated (each on every training seed)."""
    curve: CurveSection
    history: tuple[tuple[tuple[float, ...], float], ...]
    """Every distinct candidate (values, cost) in the order simulated."""


def optimise(curve: CurveSection, terms: Sequence[Term], seeds: Sequence[int], evaluate: Evaluate,
             objective: Objective, *, method: str = "nelder-mead", max_evals: int = 12,
             grid_points: int = 3, log: Callable[[str], None] | None = None) -> OptResult:
    """Search the terms' box for the lowest cost over ``seeds``; the recipe's curve is the first candidate."""
    check_terms(curve, terms)
    if not seeds:
        raise CurveOptError("--seeds: name at least one training seed")
    if max_evals < 2:
        raise CurveOptError("--max-evals must be >= 2")
    if method not in ("nelder-mead", "grid"):
        raise CurveOptError(f"--method {method!r}: nelder-mead or grid")
    lo = np.array([t.low for t in terms])
    hi = np.array([t.high for t in terms])
    start = np.array([float(getattr(curve.segments[t.segment], t.field)) for t in terms])
    x0 = np.clip((start - lo) / (hi - lo), 0.0, 1.0)  # the search runs on [0, 1] per term
    cache: dict[tuple[float, ...], float] = {}
    history: list[tuple[tuple[float, ...], float]] = []

    def cost_of(u: np.ndarray) -> float:
        values = tuple(round(float(v), 6) for v in lo + np.clip(u, 0.0, 1.0) * (hi - lo))
        if values in cache:
            return cache[values]
        if len(cache) >= max_evals:
            return math.inf  # budget spent: the search stops here
        cand = apply_terms(curve, terms, values)
        runs = [evaluate(cand, s) for s in seeds]
        c = objective.cost(runs)
        cache[values] = c
        history.append((values, c))
        if log is not None:
            fails = sorted({f for r in runs for f in objective.failures(r)})
            log(f"candidate {len(cache):2d} " + ", ".join(f"{t.segment}.{t.field}={v:g}" for t, v in
                zip(terms, values)) + f": cost {c:.2f}" + (f" ({'; '.join(fails)})" if fails else ""))
        return c

    start_cost = cost_of(x0)
    if method == "grid":
        if grid_points < 2:
            raise CurveOptError("--grid-points must be >= 2")
        axis = np.linspace(0.0, 1.0, grid_points)
        for u in itertools.product(axis, repeat=len(terms)):
            cost_of(np.array(u))
    else:
        n = len(terms)
        simplex = [x0] + [x0 + np.where(np.arange(n) == i, 0.25 if x0[i] <= 0.5 else -0.25, 0.0)
                          for i in range(n)]
        minimize(cost_of, x0, method="Nelder-Mead", bounds=[(0.0, 1.0)] * n,
                 options={"initial_simplex": np.array(simplex), "maxfev": 4 * max_evals,
                          "xatol": 0.02, "fatol": 0.01})
    best_values, best_cost = min(history, key=lambda h: h[1])
    return OptResult(tuple(terms), tuple(float(v) for v in start), best_values, start_cost, best_cost, len(cache),
                     apply_terms(curve, terms, best_values), tuple(history))


def simulated_kpis(loaded: Any, scenario: Any, controller: str | None) -> Evaluate:
    """An :data:`Evaluate` running one whole batch of the curve per seed on the recipe's simulator."""
    from apc.simulate import simulate

    def evaluate(curve: CurveSection, seed: int) -> Mapping[str, Any]:
        lr = replace(loaded, recipe=replace(loaded.recipe, curve=curve))
        res = asyncio.run(simulate(lr, scenario, seed=seed, controller=controller))  # type: ignore[arg-type]
        return res.kpis

    return evaluate
