"""``apc mode`` (a unit, or ``--group`` a whole group), ``apc reload`` and ``apc status``: ordinary OPC UA
clients of the HMI server.

The credentials file (YAML, mode 0600 enforced; relative paths are relative
to the file)::

    username: olga
    password: "..."
    client_cert: olga_cert.pem       # from `apc hmi-cert --name olga ...`
    client_key: olga_key.pem         # .pem, mode 0600
    server_cert: hmi_server_cert.pem # pinned: no trust on first use
    # application_uri: defaults to the URI in client_cert

Connections use Basic256Sha256 SignAndEncrypt; ``insecure_loopback`` (only
for a loopback endpoint) connects without security to a server started with
``allow_insecure_loopback``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from apc.groups import PENDING
from apc.hmi.certs import application_uri_of
from apc.hmi.group_nodes import GROUPS_FOLDER, group_node_id
from apc.hmi.server import HMI_NAMESPACE, ROOT, hmi_node_id, is_loopback_host
from apc.hmi.users import UsersFileError, check_private_file
from apc.types import Mode
from plant_io.ua_values import node_id

__all__ = [
    "HmiClientError",
    "HmiCredentials",
    "MvStatus",
    "UnitStatus",
    "format_status",
    "hmi_session",
    "load_credentials",
    "read_status",
    "request_group_mode",
    "request_mode",
    "request_reload",
]


class HmiClientError(Exception):
    """A command against the HMI server failed; the message says why."""


@dataclass(frozen=True)
class HmiCredentials:
    """Who the client is and which server it trusts."""

    username: str
    password: str = ""
    client_cert: Path | None = None
    client_key: Path | None = None
    server_cert: Path | None = None
    application_uri: str | None = None

    def __repr__(self) -> str:
        return f"HmiCredentials(username={self.username!r}, client_cert={self.client_cert})"


@dataclass(frozen=True)
class MvStatus:
    """One MV as the HMI server shows it (None: no good value)."""

    name: str
    enabled: bool | None
    value: float | None
    operator: tuple[float | None, float | None]
    engineering: tuple[float | None, float | None]


@dataclass(frozen=True)
class UnitStatus:
    """One unit as the HMI server shows it (None: no good value yet)."""

    name: str
    requested: str | None
    actual: str | None
    shed_reason: str | None
    hold_reason: str | None
    heartbeat: int | None
    last_cycle_utc: dt.datetime | None
    mvs: tuple[MvStatus, ...]


_KEYS = ("username", "password", "client_cert", "client_key", "server_cert", "application_uri")


def load_credentials(path: str | Path) -> HmiCredentials:
    """Read a credentials file (must be private, like an ssh key)."""
    path = Path(path)
    try:
        check_private_file(path, "credentials file")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UsersFileError as exc:
        raise HmiClientError(str(exc)) from None
    except (OSError, yaml.YAMLError) as exc:
        raise HmiClientError(f"{path}: cannot read credentials: {exc}") from None
    if not isinstance(data, dict):
        raise HmiClientError(f"{path}: expected a mapping with {', '.join(_KEYS)}")
    unknown = sorted(set(map(str, data)) - set(_KEYS))
    if unknown:
        raise HmiClientError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(_KEYS)}")
    for key in _KEYS:
        if key in data and not isinstance(data[key], str):
            raise HmiClientError(f"{path}: {key} must be a string")
    if not data.get("username"):
        raise HmiClientError(f"{path}: username is required")

    def file(key: str) -> Path | None:
        if not data.get(key):
            return None
        p = Path(data[key])
        return p if p.is_absolute() else path.parent / p

    creds = HmiCredentials(
        username=data["username"], password=data.get("password", ""),
        client_cert=file("client_cert"), client_key=file("client_key"), server_cert=file("server_cert"),
        application_uri=data.get("application_uri") or None,
    )
    if creds.client_key is not None:
        if creds.client_key.suffix.lower() != ".pem":
            raise HmiClientError(f"{creds.client_key}: the private key must be a .pem file")
        try:
            check_private_file(creds.client_key, "private key")
        except UsersFileError as exc:
            raise HmiClientError(str(exc)) from None
    return creds


@asynccontextmanager
async def hmi_session(endpoint: str, creds: HmiCredentials, *, insecure_loopback: bool = False,
                      timeout_s: float = 5.0) -> AsyncIterator[tuple[Client, int]]:
    """An open session and the HMI namespace index; SignAndEncrypt unless ``insecure_loopback``."""
    url = urlparse(endpoint)
    if url.scheme != "opc.tcp" or not url.hostname:
        raise HmiClientError(f"endpoint must be opc.tcp://HOST:PORT/..., got {endpoint!r}")
    if insecure_loopback and not is_loopback_host(url.hostname):
        raise HmiClientError(f"refusing an unsecured connection to {url.hostname}: not a loopback address")
    client = Client(endpoint, timeout=timeout_s)
    client.name = client.description = "apc hmi client"
    client.set_user(creds.username)
    client.set_password(creds.password)
    try:
        async with asyncio.timeout(timeout_s):
            if not insecure_loopback:
                await _secure(client, creds)
            await client.connect()
    except HmiClientError:
        raise
    except Exception as exc:
        raise HmiClientError(f"cannot connect to {endpoint}: {_why(exc)}") from None
    try:
        ns = await client.get_namespace_index(HMI_NAMESPACE)
    except Exception as exc:
        await _disconnect(client)
        raise HmiClientError(f"{endpoint} is not an APC HMI server ({_why(exc)})") from None
    try:
        yield client, ns
    finally:
        await _disconnect(client)


async def _secure(client: Client, creds: HmiCredentials) -> None:
    missing = [k for k in ("client_cert", "client_key", "server_cert") if getattr(creds, k) is None]
    if missing:
        raise HmiClientError(f"credentials lack {', '.join(missing)} (needed for SignAndEncrypt)")
    assert creds.client_cert and creds.client_key and creds.server_cert
    for p in (creds.client_cert, creds.client_key, creds.server_cert):
        if not p.is_file():
            raise HmiClientError(f"{p}: file not found")
    try:
        client.application_uri = creds.application_uri or application_uri_of(creds.client_cert)
    except ValueError as exc:
        raise HmiClientError(str(exc)) from None
    await client.set_security(SecurityPolicyBasic256Sha256, certificate=str(creds.client_cert),
                              private_key=str(creds.client_key), server_certificate=str(creds.server_cert),
                              mode=ua.MessageSecurityMode.SignAndEncrypt)


async def _disconnect(client: Client) -> None:
    try:
        await client.disconnect()
    except Exception:  # the session may already be gone; nothing to do
        pass


def _why(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    if isinstance(exc, TimeoutError):
        return "no answer (timeout)"
    return f"{type(exc).__name__}: {exc}"


async def request_mode(endpoint: str, creds: HmiCredentials, unit: str, mode: Mode | str, *,
                       insecure_loopback: bool = False, timeout_s: float = 5.0) -> tuple[str, str]:
    """Write ``<unit>/RequestedMode``; return (requested, actual) read back after the write."""
    mode = Mode(mode)
    async with hmi_session(endpoint, creds, insecure_loopback=insecure_loopback, timeout_s=timeout_s) as (c, ns):
        req = node_id(hmi_node_id(unit, "RequestedMode"), ns)
        act = node_id(hmi_node_id(unit, "ActualMode"), ns)
        dv = ua.DataValue(ua.Variant(mode.value, ua.VariantType.String))
        (status,) = await c.uaclient.write_attributes([req], [dv], ua.AttributeIds.Value)
        if not status.is_good():
            if status.value == ua.StatusCodes.BadNodeIdUnknown:
                raise HmiClientError(f"unit {unit!r} is not served by {endpoint}")
            raise HmiClientError(f"{unit}: mode request refused: {status.name}")
        values = await c.uaclient.read_attributes([req, act], ua.AttributeIds.Value)
        return str(_good(values[0])), str(_good(values[1]))


async def request_group_mode(endpoint: str, creds: HmiCredentials, group: str, mode: Mode | str, *,
                             insecure_loopback: bool = False, timeout_s: float = 5.0, wait_s: float = 0.0,
                             poll_s: float = 0.25) -> list[tuple[str, str]]:
    """Write ``Groups/<group>/RequestedMode``; return (member, status) of every member: ``engaged``,
    ``not engaged: <why>``, or (when no cycle came within ``wait_s``) the pending status. Members
    that answered at once are not waited for; the others are read again every ``poll_s``."""
    mode = Mode(mode)
    async with hmi_session(endpoint, creds, insecure_loopback=insecure_loopback, timeout_s=timeout_s) as (c, ns):
        req = node_id(group_node_id(group, "RequestedMode"), ns)
        ids = [node_id(group_node_id(group, n), ns) for n in ("Members", "MemberStatus")]
        dv = ua.DataValue(ua.Variant(mode.value, ua.VariantType.String))
        (status,) = await c.uaclient.write_attributes([req], [dv], ua.AttributeIds.Value)
        if not status.is_good():
            if status.value == ua.StatusCodes.BadNodeIdUnknown:
                raise HmiClientError(f"group {group!r} is not served by {endpoint}")
            raise HmiClientError(f"group {group}: mode request refused: {status.name}")
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_s
        while True:
            members, states = (_good(v) or [] for v in await c.uaclient.read_attributes(ids, ua.AttributeIds.Value))
            pairs = [(str(m), str(st)) for m, st in zip(members, states)]
            if not any(st == PENDING for _, st in pairs) or loop.time() >= end:
                return pairs
            await asyncio.sleep(min(poll_s, max(0.0, end - loop.time())))


async def request_reload(endpoint: str, creds: HmiCredentials, unit: str, *, insecure_loopback: bool = False,
                         timeout_s: float = 5.0) -> tuple[str, str]:
    """Write True to ``<unit>/ReloadRecipe`` (engineer only); return (ReloadStatus, RecipeSha256 in force).

    The recipe in force changes at the unit's next cycle; a refusal raises with the server's reason.
    """
    async with hmi_session(endpoint, creds, insecure_loopback=insecure_loopback, timeout_s=timeout_s) as (c, ns):
        cmd = node_id(hmi_node_id(unit, "ReloadRecipe"), ns)
        ids = [node_id(hmi_node_id(unit, n), ns) for n in ("ReloadStatus", "RecipeSha256")]
        dv = ua.DataValue(ua.Variant(True, ua.VariantType.Boolean))
        (status,) = await c.uaclient.write_attributes([cmd], [dv], ua.AttributeIds.Value)
        if status.value == ua.StatusCodes.BadNodeIdUnknown:
            raise HmiClientError(f"unit {unit!r} is not served by {endpoint} (or it has no ReloadRecipe node)")
        values = [_good(v) for v in await c.uaclient.read_attributes(ids, ua.AttributeIds.Value)]
        if not status.is_good():
            why = f" ({values[0]})" if status.value == ua.StatusCodes.BadInvalidState and values[0] else ""
            raise HmiClientError(f"{unit}: reload refused: {status.name}{why}")
        return str(values[0]), str(values[1])


def _good(dv: ua.DataValue) -> Any:
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None
    return dv.Value.Value if dv.Value is not None else None


async def _children(client: Client, nid: ua.NodeId) -> list[str]:
    refs = await client.get_node(nid).get_children_descriptions()
    return [r.BrowseName.Name for r in refs]


_UNIT_FIELDS = ("RequestedMode", "ActualMode", "ShedReason", "HoldReason", "Heartbeat", "LastCycleUtc")
_MV_FIELDS = ("Enabled", "Value", "OperatorLow", "OperatorHigh", "EngineeringLow", "EngineeringHigh")


async def read_status(endpoint: str, creds: HmiCredentials, *, insecure_loopback: bool = False,
                      timeout_s: float = 5.0) -> list[UnitStatus]:
    """Every unit's modes, heartbeat and MVs (one batched read after browsing)."""
    async with hmi_session(endpoint, creds, insecure_loopback=insecure_loopback, timeout_s=timeout_s) as (c, ns):
        units = [u for u in await _children(c, node_id(ROOT, ns)) if u != GROUPS_FOLDER]
        layout: list[tuple[str, list[str]]] = []
        for unit in units:
            layout.append((unit, await _children(c, node_id(hmi_node_id(unit, "MVs"), ns))))
        ids: list[ua.NodeId] = []
        for unit, mvs in layout:
            ids += [node_id(hmi_node_id(unit, f), ns) for f in _UNIT_FIELDS]
            ids += [node_id(hmi_node_id(unit, "MVs", mv, f), ns) for mv in mvs for f in _MV_FIELDS]
        values = [_good(dv) for dv in await c.uaclient.read_attributes(ids, ua.AttributeIds.Value)] if ids else []
    out: list[UnitStatus] = []
    pos = 0
    for unit, mvs in layout:
        u = values[pos:pos + len(_UNIT_FIELDS)]
        pos += len(_UNIT_FIELDS)
        mv_status = []
        for mv in mvs:
            m = values[pos:pos + len(_MV_FIELDS)]
            pos += len(_MV_FIELDS)
            mv_status.append(MvStatus(mv, m[0], m[1], (m[2], m[3]), (m[4], m[5])))
        out.append(UnitStatus(unit, u[0], u[1], u[2], u[3], u[4], u[5], tuple(mv_status)))
    return out


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def format_status(units: Sequence[UnitStatus]) -> str:
    """Human-readable status table."""
    lines = []
    for u in units:
        when = u.last_cycle_utc.isoformat(timespec="seconds") if u.last_cycle_utc else "-"
        lines.append(f"{u.name}: requested {u.requested or '-'}, actual {u.actual or '-'}, "
                     f"heartbeat {u.heartbeat if u.heartbeat is not None else '-'} ({when})")
        if u.shed_reason:
            lines.append(f"  shed: {u.shed_reason}")
        if u.hold_reason:
            lines.append(f"  hold: {u.hold_reason}")
        for m in u.mvs:
            state = "enabled" if m.enabled else ("disabled" if m.enabled is not None else "-")
            lines.append(f"  {m.name:14s} {state:8s} value {_num(m.value):>8s}  "
                         f"operator [{_num(m.operator[0])}, {_num(m.operator[1])}]  "
                         f"engineering [{_num(m.engineering[0])}, {_num(m.engineering[1])}]")
    return "\n".join(lines) if lines else "no units"


def _status_json(units: Sequence[UnitStatus]) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return v.isoformat()
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps([clean(asdict(u)) for u in units], indent=2, sort_keys=True)


# --------------------------------------------------------------------------- CLI
def cmd_mode(args: argparse.Namespace) -> int:
    """``apc mode UNIT ON|STANDBY|OFF --endpoint URL --credentials FILE``, or ``apc mode --group NAME ...``
    (prints each member's status after its next cycle: engaged, or not engaged with why)."""
    if (args.unit is None) == (args.group is None):
        print("error: give a UNIT or --group NAME (one of them)", file=sys.stderr)
        return 2
    if args.group is not None:
        return _cmd_group_mode(args)
    try:
        creds = load_credentials(args.credentials)
        requested, actual = asyncio.run(request_mode(
            args.endpoint, creds, args.unit, args.mode, insecure_loopback=args.insecure_loopback,
            timeout_s=args.timeout))
    except HmiClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.unit}: requested {requested} (actual {actual})")
    return 0


def _cmd_group_mode(args: argparse.Namespace) -> int:
    try:
        creds = load_credentials(args.credentials)
        members = asyncio.run(request_group_mode(
            args.endpoint, creds, args.group, args.mode, insecure_loopback=args.insecure_loopback,
            timeout_s=args.timeout, wait_s=args.timeout if args.wait is None else args.wait))
    except HmiClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"group {args.group}: requested {args.mode} for {len(members)} unit(s)")
    for name, status in members:
        print(f"  {name}: {status}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """``apc reload UNIT --endpoint URL --credentials FILE`` (engineer)."""
    try:
        creds = load_credentials(args.credentials)
        text, sha = asyncio.run(request_reload(args.endpoint, creds, args.unit,
                                               insecure_loopback=args.insecure_loopback, timeout_s=args.timeout))
    except HmiClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.unit}: {text} (in force now: {sha})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``apc status --endpoint URL --credentials FILE``."""
    try:
        creds = load_credentials(args.credentials)
        units = asyncio.run(read_status(args.endpoint, creds, insecure_loopback=args.insecure_loopback,
                                        timeout_s=args.timeout))
    except HmiClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_status_json(units) if args.json else format_status(units))
    return 0
