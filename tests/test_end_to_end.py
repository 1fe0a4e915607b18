"""End to end on loopback: the runtime's units control the virtual plant over real OPC UA and Modbus
servers, an HMI client switches modes through the runtime's own OPC UA server, the DCS heartbeat
and the plant server's life decide the modes. Virtual time: each cycle sets the clock, scans the
plant, then runs the units' cycles (all network traffic is real)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from apc.assembly import load
from apc.audit import null_logger
from apc.clock import VirtualClock
from apc.hmi.client_cmds import HmiClientError, read_status, request_mode
from apc.hmi.server import HmiServer
from apc.hmi.users import load_users
from apc.remote_assembly import build_remote_unit
from apc.types import Mode
from apc.unit import Unit
from plant_io.virtual_plant import VirtualPlant, VirtualUnit, generate_bindings
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ND_RECIPE, scenario
from tests.test_hmi_server import Audit, Pki, pki  # noqa: F401  (pki is a fixture)

PERIOD_S = 5.0
SP_TAG = "feed.sp_kg_h"


class Site:
    """Units built from the virtual plant's binding files, stepped together in virtual time."""

    def __init__(self, vp: VirtualPlant, clock: VirtualClock, bindings: Path, audit: Any) -> None:
        self.vp, self.clock = vp, clock
        loaded = load(ND_RECIPE)
        generate_bindings(vp, bindings)
        self.units = {u.name: build_remote_unit(u.name, loaded, bindings / f"{u.name}.yaml", clock, audit=audit,
                                                real_time=False) for u in vp.units}
        self.k = 0
        self.last: dict[str, dict[str, Any]] = {}

    async def step(self, n: int = 1) -> None:
        """``n`` cycles: plant scan, then every unit's cycle, as ``apc run`` does."""
        for _ in range(n):
            t = self.k * PERIOD_S
            self.clock.set(t)
            await self.vp.scan()
            for name, unit in self.units.items():
                await unit.io.reconnect_if_due()  # type: ignore[attr-defined]
                self.last[name] = await unit.cycle(self.k, t, t, self.clock.utc())
            self.k += 1

    async def until(self, cond: Any, max_cycles: int) -> int:
        """Step until ``cond()`` holds; the cycles it took (fails after ``max_cycles``)."""
        for i in range(max_cycles):
            if cond():
                return i
            await self.step()
        raise AssertionError(f"condition not met in {max_cycles} cycles")


def _actual(unit: Unit) -> Mode:
    return unit.modes.actual


def _sp_writes(rec: dict[str, Any]) -> list[float]:
    return [w.value for w in rec.writes if w.tag == SP_TAG and w.ok]


def test_runtime_controls_virtual_plant_over_opcua_and_modbus(tmp_path: Path) -> None:
    """Both units reach ON through real servers; their feed setpoints arrive at the DCS and are in force."""

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell-ua", "nominal", 11, protocol="opcua", port=free_port()),
                           VirtualUnit("cell-mb", "nominal", 12, protocol="modbus", port=free_port())], clock)
        async with vp:
            site = Site(vp, clock, tmp_path, null_logger())
            for u in site.units.values():
                await u.io.connect()
                u.request_mode(Mode.ON, who="test", where="e2e", utc=clock.utc())
            await site.until(lambda: all(_actual(u) is Mode.ON for u in site.units.values()), 900)
            await site.step(12)
            for name in site.units:
                rec = site.last[name]
                written = _sp_writes(rec)
                assert written, name  # setpoint MVs are rewritten every ON cycle
                dcs = vp.io(name).dcs
                assert dcs.loops["feed"].remote and dcs.feed_sp_kg_h == pytest.approx(written[-1], abs=1e-4)
                assert rec.readback["oxide_feed"] == pytest.approx(written[-1], abs=1e-4)
            for u in site.units.values():
                await u.io.close()

    asyncio.run(run())


def test_hmi_operator_switches_on_and_off_and_wrong_or_viewer_writes_are_refused(tmp_path: Path,
                                                                                 pki: Pki) -> None:
    """An HMI operator's ON starts writes to the plant, OFF stops them; a wrong password and a viewer's
    write are refused and change nothing."""

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell-ua", "nominal", 13, protocol="opcua", port=free_port())], clock)
        audit = Audit()
        async with vp:
            site = Site(vp, clock, tmp_path, audit.logger)
            unit = site.units["cell-ua"]
            await unit.io.connect()
            srv = HmiServer(site.units, load_users(pki.users), endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc",
                            cert_path=pki.server_cert, key_path=pki.server_key, trusted_clients=pki.trusted,
                            audit=audit.logger, clock_utc=clock.utc)
            async with srv:
                with pytest.raises(HmiClientError):
                    await request_mode(srv.endpoint_url, pki.creds("olga", "wrong-password-1"), "cell-ua", "ON")
                with pytest.raises(HmiClientError, match="BadUserAccessDenied"):
                    await request_mode(srv.endpoint_url, pki.creds("vic"), "cell-ua", "ON")
                assert unit.modes.requested is Mode.OFF
                await request_mode(srv.endpoint_url, pki.creds("olga"), "cell-ua", "ON")
                assert unit.modes.requested is Mode.ON
                await site.until(lambda: _actual(unit) is Mode.ON, 900)
                await site.step(2)
                await srv.publish("cell-ua", site.last["cell-ua"])
                status = await read_status(srv.endpoint_url, pki.creds("vic"))
                assert [s.actual for s in status] == ["ON"]
                assert _sp_writes(site.last["cell-ua"]) and vp.io("cell-ua").dcs.loops["feed"].remote
                await request_mode(srv.endpoint_url, pki.creds("olga"), "cell-ua", "OFF")
                await site.step(3)
                assert _actual(unit) is Mode.OFF and _sp_writes(site.last["cell-ua"]) == []
                await site.step(int(vp.io("cell-ua").dcs.shed_timeout_s / PERIOD_S) + 2)
                assert not vp.io("cell-ua").dcs.loops["feed"].remote  # the DCS took the loop back
            assert [e["who"] for e in audit.events("mode_request")] == ["olga", "olga"]
            await unit.io.close()

    asyncio.run(run())


def test_frozen_dcs_heartbeat_sheds_within_the_recipe_timeout(tmp_path: Path) -> None:
    """When the virtual plant's DCS heartbeat stops counting, the unit sheds to STANDBY within dcs_timeout_s."""

    async def run() -> None:
        clock = VirtualClock()
        freeze_h = 0.9
        sc = scenario(events=[{"at_h": freeze_h, "kind": "dcs_heartbeat_freeze", "duration_h": 1.0}])
        vp = VirtualPlant([VirtualUnit("cell-ua", sc, 14, protocol="opcua", port=free_port())], clock)
        async with vp:
            site = Site(vp, clock, tmp_path, null_logger())
            unit = site.units["cell-ua"]
            await unit.io.connect()
            unit.request_mode(Mode.ON, who="test", where="e2e", utc=clock.utc())
            await site.until(lambda: _actual(unit) is Mode.ON, 900)
            assert site.k * PERIOD_S < freeze_h * 3600.0
            await site.until(lambda: _actual(unit) is not Mode.ON, 900)
            shed_after_s = site.k * PERIOD_S - freeze_h * 3600.0
            timeout_s = unit.recipe.io.heartbeat.dcs_timeout_s
            assert timeout_s < shed_after_s <= timeout_s + 2 * PERIOD_S
            assert "heartbeat" in site.last["cell-ua"].shed_reason
            await unit.io.close()

    asyncio.run(run())


def test_plant_server_restart_is_survived_standby_until_a_fresh_request(tmp_path: Path) -> None:
    """Plant server down: link loss, STANDBY, no writes; back up: reconnect, still STANDBY; a new ON request re-engages."""

    async def run() -> None:
        clock = VirtualClock()
        vp = VirtualPlant([VirtualUnit("cell-ua", "nominal", 15, protocol="opcua", port=free_port())], clock)
        async with vp:
            site = Site(vp, clock, tmp_path, null_logger())
            unit = site.units["cell-ua"]
            await unit.io.connect()
            unit.request_mode(Mode.ON, who="test", where="e2e", utc=clock.utc())
            await site.until(lambda: _actual(unit) is Mode.ON, 900)
            await vp.stop()
            await site.step(2)
            reason = site.last["cell-ua"].shed_reason
            assert _actual(unit) is Mode.STANDBY and "read failed" in reason, reason
            assert _sp_writes(site.last["cell-ua"]) == []
            await vp.start()
            await site.until(lambda: unit.io.connected, 60)  # type: ignore[attr-defined]
            await site.step(20)
            assert _actual(unit) is Mode.STANDBY  # a shed stays latched until an operator asks again
            assert _sp_writes(site.last["cell-ua"]) == []
            unit.request_mode(Mode.ON, who="test", where="e2e", utc=clock.utc())
            await site.until(lambda: _actual(unit) is Mode.ON, 900)
            await site.step(1)
            assert _sp_writes(site.last["cell-ua"])
            await unit.io.close()

    asyncio.run(run())
