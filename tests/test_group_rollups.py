"""Group roll-ups of alarms and plant KPIs, and each unit's Performance nodes, on the HMI server (real asyncua client)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from asyncua import ua

from apc.alarms.book import AlarmBook
from apc.alarms.monitor import SiteAlarms
from apc.assembly import record_header
from apc.hmi.group_nodes import group_node_id
from apc.hmi.server import HmiServer
from apc.hmi.users import load_users
from apc.performance import SitePerformance
from tests.helpers.loopback_servers import free_port
from tests.test_hmi_groups import CELLS, GROUP, Audit, Potline, _users, session


def test_group_shows_its_members_alarms_and_service_factor_and_units_their_performance(tmp_path: Path) -> None:
    """With one member shed, the group's ActiveAlarms/UnackedAlarms count that member's alarms and ServiceFactor equals ON over available hours summed over members; a unit's Performance nodes carry its plant KPIs."""
    audit = Audit()
    line = Potline(audit)
    book, perf = AlarmBook(None, audit=audit.logger), SitePerformance()
    alarms = SiteAlarms(book)
    for name, cell in line.cells.items():
        perf.add_unit(name, record_header(name, cell.loaded, cell.clock, "baseline"))
    srv = HmiServer({n: c.unit for n, c in line.cells.items()}, load_users(_users(tmp_path)),
                    endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc", cert_path=None, key_path=None,
                    allow_insecure_loopback=True, audit=audit.logger, clock_utc=line.cells["cell-01"].clock.utc,
                    groups=line.groups, alarms=book, performance=perf)

    async def run() -> None:
        async with srv, session(srv, "vic") as (c, ns):
            for _ in range(24):  # two Performance refreshes
                for name, cell in line.cells.items():
                    rec = cell.step()[0]
                    changes = alarms.observe(cell.unit, rec)
                    perf.observe(name, rec)
                    await srv.publish(name, rec)
                    await srv.publish_alarms(changes)

            async def group(key: str) -> object:
                return await c.get_node(ua.NodeId(group_node_id(GROUP, key), ns)).read_value()

            active = sum(book.active_count(n) for n in CELLS)
            assert book.get("cell-03.Alarms.shed") is not None and active >= 1
            assert await group("ActiveAlarms") == active
            assert await group("UnackedAlarms") == sum(book.unacked_count(n) for n in CELLS)
            g = perf.group(CELLS)
            assert g.available_h > 0 and await group("ServiceFactor") == g.on_h / g.available_h
            cycles = await c.get_node(ua.NodeId("cell-01.Performance.cycles", ns)).read_value()
            figures = perf.figures("cell-01")
            assert figures is not None and 0 < cycles <= figures.values["cycles"] < cycles + 12  # refreshed every 12
            why = await c.get_node(ua.NodeId("cell-01.Performance.NotComputable", ns)).read_value()
            assert isinstance(why, str)

    asyncio.run(run())
