"""Real OPC UA and Modbus TCP servers on 127.0.0.1 for integration tests (no protocol mocks).

* :func:`opcua_server` — an asyncua ``Server`` with one variable per :class:`UaVar`
  (string node ids ``ns=<idx>;s=<name>`` in namespace :data:`UA_NAMESPACE`),
  optionally Basic256Sha256 SignAndEncrypt + username/password only.
* :func:`modbus_server` — a pymodbus ``ModbusTcpServer`` over
  ``ModbusServerContext``/``ModbusDeviceContext`` whose four tables are given
  as lists indexed by PDU address; every received request PDU is recorded.
* :func:`silent_tcp_server` — accepts TCP connections and never answers (a hung device).
* :func:`make_certificate` — a self-signed application certificate (RSA 2048,
  SAN URI + localhost) written as PEM, for the secure OPC UA case.

All servers run in the caller's event loop; use them inside ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer

from apc.hmi.certs import make_certificate as product_certificate

UA_NAMESPACE = "urn:apc:loopback"
UA_SERVER_URI = "urn:apc:loopback:server"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- certificates
def make_certificate(directory: Path, stem: str, application_uri: str) -> tuple[Path, Path]:
    """Write ``<stem>_cert.pem`` and ``<stem>_key.pem`` (self-signed, SAN = URI, localhost, this host,
    127.0.0.1, one day) with the product's own certificate maker."""
    return product_certificate(directory, stem, application_uri, ["localhost", socket.gethostname(), "127.0.0.1"],
                               days=1, overwrite=True)


# --------------------------------------------------------------------------- OPC UA
@dataclass(frozen=True)
class UaVar:
    """One server variable: string node id ``name``, built-in type, initial value, client-writable or not."""

    name: str
    variant_type: ua.VariantType
    value: Any
    writable: bool = False


@dataclass(frozen=True)
class UaServerSecurity:
    """Basic256Sha256 SignAndEncrypt only, username/password identity only."""

    cert_path: Path
    key_path: Path
    users: Mapping[str, str]


class _PasswordUsers(UserManager):
    """Accepts exactly the configured username/password pairs (asyncua's default accepts anyone)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class OpcUaLoopback:
    """A running asyncua server and helpers to act on it from the server side.

    ``reads``/``writes`` record every client Read/Write request that touches the
    test namespace (one entry per service call: the list of NodeIds / WriteValues).
    """

    server: Server
    url: str
    port: int
    ns: int
    nodes: dict[str, ua.NodeId] = field(default_factory=dict)
    reads: list[list[ua.NodeId]] = field(default_factory=list)
    writes: list[list[ua.WriteValue]] = field(default_factory=list)

    def _on_read(self, event: Any, _: Any) -> None:
        ids = [rv.NodeId for rv in event.request_params.NodesToRead]
        if event.is_external and any(n.NamespaceIndex == self.ns for n in ids):
            self.reads.append(ids)

    def _on_write(self, event: Any, _: Any) -> None:
        if event.is_external:
            self.writes.append(list(event.request_params.NodesToWrite))

    def node_id(self, name: str) -> str:
        """Binding string of variable ``name``."""
        return self.nodes[name].to_string()

    async def set_value(
        self,
        name: str,
        value: Any,
        variant_type: ua.VariantType,
        status: int = ua.StatusCodes.Good,
        source_ts: dt.datetime | None = None,
    ) -> None:
        """Server-side write of value, status code and source timestamp (as a device would publish them)."""
        dv = ua.DataValue(ua.Variant(value, variant_type), ua.StatusCode(status), source_ts)
        await self.server.write_attribute_value(self.nodes[name], dv)

    def value(self, name: str) -> Any:
        """Current value of variable ``name`` as stored on the server."""
        dv = self.server.read_attribute_value(self.nodes[name])
        return dv.Value.Value if dv.Value is not None else None

    async def set_writable(self, name: str, writable: bool) -> None:
        """Grant or revoke client write access (AccessLevel/UserAccessLevel CurrentWrite)."""
        await self.server.get_node(self.nodes[name]).set_writable(writable)


@asynccontextmanager
async def opcua_server(
    variables: Sequence[UaVar],
    *,
    port: int | None = None,
    security: UaServerSecurity | None = None,
) -> AsyncIterator[OpcUaLoopback]:
    """Run an asyncua server on 127.0.0.1 (a free port unless ``port`` is given) until the block exits."""
    port = free_port() if port is None else port
    server = Server(user_manager=_PasswordUsers(security.users) if security else None)
    await server.init()
    server.disable_clock()  # its 1 s update loop would delay stop() by up to 1 s
    url = f"opc.tcp://127.0.0.1:{port}/apc/"
    server.set_endpoint(url)
    if security is None:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    else:
        await server.set_application_uri(UA_SERVER_URI)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_identity_tokens([ua.UserNameIdentityToken])
        await server.load_certificate(str(security.cert_path))
        await server.load_private_key(str(security.key_path))
    ns = await server.register_namespace(UA_NAMESPACE)
    loop = OpcUaLoopback(server=server, url=url, port=port, ns=ns)
    for var in variables:
        nid = ua.NodeId(var.name, ns)
        node = await server.nodes.objects.add_variable(nid, var.name, ua.Variant(var.value, var.variant_type))
        if var.writable:
            await node.set_writable()
        loop.nodes[var.name] = nid
    server.subscribe_server_callback(CallbackType.PreRead, loop._on_read)
    server.subscribe_server_callback(CallbackType.PreWrite, loop._on_write)
    async with server:
        yield loop


# --------------------------------------------------------------------------- Modbus
_FC_TABLE = {"holding": 3, "input": 4, "coil": 1, "discrete": 2}


@dataclass
class ModbusLoopback:
    """A running pymodbus server; ``requests`` records every request PDU received (function code, address)."""

    server: ModbusTcpServer
    host: str
    port: int
    requests: list[tuple[int, int]] = field(default_factory=list)

    async def set(self, table: str, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        """Server-side write at PDU ``address`` (the running store is addressed by PDU address)."""
        await self.server.async_setValues(1, _FC_TABLE[table], address, list(values))  # type: ignore[arg-type]

    async def get(self, table: str, address: int, count: int = 1) -> list[int] | list[bool]:
        """Server-side read at PDU ``address``."""
        return await self.server.async_getValues(1, _FC_TABLE[table], address, count)


def _block(values: Sequence[int] | Sequence[bool], default: int | bool) -> ModbusSequentialDataBlock:
    # Off-by-one of the server context: block address = PDU address + 1, so a block
    # starting at 1 puts values[i] at PDU address i.
    return ModbusSequentialDataBlock(1, list(values) if values else [default])


@asynccontextmanager
async def modbus_server(
    *,
    holding: Sequence[int] = (),
    inputs: Sequence[int] = (),
    coils: Sequence[bool] = (),
    discrete: Sequence[bool] = (),
    port: int | None = None,
) -> AsyncIterator[ModbusLoopback]:
    """Run a Modbus TCP server on 127.0.0.1; each table's list is indexed by PDU address (0-based)."""
    port = free_port() if port is None else port
    device = ModbusDeviceContext(
        hr=_block(holding, 0), ir=_block(inputs, 0), co=_block(coils, False), di=_block(discrete, False)
    )
    loop: ModbusLoopback | None = None

    def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending and loop is not None:
            loop.requests.append((pdu.function_code, getattr(pdu, "address", -1)))
        return pdu

    server = ModbusTcpServer(ModbusServerContext(devices=device, single=True), address=("127.0.0.1", port),
                             trace_pdu=trace)
    loop = ModbusLoopback(server=server, host="127.0.0.1", port=port)
    await server.serve_forever(background=True)
    try:
        yield loop
    finally:
        await server.shutdown()


# --------------------------------------------------------------------------- hung peer
@asynccontextmanager
async def silent_tcp_server(port: int | None = None) -> AsyncIterator[int]:
    """Accept TCP connections on 127.0.0.1 and never answer (a hung device or server); yields the port."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # keep the connection open, say nothing

    server = await asyncio.start_server(hold, "127.0.0.1", port or 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
