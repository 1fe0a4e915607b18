"""Setpoints ramp from what the plant acknowledged and reads back: refused writes and long gaps never
turn into one big step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from apc.types import Estimate, MvConstraint, Plan, SolverStatus, Write, WriteResult
from tests.helpers.sim_harness import SimUnit, rate_step

CURRENT_TAG = "current.sp_kA"


class Wants:
    """A controller that asks for fixed setpoint targets (holding the other MVs at their readback)."""

    def __init__(self, targets: Mapping[str, float]) -> None:
        self.targets = dict(targets)

    def track(self, applied: Mapping[str, float]) -> None:
        """Nothing to remember."""

    def step(self, t_s: float, estimate: Estimate, applied: Mapping[str, float], enabled: Mapping[str, bool],
             disturbances: Mapping[str, float], constraints: Mapping[str, MvConstraint]) -> Plan:
        """Ask for the targets."""
        moves = {n: self.targets.get(n, v) for n, v in applied.items()}
        moves["anode_move"] = 0.0
        return Plan(moves, {}, SolverStatus.OK, 0, 0.0, "wants")


class Refusing:
    """The simulated cell's plant I/O with the DCS refusing the next ``refuse`` writes of one tag."""

    def __init__(self, inner: Any, tag: str) -> None:
        self.inner, self.tag, self.refuse = inner, tag, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        out: list[WriteResult] = []
        keep = []
        for w in writes:
            if w.tag == self.tag and self.refuse > 0:
                self.refuse -= 1
                out.append(WriteResult(w.tag, False, "BadWriteNotSupported"))
            else:
                keep.append(w)
                out.append(WriteResult(w.tag, True))
        done = iter(await self.inner.write(keep))
        return [r if not r.ok else next(done) for r in out]


def current_writes(rec: dict[str, Any]) -> list[float]:
    return [w.value for w in rec.writes if w.tag == CURRENT_TAG]


def test_refused_writes_do_not_advance_the_ramp() -> None:
    """After the DCS refused two current writes, the next write is one rate step from the readback (not three)."""
    su = SimUnit(seed=41)
    su.unit.controller = Wants({"current_sp": 6.4})
    tap = Refusing(su.unit.io, CURRENT_TAG)
    su.unit.io = tap
    su.go_on()
    su.step(2)
    step = rate_step(su.recipe, "current_sp")
    tap.refuse = 2
    refused = su.step(2)
    assert all(not w.ok for r in refused for w in r.writes if w.tag == CURRENT_TAG)
    rec = su.step()[0]
    (value,) = current_writes(rec)
    readback = rec.readback["current_sp"]
    assert abs(value - readback) <= step + 1e-12
    assert rec.readback["current_sp"] == refused[-1].readback["current_sp"]


def test_a_long_gap_between_cycles_allows_one_period_of_rate() -> None:
    """A cycle 25 s after the last one (a stalled loop, inside the DCS's 30 s shed timeout) moves the current setpoint by at most rate × period."""
    su = SimUnit(seed=42)
    su.unit.controller = Wants({"current_sp": 6.4})
    su.go_on()
    su.step(2)
    su.k += 4  # the loop stalled for 25 s (the scheduler takes the next slot, the unit sees the gap)
    rec = su.step()[0]
    (value,) = current_writes(rec)
    assert abs(value - rec.readback["current_sp"]) <= rate_step(su.recipe, "current_sp") + 1e-12
