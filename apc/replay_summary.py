"""What a replay says, in figures: per MV how differently the new recipe would have moved, per
estimate how far the new estimate is from the recorded one, and per lab or dip sample input how
well each estimate predicted the samples (``apc replay``; ``docs/replay.md``).

* MVs, over the cycles the recorded unit was ON (what the guard let through, held values
  included: a held setpoint stays at its base, a held increment is 0): mean |replayed − recorded|,
  cycles whose value or written/held outcome differs, cycles clamped on each side; and over every
  cycle both sides planned, the same of the plans' proposals.
* Estimates (the model states and the CV estimates the recipe's plant KPIs name): over cycles both
  sides have it, mean and mean |replayed − recorded|, the largest |difference|, and the mean σ of
  each side.
* Samples: for each CV measured by a lab or dip sample input, every sample the new validation
  accepts, against each side's estimate at the sample's time (the last cycle at or before it,
  which had not seen it yet): residual RMS and mean. Raw values, no offsets applied.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from apc.cycle_record import DecisionRecord, EstimateRecord
from apc.json_safe import finite_json
from apc.kinds import kind_of
from apc.record_table import with_unit
from apc.replay import Replay, ReplayCycle
from apc.types import MvKind

SAME_TOL = 1e-9
"""Relative tolerance under which two moves count as the same."""


@dataclass(frozen=True)
class MvSummary:
    """One MV (see the module docstring; ``None`` where there was nothing to compare)."""

    name: str
    unit: str
    on_cycles: int
    mean_abs_diff: float | None
    cycles_different: int
    clamped_recorded: int
    clamped_replayed: int
    written_recorded: int
    written_replayed: int
    plan_cycles: int
    plan_mean_abs_diff: float | None
    plan_cycles_different: int


@dataclass(frozen=True)
class EstimateSummary:
    """One estimate signal."""

    name: str
    cycles: int
    mean_diff: float | None
    mean_abs_diff: float | None
    max_abs_diff: float | None
    recorded_sigma_mean: float | None
    replayed_sigma_mean: float | None


@dataclass(frozen=True)
class SampleSummary:
    """Samples of one input against the estimate of what it measures."""

    input: str
    estimate: str
    samples: int
    recorded_rms: float | None
    replayed_rms: float | None
    recorded_mean: float | None
    replayed_mean: float | None


@dataclass(frozen=True)
class ReplaySummary:
    """Every figure of one replay."""

    record: str
    recipe: str
    controller: str
    cycles: int
    on_cycles: int
    restarts: int
    mvs: tuple[MvSummary, ...]
    estimates: tuple[EstimateSummary, ...]
    samples: tuple[SampleSummary, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain form (``--json``): non-finite figures are null."""
        out: dict[str, Any] = finite_json(asdict(self))
        return out


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= SAME_TOL * max(1.0, abs(a), abs(b))


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def std_name(name: str, extras: Iterable[str]) -> str | None:
    """The extra holding the standard deviation of ``name``: ``<name>_std`` or, for a name ending in
    its unit, the ``_std`` before it (``dissolved_oxide_wtpct`` → ``dissolved_oxide_std_wtpct``)."""
    known = set(extras)
    head, _, unit = name.rpartition("_")
    for candidate in (f"{name}_std", f"{head}_std_{unit}" if head else ""):
        if candidate and candidate in known:
            return candidate
    return None


def value_sigma(est: EstimateRecord, name: str, std: str | None = None) -> tuple[float | None, float | None]:
    """Value and σ of an estimate signal (a state: from the covariance diagonal; an extra: from ``std``
    or its ``_std`` companion)."""
    if name in est.names:
        i = est.names.index(name)
        x = _finite(est.x[i]) if i < len(est.x) else None
        p = _finite(est.P_diag[i]) if est.P_diag is not None and i < len(est.P_diag) else None
        return x, None if p is None or p < 0 else math.sqrt(p)
    if name not in est.extras:
        return None, None
    std = std or std_name(name, est.extras)
    return _finite(est.extras[name]), None if std is None else _finite(est.extras.get(std))


def _effective(d: DecisionRecord | None, kind: MvKind, readback: float | None) -> float | None:
    """What an MV's decision leaves in force (no decision: setpoints their readback, increments 0)."""
    if d is not None:
        return _finite(d.value)
    return readback if kind is MvKind.SETPOINT else 0.0


def mv_summary(replay: Replay, name: str) -> MvSummary:
    """The figures of MV ``name``."""
    spec = replay.loaded.recipe.io.mvs[name]
    diffs: list[float] = []
    different = clamped_rec = clamped_rep = written_rec = written_rep = on = 0
    plan_diffs: list[float] = []
    plan_different = 0
    for c in replay.cycles:
        rec = c.recorded
        a_plan = None if rec.plan is None else _finite(rec.plan.moves.get(name))
        b_plan = None if c.plan is None else _finite(c.plan.moves.get(name))
        if a_plan is not None and b_plan is not None:
            plan_diffs.append(abs(b_plan - a_plan))
            plan_different += not _same(a_plan, b_plan)
        if rec.mode.actual != "ON" or not rec.mode.mvs.get(name, False):
            continue
        on += 1
        da, db = rec.decisions.get(name), c.decisions.get(name)
        clamped_rec += bool(da is not None and da.clamps)
        clamped_rep += bool(db is not None and db.clamps)
        written_rec += bool(da is not None and da.write)
        written_rep += bool(db is not None and db.write)
        a = _effective(da, spec.kind, rec.readback.get(name))
        b = _effective(db, spec.kind, rec.readback.get(name))
        same_outcome = (da is not None and da.write) == (db is not None and db.write)
        if a is None or b is None:
            different += (a is None) != (b is None) or not same_outcome
            continue
        diffs.append(abs(b - a))
        different += not (_same(a, b) and same_outcome)
    return MvSummary(name, spec.unit, on, _mean(diffs), different, clamped_rec, clamped_rep, written_rec,
                     written_rep, len(plan_diffs), _mean(plan_diffs), plan_different)


def cv_bands(replay: Replay) -> list[Mapping[str, Any]]:
    """The new recipe's CV bands (measured input, estimate, its σ signal), else the record's."""
    config = kind_of(replay.loaded.recipe).plant_kpi_config(replay.loaded.recipe)
    bands = list(config.get("cv_bands") or ())
    return bands or list((replay.header.get("plant_kpi") or {}).get("cv_bands") or ())


def estimate_summary(replay: Replay, name: str, std: str | None = None) -> EstimateSummary:
    """The figures of estimate signal ``name`` (``std``: the extra holding its σ, when not a state)."""
    diffs: list[float] = []
    sig_a: list[float] = []
    sig_b: list[float] = []
    for c in replay.cycles:
        a, sa = value_sigma(c.recorded.estimate, name, std)
        b, sb = value_sigma(c.estimate, name, std)
        if sa is not None:
            sig_a.append(sa)
        if sb is not None:
            sig_b.append(sb)
        if a is not None and b is not None:
            diffs.append(b - a)
    absd = [abs(d) for d in diffs]
    return EstimateSummary(name, len(diffs), _mean(diffs), _mean(absd), max(absd) if absd else None,
                           _mean(sig_a), _mean(sig_b))


def estimate_names(replay: Replay) -> list[tuple[str, str | None]]:
    """(signal, its σ extra) compared: the model states either side has, then the CV bands' estimates."""
    names: dict[str, str | None] = {}
    for c in replay.cycles:
        for est in (c.recorded.estimate, c.estimate):
            for n in est.names:
                names.setdefault(n, None)
    for band in cv_bands(replay):
        if band.get("estimate"):
            names.setdefault(str(band["estimate"]), band.get("estimate_std"))
    return list(names.items())


def sample_summary(replay: Replay, input_name: str, estimate: str, std: str | None) -> SampleSummary:
    """Residuals (sample − estimate at the sample's time) of the samples the new validation accepted."""
    seen: set[float] = set()
    samples: list[tuple[float, float]] = []
    for c in replay.cycles:
        inp = c.recorded.inputs.get(input_name)
        if inp is None or c.verdicts.get(input_name) != "ok" or inp.value is None:
            continue
        when = inp.sample_ts if inp.sample_ts is not None else inp.source_ts
        if when is None or when in seen or not math.isfinite(inp.value):
            continue
        seen.add(when)
        samples.append((when, float(inp.value)))

    utcs = [c.recorded.utc for c in replay.cycles]

    def at(when: float, pick: Callable[[ReplayCycle], EstimateRecord]) -> float | None:
        i = bisect.bisect_right(utcs, when) - 1  # the last cycle at or before the sample's time
        return None if i < 0 else value_sigma(pick(replay.cycles[i]), estimate, std)[0]

    res: dict[str, list[float]] = {"recorded": [], "replayed": []}
    for when, y in samples:
        for side, pick in (("recorded", _recorded_estimate), ("replayed", _replayed_estimate)):
            x = at(when, pick)
            if x is not None:
                res[side].append(y - x)

    def rms(xs: list[float]) -> float | None:
        return math.sqrt(sum(r * r for r in xs) / len(xs)) if xs else None

    return SampleSummary(input_name, estimate, len(samples), rms(res["recorded"]), rms(res["replayed"]),
                         _mean(res["recorded"]), _mean(res["replayed"]))


def _recorded_estimate(c: ReplayCycle) -> EstimateRecord:
    return c.recorded.estimate


def _replayed_estimate(c: ReplayCycle) -> EstimateRecord:
    return c.estimate


def summarise(replay: Replay) -> ReplaySummary:
    """Every figure of ``replay`` (see the module docstring)."""
    recipe = replay.loaded.recipe
    samples = []
    for band in cv_bands(replay):
        measured, est = band.get("measured"), band.get("estimate")
        spec = recipe.io.inputs.get(str(measured)) if measured else None
        if spec is not None and spec.role == "sample" and est:
            samples.append(sample_summary(replay, str(measured), str(est), band.get("estimate_std")))
    return ReplaySummary(
        record=replay.record.name, recipe=recipe.name, controller=replay.controller, cycles=len(replay.cycles),
        on_cycles=sum(c.recorded.mode.actual == "ON" for c in replay.cycles),
        restarts=sum(bool(c.restarted) for c in replay.cycles),
        mvs=tuple(mv_summary(replay, n) for n in recipe.io.mvs),
        estimates=tuple(estimate_summary(replay, n, s) for n, s in estimate_names(replay)),
        samples=tuple(samples))


def _g(x: float | None, fmt: str = ".4g") -> str:
    return "–" if x is None else format(x, fmt)


def format_summary(s: ReplaySummary) -> str:
    """The summary as text for a terminal."""
    lines = [(f"replay of {s.record} with recipe {s.recipe} (controller {s.controller}): {s.cycles} cycles, "
              f"{s.on_cycles} ON (open loop: the plant did not respond to the replayed moves)")]
    if s.restarts:
        lines.append(f"estimator and controller built afresh {s.restarts} time(s), as in the recorded run")
    lines.append("MVs (ON cycles: what the guard let through)   mean|Δ|  different  clamped rec/new  "
                 "written rec/new   plans: mean|Δ| different/cycles")
    for m in s.mvs:
        name = with_unit(m.name, m.unit)
        lines.append(f"  {name:<42} {_g(m.mean_abs_diff):>8}  {m.cycles_different:>5}/{m.on_cycles:<5}"
                     f" {m.clamped_recorded:>6}/{m.clamped_replayed:<6}  "
                     f"{m.written_recorded:>6}/{m.written_replayed:<6}"
                     f"   {_g(m.plan_mean_abs_diff):>8} {m.plan_cycles_different}/{m.plan_cycles}")
    lines.append("estimates (replayed − recorded)                mean Δ    mean|Δ|    max|Δ|   σ rec    σ new  cycles")
    for e in s.estimates:
        lines.append(f"  {e.name:<42} {_g(e.mean_diff):>9} {_g(e.mean_abs_diff):>9} {_g(e.max_abs_diff):>9} "
                     f"{_g(e.recorded_sigma_mean):>8} {_g(e.replayed_sigma_mean):>8}  {e.cycles}")
    if s.samples:
        lines.append("samples (sample − estimate at its time)    n    RMS rec    RMS new   mean rec   mean new")
        for p in s.samples:
            lines.append(f"  {p.input + ' vs ' + p.estimate:<38} {p.samples:>3} {_g(p.recorded_rms):>10} "
                         f"{_g(p.replayed_rms):>10} {_g(p.recorded_mean):>10} {_g(p.replayed_mean):>10}")
    else:
        lines.append("samples: the recipe names no lab or dip sample of an estimated CV")
    return "\n".join(lines)
