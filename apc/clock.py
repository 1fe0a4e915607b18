"""Clocks: real (wall + monotonic) and virtual (deterministic, for simulation)."""

from __future__ import annotations

import asyncio
import time


class RealClock:
    """Real time; ``speed`` > 1 runs the monotonic scale faster (accelerated simulation)."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self._speed = speed
        self._mono0 = time.monotonic()
        self._utc0 = time.time()

    @property
    def speed(self) -> float:
        """The real-time multiple in force."""
        return self._speed

    def set_speed(self, speed: float) -> None:
        """Run at ``speed`` from now on; the scaled time line goes on from where it is (no jump)."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        now = self.monotonic()
        self._speed = speed
        self._mono0 = time.monotonic() - now / speed

    def monotonic(self) -> float:
        """Scaled seconds since the clock was made."""
        return (time.monotonic() - self._mono0) * self._speed

    def utc(self) -> float:
        """UTC POSIX seconds on the same scaled time line."""
        return self._utc0 + self.monotonic()

    async def sleep_until(self, monotonic_s: float) -> None:
        """Sleep until the scaled monotonic time reaches ``monotonic_s``."""
        delay = (monotonic_s - self.monotonic()) / self._speed
        if delay > 0:
            await asyncio.sleep(delay)


class VirtualClock:
    """Deterministic clock advanced only by :meth:`sleep_until` or :meth:`set`."""

    def __init__(self, utc0: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._t = 0.0
        self._utc0 = utc0

    def monotonic(self) -> float:
        """Virtual seconds since start."""
        return self._t

    def utc(self) -> float:
        """UTC POSIX seconds: fixed origin plus virtual time."""
        return self._utc0 + self._t

    def set(self, monotonic_s: float) -> None:
        """Jump to ``monotonic_s`` (never backwards)."""
        if monotonic_s < self._t:
            raise ValueError("virtual time cannot go backwards")
        self._t = monotonic_s

    async def sleep_until(self, monotonic_s: float) -> None:
        """Advance virtual time at once."""
        if monotonic_s > self._t:
            self._t = monotonic_s
