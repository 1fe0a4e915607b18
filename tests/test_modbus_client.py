"""ModbusPlantIO against a real pymodbus TCP server on 127.0.0.1 (no protocol mocks)."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from dataclasses import dataclass

import pytest

from apc.types import Quality, Write
from plant_io.bindings import ModbusEndpoint, ModbusTag, parse_bindings, parse_endpoint
from plant_io.errors import PlantLinkDown
from plant_io.modbus_client import MAX_READ_REGISTERS, ModbusPlantIO, plan_reads
from tests.helpers.loopback_servers import free_port, modbus_server, silent_tcp_server

FC_READ_HOLDING, FC_READ_INPUT, FC_READ_COILS, FC_READ_DISCRETE = 3, 4, 1, 2
FC_WRITE_COIL, FC_WRITE_REGISTERS = 5, 16


@dataclass
class FakeClock:
    """Injected clocks: the test decides what time it is."""

    utc_s: float = 1_700_000_000.0
    mono_s: float = 0.0

    def utc(self) -> float:
        return self.utc_s

    def monotonic(self) -> float:
        return self.mono_s


def _plant(port: int, tags: dict[str, ModbusTag], clock: FakeClock | None = None, budget_s: float = 1.0,
           **ep: object) -> ModbusPlantIO:
    clock = clock or FakeClock()
    settings: dict[str, object] = {"timeout_s": 0.2, "retries": 1, "reconnect_min_s": 1.0, "reconnect_max_s": 8.0}
    settings.update(ep)
    endpoint = ModbusEndpoint(host="127.0.0.1", port=port, **settings)  # type: ignore[arg-type]
    return ModbusPlantIO(endpoint, tags, clock.utc, clock.monotonic, cycle_budget_s=budget_s)


def _layouts(value: float) -> dict[str, list[int]]:
    """The four float32 register layouts of ``value`` (A = most significant byte)."""
    a, b, c, d = struct.pack(">f", value)
    return {
        "ABCD": [a << 8 | b, c << 8 | d],
        "CDAB": [c << 8 | d, a << 8 | b],
        "BADC": [b << 8 | a, d << 8 | c],
        "DCBA": [d << 8 | c, b << 8 | a],
    }


LAYOUT_TAGS = {  # layout → (word_order, byte_swap)
    "ABCD": ("big", False), "CDAB": ("little", False), "BADC": ("big", True), "DCBA": ("little", True),
}


def test_float32_word_orders_and_byte_swap_decode_raw_registers() -> None:
    """Raw registers placed by PDU address (block address = PDU + 1) decode to the same float in all four layouts."""
    value = -1234.5677490234375  # exact in float32, four distinct bytes
    raw = _layouts(value)
    holding = [0] * 10
    tags: dict[str, ModbusTag] = {}
    for i, (layout, (order, swap)) in enumerate(LAYOUT_TAGS.items()):
        holding[2 * i : 2 * i + 2] = raw[layout]
        tags[f"f.{layout}"] = ModbusTag("holding", 2 * i, "float32",
                                        word_order=order, byte_swap=swap)  # type: ignore[arg-type]
    holding[8] = 0xFFFE  # int16 -2 at PDU 8
    holding[9] = 0xFFFE  # uint16 65534 at PDU 9
    tags["i16"] = ModbusTag("holding", 8, "int16")
    tags["u16"] = ModbusTag("holding", 9, "uint16")
    clock = FakeClock()

    async def scenario() -> dict[str, object]:
        async with modbus_server(holding=holding) as srv:
            plant = _plant(srv.port, tags, clock)
            await plant.connect()
            snap = await plant.read(list(tags))
            await plant.close()
            assert srv.requests == [(FC_READ_HOLDING, 0)], "all ten registers in one request"
            return dict(snap)

    snap = asyncio.run(scenario())
    for layout in LAYOUT_TAGS:
        s = snap[f"f.{layout}"]
        assert s.value == value and s.quality is Quality.GOOD and s.source_ts is None  # type: ignore[attr-defined]
        assert s.receive_ts == clock.utc_s  # type: ignore[attr-defined]
    assert snap["i16"].value == -2.0 and snap["u16"].value == 65534.0  # type: ignore[attr-defined]


def test_32bit_writes_send_both_words_in_one_request_and_round_trip() -> None:
    """Each 32-bit write is one FC16 request with both words in the tag's layout; reading back returns the value."""
    tags = {f"sp.{layout}": ModbusTag("holding", 10 + 2 * i, "float32", word_order=order,  # type: ignore[arg-type]
                                      byte_swap=swap, writable=True)
            for i, (layout, (order, swap)) in enumerate(LAYOUT_TAGS.items())}
    tags["count.i32"] = ModbusTag("holding", 20, "int32", word_order="little", writable=True)
    value = 987.6543

    async def scenario() -> None:
        async with modbus_server(holding=[0] * 30) as srv:
            plant = _plant(srv.port, tags)
            await plant.connect()
            res = await plant.write([Write(t, value) for t in tags if t.startswith("sp.")]
                                    + [Write("count.i32", -70000.0)])
            assert all(r.ok for r in res), res
            assert srv.requests == [(FC_WRITE_REGISTERS, a) for a in (10, 12, 14, 16, 20)]
            for i, layout in enumerate(LAYOUT_TAGS):
                assert await srv.get("holding", 10 + 2 * i, 2) == _layouts(value)[layout], layout
            hi, lo = divmod(-70000 & 0xFFFFFFFF, 0x10000)
            assert await srv.get("holding", 20, 2) == [lo, hi]
            snap = await plant.read(list(tags))
            await plant.close()
        for t in tags:
            if t.startswith("sp."):
                assert snap[t].value == pytest.approx(value, rel=1e-7)
        assert snap["count.i32"].value == -70000.0

    asyncio.run(scenario())


def test_scaling_and_offset_apply_on_read_and_invert_on_write() -> None:
    """Engineering = raw*scale+offset; writes invert it (rounded to resolution), refusing misfits without traffic."""
    tags = {
        "temp_degC": ModbusTag("input", 0, "int16", scale=0.1, offset=-50.0),
        "sp_kg_h": ModbusTag("holding", 0, "uint16", scale=0.5, writable=True),
    }

    async def scenario() -> None:
        async with modbus_server(holding=[300], inputs=[1234]) as srv:
            plant = _plant(srv.port, tags)
            await plant.connect()
            snap = await plant.read(["temp_degC", "sp_kg_h"])
            assert snap["temp_degC"].value == pytest.approx(73.4)
            assert snap["sp_kg_h"].value == 150.0
            srv.requests.clear()
            res = await plant.write([Write("sp_kg_h", 80.2), Write("sp_kg_h", -1.0), Write("sp_kg_h", 40000.0),
                                     Write("sp_kg_h", math.inf)])
            assert [r.ok for r in res] == [True, False, False, False]
            assert "range" in res[1].detail and "range" in res[2].detail and "finite" in res[3].detail
            assert srv.requests == [(FC_WRITE_REGISTERS, 0)], "refused values never reach the wire"
            assert await srv.get("holding", 0) == [160]  # 80.2 / 0.5 = 160.4 → 160
            await plant.close()

    asyncio.run(scenario())


def test_companion_quality_and_sample_time_registers_apply_to_their_tag() -> None:
    """<tag>.quality (1 uncertain, 2 bad) and <tag>.sample_ts registers set the tag's quality and sample time."""
    tags = {
        "dip_degC": ModbusTag("input", 0, "uint16"),
        "dip_degC.quality": ModbusTag("input", 1, "uint16"),
        "dip_degC.sample_ts": ModbusTag("input", 2, "uint32"),
        "volt_V": ModbusTag("input", 4, "uint16"),
        "volt_V.quality": ModbusTag("input", 5, "uint16"),
    }

    async def scenario() -> None:
        async with modbus_server(inputs=[1050, 1, 0x6000, 0x0010, 4, 2]) as srv:
            plant = _plant(srv.port, tags)
            await plant.connect()
            snap = await plant.read(["dip_degC", "volt_V"])
            assert set(snap) == {"dip_degC", "volt_V"}  # companions are folded in, not returned
            assert snap["dip_degC"].value == 1050.0 and snap["dip_degC"].quality is Quality.UNCERTAIN
            assert snap["dip_degC"].sample_ts == float(0x60000010)
            assert snap["volt_V"].quality is Quality.BAD and snap["volt_V"].sample_ts is None
            await plant.close()

    asyncio.run(scenario())


def test_exception_response_gives_bad_quality_and_names_the_register() -> None:
    """A read beyond the datablock (ILLEGAL_ADDRESS) makes that request's tags BAD and named; others stay GOOD."""
    tags = {
        "ok.a": ModbusTag("holding", 0, "uint16"),
        "beyond.f": ModbusTag("holding", 20, "float32"),
        "coil.x": ModbusTag("coil", 1, "bool"),
    }

    async def scenario() -> None:
        async with modbus_server(holding=[7] * 10, coils=[False, True]) as srv:
            plant = _plant(srv.port, tags)
            await plant.connect()
            snap = await plant.read(list(tags))
            errors = plant.last_read_errors
            await plant.close()
        assert snap["ok.a"].value == 7.0 and snap["ok.a"].quality is Quality.GOOD
        assert snap["coil.x"].value == 1.0 and snap["coil.x"].quality is Quality.GOOD
        assert snap["beyond.f"].quality is Quality.BAD and math.isnan(snap["beyond.f"].value)
        assert set(errors) == {"beyond.f"}
        assert "holding 20..21" in errors["beyond.f"] and "ILLEGAL_ADDRESS" in errors["beyond.f"]

    asyncio.run(scenario())


def test_reads_are_grouped_per_table_within_gap_and_size_limits() -> None:
    """Tags within max_read_gap share a request per table; no request exceeds 125 registers or splits a value."""
    tags = {
        "h0": ModbusTag("holding", 0, "float32"),
        "h3": ModbusTag("holding", 3, "int16"),   # gap of 1 register after h0
        "h4": ModbusTag("holding", 4, "uint32"),
        "i0": ModbusTag("input", 0, "int16"),
        "c0": ModbusTag("coil", 0, "bool"),
        "c5": ModbusTag("coil", 5, "bool"),
        "d2": ModbusTag("discrete", 2, "bool"),
    }

    async def scenario(gap: int) -> list[tuple[int, int]]:
        async with modbus_server(holding=[1] * 8, inputs=[2], coils=[True] * 8, discrete=[True] * 4) as srv:
            plant = _plant(srv.port, tags, max_read_gap=gap)
            await plant.connect()
            snap = await plant.read(list(tags))
            await plant.close()
            assert all(s.quality is Quality.GOOD for s in snap.values()) and len(snap) == len(tags)
            return srv.requests

    assert asyncio.run(scenario(4)) == [(FC_READ_HOLDING, 0), (FC_READ_INPUT, 0), (FC_READ_COILS, 0),
                                        (FC_READ_DISCRETE, 2)]
    assert asyncio.run(scenario(0)) == [(FC_READ_HOLDING, 0), (FC_READ_HOLDING, 3), (FC_READ_INPUT, 0),
                                        (FC_READ_COILS, 0), (FC_READ_COILS, 5), (FC_READ_DISCRETE, 2)]
    many = {f"f{i}": ModbusTag("holding", 2 * i, "float32") for i in range(100)}  # 200 registers
    blocks = plan_reads(many, max_gap=0)
    assert [b.count for b in blocks] == [124, 76]
    assert all(b.count <= MAX_READ_REGISTERS for b in blocks)
    assert sum(len(b.tags) for b in blocks) == 100


def test_cycle_budget_refuses_worst_case_stall_beyond_it() -> None:
    """timeout_s × (retries + 1) above cycle_budget_s is refused at construction; equal is accepted."""
    ep = ModbusEndpoint(host="127.0.0.1", port=free_port(), timeout_s=0.5, retries=3)
    assert ep.worst_case_stall_s == 2.0
    clock = FakeClock()
    with pytest.raises(ValueError, match=r"timeout_s\*\(retries\+1\).*2 s exceeds cycle_budget_s = 1\.9"):
        ModbusPlantIO(ep, {}, clock.utc, clock.monotonic, cycle_budget_s=1.9)
    ModbusPlantIO(ep, {}, clock.utc, clock.monotonic, cycle_budget_s=2.0)


def test_writes_to_non_writable_tags_are_refused_without_traffic() -> None:
    """Input/discrete tables, read-only holding tags, unbound tags and non-0/1 coil values never reach the device."""
    tags = {
        "in.r": ModbusTag("input", 0, "uint16"),
        "di.b": ModbusTag("discrete", 0, "bool"),
        "hr.ro": ModbusTag("holding", 0, "uint16"),
        "co.w": ModbusTag("coil", 0, "bool", writable=True),
    }

    async def scenario() -> None:
        async with modbus_server(holding=[5], inputs=[6], coils=[False], discrete=[True]) as srv:
            plant = _plant(srv.port, tags)
            await plant.connect()
            res = await plant.write([Write("in.r", 1.0), Write("di.b", 1.0), Write("hr.ro", 1.0),
                                     Write("nope", 1.0), Write("co.w", 0.5)])
            assert srv.requests == []
            assert [r.ok for r in res] == [False] * 5
            assert "read-only" in res[0].detail and "read-only" in res[1].detail
            assert "not writable" in res[2].detail and res[3].detail == "not bound"
            (ok,) = await plant.write([Write("co.w", 1.0)])
            await plant.close()
            assert ok.ok and srv.requests == [(FC_WRITE_COIL, 0)]
            assert await srv.get("coil", 0) == [True]
            assert await srv.get("holding", 0) == [5]

    asyncio.run(scenario())


def test_server_stop_raises_link_down_then_reconnects_after_restart() -> None:
    """A stopped server gives PlantLinkDown within the worst-case stall; reconnect backs off, then succeeds."""
    port = free_port()
    clock = FakeClock()
    tags = {"h": ModbusTag("holding", 0, "uint16"), "w": ModbusTag("holding", 1, "uint16", writable=True)}

    async def scenario() -> None:
        async with modbus_server(holding=[11], port=port):
            plant = _plant(port, tags, clock)
            await plant.connect()
            assert (await plant.read(["h"]))["h"].value == 11.0
        t0 = time.monotonic()
        with pytest.raises(PlantLinkDown):
            await plant.read(["h"])
        assert time.monotonic() - t0 < 0.4 + 0.3, "bounded by timeout_s*(retries+1)"
        assert not plant.connected
        with pytest.raises(PlantLinkDown):
            await plant.write([Write("w", 1.0)])
        clock.mono_s = 5.0
        assert await plant.reconnect_if_due() is False  # nothing listening: fails fast
        assert plant.next_reconnect_s == 6.0
        assert await plant.reconnect_if_due(6.0) is False
        assert plant.next_reconnect_s == 8.0  # back-off doubled
        async with modbus_server(holding=[22], port=port):
            assert await plant.reconnect_if_due(7.9) is False, "not due yet"
            assert await plant.reconnect_if_due(8.0) is True
            snap = await plant.read(["h"])
            await plant.close()
        assert snap["h"].value == 22.0 and snap["h"].quality is Quality.GOOD

    asyncio.run(scenario())


def test_silent_device_stalls_at_most_timeout_times_retries_plus_one() -> None:
    """A device that accepts TCP but never answers gives PlantLinkDown after timeout_s*(retries+1), not later."""

    async def scenario() -> float:
        async with silent_tcp_server() as port:
            plant = _plant(port, {"h": ModbusTag("holding", 0, "uint16")}, timeout_s=0.15, retries=1)
            await plant.connect()
            t0 = time.monotonic()
            with pytest.raises(PlantLinkDown):
                await plant.read(["h"])
            elapsed = time.monotonic() - t0
            assert not plant.connected
            await plant.close()
            return elapsed

    elapsed = asyncio.run(scenario())
    assert 0.25 <= elapsed < 0.3 + 0.25, elapsed


def test_modbus_bindings_validate_and_parse() -> None:
    """Bad binding fields raise ValueError naming the field; parse_bindings builds tags from plain dicts."""
    with pytest.raises(ValueError, match="address"):
        ModbusTag("holding", -1, "uint16")
    with pytest.raises(ValueError, match="address"):
        ModbusTag("holding", 65535, "float32")  # second word would not exist
    with pytest.raises(ValueError, match="scale"):
        ModbusTag("holding", 0, "int16", scale=0)
    with pytest.raises(ValueError, match="byte_swap"):
        ModbusTag("coil", 0, "bool", byte_swap=True)
    with pytest.raises(ValueError, match="data_type"):
        ModbusTag("holding", 0, "bool")
    with pytest.raises(ValueError, match="writable"):
        ModbusTag("input", 0, "int16", writable=True)
    with pytest.raises(ValueError, match="word_order"):
        ModbusTag("holding", 0, "float32", word_order="middle")  # type: ignore[arg-type]
    ModbusTag("holding", 0, "int16", word_order="little")  # word order on a 16-bit type is harmless
    with pytest.raises(ValueError, match="retries"):
        ModbusEndpoint(host="h", retries=-1)
    with pytest.raises(ValueError, match="timeout_s"):
        ModbusEndpoint(host="h", timeout_s=0)
    parsed = parse_bindings({
        "feed.sp_kg_h": {"table": "holding", "address": 10, "data_type": "float32", "word_order": "little",
                         "writable": True},
        "cell.temp_degC": {"table": "input", "address": 3, "data_type": "int16", "scale": 0.1},
    })
    assert parsed["feed.sp_kg_h"] == ModbusTag("holding", 10, "float32", word_order="little", writable=True)
    assert parsed["cell.temp_degC"].scale == 0.1  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"bindings\['x'\].*address"):
        parse_bindings({"x": {"table": "holding", "address": 1.5, "data_type": "int16"}})
    ep = parse_endpoint({"host": "10.0.0.5", "port": 502, "device_id": 3, "timeout_s": 0.3, "retries": 2})
    assert isinstance(ep, ModbusEndpoint) and ep.worst_case_stall_s == pytest.approx(0.9)


def test_a_write_the_device_does_not_answer_is_sent_once() -> None:
    """An unanswered FC16 write (an electrode move) goes out exactly once: no client-level retry may re-send it and move the electrode twice; it is reported not acknowledged."""
    functions: list[int] = []

    async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # read whole Modbus TCP frames (MBAP header, then the PDU), never answer
                head = await reader.readexactly(7)
                pdu = await reader.readexactly(int.from_bytes(head[4:6], "big") - 1)
                functions.append(pdu[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(device, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            plant = _plant(port, {"anode.move_cm": ModbusTag("holding", 0, "float32", writable=True)},
                           timeout_s=0.2, retries=2, budget_s=1.0)
            await plant.connect()
            with pytest.raises(PlantLinkDown):
                await plant.write([Write("anode.move_cm", 0.1)])
            await plant.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
    assert functions == [FC_WRITE_REGISTERS]
