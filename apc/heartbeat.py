"""Heartbeats in both directions: the APC's counter to the DCS, and the watch on the DCS's counter.

The APC counter changes every cycle and wraps inside the data type of the tag it is bound to
(an int16 register passes 32767 after 45.5 h at a 5 s period: a counter that does not wrap is
refused by the client, the DCS sees it freeze and sheds every loop). After ``max_value`` it goes
back to 0; the DCS sees a change, as it does on every cycle.
"""

from __future__ import annotations

from apc.types import Sample

DEFAULT_COUNTER_MAX = 2**15 - 1
"""Wrap of a counter whose tag type the plant I/O does not report (the in-process simulator):
the smallest common counter type, int16."""


class HeartbeatCounter:
    """The APC heartbeat: 1, 2, …, ``max_value``, 0, 1, … (a Boolean tag: ``max_value`` 1 toggles)."""

    def __init__(self, max_value: int = DEFAULT_COUNTER_MAX, value: int = 0) -> None:
        if isinstance(max_value, bool) or not isinstance(max_value, int) or max_value < 1:
            raise ValueError(f"a heartbeat counter needs max_value >= 1, got {max_value!r}")
        if not 0 <= value <= max_value:
            raise ValueError(f"heartbeat value {value} outside [0, {max_value}]")
        self.max_value = max_value
        self.value = value

    def next(self) -> float:
        """Advance once and return the value to write."""
        self.value = self.value + 1 if self.value < self.max_value else 0
        return float(self.value)


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
