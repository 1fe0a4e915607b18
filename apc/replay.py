"""``apc replay``: a new recipe's estimator, controller and guard run over a recorded run's inputs,
open loop ("what it would have done"), beside what ran.

For every recorded cycle, in order:

1. the recorded samples (:class:`~apc.cycle_record.InputRecord`: value, quality, timestamps) are
   validated again by the **new** recipe's :class:`~apc.validation.InputValidator` at the cycle's
   recorded UTC, so the new recipe's ranges, ages and frozen checks apply to what the plant sent;
2. the new estimator is updated with them and the **recorded** MV readbacks (what the plant
   acknowledged was in force), so it sees what really happened;
3. in the recorded mode (OFF: nothing; STANDBY: track; ON: drive the MVs enabled then), the new
   controller plans from that estimate, with the new recipe's limits and the DCS's at-limit status
   as recorded;
4. while the recorded unit was ON, the plan goes through the new recipe's
   :class:`~apc.guard.OutputGuard` and permissives, from the recorded readback and acknowledged
   setpoints: what it *would* have written, clamped and rate-limited as it would. Nothing is
   written anywhere.

Runtime events of the recorded run are mirrored, not re-decided: the modes and holds, a late
estimate or plan (the cycle's answer did not come), a compute worker restart (fresh estimator and
controller), a process restart (a resumed header: also a fresh validator). The plant did not respond
to the replayed moves: see ``docs/replay.md`` for what that means.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apc.compute import ControlRequest, Parts, step_parts
from apc.cycle_record import CycleRecord, DecisionRecord, EstimateRecord, InputRecord, PlanRecord
from apc.guard import NO_MOVE, GuardRequest, OutputGuard
from apc.kinds import get_kind, kind_of
from apc.recipe.loader import LoadedRecipe
from apc.recipe.permissive import PermissiveExpr, parse_permissive
from apc.recorder import iter_record
from apc.types import Estimate, Mode, MvConstraint, MvKind, Plan, Quality, Sample, SolverStatus, ValidatedInput
from apc.unit import signal_values
from apc.unit_parts import build_parts
from apc.validation import InputValidator, cycle_ok

RESTART_HEALTH = "compute worker restarted"
"""How a recorded estimate's health starts when the unit's computation was lost and rebuilt."""


class ReplayError(ValueError):
    """A record cannot be replayed with a recipe (the message names every difference)."""


@dataclass(frozen=True)
class ReplayCycle:
    """One recorded cycle and what the new recipe made of it."""

    session: int
    """Headers the cycle follows, from 0 (a resumed header is a process restart)."""
    recorded: CycleRecord
    verdicts: Mapping[str, str]
    """The new recipe's verdict on each recorded input."""
    estimate: EstimateRecord
    plan: PlanRecord | None
    decisions: Mapping[str, DecisionRecord]
    """What the new guard would have let through (ON cycles only)."""
    restarted: str = ""
    """Why the replay's estimator and controller were built afresh before this cycle ('' when not)."""


@dataclass(frozen=True)
class Replay:
    """A whole replay: the record's first header, the new recipe and every cycle."""

    record: Path
    header: Mapping[str, Any]
    loaded: LoadedRecipe
    controller: str
    cycles: tuple[ReplayCycle, ...]


def record_signals(header: Mapping[str, Any], first: CycleRecord | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record's inputs and MVs (name → header description) from its header's ``io``; a record
    written before headers had one: the names its first cycle holds (no units or kinds known)."""
    io = header.get("io") or {}
    inputs, mvs = dict(io.get("inputs") or {}), dict(io.get("mvs") or {})
    if not inputs and first is not None:
        inputs = {n: {} for n in first.inputs}
    if not mvs and first is not None:
        mvs = {n: {} for n in first.mode.mvs}
    return inputs, mvs


def mismatches(header: Mapping[str, Any], first: CycleRecord | None, loaded: LoadedRecipe) -> list[str]:
    """Every way ``loaded`` cannot stand in for the recipe that wrote the record ([] when it can)."""
    recipe = loaded.recipe
    out: list[str] = []
    kind = header.get("unit_kind")
    if kind and kind != recipe.unit_kind:
        out.append(f"unit_kind: the record's is {kind!r}, the recipe's {recipe.unit_kind!r}")
    period = header.get("period_s")
    if isinstance(period, (int, float)) and float(period) != recipe.period_s:
        out.append(f"period_s: the record's is {float(period):g}, the recipe's {recipe.period_s:g}")
    inputs, mvs = record_signals(header, first)
    for what, rec, new in (("inputs", inputs, recipe.io.inputs), ("MVs", mvs, recipe.io.mvs)):
        missing, extra = sorted(set(rec) - set(new)), sorted(set(new) - set(rec))
        if missing:
            out.append(f"{what} in the record but not in the recipe: {', '.join(missing)}")
        if extra:
            out.append(f"{what} in the recipe but not in the record: {', '.join(extra)}")
    for name, spec in recipe.io.inputs.items():
        unit = (inputs.get(name) or {}).get("unit")
        if unit and unit != spec.unit:
            out.append(f"input {name}: unit {spec.unit!r} in the recipe, {unit!r} in the record")
    for name, mv in recipe.io.mvs.items():
        desc = mvs.get(name) or {}
        if desc.get("unit") and desc["unit"] != mv.unit:
            out.append(f"MV {name}: unit {mv.unit!r} in the recipe, {desc['unit']!r} in the record")
        if desc.get("kind") and desc["kind"] != mv.kind.value:
            out.append(f"MV {name}: kind {mv.kind.value!r} in the recipe, {desc['kind']!r} in the record")
    return out


def _sample(rec: InputRecord) -> Sample | None:
    """The recorded sample (None when none was read)."""
    if rec.value is None or rec.quality is None or rec.receive_ts is None:
        return None
    return Sample(float(rec.value), Quality(rec.quality), rec.source_ts, float(rec.receive_ts), rec.sample_ts)


def estimate_record(estimate: Estimate) -> EstimateRecord:
    """An estimate as the flight record holds it (covariance diagonal only)."""
    p = None if estimate.P is None else tuple(estimate.P[i][i] for i in range(len(estimate.x)))
    return EstimateRecord(tuple(estimate.names), tuple(estimate.x), p, estimate.health, dict(estimate.extras))


def plan_record(plan: Plan) -> PlanRecord:
    """A plan as the flight record holds it."""
    return PlanRecord(dict(plan.moves), {n: tuple(v) for n, v in plan.predicted.items()}, plan.status.value,
                      plan.iterations, plan.solve_time_s, plan.reason)


@dataclass
class _MvTrack:
    """What the replayed guard needs of one MV across cycles, from the record and the replay."""

    kind: MvKind
    tolerance: float
    acknowledged: float | None = None
    """Setpoints: the last value the recorded unit wrote and the plant acknowledged while the MV was driven."""
    pending: float | None = None
    """The recorded unit's acknowledged write of the previous cycle."""
    position: float | None = None
    """Increments: the position read back last cycle."""
    last_move_s: float | None = None
    """Increments: ``t_s`` of the last move the replayed recipe would have made, or nobody in the APC
    made (a position change beyond the recorded writes)."""


@dataclass
class _State:
    """The replay's running state (one record)."""

    parts: Parts
    validator: InputValidator
    mvs: dict[str, _MvTrack] = field(default_factory=dict)
    last_t_s: float | None = None


class Replayer:
    """Runs one recipe's estimator, controller and guard over recorded cycles (see the module docstring)."""

    def __init__(self, loaded: LoadedRecipe, controller_kind: str | None = None) -> None:
        recipe = loaded.recipe
        kind = kind_of(recipe)
        if kind.has_batch:
            raise ReplayError(f"unit kind {recipe.unit_kind!r} runs batches: its controller follows the batch's "
                              "curve preview, which a record does not hold; replay is for kinds without a batch")
        self.loaded = loaded
        self.controller = controller_kind or recipe.controller.kind
        io_ = recipe.io
        self.required = tuple(n for n, s in io_.inputs.items() if s.role in ("measurement", "disturbance"))
        self.disturbances = tuple(n for n, s in io_.inputs.items() if s.role == "disturbance")
        self.guard = OutputGuard.from_mvs(io_.mvs, extra_tags=(io_.heartbeat.apc_tag,))
        self.permissives: dict[str, tuple[PermissiveExpr, tuple[str, ...]]] = {
            n: (parse_permissive(p.expr), p.applies_to or tuple(io_.mvs)) for n, p in recipe.permissives.items()}

    def _fresh(self) -> Parts:
        """Estimator and controller as a unit builds them, in virtual time (iteration caps, no wall clock)."""
        return build_parts(self.loaded, self.controller, real_time=False)

    def run(self, cycles: Iterator[tuple[int, bool, CycleRecord]]) -> Iterator[ReplayCycle]:
        """Replay ``(session, restarted, cycle)`` triples in order (``restarted``: the first cycle of a
        resumed session)."""
        recipe = self.loaded.recipe
        state: _State | None = None
        for session, restarted, rec in cycles:
            why = ""
            if state is None or restarted:
                why = "" if state is None else "process restart (resumed record)"
                mvs = state.mvs if state is not None else {
                    n: _MvTrack(s.kind, s.readback_tolerance) for n, s in recipe.io.mvs.items()}
                state = _State(self._fresh(), InputValidator(recipe.io.inputs), mvs)
            elif rec.estimate.health.startswith(RESTART_HEALTH):
                why = "compute worker restarted"
                state.parts = self._fresh()
            yield self._cycle(state, session, rec, why)

    def _cycle(self, st: _State, session: int, rec: CycleRecord, restarted: str) -> ReplayCycle:
        recipe = self.loaded.recipe
        snapshot: dict[str, Sample] = {}
        for name, spec in recipe.io.inputs.items():
            r = rec.inputs.get(name)
            s = None if r is None else _sample(r)
            if s is not None:
                snapshot[spec.tag] = s
        validated = st.validator.validate(rec.utc, snapshot)
        inputs_ok, inputs_reason = cycle_ok(validated, self.required)
        applied = dict(rec.readback)
        dt_s = recipe.period_s if st.last_t_s is None else rec.t_s - st.last_t_s
        st.last_t_s = rec.t_s
        self._watch_positions(st, rec)

        if restarted == "compute worker restarted":  # the lost request was never computed
            estimate = Estimate((), (), (), None, f"{RESTART_HEALTH}: as recorded")
        else:
            try:
                estimate = st.parts.estimator.update(rec.t_s, validated, applied)
            except Exception as exc:  # the unit sheds on it; here it is this cycle's answer
                estimate = Estimate((), (), (), None, f"estimate failed: {type(exc).__name__}: {exc}")
        for_control = estimate if rec.late != "estimate" else Estimate((), (), (), None, "compute late: as recorded")

        plan, decisions = self._control(st, rec, for_control, validated, applied, inputs_ok, inputs_reason, dt_s)
        self._after(st, rec, decisions)
        return ReplayCycle(session, rec, {n: v.verdict.value for n, v in validated.items()},
                           estimate_record(estimate), None if plan is None else plan_record(plan), decisions,
                           restarted)

    def _control(self, st: _State, rec: CycleRecord, estimate: Estimate, validated: Mapping[str, ValidatedInput],
                 applied: Mapping[str, float], inputs_ok: bool, inputs_reason: str,
                 dt_s: float) -> tuple[Plan | None, dict[str, DecisionRecord]]:
        """Steps 3 and 4 of the module docstring, in the recorded mode."""
        recipe = self.loaded.recipe
        actual = Mode(rec.mode.actual) if rec.mode.actual in Mode.__members__ else Mode.OFF
        if actual is Mode.OFF or rec.fault is not None:
            return None, {}
        enabled = {n: bool(rec.mode.mvs.get(n, False)) and actual is Mode.ON for n in recipe.io.mvs}
        tracking = {n: applied[n] for n, on in enabled.items() if not on and n in applied}
        disturbances = {n: v.sample.value for n, v in validated.items()
                        if n in self.disturbances and v.ok and v.sample is not None}
        run = estimate.healthy and all(n in applied for n in recipe.io.mvs) and rec.late != "plan"
        if not run and not tracking:
            return Plan({}, {}, SolverStatus.NOT_RUN, 0, 0.0, "estimate or readback not usable"), {}
        constraints = self._constraints(st, rec)
        request = ControlRequest(rec.t_s, estimate, applied, enabled, disturbances, constraints, tracking, run)
        try:
            plan = step_parts(st.parts, request)
        except Exception as exc:  # a controller bug holds the unit
            plan = Plan({}, {}, SolverStatus.FAILED, 0, 0.0, f"{type(exc).__name__}: {exc}")
        if plan is None:
            why = "compute late: as recorded" if rec.late == "plan" else "estimate or readback not usable"
            return Plan({}, {}, SolverStatus.NOT_RUN, 0, 0.0, why), {}
        if actual is not Mode.ON:
            return plan, {}
        values = signal_values(validated, estimate, applied)
        failing = {n: expr.explain(values) for n, (expr, _) in self.permissives.items()}
        decisions: dict[str, DecisionRecord] = {}
        for name, on in enabled.items():
            if not on or name not in plan.moves:
                continue
            spec, tr = recipe.io.mvs[name], st.mvs[name]
            blocking = [f"{p}: {why}" for p, why in failing.items() if why and name in self.permissives[p][1]]
            since = constraints[name].since_last_move_s
            hold = rec.mode.hold
            d = self.guard.check(GuardRequest(
                mv=name, kind=spec.kind, proposed=plan.moves[name], readback=applied[name],
                acknowledged=tr.acknowledged, limits=recipe.limits[name], dt_s=dt_s, period_s=recipe.period_s,
                since_last_move_s=None if since == math.inf or spec.kind is MvKind.SETPOINT else since,
                permissive_ok=not blocking, permissive_reason="; ".join(blocking),
                inputs_ok=inputs_ok and not hold, inputs_reason=hold or inputs_reason))
            decisions[name] = DecisionRecord(plan.moves[name], d.value, d.write, tuple(d.clamps), d.reason)
        return plan, decisions

    def _constraints(self, st: _State, rec: CycleRecord) -> dict[str, MvConstraint]:
        """The new recipe's limits, the DCS's at-limit status as recorded and, for increments, the time
        since the last move (see :class:`_MvTrack`)."""
        out = {}
        for name, lim in self.loaded.recipe.limits.items():
            at = rec.dcs_at_limit.get(name, "")
            last = st.mvs[name].last_move_s if name in st.mvs else None
            since = math.inf if last is None or st.mvs[name].kind is MvKind.SETPOINT else rec.t_s - last
            out[name] = MvConstraint(max(lim.operator[0], lim.engineering[0]), min(lim.operator[1], lim.engineering[1]),
                                     "high" in at, "low" in at, since_last_move_s=since)
        return out

    def _watch_positions(self, st: _State, rec: CycleRecord) -> None:
        """An increment position that moved beyond what the recorded unit wrote was moved by someone
        else (operator, DCS): a plant move the replayed recipe would have seen too."""
        for name, tr in st.mvs.items():
            if tr.kind is MvKind.SETPOINT or name not in rec.readback:
                continue
            pos, prev = rec.readback[name], tr.position
            tr.position = pos
            if prev is None:
                continue
            slack = max(tr.tolerance, NO_MOVE)
            if abs(pos - prev - (tr.pending or 0.0)) > slack and abs(pos - prev) > slack:
                tr.last_move_s = rec.t_s

    def _after(self, st: _State, rec: CycleRecord, decisions: Mapping[str, DecisionRecord]) -> None:
        """Carry the recorded unit's acknowledged writes and the replayed recipe's would-be moves over."""
        spec = self.loaded.recipe.io.mvs
        written = {w.tag: w for w in rec.writes}
        driven = rec.mode.actual == Mode.ON.value and rec.fault is None
        for name, tr in st.mvs.items():
            w = written.get(spec[name].tag)
            ok = w is not None and w.ok
            tr.pending = w.value if ok and w is not None else None
            if not (driven and rec.mode.mvs.get(name, False)):
                tr.acknowledged = None  # released: the next drive starts from the readback
            elif ok and w is not None and tr.kind is MvKind.SETPOINT:
                tr.acknowledged = w.value
            d = decisions.get(name)
            if d is not None and d.write and tr.kind is not MvKind.SETPOINT:
                tr.last_move_s = rec.t_s


def read_cycles(path: Path) -> Iterator[tuple[int, bool, CycleRecord]]:
    """``(session, restarted, cycle)`` of a record (``restarted`` on the first cycle after a resumed header)."""
    session, pending = -1, False
    for entry in iter_record(path):
        if entry.kind == "header":
            session += 1
            pending = pending or (bool(entry.data.get("resumed")) and session > 0)
        elif entry.kind == "cycle":
            yield session, pending, CycleRecord.from_json(entry.data)
            pending = False


def first_header(path: Path) -> tuple[dict[str, Any], CycleRecord | None]:
    """The record's first header and first cycle (None when it has none)."""
    header: dict[str, Any] = {}
    for entry in iter_record(path):
        if entry.kind == "header" and not header:
            header = entry.data
        elif entry.kind == "cycle":
            return header, CycleRecord.from_json(entry.data)
    return header, None


def replay(record: Path, loaded: LoadedRecipe, controller_kind: str | None = None) -> Replay:
    """Replay ``record`` with ``loaded`` (``controller_kind`` overrides the recipe's); refuses with a
    :class:`ReplayError` naming every difference when the recipe does not fit the record."""
    header, first = first_header(record)
    if first is None:
        raise ReplayError(f"{record}: the record holds no cycle")
    problems = mismatches(header, first, loaded)
    if problems:
        raise ReplayError(f"recipe {loaded.path} does not fit record {record}: " + "; ".join(problems))
    if header.get("unit_kind"):
        get_kind(str(header["unit_kind"]))  # an unknown kind is named here, not deep in a build
    replayer = Replayer(loaded, controller_kind)
    return Replay(record, header, loaded, replayer.controller, tuple(replayer.run(read_cycles(record))))
