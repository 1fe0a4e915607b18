"""Accelerated runs on simulated plants: run only as fast as this machine keeps every cycle on time.

A demo or a test may ask ``apc run`` for 200× real time. If the machine cannot hold it, cycles
overrun and answers come late; late answers hold the units and, after the recipe's count, shed
healthy ones: a misleading result. :func:`govern_speed` watches the first cycles instead, and when
more than ``max_late_share`` of a window of them overran or had a late answer it halves the clock's
speed (the whole run slows down, plants included: nothing jumps) and says so, once per change, on
the console and in the audit log. It stops watching after the first window that is on time. Real
plants run at 1×, where it does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TextIO

from apc.clock import RealClock
from apc.scheduler import ScheduleStats


async def govern_speed(clock: RealClock, late_counts: Any, stats: Sequence[ScheduleStats], stop: asyncio.Event,
                       out: TextIO, audit: Any, *, window_cycles: int = 20, max_late_share: float = 0.02,
                       poll_s: float = 0.05) -> None:
    """See module docstring; ``late_counts()`` is the number of late answers so far (all units)."""
    if clock.speed <= 1.0 or not stats:
        return
    done_cycles, done_bad = 0, 0
    while not stop.is_set():
        await asyncio.sleep(poll_s)  # a supervisor's pace, off every unit's cycle path
        cycles = sum(s.cycles for s in stats)
        if cycles - done_cycles < window_cycles * len(stats):
            continue
        bad = sum(s.overruns for s in stats) + int(late_counts())
        share = (bad - done_bad) / max(cycles - done_cycles, 1)
        done_cycles, done_bad = cycles, bad
        if share <= max_late_share:
            return
        old, new = clock.speed, max(1.0, clock.speed / 2.0)
        if new == old:
            return
        clock.set_speed(new)
        msg = (f"speed {old:g}x cannot be held on this machine ({100 * share:.0f} % of the last cycles overran "
               f"or had a late answer): running at {new:g}x")
        print(f"warning: {msg}", file=out, flush=True)
        audit.warning("speed_lowered", utc=clock.utc(), old=old, new=new, late_share=share, why=msg)
