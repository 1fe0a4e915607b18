"""``run_site``: units isolated from each other's failures, clean stop, recorders closed (apc.runtime)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

import apc.runtime as runtime
from apc.assembly import load_site_file
from apc.recorder import read_record
from apc.unit import Unit
from tests.helpers.sim_harness import ND_RECIPE

SPEED = 500.0  # 5 s cycles every 10 ms of real time (room for the filter on a loaded machine)


class EstimatorDown:
    """An estimator whose every update raises (a bug in one unit's plug-in)."""

    def __init__(self) -> None:
        self.calls = 0

    def update(self, t_s: float, inputs: Any, applied: Any) -> Any:
        self.calls += 1
        raise ZeroDivisionError("estimator bug")

    def reset(self) -> None:
        pass


def write_site(tmp_path: Path) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(
        "schema_version: 1\nsite: rt-test\nspeed: 1\nunits:\n"
        f"  - {{name: good, recipe: {ND_RECIPE}, plant: {{kind: sim, scenario: nominal, seed: 31}}, "
        "requested_mode: 'ON'}\n"
        f"  - {{name: broken, recipe: {ND_RECIPE}, plant: {{kind: sim, scenario: nominal, seed: 32}}, "
        "requested_mode: 'ON'}\n"
    )
    return site


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, Unit]:
    """Capture the units run_site builds; give unit 'broken' an estimator that always raises."""
    units: dict[str, Unit] = {}
    real_build = runtime.build_sim_unit

    def build(name: str, *args: Any, **kwargs: Any) -> Any:
        unit, plant_io = real_build(name, *args, **kwargs)
        if name == "broken":
            unit.estimator = EstimatorDown()
        units[name] = unit
        return unit, plant_io

    monkeypatch.setattr(runtime, "build_sim_unit", build)
    return units


class StopAfter:
    """Call ``action()`` once ``unit`` has completed ``n`` cycles (a Ctrl-C at a known point)."""

    def __init__(self, unit: Unit, n: int, action: Any) -> None:
        self.done = 0
        self.at: int | None = None
        inner = unit.cycle

        async def cycle(*args: Any) -> dict[str, Any]:
            rec = await inner(*args)
            self.done += 1
            if self.done >= n and self.at is None:
                self.at = self.done
                action()
            return rec

        unit.cycle = cycle  # type: ignore[method-assign]


def summary(out: str, name: str) -> tuple[int, int, int]:
    m = re.search(rf"^{name}: (\d+) cycles, (\d+) overruns, (\d+) errors$", out, re.M)
    assert m, out
    return int(m[1]), int(m[2]), int(m[3])


def test_failing_unit_does_not_stop_the_other(tmp_path: Path, built: dict[str, Unit]) -> None:
    """One unit's estimator raising every cycle (computing in the runtime's process) is caught at that unit (shed, audited, recorded, counted as errors); the other unit reaches ON and writes."""
    site = load_site_file(write_site(tmp_path))
    out = io.StringIO()
    rdir = tmp_path / "rec"
    code = asyncio.run(runtime.run_site(site, speed=SPEED, hours=1.0, record_dir=rdir, out=out, compute_workers=0))
    text = out.getvalue()
    assert code == 1  # errors happened
    good_cycles, _, good_errors = summary(text, "good")
    bad_cycles, _, bad_errors = summary(text, "broken")
    assert good_errors == 0 and good_cycles > 100
    assert bad_errors == bad_cycles > 100
    assert built["broken"].stage_faults == {"estimate": bad_cycles}
    assert built["broken"].estimator.calls == bad_cycles  # type: ignore[attr-defined]
    good = read_record(next(rdir.glob("good-*.apcrec")))
    assert len(good.cycles) == good_cycles and not good.truncated_tail
    on_writes = [c for c in good.cycle_records() if c.mode.actual == "ON"
                 and any(w.tag == "feed.sp_kg_h" and w.ok for w in c.writes)]
    assert len(on_writes) > 20
    broken = read_record(next(rdir.glob("broken-*.apcrec")))
    assert len(broken.cycles) == bad_cycles and not broken.truncated_tail
    broken_cycles = broken.cycle_records()
    assert all(c.fault is not None and c.fault["stage"] == "estimate" and c.mode.actual == "STANDBY"
               for c in broken_cycles)
    assert broken_cycles[-1].shed_reason == "estimate failed: ZeroDivisionError: estimator bug"
    assert not any(w.tag in ("feed.sp_kg_h", "current.sp_kA", "anode.move_cm") for c in broken_cycles
                   for w in c.writes)
    audit = [json.loads(line) for line in (rdir / "audit.jsonl").read_text().splitlines()]
    failed = [e for e in audit if e["event"] == "cycle_fault"]
    assert len(failed) == bad_cycles and {e["unit"] for e in failed} == {"broken"}
    assert all(e["stage"] == "estimate" and "ZeroDivisionError: estimator bug" in e["why"] for e in failed)
    assert all(u.recorder.closed for u in built.values())


def test_stop_event_stops_cleanly_and_closes_recorders(tmp_path: Path, built: dict[str, Unit]) -> None:
    """Setting the stop event (what Ctrl-C does) ends every unit at a cycle boundary with complete, closed records."""
    site = load_site_file(write_site(tmp_path))
    out = io.StringIO()
    rdir = tmp_path / "rec"

    trigger: StopAfter | None = None

    async def main() -> int:
        nonlocal trigger
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run_site(site, speed=SPEED, hours=2.0, record_dir=rdir, out=out,
                                                    compute_workers=0,
                                                    stop=stop))
        while not built.get("good"):  # noqa: ASYNC110 (set by the build the runtime runs)
            await asyncio.sleep(0)
        trigger = StopAfter(built["good"], 40, stop.set)
        return await task

    code = asyncio.run(main())
    assert code == 1  # the broken unit's errors
    good_cycles, _, _ = summary(out.getvalue(), "good")
    assert trigger is not None and trigger.at == 40
    assert good_cycles == 40  # stopped at the very next cycle boundary (2 h would be ~1400 cycles)
    for name in ("good", "broken"):
        assert built[name].recorder.closed
        rec = read_record(next(rdir.glob(f"{name}-*.apcrec")))
        assert not rec.truncated_tail
    assert len(read_record(next(rdir.glob("good-*.apcrec"))).cycles) == good_cycles
    for line in (rdir / "audit.jsonl").read_text().splitlines():
        json.loads(line)  # audit log flushed and closed: every line complete


def test_sigint_stops_cleanly(tmp_path: Path, built: dict[str, Unit]) -> None:
    """A real SIGINT during run_site stops it cleanly (no KeyboardInterrupt), records closed and complete."""
    site = load_site_file(write_site(tmp_path))
    out = io.StringIO()
    rdir = tmp_path / "rec"
    leaked: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: leaked.append(signum))

    trigger: StopAfter | None = None

    async def main() -> int:
        nonlocal trigger
        task = asyncio.create_task(runtime.run_site(site, speed=SPEED, hours=2.0, record_dir=rdir, out=out,
                                                    compute_workers=0))
        while not built.get("good"):  # noqa: ASYNC110 (set by the build the runtime runs)
            await asyncio.sleep(0)
        trigger = StopAfter(built["good"], 30, lambda: os.kill(os.getpid(), signal.SIGINT))
        return await task

    try:
        code = asyncio.run(main())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert leaked == [], "SIGINT was not handled by run_site"
    assert code == 1
    good_cycles, _, _ = summary(out.getvalue(), "good")
    assert trigger is not None and trigger.at == 30
    assert 30 <= good_cycles <= 31  # the signal is handled at the next loop iteration
    assert all(u.recorder.closed for u in built.values())
    rec = read_record(next(rdir.glob("good-*.apcrec")))
    assert len(rec.cycles) == good_cycles and not rec.truncated_tail


def test_clean_site_exits_zero_and_prints_status(tmp_path: Path) -> None:
    """A site whose units all run without errors exits 0, with a status line per unit and KPIs at the end."""
    site_path = tmp_path / "site.yaml"
    site_path.write_text(
        "schema_version: 1\nsite: ok-site\nunits:\n"
        f"  - {{name: c1, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 41}}, requested_mode: STANDBY}}\n"
    )
    out = io.StringIO()
    code = asyncio.run(runtime.run_site(load_site_file(site_path), speed=SPEED, hours=0.1,
                                        record_dir=tmp_path / "r", out=out, status_every_s=60.0))
    text = out.getvalue()
    assert code == 0
    cycles, _, errors = summary(text, "c1")
    assert errors == 0 and 0 < cycles <= 72
    assert re.search(r"^\s*0\.\d\d h  c1\s+STANDBY/STANDBY", text, re.M)
    assert "Cycles" in text
