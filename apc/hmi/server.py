"""The runtime's own OPC UA server for the HMI (asyncua 2.1), secure by default.

Security: only Basic256Sha256 SignAndEncrypt with username/password tokens
(anonymous is never offered). An unsecured endpoint exists only with
``allow_insecure_loopback=True`` *and* a loopback endpoint host. Every
connection runs through :mod:`apc.hmi.channel_guard`: over a channel that is
not the offered secure one only discovery is served (the insecure loopback
endpoint excepted, for loopback peers). Logins are throttled per peer address
and client certificate and their scrypt checks run off the event loop
(:mod:`apc.hmi.login`). Client certificates must be in the trust list
``trusted_clients`` (:mod:`apc.hmi.trust`, re-read when the directory
changes), which is required whenever a certificate is configured, except with
``allow_insecure_loopback`` (then, without a trust list, the secure endpoint
trusts no client and only the loopback endpoint serves sessions). Client
certificates are also checked for validity period, URI and key usage. A
permission ruleset allows authenticated HMI users the read/browse/subscribe/
write/call services only (no node management).

Address space (namespace :data:`HMI_NAMESPACE`, string node ids shown)::

    Objects/APC/<unit>/                     "<unit>"
        RequestedMode   String  rw operator  ON | STANDBY | OFF
        ActualMode, ShedReason, HoldReason   String
        Heartbeat       Int64    cycle number of the last published record
        LastCycleUtc    DateTime
        Sheds           Int64
        RecipeSha256    String   SHA-256 of the recipe file in force
        ReloadRecipe    Boolean  w engineer: True re-reads the recipe file; applied at the next cycle
        ReloadStatus    String   outcome of the last ReloadRecipe write ("pending: ..." or "refused: ...")
        MVs/<mv>/Enabled                  Boolean rw operator
                 Value                    Double  (readback)
                 OperatorLow/OperatorHigh Double  rw operator, inside engineering, low <= high
                 EngineeringLow/High      Double
        EstimateHealth  String ("ok" or why not)
        Estimate/<state>/Value, Sigma (sqrt of P diagonal)
        Predictions/<cv>/Next (Double), Trajectory (Double[])
        Batch/State, Segment (String) and whatever :meth:`HmiServer.update_batch` adds
        Alarms/<cause>  alarm conditions, created when first raised (:mod:`apc.hmi.alarm_events`)
        Performance/<kpi>  Double plant KPIs since the start (docs/performance_kpis.md), NotComputable
    Objects/APC/Groups/<group>/             site groups: see :mod:`apc.hmi.group_nodes`

Node id of ``<unit>/MVs/<mv>/Enabled`` is ``s=<unit>.MVs.<mv>.Enabled`` (see :func:`hmi_node_id`).

Every client write goes through :class:`_HmiAttributeService`, which replaces
asyncua's attribute service: it knows the session's user, so each node gets
its own verdict — role (``BadUserAccessDenied``), type (``BadTypeMismatch``),
value (``BadOutOfRange``) — is applied through the Unit's audited API, and
every refusal is audited as ``hmi_write_refused``. HMI users cannot write
any other node. ``ReloadRecipe`` (engineer only) calls the server's ``reload``
callback (:data:`ReloadCallback`, given by the runtime): a refused reload gets
``BadInvalidState``, a server without a callback ``BadNotSupported``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import errno
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from asyncua import ua
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.server.address_space import AttributeService

from apc.alarms.book import AlarmBook, AlarmChange
from apc.cycle_record import CycleRecord
from apc.groups import UnitGroup
from apc.hmi.alarm_events import AlarmEvents
from apc.hmi.certs import application_uri_of
from apc.hmi.channel_guard import ChannelGuard, ChannelGuardError, ChannelRules, GuardedServer, is_loopback_host
from apc.hmi.group_nodes import GROUPS_FOLDER, GroupExtras, GroupNodeIds, build_group_nodes, rollup_writes
from apc.hmi.login import HmiUserManager, LoginGate, PasswordPool
from apc.hmi.throttle import LoginThrottle
from apc.hmi.trust import TrustList, TrustListError
from apc.hmi.users import HmiUser, Role, UserDb
from apc.performance import SitePerformance
from apc.types import Mode
from apc.unit import Unit
from plant_io.ua_values import data_value, node_id, status_code

__all__ = ["HMI_NAMESPACE", "HmiServer", "HmiServerError", "ReloadCallback", "hmi_node_id", "is_loopback_host"]

HMI_NAMESPACE = "urn:apc:hmi"
"""Namespace URI of every HMI node."""
ROOT = "APC"

_log = logging.getLogger(__name__)
_VT = ua.VariantType
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

PERFORMANCE_EVERY_CYCLES = 12
"""The ``Performance`` nodes are refreshed every this many cycles of a unit (the first cycle included)."""

ReloadCallback = Callable[[str, str, str], Awaitable[str]]
"""``reload(unit, who, where)``: re-read the unit's recipe and request its reload; '' when
pending for the next cycle, else why it was refused (already audited by the unit)."""


_INTERNAL_USER = User(role=UserRole.Admin)
"""The user asyncua passes for the server's own writes (its default)."""


class HmiServerError(Exception):
    """The HMI server cannot be configured or started as asked."""


def hmi_node_id(unit: str, *path: str) -> str:
    """String identifier of an HMI node, e.g. ``hmi_node_id("cell-1", "MVs", "oxide_feed", "Enabled")``."""
    return ".".join((unit, *path))


class _Cmd(enum.Enum):
    MODE = "RequestedMode"
    ENABLED = "Enabled"
    OPERATOR_LOW = "OperatorLow"
    OPERATOR_HIGH = "OperatorHigh"
    RELOAD = "ReloadRecipe"
    BATCH = "Command"
    GROUP_MODE = "GroupRequestedMode"


_REQUIRED_ROLE = {_Cmd.MODE: Role.OPERATOR, _Cmd.GROUP_MODE: Role.OPERATOR, _Cmd.ENABLED: Role.OPERATOR,
                  _Cmd.OPERATOR_LOW: Role.OPERATOR, _Cmd.OPERATOR_HIGH: Role.OPERATOR,
                  _Cmd.RELOAD: Role.ENGINEER, _Cmd.BATCH: Role.OPERATOR}
"""Least role allowed to write each command node."""
BATCH_COMMANDS = ("start", "hold", "resume", "abort")
BATCH_ENGINEER_COMMANDS = ("curve", "plan", "reset_learning")
"""Batch commands that change what the next batches run or forget what was learned: engineer only,
as is a ``start`` naming a curve (``start curve=...``)."""


@dataclass(frozen=True)
class _Command:
    unit: str
    cmd: _Cmd
    mv: str = ""
    group: str = ""


@dataclass
class _UnitNodes:
    """Node ids of one unit (lazily extended for estimate states, CVs and batch keys)."""

    fixed: dict[str, ua.NodeId] = field(default_factory=dict)
    mvs: dict[str, dict[str, ua.NodeId]] = field(default_factory=dict)
    estimate: dict[str, tuple[ua.NodeId, ua.NodeId]] = field(default_factory=dict)
    predictions: dict[str, tuple[ua.NodeId, ua.NodeId]] = field(default_factory=dict)
    batch: dict[str, tuple[ua.NodeId, ua.VariantType]] = field(default_factory=dict)
    performance: dict[str, ua.NodeId] = field(default_factory=dict)
    folders: dict[str, ua.NodeId] = field(default_factory=dict)


def _dv(value: Any, vtype: ua.VariantType, ts: dt.datetime | None, code: int = ua.StatusCodes.Good) -> ua.DataValue:
    if code != ua.StatusCodes.Good:
        return data_value(ua.Variant(None, ua.VariantType.Null), status_code(code), ts, None)
    return data_value(ua.Variant(value, vtype), status_code(code), ts, None)


class _HmiPermissions(PermissionRuleset):
    """Service-level rule: authenticated HMI users may use the ordinary client services only."""

    def __init__(self) -> None:
        self._allowed = frozenset(node_id(t) for t in USER_TYPES)

    def check_validity(self, user: Any, action_type_id: ua.NodeId, body: Any) -> bool:
        return isinstance(user, HmiUser) and action_type_id in self._allowed


class _HmiAttributeService(AttributeService):
    """asyncua's attribute service with every HMI-user write routed to the HMI write handler."""

    def __init__(self, aspace: Any, handler: Callable[[User, list[ua.WriteValue]], Any]) -> None:
        super().__init__(aspace)
        self._handler = handler

    async def write(self, params: ua.WriteParameters,
                    user: User = _INTERNAL_USER) -> list[ua.StatusCode]:
        if type(user) is User and user.role is UserRole.Admin:  # the server's own internal session
            return list(await super().write(params, user))
        return list(await self._handler(user, list(params.NodesToWrite)))


class HmiServer:
    """OPC UA server publishing units to the HMI and taking operator commands (see module docstring)."""

    def __init__(
        self,
        units: Mapping[str, Unit],
        users: UserDb,
        *,
        endpoint_url: str,
        cert_path: str | Path | None,
        key_path: str | Path | None,
        allow_insecure_loopback: bool = False,
        audit: Any,
        clock_utc: Callable[[], float],
        trusted_clients: str | Path | None = None,
        application_uri: str | None = None,
        throttle: LoginThrottle | None = None,
        password_pool: PasswordPool | None = None,
        reload: ReloadCallback | None = None,
        alarms: AlarmBook | None = None,
        performance: SitePerformance | None = None,
        groups: Mapping[str, UnitGroup] | None = None,
    ) -> None:
        url = urlparse(endpoint_url)
        if url.scheme != "opc.tcp" or not url.hostname or url.port is None:
            raise HmiServerError(f"endpoint_url must be opc.tcp://HOST:PORT/..., got {endpoint_url!r}")
        if allow_insecure_loopback and not is_loopback_host(url.hostname):
            raise HmiServerError(
                f"refusing an unsecured endpoint on {url.hostname}: allow_insecure_loopback is only for "
                "127.0.0.1, ::1 or localhost")
        if (cert_path is None) != (key_path is None):
            raise HmiServerError("give both cert_path and key_path, or neither")
        if cert_path is None and not allow_insecure_loopback:
            raise HmiServerError("cert_path and key_path are required (Basic256Sha256 SignAndEncrypt); "
                                 "create them with `apc hmi-cert`")
        if key_path is not None and Path(key_path).suffix.lower() != ".pem":
            raise HmiServerError(f"{key_path}: the private key must be a .pem file")
        if cert_path is not None and trusted_clients is None and not allow_insecure_loopback:
            raise HmiServerError("trusted_clients is required with a server certificate: a directory of the client "
                                 "certificates allowed to connect (IEC 62443 SR 1.8); see docs/hmi.md")
        for name in units:
            if not name or "." in name or "/" in name:
                raise HmiServerError(f"unit name {name!r} cannot name an HMI folder (no '.' or '/')")
        self._groups = dict(groups or {})
        if self._groups and GROUPS_FOLDER in units:
            raise HmiServerError(f"unit name {GROUPS_FOLDER!r} is the HMI folder of the site's groups")
        for g in self._groups.values():
            missing = [m for m in g.members if m not in units]
            if missing:
                raise HmiServerError(f"group {g.name!r}: member(s) {missing} not served by this HMI server")
        self._group_nodes: dict[str, GroupNodeIds] = {}
        self._units = dict(units)
        self._users = users
        self.endpoint_url = endpoint_url
        self._cert = Path(cert_path) if cert_path is not None else None
        self._key = Path(key_path) if key_path is not None else None
        self._insecure = allow_insecure_loopback
        self._audit = audit
        self._utc = clock_utc
        self._trusted = Path(trusted_clients) if trusted_clients is not None else None
        if application_uri is None and self._cert is not None:
            try:
                application_uri = application_uri_of(self._cert)
            except (OSError, ValueError) as exc:
                raise HmiServerError(f"server certificate: {exc}") from None
        self.application_uri = application_uri or "urn:apc:hmi:server"
        self._throttle = throttle
        self._password_pool = password_pool
        self._reload = reload
        self._alarm_book = alarms
        self._performance = performance
        self._alarm_events: AlarmEvents | None = None
        self._server: GuardedServer | None = None
        self._gate: LoginGate | None = None
        self.trust_list = TrustList(self._trusted, audit=audit, clock_utc=clock_utc)
        """The client certificates trusted now (re-read when ``trusted_clients`` changes)."""
        self._ns = 0
        self._nodes: dict[str, _UnitNodes] = {}
        self._commands: dict[ua.NodeId, _Command] = {}
        self._paths: dict[ua.NodeId, str] = {}
        self._create_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    @property
    def namespace_index(self) -> int:
        """Index of :data:`HMI_NAMESPACE` on this server."""
        return self._ns

    async def start(self) -> None:
        """Build the address space and listen; raises :class:`HmiServerError` on any set-up problem."""
        if self._server is not None:
            raise HmiServerError("HMI server already started")
        try:
            self.trust_list.load()
        except TrustListError as exc:
            raise HmiServerError(str(exc)) from None
        gate = LoginGate(self._users, audit=self._audit, clock_utc=self._utc, throttle=self._throttle,
                         pool=self._password_pool or PasswordPool())
        secure = {(SecurityPolicyBasic256Sha256.URI, ua.MessageSecurityMode.SignAndEncrypt)} if self._cert else set()
        guard = ChannelGuard(ChannelRules(frozenset(secure), insecure_loopback=self._insecure),
                             audit=self._audit, clock_utc=self._utc, gate=gate)
        try:
            server = GuardedServer(user_manager=HmiUserManager(gate), guard=guard)
        except ChannelGuardError as exc:
            gate.close()
            raise HmiServerError(f"refusing to start the HMI server unprotected: {exc}") from None
        try:
            await self._start(server, gate)
        except BaseException:
            gate.close()
            raise
        self._gate = gate

    async def _start(self, server: GuardedServer, gate: LoginGate) -> None:
        await gate.start()
        # ConditionRefresh (Part 9) re-sends retained alarms to a new subscriber; its Refresh events get
        # this severity (asyncua's flag doubles as it)
        server.iserver.bind_condition_methods = 100
        await server.init()
        server.disable_clock()  # CurrentTime is refreshed by publish(): no 1 s task to wait for at stop
        server.allow_remote_admin(False)
        server.set_endpoint(self.endpoint_url)
        server.set_server_name("APC runtime HMI")
        server.product_uri = "urn:apc:runtime"
        await server.set_application_uri(self.application_uri)
        policies = []
        if self._cert is not None and self._key is not None:
            try:
                await server.load_certificate(str(self._cert))
                await server.load_private_key(str(self._key))
            except Exception as exc:
                raise HmiServerError(f"cannot load server certificate/key: {type(exc).__name__}: {exc}") from None
            policies.append(ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt)
        if self._insecure:
            policies.append(ua.SecurityPolicyType.NoSecurity)
        server.set_security_policy(policies, permission_ruleset=_HmiPermissions())  # type: ignore[arg-type]  # asyncua annotates its own SimpleRoleRuleset; any PermissionRuleset works
        server.set_identity_tokens([ua.UserNameIdentityToken])
        server.set_certificate_validator(self.trust_list)
        iserver = server.iserver
        iserver.attribute_service = _HmiAttributeService(iserver.aspace, self._client_writes)
        self._nodes, self._commands, self._paths = {}, {}, {}
        self._server = server
        try:
            self._ns = await server.register_namespace(HMI_NAMESPACE)
            await self._build()
            await server.start()
            if self._alarm_book is not None:
                self._alarm_events = AlarmEvents(server, self._ns, self._alarm_book,
                                                 {n: self._nid(n) for n in self._units}, audit=self._audit,
                                                 clock_utc=self._utc, where=self._where)
                await self._alarm_events.start([AlarmChange(a, "restored") for a in self._alarm_book.alarms()])
        except BaseException as exc:
            self._server = None
            if isinstance(exc, ChannelGuardError):
                raise HmiServerError(f"refusing to start the HMI server unprotected: {exc}") from None
            if isinstance(exc, OSError):
                if exc.errno == errno.EADDRINUSE:
                    port = urlparse(self.endpoint_url).port
                    raise HmiServerError(f"HMI endpoint {self.endpoint_url}: port {port} already in use") from None
                raise HmiServerError(f"HMI endpoint {self.endpoint_url}: cannot listen: "
                                     f"{exc.strerror or exc}") from None
            raise
        try:
            self._check_endpoints(await server.get_endpoints())
        except HmiServerError:
            await self.stop()
            raise
        self._audit.info("hmi_server_started", utc=self._utc(), who="runtime", where=self.endpoint_url,
                         security=[p.name for p in policies], units=sorted(self._units),
                         trusted_clients=str(self._trusted) if self._trusted else None,
                         trusted=len(self.trust_list.thumbprints))

    def _check_endpoints(self, endpoints: Sequence[ua.EndpointDescription]) -> None:
        modes = {(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode) for e in endpoints}
        want = set()
        if self._cert is not None:
            want.add(("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt))
        if self._insecure:
            want.add(("None", ua.MessageSecurityMode.None_))
        tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
        if modes != want or tokens != {ua.UserTokenType.UserName}:
            raise HmiServerError(f"unexpected endpoints {sorted(str(m) for m in modes)} / tokens {tokens}")

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        server, self._server = self._server, None
        gate, self._gate = self._gate, None
        self._alarm_events = None
        if server is None:
            return
        try:
            await server.stop()
        finally:
            if gate is not None:
                gate.close()
        self._audit.info("hmi_server_stopped", utc=self._utc(), who="runtime", where=self.endpoint_url)

    async def __aenter__(self) -> HmiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ address space
    def _nid(self, unit: str, *path: str) -> ua.NodeId:
        return node_id(hmi_node_id(unit, *path), self._ns)

    async def _folder(self, parent: ua.NodeId, nid: ua.NodeId, name: str) -> ua.NodeId:
        assert self._server is not None
        node = await self._server.get_node(parent).add_folder(nid, ua.QualifiedName(name, self._ns))
        self._paths[node.nodeid] = str(nid.Identifier)
        return node.nodeid

    async def _var(self, parent: ua.NodeId, nid: ua.NodeId, name: str, value: Any, vtype: ua.VariantType,
                   *, command: _Command | None = None, array: bool = False,
                   initial: int = ua.StatusCodes.Good) -> ua.NodeId:
        assert self._server is not None
        node = await self._server.get_node(parent).add_variable(
            nid, ua.QualifiedName(name, self._ns), ua.Variant(value, vtype), varianttype=vtype)
        if array:
            await node.write_attribute(ua.AttributeIds.ValueRank, ua.DataValue(ua.Variant(1, _VT.Int32)))
        if command is not None:
            await node.set_writable()
            self._commands[node.nodeid] = command
        if initial != ua.StatusCodes.Good:
            await self._server.write_attribute_value(node.nodeid, _dv(None, vtype, None, initial))
        self._paths[node.nodeid] = str(nid.Identifier)
        return node.nodeid

    async def _build(self) -> None:
        assert self._server is not None
        objects = self._server.nodes.objects.nodeid
        root = await self._folder(objects, node_id(ROOT, self._ns), ROOT)
        waiting = ua.StatusCodes.BadWaitingForInitialData
        for name, unit in self._units.items():
            nodes = _UnitNodes()
            self._nodes[name] = nodes
            ufolder = await self._folder(root, self._nid(name), name)
            f = nodes.fixed
            f["RequestedMode"] = await self._var(ufolder, self._nid(name, "RequestedMode"), "RequestedMode",
                                                 unit.modes.requested.value, _VT.String,
                                                 command=_Command(name, _Cmd.MODE))
            f["ActualMode"] = await self._var(ufolder, self._nid(name, "ActualMode"), "ActualMode",
                                              unit.modes.actual.value, _VT.String)
            f["ShedReason"] = await self._var(ufolder, self._nid(name, "ShedReason"), "ShedReason",
                                              unit.modes.shed_reason, _VT.String)
            f["HoldReason"] = await self._var(ufolder, self._nid(name, "HoldReason"), "HoldReason", "", _VT.String)
            f["Heartbeat"] = await self._var(ufolder, self._nid(name, "Heartbeat"), "Heartbeat", 0, _VT.Int64,
                                             initial=waiting)
            f["LastCycleUtc"] = await self._var(ufolder, self._nid(name, "LastCycleUtc"), "LastCycleUtc",
                                                dt.datetime.fromtimestamp(0, dt.UTC), _VT.DateTime,
                                                initial=waiting)
            f["Sheds"] = await self._var(ufolder, self._nid(name, "Sheds"), "Sheds", unit.sheds, _VT.Int64)
            f["RecipeSha256"] = await self._var(ufolder, self._nid(name, "RecipeSha256"), "RecipeSha256",
                                                unit.loaded.sha256, _VT.String)
            f["ReloadRecipe"] = await self._var(ufolder, self._nid(name, "ReloadRecipe"), "ReloadRecipe", False,
                                                _VT.Boolean, command=_Command(name, _Cmd.RELOAD))
            f["ReloadStatus"] = await self._var(ufolder, self._nid(name, "ReloadStatus"), "ReloadStatus", "",
                                                _VT.String)
            mv_folder = await self._folder(ufolder, self._nid(name, "MVs"), "MVs")
            for mv, state in unit.mvs.items():
                folder = await self._folder(mv_folder, self._nid(name, "MVs", mv), mv)
                ids = nodes.mvs[mv] = {}
                lim = state.limits

                async def add(key: str, value: Any, vtype: ua.VariantType, cmd: _Cmd | None = None,
                              initial: int = ua.StatusCodes.Good) -> None:
                    # awaited within this iteration: the loop variables are the ones meant
                    ids[key] = await self._var(folder, self._nid(name, "MVs", mv, key), key, value, vtype,  # noqa: B023
                                               command=_Command(name, cmd, mv) if cmd else None,  # noqa: B023
                                               initial=initial)

                await add("Enabled", state.enabled, _VT.Boolean, _Cmd.ENABLED)
                await add("Value", math.nan, _VT.Double, initial=waiting)
                await add("OperatorLow", float(lim.operator[0]), _VT.Double, _Cmd.OPERATOR_LOW)
                await add("OperatorHigh", float(lim.operator[1]), _VT.Double, _Cmd.OPERATOR_HIGH)
                await add("EngineeringLow", float(lim.engineering[0]), _VT.Double)
                await add("EngineeringHigh", float(lim.engineering[1]), _VT.Double)
                await add("Kind", state.spec.kind.value, _VT.String)
            f["EstimateHealth"] = await self._var(ufolder, self._nid(name, "EstimateHealth"), "EstimateHealth", "",
                                                  _VT.String, initial=waiting)
            nodes.folders["Estimate"] = await self._folder(ufolder, self._nid(name, "Estimate"), "Estimate")
            nodes.folders["Predictions"] = await self._folder(ufolder, self._nid(name, "Predictions"), "Predictions")
            nodes.folders["Batch"] = await self._folder(ufolder, self._nid(name, "Batch"), "Batch")
            nodes.folders["Performance"] = await self._folder(ufolder, self._nid(name, "Performance"), "Performance")
            for key in ("State", "Segment"):
                nid = await self._var(nodes.folders["Batch"], self._nid(name, "Batch", key), key, "", _VT.String,
                                      initial=waiting)
                nodes.batch[key] = (nid, _VT.String)
            if unit.batch is not None:
                await self._var(nodes.folders["Batch"], self._nid(name, "Batch", "Command"), "Command", "",
                                _VT.String, command=_Command(name, _Cmd.BATCH))
                f["BatchCommandStatus"] = await self._var(nodes.folders["Batch"],
                                                          self._nid(name, "Batch", "CommandStatus"),
                                                          "CommandStatus", "", _VT.String)
        self._group_nodes = await build_group_nodes(root, self._groups, self._group_var, self._group_folder)

    async def _group_folder(self, parent: ua.NodeId, nid: str, name: str) -> ua.NodeId:
        return await self._folder(parent, node_id(nid, self._ns), name)

    async def _group_var(self, parent: ua.NodeId, nid: str, name: str, value: Any, vtype: ua.VariantType,
                         command: bool, array: bool) -> ua.NodeId:
        group = nid.split(".")[1]
        return await self._var(parent, node_id(nid, self._ns), name, value, vtype, array=array,
                               command=_Command("", _Cmd.GROUP_MODE, group=group) if command else None)

    def _group_values(self, unit_name: str | None, ts: dt.datetime | None) -> list[tuple[ua.NodeId, ua.DataValue]]:
        """Roll-ups of the groups ``unit_name`` is in (None: of every group)."""
        return [w for name, g in self._groups.items() if unit_name is None or unit_name in g.members
                for w in rollup_writes(self._group_nodes[name], g.rollup(), ts, self._group_extras(g.members))]

    def _group_extras(self, members: Sequence[str]) -> GroupExtras:
        book, perf = self._alarm_book, self._performance
        active = sum(book.active_count(m) for m in members) if book is not None else 0
        unacked = sum(book.unacked_count(m) for m in members) if book is not None else 0
        if perf is None:
            return GroupExtras(active, unacked)
        g = perf.group(members)
        return GroupExtras(active, unacked, g.service_factor, g.on_h, g.available_h, g.sheds)

    async def _estimate_nodes(self, unit: str, state: str) -> tuple[ua.NodeId, ua.NodeId]:
        nodes = self._nodes[unit]
        async with self._create_lock:
            if state not in nodes.estimate:
                folder = await self._folder(nodes.folders["Estimate"], self._nid(unit, "Estimate", state), state)
                value = await self._var(folder, self._nid(unit, "Estimate", state, "Value"), "Value", 0.0, _VT.Double)
                sigma = await self._var(folder, self._nid(unit, "Estimate", state, "Sigma"), "Sigma", 0.0, _VT.Double)
                nodes.estimate[state] = (value, sigma)
        return nodes.estimate[state]

    async def _performance_values(self, unit: str, ts: dt.datetime) -> list[tuple[ua.NodeId, ua.DataValue]]:
        """``Performance/<kpi>`` (Double; a key's dots become underscores) and ``Performance/NotComputable``
        (why the others are missing), created as they first appear."""
        assert self._performance is not None
        figures = self._performance.figures(unit)
        if figures is None:
            return []
        nodes = self._nodes[unit]
        values: dict[str, tuple[Any, ua.VariantType]] = {
            key.replace(".", "_"): (float(v), _VT.Double) for key, v in figures.values.items()
            if not key.startswith("sheds_by_reason.") and _NAME_RE.match(key.replace(".", "_"))}
        values["NotComputable"] = ("; ".join(f"{k}: {why}" for k, why in sorted(figures.not_computable.items())),
                                   _VT.String)
        writes = []
        async with self._create_lock:
            for key, (value, vtype) in values.items():
                if key not in nodes.performance:
                    nodes.performance[key] = await self._var(nodes.folders["Performance"],
                                                             self._nid(unit, "Performance", key), key,
                                                             _placeholder(vtype), vtype)
                writes.append((nodes.performance[key], _dv(value, vtype, ts)))
        return writes

    async def _prediction_nodes(self, unit: str, cv: str) -> tuple[ua.NodeId, ua.NodeId]:
        nodes = self._nodes[unit]
        async with self._create_lock:
            if cv not in nodes.predictions:
                folder = await self._folder(nodes.folders["Predictions"], self._nid(unit, "Predictions", cv), cv)
                nxt = await self._var(folder, self._nid(unit, "Predictions", cv, "Next"), "Next", 0.0, _VT.Double)
                traj = await self._var(folder, self._nid(unit, "Predictions", cv, "Trajectory"), "Trajectory",
                                       [0.0], _VT.Double, array=True)
                nodes.predictions[cv] = (nxt, traj)
        return nodes.predictions[cv]

    # ------------------------------------------------------------------ publishing
    def _unit_nodes(self, unit_name: str) -> _UnitNodes | None:
        """The unit's nodes; None while the server is not running (publishing is then a no-op)."""
        if unit_name not in self._units:
            raise KeyError(f"unit {unit_name!r} is not served by this HMI server")
        if self._server is None:
            return None
        return self._nodes[unit_name]

    def _command_values(self, unit_name: str, ts: dt.datetime | None) -> list[tuple[ua.NodeId, ua.DataValue]]:
        """Current values of the writable nodes, straight from the Unit."""
        unit = self._units[unit_name]
        nodes = self._nodes[unit_name]
        out = [(nodes.fixed["RequestedMode"], _dv(unit.modes.requested.value, _VT.String, ts))]
        for mv, state in unit.mvs.items():
            ids = nodes.mvs[mv]
            out += [(ids["Enabled"], _dv(state.enabled, _VT.Boolean, ts)),
                    (ids["OperatorLow"], _dv(float(state.limits.operator[0]), _VT.Double, ts)),
                    (ids["OperatorHigh"], _dv(float(state.limits.operator[1]), _VT.Double, ts)),
                    (ids["EngineeringLow"], _dv(float(state.limits.engineering[0]), _VT.Double, ts)),
                    (ids["EngineeringHigh"], _dv(float(state.limits.engineering[1]), _VT.Double, ts))]
        return out

    async def _write_batch(self, writes: Sequence[tuple[ua.NodeId, ua.DataValue]]) -> None:
        """One internal Write service call (subscriptions see every change)."""
        assert self._server is not None
        params = ua.WriteParameters()
        params.NodesToWrite = [ua.WriteValue(NodeId=nid, AttributeId=ua.AttributeIds.Value, Value=dv)
                               for nid, dv in writes]
        results = await self._server.iserver.attribute_service.write(params)
        bad = [(self._paths.get(nid, str(nid)), r.name) for (nid, _), r in zip(writes, results) if not r.is_good()]
        if bad:
            _log.warning("HMI node update failed: %s", bad)

    async def publish(self, unit_name: str, record: CycleRecord) -> None:
        """Update the unit's nodes from one cycle's record (one batched write; no-op when stopped)."""
        nodes = self._unit_nodes(unit_name)
        if nodes is None:
            return
        unit = self._units[unit_name]
        ts = dt.datetime.fromtimestamp(float(record.utc), dt.UTC)
        mode = record.mode
        f = nodes.fixed
        writes = [
            (f["ActualMode"], _dv(mode.actual, _VT.String, ts)),
            (f["ShedReason"], _dv(record.shed_reason, _VT.String, ts)),
            (f["HoldReason"], _dv(mode.hold, _VT.String, ts)),
            (f["Heartbeat"], _dv(int(record.k), _VT.Int64, ts)),
            (f["LastCycleUtc"], _dv(ts, _VT.DateTime, ts)),
            (f["Sheds"], _dv(int(unit.sheds), _VT.Int64, ts)),
            (f["RecipeSha256"], _dv(unit.loaded.sha256, _VT.String, ts)),
        ]
        writes += self._command_values(unit_name, ts)
        for mv, ids in nodes.mvs.items():
            value = record.readback.get(mv)
            if value is None:
                writes.append((ids["Value"], _dv(None, _VT.Double, ts, ua.StatusCodes.Bad)))
            else:
                writes.append((ids["Value"], _dv(float(value), _VT.Double, ts)))
        est = record.estimate
        writes.append((f["EstimateHealth"], _dv(est.health, _VT.String, ts)))
        p_diag = est.P_diag
        for i, (state, x) in enumerate(zip(est.names, est.x)):
            value_id, sigma_id = await self._estimate_nodes(unit_name, str(state))
            writes.append((value_id, _dv(float(x), _VT.Double, ts)))
            if p_diag is None or i >= len(p_diag) or p_diag[i] is None:
                writes.append((sigma_id, _dv(None, _VT.Double, ts, ua.StatusCodes.Bad)))
            else:
                writes.append((sigma_id, _dv(math.sqrt(max(float(p_diag[i]), 0.0)), _VT.Double, ts)))
        predicted = record.plan.predicted if record.plan is not None else {}
        for cv, trajectory in predicted.items():
            values = [float(v) for v in trajectory]
            next_id, traj_id = await self._prediction_nodes(unit_name, str(cv))
            if values:
                writes.append((next_id, _dv(values[0], _VT.Double, ts)))
                writes.append((traj_id, _dv(values, _VT.Double, ts)))
        for g in self._groups.values():
            g.observe(unit_name, record)
        writes += self._group_values(unit_name, ts)
        if self._performance is not None and record.k % PERFORMANCE_EVERY_CYCLES == 0:
            writes += await self._performance_values(unit_name, ts)
        now = dt.datetime.now(dt.UTC)
        writes.append((node_id(ua.ObjectIds.Server_ServerStatus_CurrentTime),
                       data_value(ua.Variant(now, _VT.DateTime), status_code(ua.StatusCodes.Good), now, None)))
        await self._write_batch(writes)

    async def publish_alarms(self, changes: list[AlarmChange]) -> None:
        """Send the alarm book's changes as Alarms & Conditions events (a no-op while not running or
        without an alarm book)."""
        if self._alarm_events is not None and changes:
            await self._alarm_events.publish(changes)

    async def update_batch(self, unit_name: str, status: Mapping[str, Any]) -> None:
        """Create/update ``Batch/<key>`` nodes (str, bool, int, float or datetime values; None = no data).

        A no-op while the server is not running.
        """
        nodes = self._unit_nodes(unit_name)
        if nodes is None:
            return
        ts = dt.datetime.fromtimestamp(self._utc(), dt.UTC)
        writes = []
        for key, value in status.items():
            if not _NAME_RE.match(key):
                raise ValueError(f"batch key {key!r} must be an identifier")
            vtype = _variant_type(value)
            async with self._create_lock:
                if key not in nodes.batch:
                    nid = await self._var(nodes.folders["Batch"], self._nid(unit_name, "Batch", key), key,
                                          _placeholder(vtype or _VT.String), vtype or _VT.String)
                    nodes.batch[key] = (nid, vtype or _VT.String)
            nid, node_type = nodes.batch[key]
            if value is None:
                writes.append((nid, _dv(None, node_type, ts, ua.StatusCodes.BadWaitingForInitialData)))
                continue
            if vtype is not node_type:
                if node_type is _VT.Double and vtype is _VT.Int64:
                    value = float(value)  # noqa: PLW2901 (the node's type wins)
                else:
                    raise TypeError(f"batch {key!r} is a {node_type.name} node, got {type(value).__name__}")
            writes.append((nid, _dv(value, node_type, ts)))
        if writes:
            await self._write_batch(writes)

    # ------------------------------------------------------------------ client writes
    def _where(self, user: User) -> str:
        peer = ""
        iserver = self._server.iserver if self._server is not None else None
        sessions = getattr(iserver, "_external_sessions", {}) or {}
        for session in list(sessions.values()):
            if session.user is user:
                name = session.name
                peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) and len(name) >= 2 else str(name)
                break
        client = getattr(user, "client", "")
        return " ".join(p for p in ("hmi", peer, client) if p)

    def _refuse(self, user: User, where: str, nid: ua.NodeId, value: Any, code: int, why: str) -> int:
        cmd = self._commands.get(nid)
        extra = {"group": cmd.group} if cmd is not None and cmd.group else {}
        self._audit.warning("hmi_write_refused", utc=self._utc(), who=user.name or "anonymous", where=where,
                            unit=cmd.unit if cmd else "", what=self._paths.get(nid, nid.to_string()),
                            value=_plain(value), why=why, status=status_code(code).name, **extra)
        return code

    async def _client_writes(self, user: User, items: list[ua.WriteValue]) -> list[ua.StatusCode]:
        """Judge and apply one Write request of an HMI session; one status per item."""
        hmi_user = user if isinstance(user, HmiUser) else None
        where = self._where(user)
        codes: list[int | None] = [None] * len(items)
        limits: dict[tuple[str, str], list[tuple[int, _Cmd, float, Any]]] = {}
        touched: set[str] = set()
        for i, wv in enumerate(items):
            nid = wv.NodeId
            raw = wv.Value.Value.Value if wv.Value is not None and wv.Value.Value is not None else None
            cmd = self._commands.get(nid)
            if hmi_user is None:
                codes[i] = self._refuse(user, where, nid, raw, ua.StatusCodes.BadUserAccessDenied, "not an HMI user")
            elif cmd is None:
                if nid in self._paths:
                    code, why = ua.StatusCodes.BadNotWritable, "read-only HMI node"
                elif nid.NamespaceIndex == self._ns:
                    code, why = ua.StatusCodes.BadNodeIdUnknown, "no such HMI node"
                else:
                    code, why = ua.StatusCodes.BadUserAccessDenied, "HMI users may write HMI command nodes only"
                codes[i] = self._refuse(user, where, nid, raw, code, why)
            elif wv.AttributeId != ua.AttributeIds.Value:
                codes[i] = self._refuse(user, where, nid, raw, ua.StatusCodes.BadNotWritable,
                                        f"attribute {wv.AttributeId} is not writable")
            elif wv.IndexRange:
                codes[i] = self._refuse(user, where, nid, raw, ua.StatusCodes.BadWriteNotSupported,
                                        "index ranges are not supported")
            elif not hmi_user.hmi_role.at_least(_REQUIRED_ROLE[cmd.cmd]):
                codes[i] = self._refuse(user, where, nid, raw, ua.StatusCodes.BadUserAccessDenied,
                                        f"role {hmi_user.hmi_role.value} may not write this "
                                        f"(needs {_REQUIRED_ROLE[cmd.cmd].value})")
            else:
                value, code, why = _decode(cmd.cmd, wv.Value)
                if code:
                    codes[i] = self._refuse(user, where, nid, raw, code, why)
                elif cmd.cmd in (_Cmd.OPERATOR_LOW, _Cmd.OPERATOR_HIGH):
                    limits.setdefault((cmd.unit, cmd.mv), []).append((i, cmd.cmd, float(value), raw))
                elif cmd.cmd is _Cmd.RELOAD:
                    codes[i] = await self._request_reload(hmi_user, where, nid, raw, cmd.unit)
                elif cmd.cmd is _Cmd.BATCH and _batch_needs_engineer(str(value)) and \
                        not hmi_user.hmi_role.at_least(Role.ENGINEER):
                    codes[i] = self._refuse(user, where, nid, raw, ua.StatusCodes.BadUserAccessDenied,
                                            f"role {hmi_user.hmi_role.value} may not {str(value).split()[0]} "
                                            "(curves, plans and learning need engineer)")
                elif cmd.cmd is _Cmd.BATCH:
                    codes[i] = await self._batch_command(hmi_user, where, nid, raw, cmd.unit, str(value))
                elif cmd.cmd is _Cmd.GROUP_MODE:
                    group = self._groups[cmd.group]
                    group.request(Mode(value), who=hmi_user.name or "?", where=where, utc=self._utc())
                    touched.update(group.members)
                    codes[i] = ua.StatusCodes.Good
                else:
                    why = self._apply(hmi_user, where, cmd, value)
                    touched.add(cmd.unit)
                    codes[i] = self._refuse(user, where, nid, raw, ua.StatusCodes.BadInvalidState, why) if why \
                        else ua.StatusCodes.Good
        for (unit_name, mv), writes in limits.items():
            ok, why = self._apply_limits(hmi_user, where, unit_name, mv, writes)  # type: ignore[arg-type]
            for i, _, _, raw in writes:
                codes[i] = ua.StatusCodes.Good if ok else self._refuse(
                    user, where, items[i].NodeId, raw, ua.StatusCodes.BadOutOfRange, why)
            touched.add(unit_name)
        if touched and self._server is not None:
            ts = dt.datetime.fromtimestamp(self._utc(), dt.UTC)
            await self._write_batch([w for u in sorted(touched) for w in self._command_values(u, ts)]
                                    + self._group_values(None, ts))
        return [status_code(c if c is not None else ua.StatusCodes.BadInternalError) for c in codes]

    async def _request_reload(self, user: HmiUser, where: str, nid: ua.NodeId, raw: Any, unit_name: str) -> int:
        """Ask the runtime to reload the unit's recipe; Good when pending for the next cycle."""
        if self._reload is None:
            return self._refuse(user, where, nid, raw, ua.StatusCodes.BadNotSupported,
                                "this server has no recipe reload (no reload callback)")
        try:
            why = await self._reload(unit_name, user.name or "?", where)
            code = ua.StatusCodes.BadInvalidState if why else ua.StatusCodes.Good
        except Exception as exc:  # a reload bug refuses the write, it never stops the server
            why, code = f"reload failed: {type(exc).__name__}: {exc}", ua.StatusCodes.BadInternalError
        pending = self._units[unit_name].pending_reload_sha256
        text = f"refused: {why}" if why else f"pending: recipe {pending} is applied at the next cycle"
        if self._server is not None:
            ts = dt.datetime.fromtimestamp(self._utc(), dt.UTC)
            await self._write_batch([(self._nodes[unit_name].fixed["ReloadStatus"], _dv(text, _VT.String, ts))])
        return self._refuse(user, where, nid, raw, code, why) if why else code

    async def _batch_command(self, user: HmiUser, where: str, nid: ua.NodeId, raw: Any, unit_name: str,
                             command: str) -> int:
        """Start, hold, resume or abort the unit's batch; BadInvalidState (reason audited) when refused."""
        why = self._units[unit_name].batch_command(command, user.name or "?", where)
        if self._server is not None:
            ts = dt.datetime.fromtimestamp(self._utc(), dt.UTC)
            text = f"refused {command}: {why}" if why else f"{command}: accepted"
            await self._write_batch([(self._nodes[unit_name].fixed["BatchCommandStatus"], _dv(text, _VT.String, ts))])
        return self._refuse(user, where, nid, raw, ua.StatusCodes.BadInvalidState, why) if why else ua.StatusCodes.Good

    def _apply(self, user: HmiUser, where: str, cmd: _Command, value: Any) -> str:
        """Apply a mode or enable write; '' when done, else why not."""
        unit = self._units[cmd.unit]
        who = user.name or "?"
        if cmd.cmd is _Cmd.MODE:
            unit.request_mode(Mode(value), who=who, where=where, utc=self._utc())
        elif cmd.cmd is _Cmd.ENABLED:
            return unit.set_mv_enabled(cmd.mv, bool(value), who=who, where=where, utc=self._utc())
        return ""

    def _apply_limits(self, user: HmiUser, where: str, unit_name: str, mv: str,
                      writes: list[tuple[int, _Cmd, float, Any]]) -> tuple[bool, str]:
        """Move one MV's operator limits (low and/or high of one request together); (ok, why not)."""
        unit = self._units[unit_name]
        lo, hi = unit.mvs[mv].limits.operator
        for _, which, value, _ in writes:
            if which is _Cmd.OPERATOR_LOW:
                lo = value
            else:
                hi = value
        why = unit.set_operator_limits(mv, lo, hi, who=user.name or "?", where=where, utc=self._utc())
        return not why, why


def _decode(cmd: _Cmd, dv: ua.DataValue | None) -> tuple[Any, int, str]:
    """(value, 0, '') or (None, status code, why) for one client value."""
    variant = dv.Value if dv is not None else None
    if dv is not None and dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None, ua.StatusCodes.BadTypeMismatch, "written value carries a non-Good status"
    vtype = variant.VariantType if variant is not None else None
    value = variant.Value if variant is not None else None
    if cmd in (_Cmd.MODE, _Cmd.GROUP_MODE):
        if vtype is not _VT.String or not isinstance(value, str):
            return None, ua.StatusCodes.BadTypeMismatch, f"mode must be a String, got {_vt_name(vtype)}"
        if value not in {m.value for m in Mode}:
            return None, ua.StatusCodes.BadOutOfRange, f"mode must be one of ON, STANDBY, OFF, got {value!r}"
        return value, 0, ""
    if cmd is _Cmd.ENABLED:
        if vtype is not _VT.Boolean or not isinstance(value, bool):
            return None, ua.StatusCodes.BadTypeMismatch, f"Enabled must be a Boolean, got {_vt_name(vtype)}"
        return value, 0, ""
    if cmd is _Cmd.BATCH:
        if vtype is not _VT.String or not isinstance(value, str):
            return None, ua.StatusCodes.BadTypeMismatch, f"Command must be a String, got {_vt_name(vtype)}"
        words = value.split()
        if not words or words[0] not in BATCH_COMMANDS + BATCH_ENGINEER_COMMANDS:
            return None, ua.StatusCodes.BadOutOfRange, \
                f"Command must start with one of {', '.join(BATCH_COMMANDS + BATCH_ENGINEER_COMMANDS)}"
        return value, 0, ""
    if cmd is _Cmd.RELOAD:
        if vtype is not _VT.Boolean or not isinstance(value, bool):
            return None, ua.StatusCodes.BadTypeMismatch, f"ReloadRecipe must be a Boolean, got {_vt_name(vtype)}"
        if not value:
            return None, ua.StatusCodes.BadOutOfRange, "write True to request a reload"
        return value, 0, ""
    if vtype not in (_VT.Double, _VT.Float) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, ua.StatusCodes.BadTypeMismatch, f"limit must be a Double, got {_vt_name(vtype)}"
    if not math.isfinite(value):
        return None, ua.StatusCodes.BadOutOfRange, "limit must be finite"
    return float(value), 0, ""


def _batch_needs_engineer(command: str) -> bool:
    """A batch command only an engineer may give (:data:`BATCH_ENGINEER_COMMANDS`, or a start naming a curve)."""
    words = command.split()
    return bool(words) and (words[0] in BATCH_ENGINEER_COMMANDS
                            or (words[0] == "start" and any(w.startswith("curve=") for w in words[1:])))


def _vt_name(vtype: ua.VariantType | None) -> str:
    return vtype.name if vtype is not None else "no value"


def _variant_type(value: Any) -> ua.VariantType | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return _VT.Boolean
    if isinstance(value, int):
        return _VT.Int64
    if isinstance(value, float):
        return _VT.Double
    if isinstance(value, str):
        return _VT.String
    if isinstance(value, dt.datetime):
        return _VT.DateTime
    raise TypeError(f"unsupported batch value type {type(value).__name__}")


def _placeholder(vtype: ua.VariantType) -> Any:
    return {_VT.Boolean: False, _VT.Int64: 0, _VT.Double: 0.0, _VT.String: "",
            _VT.DateTime: dt.datetime.fromtimestamp(0, dt.UTC)}[vtype]


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a written value for the audit log."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return repr(value)[:200]
