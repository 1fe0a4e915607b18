"""Scenario input faults that a fault campaign injects without code: ``spike`` (one in-range outlier
sample) and ``stale`` (the value keeps updating, its source timestamp stops), in the in-process
simulator and served by the virtual plant over OPC UA and Modbus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from apc.assembly import load
from apc.clock import VirtualClock
from apc.remote_assembly import build_plant_io
from apc.types import Verdict
from apc.validation import InputValidator
from plant_io.sim_plant import SimulatedCellIO
from plant_io.virtual_plant import VirtualPlant, VirtualUnit, generate_bindings
from sim.cell_plant import CellPlant
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ND_RECIPE, event_from_cycle, run_sync, scenario

VOLTAGE = "cell.voltage_V"
SPIKE_K, STALE_K = 20, 40


def faults() -> list[dict[str, Any]]:
    return [{"at_h": event_from_cycle(SPIKE_K), "kind": "input_fault", "signal": "cell_voltage_V", "fault": "spike",
             "value": 55.0},
            {"at_h": event_from_cycle(STALE_K), "kind": "input_fault", "signal": "cell_voltage_V", "fault": "stale",
             "duration_h": 0.05}]


def test_spike_is_one_in_range_sample_and_stale_stops_the_source_timestamp_in_process() -> None:
    """The in-process simulator reads 55 V in exactly one cycle; during a stale fault the voltage keeps changing while its source timestamp stays put, and the validator calls it stale after max_age_s."""
    clock = VirtualClock()
    io = SimulatedCellIO(CellPlant(scenario(events=faults()), 3), clock.monotonic, clock.utc)
    spec = load(ND_RECIPE).recipe.io.inputs
    validator = InputValidator(spec)
    samples, verdicts = [], []
    for k in range(STALE_K + 12):
        clock.set(k * 5.0)
        snap = run_sync(io.read([VOLTAGE]))
        samples.append(snap[VOLTAGE])
        verdicts.append(validator.validate(clock.utc(), {"cell.voltage_V": snap[VOLTAGE]})["cell_voltage"].verdict)
    spikes = [k for k, s in enumerate(samples) if s.value == 55.0]
    assert spikes == [SPIKE_K]
    stale = samples[STALE_K:]
    assert len({s.source_ts for s in stale}) == 1 and len({s.value for s in stale}) > 5
    assert verdicts[STALE_K] is Verdict.OK and verdicts[-1] is Verdict.STALE


@pytest.mark.parametrize("protocol", ["opcua", "modbus"])
def test_spike_and_stale_are_served_by_the_virtual_plant(tmp_path: Path, protocol: str) -> None:
    """Over OPC UA (SourceTimestamp) and Modbus (the <tag>.source_ts register) the client sees the one spike sample and a source timestamp that stops during the stale fault."""

    async def run() -> list[Any]:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell", scenario(events=faults()), 3, protocol=protocol,  # type: ignore[arg-type]
                                       port=free_port())], clock)
        async with vp:
            generate_bindings(vp, tmp_path)
            io = build_plant_io(tmp_path / "cell.yaml", load(ND_RECIPE).recipe, clock)
            await io.connect()
            out = []
            for k in range(STALE_K + 6):
                clock.set(k * 5.0)
                await vp.scan()
                out.append((await io.read([VOLTAGE]))[VOLTAGE])
            await io.close()
            return out

    samples = asyncio.run(run())
    assert [k for k, s in enumerate(samples) if abs(s.value - 55.0) < 1e-4] == [SPIKE_K]
    fresh = {s.source_ts for s in samples[STALE_K - 6:STALE_K]}
    stale = samples[STALE_K + 1:]
    assert len(fresh) == 6  # a new source timestamp on every scan before the fault
    assert len({s.source_ts for s in stale}) == 1 and len({round(s.value, 4) for s in stale}) > 2
