"""Deterministic periodic scheduling: cycle k starts at t0 + k·period.

An overrun (a cycle that ends after the next slot) is counted and the next
*future* slot is taken; missed slots are skipped, never caught up with a
burst of cycles (and so never with a burst of writes).
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from apc.protocols import Clock

CycleFn = Callable[[int, float], Awaitable[object]]
"""``cycle(k, scheduled_monotonic_s)``."""


@dataclass
class ScheduleStats:
    """Counters of one periodic task."""

    cycles: int = 0
    overruns: int = 0
    skipped_slots: int = 0
    errors: int = 0
    last_error: str = ""


async def run_periodic(
    cycle: CycleFn,
    clock: Clock,
    period_s: float,
    *,
    t0_s: float | None = None,
    max_cycles: int | None = None,
    end_s: float | None = None,
    stop: asyncio.Event | None = None,
    on_error: Callable[[int, BaseException], None] | None = None,
    stats: ScheduleStats | None = None,
) -> ScheduleStats:
    """Run ``cycle`` on its slots until ``max_cycles``, slot time ``end_s`` or ``stop``; ``stats``: the
    counters to update (a supervisor may watch them while it runs).

    An exception in one cycle is counted and reported to ``on_error``; the
    schedule goes on (a unit's failure never stops the loop that runs it).
    """
    stats = stats if stats is not None else ScheduleStats()
    t0 = clock.monotonic() if t0_s is None else t0_s
    k = 0
    while (max_cycles is None or stats.cycles < max_cycles) and not (stop is not None and stop.is_set()):
        slot = t0 + k * period_s
        if end_s is not None and slot >= end_s:
            break
        await clock.sleep_until(slot)
        if stop is not None and stop.is_set():
            break
        try:
            await cycle(k, slot)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # isolate the unit: count, report, continue
            stats.errors += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            if on_error is not None:
                on_error(k, exc)
        stats.cycles += 1
        now = clock.monotonic()
        next_k = k + 1
        if now > t0 + next_k * period_s:
            stats.overruns += 1
            due = math.floor((now - t0) / period_s) + 1
            stats.skipped_slots += due - next_k
            next_k = due
        k = next_k
    return stats


def stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGINT or SIGTERM in the running loop (where the platform and thread allow it);
    returns what removes those handlers again."""
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in sigs:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not on the main thread / platform
            pass

    def remove() -> None:
        for sig in sigs:
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass

    return remove
