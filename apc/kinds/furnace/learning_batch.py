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
from apc.recipe.curve_schema import BatchSection, CurveSection
from apc.recipe.learning_schema import LearningSection
from apc.recipe.loader import convert
from apc.state_file import read_json_object

__all__ = ["LearningBatch", "curve_from_plain"]

Transform = Callable[[CurveSection, BatchSection], tuple[CurveSection, BatchSection]]
"""What the controller kind makes of a curve (the PID baseline soaks on its measured signal)."""


def curve_from_plain(data: Mapping[str, Any], where: str) -> tuple[CurveSection, BatchSection]:
    """Curve and batch section from their plain (JSON) form, through the recipe converter."""
    node = yaml.compose(yaml.safe_dump({"curve": dict(data["curve"]), "batch": dict(data["section"])}),
                        Loader=yaml.SafeLoader)
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
                 t_s: float = 0.0) -> None:
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
            return self.batch._refuse(t_s, who, "start", why)
        result = self.batch.start(t_s, who, temp_degC, batch_id)
        if not result:
            return result
        self._curve_name, self._lot, self._terms = name, lot, terms
        self._prior = carried_prior(self.learning, last)
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
        proposal = propose_terms(self.learning, self._terms, kpis, self.batch.curve.pressure_limit_Pa)
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
