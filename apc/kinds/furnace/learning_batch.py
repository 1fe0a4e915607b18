"""A furnace batch that learns from the batches before it (see ``docs/batch_learning.md``).

:class:`LearningBatch` wraps :class:`apc.batch.Batch` (which it delegates the curve to) and adds:
the batch history (:class:`apc.batch_history.BatchHistory`, one row per finished batch), the
filter's starting parameters carried from the last batch (:meth:`estimator_prior`, handed to the
estimator by the unit), run-to-run adjustment of the curve's adjustable terms, per-batch curves
(:meth:`use_curve`, a production plan) and the batch's lot. The learned start (prior, terms, curve,
lot, outcome so far) is kept in the batch state file, so a restart comes back HELD with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from apc.batch import AuditLogger, Batch, BatchStateError, CommandResult
from apc.batch_history import BatchHistory, BatchRecord
from apc.batch_learning import (
    OutcomeConfig,
    OutcomeTracker,
    apply_terms,
    carried_prior,
    propose_terms,
    terms_in_force,
)
from apc.curve_preview import BatchState, CurvePreview
from apc.recipe.curve_file import PlanEntry
from apc.recipe.curve_schema import BatchSection, CurveSection
from apc.recipe.errors import RecipeError
from apc.recipe.learning_schema import LearningSection
from apc.recipe.loader import convert
from apc.state_file import read_json_object

__all__ = ["LearningBatch", "curve_from_plain"]

CurveLoader = Callable[[str], tuple[str, CurveSection]]
"""``load(name_or_file)``: a validated per-batch curve (raises RecipeError naming file and line)."""
PlanLoader = Callable[[str], list[tuple[PlanEntry, tuple[str, CurveSection] | None]]]
"""``load(file)``: a validated production plan."""
Transform = Callable[[CurveSection, BatchSection], tuple[CurveSection, BatchSection]]
"""What the controller kind makes of a curve (the PID baseline soaks on its measured signal)."""


def curve_from_plain(data: Mapping[str, Any], where: str) -> tuple[CurveSection, BatchSection]:
    """Curve and batch section from their plain (JSON) form, through the recipe converter."""
    node = yaml.compose(yaml.safe_dump({"curve": dict(data["curve"]), "batch": dict(data["section"])}),
                        Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(f"{where}: no curve")
    curve_node = next(v for k, v in node.value if k.value == "curve")
    batch_node = next(v for k, v in node.value if k.value == "batch")
    return (convert(CurveSection, curve_node, "curve", file=where),
            convert(BatchSection, batch_node, "batch", file=where))


class LearningBatch:
    """One furnace's batch with its history; see the module docstring."""

    def __init__(self, curve: CurveSection, section: BatchSection, learning: LearningSection,
                 state_path: Path | None, history: BatchHistory | None, audit: AuditLogger, *,
                 furnace: str, controller: str, outcome: OutcomeConfig, biases: tuple[str, ...],
                 transform: Transform, curve_name: str = "recipe", utc: Callable[[], float] = lambda: 0.0,
                 t_s: float = 0.0, curves: CurveLoader | None = None, plans: PlanLoader | None = None) -> None:
        """``curve``/``section``: the recipe's, as written (``transform`` makes them the controller
        kind's); restored from ``state_path`` when it exists."""
        self.learning = learning
        self.history = history
        self.audit = audit
        self.furnace = furnace
        self.controller = controller
        self.outcome = outcome
        self.biases = biases
        self.transform = transform
        self.utc = utc
        self._default = (curve_name, curve, section)
        self._curves = curves
        self._plans = plans
        self._plan: list[tuple[PlanEntry, tuple[str, CurveSection] | None]] = []
        self._next: tuple[str, CurveSection, BatchSection] | None = None
        self._curve_name = curve_name
        self._lot = ""
        self._prior: dict[str, tuple[float, float]] = {}
        self._terms: dict[str, float] = {}
        self._learned = False
        self._tracker = OutcomeTracker(outcome)
        self._started_s = 0.0
        self._last_params: dict[str, tuple[float, float]] = {}
        self._last_record: BatchRecord | None = None if history is None else history.last()
        run_curve, run_section = transform(curve, section)
        if state_path is not None and state_path.exists():
            self.batch = self._restore(state_path, run_curve, run_section, t_s)
        else:
            self.batch = Batch(run_curve, run_section, state_path, audit, extra_state=self._extra)

    # ------------------------------------------------------------ BatchRunner
    @property
    def curve(self) -> CurveSection:
        """The curve in force."""
        return self.batch.curve

    def update(self, t_s: float, values: Mapping[str, float]) -> CurvePreview:
        """Advance the batch; accumulate its outcome; store it in the history when it ends."""
        before = self.batch.state
        preview = self.batch.update(t_s, values)
        after = self.batch.state
        if before in (BatchState.RUNNING, BatchState.HELD):
            status = self._plain_status()
            self._tracker.add(t_s, values, status, ramp_segment=self._ramp_segment())
            params = {b: (float(values[b]), float(values.get(f"{b}_std", math.nan)))
                      for b in self.biases if b in values and math.isfinite(float(values[b]))}
            if params:
                self._last_params = params
            if after in (BatchState.COMPLETE, BatchState.ABORTED):
                self._finish(t_s, after)
        return preview

    def preview(self) -> CurvePreview:
        """The batch's preview."""
        return self.batch.preview()

    @property
    def state(self) -> BatchState:
        """The batch's state."""
        return self.batch.state

    @property
    def segment(self) -> int:
        """The segment in force."""
        return self.batch.segment

    @property
    def batch_id(self) -> str | None:
        """Id of the current (or last) batch."""
        return self.batch.batch_id

    @property
    def soak_done_s(self) -> float:
        """Soak time counted in the segment in force."""
        return self.batch.soak_done_s

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the batch is HELD or ABORTED."""
        return self.batch.reasons

    @property
    def section(self) -> BatchSection:
        """The batch section in force."""
        return self.batch.section

    def snapshot(self) -> dict[str, Any]:
        """What the state file holds (the batch's, with the learned start)."""
        return self.batch.snapshot()

    def status(self) -> dict[str, Any]:
        """The batch's status plus its lot, curve and learning (for the HMI)."""
        out = self.batch.status()
        last = self._last_record
        out.update({
            "lot": self._lot,
            "curve_name": self._curve_name,
            "curve_sha256": self.batch.curve.fingerprint(),
            "learning": {
                "enabled": self.learning.enabled,
                "apply": self.learning.apply,
                "learned": self._learned,
                "prior": {k: list(v) for k, v in self._prior.items()},
                "terms": dict(self._terms),
                "last_batch_id": None if last is None else last.batch_id,
                "last_lot": None if last is None else last.lot,
                "last_parameters": {} if last is None else {k: list(v) for k, v in last.parameters.items()},
                "proposal": {} if last is None else dict(last.proposal),
                "last_kpis": {} if last is None else dict(last.kpis),
            },
        })
        return out

    def start(self, t_s: float, who: str, temp_degC: float | None, batch_id: str | None = None, *,
              lot: str = "") -> CommandResult:
        """Start the next batch: the queued curve (else the recipe's), the learned start, ``lot``."""
        name, curve, section = self._next or self._default
        last = self._last_record = None if self.history is None else self.history.last()
        run_curve, run_section = self.transform(curve, section)
        terms = terms_in_force(self.learning, run_curve, run_section)
        proposal = dict(last.proposal) if last is not None and last.curve_name == name else {}
        applied = bool(self.learning.enabled and self.learning.apply == "auto" and proposal)
        if applied:
            terms.update({k: v for k, v in proposal.items() if k in terms})
            try:
                run_curve, run_section = apply_terms(run_curve, run_section, terms, self.learning)
            except ValueError as exc:
                self.audit.warning("batch_learning_refused", t_s=t_s, why=str(exc), proposal=proposal)
                applied = False
                terms = terms_in_force(self.learning, run_curve, run_section)
        why = self.batch.use_curve(run_curve, run_section)
        if why:
            return self._refused(t_s, who, "start", why)
        result = self.batch.start(t_s, who, temp_degC, batch_id)
        if not result:
            return result
        self._curve_name, self._lot, self._terms = name, lot, terms
        self._prior = carried_prior(self.learning, last, lot)
        self._learned = bool(self._prior) or applied
        self._tracker = OutcomeTracker(dataclasses.replace(self.outcome, controlled=run_curve.controlled))
        self._started_s = t_s
        self._next = None
        self.audit.info("batch_learning_start", t_s=t_s, who=who, batch_id=self.batch.batch_id, lot=lot,
                        curve=name, curve_sha256=run_curve.fingerprint(), terms=terms,
                        proposal_applied=applied, proposal=proposal,
                        prior={k: [v, s] for k, (v, s) in self._prior.items()},
                        learned_from=None if last is None else last.batch_id)
        self.batch._persist()
        return result

    def hold(self, t_s: float, who: str, why: str) -> CommandResult:
        """Hold the running batch."""
        return self.batch.hold(t_s, who, why)

    def resume(self, t_s: float, who: str) -> CommandResult:
        """Resume the held batch."""
        return self.batch.resume(t_s, who)

    def abort(self, t_s: float, who: str, why: str) -> CommandResult:
        """Abort the batch (it is stored in the history as aborted)."""
        before = self.batch.state
        result = self.batch.abort(t_s, who, why)
        if result and before in (BatchState.RUNNING, BatchState.HELD):
            self._finish(t_s, BatchState.ABORTED)
        return result

    def command(self, t_s: float, who: str, text: str, temp_degC: float | None) -> CommandResult:
        """A batch command with words (HMI ``Batch/Command``, audited by what it does):

        ``start [id=BATCH] [lot=LOT] [curve=NAME|FILE]`` (no words: the next batch of the loaded plan,
        else the queued or recipe curve), ``curve NAME|FILE`` (queue a curve for the next batch),
        ``plan FILE`` (load a production plan), ``reset_learning WHY`` (forget what was learned)."""
        words = text.split()
        verb, rest = (words[0], words[1:]) if words else ("", [])
        if verb == "start":
            opts = dict(w.split("=", 1) for w in rest if "=" in w)
            bad = [w for w in rest if "=" not in w or w.split("=", 1)[0] not in ("id", "lot", "curve")]
            if bad:
                return self._refused(t_s, who, "start", f"unknown start option(s) {bad} (id=, lot=, curve=)")
            batch_id, lot = opts.get("id"), opts.get("lot", "")
            if "curve" in opts:
                why = self._queue_curve(opts["curve"])
                if why:
                    return self._refused(t_s, who, "start", why)
            elif not rest and self._plan:
                entry, curve = self._plan[0]
                if curve is not None:
                    self._next = (curve[0], curve[1], self._default[2])
                batch_id, lot = entry.batch_id, entry.lot
            result = self.start(t_s, who, temp_degC, batch_id, lot=lot)
            if result and self._plan and self._plan[0][0].batch_id == self.batch.batch_id:
                self._plan.pop(0)
            return result
        if verb == "curve" and len(rest) == 1:
            why = self._queue_curve(rest[0])
            if not why:
                self.audit.info("batch_curve_queued", t_s=t_s, who=who, curve=self._next[0] if self._next else "")
            return self._refused(t_s, who, "curve", why) if why else CommandResult(True)
        if verb == "plan" and len(rest) == 1:
            if self._plans is None:
                return self._refused(t_s, who, "plan", "this batch cannot load production plans")
            try:
                self._plan = list(self._plans(rest[0]))
            except (RecipeError, ValueError) as exc:
                return self._refused(t_s, who, "plan", str(exc) or f"plan {rest[0]!r} is refused")
            self.audit.info("batch_plan_loaded", t_s=t_s, who=who, plan=rest[0],
                            batches=[e.batch_id for e, _ in self._plan])
            return CommandResult(True)
        if verb == "reset_learning":
            why = self.reset_learning(t_s, who, " ".join(rest))
            return self._refused(t_s, who, "reset_learning", why) if why else CommandResult(True)
        return self._refused(t_s, who, verb or "?", f"unknown batch command {text!r} (start, hold, resume, abort, "
                             "curve NAME, plan FILE, reset_learning WHY)")

    def _refused(self, t_s: float, who: str, what: str, why: str) -> CommandResult:
        self.audit.warning("batch_command_refused", t_s=t_s, who=who, what=what, state=self.batch.state.value,
                           why=why, batch_id=self.batch.batch_id)
        return CommandResult(False, why)

    def _queue_curve(self, name: str) -> str:
        if self._curves is None:
            return "this batch cannot load curves"
        try:
            curve_name, curve = self._curves(name)
        except (RecipeError, ValueError) as exc:
            return str(exc) or f"curve {name!r} is refused"
        return self.use_curve(curve_name, curve)

    # ------------------------------------------------------------ learning
    def estimator_prior(self) -> tuple[str, dict[str, tuple[float, float]]]:
        """(batch id, starting parameters) while a learned batch runs or is held; else ('', {})."""
        if self.batch.state not in (BatchState.RUNNING, BatchState.HELD) or not self._prior:
            return "", {}
        return str(self.batch.batch_id), dict(self._prior)

    def use_curve(self, name: str, curve: CurveSection, section: BatchSection | None = None) -> str:
        """Run ``curve`` (already validated) in the next batch; '' when queued, else why not."""
        if self.batch.state in (BatchState.RUNNING, BatchState.HELD):
            return f"batch {self.batch.batch_id} is {self.batch.state.value}: the curve changes only between batches"
        self._next = (name, curve, section or self._default[2])
        return ""

    def reset_learning(self, t_s: float, who: str, why: str) -> str:
        """Forget what was learned (after maintenance): '' when done, else why not. Audited."""
        if self.history is None:
            return "this batch keeps no history"
        if not why.strip():
            return "a learning reset needs a reason"
        reset = self.history.reset(who, why, self.utc())
        self._last_record = None
        self.audit.info("batch_learning_reset", t_s=t_s, who=who, why=why, after_batch_seq=reset.after_batch_seq)
        return ""

    # ------------------------------------------------------------ internals
    def _ramp_segment(self) -> int | None:
        term = self.learning.adjust.get("ramp_rate_degC_min")
        return None if term is None else term.segment

    def _plain_status(self) -> dict[str, Any]:
        out = self.batch.status()
        k = self.batch.segment
        segs = self.batch.curve.segments
        out["band_degC"] = segs[k].band_degC if 0 <= k < len(segs) else None
        return out

    def _finish(self, t_s: float, final: BatchState) -> None:
        complete = final is BatchState.COMPLETE
        kpis = self._tracker.kpis(complete)
        melt_timeout = next((s.timeout_min for s in self.batch.curve.segments if s.kind == "melt"), None)
        proposal = propose_terms(self.learning, self._terms, kpis, self.batch.curve.pressure_limit_Pa, melt_timeout)
        record = BatchRecord(
            batch_id=str(self.batch.batch_id), lot=self._lot, furnace=self.furnace, final_state=final.value,
            started_s=self._started_s, ended_s=t_s, ended_utc=self.utc(), curve_name=self._curve_name,
            curve_sha256=self.batch.curve.fingerprint(), controller=self.controller, learned=self._learned,
            parameters=dict(self._last_params), kpis=kpis, terms=dict(self._terms), proposal=proposal)
        if self.history is not None:
            try:
                record = dataclasses.replace(record, seq=self.history.add(record))
            except Exception as exc:  # a full disk must not stop the unit; it is audited
                self.audit.error("batch_history_write_failed", batch_id=record.batch_id, error=str(exc))
        self._last_record = record
        self.audit.info("batch_learning_outcome", t_s=t_s, batch_id=record.batch_id, lot=record.lot,
                        final=final.value, kpis=kpis, parameters={k: list(v) for k, v in self._last_params.items()},
                        proposal=proposal, apply=self.learning.apply)

    def _extra(self) -> dict[str, Any]:
        batch = getattr(self, "batch", None)  # None while Batch.restore writes the restored state
        curve, section = (batch.curve, batch.section) if batch is not None else self._restoring
        return {"curve_name": self._curve_name, "curve": dataclasses.asdict(curve),
                "section": dataclasses.asdict(section), "lot": self._lot,
                "prior": {k: [v, s] for k, (v, s) in self._prior.items()}, "terms": dict(self._terms),
                "learned": self._learned, "tracker": self._tracker.to_mapping()}

    def _restore(self, path: Path, curve: CurveSection, section: BatchSection, t_s: float) -> Batch:
        try:
            raw = read_json_object(path)
        except (OSError, ValueError) as exc:
            raise BatchStateError(path, f"cannot read the batch state file: {exc}") from None
        extra = raw.get("learning")
        if isinstance(extra, dict) and "curve" in extra and "section" in extra:
            try:
                curve, section = curve_from_plain(extra, str(path))
            except Exception as exc:
                raise BatchStateError(path, f"its learning entry holds no valid curve: {exc}") from None
        self._restoring = (curve, section)
        got = extra if isinstance(extra, dict) else {}
        self._curve_name = str(got.get("curve_name", self._curve_name))
        batch = Batch.restore(curve, section, path, self.audit, t_s, extra_state=self._extra)
        if batch.state in (BatchState.RUNNING, BatchState.HELD) and got:
            self._lot = str(got.get("lot", ""))
            self._prior = {k: (float(v[0]), float(v[1])) for k, v in dict(got.get("prior") or {}).items()}
            self._terms = {k: float(v) for k, v in dict(got.get("terms") or {}).items()}
            self._learned = bool(got.get("learned"))
            self._tracker = OutcomeTracker.from_mapping(
                dataclasses.replace(self.outcome, controlled=curve.controlled), dict(got.get("tracker") or {}))
            self._started_s = t_s - self._tracker.elapsed_s
            self.audit.info("batch_learning_restored", t_s=t_s, batch_id=batch.batch_id, lot=self._lot,
                            prior={k: [v, s] for k, (v, s) in self._prior.items()}, terms=self._terms)
        return batch
