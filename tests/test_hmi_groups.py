"""Group nodes of the HMI server and `apc mode --group`, over real asyncua clients on the loopback endpoint."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua

from apc.audit import make_logger
from apc.groups import PENDING, site_groups
from apc.hmi.cli import add_subcommands
from apc.hmi.group_nodes import group_node_id
from apc.hmi.server import HMI_NAMESPACE, HmiServer
from apc.hmi.users import add_user, load_users
from apc.recipe.group_schema import GroupSpec
from apc.types import Mode
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import SimUnit, scenario

GROUP = "potline-1"
CELLS = ("cell-01", "cell-02", "cell-03")
PASSWORDS = {"olga": "operator-secret", "vic": "viewer-secret"}
SHED = "DCS took loop(s) out of remote: oxide_feed"


class Audit:
    """An audit logger writing JSON lines to memory, and the events it logged."""

    def __init__(self) -> None:
        self.buf = io.StringIO()
        self.logger = make_logger(self.buf)

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.buf.getvalue().splitlines() if line]
        return [e for e in lines if e["event"] == name]


class Potline:
    """Three simulated cells in STANDBY (``warm``: warmed up, ready for ON); cell-03 carries a latched shed."""

    def __init__(self, audit: Audit, warm: bool = True) -> None:
        self.cells = {n: SimUnit(scen=scenario(), seed=200 + i, audit=audit.logger, name=n) for i, n in enumerate(CELLS)}
        for c in self.cells.values():
            c.request(Mode.STANDBY)
            if not warm:
                continue
            modes = c.unit.modes
            c.run_until(lambda r, m=modes: r.estimate.health == "ok" and m.warm_remaining_s(r.t_s) == 0, 1000)
        self.cells["cell-03"].unit.modes.latch(SHED, Mode.ON)
        self.groups = site_groups([GroupSpec(GROUP, CELLS)], {n: c.unit for n, c in self.cells.items()}, audit.logger)

    async def cycle(self, srv: HmiServer) -> None:
        """One cycle of every cell, published."""
        for name, c in self.cells.items():
            await srv.publish(name, c.step()[0])


def _users(tmp_path: Path) -> Path:
    users = tmp_path / "users.yaml"
    add_user(users, "olga", "operator", PASSWORDS["olga"], n=2**10)
    add_user(users, "vic", "viewer", PASSWORDS["vic"], n=2**10)
    return users


@asynccontextmanager
async def hmi(tmp_path: Path, line: Potline, audit: Audit) -> AsyncIterator[HmiServer]:
    """The HMI server of the potline on the insecure loopback endpoint."""
    srv = HmiServer({n: c.unit for n, c in line.cells.items()}, load_users(_users(tmp_path)),
                    endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc", cert_path=None, key_path=None,
                    allow_insecure_loopback=True, audit=audit.logger, clock_utc=line.cells["cell-01"].clock.utc,
                    groups=line.groups)
    async with srv:
        await line.cycle(srv)
        yield srv


@asynccontextmanager
async def session(srv: HmiServer, user: str) -> AsyncIterator[tuple[Client, int]]:
    """A loopback session of ``user``."""
    c = Client(srv.endpoint_url, timeout=3)
    c.set_user(user)
    c.set_password(PASSWORDS[user])
    async with c:
        yield c, await c.get_namespace_index(HMI_NAMESPACE)


async def read(c: Client, ns: int, key: str) -> Any:
    """One group node's value."""
    return await c.get_node(ua.NodeId(group_node_id(GROUP, key), ns)).read_value()


async def write_mode(c: Client, ns: int, mode: str) -> str:
    """Write the group's RequestedMode; the status code's name."""
    nid = ua.NodeId(group_node_id(GROUP, "RequestedMode"), ns)
    (status,) = await c.uaclient.write_attributes([nid], [ua.DataValue(ua.Variant(mode, ua.VariantType.String))],
                                                  ua.AttributeIds.Value)
    return str(status.name)


def test_group_write_requests_every_member_and_reports_the_one_that_refuses(tmp_path: Path) -> None:
    """An operator's group ON reaches every member in one audited request; the shed member says why it did not engage."""
    audit = Audit()
    line = Potline(audit)

    async def scenario_() -> None:
        async with hmi(tmp_path, line, audit) as srv, session(srv, "olga") as (c, ns):
            assert await read(c, ns, "Members") == list(CELLS)
            assert await write_mode(c, ns, "ON") == "Good"
            assert {n: cell.unit.modes.requested for n, cell in line.cells.items()} == dict.fromkeys(CELLS, Mode.ON)
            assert await read(c, ns, "MemberStatus") == [
                PENDING, PENDING, f"not engaged: shed latched: {SHED} (request ON on the unit to clear it)"]
            await line.cycle(srv)
            assert await read(c, ns, "MemberStatus") == ["engaged", "engaged", f"not engaged: shed latched: {SHED}"]
            assert (await read(c, ns, "UnitsOn"), await read(c, ns, "UnitsShed")) == (2, 1)
            assert await read(c, ns, "RequestedMode") == "ON"
            for name in CELLS:  # each member's own node shows the request too
                assert await c.get_node(ua.NodeId(f"{name}.RequestedMode", ns)).read_value() == "ON"

    asyncio.run(scenario_())
    (event,) = audit.events("group_mode_requested")
    assert (event["group"], event["members"], event["who"], event["new"]) == (GROUP, list(CELLS), "olga", "ON")
    assert event["where"].startswith("hmi 127.0.0.1:")
    requests = audit.events("mode_request")[-3:]
    assert [(e["unit"], e["group"], e["new"]) for e in requests] == [(n, GROUP, "ON") for n in CELLS]
    changes = [e for e in audit.events("mode_change") if e["new"] == "ON"]
    assert sorted(e["unit"] for e in changes) == ["cell-01", "cell-02"]
    assert line.cells["cell-03"].unit.modes.shed_reason == SHED, "a group request leaves a latched shed latched"


def test_viewer_group_write_is_refused_and_audited(tmp_path: Path) -> None:
    """A viewer's group write gets BadUserAccessDenied, is audited with the group, and changes no member."""
    audit = Audit()
    line = Potline(audit, warm=False)

    async def scenario_() -> None:
        async with hmi(tmp_path, line, audit) as srv, session(srv, "vic") as (c, ns):
            assert await write_mode(c, ns, "ON") == "BadUserAccessDenied"
            assert await read(c, ns, "UnitsStandby") == 3

    asyncio.run(scenario_())
    assert {cell.unit.modes.requested for cell in line.cells.values()} == {Mode.STANDBY}
    (refused,) = audit.events("hmi_write_refused")
    assert (refused["who"], refused["group"], refused["what"]) == ("vic", GROUP, f"Groups.{GROUP}.RequestedMode")
    assert "needs operator" in refused["why"]
    assert audit.events("group_mode_requested") == []


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="apc")
    add_subcommands(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_mode_group_command_prints_each_member_after_its_next_cycle(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`apc mode --group` asks every member at once and prints engaged / not engaged: why, from the next cycle."""
    audit = Audit()
    line = Potline(audit)
    creds = tmp_path / "olga.yaml"
    creds.write_text(yaml.safe_dump({"username": "olga", "password": PASSWORDS["olga"]}))
    creds.chmod(0o600)

    async def scenario_() -> int:
        async with hmi(tmp_path, line, audit) as srv:
            argv = ["mode", "--group", GROUP, "ON", "--endpoint", srv.endpoint_url, "--credentials", str(creds),
                    "--insecure-loopback", "--wait", "20"]
            command = asyncio.create_task(asyncio.to_thread(_cli, argv))
            cycles = 0
            while not command.done() and cycles < 4000:  # the units cycle on while the command waits
                await line.cycle(srv)
                cycles += 1
                await asyncio.sleep(0)
            assert _cli(["mode", "cell-01", "ON", "--group", GROUP, "--endpoint", srv.endpoint_url,
                         "--credentials", str(creds)]) == 2, "a unit or a group, not both"
            return await command

    assert asyncio.run(scenario_()) == 0
    out = capsys.readouterr().out
    assert f"group {GROUP}: requested ON for 3 unit(s)" in out
    assert "  cell-01: engaged\n  cell-02: engaged\n" in out
    assert f"  cell-03: not engaged: shed latched: {SHED}\n" in out
    assert len(audit.events("group_mode_requested")) == 1
