"""Tag bindings: where each plant tag lives on the OPC UA server or Modbus device.

A binding maps a plain tag name (``"cell.voltage_V"``) to a protocol address.
All classes are frozen and validate themselves; a bad field raises
``ValueError`` naming the field. :func:`parse_bindings` and
:func:`parse_endpoint` build them from plain mappings (as YAML gives them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args
from urllib.parse import urlparse

OpcUaDataType = Literal["Double", "Float", "Int16", "Int32", "Int64", "UInt16", "UInt32", "Boolean"]
ModbusTable = Literal["holding", "input", "coil", "discrete"]
ModbusDataType = Literal["int16", "uint16", "int32", "uint32", "float32", "bool"]
WordOrder = Literal["big", "little"]
Security = Literal["none", "sign_encrypt"]

OPCUA_DATA_TYPES: frozenset[str] = frozenset(get_args(OpcUaDataType))
MODBUS_TABLES: frozenset[str] = frozenset(get_args(ModbusTable))
MODBUS_DATA_TYPES: frozenset[str] = frozenset(get_args(ModbusDataType))

MODBUS_REGISTER_COUNT: Mapping[str, int] = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "bool": 1,
}
"""Registers (or bits, for ``bool``) one value of each Modbus data type occupies."""

# ns=<idx>; or nsu=<uri>; then i=<n> | s=<text> | g=<guid> | b=<base64>
_NODE_ID_RE = re.compile(r"^(?:(?:ns=\d+|nsu=[^;]+);)?(?:i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=[A-Za-z0-9+/=]+)$")
_CERT_SUFFIXES = (".pem", ".der")


def _fail(cls: type, name: str, msg: str) -> ValueError:
    return ValueError(f"{cls.__name__}.{name}: {msg}")


def _check_real(obj: Any, name: str) -> None:
    """Require a finite int/float (not bool); store it as float."""
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(type(obj), name, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _fail(type(obj), name, f"must be finite, got {value!r}")
    object.__setattr__(obj, name, float(value))


def _check_int(obj: Any, name: str, lo: int, hi: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(type(obj), name, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(type(obj), name, f"must be in [{lo}, {hi}], got {value}")


def _check_bool(obj: Any, name: str) -> None:
    if not isinstance(getattr(obj, name), bool):
        raise _fail(type(obj), name, f"must be true or false, got {getattr(obj, name)!r}")


def _check_choice(obj: Any, name: str, choices: frozenset[str]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise _fail(type(obj), name, f"must be one of {sorted(choices)}, got {value!r}")


def _check_timing(obj: Any) -> None:
    """``timeout_s`` > 0 and 0 < ``reconnect_min_s`` <= ``reconnect_max_s``."""
    for name in ("timeout_s", "reconnect_min_s", "reconnect_max_s"):
        _check_real(obj, name)
        if getattr(obj, name) <= 0.0:
            raise _fail(type(obj), name, f"must be > 0, got {getattr(obj, name)}")
    if obj.reconnect_max_s < obj.reconnect_min_s:
        raise _fail(type(obj), "reconnect_max_s", "must be >= reconnect_min_s")


@dataclass(frozen=True, slots=True)
class OpcUaTag:
    """One tag on an OPC UA variable node.

    ``data_type`` is the node's built-in DataType (checked at connect, used as
    the explicit VariantType of every write). ``writable`` tags are checked for
    CurrentWrite access at connect; writes to other tags are refused locally.
    """

    node_id: str
    data_type: OpcUaDataType
    writable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not _NODE_ID_RE.match(self.node_id):
            raise _fail(type(self), "node_id",
                        f"not an OPC UA node id string (e.g. 'ns=2;s=cell.voltage_V'), got {self.node_id!r}")
        _check_choice(self, "data_type", OPCUA_DATA_TYPES)
        _check_bool(self, "writable")


@dataclass(frozen=True, slots=True)
class OpcUaEndpoint:
    """How to reach and authenticate to one OPC UA server.

    ``security="sign_encrypt"`` uses Basic256Sha256 SignAndEncrypt and needs the
    client certificate/key and the server certificate (pinned: no trust on first
    use). Files ending ``.pem`` are read as PEM, ``.der`` as DER.
    ``application_uri`` defaults to the URI in the client certificate's SAN.
    Every request, and the whole connect, is bounded by ``timeout_s``;
    reconnect attempts back off from ``reconnect_min_s`` doubling to ``reconnect_max_s``.
    """

    url: str
    security: Security
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_cert_path: str | None = None
    client_key_path: str | None = None
    server_cert_path: str | None = None
    application_uri: str | None = None
    timeout_s: float = 2.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0

    def __post_init__(self) -> None:
        cls = type(self)
        if not isinstance(self.url, str):
            raise _fail(cls, "url", f"must be a string, got {self.url!r}")
        parsed = urlparse(self.url)
        if parsed.scheme != "opc.tcp" or not parsed.hostname:
            raise _fail(cls, "url", f"must look like opc.tcp://host:port/path, got {self.url!r}")
        if "@" in parsed.netloc:
            raise _fail(cls, "url", "must not carry credentials; use username/password")
        try:
            port = parsed.port
        except ValueError:
            port = None
        if port is None:
            raise _fail(cls, "url", f"needs an explicit valid port (e.g. opc.tcp://host:4840/), got {self.url!r}")
        _check_choice(self, "security", frozenset(get_args(Security)))
        optional = ("username", "password", "client_cert_path", "client_key_path", "server_cert_path",
                    "application_uri")
        for name in optional:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise _fail(cls, name, "must be a non-empty string or omitted")
        if (self.username is None) != (self.password is None):
            raise _fail(cls, "password" if self.password is None else "username", "username and password go together")
        paths = ("client_cert_path", "client_key_path", "server_cert_path")
        if self.security == "sign_encrypt":
            for name in paths:
                value = getattr(self, name)
                if value is None:
                    raise _fail(cls, name, "required with security='sign_encrypt' (the server certificate is pinned)")
                if not value.lower().endswith(_CERT_SUFFIXES):
                    raise _fail(cls, name, f"must end with .pem or .der (the suffix selects the parser), got {value!r}")
        else:
            if self.username is not None:
                raise _fail(cls, "username", "refused with security='none': the password would travel in clear")
            for name in paths:
                if getattr(self, name) is not None:
                    raise _fail(cls, name, "only used with security='sign_encrypt'")
        _check_timing(self)


@dataclass(frozen=True, slots=True)
class ModbusTag:
    """One tag in a Modbus table.

    ``address`` is the 0-based PDU address (register 40001 of a device manual is
    holding address 0). 32-bit types occupy ``address`` and ``address + 1``;
    ``word_order`` says which register holds the high word and ``byte_swap``
    swaps the two bytes inside each register (BADC / DCBA devices).
    Engineering value = raw * ``scale`` + ``offset``; writes invert it.
    Only ``holding`` and ``coil`` tags can be ``writable``; ``coil`` and
    ``discrete`` tables hold ``bool`` values and nothing else.
    """

    table: ModbusTable
    address: int
    data_type: ModbusDataType
    word_order: WordOrder = "big"
    byte_swap: bool = False
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False

    def __post_init__(self) -> None:
        cls = type(self)
        _check_choice(self, "table", MODBUS_TABLES)
        _check_choice(self, "data_type", MODBUS_DATA_TYPES)
        _check_choice(self, "word_order", frozenset(get_args(WordOrder)))
        _check_bool(self, "byte_swap")
        _check_bool(self, "writable")
        width = MODBUS_REGISTER_COUNT[self.data_type]
        _check_int(self, "address", 0, 65536 - width)
        _check_real(self, "scale")
        _check_real(self, "offset")
        if self.scale == 0.0:
            raise _fail(cls, "scale", "must not be 0 (writes divide by it)")
        is_bit_table = self.table in ("coil", "discrete")
        if is_bit_table != (self.data_type == "bool"):
            raise _fail(cls, "data_type",
                        f"coil/discrete tables hold bool and only bool; got {self.data_type!r} in {self.table!r}")
        if self.data_type == "bool":
            if self.byte_swap:
                raise _fail(cls, "byte_swap", "meaningless for bool")
            if self.word_order != "big":
                raise _fail(cls, "word_order", "meaningless for bool")
            if self.scale != 1.0 or self.offset != 0.0:
                raise _fail(cls, "scale", "bool tags take no scale/offset")
        if self.writable and self.table not in ("holding", "coil"):
            raise _fail(cls, "writable", f"the {self.table!r} table is read-only in Modbus")

    @property
    def width(self) -> int:
        """Registers (or bits) this tag occupies."""
        return MODBUS_REGISTER_COUNT[self.data_type]


@dataclass(frozen=True, slots=True)
class ModbusEndpoint:
    """How to reach one Modbus TCP device.

    Each request waits ``timeout_s`` for an answer and is re-sent up to
    ``retries`` times, so a dead device stalls a cycle for
    :attr:`worst_case_stall_s` = ``timeout_s * (retries + 1)``.
    ``max_read_gap`` is how many unused registers (or bits) a read block may
    span to merge neighbouring tags into one request; keep 0 unless the device
    maps the gap (reading a hole makes the whole block fail).
    """

    host: str
    port: int = 502
    device_id: int = 1
    timeout_s: float = 0.5
    retries: int = 1
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_read_gap: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise _fail(type(self), "host", f"must be a non-empty string, got {self.host!r}")
        _check_int(self, "port", 1, 65535)
        _check_int(self, "device_id", 0, 255)
        _check_int(self, "retries", 0, 10)
        _check_int(self, "max_read_gap", 0, 120)
        _check_timing(self)

    @property
    def worst_case_stall_s(self) -> float:
        """Longest a single request can block before failing: timeout × (retries + 1)."""
        return self.timeout_s * (self.retries + 1)


TagBinding = OpcUaTag | ModbusTag

_EXACT_FLOAT32 = 2**24
_EXACT_FLOAT64 = 2**53
COUNTER_MAX: Mapping[str, int] = {
    "Boolean": 1, "Int16": 2**15 - 1, "UInt16": 2**16 - 1, "Int32": 2**31 - 1, "UInt32": 2**32 - 1,
    "Int64": _EXACT_FLOAT64, "Float": _EXACT_FLOAT32, "Double": _EXACT_FLOAT64,
    "bool": 1, "int16": 2**15 - 1, "uint16": 2**16 - 1, "int32": 2**31 - 1, "uint32": 2**32 - 1,
    "float32": _EXACT_FLOAT32,
}
"""Largest value of a counter on each data type before it wraps to 0: the type's integer maximum, or
the largest integer a float carries exactly (float32 2^24; 64-bit values pass through a double)."""


def counter_max(name: str, binding: TagBinding | None) -> int:
    """How far a counter written to tag ``name`` may count; ``ValueError`` naming the tag when it cannot
    carry one (unbound, not writable, or a scaled Modbus register whose counts would not be integers)."""
    if binding is None:
        raise ValueError(f"{name}: a counter tag must be bound")
    if not binding.writable:
        raise ValueError(f"{name}: a counter tag must be bound writable")
    if isinstance(binding, ModbusTag) and (binding.scale != 1.0 or binding.offset != 0.0):
        raise ValueError(f"{name}: a counter register takes no scale or offset (scale 1, offset 0)")
    return COUNTER_MAX[binding.data_type]


def _build(cls: type[Any], where: str, entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__} (known: {sorted(known)})")
    try:
        return cls(**entry)
    except TypeError as exc:  # missing required field
        raise ValueError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_bindings(mapping: Mapping[str, Any]) -> dict[str, TagBinding]:
    """Tag bindings from plain mappings: ``node_id`` → :class:`OpcUaTag`, ``table`` → :class:`ModbusTag`.

    Example (YAML)::

        cell.voltage_V: {node_id: "ns=2;s=Cell1.U", data_type: Double}
        feed.sp_kg_h:   {table: holding, address: 10, data_type: float32, writable: true}
    """
    if not isinstance(mapping, Mapping):
        raise ValueError(f"bindings: expected a mapping of tag name to binding, got {type(mapping).__name__}")
    out: dict[str, TagBinding] = {}
    for name, entry in mapping.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"bindings: tag names must be non-empty strings, got {name!r}")
        where = f"bindings[{name!r}]"
        if isinstance(entry, Mapping) and "node_id" in entry:
            out[name] = _build(OpcUaTag, where, entry)
        elif isinstance(entry, Mapping) and "table" in entry:
            out[name] = _build(ModbusTag, where, entry)
        else:
            raise ValueError(f"{where}: needs 'node_id' (OPC UA) or 'table' (Modbus)")
    return out


def parse_endpoint(mapping: Mapping[str, Any]) -> OpcUaEndpoint | ModbusEndpoint:
    """An endpoint from a plain mapping: ``url`` → :class:`OpcUaEndpoint`, ``host`` → :class:`ModbusEndpoint`."""
    if isinstance(mapping, Mapping) and "url" in mapping:
        return _build(OpcUaEndpoint, "endpoint", mapping)  # type: ignore[no-any-return]
    if isinstance(mapping, Mapping) and "host" in mapping:
        return _build(ModbusEndpoint, "endpoint", mapping)  # type: ignore[no-any-return]
    raise ValueError("endpoint: needs 'url' (OPC UA) or 'host' (Modbus)")
