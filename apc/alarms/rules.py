"""Which alarm causes a unit's cycle shows: pure functions of the cycle record and the unit's link,
heartbeat, journal and compute state, plus the few windows they need (solves, tap intervals).

A rule never reads a clock or does I/O: :meth:`UnitAlarmRules.evaluate` is called once per cycle
with what the cycle saw and returns every active cause with its message; the alarm book turns that
into one condition per cause (raised once, updated, cleared).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from apc.alarms.causes import CAUSES
from apc.cycle_record import CycleRecord
from apc.recipe.schema import AlarmsSection
from apc.types import SolverStatus

AE_DETECTED = "anode_effect_detected"
WARMING_UP = "warming up"
"""Prefix of an estimator's health while it warms up after a start: an expected state, never an alarm."""
AE_FORECAST_PROBABILITY = "ae_forecast_probability"
AE_FORECAST_LEAD_S = "ae_forecast_lead_s"


@dataclass(frozen=True)
class UnitSignals:
    """What the unit knows besides the record: link, DCS heartbeat, journal and compute state."""

    link_reason: str
    """Why the plant link is down ('' when up)."""
    heartbeat_reason: str
    """Why the DCS heartbeat is judged lost ('' when fine)."""
    journal_error: str
    """Why the flight record or the audit log cannot be written ('' when fine)."""
    compute_restarts: int
    """Times the unit's compute worker was restarted since the process started."""


@dataclass(frozen=True)
class ActiveCause:
    """One cause active this cycle: severity and the operator's message."""

    severity: int
    message: str


class AlarmRule(Protocol):
    """A unit kind's own alarm: the causes it finds active in this cycle (name → message)."""

    def evaluate(self, record: CycleRecord) -> Mapping[str, str]: ...


class UnitAlarmRules:
    """Every cause of one unit, evaluated per cycle (see the module docstring)."""

    def __init__(self, section: AlarmsSection, extra: Sequence[AlarmRule] = ()) -> None:
        self.section = section
        self._extra = tuple(extra)
        self._solves: deque[bool] = deque(maxlen=section.solver_failing_m)
        self._restarts = 0

    def evaluate(self, record: CycleRecord, signals: UnitSignals) -> dict[str, ActiveCause]:
        """Every cause active in this cycle (the disabled ones left out)."""
        found: dict[str, str] = {}
        for cause, message in self._generic(record, signals):
            found.setdefault(cause, message)
        for rule in self._extra:
            for cause, message in rule.evaluate(record).items():
                found.setdefault(cause, message)
        sev = self.section.severity
        return {c: ActiveCause(sev.get(c, CAUSES[c].severity), m) for c, m in found.items()
                if c not in self.section.disabled}

    def _generic(self, record: CycleRecord, signals: UnitSignals) -> Iterable[tuple[str, str]]:
        if signals.journal_error:
            yield "recorder_failed", signals.journal_error
        if signals.link_reason:
            yield "link_lost", signals.link_reason
        if signals.heartbeat_reason:
            yield "dcs_heartbeat_lost", signals.heartbeat_reason
        restarted = signals.compute_restarts > self._restarts
        self._restarts = signals.compute_restarts
        if restarted:
            yield "compute_restarted", f"compute worker restarted ({signals.compute_restarts} since start)"
        if record.shed_reason:
            yield "shed", f"shed: {record.shed_reason}"
        if record.batch is not None and record.batch.state == "held":
            yield "batch_held", f"batch held in segment {record.batch.segment} ({record.batch.kind})"
        health = record.estimate.health
        if health and health != "ok" and not health.startswith(WARMING_UP):  # warm-up is expected, no alarm
            yield "estimator_unhealthy", f"estimator: {health}"
        if record.plan is not None and record.plan.status != SolverStatus.NOT_RUN.value:
            # "held": the solve failed and the last valid plan is followed
            self._solves.append(record.plan.status == SolverStatus.OK.value)
            failed = sum(not ok for ok in self._solves)
            if failed >= self.section.solver_failing_n:
                why = f": {record.plan.reason}" if record.plan.reason else ""
                yield "solver_failing", (f"{failed} of the last {len(self._solves)} controller solves failed "
                                         f"(last: {record.plan.status}{why})")
        extras = record.estimate.extras
        if extras.get(AE_DETECTED, 0.0) >= 0.5:
            yield "anode_effect", "anode effect detected on the measured cell voltage"
        p = extras.get(AE_FORECAST_PROBABILITY, math.nan)
        lead = extras.get(AE_FORECAST_LEAD_S, math.nan)
        threshold = self.section.ae_forecast_probability
        if (p >= threshold) if threshold is not None else math.isfinite(lead):
            when = f", expected in about {max(lead, 0.0) / 60.0:.0f} min" if math.isfinite(lead) else ""
            yield "anode_effect_forecast", f"anode effect forecast (probability {p:.2f}{when})"
