"""The APC heartbeat wraps inside its tag's data type; its type is checked at bind time; a refused
heartbeat write is a link fault (shed, loops handed back, audited)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from apc.assembly import AssemblyError, load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.heartbeat import HeartbeatCounter
from apc.remote_assembly import build_remote_unit
from apc.types import Mode, Write, WriteResult
from plant_io.bindings import ModbusTag, OpcUaTag, counter_max
from plant_io.virtual_plant import VirtualPlant, VirtualUnit, generate_bindings
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ND_RECIPE, SimUnit

HB = "apc.heartbeat"


def test_counter_wraps_to_zero_after_its_maximum() -> None:
    """An int16 counter goes 32766, 32767, 0, 1; a Boolean one toggles 1, 0, 1."""
    c = HeartbeatCounter(2**15 - 1, value=2**15 - 3)
    assert [c.next() for _ in range(4)] == [32766.0, 32767.0, 0.0, 1.0]
    b = HeartbeatCounter(1)
    assert [b.next() for _ in range(3)] == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(("binding", "top"), [
    (OpcUaTag("ns=2;s=hb", "Int16", True), 32767), (OpcUaTag("ns=2;s=hb", "UInt16", True), 65535),
    (OpcUaTag("ns=2;s=hb", "Int32", True), 2**31 - 1), (OpcUaTag("ns=2;s=hb", "UInt32", True), 2**32 - 1),
    (OpcUaTag("ns=2;s=hb", "Float", True), 2**24), (OpcUaTag("ns=2;s=hb", "Double", True), 2**53),
    (OpcUaTag("ns=2;s=hb", "Boolean", True), 1), (ModbusTag("holding", 0, "int16", writable=True), 32767),
    (ModbusTag("holding", 0, "uint32", writable=True), 2**32 - 1),
    (ModbusTag("holding", 0, "float32", writable=True), 2**24), (ModbusTag("coil", 0, "bool", writable=True), 1),
], ids=lambda v: getattr(v, "data_type", str(v)))
def test_counter_range_follows_the_bound_type(binding: OpcUaTag | ModbusTag, top: int) -> None:
    """A counter counts to its type's integer maximum (floats: the largest integer they carry exactly)."""
    assert counter_max(HB, binding) == top


@pytest.mark.parametrize("binding", [
    OpcUaTag("ns=2;s=hb", "Int16", writable=False), ModbusTag("holding", 0, "int16", scale=0.1, writable=True), None,
], ids=["read-only", "scaled", "unbound"])
def test_a_tag_that_cannot_carry_a_counter_is_refused(binding: OpcUaTag | ModbusTag | None) -> None:
    """A read-only, scaled or unbound heartbeat tag is refused with its name."""
    with pytest.raises(ValueError, match=HB):
        counter_max(HB, binding)


def test_heartbeat_bound_read_only_is_refused_at_bind_time(tmp_path: Path) -> None:
    """A binding file whose APC heartbeat is not writable refuses the unit when it is built, naming the file and tag."""
    clock = VirtualClock()
    vp = VirtualPlant([VirtualUnit("cell-ua", "nominal", 1, protocol="opcua", port=free_port())], clock)
    generate_bindings(vp, tmp_path)
    path = tmp_path / "cell-ua.yaml"
    data = yaml.safe_load(path.read_text())
    data["bindings"][HB]["writable"] = False
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(AssemblyError, match=rf"cell-ua.yaml: {HB}: a counter tag must be bound writable"):
        build_remote_unit("cell-ua", load(ND_RECIPE), path, clock, audit=null_logger(), real_time=False)


@pytest.mark.parametrize("protocol", ["opcua", "modbus"])
def test_int16_heartbeat_runs_past_its_wrap_over_the_protocol_without_a_shed(tmp_path: Path, protocol: str) -> None:
    """A unit ON against the virtual plant (int16 heartbeat tag, real loopback server) counts past 32767 to 0 and on; the DCS keeps every loop in remote and nothing sheds."""

    async def run() -> list[dict[str, Any]]:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell", "nominal", 21, protocol=protocol, port=free_port())], clock)  # type: ignore[arg-type]
        async with vp:
            generate_bindings(vp, tmp_path)
            unit = build_remote_unit("cell", load(ND_RECIPE), tmp_path / "cell.yaml", clock, audit=null_logger(),
                                     real_time=False)
            assert unit.apc_heartbeat.max_value == 2**15 - 1  # read from the binding: the tag is int16
            await unit.io.connect()
            unit.request_mode(Mode.ON, who="pytest", where="test", utc=clock.utc())
            recs: list[dict[str, Any]] = []
            k = 0

            async def step() -> dict[str, Any]:
                nonlocal k
                t = k * 5.0
                clock.set(t)
                await vp.scan()
                rec = await unit.cycle(k, t, t, clock.utc())
                k += 1
                return rec

            while unit.modes.actual is not Mode.ON:
                assert k < 900, "unit never reached ON"
                await step()
            unit.apc_heartbeat.value = 2**15 - 12  # 45.5 h of counting, skipped
            for _ in range(30):
                recs.append(await step())
            dcs = vp.io("cell").dcs
            assert all(loop.remote for loop in dcs.loops.values())
            assert dcs.heartbeats.apc_value == recs[-1].writes[-1].value
            await unit.io.close()
            return recs

    recs = asyncio.run(run())
    beats = [w.value for r in recs for w in r.writes if w.tag == HB]
    assert all(w.ok for r in recs for w in r.writes if w.tag == HB)
    assert 32767.0 in beats and beats[beats.index(32767.0) + 1] == 0.0 and beats[-1] > 0
    assert not any(r.shed for r in recs) and all(r.mode.actual == "ON" for r in recs)


class RefusingHeartbeat:
    """The simulated cell's plant I/O, with the DCS refusing APC heartbeat writes while ``refuse`` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.refuse = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read(self, tags: Sequence[str]) -> Mapping[str, Any]:
        return await self.inner.read(tags)

    async def write(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        results = list(await self.inner.write(writes))
        return [WriteResult(w.tag, False, "BadOutOfRange") if self.refuse and w.tag == HB else r
                for w, r in zip(writes, results)]


class Lines:
    """An audit stream kept in memory (one JSON event per line)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


def test_refused_heartbeat_write_sheds_hands_the_loops_back_and_is_audited() -> None:
    """When the DCS refuses the APC heartbeat, the unit sheds at once with that reason, writes apc_active 0, stays out of ON while it is refused, and audits it once."""
    from apc.audit import make_logger

    lines = Lines()
    su = SimUnit(audit=make_logger(lines))
    tap = RefusingHeartbeat(su.unit.io)
    su.unit.io = tap
    su.go_on()
    su.step(3)
    tap.refuse = True
    rec = su.step()[0]
    assert rec.shed and rec.shed_reason.startswith("APC heartbeat write failed: BadOutOfRange")
    flags = [w for w in rec.writes if w.tag.endswith(".apc_active")]
    assert flags and all(w.value == 0.0 and w.ok for w in flags[-3:])
    su.request(Mode.ON)
    later = su.step(10)
    assert all(r.mode.actual == "STANDBY" for r in later)
    assert "APC heartbeat write failed" in later[-1].mode.hold
    failed = [e for e in lines.events() if e["event"] == "apc_heartbeat_write_failed"]
    assert len(failed) == 1 and failed[0]["why"] == "BadOutOfRange"
    tap.refuse = False
    su.run_until(lambda r: r.mode.actual == "ON", 300)
