"""Virtual plant: simulated units served over real OPC UA and Modbus TCP servers.

Each :class:`VirtualUnit` wraps the in-process adapter
(:class:`~plant_io.sim_plant.SimulatedCellIO` or
:class:`~plant_io.sim_furnace.SimulatedFurnaceIO`, built from a scenario and a
seed on the plant's clock) and serves its tags on an asyncua ``Server`` or a
pymodbus ``ModbusTcpServer``. Client writes go through the adapter's
``write()``, i.e. its DCS side (remote status, APC heartbeat, sequence
numbers, shed to fallback) runs exactly as in-process. Units with the same
protocol and port share one server: OPC UA gives each unit its own namespace
and folder, Modbus its own device id.

Time. Every ``scan_s`` seconds of clock (plant) time a scan advances every
plant to the clock's time and publishes all values in one batch; with a
:class:`~apc.clock.RealClock` at speed X that is every ``scan_s / X`` real
seconds. A client write first advances the plant, is applied, and the unit is
republished before the write is answered. ``scan_s=None`` runs no scan task:
the caller sets the clock (a :class:`~apc.clock.VirtualClock`) and awaits
:meth:`VirtualPlant.scan`. The simulated DCS keeps scanning while the servers
are stopped (:meth:`VirtualPlant.stop` is a network outage, :meth:`VirtualPlant.close`
the end): an APC that stops writing sees its loops shed to their fallback.

OPC UA (NoSecurity, anonymous, role User: nobody bypasses the access levels)
  Endpoint ``opc.tcp://HOST:PORT/apc/virtual-plant/``; namespace
  ``urn:apc:virtual-plant:<unit>``; folder ``Objects/<unit>``; one variable per
  tag with the string node id ``<tag>``. Data type Boolean for flags
  (``*.apc_active``, ``*.remote``, ``*.at_high_limit``), Int16 for the APC
  heartbeat (as a DCS holds it: the APC wraps it at 32767), Double for every other
  tag (values, setpoints, counters). AccessLevel CurrentWrite on exactly the
  adapter's writable set (``SimulatedPlantIO.writable_tags``). StatusCode from the simulated
  quality: Good, Uncertain, BadSensorFailure; BadWaitingForInitialData while a
  lab or dip result does not exist yet. SourceTimestamp: the plant UTC of the
  scan; for lab and dip results the plant UTC at which the sample was taken (the
  runtime's validator recognises a repeated sample by it). A write carrying a
  Bad status or a non-finite value is stored but not applied to the DCS.
  Writes reach the DCS through a ``PostWrite`` server callback, which asyncua
  2.1 awaits before it answers the Write (``server/internal_session.py``); a
  ``set_attribute_value_setter`` was not used: it is synchronous, also fires on
  the server's own writes, and cannot return a status to the client.

Modbus TCP (zero-based PDU addresses, one device id per unit)
  holding registers: the writable tags, sorted by name, float32 big word order
  at 0, 2, 4, ... (the APC heartbeat: one int16 register at its address); a write
  must cover both registers of a value (FC16) or it is refused with exception 2
  (illegal address); a non-finite value with 3.
  input registers: the read-only tags, sorted by name, float32 big word order
  at 0, 2, 4, ...; then one uint16 ``<tag>.quality`` per measured tag, sorted
  (0 good, 1 uncertain, 2 bad or no value yet); then one uint32
  ``<tag>.sample_ts`` per lab/dip tag (plant UTC POSIX seconds when the sample
  was taken, 0 before the first); then one uint32 ``<tag>.source_ts`` per other
  measured tag (plant UTC POSIX seconds of the instrument's last update: it
  stops while an ``input_fault`` of kind ``stale`` lasts). A bad or missing value reads NaN, which
  :class:`~plant_io.modbus_client.ModbusPlantIO` reports as BAD; an uncertain
  value reads as the value and that client (which has no quality for Modbus)
  reports it GOOD: only the ``.quality`` register tells. Coils and discrete
  inputs are not used. (The store is pymodbus' ``SimDevice``/``SimData``,
  addressed by PDU address: the +1 offset of the deprecated
  ``ModbusServerContext`` does not apply.)

Binding file ``<unit>.yaml`` written by :func:`generate_bindings`; its
``endpoint`` feeds :func:`plant_io.bindings.parse_endpoint` and its
``bindings`` :func:`plant_io.bindings.parse_bindings`::

    unit: cell-01
    protocol: opcua
    endpoint: {url: "opc.tcp://127.0.0.1:4841/apc/virtual-plant/", security: none}
    bindings:
      cell.voltage_V: {node_id: "nsu=urn:apc:virtual-plant:cell-01;s=cell.voltage_V",
                       data_type: Double, writable: false}
      feed.apc_active: {node_id: "nsu=urn:apc:virtual-plant:cell-01;s=feed.apc_active",
                        data_type: Boolean, writable: true}

    unit: cell-03
    protocol: modbus
    endpoint: {host: 127.0.0.1, port: 5021, device_id: 1}
    bindings:
      anode.apc_active: {table: holding, address: 0, data_type: float32, word_order: big, writable: true}
      anode.at_high_limit: {table: input, address: 0, data_type: float32, word_order: big, writable: false}
      cell.voltage_V.quality: {table: input, address: 36, data_type: uint16, word_order: big, writable: false}

Security. This server plays the DCS for tests and demos. It runs without
security, so it listens on loopback only; any other host is refused unless
``allow_remote_insecure=True``. A real plant's OPC UA server is the DCS's own,
configured with Basic256Sha256 SignAndEncrypt and the APC's certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
import yaml
from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from apc.clock import VirtualClock
from apc.kinds import get_kind, kind_names
from apc.protocols import Clock
from apc.types import Quality, Sample, Write
from plant_io.bindings import ModbusTag, OpcUaTag
from plant_io.modbus_client import decode_registers
from plant_io.sim_adapter import SimulatedPlantIO
from plant_io.ua_values import data_value, node_id, status_code

PlantProtocol = Literal["opcua", "modbus"]
SimulatedIO = SimulatedPlantIO[Any, Any]

URI_PREFIX = "urn:apc:virtual-plant:"
"""Namespace URI of unit ``u`` is ``URI_PREFIX + u``."""
OPCUA_PATH = "/apc/virtual-plant/"
FLAG_SUFFIXES = (".apc_active", ".remote", ".at_high_limit")
"""Tags ending so are flags: Boolean nodes over OPC UA (float32 0/1 over Modbus)."""
APC_HEARTBEAT = "apc.heartbeat"
"""The APC's heartbeat counter: served as a DCS usually holds it, a 16-bit signed integer (OPC UA
Int16, Modbus int16), so the APC must wrap it at 32767."""
QUALITY_REGISTER: Mapping[Quality, int] = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}
"""Value of a Modbus ``<tag>.quality`` register (2 also when there is no value yet)."""
QUALITY_SUFFIX = ".quality"
SAMPLE_TS_SUFFIX = ".sample_ts"
SOURCE_TS_SUFFIX = ".source_ts"

_UA_STATUS: Mapping[Quality, int] = {
    Quality.GOOD: ua.StatusCodes.Good,
    Quality.UNCERTAIN: ua.StatusCodes.Uncertain,
    Quality.BAD: ua.StatusCodes.BadSensorFailure,
}
_F32 = AsyncModbusTcpClient.DATATYPE.FLOAT32
_U32 = AsyncModbusTcpClient.DATATYPE.UINT32
_WRITE_CODES = frozenset({6, 16, 23})  # requests that write holding registers
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class VirtualPlantError(ValueError):
    """A virtual plant configuration is refused; the message names the unit and field."""


@dataclass(frozen=True)
class VirtualUnit:
    """One simulated unit and where it is served.

    ``kind`` is a registered unit kind (:mod:`apc.kinds`); ``scenario`` one of its scenario names
    (``sim/scenarios``, or ``sim/scenarios/furnace`` for furnaces), a YAML path, or a scenario
    object. ``device_id`` is the Modbus unit id (units sharing a Modbus port need distinct ids);
    OPC UA ignores it.
    """

    name: str
    scenario: Any
    seed: int = 0
    kind: str = "electrolysis_cell"
    protocol: PlantProtocol = "opcua"
    port: int = 4840
    device_id: int = 1

    def __post_init__(self) -> None:
        where = f"unit {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise VirtualPlantError(f"{where}: name must match {_NAME_RE.pattern}")
        if self.kind not in kind_names():
            raise VirtualPlantError(f"{where}: kind must be one of {list(kind_names())}, got {self.kind!r}")
        if not isinstance(self.scenario, str) and not isinstance(self.scenario, get_kind(self.kind).scenario_type):
            raise VirtualPlantError(f"{where}: a {type(self.scenario).__name__} is not a scenario of unit kind "
                                    f"{self.kind!r}")
        if self.protocol not in ("opcua", "modbus"):
            raise VirtualPlantError(f"{where}: protocol must be 'opcua' or 'modbus', got {self.protocol!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise VirtualPlantError(f"{where}: seed must be an integer, got {self.seed!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise VirtualPlantError(f"{where}: port must be in [1, 65535], got {self.port!r}")
        if isinstance(self.device_id, bool) or not isinstance(self.device_id, int) or not 1 <= self.device_id <= 247:
            raise VirtualPlantError(f"{where}: device_id must be in [1, 247], got {self.device_id!r}")

    @property
    def namespace_uri(self) -> str:
        """OPC UA namespace of this unit."""
        return URI_PREFIX + self.name


@dataclass(frozen=True)
class UnitBindings:
    """Generated endpoint and tag bindings of one unit (plain mappings, as the YAML holds them)."""

    unit: str
    protocol: PlantProtocol
    endpoint: Mapping[str, Any]
    bindings: Mapping[str, Mapping[str, Any]]

    def as_mapping(self) -> dict[str, Any]:
        """The binding file's content."""
        return {"unit": self.unit, "protocol": self.protocol, "endpoint": dict(self.endpoint),
                "bindings": {tag: dict(b) for tag, b in self.bindings.items()}}


def build_unit_io(unit: VirtualUnit, clock: Clock) -> SimulatedIO:
    """The in-process adapter (plant + DCS side) of ``unit`` on ``clock``, from its kind."""
    kind = get_kind(unit.kind)
    scenario = kind.load_scenario(unit.scenario) if isinstance(unit.scenario, str) else unit.scenario
    return kind.simulated_io(scenario, unit.seed, clock)


def is_flag(tag: str) -> bool:
    """True for flag tags (Boolean over OPC UA)."""
    return tag.endswith(FLAG_SUFFIXES)


def _opcua_type(tag: str) -> str:
    return "Boolean" if is_flag(tag) else "Int16" if tag == APC_HEARTBEAT else "Double"


_UA_VARIANT: Mapping[str, ua.VariantType] = {"Boolean": ua.VariantType.Boolean, "Int16": ua.VariantType.Int16,
                                             "Double": ua.VariantType.Double}


def _ua_value(data_type: str, value: float) -> bool | int | float:
    if data_type == "Boolean":
        return value >= 0.5
    return int(value) if data_type == "Int16" else float(value)


def opcua_map(unit: VirtualUnit, io: SimulatedIO) -> dict[str, OpcUaTag]:
    """OPC UA binding of every tag of ``unit``, sorted by tag."""
    writable = io.writable_tags()
    return {tag: OpcUaTag(f"nsu={unit.namespace_uri};s={tag}", _opcua_type(tag), tag in writable)  # type: ignore[arg-type]
            for tag in sorted(io.tags())}


def modbus_map(io: SimulatedIO) -> dict[str, ModbusTag]:
    """Modbus register map of ``io``: holding, input values, quality and sample-time registers."""
    writable = io.writable_tags()
    out: dict[str, ModbusTag] = {}
    for i, tag in enumerate(sorted(writable)):
        out[tag] = ModbusTag("holding", 2 * i, "int16" if tag == APC_HEARTBEAT else "float32", "big", writable=True)
    readable = sorted(io.tags() - writable)
    address = 0
    for tag in readable:
        out[tag] = ModbusTag("input", address, "float32", "big")
        address += 2
    for tag in sorted(io.measured_tags()):
        out[tag + QUALITY_SUFFIX] = ModbusTag("input", address, "uint16")
        address += 1
    for tag in sorted(io.sampled_tags()):
        out[tag + SAMPLE_TS_SUFFIX] = ModbusTag("input", address, "uint32", "big")
        address += 2
    for tag in sorted(io.measured_tags() - io.sampled_tags()):
        out[tag + SOURCE_TS_SUFFIX] = ModbusTag("input", address, "uint32", "big")
        address += 2
    return out


def _binding_mapping(tag: OpcUaTag | ModbusTag) -> dict[str, Any]:
    if isinstance(tag, OpcUaTag):
        return {"node_id": tag.node_id, "data_type": tag.data_type, "writable": tag.writable}
    return {"table": tag.table, "address": tag.address, "data_type": tag.data_type,
            "word_order": tag.word_order, "writable": tag.writable}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _utc_datetime(posix_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(posix_s, dt.UTC)


def _f32_registers(value: float) -> list[int]:
    return AsyncModbusTcpClient.convert_to_registers(float(value), _F32, word_order="big")


class _Unit:
    """A served unit: adapter, tag sets, maps and the values the APC last wrote."""

    def __init__(self, spec: VirtualUnit, clock: Clock) -> None:
        self.spec = spec
        self.io = build_unit_io(spec, clock)
        self.writable = self.io.writable_tags()
        self.readable = tuple(sorted(self.io.tags() - self.writable))
        self.opcua = opcua_map(spec, self.io)
        self.modbus = modbus_map(self.io)
        self.readable_set = frozenset(self.readable)
        self.written: dict[str, float] = dict.fromkeys(sorted(self.writable), 0.0)


ApplyWrites = Callable[[_Unit, Sequence[Write]], Awaitable[None]]
"""How a server hands client writes to the plant (advance, apply as the DCS, republish)."""


class _AnonymousUsers(UserManager):
    """Anonymous sessions get the User role (access levels apply; never Admin); a username is refused."""

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        return User(role=UserRole.User) if username is None else None


class _OpcUaServer:
    """One asyncua server for one or more units (a namespace and folder each)."""

    def __init__(self, host: str, port: int, units: Sequence[_Unit], apply: ApplyWrites, log: Any) -> None:
        self.url = f"opc.tcp://{host}:{port}{OPCUA_PATH}"
        self.units = tuple(units)
        self._apply = apply
        self._log = log
        self._server: Server | None = None
        self._listening = False
        self._nodes: dict[str, dict[str, ua.NodeId]] = {}
        self._writable: dict[ua.NodeId, tuple[_Unit, str]] = {}

    @property
    def running(self) -> bool:
        return self._listening

    async def prepare(self) -> None:
        """Build a new server and its address space (not listening yet: publish first)."""
        server = Server(user_manager=_AnonymousUsers())
        await server.init()
        server.disable_clock()  # its 1 s loop would delay stop() by up to 1 s
        server.set_endpoint(self.url)
        server.set_server_name("apc virtual plant")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        nodes: dict[str, dict[str, ua.NodeId]] = {}
        writable: dict[ua.NodeId, tuple[_Unit, str]] = {}
        for unit in self.units:
            idx = await server.register_namespace(unit.spec.namespace_uri)
            folder = await server.nodes.objects.add_folder(node_id(unit.spec.name, idx), f"{idx}:{unit.spec.name}")
            nodes[unit.spec.name] = {}
            for tag, binding in unit.opcua.items():
                nid = node_id(tag, idx)
                vt = _UA_VARIANT[binding.data_type]
                initial = unit.written.get(tag, 0.0)
                node = await folder.add_variable(nid, f"{idx}:{tag}",
                                                 ua.Variant(_ua_value(binding.data_type, initial), vt))
                if binding.writable:
                    await node.set_writable(True)
                    writable[nid] = (unit, tag)
                nodes[unit.spec.name][tag] = nid
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_post_write)
        self._server, self._nodes, self._writable = server, nodes, writable

    async def listen(self) -> None:
        """Open the endpoint."""
        assert self._server is not None
        await self._server.start()
        self._listening = True

    async def stop(self) -> None:
        """Close the endpoint and every session; forget the server."""
        server, self._server = self._server, None
        listening, self._listening = self._listening, False
        if server is not None and listening:
            await server.stop()

    async def publish(self, unit: _Unit, samples: Mapping[str, Sample], utc: float) -> None:
        """Write every read-only node of ``unit`` (value, status, source timestamp)."""
        server = self._server
        if server is None:
            return
        nodes = self._nodes[unit.spec.name]
        scan_ts = _utc_datetime(utc)
        for tag in unit.readable:
            data_type = unit.opcua[tag].data_type
            vt = _UA_VARIANT[data_type]
            s = samples.get(tag)
            if s is None:  # no lab/dip result yet
                dv = data_value(ua.Variant(None, ua.VariantType.Null),
                                  status_code(ua.StatusCodes.BadWaitingForInitialData), scan_ts, scan_ts)
            else:
                source = (_utc_datetime(s.sample_ts) if s.sample_ts is not None
                          else _utc_datetime(s.source_ts) if s.source_ts is not None else scan_ts)
                dv = data_value(ua.Variant(_ua_value(data_type, s.value), vt), status_code(_UA_STATUS[s.quality]),
                                  source, scan_ts)
            await server.write_attribute_value(nodes[tag], dv)

    async def _on_post_write(self, event: Any, _dispatcher: Any) -> None:
        """After a client Write (before its response): apply accepted writes to the DCS, in order."""
        try:
            per_unit: dict[str, tuple[_Unit, list[Write]]] = {}
            for wv, status in zip(event.request_params.NodesToWrite, event.response_params or []):
                hit = self._writable.get(wv.NodeId)
                if hit is None or wv.AttributeId != ua.AttributeIds.Value or not status.is_good():
                    continue
                unit, tag = hit
                value = self._written_value(wv.Value)
                if value is None:
                    self._log.warning("virtual_plant_write_ignored", unit=unit.spec.name, tag=tag,
                                      reason="bad status or not a finite number")
                    continue
                per_unit.setdefault(unit.spec.name, (unit, []))[1].append(Write(tag, value))
            for unit, writes in per_unit.values():
                await self._apply(unit, writes)
        except Exception as exc:  # never turn a client's Write into a ServiceFault
            self._log.error("virtual_plant_write_failed", error=f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _written_value(dv: ua.DataValue | None) -> float | None:
        """The number a client wrote, or None when it carries a non-Good status or is not finite."""
        if dv is None or dv.Value is None or (dv.StatusCode is not None and not dv.StatusCode.is_good()):
            return None
        raw = dv.Value.Value
        if isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, (int, float)) and math.isfinite(raw):
            return float(raw)
        return None


class _ModbusServer:
    """One pymodbus TCP server for one or more units (a device id each)."""

    def __init__(self, host: str, port: int, units: Sequence[_Unit], apply: ApplyWrites, log: Any) -> None:
        self.host = host
        self.port = port
        self.units = tuple(units)
        self._apply = apply
        self._log = log
        self._server: ModbusTcpServer | None = None
        self._listening = False

    @property
    def running(self) -> bool:
        return self._listening

    async def prepare(self) -> None:
        """Build a new server and its register store (not listening yet: publish first)."""
        devices = [self._device(unit) for unit in self.units]
        self._server = ModbusTcpServer(devices, address=(self.host, self.port))

    async def listen(self) -> None:
        """Open the port."""
        assert self._server is not None
        await self._server.serve_forever(background=True)
        self._listening = True

    async def stop(self) -> None:
        """Close the port and every connection; forget the server."""
        server, self._server = self._server, None
        self._listening = False
        if server is not None:
            await server.shutdown()

    def _device(self, unit: _Unit) -> SimDevice:
        holding: list[int] = []
        for tag, b in sorted(unit.modbus.items(), key=lambda tb: tb[1].address):
            if b.table == "holding":
                holding.extend([0] * (b.address - len(holding)))
                holding.extend(_f32_registers(unit.written[tag]) if b.data_type == "float32" else [0] * b.width)
        inputs = self._input_image(unit, {}, 0.0)
        bits = [SimData(0, values=False, datatype=DataType.BITS)]  # unused, but the store needs a block
        return SimDevice(
            unit.spec.device_id,
            simdata=(list(bits), list(bits), [SimData(0, values=holding, datatype=DataType.REGISTERS)],
                     [SimData(0, values=inputs, datatype=DataType.REGISTERS)]),
            action=self._action_for(unit),
        )

    @staticmethod
    def _input_image(unit: _Unit, samples: Mapping[str, Sample], utc: float) -> list[int]:
        regs: list[int] = []
        for tag, b in unit.modbus.items():  # insertion order = address order within the input table
            if b.table != "input":
                continue
            if tag in unit.readable_set:
                s = samples.get(tag)
                bad = s is None or s.quality is Quality.BAD
                regs.extend(_f32_registers(math.nan if bad or s is None else s.value))
            elif tag.endswith(QUALITY_SUFFIX):
                s = samples.get(tag[: -len(QUALITY_SUFFIX)])
                regs.append(QUALITY_REGISTER[Quality.BAD] if s is None else QUALITY_REGISTER[s.quality])
            elif tag.endswith(SOURCE_TS_SUFFIX):
                s = samples.get(tag[: -len(SOURCE_TS_SUFFIX)])
                ts = 0 if s is None or s.source_ts is None else int(s.source_ts)
                regs.extend(AsyncModbusTcpClient.convert_to_registers(ts, _U32, word_order="big"))
            else:
                s = samples.get(tag[: -len(SAMPLE_TS_SUFFIX)])
                ts = 0 if s is None or s.sample_ts is None else round(s.sample_ts)
                regs.extend(AsyncModbusTcpClient.convert_to_registers(ts, _U32, word_order="big"))
        return regs

    async def publish(self, unit: _Unit, samples: Mapping[str, Sample], utc: float) -> None:
        """Rewrite the unit's whole input-register image in one store update."""
        if self._server is None:
            return
        await self._server.async_setValues(unit.spec.device_id, 4, 0, self._input_image(unit, samples, utc))

    def _action_for(self, unit: _Unit) -> Any:
        holding = sorted(((t, b) for t, b in unit.modbus.items() if b.table == "holding"), key=lambda tb: tb[1].address)

        async def action(func_code: int, start: int, address: int, count: int, registers: list[int],
                         values: list[int] | list[bool] | None) -> ExcCodes | None:
            if values is None or func_code not in _WRITE_CODES:
                return None
            merged = list(registers)
            merged[address - start: address - start + count] = [int(v) for v in values]
            writes: list[Write] = []
            for tag, b in holding:
                lo, hi = b.address, b.address + b.width
                if hi <= address or lo >= address + count:
                    continue
                if lo < address or hi > address + count:
                    return ExcCodes.ILLEGAL_ADDRESS  # half a float32: refused, nothing applied
                value = decode_registers(b, merged[lo - start: hi - start])
                if not math.isfinite(value):
                    return ExcCodes.ILLEGAL_VALUE
                writes.append(Write(tag, value))
            if writes:
                await self._apply(unit, writes)
            return None

        return action


class VirtualPlant:
    """Simulated units served over OPC UA and/or Modbus TCP on ``host``.

    ``scan_s``: plant (clock) seconds between scans, or ``None`` for no scan
    task (drive :meth:`scan` yourself; required with a VirtualClock, which
    never waits). Non-loopback hosts are refused unless ``allow_remote_insecure``.
    """

    def __init__(
        self,
        units: Sequence[VirtualUnit],
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        scan_s: float | None = None,
        allow_remote_insecure: bool = False,
        log: Any = None,
    ) -> None:
        if not units:
            raise VirtualPlantError("a virtual plant needs at least one unit")
        names = [u.name for u in units]
        if len(set(names)) != len(names):
            raise VirtualPlantError(f"unit names must be unique, got {names}")
        if not _is_loopback(host) and not allow_remote_insecure:
            raise VirtualPlantError(
                f"host {host!r} is not loopback: the virtual plant serves without security "
                "(OPC UA NoSecurity, Modbus has none); pass allow_remote_insecure=True to expose it anyway")
        if scan_s is not None:
            if not math.isfinite(scan_s) or scan_s <= 0.0:
                raise VirtualPlantError(f"scan_s must be > 0, got {scan_s}")
            if isinstance(clock, VirtualClock):
                raise VirtualPlantError("a VirtualClock never waits: use scan_s=None and await scan()")
        self._clock = clock
        self._host = host
        self._scan_s = scan_s
        self._log = (log if log is not None else structlog.get_logger(__name__)).bind(virtual_plant=host)
        self._units = {u.name: _Unit(u, clock) for u in units}
        apply: ApplyWrites = self._apply
        self._servers: list[_OpcUaServer | _ModbusServer] = []
        self._server_of: dict[str, _OpcUaServer | _ModbusServer] = {}
        groups: dict[tuple[str, int], list[_Unit]] = {}
        for unit in self._units.values():
            groups.setdefault((unit.spec.protocol, unit.spec.port), []).append(unit)
        for (protocol, port), members in groups.items():
            server: _OpcUaServer | _ModbusServer
            if protocol == "opcua":
                server = _OpcUaServer(host, port, members, apply, self._log)
            else:
                ids = [m.spec.device_id for m in members]
                if len(set(ids)) != len(ids):
                    raise VirtualPlantError(f"Modbus port {port}: units {[m.spec.name for m in members]} "
                                            f"need distinct device_id, got {ids}")
                server = _ModbusServer(host, port, members, apply, self._log)
            self._servers.append(server)
            for m in members:
                self._server_of[m.spec.name] = server
        self._scan_task: asyncio.Task[None] | None = None
        self._end_s: float | None = None
        self._finished = asyncio.Event()

    # ------------------------------------------------------------------ views
    @property
    def units(self) -> tuple[VirtualUnit, ...]:
        """The served units, in configuration order."""
        return tuple(u.spec for u in self._units.values())

    @property
    def running(self) -> bool:
        """True while the servers are up."""
        return any(s.running for s in self._servers)

    def io(self, unit: str) -> SimulatedIO:
        """The in-process adapter behind ``unit`` (simulator truth and DCS state for tests and KPIs)."""
        return self._units[unit].io

    def endpoint(self, unit: str) -> dict[str, Any]:
        """Endpoint mapping of ``unit`` in :func:`plant_io.bindings.parse_endpoint` format."""
        spec = self._units[unit].spec
        if spec.protocol == "opcua":
            return {"url": f"opc.tcp://{self._host}:{spec.port}{OPCUA_PATH}", "security": "none"}
        return {"host": self._host, "port": spec.port, "device_id": spec.device_id}

    def bindings(self) -> dict[str, UnitBindings]:
        """Generated endpoint and bindings of every unit (see the module docstring)."""
        out: dict[str, UnitBindings] = {}
        for name, unit in self._units.items():
            tags: Mapping[str, OpcUaTag | ModbusTag] = unit.opcua if unit.spec.protocol == "opcua" else unit.modbus
            out[name] = UnitBindings(name, unit.spec.protocol, self.endpoint(name),
                                     {tag: _binding_mapping(b) for tag, b in tags.items()})
        return out

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Publish the plant as of now and open every server (and the scan task, if ``scan_s``)."""
        if self.running:
            return
        try:
            for server in self._servers:
                await server.prepare()
            await self.scan()
            for server in self._servers:
                await server.listen()
        except BaseException:
            for server in self._servers:
                await server.stop()
            raise
        if self._scan_s is not None and self._scan_task is None:
            self._scan_task = asyncio.get_running_loop().create_task(self._scan_loop(self._scan_s))
        self._log.info("virtual_plant_started", units=list(self._units), servers=len(self._servers))

    async def stop(self) -> None:
        """Close the servers (clients lose their link); the simulated DCS keeps scanning."""
        was_running = self.running
        for server in self._servers:
            await server.stop()
        if was_running:
            self._log.info("virtual_plant_servers_stopped")

    async def close(self) -> None:
        """Stop the scan task and the servers."""
        task, self._scan_task = self._scan_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.stop()

    async def __aenter__(self) -> VirtualPlant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_until(self, stop: asyncio.Event, end_s: float | None = None) -> None:
        """Serve until ``stop`` is set or the clock reaches ``end_s`` (plant seconds), then close."""
        self._end_s = end_s
        self._finished.clear()
        if not self.running:
            await self.start()
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._finished.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await self.close()

    # ------------------------------------------------------------------ scans
    async def scan(self) -> float:
        """Advance every plant to the clock's time and publish all values; returns that time."""
        now = self._clock.monotonic()
        for unit in self._units.values():
            await self._publish(unit)
        if self._end_s is not None and now >= self._end_s:
            self._finished.set()
        return now

    async def _scan_loop(self, scan_s: float) -> None:
        next_s = self._clock.monotonic() + scan_s
        while True:
            await self._clock.sleep_until(next_s)
            try:
                await self.scan()
            except Exception as exc:  # a failed scan must not end the plant
                self._log.error("virtual_plant_scan_failed", error=f"{type(exc).__name__}: {exc}")
            next_s += scan_s
            now = self._clock.monotonic()
            if next_s <= now:  # fell behind: skip the missed scans (never scan back to back)
                next_s = now + scan_s

    async def _publish(self, unit: _Unit) -> None:
        samples = await unit.io.read(unit.readable)  # advances the plant and runs a DCS scan
        await self._server_of[unit.spec.name].publish(unit, samples, self._clock.utc())

    async def _apply(self, unit: _Unit, writes: Sequence[Write]) -> None:
        """Client writes: advance the plant, apply as the DCS would, republish the unit."""
        results = await unit.io.write(writes)
        for w, r in zip(writes, results):
            if r.ok:
                unit.written[w.tag] = w.value
            else:
                self._log.warning("virtual_plant_write_refused", unit=unit.spec.name, tag=w.tag, detail=r.detail)
        await self._publish(unit)


def generate_bindings(plant: VirtualPlant, out_dir: str | Path | None = None) -> dict[str, UnitBindings]:
    """Bindings of every unit of ``plant``; with ``out_dir``, also written as ``<out_dir>/<unit>.yaml``."""
    result = plant.bindings()
    if out_dir is not None:
        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for name, ub in result.items():
            text = (f"# Generated by the virtual plant (plant_io/virtual_plant.py) for unit {name}.\n"
                    "# endpoint: plant_io.bindings.parse_endpoint; bindings: plant_io.bindings.parse_bindings.\n")
            text += yaml.safe_dump(ub.as_mapping(), sort_keys=False, default_flow_style=None, width=200)
            (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
    return result
