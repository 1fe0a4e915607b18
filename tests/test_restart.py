"""A process start never re-engages a real plant by itself; what an operator decided comes back after a
restart as it was (latched shed, operator limits, MV enables), audited; a refused start leaves nothing."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import apc.runtime as runtime
from apc.assembly import AssemblyError, load, load_site_file
from apc.audit import make_logger
from apc.clock import VirtualClock
from apc.kinds.electrolysis_cell.assembly import build_controller, build_estimator
from apc.recipe.errors import RecipeError
from apc.recorder import read_record
from apc.types import Mode
from apc.unit import Unit
from apc.unit_state import UnitStateError, UnitStateFile
from plant_io.sim_plant import SimulatedCellIO
from plant_io.virtual_plant import VirtualPlant, VirtualUnit, generate_bindings
from sim.cell_plant import CellPlant
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ND_RECIPE, run_sync, scenario
from tests.test_electrode_interval import DcsTap
from tests.test_heartbeat import Lines


class Process:
    """One runtime process driving a simulated cell that outlives it (the plant and clock go on)."""

    def __init__(self, state: Path, plant: DcsTap, clock: VirtualClock, k0: int = 0) -> None:
        self.loaded = load(ND_RECIPE)
        self.lines = Lines()
        self.clock = clock
        self.unit = Unit("cell", self.loaded, plant, build_estimator(self.loaded.recipe, ND_RECIPE.parent),
                         build_controller(self.loaded.recipe), audit=make_logger(self.lines),
                         state=UnitStateFile(state, "cell"))
        self.restored = self.unit.restore(clock.utc())
        self.k = k0
        self.t0 = clock.monotonic()

    def step(self, n: int = 1) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            slot = self.k * 5.0
            self.clock.set(slot)
            out.append(run_sync(self.unit.cycle(self.k, slot - self.t0, slot - self.t0, self.clock.utc())))
            self.k += 1
        return out


def plant(clock: VirtualClock) -> DcsTap:
    return DcsTap(SimulatedCellIO(CellPlant(scenario(), 61), clock.monotonic, clock.utc), clock)


def test_latched_shed_limits_and_enables_come_back_after_a_restart(tmp_path: Path) -> None:
    """A shed latched, operator limits moved and an MV disabled before a crash are restored by the next process, audited, and the shed stays latched until an operator asks."""
    clock = VirtualClock()
    cell = plant(clock)
    state = tmp_path / "unit_state.json"
    first = Process(state, cell, clock)
    assert not first.restored
    first.unit.request_mode(Mode.ON, who="olga", where="hmi", utc=clock.utc())
    while first.unit.modes.actual is not Mode.ON:
        assert first.k < 900, "never reached ON"
        first.step()
    first.step(3)  # engaged: a loop the DCS takes away now sheds the unit at once
    assert first.unit.set_operator_limits("current_sp", 5.5, 6.2, who="olga", where="hmi", utc=clock.utc()) == ""
    first.unit.set_mv_enabled("oxide_feed", False, who="olga", where="hmi", utc=clock.utc())
    cell.local_cycles = 1  # the DCS takes the electrode loop local: an immediate shed
    rec = first.step()[0]
    assert rec.shed and "out of remote" in rec.shed_reason
    shed_reason = rec.shed_reason
    # The process dies here; a new one starts on the same plant.
    second = Process(state, cell, clock, first.k)
    assert second.restored
    second.unit.start_mode(Mode.STANDBY, who="site file", where="site.yaml", utc=clock.utc())
    assert second.unit.modes.shed_reason == shed_reason
    assert second.unit.mvs["current_sp"].limits.operator == (5.5, 6.2)
    assert second.unit.mvs["oxide_feed"].enabled is False
    restored = [e for e in second.lines.events() if e["event"] == "unit_state_restored"]
    assert len(restored) == 1 and restored[0]["shed_reason"] == shed_reason
    assert restored[0]["mvs"]["current_sp"]["operator_limits"] == [5.5, 6.2]
    recs = second.step(200)
    assert all(r.mode.actual == "STANDBY" and r.shed_reason == shed_reason for r in recs)
    second.unit.request_mode(Mode.ON, who="olga", where="hmi", utc=clock.utc())
    assert second.unit.modes.shed_reason == ""


def test_a_corrupt_state_file_refuses_the_unit(tmp_path: Path) -> None:
    """A state file that cannot be trusted refuses the start with the file named (never a silent reset)."""
    state = tmp_path / "unit_state.json"
    state.write_text('{"schema_version": 1, "unit": "cell", "requested_mode": "ON", "shed_reason": 7, "mvs": {}}')
    clock = VirtualClock()
    with pytest.raises(UnitStateError, match=r"unit_state.json: corrupt unit state file"):
        Process(state, plant(clock), clock)


def external_plant_site(tmp_path: Path, vp: VirtualPlant) -> Path:
    """A site whose unit is reached over OPC UA through binding files (a plant outliving the runtime), asking ON."""
    generate_bindings(vp, tmp_path / "bindings")
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "schema_version": 1, "site": "restart", "speed": 1,
        "units": [{"name": "cell-ua", "recipe": str(ND_RECIPE), "requested_mode": "ON",
                   "plant": {"kind": "opcua", "bindings": "bindings/cell-ua.yaml"}}]}))
    return site


def test_a_process_start_on_a_real_plant_never_requests_on(tmp_path: Path) -> None:
    """With the site file asking ON for a unit on a real plant (OPC UA), the runtime starts it in STANDBY: it never goes ON without an operator."""

    async def main() -> tuple[int, str]:
        clock = VirtualClock()  # the external plant's own time: scanned by the test
        vp = VirtualPlant([VirtualUnit("cell-ua", "nominal", 71, protocol="opcua", port=free_port())], clock)
        async with vp:
            site = load_site_file(external_plant_site(tmp_path, vp))
            out = io.StringIO()
            stop = asyncio.Event()

            async def plant_clock() -> None:
                while not stop.is_set():
                    clock.set(clock.monotonic() + 5.0)
                    await vp.scan()
                    await asyncio.sleep(0.002)

            ticker = asyncio.create_task(plant_clock())
            code = await runtime.run_site(site, speed=500.0, hours=1.0, record_dir=tmp_path / "rec", out=out,
                                          compute_workers=0)  # 10 ms cycles: no room for a worker round trip
            stop.set()
            await ticker
            return code, out.getvalue()

    code, text = asyncio.run(main())
    assert code == 0, text
    audit = [json.loads(x) for x in (tmp_path / "rec" / "audit.jsonl").read_text().splitlines()]
    starts = [e for e in audit if e["event"] == "mode_request"]
    assert len(starts) == 1 and starts[0]["new"] == "STANDBY" and starts[0]["why"] == "process start"
    assert not [e for e in audit if e["event"] == "mode_change" and e["new"] == "ON"]
    last = read_record(next((tmp_path / "rec").glob("cell-ua-*.apcrec"))).cycle_records()[-1]
    assert (last.mode.requested, last.mode.actual, last.mode.hold) == ("STANDBY", "STANDBY", "")
    assert last.estimate.health == "ok"  # it could have gone ON: only the missing operator request kept it out
    assert (tmp_path / "state" / "cell-ua" / "unit_state.json").is_file()


def test_a_refused_start_leaves_no_records_and_no_audit_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the second unit of a site cannot be built, the start is refused and leaves no record file and no audit line behind."""
    site_path = tmp_path / "site.yaml"
    site_path.write_text(
        "schema_version: 1\nsite: refused\nunits:\n"
        f"  - {{name: c1, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 1}}, requested_mode: 'ON'}}\n"
        f"  - {{name: c2, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 2}}, requested_mode: 'ON'}}\n")
    real = runtime.build_sim_unit

    def build(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "c2":
            raise AssemblyError("c2 cannot be built")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(runtime, "build_sim_unit", build)
    rdir = tmp_path / "rec"
    with pytest.raises(AssemblyError, match="c2 cannot be built"):
        asyncio.run(runtime.run_site(load_site_file(site_path), speed=500.0, hours=0.1, record_dir=rdir,
                                     out=io.StringIO()))
    assert sorted(p.name for p in rdir.iterdir()) == []


def test_a_missing_soft_sensor_model_is_refused_at_its_recipe_line(tmp_path: Path) -> None:
    """A recipe naming an ONNX model that is not there is refused by load (and so by apc check and apc run) at the model_file line."""
    text = ND_RECIPE.read_text().replace("models/nd_cell_bath_temp.onnx", "models/missing.onnx")
    recipe = tmp_path / "cell.yaml"
    recipe.write_text(text)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "missing.onnx" in x)
    with pytest.raises(RecipeError) as err:
        load(recipe)
    assert f"{recipe}:{line}: estimator.soft_sensor.model_file: file not found" in str(err.value)
