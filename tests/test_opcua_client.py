"""OpcUaPlantIO against a real asyncua server on 127.0.0.1 (no protocol mocks)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from asyncua import Client, ua

from apc.types import Quality, Write
from plant_io.bindings import OpcUaEndpoint, OpcUaTag, parse_bindings, parse_endpoint
from plant_io.errors import PlantBindingError, PlantIOError, PlantLinkDown
from plant_io.opcua_client import OpcUaPlantIO
from tests.helpers.loopback_servers import (
    UaServerSecurity,
    UaVar,
    free_port,
    make_certificate,
    opcua_server,
    silent_tcp_server,
)

VT = ua.VariantType
VARS = [
    UaVar("cell.voltage", VT.Double, 4.2),
    UaVar("cell.bath_temp", VT.Float, 960.0),
    UaVar("cell.current", VT.Double, 6.0),
    UaVar("lab.oxide", VT.Double, 2.0),
    UaVar("feed.sp", VT.Float, 100.0, writable=True),
    UaVar("anode.seq", VT.Int32, 0, writable=True),
    UaVar("feed.apc_active", VT.Boolean, False, writable=True),
]
TYPES = {"cell.voltage": "Double", "cell.bath_temp": "Float", "cell.current": "Double", "lab.oxide": "Double",
         "feed.sp": "Float", "anode.seq": "Int32", "feed.apc_active": "Boolean"}
WRITABLE = {"feed.sp", "anode.seq", "feed.apc_active"}


@dataclass
class FakeClock:
    """Injected clocks: the test decides what time it is."""

    utc_s: float = 1_700_000_000.0
    mono_s: float = 0.0

    def utc(self) -> float:
        return self.utc_s

    def monotonic(self) -> float:
        return self.mono_s


def _tags(srv_nodes: dict[str, str], **overrides: OpcUaTag) -> dict[str, OpcUaTag]:
    tags = {name: OpcUaTag(nid, TYPES[name], name in WRITABLE)  # type: ignore[arg-type]
            for name, nid in srv_nodes.items()}
    tags.update(overrides)
    return tags


def _plant(url: str, tags: dict[str, OpcUaTag], clock: FakeClock, **ep: object) -> OpcUaPlantIO:
    settings: dict[str, object] = {"timeout_s": 1.0, "reconnect_min_s": 1.0, "reconnect_max_s": 5.0}
    settings.update(ep)
    endpoint = OpcUaEndpoint(url=url, security="none", **settings)  # type: ignore[arg-type]
    return OpcUaPlantIO(endpoint, tags, clock.utc, clock.monotonic)


def test_batched_read_keeps_uncertain_bad_quality_and_source_timestamps() -> None:
    """One Read call; Good/Uncertain/Bad map to quality, Bad → nan, source timestamps kept, unbound tags absent."""

    async def scenario() -> None:
        async with opcua_server(VARS) as srv:
            t_src = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
            await srv.set_value("cell.voltage", 4.35, VT.Double, source_ts=t_src)
            await srv.set_value("cell.bath_temp", 955.5, VT.Float, ua.StatusCodes.UncertainLastUsableValue,
                                t_src + dt.timedelta(seconds=1))
            await srv.set_value("cell.current", None, VT.Null, ua.StatusCodes.BadSensorFailure, t_src)
            await srv.set_value("lab.oxide", 2.5, VT.Double, ua.StatusCodes.BadOutOfService)
            clock = FakeClock()
            by_uri = OpcUaTag("nsu=urn:apc:loopback;s=cell.voltage", "Double")  # namespace resolved at connect
            plant = _plant(srv.url, _tags({n: srv.node_id(n) for n in TYPES}, **{"cell.voltage": by_uri}), clock)
            await plant.connect()
            try:
                n_before = len(srv.reads)
                snap = await plant.read(["cell.voltage", "cell.bath_temp", "cell.current", "lab.oxide", "not.bound"])
                assert len(srv.reads) - n_before == 1, "one batched Read service call"
                assert len(srv.reads[-1]) == 4
            finally:
                await plant.close()
        assert set(snap) == {"cell.voltage", "cell.bath_temp", "cell.current", "lab.oxide"}
        v, t, c, lab = snap["cell.voltage"], snap["cell.bath_temp"], snap["cell.current"], snap["lab.oxide"]
        assert (v.value, v.quality, v.source_ts) == (4.35, Quality.GOOD, t_src.timestamp())
        assert t.quality is Quality.UNCERTAIN and t.value == pytest.approx(955.5)
        assert t.source_ts == t_src.timestamp() + 1.0
        assert c.quality is Quality.BAD and math.isnan(c.value) and c.source_ts == t_src.timestamp()
        assert lab.quality is Quality.BAD and math.isnan(lab.value), "Bad status wins over a numeric value"
        assert {s.receive_ts for s in snap.values()} == {clock.utc_s}

    asyncio.run(scenario())


def test_typed_write_to_float_node_succeeds_where_guessed_double_fails() -> None:
    """The binding's VariantType makes a Float write succeed where asyncua's guessed Double fails; no timestamps."""

    async def scenario() -> None:
        async with opcua_server(VARS) as srv:
            plant = _plant(srv.url, _tags({n: srv.node_id(n) for n in TYPES}), FakeClock())
            await plant.connect()
            try:
                res = await plant.write([Write("feed.sp", 123.5), Write("anode.seq", 7.0),
                                         Write("feed.apc_active", 1.0)])
            finally:
                await plant.close()
            assert [r.ok for r in res] == [True, True, True], res
            assert srv.value("feed.sp") == pytest.approx(123.5)
            assert srv.value("anode.seq") == 7 and srv.value("feed.apc_active") is True
            (sent,) = srv.writes
            assert [wv.Value.Value.VariantType for wv in sent] == [VT.Float, VT.Int32, VT.Boolean]
            assert all(wv.Value.SourceTimestamp is None and wv.Value.ServerTimestamp is None for wv in sent)
            async with Client(srv.url, timeout=1.0) as plain:  # the pitfall: write_values guesses Double
                (status,) = await plain.write_values([plain.get_node(srv.nodes["feed.sp"])], [99.0],
                                                     raise_on_partial_error=False)
            assert status.value == ua.StatusCodes.BadTypeMismatch
            assert srv.value("feed.sp") == pytest.approx(123.5)

    asyncio.run(scenario())


def test_write_status_codes_are_checked_per_write() -> None:
    """A node made read-only after connect gives ok=False + status name; its neighbour in the batch succeeds."""

    async def scenario() -> None:
        async with opcua_server(VARS) as srv:
            plant = _plant(srv.url, _tags({n: srv.node_id(n) for n in TYPES}), FakeClock())
            await plant.connect()
            try:
                await srv.set_writable("feed.sp", False)
                res = await plant.write([Write("feed.sp", 110.0), Write("anode.seq", 3.0)])
            finally:
                await plant.close()
            assert len(srv.writes) == 1 and len(srv.writes[0]) == 2, "one batched Write call"
            assert (res[0].tag, res[0].ok) == ("feed.sp", False)
            assert res[0].detail.startswith("Bad"), res[0].detail
            assert (res[1].tag, res[1].ok) == ("anode.seq", True)
            assert srv.value("feed.sp") == pytest.approx(100.0) and srv.value("anode.seq") == 3

    asyncio.run(scenario())


def test_local_write_refusals_send_nothing() -> None:
    """Unbound tags, read-only bindings and values that do not fit the node type are refused without traffic."""

    async def scenario() -> None:
        async with opcua_server(VARS) as srv:
            tags = _tags({n: srv.node_id(n) for n in TYPES})
            plant = _plant(srv.url, tags, FakeClock())
            await plant.connect()
            try:
                res = await plant.write([
                    Write("not.bound", 1.0),
                    Write("cell.voltage", 4.0),       # bound read-only
                    Write("anode.seq", 2.5),          # Int32: not integral
                    Write("anode.seq", 2.0**31),      # Int32: out of range
                    Write("feed.apc_active", 0.5),    # Boolean: not 0/1
                    Write("feed.sp", math.nan),
                    Write("feed.sp", 1e39),           # beyond float32
                ])
            finally:
                await plant.close()
            assert srv.writes == []
            assert not any(r.ok for r in res)
            assert res[0].detail == "not bound" and "not writable" in res[1].detail
            assert "integral" in res[2].detail and "range" in res[3].detail and "range" in res[6].detail
            assert srv.value("anode.seq") == 0

    asyncio.run(scenario())


def test_binding_verification_lists_every_mismatch() -> None:
    """connect() names every tag with a wrong type, missing node/namespace or writable binding on a read-only node."""

    async def scenario() -> None:
        async with opcua_server(VARS) as srv:
            tags = _tags(
                {n: srv.node_id(n) for n in TYPES},
                **{
                    "cell.bath_temp": OpcUaTag(srv.node_id("cell.bath_temp"), "Double"),
                    "cell.ghost": OpcUaTag(f"ns={srv.ns};s=cell.ghost", "Double"),
                    "cell.elsewhere": OpcUaTag("nsu=urn:not-here;s=x", "Double"),
                    "cell.voltage": OpcUaTag(srv.node_id("cell.voltage"), "Double", writable=True),
                },
            )
            plant = _plant(srv.url, tags, FakeClock())
            with pytest.raises(PlantBindingError) as err:
                await plant.connect()
            assert not plant.connected
            await plant.close()
        problems = err.value.problems
        assert len(problems) == 4, problems
        assert any(p.startswith("cell.bath_temp:") and "Float" in p and "Double" in p for p in problems)
        assert any(p.startswith("cell.ghost:") and "not found" in p for p in problems)
        assert any(p.startswith("cell.elsewhere:") and "namespace" in p for p in problems)
        assert any(p.startswith("cell.voltage:") and "CurrentWrite" in p for p in problems)

    asyncio.run(scenario())


def test_server_stop_raises_link_down_promptly_then_reconnects_after_restart() -> None:
    """A stopped server gives PlantLinkDown within the timeout; after a restart on the same port it reconnects."""

    async def scenario() -> None:
        port = free_port()
        clock = FakeClock()
        async with opcua_server(VARS, port=port) as srv:
            plant = _plant(srv.url, _tags({n: srv.node_id(n) for n in TYPES}), clock)
            await plant.connect()
            assert (await plant.read(["cell.voltage"]))["cell.voltage"].value == 4.2
        t0 = time.monotonic()
        with pytest.raises(PlantLinkDown):
            await plant.read(["cell.voltage"])
        assert time.monotonic() - t0 < 1.5, "bounded by timeout_s"
        assert not plant.connected
        clock.mono_s = 10.0
        assert await plant.reconnect_if_due() is False  # server still down: attempt fails, back off
        assert plant.next_reconnect_s == 11.0
        with pytest.raises(PlantLinkDown):
            await plant.read(["cell.voltage"])
        async with opcua_server(VARS, port=port) as srv2:
            await srv2.set_value("cell.voltage", 4.4, VT.Double)
            assert await plant.reconnect_if_due(10.5) is False, "back-off not elapsed: no attempt"
            assert await plant.reconnect_if_due(11.0) is True
            snap = await plant.read(["cell.voltage"])
            await plant.close()
        assert snap["cell.voltage"].value == 4.4 and snap["cell.voltage"].quality is Quality.GOOD

    asyncio.run(scenario())


def test_reconnect_backoff_doubles_and_caps_on_the_injected_clock() -> None:
    """With nothing listening, attempts fail fast and the next attempt time follows 1, 2, 4, 5, 5 s (capped)."""

    async def scenario() -> None:
        clock = FakeClock()
        plant = _plant(f"opc.tcp://127.0.0.1:{free_port()}/apc/", {"x": OpcUaTag("ns=2;s=x", "Double")}, clock)
        with pytest.raises(PlantLinkDown):
            await plant.read(["x"])
        due = []
        now = 0.0
        for _ in range(5):
            t0 = time.monotonic()
            assert await plant.reconnect_if_due(now) is False
            assert time.monotonic() - t0 < 1.5
            due.append(plant.next_reconnect_s)
            assert await plant.reconnect_if_due(plant.next_reconnect_s - 0.01) is False
            assert due[-1] == plant.next_reconnect_s, "no attempt before it is due"
            now = plant.next_reconnect_s
        await plant.close()
        assert due == [1.0, 3.0, 7.0, 12.0, 17.0]

    asyncio.run(scenario())


def test_connect_to_a_silent_server_is_bounded_by_the_timeout() -> None:
    """A peer that accepts TCP but never answers makes connect/reconnect fail with PlantLinkDown within timeout_s."""

    async def scenario() -> None:
        async with silent_tcp_server() as port:
            clock = FakeClock()
            plant = _plant(f"opc.tcp://127.0.0.1:{port}/apc/", {"x": OpcUaTag("ns=2;s=x", "Double")}, clock,
                           timeout_s=0.3)
            t0 = time.monotonic()
            with pytest.raises(PlantLinkDown, match=r"no answer within 0.3 s"):
                await plant.connect()
            assert 0.25 < time.monotonic() - t0 < 0.8
            t0 = time.monotonic()
            assert await plant.reconnect_if_due(0.0) is False
            assert time.monotonic() - t0 < 0.8 and not plant.connected
            await plant.close()

    asyncio.run(scenario())


def test_sign_encrypt_with_username_password_and_pinned_server_certificate(tmp_path: Path) -> None:
    """Basic256Sha256 SignAndEncrypt + user/password works; a wrong password or other pinned server cert fails."""
    server_cert, server_key = make_certificate(tmp_path, "server", "urn:apc:loopback:server")
    client_cert, client_key = make_certificate(tmp_path, "client", "urn:apc:test:client")
    rogue_cert, _ = make_certificate(tmp_path, "rogue", "urn:apc:loopback:server")
    security = UaServerSecurity(server_cert, server_key, {"apc": "s3cret"})

    def endpoint(url: str, password: str = "s3cret", pinned: Path = server_cert,
                 timeout_s: float = 2.0) -> OpcUaEndpoint:
        return OpcUaEndpoint(url=url, security="sign_encrypt", username="apc", password=password,
                             client_cert_path=str(client_cert), client_key_path=str(client_key),
                             server_cert_path=str(pinned), timeout_s=timeout_s)

    async def scenario() -> None:
        async with opcua_server(VARS[:5], security=security) as srv:
            tags = {"cell.voltage": OpcUaTag(srv.node_id("cell.voltage"), "Double"),
                    "feed.sp": OpcUaTag(srv.node_id("feed.sp"), "Float", writable=True)}
            clock = FakeClock()
            plant = OpcUaPlantIO(endpoint(srv.url), tags, clock.utc, clock.monotonic)
            await plant.connect()
            snap = await plant.read(["cell.voltage"])
            (res,) = await plant.write([Write("feed.sp", 101.0)])
            await plant.close()
            assert snap["cell.voltage"].value == 4.2 and res.ok and srv.value("feed.sp") == 101.0
            # A wrong password is refused (BadUserAccessDenied); with a different pinned server
            # certificate the server cannot decrypt the handshake and never answers (timeout).
            for bad, err in ((endpoint(srv.url, password="wrong"), "BadUserAccessDenied"),
                             (endpoint(srv.url, pinned=rogue_cert, timeout_s=0.5), "no answer")):
                other = OpcUaPlantIO(bad, tags, clock.utc, clock.monotonic)
                with pytest.raises(PlantIOError, match=err):
                    await other.connect()
                assert not other.connected
                await other.close()
            insecure = _plant(srv.url, tags, clock)
            with pytest.raises(PlantIOError):
                await insecure.connect()
            await insecure.close()

    asyncio.run(scenario())


def test_opcua_bindings_validate_and_parse() -> None:
    """Bad binding fields raise ValueError naming the field; parse_bindings/parse_endpoint read plain dicts."""
    with pytest.raises(ValueError, match="node_id"):
        OpcUaTag("cell.voltage", "Double")
    with pytest.raises(ValueError, match="data_type"):
        OpcUaTag("ns=2;s=x", "Real")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="username"):
        OpcUaEndpoint(url="opc.tcp://h:4840", security="none", username="u", password="p")
    with pytest.raises(ValueError, match="server_cert_path"):
        OpcUaEndpoint(url="opc.tcp://h:4840", security="sign_encrypt", client_cert_path="c.pem",
                      client_key_path="k.pem")
    with pytest.raises(ValueError, match="client_key_path"):
        OpcUaEndpoint(url="opc.tcp://h:4840", security="sign_encrypt", client_cert_path="c.pem",
                      client_key_path="k.key", server_cert_path="s.der")
    with pytest.raises(ValueError, match="reconnect_max_s"):
        OpcUaEndpoint(url="opc.tcp://h:4840", security="none", reconnect_min_s=5, reconnect_max_s=1)
    with pytest.raises(ValueError, match="url"):
        OpcUaEndpoint(url="http://h:4840", security="none")
    with pytest.raises(ValueError, match="url"):
        OpcUaEndpoint(url="opc.tcp://h/path", security="none")
    assert "s3cret" not in repr(OpcUaEndpoint(url="opc.tcp://h:4840", security="sign_encrypt", username="u",
                                              password="s3cret", client_cert_path="c.pem",
                                              client_key_path="k.pem", server_cert_path="s.pem"))
    parsed = parse_bindings({"cell.voltage_V": {"node_id": "ns=2;s=Cell1.U", "data_type": "Double"},
                             "feed.sp_kg_h": {"node_id": "nsu=urn:x;s=F.SP", "data_type": "Float", "writable": True}})
    assert parsed["feed.sp_kg_h"] == OpcUaTag("nsu=urn:x;s=F.SP", "Float", True)
    with pytest.raises(ValueError, match=r"bindings\['x'\].*unknown key"):
        parse_bindings({"x": {"node_id": "ns=2;s=x", "data_type": "Double", "writeable": True}})
    ep = parse_endpoint({"url": "opc.tcp://dcs:4840", "security": "none", "timeout_s": 1})
    assert isinstance(ep, OpcUaEndpoint) and ep.timeout_s == 1.0
