"""Requested vs actual controller mode of one unit, with latched sheds.

The operator (through the HMI) *requests* a mode; the runtime *decides* the
actual one every cycle from the conditions it sees. A shed drops the unit to
STANDBY with a reason that stays latched until the mode is requested again.
"""

from __future__ import annotations

from dataclasses import dataclass

from apc.types import Mode


@dataclass(frozen=True)
class ModeConditions:
    """What the unit saw this cycle, as far as modes are concerned."""

    t_s: float
    healthy: bool
    """Required inputs valid and estimator healthy."""
    health_reason: str
    link_ok: bool
    """Plant connection up and DCS heartbeat alive."""
    link_reason: str
    failure: str
    """Non-empty when this cycle must hold (bad inputs, permissive, solver, readback)."""
    immediate_shed: str
    """Non-empty when the unit must shed at once (the DCS took a loop away)."""
    fault: str = ""
    """Non-empty while the unit may not drive the plant at all (its audit log or flight record
    cannot be written): ON sheds at once, any other mode stays at most STANDBY."""


@dataclass(frozen=True)
class ModeDecision:
    """Outcome of one cycle's mode decision."""

    requested: Mode
    actual: Mode
    previous: Mode
    shed_reason: str
    """Latched shed reason ('' when none)."""
    hold_reason: str
    """Why ON writes are held this cycle ('' when writing)."""
    new_shed: bool


class ModeManager:
    """Decides the actual mode; see module docstring."""

    def __init__(self, warmup_s: float, shed_after_bad_cycles: int) -> None:
        self.warmup_s = warmup_s
        self.shed_after = shed_after_bad_cycles
        self.requested = Mode.OFF
        self.actual = Mode.OFF
        self.shed_reason = ""
        self._healthy_since: float | None = None
        self._bad_cycles = 0
        self._cycle_failed = False

    def request(self, mode: Mode) -> None:
        """An operator request: clears a latched shed."""
        self.requested = mode
        self.shed_reason = ""
        self._bad_cycles = 0

    def start(self, mode: Mode) -> None:
        """The mode a process start asks for: unlike an operator's request, a latched shed (restored
        from before the restart) stays latched."""
        self.requested = mode

    def count_failure(self, reason: str) -> str:
        """A failure found after this cycle's decision (a plan that came too late): counted as the
        cycle's failure; the shed reason when the count reaches ``shed_after`` ('' otherwise)."""
        if not self._cycle_failed:
            self._bad_cycles += 1
            self._cycle_failed = True
        return f"{reason} for {self._bad_cycles} cycles" if self._bad_cycles >= self.shed_after else ""

    def latch(self, reason: str, previous: Mode) -> ModeDecision:
        """Latch a shed with ``reason`` now, whatever the conditions (a fault in the cycle): STANDBY,
        or OFF when OFF is requested. ``previous`` is the mode the cycle started in. The warm-up starts
        again: cycles that faulted may not have fed the estimator."""
        self.shed_reason = reason
        self._healthy_since = None
        self.actual = Mode.OFF if self.requested is Mode.OFF else Mode.STANDBY
        new_shed = previous is Mode.ON
        return ModeDecision(self.requested, self.actual, previous, reason, reason, new_shed)

    def warm_remaining_s(self, t_s: float) -> float:
        """Seconds of healthy operation still needed before ON is granted."""
        if self._healthy_since is None:
            return self.warmup_s
        return max(0.0, self.warmup_s - (t_s - self._healthy_since))

    def decide(self, c: ModeConditions) -> ModeDecision:
        """Decide this cycle's actual mode."""
        previous = self.actual
        if c.healthy and c.link_ok:
            if self._healthy_since is None:
                self._healthy_since = c.t_s
        else:
            self._healthy_since = None
        self._bad_cycles = self._bad_cycles + 1 if c.failure else 0
        self._cycle_failed = bool(c.failure)
        new_shed = False
        hold = ""
        if self.requested is Mode.OFF:
            actual = Mode.OFF
        elif self.requested is Mode.STANDBY or self.shed_reason:
            actual = Mode.STANDBY
        elif previous is Mode.ON:
            # The first cause names the shed: a lost link also takes the loops out of remote.
            shed = (not c.link_ok and c.link_reason) or c.fault or c.immediate_shed
            if not shed and self._bad_cycles >= self.shed_after:
                shed = f"{c.failure} for {self._bad_cycles} cycles"
            if shed:
                self.shed_reason = shed
                new_shed = True
                actual = Mode.STANDBY
            else:
                actual = Mode.ON
                hold = c.failure
        elif not c.link_ok or c.fault:
            actual = Mode.STANDBY
            hold = c.link_reason if not c.link_ok else c.fault
        elif self.warm_remaining_s(c.t_s) > 0 or c.failure:
            actual = Mode.STANDBY
            hold = c.failure or f"warming up: {self.warm_remaining_s(c.t_s):.0f} s left"
        else:
            actual = Mode.ON
        self.actual = actual
        return ModeDecision(self.requested, actual, previous, self.shed_reason, hold, new_shed)
