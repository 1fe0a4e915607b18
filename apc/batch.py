"""The batch: runs a heating curve (:class:`~apc.recipe.curve_schema.CurveSection`) segment by segment.

States: IDLE → RUNNING (segment k) → COMPLETE; RUNNING ⇄ HELD (operator
hold, hold_until timeout, restart); RUNNING/HELD → ABORTED. Time is injected
(monotonic seconds), nothing sleeps, nothing is global; commands and
:meth:`Batch.update` are called from the one control thread.

Commands (:meth:`~Batch.start`, :meth:`~Batch.hold`, :meth:`~Batch.resume`,
:meth:`~Batch.abort`) return a :class:`CommandResult`; a refused command
changes nothing, says why, and is audited as ``batch_command_refused``;
an accepted one is audited as ``batch_command`` (who, what, old, new).

Semantics chosen here:

* Ramp/cool reference: starts from the measured controlled temperature at
  ``start`` and at ``resume``, else from the previous segment's reference
  (continuous); moves at the segment rate, never beyond the target; the
  segment ends when it reaches the target. Guaranteed ramp: with
  ``curve.ramp_lag_limit_degC`` set, the reference waits while the controlled
  temperature lags it by more than that (or is missing).
* Soak: the reference is the soak's reference temperature; the clock adds a
  cycle's time only when the soak signal is inside the band at both ends of
  the cycle and the batch is RUNNING (held time does not count); NaN or
  missing stops it. The soak ends after ``time_min + soak_extension_min``;
  with ``soak_confirm_signal`` set, also not before that signal has run its
  own clock (same rules, by ``soak_margin_sigmas``) for ``time_min``.
* hold_until: the reference stays; the timeout counts RUNNING time from the
  segment start (restarted by a resume); on timeout the batch goes HELD
  with the reason.
* melt: a power stage; there is no temperature reference (NaN: the charge
  sits on its melting plateau) and the preview carries the stage power
  instead. It ends on its condition and times out like a hold_until. A ramp
  or cool after it starts from the controlled temperature at its entry.
* HELD: the preview holds the controlled temperature at the moment of the
  hold (its reference if unknown; after a restore, the first known value;
  no heat until then). IDLE, COMPLETE and ABORTED request no heat
  (``hold_degC`` None): the DCS or the operator owns the furnace then. A curve
  that must keep the furnace hot after its last soak ends with a hold_until
  (e.g. until poured).
* Persistence: after every state or segment change, and once per
  ``persist_every_s`` of soak progress, the state is written atomically as
  JSON (temp file, fsync, ``os.replace``). A write failure is audited
  (``batch_state_write_failed``) and shown in :meth:`Batch.status`; control goes on.
* Restore: RUNNING or HELD in the file → HELD at the recorded segment with
  the recorded soak time, reason ``restored after restart``; an unreadable,
  corrupt or foreign (other curve) file raises :class:`BatchStateError` naming
  it; a missing file gives an IDLE batch. Only a batch that was RUNNING
  resumes by itself (``auto_resume_after_s``); an operator's hold stands.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from apc.curve_preview import BatchState, CurvePreview
from apc.recipe.curve_schema import CONDITION_KINDS, BatchSection, CurveSection, Segment
from apc.recipe.permissive import PermissiveExpr
from apc.state_file import read_json_object, write_json_atomic

__all__ = ["STATE_SCHEMA_VERSION", "Batch", "BatchStateError", "CommandResult"]

STATE_SCHEMA_VERSION = 1
"""Version of the batch state file layout."""

RESTORED_REASON = "restored after restart"

_INF = math.inf


class AuditLogger(Protocol):
    """What the batch needs of a structlog bound logger."""

    def info(self, event: str, **kw: Any) -> Any: ...

    def warning(self, event: str, **kw: Any) -> Any: ...

    def error(self, event: str, **kw: Any) -> Any: ...


class BatchStateError(Exception):
    """A batch state file cannot be used; ``path`` names it."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message} (the batch does not start afresh by itself: "
                         "fix the file, or remove it deliberately)")


@dataclass(frozen=True)
class CommandResult:
    """Outcome of a command; falsy when refused, ``reason`` says why."""

    accepted: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.accepted


def _finite(value: object) -> float | None:
    """``value`` as a finite float, else None (missing, NaN, ±inf, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _json_float(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


class Batch:
    """One batch on one furnace: the curve's state machine, soak clock, preview and state file."""

    def __init__(self, curve: CurveSection, section: BatchSection, state_path: Path | None,
                 audit: AuditLogger, *, persist_every_s: float = 60.0,
                 extra_state: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """``state_path`` None: nothing is persisted (offline simulation, tests). ``extra_state``:
        what the owner keeps in the state file besides the batch (under ``learning``; read back
        by :meth:`restore` into :attr:`restored_extra`)."""
        if not persist_every_s > 0:
            raise ValueError("persist_every_s must be > 0")
        self.state_path = state_path
        self.audit = audit
        self.persist_every_s = persist_every_s
        self.extra_state = extra_state
        self.restored_extra: Mapping[str, Any] | None = None
        """The ``learning`` entry of the restored state file (None: none, or not restored)."""
        self._use_curve(curve, section)
        self._state = BatchState.IDLE
        self._segment = -1
        self._batch_id: str | None = None
        self._ref = math.nan
        self._seg_start_ref = math.nan
        self._soak_done_s = 0.0
        self._soak_saved_s = 0.0
        self._confirm_done_s = 0.0
        self._confirm_in_band = False
        self._wait_s = 0.0
        self._in_band = False
        self._reasons: list[str] = []
        self._hold_degC: float | None = None
        self._ctrl: float | None = None
        self._t_last: float | None = None
        self._auto_resume_at: float | None = None
        self._note = ""
        self._persist_error: str | None = None

    def _use_curve(self, curve: CurveSection, section: BatchSection) -> None:
        self.curve = curve
        self.section = section
        self.soak_signal = section.soak_signal or curve.controlled
        self._conditions: dict[int, PermissiveExpr] = {
            k: s.condition_expr() for k, s in enumerate(curve.segments) if s.kind in CONDITION_KINDS}
        self._fingerprint = curve.fingerprint()
        self._upper = self._upper_by_segment()

    def use_curve(self, curve: CurveSection, section: BatchSection) -> str:
        """Run ``curve`` (and ``section``) from the next start on; refused ('' when done, else why)
        while a batch is RUNNING or HELD: a curve changes only between batches."""
        if self._state in (BatchState.RUNNING, BatchState.HELD):
            return f"batch {self._batch_id} is {self._state.value}: the curve changes only between batches"
        self._use_curve(curve, section)
        return ""

    # ------------------------------------------------------------ queries
    @property
    def state(self) -> BatchState:
        """Current state."""
        return self._state

    @property
    def segment(self) -> int:
        """Index of the segment in force (−1 before the first start)."""
        return self._segment

    @property
    def batch_id(self) -> str | None:
        """Id of the current (or last) batch."""
        return self._batch_id

    @property
    def soak_done_s(self) -> float:
        """Guaranteed-soak time counted in the segment in force."""
        return self._soak_done_s

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the batch is HELD or ABORTED (empty otherwise)."""
        return tuple(self._reasons)

    def soak_required_s(self, k: int | None = None) -> float:
        """Soak time segment ``k`` (default: in force) needs, extension included; 0 for other kinds."""
        k = self._segment if k is None else k
        if not 0 <= k < len(self.curve.segments) or self.curve.segments[k].kind != "soak":
            return 0.0
        return self.curve.segments[k].time_s + 60.0 * self.section.soak_extension_min

    def status(self) -> dict[str, Any]:
        """Plain-data view for the HMI."""
        seg = self._current()
        return {
            "state": self._state.value,
            "batch_id": self._batch_id,
            "segment": self._segment,
            "segments": len(self.curve.segments),
            "kind": "" if seg is None else seg.kind,
            "segment_text": "" if seg is None else seg.describe(),
            "reference_degC": _json_float(self._ref),
            "hold_degC": self._hold_degC,
            "soak_done_s": self._soak_done_s,
            "soak_required_s": self.soak_required_s(),
            "reasons": list(self._reasons),
            "note": self._note,
            "auto_resume_at_s": self._auto_resume_at,
            "persist_error": self._persist_error,
        }

    # ------------------------------------------------------------ commands
    def start(self, t_s: float, who: str, temp_degC: float | None, batch_id: str | None = None) -> CommandResult:
        """Start a new batch at segment 0 from the controlled temperature ``temp_degC``.

        Refused while a batch is RUNNING or HELD, or when ``temp_degC`` is unknown.
        """
        if self._state in (BatchState.RUNNING, BatchState.HELD):
            return self._refuse(t_s, who, "start", f"batch {self._batch_id} is {self._state.value}: abort it first")
        temp = _finite(temp_degC)
        if temp is None:
            return self._refuse(t_s, who, "start", f"the controlled temperature ({self.curve.controlled}) is unknown")
        old = self._state
        self._batch_id = batch_id or uuid.uuid4().hex[:12]
        self._state = BatchState.RUNNING
        self._reasons = []
        self._hold_degC = None
        self._auto_resume_at = None
        self._ctrl = temp
        self._ref = temp
        self._t_last = t_s
        self._enter(0, {self.curve.controlled: temp})
        self._accepted(t_s, who, "start", old, temp_degC=temp)
        return CommandResult(True)

    def hold(self, t_s: float, who: str, why: str) -> CommandResult:
        """Hold a RUNNING batch at the current controlled temperature."""
        if self._state is not BatchState.RUNNING:
            return self._refuse(t_s, who, "hold", f"only a running batch can be held; it is {self._state.value}")
        old = self._state
        self._go_held([f"held by {who}: {why}"])
        self._accepted(t_s, who, "hold", old, why=why)
        return CommandResult(True)

    def resume(self, t_s: float, who: str) -> CommandResult:
        """Resume a HELD batch where it was; a ramp or cool restarts from the controlled temperature.

        Refused for an aborted batch (start a new one), when not held, and
        for a ramp/cool while the controlled temperature is unknown.
        """
        blocker = self._resume_blocker()
        if blocker:
            return self._refuse(t_s, who, "resume", blocker)
        seg = self._current()
        assert seg is not None
        old = self._state
        if seg.kind in ("ramp", "cool"):
            assert self._ctrl is not None and seg.target_degC is not None
            clamp = min if seg.kind == "ramp" else max
            self._ref = clamp(self._ctrl, seg.target_degC)
        elif seg.kind in CONDITION_KINDS:
            self._wait_s = 0.0
        self._in_band = self._confirm_in_band = False
        self._state = BatchState.RUNNING
        self._reasons = []
        self._hold_degC = None
        self._auto_resume_at = None
        self._note = ""
        self._t_last = t_s if self._t_last is None else max(self._t_last, t_s)
        self._accepted(t_s, who, "resume", old)
        return CommandResult(True)

    def abort(self, t_s: float, who: str, why: str) -> CommandResult:
        """Abort a RUNNING or HELD batch for good (it cannot be resumed; no heat is requested)."""
        if self._state not in (BatchState.RUNNING, BatchState.HELD):
            return self._refuse(t_s, who, "abort", f"nothing to abort: the batch is {self._state.value}")
        old = self._state
        self._state = BatchState.ABORTED
        self._reasons = [f"aborted by {who}: {why}"]
        self._hold_degC = None
        self._auto_resume_at = None
        self._note = ""
        self._accepted(t_s, who, "abort", old, why=why)
        return CommandResult(True)

    # ------------------------------------------------------------ the cycle
    def update(self, t_s: float, values: Mapping[str, float]) -> CurvePreview:
        """Advance the curve to ``t_s`` with this cycle's signal values; the controller's preview."""
        self._ctrl = _finite(values.get(self.curve.controlled))
        dt = 0.0 if self._t_last is None else max(0.0, t_s - self._t_last)
        self._t_last = t_s
        if self._state is BatchState.HELD:
            if self._hold_degC is None and self._ctrl is not None:
                self._hold_degC = self._ctrl
            if self._auto_resume_at is not None and t_s >= self._auto_resume_at:
                blocker = self._resume_blocker()
                if blocker:
                    self._note = f"auto resume waits: {blocker}"
                else:
                    self.resume(t_s, "auto_resume")
        elif self._state is BatchState.RUNNING:
            self._advance(t_s, dt, values)
        return self.preview()

    def preview(self) -> CurvePreview:
        """The reference over the next ``preview_points`` points, looking ahead across segments."""
        n, step = self.section.preview_points, self.section.preview_step_s
        if self._state is not BatchState.RUNNING:
            kind = "" if self._state is not BatchState.HELD else self.curve.segments[self._segment].kind
            hold = self._hold_degC if self._state is BatchState.HELD else None
            return CurvePreview.holding(self._state, hold, n, step, self._segment, kind, self._soak_done_s)
        pieces = self._pieces((n - 1) * step)
        target, upper, lower, rate, power = [], [], [], [], []
        i_piece, t0 = 0, 0.0
        for i in range(n):
            tau = i * step
            while tau >= t0 + pieces[i_piece][0] and i_piece < len(pieces) - 1:
                t0 += pieces[i_piece][0]
                i_piece += 1
            dur, a, b, k = pieces[i_piece]
            frac = 0.0 if not math.isfinite(dur) or dur <= 0 else min(1.0, (tau - t0) / dur)
            target.append(a + (b - a) * frac)
            stage = self.curve.segments[k].power_kW if k < len(self.curve.segments) else None
            power.append(math.nan if stage is None else stage)
            if k >= len(self.curve.segments):
                upper.append(_INF)
                lower.append(-_INF)
                rate.append(_INF)
                continue
            seg = self.curve.segments[k]
            upper.append(self._upper[k])
            lower.append(seg.band_degC[0] if seg.band_degC is not None else -_INF)
            rate.append(seg.rate_degC_min if seg.rate_degC_min is not None else _INF)
        seg = self.curve.segments[self._segment]
        stages = tuple(power) if any(math.isfinite(v) for v in power) else ()
        return CurvePreview(self._state, self._segment, seg.kind, step, tuple(target), tuple(upper),
                            tuple(lower), tuple(rate), None, self._soak_done_s, stages)

    # ------------------------------------------------------------ persistence
    @classmethod
    def restore(cls, curve: CurveSection, section: BatchSection, state_path: Path, audit: AuditLogger,
                t_s: float, *, persist_every_s: float = 60.0,
                extra_state: Callable[[], Mapping[str, Any]] | None = None) -> Batch:
        """The batch recorded in ``state_path`` (IDLE if there is no file).

        RUNNING or HELD comes back HELD at the recorded segment with the recorded
        soak time; raises :class:`BatchStateError` for an unreadable, corrupt or
        foreign file.
        """
        batch = cls(curve, section, state_path, audit, persist_every_s=persist_every_s, extra_state=extra_state)
        if not state_path.exists():
            audit.info("batch_restore", t_s=t_s, path=str(state_path), found=False)
            return batch
        data = _read_state(state_path)
        extra = data.get("learning")
        batch.restored_extra = extra if isinstance(extra, dict) else None
        old = _field(state_path, data, "state", str)
        try:
            recorded = BatchState(old)
        except ValueError:
            raise BatchStateError(state_path, f"unknown state {old!r}") from None
        batch._batch_id = _field(state_path, data, "batch_id", str, optional=True)
        batch._reasons = list(_field(state_path, data, "reasons", list))
        if recorded not in (BatchState.RUNNING, BatchState.HELD):
            batch._state = recorded
            audit.info("batch_restore", t_s=t_s, path=str(state_path), found=True, old=old, new=old,
                       batch_id=batch._batch_id)
            return batch
        if data.get("curve_sha256") != batch._fingerprint:
            raise BatchStateError(state_path, "it was written for a different curve (was the recipe changed "
                                              "during the batch?)")
        k = _field(state_path, data, "segment", int)
        if not 0 <= k < len(curve.segments):
            raise BatchStateError(state_path, f"segment {k} does not exist in a curve of {len(curve.segments)}")
        if data.get("segment_kind") != curve.segments[k].kind:
            raise BatchStateError(state_path, f"segment {k} is recorded as {data.get('segment_kind')!r}, "
                                              f"the curve has {curve.segments[k].kind!r}")
        soak = _field(state_path, data, "soak_done_s", float)
        if soak < 0:
            raise BatchStateError(state_path, "soak_done_s is negative")
        ref = _field(state_path, data, "ref_degC", float, optional=True)
        start_ref = _field(state_path, data, "segment_start_ref_degC", float, optional=True)
        batch._segment = k
        batch._soak_done_s = batch._soak_saved_s = soak
        confirm = _field(state_path, data, "confirm_done_s", float, optional=True) if "confirm_done_s" in data else None
        batch._confirm_done_s = 0.0 if confirm is None else max(0.0, confirm)
        batch._wait_s = _field(state_path, data, "wait_s", float)
        batch._ref = math.nan if ref is None else ref
        batch._seg_start_ref = math.nan if start_ref is None else start_ref
        batch._state = BatchState.HELD
        batch._hold_degC = None
        batch._reasons = [*batch._reasons, RESTORED_REASON] if recorded is BatchState.HELD else [RESTORED_REASON]
        if recorded is BatchState.RUNNING and section.auto_resume_after_s is not None:
            batch._auto_resume_at = t_s + section.auto_resume_after_s
        audit.info("batch_restore", t_s=t_s, path=str(state_path), found=True, old=old, new="held",
                   batch_id=batch._batch_id, segment=k, soak_done_s=soak, auto_resume_at_s=batch._auto_resume_at)
        batch._persist()
        return batch

    def snapshot(self) -> dict[str, Any]:
        """What the state file holds."""
        seg = self._current()
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "curve_sha256": self._fingerprint,
            "batch_id": self._batch_id,
            "state": self._state.value,
            "segment": self._segment,
            "segment_kind": "" if seg is None else seg.kind,
            "segment_start_ref_degC": _json_float(self._seg_start_ref),
            "ref_degC": _json_float(self._ref),
            "soak_done_s": self._soak_done_s,
            "confirm_done_s": self._confirm_done_s,
            "wait_s": self._wait_s,
            "reasons": list(self._reasons),
            **({} if self.extra_state is None else {"learning": dict(self.extra_state())}),
        }

    def _persist(self) -> None:
        """Write the state file atomically (temp file in the same directory, fsync, replace)."""
        self._soak_saved_s = self._soak_done_s
        path = self.state_path
        if path is None:
            return
        try:
            write_json_atomic(path, self.snapshot())
        except OSError as exc:
            self._persist_error = f"{path}: {exc}"
            self.audit.error("batch_state_write_failed", path=str(path), error=str(exc), batch_id=self._batch_id)
        else:
            self._persist_error = None

    # ------------------------------------------------------------ internals
    def _current(self) -> Segment | None:
        if 0 <= self._segment < len(self.curve.segments):
            return self.curve.segments[self._segment]
        return None

    def _accepted(self, t_s: float, who: str, what: str, old: BatchState, **extra: Any) -> None:
        self.audit.info("batch_command", t_s=t_s, who=who, what=what, old=old.value, new=self._state.value,
                        batch_id=self._batch_id, segment=self._segment, **extra)
        self._persist()

    def _refuse(self, t_s: float, who: str, what: str, why: str) -> CommandResult:
        self.audit.warning("batch_command_refused", t_s=t_s, who=who, what=what, state=self._state.value,
                           why=why, batch_id=self._batch_id)
        return CommandResult(False, why)

    def _event(self, t_s: float, what: str, old: BatchState, **extra: Any) -> None:
        """An automatic transition (segment done, complete, timeout): audited, persisted."""
        self.audit.info("batch_event", t_s=t_s, who="batch", what=what, old=old.value, new=self._state.value,
                        batch_id=self._batch_id, segment=self._segment, **extra)
        self._persist()

    def _resume_blocker(self) -> str:
        if self._state is BatchState.ABORTED:
            return "an aborted batch cannot be resumed: start a new batch"
        if self._state is not BatchState.HELD:
            return f"only a held batch can be resumed; it is {self._state.value}"
        seg = self._current()
        if seg is not None and seg.kind in ("ramp", "cool") and self._ctrl is None:
            return (f"the controlled temperature ({self.curve.controlled}) is unknown: "
                    f"the {seg.kind} cannot restart from it")
        return ""

    def _go_held(self, reasons: list[str]) -> None:
        self._state = BatchState.HELD
        self._reasons = reasons
        self._hold_degC = self._ctrl if self._ctrl is not None else _finite(self._ref)
        self._auto_resume_at = None

    def _in_band_now(self, seg: Segment, values: Mapping[str, float],
                     signal: str | None = None) -> tuple[bool, float | None]:
        """Whether the soak signal (or ``signal``) is in the band, by ``soak_margin_sigmas`` of its
        estimated standard deviation (``<signal>_std``, 0 when not reported) inside either edge."""
        assert seg.band_degC is not None
        signal = signal or self.soak_signal
        v = _finite(values.get(signal))
        margin = self.section.soak_margin_sigmas * (_finite(values.get(f"{signal}_std")) or 0.0)
        return v is not None and seg.band_degC[0] + margin <= v <= seg.band_degC[1] - margin, v

    def _enter(self, k: int, values: Mapping[str, float]) -> None:
        seg = self.curve.segments[k]
        self._segment = k
        self._seg_start_ref = self._ref
        self._soak_done_s = 0.0
        self._confirm_done_s = 0.0
        self._wait_s = 0.0
        self._note = ""
        if seg.kind == "soak":
            self._ref = float(seg.reference_degC)  # type: ignore[arg-type]
            self._in_band = self._in_band_now(seg, values)[0]
            confirm = self.section.soak_confirm_signal
            self._confirm_in_band = confirm is not None and self._in_band_now(seg, values, confirm)[0]
        elif seg.kind == "melt":
            self._ref = math.nan

    def _advance(self, t_s: float, dt: float, values: Mapping[str, float]) -> None:
        """Run the segment in force over ``dt``; pass on through every segment that ends now."""
        for _ in range(len(self.curve.segments) + 1):
            seg = self.curve.segments[self._segment]
            done = False
            if seg.kind in ("ramp", "cool"):
                assert seg.rate_degC_min is not None and seg.target_degC is not None
                sign = 1.0 if seg.kind == "ramp" else -1.0
                if not math.isfinite(self._ref):  # after a melt: start from the controlled temperature
                    if self._ctrl is None:
                        self._note = f"reference waits: {self.curve.controlled} is missing"
                        return
                    self._ref = min(self._ctrl, seg.target_degC) if sign > 0 else max(self._ctrl, seg.target_degC)
                    self._seg_start_ref = self._ref
                limit = self.curve.ramp_lag_limit_degC
                lag = _INF if self._ctrl is None else sign * (self._ref - self._ctrl)
                if limit is not None and lag > limit:
                    self._note = (f"reference waits: {self.curve.controlled} is missing" if self._ctrl is None
                                  else f"reference waits: {self.curve.controlled} lags it by {lag:.1f} K")
                else:
                    self._note = ""
                    self._ref += sign * seg.rate_degC_min * dt / 60.0
                done = sign * (self._ref - seg.target_degC) >= 0.0
                if done:
                    self._ref = seg.target_degC
            elif seg.kind == "soak":
                in_band, v = self._in_band_now(seg, values)
                if in_band and self._in_band:
                    self._soak_done_s += dt
                self._in_band = in_band
                self._note = "" if in_band else (
                    f"soak clock stopped: {self.soak_signal} "
                    f"{'missing' if v is None else f'{v:.1f} °C'} outside the band")
                done = self._soak_done_s >= self.soak_required_s()
                confirm = self.section.soak_confirm_signal
                if confirm is not None:
                    c_in = self._in_band_now(seg, values, confirm)[0]
                    if c_in and self._confirm_in_band:
                        self._confirm_done_s += dt
                    self._confirm_in_band = c_in
                    if done and self._confirm_done_s < seg.time_s:
                        done = False
                        self._note = (f"soak waits: {confirm} has soaked {self._confirm_done_s / 60.0:.0f} of "
                                      f"{seg.time_s / 60.0:.0f} min inside the band")
                if not done and self._soak_done_s - self._soak_saved_s >= self.persist_every_s:
                    self._persist()
            else:
                expr = self._conditions[self._segment]
                self._wait_s += dt
                done = expr.evaluate(values)
                if not done:
                    why = expr.explain(values)
                    if self._wait_s >= seg.timeout_s:
                        old = self._state
                        self._go_held([(f"{seg.kind} timeout: '{seg.condition}' not met after "
                                        f"{seg.timeout_min:g} min ({why})")])
                        self._event(t_s, f"{seg.kind}_timeout", old, why=why)
                        return
                    self._note = f"waiting for '{seg.condition}': {why}"
            if not done:
                return
            self._next(t_s, values)
            if self._state is not BatchState.RUNNING:
                return
            dt = 0.0

    def _next(self, t_s: float, values: Mapping[str, float]) -> None:
        old = self._state
        k = self._segment + 1
        if k >= len(self.curve.segments):
            self._state = BatchState.COMPLETE
            self._note = ""
            self._event(t_s, "complete", old)
            return
        self._enter(k, values)
        self._event(t_s, "segment", old, kind=self.curve.segments[k].kind)

    def _upper_by_segment(self) -> tuple[float, ...]:
        """Per segment: the band top of the soak it is in or heads for (through ramps, hold_untils, melts)."""
        out = []
        segs = self.curve.segments
        for k in range(len(segs)):
            top = _INF
            for seg in segs[k:]:
                if seg.kind == "soak":
                    assert seg.band_degC is not None
                    top = seg.band_degC[1]
                    break
                if seg.kind == "cool":
                    break
            out.append(top)
        return tuple(out)

    def _pieces(self, horizon_s: float) -> list[tuple[float, float, float, int]]:
        """The nominal future from now as (duration_s, ref_from, ref_to, segment) pieces, last one endless."""
        pieces: list[tuple[float, float, float, int]] = []
        ref, covered = self._ref, 0.0
        for k in range(self._segment, len(self.curve.segments)):
            seg = self.curve.segments[k]
            if seg.kind in ("ramp", "cool"):
                assert seg.rate_degC_min is not None and seg.target_degC is not None
                dur = 60.0 * abs(seg.target_degC - ref) / seg.rate_degC_min
                pieces.append((dur, ref, seg.target_degC, k))
                ref = seg.target_degC
            elif seg.kind == "soak":
                ref = float(seg.reference_degC)  # type: ignore[arg-type]
                if k == self._segment:
                    # A soak under way is never looked past: its end depends on the soak clock (time in
                    # the band), and a controller shown the cooling beyond it would leave the band
                    # early, stopping the clock it waits for.
                    pieces.append((_INF, ref, ref, k))
                    return pieces
                dur = self.soak_required_s(k)
                pieces.append((dur, ref, ref, k))
            elif seg.kind == "melt":  # a power stage of unknown length: no temperature reference
                pieces.append((_INF, math.nan, math.nan, k))
                return pieces
            else:
                pieces.append((_INF, ref, ref, k))
                return pieces
            covered += dur
            if covered > horizon_s:
                return pieces
        pieces.append((_INF, ref, ref, len(self.curve.segments)))
        return pieces


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = read_json_object(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchStateError(path, f"cannot read the batch state file: {exc}") from None
    except ValueError as exc:
        raise BatchStateError(path, str(exc).replace("state file", "batch state file")) from None
    version = data.get("schema_version")
    if version != STATE_SCHEMA_VERSION:
        raise BatchStateError(path, f"batch state schema_version {version!r} is not {STATE_SCHEMA_VERSION}")
    return data


def _field(path: Path, data: dict[str, Any], key: str, tp: type, optional: bool = False) -> Any:
    """``data[key]`` checked against ``tp`` (ints accepted as floats; None only if ``optional``)."""
    if key not in data:
        raise BatchStateError(path, f"corrupt batch state file ('{key}' is missing)")
    value = data[key]
    if value is None and optional:
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, tp) or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise BatchStateError(path, f"corrupt batch state file ('{key}' is {value!r})")
    if isinstance(value, list) and not all(isinstance(r, str) for r in value):
        raise BatchStateError(path, f"corrupt batch state file ('{key}' must list strings)")
    return value
