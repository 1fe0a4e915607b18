"""Accelerated runs slow down to a speed the machine holds, and say so, instead of shedding healthy units."""

from __future__ import annotations

import asyncio
import io

from apc.audit import null_logger
from apc.clock import RealClock
from apc.scheduler import ScheduleStats
from apc.speed_governor import govern_speed


def test_a_speed_that_cannot_be_held_is_halved_once_and_said() -> None:
    """With 10 % of the first cycles late the clock runs at half speed from then on, without a jump in plant time, and a warning says so once."""
    clock = RealClock(200.0)
    stats = [ScheduleStats(cycles=20, overruns=2), ScheduleStats(cycles=20, overruns=2)]
    out = io.StringIO()

    async def run() -> float:
        stop = asyncio.Event()
        before = clock.monotonic()
        task = asyncio.create_task(govern_speed(clock, lambda: 0, stats, stop, out, null_logger(), poll_s=0.001))
        while clock.speed == 200.0:  # noqa: ASYNC110 (the governor has no event to await)
            await asyncio.sleep(0.001)
        jump = clock.monotonic() - before
        for s in stats:  # the next window is on time: the governor is done
            s.cycles += 20
        await asyncio.wait_for(task, 5.0)
        return jump

    jump = asyncio.run(run())
    assert clock.speed == 100.0 and jump < 5.0  # plant time went on, it did not leap
    assert out.getvalue().count("warning: speed 200x cannot be held") == 1 and "running at 100x" in out.getvalue()


def test_a_speed_that_is_held_is_left_alone() -> None:
    """On-time first cycles leave the speed as asked and print nothing; real time is never governed."""
    clock = RealClock(50.0)
    stats = [ScheduleStats(cycles=25, overruns=0)]
    out = io.StringIO()
    asyncio.run(govern_speed(clock, lambda: 0, stats, asyncio.Event(), out, null_logger(), poll_s=0.001))
    assert clock.speed == 50.0 and out.getvalue() == ""
    real = RealClock(1.0)
    asyncio.run(govern_speed(real, lambda: 99, [ScheduleStats(cycles=25, overruns=25)], asyncio.Event(), out,
                             null_logger()))
    assert real.speed == 1.0
