"""One unit's deterministic cycle, readable as a block diagram.

read → validate → estimate → decide mode → control → guard → write →
heartbeat → record. Nothing here knows a process or a protocol: the plant I/O,
estimator and controller come in through their protocols.

Faults never escape a cycle: an exception in any block is caught here, counted per block,
audited, and latches a shed with its block named; the cycle then writes only the safe state
(``apc_active`` 0 and the heartbeat) and records what happened. Writes are journalled around
the plant I/O: the intent is audited before the write, the result after it, and the cycle is
recorded; a unit whose audit log or flight record cannot be written drives nothing until it can
again (see ``docs/safety.md``, "Write, audit and record order").
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apc.alarms.rules import UnitSignals
from apc.compute import ComputeLate, ComputeLost, ControlRequest, InlineCompute, Parts, Primeable, UnitCompute
from apc.cycle_record import (
    BatchRecord,
    CycleRecord,
    DecisionRecord,
    EstimateRecord,
    InputRecord,
    ModeRecord,
    PlanRecord,
    TimingRecord,
    WriteRecord,
)
from apc.guard import NO_MOVE, GuardDecision, GuardRequest, OutputGuard, ReadbackMonitor
from apc.heartbeat import DEFAULT_COUNTER_MAX, HeartbeatCounter, HeartbeatWatch
from apc.kinds import kind_of
from apc.modes import ModeConditions, ModeDecision, ModeManager
from apc.protocols import BatchRunner, Clock, Controller, CounterTags, Estimator, KpiSink, PlantIO
from apc.recipe.loader import LoadedRecipe
from apc.recipe.permissive import PermissiveExpr, parse_permissive
from apc.recipe.schema import MvLimits, MvSpec, Recipe
from apc.recorder import NullRecorder, Recorder
from apc.types import (
    Estimate,
    Mode,
    MvConstraint,
    MvKind,
    Plan,
    Sample,
    SolverStatus,
    ValidatedInput,
    Write,
    WriteResult,
)
from apc.unit_state import MvMemory, UnitMemory, UnitStateFile
from apc.validation import InputValidator, cycle_ok

STAGES = ("validate", "estimate", "batch", "modes", "control", "permissives", "guard", "compose", "journal")
"""The blocks of a cycle whose exceptions are caught, counted and shed on (``Unit.stage_faults``)."""


def signal_values(validated: Mapping[str, ValidatedInput], estimate: Estimate,
                  applied: Mapping[str, float]) -> dict[str, float]:
    """Every signal of a cycle by name, as permissives and the batch read them: valid inputs (NaN
    otherwise; a sample keeps its last valid value between samples), the estimate, the MV readbacks."""
    values = {n: (v.sample.value if v.ok and v.sample is not None else math.nan) for n, v in validated.items()}
    for n, v in validated.items():
        if v.verdict.value == "no_new_sample" and v.sample is not None:
            values[n] = v.sample.value
    values.update(estimate.as_dict())
    values.update(applied)
    return values


@dataclass
class MvState:
    """Runtime state of one manipulated variable."""

    name: str
    spec: MvSpec
    limits: MvLimits
    """Limits in force (the HMI may move the operator limits inside engineering)."""
    enabled: bool = True
    acknowledged: float | None = None
    """Setpoints: the last value the plant acknowledged since the MV was last tracked."""
    last_move_mono: float | None = None
    """Increments: monotonic time of the last move written or seen in this process."""
    last_move_utc: float | None = None
    """Increments: UTC time of that move (persisted: a restart counts the interval from it)."""
    sequence: int = 0
    """Increments: last sequence number written (persisted: never reused after a restart)."""
    engaged_cycles: int = 0
    """Consecutive cycles this MV has been driven by the APC."""
    pending_check: float | None = None
    """Last cycle's acknowledged write, judged against this cycle's readback (setpoint or increment)."""
    position: float | None = None
    """Increments: the position read back last cycle (a change nobody wrote is a move too)."""
    readback: ReadbackMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.readback = ReadbackMonitor.from_spec(self.spec)

    def release(self) -> None:
        """Forget what the APC drove: the next ON write starts from the DCS readback. The time of the
        last move and the sequence number are plant facts, not APC memory: they stay."""
        self.acknowledged = None
        self.engaged_cycles = 0
        self.pending_check = None
        self.readback.reset()

    def since_last_move_s(self, t_s: float, utc: float) -> float:
        """Seconds since the last move of this increment MV (``inf`` when none is known)."""
        if self.last_move_mono is None and self.last_move_utc is not None:
            # Restored after a restart: place it on this process's monotonic scale once.
            self.last_move_mono = t_s - max(0.0, utc - self.last_move_utc)
        return math.inf if self.last_move_mono is None else t_s - self.last_move_mono

    def moved(self, t_s: float, utc: float) -> None:
        """Note a move at this time (written by the APC, or seen in the readback)."""
        self.last_move_mono, self.last_move_utc = t_s, utc

    def memory(self) -> MvMemory:
        """What this MV keeps across a restart."""
        return MvMemory(self.enabled, self.limits.operator, self.last_move_utc, self.sequence)


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
    parts: Any
    """What the unit's compute built for it (:meth:`apc.compute.UnitCompute.prepare`)."""
    who: str
    where: str


@dataclass
class _Cycle:
    """What one cycle's blocks hand each other (filled in block by block)."""

    k: int
    scheduled_s: float
    t_s: float
    utc: float
    dt_s: float
    snapshot: dict[str, Sample]
    link_error: str
    reload: dict[str, Any] | None = None
    validated: dict[str, ValidatedInput] = field(default_factory=dict)
    inputs_ok: bool = False
    inputs_reason: str = "not validated"
    applied: dict[str, float] = field(default_factory=dict)
    estimate: Estimate = field(default_factory=lambda: Estimate((), (), (), None, "not estimated"))
    values: dict[str, float] = field(default_factory=dict)
    batch: BatchRecord | None = None
    decision: ModeDecision | None = None
    constraints: dict[str, MvConstraint] = field(default_factory=dict)
    plan: Plan | None = None
    permissives: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, GuardDecision] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    results: list[WriteResult] = field(default_factory=list)
    fault: dict[str, str] | None = None
    deadline_mono: float | None = None
    """Wall-clock (``time.monotonic()``) deadline of this cycle's computation; ``None`` in virtual time."""
    read_utc: float = 0.0
    estimate_utc: float = 0.0
    plan_utc: float = 0.0
    write_utc: float = 0.0
    late: str = ""
    """Which answer missed the deadline (``estimate`` or ``plan``), '' when none."""
    shed: bool = False
    """A shed was latched in this cycle outside the mode decision (a fault, a lost computation)."""


class Unit:
    """One unit under APC: owns its recipe, plant I/O, estimator and controller.

    ``state`` is the unit's state file (see :mod:`apc.unit_state`): given for a plant that outlives
    the process (a DCS), so a restart comes back with the latched shed, the operator's limits and
    MV enables, and each electrode's last move and sequence number. :meth:`restore` reads it.
    """

    def __init__(
        self,
        name: str,
        loaded: LoadedRecipe,
        io: PlantIO,
        estimator: Estimator | None,
        controller: Controller | None,
        *,
        audit: Any,
        recorder: Recorder | None = None,
        kpi: KpiSink | None = None,
        truth: Callable[[], Mapping[str, float]] | None = None,
        batch: BatchRunner | None = None,
        state: UnitStateFile | None = None,
        compute: UnitCompute | None = None,
        clock: Clock | None = None,
        compute_faults: Callable[[float], Sequence[tuple[str, float]]] | None = None,
    ) -> None:
        if compute is None:
            if estimator is None or controller is None:
                raise ValueError("give an estimator and a controller, or a compute backend")
            compute = InlineCompute(Parts(estimator, controller))
        self.compute = compute
        """Where the estimator and controller run (see :mod:`apc.compute`)."""
        self.clock = clock
        """Times the cycle's read, answers and write (records; the input-age check); ``None``: all at the
        cycle's UTC."""
        self.compute_faults = compute_faults
        """Scenario faults of the computation due at a plant time (simulated units): (``stall``|``crash``, s)."""
        self.compute_late = 0
        """Answers that missed their deadline (never used)."""
        self.name = name
        self.io = io
        self.audit = audit.bind(unit=name)
        self.recorder: Recorder = recorder or NullRecorder()
        self.kpi = kpi
        self.truth = truth
        self.batch = batch
        """Furnaces: the batch whose curve the controller follows (updated before each control step)."""
        self.state = state
        self._saved: UnitMemory | None = None
        recipe = loaded.recipe
        self.mvs = self._mv_states(recipe, {})
        self.modes = self._mode_manager(recipe, None)
        self.heartbeat = HeartbeatWatch(recipe.io.heartbeat.dcs_timeout_s)
        apc_tag = recipe.io.heartbeat.apc_tag
        self.apc_heartbeat = HeartbeatCounter(io.counter_max(apc_tag) if isinstance(io, CounterTags)
                                              else DEFAULT_COUNTER_MAX)
        self.line_owned: dict[str, str] = {}
        self.line_limits: dict[str, Callable[[], MvLimits | str]] = {}
        """MVs that set a whole line's current, and the limits every member of the line allows."""
        """MVs the unit never writes, with why (the line current of cells in series: see
        :meth:`give_to_line`)."""
        self._configure(loaded)
        self._active_flags: dict[str, float] = {}
        self._last_t: float | None = None
        self._last_values: Mapping[str, float] = {}
        self._primed: str | None = None
        self.sheds = 0
        self.link_reason = ""
        """Why the plant link is down as of the last cycle ('' when up)."""
        self.heartbeat_reason = ""
        """Why the DCS heartbeat was judged lost in the last cycle ('' when fine)."""
        self.compute_restarts = 0
        """Times this unit's computation was lost and restarted."""
        self.guard_clamps = 0
        self.stage_faults: Counter[str] = Counter()
        """Exceptions caught per cycle block (see :data:`STAGES`)."""
        self._audit_error = ""
        self._record_error = ""
        self._hb_write_error = ""
        self._write_faults = ""
        self._pending_reload: _PendingReload | None = None

    @staticmethod
    def _mv_states(recipe: Recipe, old: Mapping[str, MvState]) -> dict[str, MvState]:
        """The recipe's MV states. They start released (bumpless next ON); from ``old`` (a reload)
        each keeps its enable, last move, sequence and position."""
        def state(n: str, spec: MvSpec) -> MvState:
            prev = old.get(n)
            if prev is None:
                return MvState(n, spec, recipe.limits[n])
            return MvState(n, spec, recipe.limits[n], enabled=prev.enabled, last_move_mono=prev.last_move_mono,
                           last_move_utc=prev.last_move_utc, sequence=prev.sequence, position=prev.position)
        return {n: state(n, spec) for n, spec in recipe.io.mvs.items()}

    @staticmethod
    def _mode_manager(recipe: Recipe, old: ModeManager | None) -> ModeManager:
        """The recipe's mode manager; from ``old`` (a reload) it keeps the requested and actual mode and
        a latched shed, and its warm-up starts again (the new estimator has no history)."""
        modes = ModeManager(recipe.estimator.warmup_s, recipe.modes.shed_after_bad_cycles)
        if old is not None:
            modes.requested, modes.actual, modes.shed_reason = old.requested, old.actual, old.shed_reason
        return modes

    def _configure(self, loaded: LoadedRecipe) -> None:
        """Everything derived from the recipe (construction and reload): MV limits and states are
        the caller's, the mode manager's history is kept by a reload and rebuilt by the caller."""
        recipe = loaded.recipe
        io_ = recipe.io
        self.loaded, self.recipe = loaded, recipe
        modes = recipe.modes
        self.compute_deadline_s = modes.compute_deadline_s if modes.compute_deadline_s is not None \
            else 0.5 * recipe.period_s
        self.max_input_age_s = modes.max_input_age_s if modes.max_input_age_s is not None else recipe.period_s
        self.validator = InputValidator(io_.inputs)
        self.required_inputs = tuple(n for n, s in io_.inputs.items() if s.role in ("measurement", "disturbance"))
        self.disturbances = tuple(n for n, s in io_.inputs.items() if s.role == "disturbance")
        self.guard = OutputGuard.from_mvs({n: s for n, s in io_.mvs.items() if n not in self.line_owned},
                                          extra_tags=(io_.heartbeat.apc_tag,))
        self.heartbeat.timeout_s = io_.heartbeat.dcs_timeout_s
        self.permissives: dict[str, tuple[PermissiveExpr, tuple[str, ...]]] = {
            n: (parse_permissive(p.expr), p.applies_to or tuple(self.mvs)) for n, p in recipe.permissives.items()
        }
        self._read_tags = self._tags_to_read()
        self._last_plan: Plan | None = None

    # ----------------------------------------------------------- compute
    def _inline(self) -> InlineCompute:
        if not isinstance(self.compute, InlineCompute):
            raise AttributeError(f"unit {self.name}: its estimator and controller live in a compute worker")
        return self.compute

    @property
    def estimator(self) -> Estimator:
        """The estimator (only where it runs in this process)."""
        return self._inline().parts.estimator

    @estimator.setter
    def estimator(self, value: Estimator) -> None:
        self._inline().parts.estimator = value

    @property
    def controller(self) -> Controller:
        """The controller (only where it runs in this process)."""
        return self._inline().parts.controller

    @controller.setter
    def controller(self, value: Controller) -> None:
        self._inline().parts.controller = value

    def _now(self, c: _Cycle) -> float:
        return c.utc if self.clock is None else self.clock.utc()

    # ----------------------------------------------------------- state across restarts
    def memory(self) -> UnitMemory:
        """What this unit keeps across a restart (see :mod:`apc.unit_state`)."""
        return UnitMemory(self.modes.requested, self.modes.shed_reason,
                          {n: mv.memory() for n, mv in self.mvs.items()})

    def _remember(self, utc: float) -> bool:
        """Save :meth:`memory` to the state file (if any, and if it changed); False (audited) when it
        cannot be written."""
        if self.state is None:
            return True
        memory = self.memory()
        if memory == self._saved:
            return True
        try:
            self.state.save(memory)
        except OSError as exc:
            self._saved = None
            self._audit("error", "unit_state_write_failed", utc=utc, path=str(self.state.path), error=str(exc))
            return False
        self._saved = memory
        return True

    def restore(self, utc: float) -> bool:
        """Come back as the state file left the unit: latched shed, MV enables, operator limits
        (when still inside the recipe's engineering limits), each increment's last move and
        sequence. Audited; True when a state was found. Raises :class:`~apc.unit_state.UnitStateError`
        for a file it cannot trust (the start is refused)."""
        memory = None if self.state is None else self.state.load()
        if memory is None:
            return False
        for name, m in memory.mvs.items():
            mv = self.mvs.get(name)
            if mv is None:
                self.audit.warning("unit_state_ignored", utc=utc, mv=name, why="no such MV in the recipe")
                continue
            mv.enabled = m.enabled and name not in self.line_owned
            mv.sequence = m.sequence
            if m.last_move_utc is not None:
                # A clock behind the recorded move (NTP step, another machine) counts the interval from now.
                mv.last_move_utc = min(m.last_move_utc, utc)
            if m.operator_limits is not None and m.operator_limits != mv.limits.operator:
                lo, hi = m.operator_limits
                elo, ehi = mv.limits.engineering
                if elo <= lo <= hi <= ehi:
                    mv.limits = dataclasses.replace(mv.limits, operator=(lo, hi))
                else:
                    self.audit.warning("unit_state_ignored", utc=utc, mv=name, what="operator_limits",
                                       value=[lo, hi], why=f"outside the recipe's engineering limits [{elo}, {ehi}]")
        self.modes.shed_reason = memory.shed_reason
        self.audit.info("unit_state_restored", utc=utc, path=str(self.state.path) if self.state else "",
                        shed_reason=memory.shed_reason, requested_before=memory.requested_mode.value,
                        mvs={n: {"enabled": mv.enabled, "operator_limits": list(mv.limits.operator),
                                 "last_move_utc": mv.last_move_utc, "sequence": mv.sequence}
                             for n, mv in self.mvs.items()})
        return True

    # ----------------------------------------------------------- commands
    def request_mode(self, mode: Mode, who: str, where: str, utc: float) -> None:
        """Operator request (HMI, CLI or scenario); audited, clears a latched shed."""
        self.audit.info("mode_request", utc=utc, who=who, where=where,
                        old=self.modes.requested.value, new=mode.value, actual=self.modes.actual.value)
        self.modes.request(mode)
        self._remember(utc)

    def request_mode_as_member(self, mode: Mode, group: str, who: str, where: str, utc: float) -> str:
        """A group's request (one key for the whole group): audited as ``mode_request`` with the group;
        unlike the unit's own request it leaves a latched shed latched (a shed unit is re-engaged on its
        own, by an operator who saw why). Returns why the unit cannot engage now ('' when nothing known
        stands in the way: the next cycle decides)."""
        self.audit.info("mode_request", utc=utc, who=who, where=where, group=group,
                        old=self.modes.requested.value, new=mode.value, actual=self.modes.actual.value,
                        shed_reason=self.modes.shed_reason)
        self.modes.start(mode)
        self._remember(utc)
        if mode is Mode.OFF:
            return ""
        if self.journal_error:
            return self.journal_error
        if mode is Mode.ON and self.modes.shed_reason:
            return f"shed latched: {self.modes.shed_reason} (request ON on the unit to clear it)"
        if mode is Mode.ON and not any(mv.enabled for mv in self.mvs.values()):
            return "every MV is disabled"
        return ""

    def give_to_line(self, mv: str, reason: str, utc: float) -> None:
        """The line drives ``mv`` (the line current of cells in series): disabled for good, off the
        write list with its ``apc_active`` flag; the controller holds it at its readback, a measured
        disturbance. Audited as ``mv_line_owned``; set at assembly, before :meth:`restore`."""
        state = self.mvs[mv]
        self.line_owned[mv] = reason
        state.enabled = False
        state.release()
        self.guard = OutputGuard.from_mvs({n: s for n, s in self.recipe.io.mvs.items() if n not in self.line_owned},
                                          extra_tags=(self.recipe.io.heartbeat.apc_tag,))
        self.audit.info("mv_line_owned", utc=utc, who="site file", mv=mv, tag=state.spec.tag, why=reason)

    def share_with_line(self, mv: str, limits: Callable[[], MvLimits | str], reason: str, utc: float) -> None:
        """``mv`` sets the current of a whole line (this unit is the group's rectifier unit): each cycle
        its moves are bounded by ``limits()`` (every member's limits) instead of its own, and held with
        the reason when ``limits()`` says there are none. Audited as ``mv_line_shared``."""
        self.line_limits[mv] = limits
        self.audit.info("mv_line_shared", utc=utc, who="site file", mv=mv, tag=self.mvs[mv].spec.tag, why=reason)

    def _limits(self, name: str) -> MvLimits | str:
        """The limits ``name`` moves within now: its own, or the line's (or why there are none)."""
        shared = self.line_limits.get(name)
        return self.mvs[name].limits if shared is None else shared()

    def start_mode(self, mode: Mode, who: str, where: str, utc: float) -> None:
        """The mode a process start asks for (site file): audited as ``mode_request``; unlike an
        operator's request it leaves a restored latched shed latched."""
        self.audit.info("mode_request", utc=utc, who=who, where=where, why="process start",
                        old=self.modes.requested.value, new=mode.value, actual=self.modes.actual.value,
                        shed_reason=self.modes.shed_reason)
        self.modes.start(mode)
        self._remember(utc)

    def batch_command(self, command: str, who: str, where: str, why: str = "") -> str:
        """Operator command to the furnace batch (``start`` | ``hold`` | ``resume`` | ``abort``), at
        the last cycle's time and, for a start, from the last controlled temperature; '' when accepted,
        else why not (the batch audits both)."""
        batch = self.batch
        if batch is None:
            return "this unit runs no batch"
        t = self._last_t if self._last_t is not None else 0.0
        why = why or f"operator command from {where}"
        extended = getattr(batch, "command", None)
        if extended is not None and command.split()[:1] not in (["hold"], ["resume"], ["abort"]):
            result = extended(t, who, command, self._last_values.get(batch.curve.controlled))
            return "" if result else str(getattr(result, "reason", "refused"))
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

    def set_mv_enabled(self, mv: str, enabled: bool, who: str, where: str, utc: float) -> str:
        """Enable or disable one MV; audited and remembered across a restart. '' when done, else why
        not (an MV the line drives is never enabled)."""
        state = self.mvs[mv]
        if enabled and mv in self.line_owned:
            return self.line_owned[mv]
        self.audit.info("mv_enable", utc=utc, who=who, where=where, mv=mv, old=state.enabled, new=enabled)
        state.enabled = enabled
        self._remember(utc)
        return ""

    def set_operator_limits(self, mv: str, low: float, high: float, who: str, where: str, utc: float) -> str:
        """Move one MV's operator limits inside its engineering limits; '' when done (audited and
        remembered across a restart), else why not."""
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
        self._remember(utc)
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
        return kind_of(new).reload_refusal(old, new)

    def refuse_reload(self, why: str, who: str, where: str, utc: float, new_sha256: str = "") -> str:
        """Audit a refused reload (``recipe_reload_refused``); returns ``why``."""
        self.audit.warning("recipe_reload_refused", utc=utc, who=who, where=where, what=str(self.loaded.path),
                           old=self.loaded.sha256, new=new_sha256, why=why, actual=self.modes.actual.value)
        return why

    def request_reload(self, loaded: LoadedRecipe, parts: Any, who: str, where: str, utc: float) -> str:
        """Ask to replace recipe, estimator and controller at the start of the next cycle; ``parts`` is
        what :meth:`apc.compute.UnitCompute.prepare` built (inline: :class:`~apc.compute.Parts`).

        Returns '' when accepted (pending; a later request replaces it), else why not.
        Both outcomes are audited.
        """
        why = self.reload_refusal(loaded)
        if why:
            return self.refuse_reload(why, who, where, utc, loaded.sha256)
        self._pending_reload = _PendingReload(loaded, parts, who, where)
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
        sections = [f.name for f in dataclasses.fields(recipe)
                    if getattr(recipe, f.name) != getattr(old_loaded.recipe, f.name)]
        old_mvs = self.mvs
        self.mvs = self._mv_states(recipe, old_mvs)
        for n, mv in self.mvs.items():  # the recipe's operator limits replace those in force (e.g. from the HMI)
            if mv.limits.operator != old_mvs[n].limits.operator:
                self.audit.info("operator_limits", utc=utc, who=pending.who, where=pending.where, mv=n,
                                old=list(old_mvs[n].limits.operator), new=list(mv.limits.operator),
                                why="recipe reload")
        self.modes = self._mode_manager(recipe, self.modes)
        self.compute.install(pending.parts)
        self._configure(pending.loaded)
        self.audit.info("recipe_reload", utc=utc, cycle=k, who=pending.who, where=pending.where,
                        what=str(pending.loaded.path), old=old_loaded.sha256, new=pending.loaded.sha256,
                        sections=sections)
        self._remember(utc)
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

    async def cycle(self, k: int, scheduled_s: float, t_s: float, utc: float,
                    deadline_mono: float | None = None) -> CycleRecord:
        """Run one cycle at monotonic time ``t_s``; returns its record (never raises).

        ``deadline_mono`` bounds the estimator's and controller's answers (``time.monotonic()``;
        ``None`` in virtual time, where iteration caps bound them)."""
        reload = self._apply_reload(k, utc) if self._pending_reload is not None else None
        dt_s = self.recipe.period_s if self._last_t is None else t_s - self._last_t
        self._last_t = t_s
        if self.compute_faults is not None:
            for fault, duration_s in self.compute_faults(t_s):
                self.compute.inject(fault, duration_s)
        # 1. read (an I/O failure is a link failure, never an exception)
        snapshot, link_error = await self._read()
        c = _Cycle(k, scheduled_s, t_s, utc, dt_s, snapshot, link_error, reload, deadline_mono=deadline_mono)
        c.read_utc = self._now(c)
        stage = STAGES[0]
        try:
            # B007 silenced below: ``stage`` names the block that raised, read by the handler
            for stage, block in (("validate", self._validate), ("estimate", self._estimate),  # noqa: B007
                                 ("batch", self._advance_batch), ("modes", self._decide), ("control", self._control),
                                 ("permissives", self._permissives), ("guard", self._guard),
                                 ("compose", self._compose_writes)):
                await block(c)
        except Exception as exc:  # any block's failure sheds the unit with its name; the process goes on
            self._fault(c, stage, exc)
        # 7. journal the intent, write, heartbeat
        c.results = await self._journalled_write(c)
        await self._after_write(c)
        # 9. record
        return self._record(c)

    async def _read(self) -> tuple[dict[str, Sample], str]:
        try:
            return dict(await self.io.read(self._read_tags)), ""
        except Exception as exc:  # any I/O failure is a link failure, never a crash
            return {}, f"read failed: {type(exc).__name__}: {exc}"

    async def _validate(self, c: _Cycle) -> None:
        """2. validate inputs, judge the DCS heartbeat, read back the MVs."""
        c.validated = self.validator.validate(c.utc, c.snapshot)
        c.inputs_ok, c.inputs_reason = cycle_ok(c.validated, self.required_inputs)
        c.applied = self._readbacks(c)

    async def _estimate(self, c: _Cycle) -> None:
        """3. estimate (awaited until the cycle's deadline: a late estimate is no estimate)."""
        try:
            c.estimate = await self.compute.estimate(c.t_s, c.validated, c.applied, c.deadline_mono)
        except ComputeLate as exc:
            self._late(c, "estimate", str(exc))
        except ComputeLost as exc:
            self._lost(c, str(exc))
        c.estimate_utc = self._now(c)
        c.values = self._signal_values(c.validated, c.estimate, c.applied)
        self._last_values = c.values

    def _late(self, c: _Cycle, what: str, why: str) -> None:
        """An answer missed its deadline: count and audit it; an estimate that did not come is unhealthy."""
        self.compute_late += 1
        c.late = what
        self._audit("warning", "compute_late", utc=c.utc, cycle=c.k, what=what, why=why, late=self.compute_late)
        if what == "estimate":
            c.estimate = Estimate((), (), (), None, f"compute late: {why}")

    def _lost(self, c: _Cycle, why: str) -> None:
        """The computation was restarted: a fresh estimator must re-warm; the unit sheds (latched)."""
        reason = f"compute worker restarted: {why}"
        self.compute_restarts += 1
        self._primed = None
        self._audit("error", "compute_lost", utc=c.utc, cycle=c.k, why=why)
        c.estimate = Estimate((), (), (), None, reason)
        self._shed_now(c, reason)

    async def _advance_batch(self, c: _Cycle) -> None:
        """Furnaces: advance the batch, whose reference the controller reads. The batch judges soak
        and hold-until only on data the unit trusts: with the link down or an unhealthy estimate it
        sees nothing, so its clocks stop (an open-loop prediction never counts)."""
        if self.batch is None:
            return
        preview = self.batch.update(c.t_s, c.values if c.estimate.healthy and not c.link_error else {})
        c.batch = preview.record_entry()
        self._prime_estimator(c)

    def _prime_estimator(self, c: _Cycle) -> None:
        """A batch that learned from its history hands the estimator its starting parameters once
        (again after the computation was restarted)."""
        source = getattr(self.batch, "estimator_prior", None)
        if source is None or not isinstance(self.compute, Primeable):
            return
        token, prior = source()
        if not prior or token == self._primed:
            return
        self.compute.prime(prior)
        self._primed = token
        self._audit("info", "estimator_primed", utc=c.utc, cycle=c.k, batch_id=token,
                    parameters={k: [round(v, 6), round(s, 6)] for k, (v, s) in prior.items()})

    def _readbacks(self, c: _Cycle) -> dict[str, float]:
        """MV readbacks (absent when unreadable); increments: a position change nobody wrote is a move."""
        applied: dict[str, float] = {}
        for name, mv in self.mvs.items():
            s = c.snapshot.get(mv.spec.readback)
            if s is None or not s.usable:
                continue
            applied[name] = s.value
            if mv.spec.kind is not MvKind.SETPOINT:
                self._watch_position(mv, s.value, c)
        return applied

    def _watch_position(self, mv: MvState, position: float, c: _Cycle) -> None:
        """An increment position that changed by more than its tolerance beyond what the APC wrote
        last cycle was moved by someone (operator, DCS): that move starts the minimum interval too."""
        prev, mv.position = mv.position, position
        if prev is None:
            return
        expected = mv.pending_check or 0.0
        slack = max(mv.spec.readback_tolerance, NO_MOVE)
        if abs(position - prev - expected) > slack and abs(position - prev) > slack:
            mv.moved(c.t_s, c.utc)
            self._audit("info", "plant_move_seen", utc=c.utc, cycle=c.k, mv=mv.name, old=prev, new=position,
                        why="position changed beyond what the APC wrote: the minimum interval restarts")
            self._remember(c.utc)

    def _remote(self, snapshot: Mapping[str, Sample]) -> dict[str, bool | None]:
        """Each MV's remote status: True/False as the DCS reports it, None when unknown (not read)."""
        remote: dict[str, bool | None] = {}
        for name, mv in self.mvs.items():
            if not mv.spec.remote_status:
                remote[name] = True
                continue
            r = snapshot.get(mv.spec.remote_status)
            remote[name] = None if r is None else (r.usable and r.value >= 0.5)
        return remote

    def _constraints(self, c: _Cycle) -> dict[str, MvConstraint]:
        """Limits in force (operator ∩ engineering), the DCS's at-limit status and, for increments,
        the time since the last move, of every MV."""
        def at_limit(tag: str | None) -> bool:
            if tag is None:
                return False
            s = c.snapshot.get(tag)
            return s is None or not s.usable or s.value >= 0.5  # unreadable: assume at the limit

        out = {}
        for name, mv in self.mvs.items():
            shared = self._limits(name)
            held = c.applied.get(name, math.nan)
            if isinstance(shared, str) and math.isfinite(held):  # no line limits: the MV stays where it is
                shared = MvLimits((held, held), (held, held), mv.limits.rate_per_s)
            lim = shared if isinstance(shared, MvLimits) else mv.limits
            since = math.inf if mv.spec.kind is MvKind.SETPOINT else mv.since_last_move_s(c.t_s, c.utc)
            out[name] = MvConstraint(max(lim.operator[0], lim.engineering[0]), min(lim.operator[1], lim.engineering[1]),
                                     at_limit(mv.spec.high_limit_status), at_limit(mv.spec.low_limit_status),
                                     since_last_move_s=since)
        return out

    def _check_readbacks(self, applied: Mapping[str, float]) -> str:
        """Judge last cycle's acknowledged writes against this cycle's readbacks."""
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

    async def _decide(self, c: _Cycle) -> None:
        """4. decide the mode from what this cycle saw (and what the last cycle's writes showed)."""
        readback_faults = self._check_readbacks(c.applied)
        _, hb_reason = self.heartbeat.update(c.utc, c.snapshot.get(self.recipe.io.heartbeat.dcs_tag))
        estimate = c.estimate
        failures = [r for r in (
            "" if c.inputs_ok else f"bad inputs: {c.inputs_reason}",
            "" if estimate.healthy else f"estimator: {estimate.health}",
            readback_faults,
            self._write_faults,
            "; ".join(f"{n}: no readback" for n, mv in self.mvs.items() if mv.enabled and n not in c.applied),
        ) if r]
        remote = self._remote(c.snapshot)
        left_remote = [n for n, mv in self.mvs.items() if mv.enabled and mv.engaged_cycles >= 2 and remote[n] is False]
        immediate = f"DCS took loop(s) out of remote: {', '.join(left_remote)}" if left_remote else ""
        link_reason = c.link_error or self._hb_write_error or hb_reason
        self.link_reason, self.heartbeat_reason = c.link_error or self._hb_write_error, hb_reason
        cond = ModeConditions(
            t_s=c.t_s,
            healthy=c.inputs_ok and estimate.healthy,
            health_reason=c.inputs_reason or estimate.health,
            link_ok=not link_reason,
            link_reason=link_reason,
            failure="; ".join(failures),
            immediate_shed=immediate,
            fault=self.journal_error,
        )
        c.decision = self.modes.decide(cond)
        if c.decision.new_shed:
            self.sheds += 1
            self._remember(c.utc)

    def _shed_now(self, c: _Cycle, reason: str) -> None:
        """Latch a shed with ``reason`` now (from any mode but OFF: STANDBY); counted and remembered."""
        previous = c.decision.previous if c.decision is not None else self.modes.actual
        c.decision = self.modes.latch(reason, previous)
        if c.decision.new_shed:
            self.sheds += 1
            c.shed = True
        self._remember(c.utc)

    async def _control(self, c: _Cycle) -> None:
        """5. control (STANDBY computes everything too)."""
        assert c.decision is not None
        c.constraints = self._constraints(c)
        decision = c.decision
        if decision.actual is Mode.OFF:
            for mv in self.mvs.values():  # an OFF -> ON start must be bumpless too
                mv.release()
            return
        enabled = {n: mv.enabled and decision.actual is Mode.ON for n, mv in self.mvs.items()}
        tracking = {}
        for name, on in enabled.items():
            if not on:
                self.mvs[name].release()
                if name in c.applied:
                    tracking[name] = c.applied[name]
        disturbances = {n: v.sample.value for n, v in c.validated.items()
                        if n in self.disturbances and v.ok and v.sample is not None}
        run = c.estimate.healthy and all(n in c.applied for n in self.mvs)
        if not run and not tracking:
            c.plan = Plan({}, {}, SolverStatus.NOT_RUN, 0, 0.0, "estimate or readback not usable")
            return
        preview = self.batch.preview() if self.batch is not None and run and self.compute.needs_preview else None
        request = ControlRequest(c.t_s, c.estimate, c.applied, enabled, disturbances, c.constraints, tracking, run,
                                 preview)
        try:
            plan = await self.compute.control(request, c.deadline_mono)
        except ComputeLate as exc:
            self._late(c, "plan", str(exc))
            plan = Plan({}, {}, SolverStatus.NOT_RUN, 0, 0.0, f"compute late: {exc}")
            late = self.modes.count_failure(f"compute late: {exc}")
            if late and decision.actual is Mode.ON:
                self._shed_now(c, late)
        except ComputeLost as exc:
            self._lost(c, str(exc))
            plan = Plan({}, {}, SolverStatus.NOT_RUN, 0, 0.0, f"compute lost: {exc}")
        except Exception as exc:  # a controller bug holds the unit, it never crashes the process
            self.stage_faults["control"] += 1
            plan = Plan({}, {}, SolverStatus.FAILED, 0, 0.0, f"{type(exc).__name__}: {exc}")
        c.plan_utc = self._now(c)
        if plan is None:
            c.plan = Plan({}, {}, SolverStatus.NOT_RUN, 0, 0.0, "estimate or readback not usable")
            return
        self._last_plan = c.plan = plan
        if plan.status is SolverStatus.FAILED and decision.actual is Mode.ON:
            self._shed_now(c, f"controller failed: {plan.reason}")

    def _signal_values(self, validated: Mapping[str, ValidatedInput], estimate: Estimate,
                       applied: Mapping[str, float]) -> dict[str, float]:
        return signal_values(validated, estimate, applied)

    async def _permissives(self, c: _Cycle) -> None:
        """6a. the recipe's permissive conditions: why each one fails this cycle ('' when it holds)."""
        assert c.decision is not None
        if c.decision.actual is Mode.ON and c.plan is not None:
            c.permissives = {n: expr.explain(c.values) for n, (expr, _) in self.permissives.items()}

    async def _guard(self, c: _Cycle) -> None:
        """6b. the guard: what may be written of the plan."""
        assert c.decision is not None
        decision, plan = c.decision, c.plan
        if decision.actual is not Mode.ON or plan is None:
            return
        for name, mv in self.mvs.items():
            if not mv.enabled or name not in plan.moves:
                continue
            blocking = [f"{p}: {why}" for p, why in c.permissives.items() if why and name in self.permissives[p][1]]
            hold = decision.hold_reason
            limits = self._limits(name)
            if isinstance(limits, str):  # a line whose members' limits do not overlap: no move
                hold, limits = hold or limits, mv.limits
            since = c.constraints[name].since_last_move_s
            req = GuardRequest(
                mv=name, kind=mv.spec.kind, proposed=plan.moves[name], readback=c.applied[name],
                acknowledged=mv.acknowledged, limits=limits, dt_s=c.dt_s, period_s=self.recipe.period_s,
                since_last_move_s=None if since == math.inf or mv.spec.kind is MvKind.SETPOINT else since,
                permissive_ok=not blocking, permissive_reason="; ".join(blocking),
                inputs_ok=c.inputs_ok and not hold, inputs_reason=hold or c.inputs_reason,
            )
            c.decisions[name] = self.guard.check(req)

    async def _compose_writes(self, c: _Cycle) -> None:
        """What this cycle writes: MV moves the guard passed, ``apc_active`` flags, the heartbeat."""
        assert c.decision is not None
        writes: list[Write] = []
        decision = c.decision
        on = decision.actual is Mode.ON
        for name, mv in self.mvs.items():
            active = on and mv.enabled
            if mv.spec.active_flag and name not in self.line_owned \
                    and (decision.actual is not Mode.OFF or decision.previous is not Mode.OFF):
                writes.append(Write(mv.spec.active_flag, 1.0 if active else 0.0))
            d = c.decisions.get(name)
            if not active or d is None:
                continue
            mv.engaged_cycles += 1
            if not d.write:
                continue
            writes.append(Write(mv.spec.tag, d.value))
            if mv.spec.kind is not MvKind.SETPOINT:
                # Write-ahead: the move and its sequence number are the plant's from now on, written or not.
                mv.sequence += 1
                if mv.spec.sequence_tag:
                    writes.append(Write(mv.spec.sequence_tag, float(mv.sequence)))
                mv.moved(c.t_s, c.utc)
        writes.append(Write(self.recipe.io.heartbeat.apc_tag, self.apc_heartbeat.next()))
        c.writes, c.dropped = self.guard.filter_writes(writes)

    def _fault(self, c: _Cycle, stage: str, exc: BaseException) -> None:
        """A block raised: count it, latch a shed naming the block, write only the safe state."""
        self.stage_faults[stage] += 1
        reason = f"{stage} failed: {type(exc).__name__}: {exc}"
        c.fault = {"stage": stage, "error": f"{type(exc).__name__}: {exc}"}
        self._shed_now(c, reason)
        c.plan, c.decisions = None, {}
        self._audit("error", "cycle_fault", utc=c.utc, cycle=c.k, stage=stage, why=reason,
                    faults=self.stage_faults[stage], mode=self.modes.actual.value)
        self._safe_writes(c)

    def _safe_writes(self, c: _Cycle) -> None:
        """Only the safe state: every ``apc_active`` flag 0 (the DCS takes each loop back) and the
        heartbeat (the APC itself is alive and says so)."""
        writes = [Write(mv.spec.active_flag, 0.0) for n, mv in self.mvs.items()
                  if mv.spec.active_flag and n not in self.line_owned]
        writes.append(Write(self.recipe.io.heartbeat.apc_tag, self.apc_heartbeat.next()))
        for mv in self.mvs.values():
            mv.release()
        allowed = self.guard.write_tags  # flags and heartbeat are on it by construction; nothing else is written
        c.writes, c.dropped = [w for w in writes if w.tag in allowed], [w.tag for w in writes if w.tag not in allowed]

    # ------------------------------------------------------------ journal and write
    @property
    def alarm_signals(self) -> UnitSignals:
        """What the alarm rules need besides the cycle record."""
        return UnitSignals(self.link_reason, self.heartbeat_reason, self.journal_error, self.compute_restarts)

    @property
    def journal_error(self) -> str:
        """Why the audit log or the flight record cannot be written ('' when both can): meanwhile the
        unit drives nothing (it may not be ON)."""
        return self._audit_error or self._record_error

    def _audit(self, level: str, event: str, **kw: Any) -> bool:
        """One audit event; False (and :attr:`journal_error` set) when the audit log cannot be written."""
        try:
            getattr(self.audit, level)(event, **kw)
        except Exception as exc:  # a full disk or closed file: the unit must not drive unaudited
            self._audit_error = self._audit_error or f"audit log failed: {type(exc).__name__}: {exc}"
            return False
        return True

    def _move_writes(self, c: _Cycle) -> list[Write]:
        """This cycle's writes that move the plant or hand a loop over (MV tags, sequences, changed flags)."""
        moving = {mv.spec.tag for mv in self.mvs.values()} | {mv.spec.sequence_tag for mv in self.mvs.values()
                                                              if mv.spec.sequence_tag}
        flags = {mv.spec.active_flag for mv in self.mvs.values() if mv.spec.active_flag}
        return [w for w in c.writes if w.tag in moving or (w.tag in flags and self._active_flags.get(w.tag) != w.value)]

    async def _journalled_write(self, c: _Cycle) -> list[WriteResult]:
        """Remember and audit the intent, then write. What cannot be journalled is not written: a
        failed state file holds an increment move, a failed audit log leaves only the safe state."""
        if any(w.tag == mv.spec.tag and mv.spec.kind is not MvKind.SETPOINT for w in c.writes
               for mv in self.mvs.values()) and not self._remember(c.utc):
            self._hold_increments(c, "unit state file not writable: an increment is not moved without it")
        self._probe_audit(c)
        self._check_input_age(c)
        intent = self._move_writes(c)
        if intent and not self._audit("info", "write_intent", utc=c.utc, cycle=c.k, mode=self.modes.actual.value,
                                      writes=[{"tag": w.tag, "value": w.value} for w in intent]) \
                and c.fault is None:  # nothing that moves the plant goes out unaudited
            self._shed_now(c, self.journal_error)
            c.plan, c.decisions = None, {}
            self._safe_writes(c)
        results = await self._write(c.writes, c.link_error)
        c.write_utc = self._now(c)
        return results

    def _check_input_age(self, c: _Cycle) -> None:
        """Nothing computed from inputs older than ``max_input_age_s`` is written (a late cycle, a stalled
        loop): the moves are taken out, the safe-state writes stay."""
        age_s = self._now(c) - c.read_utc
        if age_s <= self.max_input_age_s:
            return
        why = f"inputs {age_s:.2f} s old > max_input_age_s {self.max_input_age_s:g}"
        moved = {mv.spec.tag for mv in self.mvs.values()} | {mv.spec.sequence_tag for mv in self.mvs.values()
                                                             if mv.spec.sequence_tag}
        if not any(w.tag in moved for w in c.writes):
            return
        c.writes = [w for w in c.writes if w.tag not in moved]
        for name, d in list(c.decisions.items()):
            if d.write:
                c.decisions[name] = dataclasses.replace(d, write=False, reason=why)
        self._audit("warning", "write_refused", utc=c.utc, cycle=c.k, why=why)
        self._write_faults = why

    def _probe_audit(self, c: _Cycle) -> None:
        """While the audit log is failing, try it once a cycle; the first event that gets through
        clears the failure (the unit may then drive again on an operator's request)."""
        if not self._audit_error:
            return
        why, self._audit_error = self._audit_error, ""
        self._audit("info", "journal_recovered", utc=c.utc, cycle=c.k, why=why)

    def _hold_increments(self, c: _Cycle, why: str) -> None:
        """Take this cycle's increment moves (and their sequence numbers) back out of the writes."""
        tags: set[str] = set()
        for name, mv in self.mvs.items():
            if mv.spec.kind is MvKind.SETPOINT or not any(w.tag == mv.spec.tag for w in c.writes):
                continue
            tags |= {mv.spec.tag, mv.spec.sequence_tag or ""}
            d = c.decisions[name]
            c.decisions[name] = dataclasses.replace(d, write=False, reason=why)
        c.writes = [w for w in c.writes if w.tag not in tags]

    async def _write(self, writes: list[Write], link_error: str) -> list[WriteResult]:
        if link_error:
            return [WriteResult(w.tag, False, "not written: link down") for w in writes]
        try:
            return list(await self.io.write(writes))
        except Exception as exc:  # a failed write is reported and audited, never raised
            return [WriteResult(w.tag, False, f"{type(exc).__name__}: {exc}") for w in writes]

    async def _after_write(self, c: _Cycle) -> None:
        """Take in what the plant acknowledged: setpoint bases, readback checks, refusals, heartbeat."""
        by_tag = {mv.spec.tag: mv for mv in self.mvs.values()}
        refused: list[str] = []
        hb_result: WriteResult | None = None
        for w, r in zip(c.writes, c.results):
            if w.tag == self.recipe.io.heartbeat.apc_tag:
                hb_result = r
            mv = by_tag.get(w.tag)
            if mv is None:
                continue
            if r.ok:
                mv.pending_check = w.value
                if mv.spec.kind is MvKind.SETPOINT:
                    mv.acknowledged = w.value
            elif not c.link_error:
                refused.append(f"{mv.name}: write refused ({r.detail})")
        if refused:
            self._write_faults = "; ".join(refused)
        elif not self._write_faults.startswith("inputs "):
            self._write_faults = ""
        if hb_result is not None and not c.link_error:
            await self._heartbeat_written(c, hb_result)
        self._audit_writes(c)

    async def _heartbeat_written(self, c: _Cycle, result: WriteResult) -> None:
        """A refused APC heartbeat is a link fault: the DCS sees it freeze and will shed. Shed first,
        and hand every loop back (``apc_active`` 0) where that can still be written."""
        if result.ok:
            if self._hb_write_error:
                self._audit("info", "apc_heartbeat_restored", utc=c.utc, cycle=c.k)
            self._hb_write_error = ""
            return
        first = not self._hb_write_error
        self._hb_write_error = f"APC heartbeat write failed: {result.detail}"
        if first:
            self._audit("error", "apc_heartbeat_write_failed", utc=c.utc, cycle=c.k, what=result.tag,
                        why=result.detail, mode=self.modes.actual.value)
        if self.modes.actual is Mode.ON:
            self._shed_now(c, self._hb_write_error)
        flags = [Write(mv.spec.active_flag, 0.0) for n, mv in self.mvs.items()
                 if mv.spec.active_flag and n not in self.line_owned
                 and self._active_flags.get(mv.spec.active_flag) != 0.0]
        for mv in self.mvs.values():
            mv.release()
        if flags:
            c.writes.extend(flags)
            c.results.extend(await self._write(flags, ""))

    def _audit_writes(self, c: _Cycle) -> None:
        decision = c.decision
        if decision is not None and decision.actual is not decision.previous:
            self._audit("info", "mode_change", utc=c.utc, cycle=c.k, who="runtime", old=decision.previous.value,
                        new=decision.actual.value, requested=decision.requested.value,
                        why=decision.shed_reason or decision.hold_reason or "conditions met")
        for tag in c.dropped:
            self._audit("error", "write_refused", utc=c.utc, cycle=c.k, what=tag, why="not on the write list")
        by_tag = {mv.spec.tag: (name, mv) for name, mv in self.mvs.items()}
        flags = {mv.spec.active_flag: name for name, mv in self.mvs.items() if mv.spec.active_flag}
        mode = self.modes.actual.value
        for w, r in zip(c.writes, c.results):
            if w.tag in flags and self._active_flags.get(w.tag) != w.value:
                self._audit("info", "write", utc=c.utc, cycle=c.k, who="apc", what=w.tag, mv=flags[w.tag],
                            old=self._active_flags.get(w.tag), new=w.value, clamps=[],
                            why="apc_active follows the MV's actual mode", mode=mode, ok=r.ok, detail=r.detail)
                if r.ok:
                    self._active_flags[w.tag] = w.value
            if w.tag not in by_tag:
                continue
            name, _ = by_tag[w.tag]
            d = c.decisions.get(name)
            self._audit("info", "write", utc=c.utc, cycle=c.k, who="apc", what=w.tag, mv=name,
                        old=c.applied.get(name), new=w.value, clamps=list(d.clamps) if d else [],
                        why=self._last_plan.reason if self._last_plan else "", mode=mode, ok=r.ok, detail=r.detail)

    def _record(self, c: _Cycle) -> CycleRecord:
        """9. the cycle's record (flight record, KPIs, HMI); a record that cannot be written sheds the unit."""
        decisions, plan, estimate = c.decisions, c.plan, c.estimate
        clamps = sum(1 for d in decisions.values() if d.clamps)
        self.guard_clamps += clamps
        decision = c.decision or ModeDecision(self.modes.requested, self.modes.actual, self.modes.actual,
                                              self.modes.shed_reason, "", False)
        if c.shed and not decision.new_shed:  # latched before the mode decision of this cycle
            decision = dataclasses.replace(decision, new_shed=True)
        P_diag = None if estimate.P is None else tuple(estimate.P[i][i] for i in range(len(estimate.x)))
        timing = None if self.clock is None else TimingRecord(
            c.read_utc - c.utc, c.estimate_utc - c.utc, c.plan_utc - c.utc, c.write_utc - c.utc)
        rec = CycleRecord(
            k=c.k, t_s=c.t_s, scheduled_mono_s=c.scheduled_s, actual_mono_s=c.t_s, utc=c.utc,
            inputs={n: (InputRecord(v.sample.value, v.sample.quality.value, v.sample.source_ts, v.sample.receive_ts,
                                    v.sample.sample_ts, v.verdict.value) if v.sample is not None
                        else InputRecord(None, None, None, None, None, v.verdict.value))
                    for n, v in c.validated.items()},
            estimate=EstimateRecord(tuple(estimate.names), tuple(estimate.x), P_diag, estimate.health,
                                    dict(estimate.extras)),
            mode=ModeRecord(decision.requested.value, decision.actual.value, decision.hold_reason,
                            {n: mv.enabled for n, mv in self.mvs.items()}),
            plan=None if plan is None else PlanRecord(
                dict(plan.moves), {n: tuple(v) for n, v in plan.predicted.items()}, plan.status.value,
                plan.iterations, plan.solve_time_s, plan.reason),
            guard_clamps=clamps,
            decisions={n: DecisionRecord(plan.moves.get(n) if plan else None, d.value, d.write, tuple(d.clamps),
                                         d.reason) for n, d in decisions.items()},
            writes=tuple(WriteRecord(w.tag, w.value, r.ok, r.detail) for w, r in zip(c.writes, c.results)),
            readback=dict(c.applied),
            dcs_at_limit={n: ("high" if x.hold_up else "") + ("low" if x.hold_down else "")
                          for n, x in c.constraints.items() if x.hold_up or x.hold_down},
            shed=decision.new_shed, shed_reason=decision.shed_reason, timing=timing, late=c.late,
            fault=c.fault, batch=c.batch, recipe_reload=c.reload,
            truth=None if self.truth is None else dict(self.truth()),
        )
        if rec.truth is not None and self.kpi is not None:
            self.kpi.add(rec)
        return self._append(rec, c)

    def _append(self, rec: CycleRecord, c: _Cycle) -> CycleRecord:
        """Append the record; a failure latches "recorder failed" (the unit drives nothing until a
        record can be written again and an operator asks). Returns the record as it stands."""
        try:
            self.recorder.append(rec.to_json())
        except Exception as exc:
            self.stage_faults["journal"] += 1
            first = not self._record_error
            self._record_error = self._record_error or f"recorder failed: {type(exc).__name__}: {exc}"
            if first:
                self._audit("error", "recorder_failed", utc=c.utc, cycle=c.k, why=self._record_error)
            if self.modes.actual is not Mode.OFF and self.modes.shed_reason != self._record_error:
                self._shed_now(c, self._record_error)
                rec = dataclasses.replace(rec, shed=True, shed_reason=self._record_error,
                                          mode=dataclasses.replace(rec.mode, actual=self.modes.actual.value))
            return rec
        if self._record_error:
            why, self._record_error = self._record_error, ""
            self._audit("info", "journal_recovered", utc=c.utc, cycle=c.k, why=why)
        return rec

