"""A slow, hung or crashed computation costs only its own unit (or, for a dead worker process, the
units of that worker): end to end on loopback, on the real (10x accelerated) clock, with the
units' estimators and controllers in compute worker processes and the virtual plant's DCS side
judging every loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

import apc.compute_pool as compute_pool
import apc.runtime as runtime
from apc.assembly import load, load_site_file
from apc.audit import make_logger
from apc.compute_pool import ComputePool
from apc.plant_sim_cli import load_plant_file
from apc.recorder import read_record
from sim.scenario import SCENARIO_DIR
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ROOT

QUICK = ROOT / "tests" / "fixtures" / "unit" / "nd_cell_quick_warmup.yaml"
MOVES = ("feed.sp_kg_h", "current.sp_kA", "anode.move_cm", "anode.move_seq")
SPEED = 10.0


def write_site(tmp: Path, n: int, events: dict[int, list[dict[str, Any]]]) -> tuple[Path, Path]:
    """A site of ``n`` quick-warm-up cells over the virtual plant (OPC UA and Modbus), with scenario events per unit index."""
    nominal = yaml.safe_load((SCENARIO_DIR / "nominal.yaml").read_text())
    units, plant = [], {"schema_version": 1, "host": "127.0.0.1", "scan_s": 5, "units": {}}
    ua_port, mb_port = free_port(), free_port()
    for i in range(n):
        name = f"cell-{i:02d}"
        scenario = "nominal"
        if i in events:
            path = tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump({**nominal, "name": f"{name}-faults", "events": events[i]}))
            scenario = str(path)
        units.append({"name": name, "recipe": str(QUICK), "requested_mode": "ON",
                      "plant": {"kind": "sim", "scenario": scenario, "seed": 300 + i}})
        modbus = i % 3 == 2
        plant["units"][name] = {"protocol": "modbus" if modbus else "opcua", "port": mb_port if modbus else ua_port,
                                "device_id": i // 3 + 1}
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({"schema_version": 1, "site": "isolation", "compute_workers": 2, "units": units}))
    (tmp / "plant.yaml").write_text(yaml.safe_dump(plant))
    return site, tmp / "plant.yaml"


def records(rdir: Path) -> dict[str, list[dict[str, Any]]]:
    return {p.name.split("-2")[0]: list(read_record(p).cycle_records()) for p in rdir.glob("*.apcrec")}


def audit(rdir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (rdir / "audit.jsonl").read_text().splitlines()]


def run(site: Path, plant: Path, rdir: Path, hours: float, during: Any = None) -> tuple[int, str]:
    loaded = load_site_file(site)
    out = io.StringIO()

    async def main() -> int:
        task = asyncio.create_task(runtime.run_site(loaded, speed=SPEED, hours=hours, record_dir=rdir, out=out,
                                                    virtual_plant=load_plant_file(plant)))
        if during is not None:
            await during()
        return await task

    return asyncio.run(main()), out.getvalue()


def test_a_stalled_computation_costs_only_its_own_unit(tmp_path: Path) -> None:
    """One cell's computation does not answer for 60 s while 20 others run: the others stay on time (no late answer, no shed, every DCS loop in remote), the stalled cell sheds and writes nothing computed from old inputs."""
    stall_at_s, stall_s = 420.0, 60.0  # plant time: the units start after ~100 s of building and warm up 150 s
    site, plant = write_site(tmp_path, 21, {0: [{"at_h": stall_at_s / 3600.0, "kind": "compute_stall",
                                                "duration_s": stall_s}]})
    rdir = tmp_path / "rec"
    code, text = run(site, plant, rdir, hours=440.0 / 3600.0)
    assert code == 0, text
    recs = records(rdir)
    assert len(recs) == 21
    stalled = recs.pop("cell-00")
    for name, cycles in recs.items():
        on = [c for c in cycles if c.mode.actual == "ON"]
        assert on and on[0].t_s < stall_at_s, name  # engaged before the stall, and stayed so
        assert all(c.mode.actual == "ON" for c in cycles if c.t_s >= on[0].t_s), name
        assert not any(c.shed or c.late for c in cycles), name
        assert all(w.ok for c in on for w in c.writes), name
    during = [c for c in stalled if stall_at_s <= c.t_s < stall_at_s + stall_s]
    assert during and all(c.late for c in during)
    assert any(c.shed and c.shed_reason.startswith("estimator: compute late") for c in during)
    assert not any(w.tag in MOVES for c in during for w in c.writes)  # nothing from stale inputs
    assert not any(w.tag in MOVES for c in stalled if c.t_s >= stall_at_s for w in c.writes)
    late = [e for e in audit(rdir) if e["event"] == "compute_late"]
    assert {e["unit"] for e in late} == {"cell-00"}


def test_a_worker_killed_with_sigkill_is_respawned_and_its_units_come_back_in_standby(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL of a compute worker: it is respawned, its units shed to STANDBY with the reason, rebuild and warm up again; the other worker's units go on."""
    site, plant = write_site(tmp_path, 4, {})
    pools: list[ComputePool] = []
    real = runtime.ComputePool

    class Recorded(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(runtime, "ComputePool", Recorded)
    rdir = tmp_path / "rec"
    killed: dict[str, Any] = {}

    def all_on() -> bool:
        path = rdir / "audit.jsonl"
        return path.exists() and len({e["unit"] for e in audit(rdir) if e["event"] == "mode_change"
                                      and e["new"] == "ON"}) == 4

    async def kill_when_on() -> None:
        while not (pools and all_on()):  # noqa: ASYNC110 (no event: the state is in another process's log)
            await asyncio.sleep(0.05)  # polling the runtime's own audit log for the state to act on
        pool = pools[0]
        worker = pool._workers[1]
        killed["pid"], killed["units"] = worker.process.pid, sorted(worker.units)
        os.kill(worker.process.pid, signal.SIGKILL)

    code, text = run(site, plant, rdir, hours=420.0 / 3600.0, during=kill_when_on)
    assert code == 0, text
    events = audit(rdir)
    restarts = [e for e in events if e["event"] == "compute_worker_restarted"]
    assert len(restarts) == 1 and restarts[0]["worker"] == 1 and restarts[0]["units"] == killed["units"]
    assert "status -9" in restarts[0]["why"]
    recs = records(rdir)
    for name, cycles in recs.items():
        sheds = [c for c in cycles if c.shed]
        if name in killed["units"]:
            assert len(sheds) == 1 and sheds[0].shed_reason.startswith("compute worker restarted: compute worker 1")
            after = [c for c in cycles if c.t_s > sheds[0].t_s]
            assert all(c.mode.actual == "STANDBY" for c in after)  # latched until an operator asks
            assert after[-1].estimate.health == "ok"  # rebuilt in the new worker and warmed up again
        else:
            assert sheds == [] and cycles[-1].mode.actual == "ON", name


def test_compute_faults_in_virtual_time_are_deterministic() -> None:
    """In virtual time (apc sim) a compute_stall makes 60 s of answers late (the unit holds, then sheds) and a compute_crash loses the parts (shed, fresh estimator warming up): the same on every run."""
    from tests.helpers.sim_harness import SimUnit, event_from_cycle, scenario

    def run() -> list[tuple[Any, ...]]:
        events = [{"at_h": event_from_cycle(800), "kind": "compute_stall", "duration_s": 60.0},
                  {"at_h": event_from_cycle(1000), "kind": "compute_crash"}]
        su = SimUnit(scen=scenario(events=events), seed=9)
        su.go_on(790)
        recs = su.step(1100 - su.k)
        return [(r.k, r.late, r.shed, r.shed_reason, r.estimate.health) for r in recs]

    first = run()
    assert first == run()
    late = [k for k, late, *_ in first if late]
    assert len(late) == 12 and late[0] >= 799  # 60 s of 5 s cycles
    sheds = [(k, why) for k, _, shed, why, _ in first if shed]
    assert sheds[0][1].startswith("estimator: compute late")
    crash = [row for row in first if row[3].startswith("compute worker restarted")]
    assert crash and any(h.startswith("warming up") for *_, h in first if _[0] > crash[0][0])


@pytest.mark.parametrize("patient", [True, False])
def test_a_worker_that_is_busy_building_is_not_taken_for_hung(monkeypatch: pytest.MonkeyPatch, patient: bool) -> None:
    """Building units holds a worker's interpreter for longer than the hang limit: while builds are outstanding the pool waits (no kill), without that patience it would kill and respawn the worker."""
    if not patient:
        monkeypatch.setattr(compute_pool, "BUILD_HANG_S", 0.0)
    log_lines = io.StringIO()
    loaded = load(ROOT / "recipes" / "vim_furnace.yaml")

    async def main() -> list[int]:
        pool = ComputePool(1, log=make_logger(log_lines), ping_s=0.02, hang_s=0.05)
        await pool.start()
        try:
            for i in range(6):  # each build holds the interpreter well over 50 ms (CasADi expansion)
                pool.factory(f"furnace-{i}", loaded, "mpc", True)
            with contextlib.suppress(Exception):
                await pool.ready(timeout_s=120.0)
            return [s.restarts for s in pool.stats()]
        finally:
            await pool.close()

    restarts = asyncio.run(main())
    if patient:
        assert restarts == [0], log_lines.getvalue()
    else:  # the same load without the patience: the worker is killed mid-build
        assert restarts[0] >= 1
