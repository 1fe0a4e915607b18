"""The virtual plant: simulated units on real loopback OPC UA / Modbus servers, read and written
with the project's own clients built from the generated binding files. Virtual time throughout
(the clock is set explicitly and the plant scanned), except where the scan task itself is tested."""

from __future__ import annotations

import argparse
import asyncio
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from apc.clock import RealClock, VirtualClock
from apc.plant_sim_cli import add_subcommand
from apc.types import Quality, Sample, Write
from plant_io.bindings import ModbusTag, OpcUaTag, parse_bindings, parse_endpoint
from plant_io.errors import PlantBindingError, PlantLinkDown
from plant_io.modbus_client import ModbusPlantIO
from plant_io.opcua_client import OpcUaPlantIO
from plant_io.virtual_plant import VirtualPlant, VirtualPlantError, VirtualUnit, generate_bindings
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import SITE_DEMO, scenario

Client = OpcUaPlantIO | ModbusPlantIO
SAMPLED = ("cell.bath_temp_dip_degC", "cell.oxide_lab_wtpct")


def _clients(vp: VirtualPlant, clock: Any, out_dir: Path) -> dict[str, Client]:
    """One project client per unit, built from the binding files the plant wrote."""
    generate_bindings(vp, out_dir)
    out: dict[str, Client] = {}
    for unit in vp.units:
        doc = yaml.safe_load((out_dir / f"{unit.name}.yaml").read_text())
        assert doc["unit"] == unit.name and doc["protocol"] == unit.protocol
        endpoint, tags = parse_endpoint(doc["endpoint"]), parse_bindings(doc["bindings"])
        if unit.protocol == "opcua":
            out[unit.name] = OpcUaPlantIO(endpoint, tags, clock.utc, clock.monotonic)  # type: ignore[arg-type]
        else:
            out[unit.name] = ModbusPlantIO(endpoint, tags, clock.utc, clock.monotonic,  # type: ignore[arg-type]
                                           cycle_budget_s=2.0)
    return out


async def _at(vp: VirtualPlant, clock: VirtualClock, t_s: float) -> None:
    """Move virtual time to ``t_s`` and scan the plant there."""
    clock.set(t_s)
    await vp.scan()


async def _engage(client: Client, heartbeat: float, **setpoints: float) -> None:
    """What the APC writes each cycle: heartbeat, then per loop apc_active and its setpoint."""
    writes = [Write("apc.heartbeat", heartbeat)]
    for loop, value in setpoints.items():
        name = loop.replace("__", ".")
        writes += [Write(f"{name.split('.')[0]}.apc_active", 1.0), Write(name, value)]
    results = await client.write(writes)
    assert all(r.ok for r in results), results


def _values(snapshot: dict[str, Sample] | Any, *tags: str) -> list[float]:
    return [snapshot[t].value for t in tags]


def test_opcua_serves_every_tag_good_with_types_access_and_sample_times(tmp_path: Path) -> None:
    """After the first dip and lab result every tag reads Good; lab/dip stamps are the sample times; types match."""

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell-01", "nominal", 1, port=free_port())], clock)
        async with vp:
            client = _clients(vp, clock, tmp_path)["cell-01"]
            await client.connect()  # verifies every DataType and CurrentWrite of the writable bindings
            await _at(vp, clock, 5.1 * 3600)  # first dip at 2 h, first lab result at 4 h + 1 h delay
            tags = sorted(vp.io("cell-01").tags())
            snap = await client.read(tags)
            assert set(snap) == set(tags)
            assert {t for t, s in snap.items() if s.quality is not Quality.GOOD or not math.isfinite(s.value)} == set()
            truth = await vp.io("cell-01").read(list(SAMPLED))
            for tag in SAMPLED:
                assert truth[tag].sample_ts is not None
                assert snap[tag].source_ts == pytest.approx(truth[tag].sample_ts, abs=1e-3)
                assert snap[tag].value == pytest.approx(truth[tag].value)
            assert snap["cell.voltage_V"].source_ts == pytest.approx(clock.utc(), abs=1e-3)
            assert snap["dcs.heartbeat"].value == pytest.approx(vp.io("cell-01").dcs.heartbeats.dcs_counter(clock.monotonic()))
            assert {snap[t].value for t in tags if t.endswith((".remote", ".apc_active"))} == {0.0}
            await client.close()
            # Only the DCS's writable set is writable: a binding claiming more is refused at connect.
            lying = dict(parse_bindings(yaml.safe_load((tmp_path / "cell-01.yaml").read_text())["bindings"]))
            ro = lying["feed.sp_readback_kg_h"]
            assert isinstance(ro, OpcUaTag)
            lying["feed.sp_readback_kg_h"] = OpcUaTag(ro.node_id, ro.data_type, writable=True)
            liar = OpcUaPlantIO(parse_endpoint(vp.endpoint("cell-01")), lying, clock.utc, clock.monotonic)  # type: ignore[arg-type]
            with pytest.raises(PlantBindingError, match=r"feed.sp_readback_kg_h.*CurrentWrite"):
                await liar.connect()
            await liar.close()

    asyncio.run(run())


def test_bad_and_uncertain_inputs_show_as_opcua_status_until_the_fault_ends(tmp_path: Path) -> None:
    """Scenario input faults reach the client as Bad/Uncertain StatusCodes; missing samples read Bad."""
    events = [
        {"at_h": 0.0, "kind": "input_fault", "signal": "cell_voltage_V", "fault": "bad", "duration_h": 0.05},
        {"at_h": 0.0, "kind": "input_fault", "signal": "current_kA", "fault": "uncertain", "duration_h": 0.05},
    ]

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell-01", scenario("nominal", events), 3, port=free_port())], clock)
        async with vp:
            client = _clients(vp, clock, tmp_path)["cell-01"]
            await client.connect()
            await _at(vp, clock, 60.0)
            snap = await client.read(["cell.voltage_V", "cell.current_kA", "cell.metal_tapped_kg", SAMPLED[0]])
            assert snap["cell.voltage_V"].quality is Quality.BAD and math.isnan(snap["cell.voltage_V"].value)
            assert snap["cell.current_kA"].quality is Quality.UNCERTAIN
            assert snap["cell.current_kA"].value == pytest.approx(6.0, abs=0.1)
            assert snap["cell.metal_tapped_kg"].quality is Quality.GOOD
            assert snap[SAMPLED[0]].quality is Quality.BAD  # no dip taken yet
            await _at(vp, clock, 0.05 * 3600 + 30.0)
            snap = await client.read(["cell.voltage_V", "cell.current_kA"])
            assert [s.quality for s in snap.values()] == [Quality.GOOD, Quality.GOOD]
            assert 1.0 < snap["cell.voltage_V"].value < 60.0
            await client.close()

    asyncio.run(run())


def test_opcua_writes_make_loops_remote_and_move_the_plant(tmp_path: Path) -> None:
    """apc_active + heartbeat + setpoint over OPC UA: loops go remote, readbacks follow, the plant moves."""

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell-01", "nominal", 1, port=free_port())], clock)
        async with vp:
            client = _clients(vp, clock, tmp_path)["cell-01"]
            await client.connect()
            await _at(vp, clock, 60.0)
            before = await client.read(["cell.current_kA", "feed.remote", "feed.sp_readback_kg_h"])
            assert _values(before, "feed.remote", "feed.sp_readback_kg_h") == [0.0, pytest.approx(9.2)]
            await _engage(client, 1.0, feed__sp_kg_h=12.5, current__sp_kA=6.4)
            # Applied before the write is answered: readbacks already follow, no scan needed.
            snap = await client.read(["feed.remote", "feed.sp_readback_kg_h", "current.remote", "current.sp_readback_kA"])
            assert _values(snap, "feed.remote", "feed.sp_readback_kg_h", "current.remote", "current.sp_readback_kA") \
                == [1.0, 12.5, 1.0, pytest.approx(6.4)]
            assert vp.io("cell-01").plant.feed_sp_kg_h == 12.5
            assert (await client.write([Write("anode.apc_active", 1.0), Write("anode.move_cm", 0.4),
                                        Write("anode.move_seq", 1.0)]))[-1].ok
            for k in range(1, 7):  # keep the link alive for 30 s while the current ramps
                await _at(vp, clock, 60.0 + 5.0 * k)
                await _engage(client, 1.0 + k, feed__sp_kg_h=12.5, current__sp_kA=6.4)
            snap = await client.read(["cell.current_kA", "anode.position_cm", "anode.seq_readback", "anode.remote"])
            assert snap["cell.current_kA"].value == pytest.approx(6.4, abs=0.05)
            assert before["cell.current_kA"].value == pytest.approx(6.0, abs=0.05)
            assert _values(snap, "anode.position_cm", "anode.seq_readback", "anode.remote") \
                == [pytest.approx(0.4), 1.0, 1.0]
            await client.close()

    asyncio.run(run())


def test_frozen_apc_heartbeat_sheds_the_loop_within_the_shed_timeout(tmp_path: Path) -> None:
    """Setpoints keep coming but the heartbeat stops: the feed loop leaves remote after 30 s, not before."""

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell-01", "nominal", 1, port=free_port())], clock)
        timeout = vp.io("cell-01").plant.scenario.dcs_shed_timeout_s
        assert timeout == 30.0
        async with vp:
            client = _clients(vp, clock, tmp_path)["cell-01"]
            await client.connect()
            t = 10.0
            for k in range(4):
                await _at(vp, clock, t)
                await _engage(client, 1.0 + k, feed__sp_kg_h=11.0)
                t += 5.0
            last_beat = t - 5.0
            remote = {}
            while t <= last_beat + timeout + 10.0:
                await _at(vp, clock, t)
                await _engage(client, 4.0, feed__sp_kg_h=11.0)  # same heartbeat value: frozen
                remote[t - last_beat] = (await client.read(["feed.remote"]))["feed.remote"].value
                t += 5.0
            assert {age: r for age, r in remote.items() if age <= timeout} == {a: 1.0 for a in remote if a <= timeout}
            assert {age: r for age, r in remote.items() if age > timeout} == {a: 0.0 for a in remote if a > timeout}
            snap = await client.read(["feed.sp_readback_kg_h"])
            assert snap["feed.sp_readback_kg_h"].value == pytest.approx(9.2)  # the DCS's local schedule
            await client.close()

    asyncio.run(run())


def test_restart_on_same_ports_clients_reconnect_and_dcs_shed_during_outage(tmp_path: Path) -> None:
    """Servers stop (link lost), the DCS sheds while the APC is away, restart on the same ports, clients reconnect."""

    async def run() -> None:
        clock = VirtualClock()
        units = [VirtualUnit("cell-01", "nominal", 1, port=free_port()),
                 VirtualUnit("cell-02", "nominal", 2, protocol="modbus", port=free_port())]
        vp = VirtualPlant(units, clock)
        async with vp:
            clients = _clients(vp, clock, tmp_path)
            for c in clients.values():
                await c.connect()
            await _at(vp, clock, 10.0)
            for c in clients.values():
                await _engage(c, 1.0, feed__sp_kg_h=12.0)
                assert (await c.read(["feed.remote"]))["feed.remote"].value == 1.0
            await vp.stop()
            assert not vp.running
            for c in clients.values():
                with pytest.raises(PlantLinkDown):
                    await c.read(["feed.remote"])
                assert not c.connected
            await _at(vp, clock, 100.0)  # the simulated DCS keeps scanning with the servers down
            assert [vp.io(u.name).dcs.loops["feed"].remote for u in units] == [False, False]
            await vp.start()
            for name, c in clients.items():
                assert await c.reconnect_if_due(), name
                snap = await c.read(["feed.remote", "feed.sp_readback_kg_h", "dcs.heartbeat"])
                assert _values(snap, "feed.remote", "feed.sp_readback_kg_h", "dcs.heartbeat") \
                    == [0.0, pytest.approx(9.2), 100.0], name
                await c.close()

    asyncio.run(run())


def test_modbus_register_map_quality_registers_and_writes(tmp_path: Path) -> None:
    """Modbus: values as float32, NaN + quality 2 when bad, quality 1 when uncertain, writes apply, half floats refused."""
    events = [
        {"at_h": 0.0, "kind": "input_fault", "signal": "cell_voltage_V", "fault": "bad", "duration_h": 1.0},
        {"at_h": 0.0, "kind": "input_fault", "signal": "current_kA", "fault": "uncertain", "duration_h": 1.0},
    ]

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell-02", scenario("nominal", events), 2, protocol="modbus",
                                       port=free_port(), device_id=7)], clock)
        async with vp:
            client = _clients(vp, clock, tmp_path)["cell-02"]
            bindings = vp.bindings()["cell-02"].bindings
            assert vp.endpoint("cell-02")["device_id"] == 7
            await client.connect()
            await _at(vp, clock, 60.0)
            snap = await client.read(list(bindings))
            assert set(snap) == set(bindings)
            assert snap["cell.voltage_V"].quality is Quality.BAD and snap["cell.voltage_V.quality"].value == 2.0
            # Modbus has no quality: the client folds the companion quality register into the tag.
            assert snap["cell.current_kA"].quality is Quality.UNCERTAIN and snap["cell.current_kA.quality"].value == 1.0
            assert snap["cell.metal_tapped_kg.quality"].value == 0.0
            assert snap[SAMPLED[1]].quality is Quality.BAD and snap[SAMPLED[1] + ".sample_ts"].value == 0.0
            assert snap["dcs.heartbeat"].value == 60.0
            await _engage(client, 1.0, feed__sp_kg_h=12.5)
            snap = await client.read(["feed.remote", "feed.sp_readback_kg_h", "feed.sp_kg_h"])
            assert _values(snap, "feed.remote", "feed.sp_readback_kg_h", "feed.sp_kg_h") == [1.0, 12.5, 12.5]
            # Writing one register of a float32 is refused (exception 2) and changes nothing.
            sp = bindings["feed.sp_kg_h"]
            half = ModbusPlantIO(parse_endpoint(vp.endpoint("cell-02")),  # type: ignore[arg-type]
                                 {"half": ModbusTag("holding", sp["address"] + 1, "uint16", writable=True)},
                                 clock.utc, clock.monotonic, cycle_budget_s=2.0)
            await half.connect()
            (res,) = await half.write([Write("half", 1.0)])
            assert not res.ok and "exception 2" in res.detail
            assert vp.io("cell-02").plant.feed_sp_kg_h == 12.5
            await half.close()
            await client.close()

    asyncio.run(run())


def test_mixed_site_two_cells_share_an_opcua_server_and_a_furnace_on_modbus(tmp_path: Path) -> None:
    """Units on one OPC UA port are independent namespaces; a furnace over Modbus takes its power setpoint."""

    async def run() -> None:
        clock = VirtualClock()
        ua_port = free_port()
        vp = VirtualPlant([VirtualUnit("cell-01", "nominal", 1, port=ua_port),
                           VirtualUnit("cell-02", "nominal", 2, port=ua_port),
                           VirtualUnit("vim-01", "vim_nominal", 1, kind="vacuum_furnace", protocol="modbus",
                                       port=free_port())], clock)
        async with vp:
            clients = _clients(vp, clock, tmp_path)
            assert vp.endpoint("cell-01") == vp.endpoint("cell-02")
            for c in clients.values():
                await c.connect()
            await _at(vp, clock, 20.0)
            await _engage(clients["cell-01"], 1.0, feed__sp_kg_h=11.0)
            await _engage(clients["vim-01"], 1.0, power_kW__sp=50.0)
            one = await clients["cell-01"].read(["feed.remote", "cell.voltage_V"])
            two = await clients["cell-02"].read(["feed.remote", "cell.voltage_V"])
            assert (one["feed.remote"].value, two["feed.remote"].value) == (1.0, 0.0)
            assert one["cell.voltage_V"].value != two["cell.voltage_V"].value  # different seeds, different plants
            furnace = await clients["vim-01"].read(sorted(vp.io("vim-01").tags()))
            assert _values(furnace, "power_kW.remote", "power_kW.sp_readback") == [1.0, 50.0]
            assert all(s.quality is Quality.GOOD and math.isfinite(s.value) for s in furnace.values())
            for c in clients.values():
                await c.close()

    asyncio.run(run())


def test_scan_task_follows_a_fast_real_clock() -> None:
    """With a RealClock and scan_s the plant scans itself: serve_until returns once plant time passes end_s."""

    async def run() -> None:
        clock = RealClock(speed=2000.0)
        vp = VirtualPlant([VirtualUnit("cell-01", "nominal", 1, protocol="modbus", port=free_port())],
                          clock, scan_s=5.0)
        await vp.start()
        end_s = clock.monotonic() + 60.0
        await asyncio.wait_for(vp.serve_until(asyncio.Event(), end_s), timeout=20.0)
        assert not vp.running
        assert vp.io("cell-01").plant.t_s >= end_s - 5.0

    asyncio.run(run())


def test_refuses_insecure_remote_hosts_and_inconsistent_configs() -> None:
    """NoSecurity on a non-loopback host needs allow_remote_insecure; clashing device ids and scan_s with a VirtualClock fail."""
    unit = VirtualUnit("cell-01", "nominal", 1)
    with pytest.raises(VirtualPlantError, match="not loopback"):
        VirtualPlant([unit], VirtualClock(), host="0.0.0.0")
    assert VirtualPlant([unit], VirtualClock(), host="0.0.0.0", allow_remote_insecure=True).endpoint("cell-01") \
        == {"url": "opc.tcp://0.0.0.0:4840/apc/virtual-plant/", "security": "none"}
    with pytest.raises(VirtualPlantError, match="VirtualClock"):
        VirtualPlant([unit], VirtualClock(), scan_s=5.0)
    twins = [VirtualUnit(n, "nominal", 1, protocol="modbus", port=5020) for n in ("a", "b")]
    with pytest.raises(VirtualPlantError, match="distinct device_id"):
        VirtualPlant(twins, VirtualClock())
    with pytest.raises(VirtualPlantError, match="Scenario is not a scenario of unit kind 'vacuum_furnace'"):
        VirtualUnit("f", scenario("nominal"), kind="vacuum_furnace")


def _cli(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="apc")
    add_subcommand(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(list(argv))


def test_plant_sim_cli_serves_the_site_writes_bindings_and_stops_after_hours(tmp_path: Path) -> None:
    """`apc plant-sim SITE --plant --bindings-out --hours`: one binding file per unit, mixed protocols, exit 0."""
    ua_port, mb_port = free_port(), free_port()
    plant = tmp_path / "plant.yaml"
    plant.write_text(yaml.safe_dump({"schema_version": 1, "units": {
        "cell-01": {"protocol": "opcua", "port": ua_port}, "cell-02": {"protocol": "opcua", "port": ua_port},
        "cell-03": {"protocol": "modbus", "port": mb_port, "device_id": 3}}}))
    out = io.StringIO()
    args = _cli(["plant-sim", str(SITE_DEMO), "--plant", str(plant), "--speed", "5000", "--hours", "0.01",
                 "--bindings-out", str(tmp_path / "bindings")])
    assert args.func(args, out=out) == 0
    text = out.getvalue()
    assert f"opc.tcp://127.0.0.1:{ua_port}/apc/virtual-plant/" in text and f"127.0.0.1:{mb_port}" in text
    docs = {p.stem: yaml.safe_load(p.read_text()) for p in (tmp_path / "bindings").glob("*.yaml")}
    assert sorted(docs) == ["cell-01", "cell-02", "cell-03"]
    assert parse_endpoint(docs["cell-03"]["endpoint"]).port == mb_port  # type: ignore[union-attr]
    assert {type(b).__name__ for b in parse_bindings(docs["cell-01"]["bindings"]).values()} == {"OpcUaTag"}
    assert parse_bindings(docs["cell-03"]["bindings"])["feed.sp_kg_h"].writable
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"units": {"cell-01": {"protocol": "opcua"}}}))
    args = _cli(["plant-sim", str(SITE_DEMO), "--plant", str(bad)])  # cell-02 and cell-03 not placed
    assert args.func(args, out=io.StringIO()) == 1


def test_apc_check_validates_plant_files_beside_recipes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """apc check recognises a virtual-plant file, accepts the shipped one and names the problem in a bad one."""
    from apc.cli import main

    shipped = Path(__file__).resolve().parent.parent / "recipes" / "plant.yaml"
    assert main(["check", str(shipped)]) == 0 and "plant.yaml: ok" in capsys.readouterr().out
    bad = tmp_path / "plant.yaml"
    bad.write_text("schema_version: 1\nunits: {cell-01: {protocol: profibus, port: 1}}\n")
    assert main(["check", str(bad)]) == 1
    assert "protocol" in capsys.readouterr().err
