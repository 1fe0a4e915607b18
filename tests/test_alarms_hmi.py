"""Alarms & Conditions on the HMI server, seen by a plain asyncua client on loopback, with a real simulated Unit."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from apc.alarms.book import AlarmBook
from apc.alarms.monitor import SiteAlarms
from apc.audit import make_logger
from apc.hmi.certs import application_uri_of
from apc.hmi.client_cmds import HmiCredentials
from apc.hmi.server import HmiServer
from apc.hmi.users import load_users
from apc.types import Mode
from tests.helpers.hmi_pki import HmiPki, make_pki
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import SimUnit, event_from_cycle, scenario

UNIT = "cell-a"
ACK = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> HmiPki:
    return make_pki(tmp_path_factory.mktemp("alarm_pki"))


class Audit:
    """JSON-lines audit in memory."""

    def __init__(self) -> None:
        self.buf = io.StringIO()
        self.logger = make_logger(self.buf)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in (json.loads(x) for x in self.buf.getvalue().splitlines() if x) if e["event"] == name]


class Events:
    """asyncua subscription handler: every event notification, in a queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.queue.put_nowait(event)

    async def next(self, timeout_s: float) -> Any:
        return await asyncio.wait_for(self.queue.get(), timeout_s)

    async def next_of(self, cause: str, timeout_s: float) -> Any:
        while True:
            ev = await self.next(timeout_s)
            if ev.ConditionName == cause:
                return ev


@asynccontextmanager
async def client(url: str, creds: HmiCredentials) -> AsyncIterator[Client]:
    """A plain asyncua SignAndEncrypt session, as any third-party OPC UA client makes."""
    c = Client(url, timeout=3)
    c.application_uri = application_uri_of(creds.client_cert)  # type: ignore[arg-type]
    c.set_user(creds.username)
    c.set_password(creds.password)
    await c.set_security(SecurityPolicyBasic256Sha256, str(creds.client_cert), str(creds.client_key),
                         server_certificate=str(creds.server_cert))
    async with c:
        yield c


class Rig:
    """One simulated unit, its alarm rules and book, and the HMI server that publishes both."""

    def __init__(self, pki: HmiPki, state: Path, su: SimUnit, audit: Audit) -> None:
        self.su = su
        self.book = AlarmBook(state / "alarms.json", audit=audit.logger)
        self.book.load(su.clock.utc())
        self.alarms = SiteAlarms(self.book)
        self.server = HmiServer({UNIT: su.unit}, load_users(pki.users),
                                endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc", cert_path=pki.server_cert,
                                key_path=pki.server_key, audit=audit.logger, clock_utc=su.clock.utc,
                                trusted_clients=pki.trusted, alarms=self.book)

    async def cycle(self, n: int = 1) -> Any:
        """``n`` cycles as ``apc run`` does them: the cycle, then its record and alarm changes published."""
        rec = None
        for rec in self.su.step(n):
            changes = self.alarms.observe(self.su.unit, rec)
            await self.server.publish(UNIT, rec)
            await self.server.publish_alarms(changes)
        return rec

    async def until(self, pred: Any, max_cycles: int) -> Any:
        for _ in range(max_cycles):
            rec = await self.cycle()
            if pred(rec):
                return rec
        raise AssertionError(f"not reached within {max_cycles} cycles")


def _bad_voltage(k: int, cycles: int) -> list[dict[str, Any]]:
    return [{"at_h": event_from_cycle(k), "kind": "input_fault", "signal": "cell_voltage_V", "fault": "bad",
             "duration_h": cycles * 5.0 / 3600.0}]


def test_shed_alarm_reaches_a_plain_subscriber_in_its_cycle_is_acked_by_an_operator_and_clears(
        pki: HmiPki, tmp_path: Path) -> None:
    """A shed raises one AlarmCondition event (unit, severity, reason) received before the next cycle; a viewer's Acknowledge is refused, the operator's accepted; re-engaging clears it."""
    audit = Audit()
    su = SimUnit(scen=scenario(events=_bad_voltage(600, 30)), audit=audit.logger, name=UNIT, seed=3)
    rig = Rig(pki, tmp_path, su, audit)

    async def run() -> None:
        async with rig.server, client(rig.server.endpoint_url, pki.creds("olga")) as c, \
                client(rig.server.endpoint_url, pki.creds("vic")) as viewer:
            events = Events()
            sub = await c.create_subscription(20, events)
            await sub.subscribe_events(c.nodes.server, ua.ObjectIds.AlarmConditionType)
            su.request(Mode.ON)
            await rig.until(lambda r: r.mode.actual == "ON", 1000)
            while not events.queue.empty():  # warm-up alarms (estimator) are not what this test is about
                events.queue.get_nowait()
            rec = await rig.until(lambda r: r.shed, 400)
            ev = await events.next_of("shed", timeout_s=su.period)  # within one cycle (real time)
            assert ev.SourceName == UNIT and ev.Severity == 700 and getattr(ev, "ActiveState/Id") is True
            assert getattr(ev, "AckedState/Id") is False and ev.Retain is True
            assert rec.shed_reason in ev.Message.Text
            shed_id = ev.NodeId
            assert shed_id == ua.NodeId(f"{UNIT}.Alarms.shed", shed_id.NamespaceIndex)
            await rig.cycle(3)
            assert [e for e in audit.events("alarm_raised") if e["cause"] == "shed"] and \
                len([e for e in audit.events("alarm_raised") if e["cause"] == "shed"]) == 1, "raised once"

            with pytest.raises(ua.UaStatusCodeError) as refused:
                await viewer.get_node(shed_id).call_method(ACK, ev.EventId, ua.LocalizedText("seen"))
            assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
            assert rig.book.get(f"{UNIT}.Alarms.shed").acked is False  # type: ignore[union-attr]
            await c.get_node(shed_id).call_method(ACK, ev.EventId, ua.LocalizedText("feeder checked"))
            acked = await events.next_of("shed", timeout_s=su.period)
            assert getattr(acked, "AckedState/Id") is True and getattr(acked, "ActiveState/Id") is True
            with pytest.raises(ua.UaStatusCodeError) as twice:
                await c.get_node(shed_id).call_method(ACK, acked.EventId, ua.LocalizedText(""))
            assert twice.value.code == ua.StatusCodes.BadConditionBranchAlreadyAcked

            await rig.cycle(40)  # the voltage fault is over; the shed stays latched until an operator asks
            assert rig.book.get(f"{UNIT}.Alarms.shed").active  # type: ignore[union-attr]
            su.request(Mode.ON)
            await rig.until(lambda r: r.mode.actual == "ON", 1000)
            cleared = await events.next_of("shed", timeout_s=su.period)
            assert getattr(cleared, "ActiveState/Id") is False and cleared.Retain is False

    asyncio.run(run())
    (ack,) = audit.events("alarm_acknowledged")
    assert (ack["who"], ack["cause"], ack["comment"]) == ("olga", "shed", "feeder checked")
    assert [(e["who"], e["status"]) for e in audit.events("hmi_alarm_call_refused")] == [
        ("vic", "BadUserAccessDenied"), ("olga", "BadConditionBranchAlreadyAcked")]
    assert [e["cause"] for e in audit.events("alarm_cleared")].count("shed") == 1


def test_unacknowledged_alarms_survive_a_restart_and_come_back_on_condition_refresh(
        pki: HmiPki, tmp_path: Path) -> None:
    """An active, unacknowledged alarm is in the state file; a new server and book restore it and a new client's ConditionRefresh shows it."""
    audit = Audit()
    su = SimUnit(scen=scenario(events=_bad_voltage(600, 30)), audit=audit.logger, name=UNIT, seed=3)
    rig = Rig(pki, tmp_path, su, audit)

    async def first() -> None:
        async with rig.server:
            su.request(Mode.ON)
            await rig.until(lambda r: r.mode.actual == "ON", 1000)
            await rig.until(lambda r: r.shed, 400)

    asyncio.run(first())
    saved = json.loads((tmp_path / "alarms.json").read_text())
    assert "shed" in {a["cause"] for a in saved["alarms"]}
    again = Rig(pki, tmp_path, SimUnit(audit=audit.logger, name=UNIT), audit)
    assert again.book.get(f"{UNIT}.Alarms.shed").active  # type: ignore[union-attr]

    async def second() -> None:
        async with again.server, client(again.server.endpoint_url, pki.creds("vic")) as c:
            events = Events()
            sub = await c.create_subscription(20, events)
            await sub.subscribe_events(c.nodes.server, ua.ObjectIds.AlarmConditionType)
            await c.nodes.server.call_method(ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                                             ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
            seen = {}
            while "shed" not in seen:
                ev = await events.next(timeout_s=5.0)
                seen[ev.ConditionName] = ev
            assert getattr(seen["shed"], "AckedState/Id") is False and seen["shed"].Retain is True

    asyncio.run(second())
    assert audit.events("alarms_restored")


def test_apc_alarms_lists_and_acknowledges_from_the_command_line(pki: HmiPki, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`apc alarms` lists the active shed; `--ack` by a viewer is refused (exit 1), by an operator accepted and audited."""
    from apc.cli import main

    audit = Audit()
    su = SimUnit(scen=scenario(events=_bad_voltage(600, 30)), audit=audit.logger, name=UNIT, seed=3)
    rig = Rig(pki, tmp_path, su, audit)
    cid = f"{UNIT}.Alarms.shed"

    async def run() -> None:
        async with rig.server:
            su.request(Mode.ON)
            await rig.until(lambda r: r.mode.actual == "ON", 1000)
            await rig.until(lambda r: r.shed, 400)
            url = rig.server.endpoint_url

            def apc(user: str, *args: str) -> int:
                return main(["alarms", "--endpoint", url, "--credentials", str(pki.creds_file(user)), *args])

            assert await asyncio.to_thread(apc, "vic", "--json") == 0
            listed = json.loads(capsys.readouterr().out)
            shed = next(a for a in listed if a["condition"] == cid)
            assert (shed["unit"], shed["active"], shed["acked"], shed["severity"]) == (UNIT, True, False, 700)
            assert await asyncio.to_thread(apc, "vic", "--ack", cid) == 1
            assert "refused: BadUserAccessDenied" in capsys.readouterr().out
            assert await asyncio.to_thread(apc, "olga", "--ack", cid, "--comment", "on it") == 0
            assert f"{cid}: acknowledged" in capsys.readouterr().out
            assert await asyncio.to_thread(apc, "vic") == 0
            line = next(x for x in capsys.readouterr().out.splitlines() if cid in x)
            assert "ACTIVE" in line and "unacked" not in line

    asyncio.run(run())
    assert [(e["who"], e["comment"]) for e in audit.events("alarm_acknowledged")] == [("olga", "on it")]


def test_confirm_comment_and_shelving_through_the_standard_methods(pki: HmiPki, tmp_path: Path) -> None:
    """Confirm before Acknowledge is refused; after it accepted; AddComment is stored; TimedShelve on ShelvingState beyond 8 h is refused, within accepted and shown; Unshelve ends it."""
    audit = Audit()
    su = SimUnit(scen=scenario(events=_bad_voltage(600, 30)), audit=audit.logger, name=UNIT, seed=3)
    rig = Rig(pki, tmp_path, su, audit)
    confirm = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Confirm)
    comment = ua.NodeId(ua.ObjectIds.ConditionType_AddComment)
    timed = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_TimedShelve)
    unshelve = ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_Unshelve)

    async def run() -> None:
        async with rig.server, client(rig.server.endpoint_url, pki.creds("olga")) as c:
            events = Events()
            sub = await c.create_subscription(20, events)
            await sub.subscribe_events(c.nodes.server, ua.ObjectIds.AlarmConditionType)
            su.request(Mode.ON)
            await rig.until(lambda r: r.mode.actual == "ON", 1000)
            await rig.until(lambda r: r.shed, 400)
            ev = await events.next_of("shed", timeout_s=5.0)
            cond = c.get_node(ev.NodeId)
            shelving = c.get_node(ua.NodeId(f"{UNIT}.Alarms.shed.ShelvingState", ev.NodeId.NamespaceIndex))
            with pytest.raises(ua.UaStatusCodeError) as early:
                await cond.call_method(confirm, ev.EventId, ua.LocalizedText(""))
            assert early.value.code == ua.StatusCodes.BadInvalidState
            await cond.call_method(comment, ev.EventId, ua.LocalizedText("electrician called"))
            commented = await events.next_of("shed", timeout_s=5.0)
            assert commented.Comment.Text == "electrician called" and commented.ClientUserId == "olga"
            await cond.call_method(ACK, commented.EventId, ua.LocalizedText(""))
            acked = await events.next_of("shed", timeout_s=5.0)
            await cond.call_method(confirm, acked.EventId, ua.LocalizedText("done"))
            assert getattr(await events.next_of("shed", timeout_s=5.0), "ConfirmedState/Id") is True
            with pytest.raises(ua.UaStatusCodeError) as long:
                await shelving.call_method(timed, ua.Variant(9 * 3600e3, ua.VariantType.Double))
            assert long.value.code == ua.StatusCodes.BadShelvingTimeOutOfRange
            await shelving.call_method(timed, ua.Variant(600e3, ua.VariantType.Double))
            shelved = await events.next_of("shed", timeout_s=5.0)
            assert shelved.SuppressedOrShelved is True
            assert getattr(shelved, "ShelvingState/CurrentState").Text == "TimedShelved"
            await shelving.call_method(unshelve)
            assert (await events.next_of("shed", timeout_s=5.0)).SuppressedOrShelved is False

    asyncio.run(run())
    assert [e["event"] for e in (json.loads(x) for x in audit.buf.getvalue().splitlines())
            if e["event"].startswith("alarm_") and e.get("cause") == "shed"][1:] == [
        "alarm_commented", "alarm_acknowledged", "alarm_confirmed", "alarm_shelved", "alarm_unshelved"]
