"""One unit's deterministic cycle, readable as a block diagram.

read → validate → estimate → decide mode → control → guard → write →
heartbeat → record. Nothing here knows a process or a protocol: the plant I/O,
estimator and controller come in through their protocols.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from apc.guard import GuardDecision, GuardRequest, OutputGuard, ReadbackMonitor
from apc.modes import ModeConditions, ModeDecision, ModeManager
from apc.protocols import BatchRunner, Controller, Estimator, KpiSink, PlantIO
from apc.recipe.loader import LoadedRecipe
from apc.recipe.permissive import PermissiveExpr, parse_permissive
from apc.recipe.schema import MvLimits, MvSpec, Recipe
from apc.recorder import NullRecorder, Recorder
from apc.types import Estimate, Mode, MvConstraint, MvKind, Plan, Sample, SolverStatus, ValidatedInput, Write, WriteResult
from apc.validation import InputValidator, cycle_ok


@dataclass
class MvState:
    """Runtime state of one manipulated variable."""

    name: str
    spec: MvSpec
    limits: MvLimits
    """Limits in force (the HMI may move the operator limits inside engineering)."""
    enabled: bool = True
    last_written: float | None = None
    last_move_t_s: float | None = None
    sequence: int = 0
    engaged_cycles: int = 0
    """Consecutive cycles this MV has been driven by the APC."""
    pending_check: float | None = None
    """Last cycle's write, judged against this cycle's readback (setpoint or increment)."""
    readback: ReadbackMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.readback = ReadbackMonitor.from_spec(self.spec)

    def release(self) -> None:
        """Forget APC memory: the next ON write starts from the DCS readback."""
        self.last_written = None
        self.last_move_t_s = None
        self.engaged_cycles = 0
        self.pending_check = None
        self.readback.reset()


class HeartbeatWatch:
    """Judges the DCS heartbeat: frozen longer than the timeout means link loss."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._value: float | None = None
        self._changed_utc: float | None = None

    def update(self, utc: float, sample: Sample | None) -> tuple[bool, str]:
        """Feed this cycle's heartbeat sample; return (alive, reason)."""
        if sample is None or not sample.usable:
            return False, "DCS heartbeat unreadable"
        if sample.value != self._value or self._changed_utc is None:
            self._value, self._changed_utc = sample.value, utc
        frozen_s = utc - self._changed_utc
        if frozen_s > self.timeout_s:
            return False, f"DCS heartbeat frozen for {frozen_s:.0f} s"
        return True, ""


_MV_BINDINGS = ("tag", "readback", "remote_status", "active_flag", "sequence_tag", "high_limit_status",
                "low_limit_status", "kind")
"""MV fields a reload may not change (first version: the plant I/O serves the tags it was built for)."""


def _bindings(recipe: Recipe) -> dict[str, Any]:
    """Every tag binding (and MV kind) of a recipe, keyed by field path."""
    io_ = recipe.io
    out: dict[str, Any] = {f"io.inputs.{n}.tag": s.tag for n, s in io_.inputs.items()}
    for n, mv in io_.mvs.items():
        out.update({f"io.mvs.{n}.{f}": getattr(mv, f) for f in _MV_BINDINGS})
    out["io.heartbeat.apc_tag"] = io_.heartbeat.apc_tag
    out["io.heartbeat.dcs_tag"] = io_.heartbeat.dcs_tag
    return out


@dataclass(frozen=True)
class _PendingReload:
    """A recipe reload accepted by :meth:`Unit.request_reload`, applied at the next cycle's start."""

    loaded: LoadedRecipe
    estimator: Estimator
    controller: Controller
    who: str
    where: str


class Unit:
    """One unit under APC: owns its recipe, plant I/O, estimator and controller."""

    def __init__(
        self,
        name: str,
        loaded: LoadedRecipe,
        io: PlantIO,
        estimator: Estimator,
        controller: Controller,
        *,
        audit: Any,
        recorder: Recorder | None = None,
        kpi: KpiSink | None = None,
        truth: Callable[[], Mapping[str, float]] | None = None,
        batch: BatchRunner | None = None,
    ) -> None:
        recipe = loaded.recipe
        self.name = name
        self.loaded = loaded
        self.recipe = recipe
        self.io = io
        self.estimator = estimator
        self.controller = controller
        self.audit = audit.bind(unit=name)
        self.recorder: Recorder = recorder or NullRecorder()
        self.kpi = kpi
        self.truth = truth
        self.batch = batch
        """Furnaces: the batch whose curve the controller follows (updated before each control step)."""
        io_ = recipe.io
        self.validator = InputValidator(io_.inputs)
        self.required_inputs = tuple(n for n, s in io_.inputs.items() if s.role in ("measurement", "disturbance"))
        self.disturbances = tuple(n for n, s in io_.inputs.items() if s.role == "disturbance")
        self.mvs = {n: MvState(n, spec, recipe.limits[n]) for n, spec in io_.mvs.items()}
        self.guard = OutputGuard.from_mvs(io_.mvs, extra_tags=(io_.heartbeat.apc_tag,))
        self.modes = ModeManager(recipe.estimator.warmup_s, recipe.modes.shed_after_bad_cycles)
        self.heartbeat = HeartbeatWatch(io_.heartbeat.dcs_timeout_s)
        self.permissives: dict[str, tuple[PermissiveExpr, tuple[str, ...]]] = {
            n: (parse_permissive(p.expr), p.applies_to or tuple(self.mvs)) for n, p in recipe.permissives.items()
        }
        self._read_tags = self._tags_to_read()
        self._apc_heartbeat = 0
        self._active_flags: dict[str, float] = {}
        self._last_t: float | None = None
        self._last_values: Mapping[str, float] = {}
        self._last_plan: Plan | None = None
        self.sheds = 0
        self.guard_clamps = 0
        self._pending_reload: _PendingReload | None = None

    # ----------------------------------------------------------- commands
    def request_mode(self, mode: Mode, who: str, where: str, utc: float) -> None:
        """Operator request (HMI, CLI or scenario); audited, clears a latched shed."""
        self.audit.info("mode_request", utc=utc, who=who, where=where,
                        old=self.modes.requested.value, new=mode.value, actual=self.modes.actual.value)
        self.modes.request(mode)

    def batch_command(self, command: str, who: str, where: str, why: str = "") -> str:
        """Operator command to the furnace batch (``start`` | ``hold`` | ``resume`` | ``abort``), at
        the last cycle's time and, for a start, from the last controlled temperature; '' when accepted,
        else why not (the batch audits both)."""
        batch = self.batch
        if batch is None:
            return "this unit runs no batch"
        t = self._last_t if self._last_t is not None else 0.0
        why = why or f"operator command from {where}"
        if command == "start":
            result = batch.start(t, who, self._last_values.get(batch.curve.controlled))
        elif command == "hold":
            result = batch.hold(t, who, why)
        elif command == "resume":
            result = batch.resume(t, who)
        elif command == "abort":
            result = batch.abort(t, who, why)
        else:
            return f"unknown batch command {command!r} (start, hold, resume, abort)"
        return "" if result else str(getattr(result, "reason", "refused"))

    def set_mv_enabled(self, mv: str, enabled: bool, who: str, where: str, utc: float) -> None:
        """Enable or disable one MV; audited."""
        state = self.mvs[mv]
        self.audit.info("mv_enable", utc=utc, who=who, where=where, mv=mv, old=state.enabled, new=enabled)
        state.enabled = enabled

    def set_operator_limits(self, mv: str, low: float, high: float, who: str, where: str, utc: float) -> str:
        """Move one MV's operator limits inside its engineering limits; '' when done (audited), else why not."""
        state = self.mvs.get(mv)
        if state is None:
            return f"unknown MV {mv!r}"
        old = state.limits
        elo, ehi = old.engineering
        if not (math.isfinite(low) and math.isfinite(high) and elo <= low <= high <= ehi):
            return (f"operator limits [{low:g}, {high:g}] must satisfy "
                    f"engineering low {elo:g} <= low <= high <= engineering high {ehi:g}")
        try:
            new = dataclasses.replace(old, operator=(float(low), float(high)))
        except ValueError as exc:
            return str(exc)
        state.limits = new
        self.audit.info("operator_limits", utc=utc, who=who, where=where, mv=mv,
                        old=list(old.operator), new=[float(low), float(high)])
        return ""

    # ------------------------------------------------------ recipe reload
    @property
    def pending_reload_sha256(self) -> str | None:
        """SHA-256 of a recipe waiting for the next cycle, else None."""
        return None if self._pending_reload is None else self._pending_reload.loaded.sha256

    def reload_refusal(self, loaded: LoadedRecipe) -> str:
        """Why ``loaded`` may not replace the recipe now ('' when it may)."""
        old, new = self.recipe, loaded.recipe
        if self.modes.actual not in (Mode.OFF, Mode.STANDBY):
            return f"unit is {self.modes.actual.value}: a recipe is reloaded only in OFF or STANDBY"
        if new.unit_kind != old.unit_kind:
            return f"unit_kind {new.unit_kind!r} differs from {old.unit_kind!r}"
        if new.period_s != old.period_s:
            return f"period_s {new.period_s:g} differs from {old.period_s:g} (the scheduler's period needs a restart)"
        for what, a, b in (("MV", old.io.mvs, new.io.mvs), ("input", old.io.inputs, new.io.inputs)):
            if set(a) != set(b):
                return f"{what} names {sorted(b)} differ from {sorted(a)}"
        before, after = _bindings(old), _bindings(new)
        changed = [k for k in before if before[k] != after[k]]
        if changed:
            return f"tag bindings changed ({', '.join(changed)}): a reload may not change tags or MV kinds; restart"
        if old.is_furnace and (new.controller.kind != old.controller.kind or new.curve != old.curve
                               or new.batch != old.batch):
            return "furnace controller kind, curve or batch section changed: the batch in progress is kept; restart"
        return ""

    def refuse_reload(self, why: str, who: str, where: str, utc: float, new_sha256: str = "") -> str:
        """Audit a refused reload (``recipe_reload_refused``); returns ``why``."""
        self.audit.warning("recipe_reload_refused", utc=utc, who=who, where=where, what=str(self.loaded.path),
                           old=self.loaded.sha256, new=new_sha256, why=why, actual=self.modes.actual.value)
        return why

    def request_reload(self, loaded: LoadedRecipe, estimator: Estimator, controller: Controller, who: str,
                       where: str, utc: float) -> str:
        """Ask to replace recipe, estimator and controller at the start of the next cycle.

        Returns '' when accepted (pending; a later request replaces it), else why not.
        Both outcomes are audited.
        """
        why = self.reload_refusal(loaded)
        if why:
            return self.refuse_reload(why, who, where, utc, loaded.sha256)
        self._pending_reload = _PendingReload(loaded, estimator, controller, who, where)
        self.audit.info("recipe_reload_requested", utc=utc, who=who, where=where, what=str(loaded.path),
                        old=self.loaded.sha256, new=loaded.sha256, actual=self.modes.actual.value)
        return ""

    def _apply_reload(self, k: int, utc: float) -> dict[str, Any] | None:
        """Apply a pending reload (cycle start, before anything reads the recipe); its record entry."""
        pending, self._pending_reload = self._pending_reload, None
        if pending is None:
            return None
        why = self.reload_refusal(pending.loaded)
        if why:  # the unit changed since the request
            self.refuse_reload(why, pending.who, pending.where, utc, pending.loaded.sha256)
            return None
        old_loaded, recipe = self.loaded, pending.loaded.recipe
        io_ = recipe.io
        sections = [f.name for f in dataclasses.fields(recipe)
                    if getattr(recipe, f.name) != getattr(old_loaded.recipe, f.name)]
        self.loaded, self.recipe = pending.loaded, recipe
        self.estimator, self.controller = pending.estimator, pending.controller
        self.validator = InputValidator(io_.inputs)
        self.required_inputs = tuple(n for n, s in io_.inputs.items() if s.role in ("measurement", "disturbance"))
        self.disturbances = tuple(n for n, s in io_.inputs.items() if s.role == "disturbance")
        old_mvs = self.mvs  # new states start released (bumpless next ON); enabled and sequence kept
        self.mvs = {n: MvState(n, spec, recipe.limits[n], enabled=old_mvs[n].enabled,
                               sequence=old_mvs[n].sequence) for n, spec in io_.mvs.items()}
        for n, mv in self.mvs.items():  # the recipe's operator limits replace those in force (e.g. from the HMI)
            if mv.limits.operator != old_mvs[n].limits.operator:
                self.audit.info("operator_limits", utc=utc, who=pending.who, where=pending.where, mv=n,
                                old=list(old_mvs[n].limits.operator), new=list(mv.limits.operator),
                                why="recipe reload")
        self.guard = OutputGuard.from_mvs(io_.mvs, extra_tags=(io_.heartbeat.apc_tag,))
        modes = ModeManager(recipe.estimator.warmup_s, recipe.modes.shed_after_bad_cycles)
        modes.requested, modes.actual = self.modes.requested, self.modes.actual
        modes.shed_reason = self.modes.shed_reason
        self.modes = modes  # warm-up starts again: the new estimator has no history
        self.heartbeat.timeout_s = io_.heartbeat.dcs_timeout_s
        self.permissives = {n: (parse_permissive(p.expr), p.applies_to or tuple(self.mvs))
                            for n, p in recipe.permissives.items()}
        self._read_tags = self._tags_to_read()
        self._last_plan = None
        self.audit.info("recipe_reload", utc=utc, cycle=k, who=pending.who, where=pending.where,
                        what=str(pending.loaded.path), old=old_loaded.sha256, new=pending.loaded.sha256,
                        sections=sections)
        return {"old_sha256": old_loaded.sha256, "new_sha256": pending.loaded.sha256, "who": pending.who}

    # ---------------------------------------------------------- the cycle
    def _tags_to_read(self) -> tuple[str, ...]:
        io_ = self.recipe.io
        tags = [s.tag for s in io_.inputs.values()]
        for spec in io_.mvs.values():
            tags.append(spec.readback)
            tags += [t for t in (spec.remote_status, spec.high_limit_status, spec.low_limit_status) if t]
        tags.append(io_.heartbeat.dcs_tag)
        return tuple(dict.fromkeys(tags))

    async def cycle(self, k: int, scheduled_s: float, t_s: float, utc: float) -> dict[str, Any]:
        """Run one cycle at monotonic time ``t_s``; returns the flight-record entry."""
        reload = self._apply_reload(k, utc) if self._pending_reload is not None else None
        dt_s = self.recipe.period_s if self._last_t is None else t_s - self._last_t
        self._last_t = t_s

        # 1. read
        snapshot, link_error = await self._read()
        # 2. validate
        validated = self.validator.validate(utc, snapshot)
        inputs_ok, inputs_reason = cycle_ok(validated, self.required_inputs)
        hb_ok, hb_reason = self.heartbeat.update(utc, snapshot.get(self.recipe.io.heartbeat.dcs_tag))
        applied, remote = self._readbacks(snapshot)
        readback_faults = self._check_readbacks(applied)
        # 3. estimate (furnaces: then the batch, whose reference the controller reads)
        estimate = self.estimator.update(t_s, validated, applied)
        values = self._signal_values(validated, estimate, applied)
        self._last_values = values
        # The batch judges soak and hold-until only on data the unit trusts: with the link down or an
        # unhealthy estimate it sees nothing, so its clocks stop (an open-loop prediction never counts).
        batch = self._batch_reference(t_s, values if estimate.healthy and not link_error else {})
        # 4. decide mode
        decision = self._decide(t_s, inputs_ok, inputs_reason, estimate, link_error, hb_ok, hb_reason,
                                readback_faults, remote, applied)
        # 5. control (STANDBY computes everything too)
        constraints = self._constraints(snapshot)
        plan = self._control(t_s, decision, estimate, applied, validated, constraints)
        if plan is not None and plan.status is SolverStatus.FAILED and decision.actual is Mode.ON:
            decision = self._shed_now(f"controller failed: {plan.reason}", decision)
        # 6. guard
        decisions = self._guard(t_s, dt_s, decision, plan, applied, values, inputs_ok, inputs_reason)
        # 7. write + 8. heartbeat
        writes, dropped = self._compose_writes(t_s, decision, decisions, applied)
        results = await self._write(writes, link_error)
        self._audit_writes(utc, k, decision, decisions, writes, results, applied, dropped)
        # 9. record
        return self._record(k, scheduled_s, t_s, utc, snapshot, validated, estimate, decision,
                            plan, decisions, writes, results, applied, constraints, batch, reload)

    async def _read(self) -> tuple[dict[str, Sample], str]:
        try:
            return dict(await self.io.read(self._read_tags)), ""
        except Exception as exc:  # any I/O failure is a link failure, never a crash
            return {}, f"read failed: {type(exc).__name__}: {exc}"

    def _readbacks(self, snapshot: Mapping[str, Sample]) -> tuple[dict[str, float], dict[str, bool]]:
        applied: dict[str, float] = {}
        remote: dict[str, bool] = {}
        for name, mv in self.mvs.items():
            s = snapshot.get(mv.spec.readback)
            if s is not None and s.usable:
                applied[name] = s.value
            if mv.spec.remote_status:
                r = snapshot.get(mv.spec.remote_status)
                remote[name] = r is not None and r.usable and r.value >= 0.5
            else:
                remote[name] = True
        return applied, remote

    def _constraints(self, snapshot: Mapping[str, Sample]) -> dict[str, MvConstraint]:
        """Limits in force (operator ∩ engineering) and the DCS's at-limit status of every MV."""
        def at_limit(tag: str | None) -> bool:
            if tag is None:
                return False
            s = snapshot.get(tag)
            return s is None or not s.usable or s.value >= 0.5  # unreadable: assume at the limit

        out = {}
        for name, mv in self.mvs.items():
            lim = mv.limits
            out[name] = MvConstraint(max(lim.operator[0], lim.engineering[0]), min(lim.operator[1], lim.engineering[1]),
                                     at_limit(mv.spec.high_limit_status), at_limit(mv.spec.low_limit_status))
        return out

    def _check_readbacks(self, applied: Mapping[str, float]) -> str:
        """Judge last cycle's writes against this cycle's readbacks."""
        faults = []
        limit = self.recipe.modes.readback_fault_cycles
        for name, mv in self.mvs.items():
            written, mv.pending_check = mv.pending_check, None
            if name not in applied:
                if mv.engaged_cycles:
                    faults.append(f"{name}: readback unreadable")
                continue
            ok, why = mv.readback.update(written, applied[name])
            if not ok and mv.readback.mismatches >= limit:
                faults.append(f"{name}: {why}")
        return "; ".join(faults)

    def _decide(self, t_s: float, inputs_ok: bool, inputs_reason: str, estimate: Estimate, link_error: str,
                hb_ok: bool, hb_reason: str, readback_faults: str, remote: Mapping[str, bool],
                applied: Mapping[str, float]) -> ModeDecision:
        failures = [r for r in (
            "" if inputs_ok else f"bad inputs: {inputs_reason}",
            "" if estimate.healthy else f"estimator: {estimate.health}",
            readback_faults,
            "; ".join(f"{n}: no readback" for n, mv in self.mvs.items() if mv.enabled and n not in applied),
        ) if r]
        left_remote = [n for n, mv in self.mvs.items() if mv.enabled and mv.engaged_cycles >= 2 and not remote[n]]
        immediate = f"DCS took loop(s) out of remote: {', '.join(left_remote)}" if left_remote else ""
        link_reason = link_error or hb_reason
        cond = ModeConditions(
            t_s=t_s,
            healthy=inputs_ok and estimate.healthy,
            health_reason=inputs_reason or estimate.health,
            link_ok=not link_error and hb_ok,
            link_reason=link_reason,
            failure="; ".join(failures),
            immediate_shed=immediate,
        )
        decision = self.modes.decide(cond)
        if decision.new_shed:
            self.sheds += 1
        return decision

    def _shed_now(self, reason: str, decision: ModeDecision) -> ModeDecision:
        self.modes.shed_reason = reason
        self.modes.actual = Mode.STANDBY
        self.sheds += 1
        return ModeDecision(decision.requested, Mode.STANDBY, decision.previous, reason, reason, True)

    def _control(self, t_s: float, decision: ModeDecision, estimate: Estimate, applied: Mapping[str, float],
                 validated: Mapping[str, ValidatedInput], constraints: Mapping[str, MvConstraint]) -> Plan | None:
        if decision.actual is Mode.OFF:
            for mv in self.mvs.values():  # an OFF -> ON start must be bumpless too
                mv.release()
            return None
        enabled = {n: mv.enabled and decision.actual is Mode.ON for n, mv in self.mvs.items()}
        tracking = {}
        for name, on in enabled.items():
            if not on:
                self.mvs[name].release()
                if name in applied:
                    tracking[name] = applied[name]
        if tracking:
            self.controller.track(tracking)
        disturbances = {n: v.sample.value for n, v in validated.items()
                        if n in self.disturbances and v.ok and v.sample is not None}
        if not estimate.healthy or any(n not in applied for n in self.mvs):
            return Plan({}, {}, SolverStatus.NOT_RUN, 0, 0.0, "estimate or readback not usable")
        try:
            plan = self.controller.step(t_s, estimate, applied, enabled, disturbances, constraints)
        except Exception as exc:  # a controller bug holds the unit, it never crashes the process
            plan = Plan({}, {}, SolverStatus.FAILED, 0, 0.0, f"{type(exc).__name__}: {exc}")
        self._last_plan = plan
        return plan

    def _batch_reference(self, t_s: float, values: Mapping[str, float]) -> dict[str, Any] | None:
        """Advance the batch (if any); its reference in force now, as recorded."""
        if self.batch is None:
            return None
        p = self.batch.update(t_s, values)
        return {"state": p.state.value, "segment": p.segment, "kind": p.segment_kind,
                "target_degC": p.target_degC[0], "upper_degC": p.upper_degC[0], "lower_degC": p.lower_degC[0],
                "hold_degC": p.hold_degC, "soak_done_s": p.soak_done_s, "stage_power_kW": p.stage_power_at(0)}

    def _signal_values(self, validated: Mapping[str, ValidatedInput], estimate: Estimate,
                       applied: Mapping[str, float]) -> dict[str, float]:
        values = {n: (v.sample.value if v.ok and v.sample is not None else math.nan) for n, v in validated.items()}
        for n, v in validated.items():  # a sample keeps its last valid value between samples
            if v.verdict.value == "no_new_sample" and v.sample is not None:
                values[n] = v.sample.value
        values.update(estimate.as_dict())
        values.update(applied)
        return values

    def _guard(self, t_s: float, dt_s: float, decision: ModeDecision, plan: Plan | None,
               applied: Mapping[str, float], values: Mapping[str, float], inputs_ok: bool,
               inputs_reason: str) -> dict[str, GuardDecision]:
        if decision.actual is not Mode.ON or plan is None:
            return {}
        failed = {n: expr.explain(values) for n, (expr, _) in self.permissives.items()}
        out: dict[str, GuardDecision] = {}
        for name, mv in self.mvs.items():
            if not mv.enabled or name not in plan.moves:
                continue
            blocking = [f"{p}: {why}" for p, why in failed.items() if why and name in self.permissives[p][1]]
            hold = decision.hold_reason
            req = GuardRequest(
                mv=name, kind=mv.spec.kind, proposed=plan.moves[name], readback=applied[name],
                last_written=mv.last_written, limits=mv.limits, dt_s=dt_s, t_s=t_s,
                last_move_t_s=mv.last_move_t_s, permissive_ok=not blocking,
                permissive_reason="; ".join(blocking),
                inputs_ok=inputs_ok and not hold, inputs_reason=hold or inputs_reason,
            )
            out[name] = self.guard.check(req)
        return out

    def _compose_writes(self, t_s: float, decision: ModeDecision, decisions: Mapping[str, GuardDecision],
                        applied: Mapping[str, float]) -> tuple[list[Write], list[str]]:
        writes: list[Write] = []
        on = decision.actual is Mode.ON
        for name, mv in self.mvs.items():
            active = on and mv.enabled
            if mv.spec.active_flag and (decision.actual is not Mode.OFF or decision.previous is not Mode.OFF):
                writes.append(Write(mv.spec.active_flag, 1.0 if active else 0.0))
            d = decisions.get(name)
            if not active or d is None:
                continue
            mv.engaged_cycles += 1
            if not d.write:
                continue
            if mv.spec.kind is MvKind.SETPOINT:
                writes.append(Write(mv.spec.tag, d.value))
                mv.last_written = d.value
                mv.pending_check = d.value
            else:
                mv.sequence += 1
                writes.append(Write(mv.spec.tag, d.value))
                if mv.spec.sequence_tag:
                    writes.append(Write(mv.spec.sequence_tag, float(mv.sequence)))
                mv.last_move_t_s = t_s
                mv.pending_check = d.value
        self._apc_heartbeat += 1
        writes.append(Write(self.recipe.io.heartbeat.apc_tag, float(self._apc_heartbeat)))
        allowed, dropped = self.guard.filter_writes(writes)
        return allowed, dropped

    async def _write(self, writes: list[Write], link_error: str) -> list[WriteResult]:
        if link_error:
            return [WriteResult(w.tag, False, "not written: link down") for w in writes]
        try:
            return list(await self.io.write(writes))
        except Exception as exc:  # a failed write is reported and audited, never raised
            return [WriteResult(w.tag, False, f"{type(exc).__name__}: {exc}") for w in writes]

    def _audit_writes(self, utc: float, k: int, decision: ModeDecision, decisions: Mapping[str, GuardDecision],
                      writes: list[Write], results: list[WriteResult], applied: Mapping[str, float],
                      dropped: list[str]) -> None:
        if decision.actual is not decision.previous:
            self.audit.info("mode_change", utc=utc, cycle=k, who="runtime", old=decision.previous.value,
                            new=decision.actual.value, requested=decision.requested.value,
                            why=decision.shed_reason or decision.hold_reason or "conditions met")
        for tag in dropped:
            self.audit.error("write_refused", utc=utc, cycle=k, what=tag, why="not on the write list")
        by_tag = {mv.spec.tag: (name, mv) for name, mv in self.mvs.items()}
        flags = {mv.spec.active_flag: name for name, mv in self.mvs.items() if mv.spec.active_flag}
        for w, r in zip(writes, results):
            if w.tag in flags and self._active_flags.get(w.tag) != w.value:
                self.audit.info("write", utc=utc, cycle=k, who="apc", what=w.tag, mv=flags[w.tag],
                                old=self._active_flags.get(w.tag), new=w.value, clamps=[],
                                why="apc_active follows the MV's actual mode", mode=decision.actual.value,
                                ok=r.ok, detail=r.detail)
                self._active_flags[w.tag] = w.value
            if w.tag not in by_tag:
                continue
            name, mv = by_tag[w.tag]
            d = decisions[name]
            self.audit.info("write", utc=utc, cycle=k, who="apc", what=w.tag, mv=name,
                            old=applied.get(name), new=w.value, clamps=list(d.clamps),
                            why=self._last_plan.reason if self._last_plan else "", mode=decision.actual.value,
                            ok=r.ok, detail=r.detail)

    def _record(self, k: int, scheduled_s: float, t_s: float, utc: float, snapshot: Mapping[str, Sample],
                validated: Mapping[str, ValidatedInput], estimate: Estimate, decision: ModeDecision,
                plan: Plan | None, decisions: Mapping[str, GuardDecision], writes: list[Write],
                results: list[WriteResult], applied: Mapping[str, float],
                constraints: Mapping[str, MvConstraint], batch: dict[str, Any] | None,
                reload: dict[str, Any] | None = None) -> dict[str, Any]:
        clamps = sum(1 for d in decisions.values() if d.clamps)
        self.guard_clamps += clamps
        P_diag = None if estimate.P is None else [estimate.P[i][i] for i in range(len(estimate.x))]
        rec: dict[str, Any] = {
            "k": k,
            "t_s": t_s,
            "scheduled_mono_s": scheduled_s,
            "actual_mono_s": t_s,
            "utc": utc,
            "inputs": {
                n: ([v.sample.value, v.sample.quality.value, v.sample.source_ts, v.sample.receive_ts,
                     v.sample.sample_ts, v.verdict.value] if v.sample is not None
                    else [None, None, None, None, None, v.verdict.value])
                for n, v in validated.items()
            },
            "estimate": {"names": list(estimate.names), "x": list(estimate.x), "P_diag": P_diag,
                         "health": estimate.health, "extras": dict(estimate.extras)},
            "mode": {"requested": decision.requested.value, "actual": decision.actual.value,
                     "hold": decision.hold_reason, "mvs": {n: mv.enabled for n, mv in self.mvs.items()}},
            "plan": None if plan is None else {
                "moves": dict(plan.moves), "predicted": {n: list(v) for n, v in plan.predicted.items()},
                "status": plan.status.value, "iterations": plan.iterations,
                "solve_time_s": plan.solve_time_s, "reason": plan.reason},
            "guard": {"clamps": clamps, "decisions": {
                n: {"proposed": plan.moves.get(n) if plan else None, "value": d.value, "write": d.write,
                    "clamps": list(d.clamps), "reason": d.reason} for n, d in decisions.items()}},
            "writes": [{"tag": w.tag, "value": w.value, "ok": r.ok, "detail": r.detail}
                       for w, r in zip(writes, results)],
            "readback": dict(applied),
            "dcs_at_limit": {n: ("high" if c.hold_up else "") + ("low" if c.hold_down else "")
                             for n, c in constraints.items() if c.hold_up or c.hold_down},
            "shed": decision.new_shed,
            "shed_reason": decision.shed_reason,
        }
        if batch is not None:
            rec["batch"] = batch
        if reload is not None:
            rec["recipe_reload"] = reload
        if self.truth is not None:
            truth = dict(self.truth())
            rec["truth"] = truth
            if self.kpi is not None:
                self.kpi.add(t_s, truth, clamps, decision.new_shed, batch)
        self.recorder.append(rec)
        return rec
