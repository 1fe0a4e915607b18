"""Periodic scheduling on slots t0 + k·period (apc.scheduler) with a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from apc.clock import RealClock, VirtualClock
from apc.scheduler import ScheduleStats, run_periodic

PERIOD = 5.0


def run(cycle_body: Callable[[VirtualClock, int, float], None], clock: VirtualClock | None = None,
        **kwargs: object) -> tuple[ScheduleStats, list[tuple[int, float, float, float]], VirtualClock]:
    """Run the scheduler; returns stats and (k, slot, start, end) of every cycle."""
    clock = clock or VirtualClock()
    log: list[tuple[int, float, float, float]] = []

    async def cycle(k: int, slot: float) -> None:
        start = clock.monotonic()
        try:
            cycle_body(clock, k, slot)
        finally:
            log.append((k, slot, start, clock.monotonic()))

    stats = asyncio.run(run_periodic(cycle, clock, PERIOD, **kwargs))  # type: ignore[arg-type]
    return stats, log, clock


def test_cycles_start_exactly_on_their_slots() -> None:
    """Without overruns cycle k starts at t0 + k·period, with no overrun or skip counted."""
    clock = VirtualClock()
    clock.set(12.5)
    stats, log, _ = run(lambda c, k, s: c.set(s + 1.0), clock, max_cycles=50)
    assert [k for k, *_ in log] == list(range(50))
    assert all(slot == 12.5 + k * PERIOD and start == slot for k, slot, start, _ in log)
    assert (stats.cycles, stats.overruns, stats.skipped_slots, stats.errors) == (50, 0, 0, 0)


def test_explicit_t0_and_end_time() -> None:
    """With t0_s the slots start there; no slot at or after end_s is run."""
    stats, log, _ = run(lambda c, k, s: None, t0_s=100.0, end_s=150.0)
    assert [slot for _, slot, _, _ in log] == [100.0 + 5.0 * i for i in range(10)]
    assert stats.cycles == 10


def test_overrun_skips_to_a_future_slot_without_burst() -> None:
    """A cycle ending after its next slot is counted as an overrun; missed slots are skipped, the next cycle takes a future slot."""
    long_cycles = {3: 12.0, 7: 5.5, 11: 31.0}  # k -> duration in s

    def body(clock: VirtualClock, k: int, slot: float) -> None:
        clock.set(slot + long_cycles.get(k, 1.0))

    stats, log, _ = run(body, max_cycles=20)
    ks = [k for k, *_ in log]
    # k=3 ends at 27 -> slots 4, 5 skipped, next is k=6 (30); k=7 ends at 40.5 -> k=8 (40) skipped;
    # k=11 (55) ends at 86 -> slots 12..17 skipped, next k=18 (90).
    assert ks[:12] == [0, 1, 2, 3, 6, 7, 9, 10, 11, 18, 19, 20]
    assert stats.overruns == 3
    assert stats.skipped_slots == 2 + 1 + 6
    for (k, slot, start, _), (_, _, _, prev_end) in zip(log[1:], log[:-1]):
        assert slot == k * PERIOD  # always a slot of the grid
        assert start == slot >= prev_end  # never started before the previous cycle ended: no burst
    assert stats.cycles == 20 and len(log) == 20


def test_cycle_ending_exactly_on_next_slot_is_not_an_overrun() -> None:
    """A cycle that ends exactly at the next slot start is on time."""
    stats, log, _ = run(lambda c, k, s: c.set(s + PERIOD), max_cycles=10)
    assert stats.overruns == 0 and [k for k, *_ in log] == list(range(10))


def test_exception_is_counted_reported_and_schedule_continues() -> None:
    """An exception in one cycle is counted and reported with its k; the following cycles still run on their slots."""
    reported: list[tuple[int, str]] = []

    def body(clock: VirtualClock, k: int, slot: float) -> None:
        clock.set(slot + 1.0)
        if k in (2, 5):
            raise ValueError(f"bad cycle {k}")

    stats, log, _ = run(body, max_cycles=10, on_error=lambda k, exc: reported.append((k, str(exc))))
    assert [k for k, *_ in log] == list(range(10))
    assert stats.errors == 2 and stats.cycles == 10
    assert reported == [(2, "bad cycle 2"), (5, "bad cycle 5")]
    assert stats.last_error == "ValueError: bad cycle 5"


def test_exception_in_an_overrunning_cycle_still_skips_slots() -> None:
    """A cycle that both overruns and raises is counted as both; the next cycle is on a future slot."""
    def body(clock: VirtualClock, k: int, slot: float) -> None:
        if k == 1:
            clock.set(slot + 17.0)
            raise RuntimeError("late and broken")
        clock.set(slot + 1.0)

    stats, log, _ = run(body, max_cycles=4)
    assert [k for k, *_ in log] == [0, 1, 5, 6]
    assert (stats.errors, stats.overruns, stats.skipped_slots) == (1, 1, 3)


def test_stop_event_ends_at_the_next_boundary() -> None:
    """Setting the stop event inside a cycle ends the schedule before the next cycle runs."""
    stop = asyncio.Event()

    def body(clock: VirtualClock, k: int, slot: float) -> None:
        if k == 4:
            stop.set()

    stats, log, _ = run(body, stop=stop, max_cycles=100)
    assert [k for k, *_ in log] == [0, 1, 2, 3, 4]
    assert stats.cycles == 5


def test_cancellation_propagates() -> None:
    """Cancelling the task is not swallowed as a cycle error."""
    clock = VirtualClock()

    async def cycle(k: int, slot: float) -> None:
        if k == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run_periodic(cycle, clock, PERIOD, max_cycles=10))


def test_real_clock_speed_scales_time() -> None:
    """RealClock(speed) runs its monotonic scale faster by speed, and refuses a non-positive speed."""
    clock = RealClock(speed=3600.0)

    async def main() -> float:
        t0 = clock.monotonic()
        await clock.sleep_until(t0 + 36.0)  # 10 ms of real time
        return clock.monotonic() - t0

    assert asyncio.run(main()) >= 36.0
    assert clock.utc() > 1.7e9
    with pytest.raises(ValueError, match="speed must be > 0"):
        RealClock(speed=0.0)


def test_virtual_clock_never_goes_backwards() -> None:
    """VirtualClock advances by sleep_until/set only, and refuses to go backwards."""
    clock = VirtualClock(utc0=1000.0)
    asyncio.run(clock.sleep_until(10.0))
    asyncio.run(clock.sleep_until(3.0))
    assert clock.monotonic() == 10.0 and clock.utc() == 1010.0
    with pytest.raises(ValueError, match="virtual time cannot go backwards"):
        clock.set(9.0)
