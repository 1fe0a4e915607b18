"""Faults inside a cycle and in its journal: caught at the unit, shed with the block named, audited,
shown; the unit then writes only the safe state until an operator asks again. Writes are audited
before they happen; a unit whose audit log or record cannot be written drives nothing."""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from apc.assembly import build_sim_unit, load
from apc.audit import make_logger, null_logger
from apc.clock import VirtualClock
from apc.types import Mode, Write, WriteResult
from sim.furnace_plant import load_furnace_scenario
from tests.helpers.sim_harness import ROOT, SimUnit, run_sync
from tests.test_heartbeat import Lines

VIM = ROOT / "recipes" / "vim_furnace.yaml"
SAFE_SUFFIXES = (".apc_active", "apc.heartbeat")
MOVE_TAGS = ("feed.sp_kg_h", "current.sp_kA", "anode.move_cm", "anode.move_seq")


def boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected")


class Raising:
    """A permissive whose evaluation raises (a bug in an expression's evaluator)."""

    explain = staticmethod(boom)


def inject(stage: str, su: SimUnit) -> Callable[[], None]:
    """Make ``stage`` raise from now on; returns what removes the fault."""
    unit = su.unit
    if stage == "permissives":
        entry = unit.permissives["feed_with_current"]
        unit.permissives["feed_with_current"] = (Raising(), entry[1])
        return lambda: unit.permissives.__setitem__("feed_with_current", entry)
    targets: dict[str, tuple[Any, str]] = {
        "validate": (unit.validator, "validate"),
        "estimate": (unit.estimator, "update"),
        "modes": (unit.modes, "decide"),
        "control": (unit.controller, "step"),
        "guard": (unit.guard, "check"),
        "compose": (unit.guard, "filter_writes"),
    }
    obj, name = targets[stage]
    original = getattr(obj, name)
    setattr(obj, name, boom)
    return lambda: setattr(obj, name, original)


def on_unit(lines: Lines) -> SimUnit:
    su = SimUnit(audit=make_logger(lines), seed=51)
    su.go_on()
    su.step(3)
    return su


@pytest.mark.parametrize("stage", ["validate", "estimate", "modes", "control", "permissives", "guard", "compose"])
def test_an_exception_in_any_block_sheds_with_its_name_and_writes_only_the_safe_state(stage: str) -> None:
    """A block raising makes the ON unit shed at once with the block named, counted and audited; it writes only apc_active 0 and the heartbeat until the fault is gone and an operator asks."""
    lines = Lines()
    su = on_unit(lines)
    heal = inject(stage, su)
    recs = su.step(4)
    first = recs[0]
    assert first.shed and first.mode.actual == "STANDBY"
    reason = first.shed_reason
    assert reason.startswith("controller failed: RuntimeError: injected" if stage == "control"
                             else f"{stage} failed: RuntimeError: injected")
    assert su.unit.stage_faults[stage] >= 1
    for rec in recs:
        assert all(w.tag.endswith(SAFE_SUFFIXES) for w in rec.writes), rec.writes
        assert all(w.value == 0.0 for w in rec.writes if w.tag.endswith(".apc_active"))
        assert any(w.tag == "apc.heartbeat" for w in rec.writes)  # the APC itself is alive
    if stage != "control":
        faults = [e for e in lines.events() if e["event"] == "cycle_fault"]
        assert faults and faults[0]["stage"] == stage and "injected" in faults[0]["why"]
        assert recs[0].fault["stage"] == stage
    heal()
    assert all(r.mode.actual == "STANDBY" and r.shed_reason for r in su.step(5))  # latched
    su.request(Mode.ON)
    su.run_until(lambda r: r.mode.actual == "ON", 200)


def test_a_furnace_batch_raising_sheds_the_unit() -> None:
    """A batch runner raising in its update sheds the furnace unit with the batch block named, counted and recorded."""
    loaded = load(VIM)
    clock = VirtualClock()
    unit, _ = build_sim_unit("vim", loaded, load_furnace_scenario("vim_nominal"), 3, clock,
                             audit=null_logger(), with_kpis=False)
    batch = unit.batch
    unit.request_mode(Mode.ON, who="test", where="batch", utc=clock.utc())
    recs = []
    for k in range(400):
        clock.set(k * 5.0)
        if unit.modes.actual is Mode.ON and not recs:
            batch.update = boom  # type: ignore[method-assign]
            recs.append(run_sync(unit.cycle(k, k * 5.0, clock.monotonic(), clock.utc())))
            break
        run_sync(unit.cycle(k, k * 5.0, clock.monotonic(), clock.utc()))
    assert recs, "the furnace never reached ON"
    rec = recs[0]
    assert rec.shed and rec.shed_reason.startswith("batch failed: RuntimeError: injected")
    assert unit.stage_faults["batch"] == 1 and rec.fault["stage"] == "batch"


class Journal:
    """A record sink whose appends fail with ENOSPC while ``full`` is set (a full disk)."""

    def __init__(self) -> None:
        self.full = False
        self.cycles: list[dict[str, Any]] = []

    def append(self, record: Mapping[str, Any]) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.cycles.append(dict(record))

    def close(self) -> None:
        pass

    def sync(self) -> None:
        pass


def test_a_record_that_cannot_be_written_stops_driving_until_it_can_and_an_operator_asks() -> None:
    """A full disk under the flight record sheds the unit ("recorder failed"); no setpoint is written while it fails; once records are written again an operator's request brings it back ON."""
    lines = Lines()
    su = on_unit(lines)
    journal = Journal()
    su.unit.recorder = journal
    journal.full = True
    recs = su.step(6)
    assert recs[0].shed and recs[0].shed_reason.startswith("recorder failed: OSError")
    assert not any(w.tag in MOVE_TAGS for r in recs[1:] for w in r.writes)
    su.request(Mode.ON)  # asked while the disk is still full: it stays out
    assert all(r.mode.actual == "STANDBY" for r in su.step(5))
    assert [e["event"] for e in lines.events()].count("recorder_failed") == 1
    journal.full = False
    su.request(Mode.ON)
    su.run_until(lambda r: r.mode.actual == "ON", 200)  # after a new warm-up: a shed restarts it
    assert "journal_recovered" in [e["event"] for e in lines.events()]


class FailingLines(Lines):
    """An audit stream that raises while ``full`` is set."""

    full = False

    def write(self, s: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(s)


def test_an_audit_log_that_cannot_be_written_stops_every_move() -> None:
    """When the audit log cannot take the write intent, nothing that moves the plant is written; the unit sheds and stays out until the log works and an operator asks."""
    lines = FailingLines()
    su = on_unit(lines)
    lines.full = True
    recs = su.step(5)
    assert recs[0].shed and recs[0].shed_reason.startswith("audit log failed: OSError")
    assert not any(w.tag in MOVE_TAGS for r in recs for w in r.writes)
    lines.full = False
    su.request(Mode.ON)
    su.run_until(lambda r: r.mode.actual == "ON", 200)


class Witness:
    """Plant I/O that notes, at each write, how many audit lines exist and which MV writes they announce."""

    def __init__(self, inner: Any, lines: Lines) -> None:
        self.inner, self.lines = inner, lines
        self.seen: list[tuple[list[str], list[dict[str, Any]]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        intents = [e for e in self.lines.events() if e["event"] == "write_intent"]
        self.seen.append(([w.tag for w in writes if w.tag in MOVE_TAGS], intents[-1]["writes"] if intents else []))
        return await self.inner.write(writes)


def test_every_move_is_audited_before_it_is_written() -> None:
    """Before the plant I/O is called, the audit log already holds a write_intent event naming each setpoint and move about to be written."""
    lines = Lines()
    su = on_unit(lines)
    witness = Witness(su.unit.io, lines)
    su.unit.io = witness
    su.step(20)
    moved = [(tags, intent) for tags, intent in witness.seen if tags]
    assert moved
    for tags, intent in moved:
        assert set(tags) <= {w["tag"] for w in intent}
