"""Capped exponential back-off of reconnect attempts, on a caller-supplied monotonic time."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from plant_io.errors import PlantIOError


class ReconnectBackoff:
    """When the next reconnect attempt is due, and the delay a failed one adds (doubling, capped)."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s, self.max_s = float(min_s), float(max_s)
        self.delay_s = self.min_s
        """Delay added after the next failed attempt."""
        self.next_attempt_s = -math.inf
        """Monotonic time from which an attempt is due."""

    def due(self, now_s: float) -> bool:
        """True when an attempt may be made at ``now_s``."""
        return now_s >= self.next_attempt_s

    def connected(self) -> None:
        """An attempt succeeded: the next loss may retry at once, from the shortest delay."""
        self.delay_s, self.next_attempt_s = self.min_s, -math.inf

    def lost(self, now_s: float) -> None:
        """The link dropped at ``now_s``: retry from then, from the shortest delay."""
        self.delay_s, self.next_attempt_s = self.min_s, now_s

    def failed(self, now_s: float) -> float:
        """An attempt at ``now_s`` failed: the next is due one delay later; returns that delay."""
        used = self.delay_s
        self.next_attempt_s = now_s + used
        self.delay_s = min(used * 2.0, self.max_s)
        return used

    async def attempt(self, now_s: float, connect: Callable[[], Awaitable[None]], log: Any) -> bool:
        """Call ``connect`` if an attempt is due at ``now_s``; True when it succeeded. A
        :class:`PlantIOError` counts as a failed attempt, logged as ``plant_reconnect_failed`` with the
        delay until the next one; anything else propagates."""
        if not self.due(now_s):
            return False
        try:
            await connect()
        except PlantIOError as exc:
            log.warning("plant_reconnect_failed", error=str(exc), retry_in_s=self.failed(now_s))
            return False
        return True
