"""Plant I/O over OPC UA (asyncua 2.1) behind :class:`apc.protocols.PlantIO`.

Design rules (see ``docs``/reference notes on asyncua pitfalls):

* one batched Read service call per cycle that keeps StatusCode and
  SourceTimestamp (never ``read_values``, which drops both);
* writes carry an explicit VariantType from the binding and no timestamps
  or status (``DataValue(Variant(v, type))``); every returned StatusCode is checked;
* every service call is bounded by the endpoint timeout; a lost link raises
  :class:`~plant_io.errors.PlantLinkDown` and marks the client disconnected;
* reconnecting builds a NEW ``asyncua.Client`` (re-using one can hang) and is
  driven by the runtime through :meth:`OpcUaPlantIO.reconnect_if_due`, with a
  capped exponential back-off computed from the injected monotonic clock.
  asyncua's own auto-reconnect stays off.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from apc.types import Quality, Sample, Write, WriteResult
from plant_io.backoff import ReconnectBackoff
from plant_io.bindings import OpcUaEndpoint, OpcUaTag, counter_max
from plant_io.errors import PlantBindingError, PlantIOError, PlantLinkDown
from plant_io.ua_certificate import application_uri_of
from plant_io.ua_values import node_id

_VARIANT: Mapping[str, ua.VariantType] = {
    "Double": ua.VariantType.Double,
    "Float": ua.VariantType.Float,
    "Int16": ua.VariantType.Int16,
    "Int32": ua.VariantType.Int32,
    "Int64": ua.VariantType.Int64,
    "UInt16": ua.VariantType.UInt16,
    "UInt32": ua.VariantType.UInt32,
    "Boolean": ua.VariantType.Boolean,
}
# Built-in DataType node ids are ns=0;i=<VariantType value> for these types.
_DATA_TYPE_ID: Mapping[str, ua.NodeId] = {name: node_id(int(vt.value), 0) for name, vt in _VARIANT.items()}
_DATA_TYPE_NAME: Mapping[ua.NodeId, str] = {nid: name for name, nid in _DATA_TYPE_ID.items()}
_INT_RANGE: Mapping[str, tuple[int, int]] = {
    "Int16": (-(2**15), 2**15 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
_CURRENT_WRITE_MASK = 1 << int(ua.AccessLevel.CurrentWrite)
_NAMESPACE_ARRAY = node_id(ua.ObjectIds.Server_NamespaceArray, 0)
_MAX_NODES_PER_READ = node_id(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead, 0)
_MAX_NODES_PER_WRITE = node_id(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite, 0)

# Service results that mean the session/channel is gone (link down, reconnect).
_LINK_STATUS: frozenset[int] = frozenset(
    getattr(ua.StatusCodes, name)
    for name in (
        "BadSessionIdInvalid", "BadSessionClosed", "BadSessionNotActivated", "BadSecureChannelIdInvalid",
        "BadSecureChannelClosed", "BadConnectionClosed", "BadServerHalted", "BadShutdown",
        "BadCommunicationError", "BadTimeout", "BadNotConnected", "BadServerNotConnected",
        "BadNoCommunication", "BadRequestTimeout", "BadTcpServerTooBusy",
    )
)


def _posix_s(stamp: dt.datetime | None) -> float | None:
    """asyncua datetimes (UTC, aware or naive) → POSIX seconds."""
    if stamp is None:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _encode(value: float, data_type: str) -> ua.Variant | str:
    """Engineering value → typed Variant, or the reason it cannot be written."""
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"value {value!r} is not a finite number"
    vt = _VARIANT[data_type]
    if data_type == "Double":
        return ua.Variant(float(value), vt)
    if data_type == "Float":
        if abs(value) > _FLOAT32_MAX:
            return f"value {value!r} out of Float range"
        return ua.Variant(float(value), vt)
    if data_type == "Boolean":
        if value not in (0, 1):
            return f"value {value!r} is not 0 or 1 for a Boolean node"
        return ua.Variant(value == 1, vt)
    if not float(value).is_integer():
        return f"value {value!r} is not integral for an {data_type} node"
    lo, hi = _INT_RANGE[data_type]
    if not lo <= int(value) <= hi:
        return f"value {value!r} out of {data_type} range [{lo}, {hi}]"
    return ua.Variant(int(value), vt)


def _chunks(items: list[Any], limit: int) -> list[list[Any]]:
    if limit <= 0 or len(items) <= limit:
        return [items]
    return [items[i : i + limit] for i in range(0, len(items), limit)]


def _application_uri(cert_path: str) -> str:
    """First URI in the client certificate's subjectAltName (asyncua requires it to match)."""
    try:
        return application_uri_of(cert_path)
    except ValueError as exc:  # no URI in it, or not a certificate
        raise PlantIOError(f"client certificate {exc}; set application_uri") from None


class OpcUaPlantIO:
    """One unit's plant tags on one OPC UA server.

    ``clock_utc`` stamps ``Sample.receive_ts``; ``clock_monotonic`` drives the
    reconnect back-off. ``log`` defaults to ``structlog.get_logger(__name__)``.
    """

    def __init__(
        self,
        endpoint: OpcUaEndpoint,
        tags: Mapping[str, OpcUaTag],
        clock_utc: Callable[[], float],
        clock_monotonic: Callable[[], float],
        *,
        log: Any = None,
    ) -> None:
        for name, tag in tags.items():
            if not isinstance(tag, OpcUaTag):
                raise TypeError(f"tag {name!r}: expected OpcUaTag, got {type(tag).__name__}")
        self._endpoint = endpoint
        self._tags: dict[str, OpcUaTag] = dict(tags)
        self._clock_utc = clock_utc
        self._clock_monotonic = clock_monotonic
        self._log = (log if log is not None else structlog.get_logger(__name__)).bind(
            plant_io="opcua", url=endpoint.url
        )
        self._client: Client | None = None
        self._node_ids: dict[str, ua.NodeId] = {}
        self._max_read = 0
        self._max_write = 0
        self._read_plan: tuple[tuple[str, ...], list[str], list[ua.ReadValueId]] | None = None
        self._backoff = ReconnectBackoff(endpoint.reconnect_min_s, endpoint.reconnect_max_s)
        self._teardowns: set[asyncio.Task[None]] = set()
        self._unbound_logged: set[str] = set()

    # ------------------------------------------------------------------ types
    def counter_max(self, tag: str) -> int:
        """Largest value a counter written to ``tag`` takes before wrapping (see :func:`counter_max`)."""
        return counter_max(tag, self._tags.get(tag))

    # ------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        """True while a verified session is open (and asyncua has not seen it drop)."""
        return self._client is not None and self._client.uaclient.state is UaClientState.CONNECTED

    @property
    def next_reconnect_s(self) -> float:
        """Monotonic time at which :meth:`reconnect_if_due` will try again."""
        return self._backoff.next_attempt_s

    @property
    def backoff_s(self) -> float:
        """Delay added after the next failed reconnect attempt."""
        return self._backoff.delay_s

    # -------------------------------------------------------------- connect
    async def connect(self) -> None:
        """Open a new session and verify every binding; raise on any failure.

        Bounded by ``endpoint.timeout_s`` in total. Raises
        :class:`PlantBindingError` listing every mismatched tag,
        :class:`PlantLinkDown` when the server cannot be reached in time, and
        :class:`PlantIOError` for security/identity rejections.
        """
        old, self._client = self._client, None
        if old is not None:  # tear down in the background: connect stays within one timeout
            self._discard(old)
        ep = self._endpoint
        client = Client(ep.url, timeout=ep.timeout_s)
        client.name = client.description = "apc-runtime"
        try:
            async with asyncio.timeout(ep.timeout_s):
                if ep.username is not None:
                    client.set_user(ep.username)
                    client.set_password(ep.password or "")
                if ep.security == "sign_encrypt":
                    await self._apply_security(client)
                await client.connect()
                node_ids, problems = await self._resolve(client)
                await self._verify(client, node_ids, problems)
        except BaseException as exc:
            self._discard(client)
            if isinstance(exc, PlantIOError):
                raise
            if isinstance(exc, Exception):
                raise self._wrap(exc, "connect") from exc
            raise
        self._client = client
        self._node_ids = node_ids
        self._read_plan = None
        self._backoff.connected()
        self._log.info("plant_link_up", tags=len(self._tags), max_nodes_per_read=self._max_read)

    async def _apply_security(self, client: Client) -> None:
        ep = self._endpoint
        paths = {"client_cert_path": ep.client_cert_path, "client_key_path": ep.client_key_path,
                 "server_cert_path": ep.server_cert_path}
        missing = [f"{k}={v}" for k, v in paths.items() if v is None or not Path(v).is_file()]  # noqa: ASYNC240 (once per connect)
        if missing:
            raise PlantIOError(f"security files not found: {', '.join(missing)}")
        assert ep.client_cert_path and ep.client_key_path and ep.server_cert_path
        client.application_uri = ep.application_uri or _application_uri(ep.client_cert_path)
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=ep.client_cert_path,
            private_key=ep.client_key_path,
            server_certificate=ep.server_cert_path,
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )

    async def _resolve(self, client: Client) -> tuple[dict[str, ua.NodeId], list[str]]:
        """Binding strings → NodeIds (``nsu=`` URIs resolved via the server's NamespaceArray) and problems."""
        parsed: dict[str, ua.NodeId] = {}
        problems: list[str] = []
        for name, tag in self._tags.items():
            try:
                parsed[name] = ua.NodeId.from_string(tag.node_id)
            except Exception as exc:
                problems.append(f"{name}: cannot parse node id {tag.node_id!r} ({exc})")
        if not any(isinstance(n, ua.ExpandedNodeId) and n.NamespaceUri for n in parsed.values()):
            return parsed, problems
        (dv,) = await client.uaclient.read_attributes([_NAMESPACE_ARRAY], ua.AttributeIds.Value)
        namespaces = list(dv.Value.Value or []) if dv.Value is not None else []
        resolved: dict[str, ua.NodeId] = {}
        for name, nid in parsed.items():
            if isinstance(nid, ua.ExpandedNodeId) and nid.NamespaceUri:
                if nid.NamespaceUri not in namespaces:
                    problems.append(f"{name}: {self._tags[name].node_id}: namespace not on the server")
                    continue
                resolved[name] = node_id(nid.Identifier, namespaces.index(nid.NamespaceUri), nid.NodeIdType)
            else:
                resolved[name] = nid
        return resolved, problems

    async def _verify(self, client: Client, node_ids: Mapping[str, ua.NodeId], problems: list[str]) -> None:
        """One Read of DataType (+ access levels of writable tags) and the server's operation limits.

        Raises :class:`PlantBindingError` with ``problems`` plus every mismatch found.
        """
        tags = {name: tag for name, tag in self._tags.items() if name in node_ids}
        items: list[ua.ReadValueId] = [
            ua.ReadValueId(NodeId=_MAX_NODES_PER_READ, AttributeId=ua.AttributeIds.Value),
            ua.ReadValueId(NodeId=_MAX_NODES_PER_WRITE, AttributeId=ua.AttributeIds.Value),
        ]
        for name, tag in tags.items():
            items.append(ua.ReadValueId(NodeId=node_ids[name], AttributeId=ua.AttributeIds.DataType))
            if tag.writable:
                items.append(ua.ReadValueId(NodeId=node_ids[name], AttributeId=ua.AttributeIds.AccessLevel))
                items.append(ua.ReadValueId(NodeId=node_ids[name], AttributeId=ua.AttributeIds.UserAccessLevel))
        results = await client.uaclient.read(ua.ReadParameters(NodesToRead=items))
        if len(results) != len(items):
            raise PlantIOError(f"server answered {len(results)} of {len(items)} verification reads")
        it = iter(results)
        self._max_read = self._limit(next(it))
        self._max_write = self._limit(next(it))
        for name, tag in tags.items():
            dtype = next(it)
            access = (next(it), next(it)) if tag.writable else None
            status = dtype.StatusCode or ua.StatusCode()
            if not status.is_good():
                what = "node not found" if status.value == ua.StatusCodes.BadNodeIdUnknown else status.name
                problems.append(f"{name}: {tag.node_id}: {what}")
                continue
            actual = dtype.Value.Value if dtype.Value is not None else None
            if actual != _DATA_TYPE_ID[tag.data_type]:
                shown = _DATA_TYPE_NAME.get(actual, str(actual)) if isinstance(actual, ua.NodeId) else repr(actual)
                problems.append(
                    f"{name}: {tag.node_id}: data type is {shown} on the server, binding says {tag.data_type}"
                )
            if access is not None:
                lacking = [
                    label for label, dv in zip(("AccessLevel", "UserAccessLevel"), access)
                    if not isinstance(level := (dv.Value.Value if dv.Value is not None else None), int)
                    or not level & _CURRENT_WRITE_MASK
                ]
                if lacking:
                    problems.append(f"{name}: {tag.node_id}: bound writable but {'/'.join(lacking)} lacks CurrentWrite")
        if problems:
            raise PlantBindingError(problems)

    @staticmethod
    def _limit(dv: ua.DataValue) -> int:
        value = dv.Value.Value if dv.Value is not None else None
        ok = dv.StatusCode is None or dv.StatusCode.is_good()
        return int(value) if ok and isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    # -------------------------------------------------------------- reconnect
    async def reconnect_if_due(self, now_s: float | None = None) -> bool:
        """Reconnect when disconnected and the back-off has elapsed; True when connected.

        Call once per cycle. An attempt blocks at most ``endpoint.timeout_s``;
        after a failed attempt the next one is due ``backoff`` later, the
        back-off doubling from ``reconnect_min_s`` up to ``reconnect_max_s``.
        ``now_s`` defaults to the injected monotonic clock. Never raises
        :class:`PlantIOError` (failures are logged and retried).
        """
        if self.connected:
            return True
        if self._client is not None:  # asyncua saw the link drop between cycles
            self._link_lost("connection lost (detected by the session watchdog)")
        now = self._clock_monotonic() if now_s is None else now_s
        return await self._backoff.attempt(now, self.connect, self._log)

    # -------------------------------------------------------------- read
    async def read(self, tags: Sequence[str]) -> Mapping[str, Sample]:
        """Read all bound ``tags`` in one Read service call; unbound tags are absent.

        Quality follows the StatusCode severity (Good/Uncertain/Bad); a Bad
        status or a missing/non-numeric value gives ``Quality.BAD`` and ``nan``.
        """
        client = self._require_client()
        key = tuple(tags)
        if self._read_plan is None or self._read_plan[0] != key:
            names = [t for t in dict.fromkeys(tags) if t in self._node_ids]
            for t in key:
                if t not in self._tags and t not in self._unbound_logged:
                    self._unbound_logged.add(t)
                    self._log.warning("plant_tag_not_bound", tag=t)
            items = [ua.ReadValueId(NodeId=self._node_ids[t], AttributeId=ua.AttributeIds.Value) for t in names]
            self._read_plan = (key, names, items)
        _, names, items = self._read_plan
        if not names:
            return {}
        results: list[ua.DataValue] = []
        try:
            async with asyncio.timeout(self._endpoint.timeout_s):
                for chunk in _chunks(items, self._max_read):
                    params = ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Source, NodesToRead=chunk)
                    results.extend(await client.uaclient.read(params))
        except Exception as exc:
            raise self._wrap(exc, "read") from exc
        if len(results) != len(names):
            raise PlantIOError(f"server answered {len(results)} values for {len(names)} requested")
        receive_ts = self._clock_utc()
        return {name: self._sample(dv, receive_ts) for name, dv in zip(names, results)}

    @staticmethod
    def _sample(dv: ua.DataValue, receive_ts: float) -> Sample:
        status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
        raw = dv.Value.Value if dv.Value is not None else None
        source_ts = _posix_s(dv.SourceTimestamp)
        if isinstance(raw, (bool, int, float)) and not status.is_bad():
            quality = Quality.GOOD if status.is_good() else Quality.UNCERTAIN
            return Sample(float(raw), quality, source_ts, receive_ts)
        return Sample(math.nan, Quality.BAD, source_ts, receive_ts)

    # -------------------------------------------------------------- write
    async def write(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        """Write typed values (no timestamps) in one Write call; one result per write, in order.

        Unbound or read-only-bound tags and values that do not fit the node's
        type are refused locally (``ok=False``) without any traffic.
        """
        results: list[WriteResult | None] = [None] * len(writes)
        pending: list[tuple[int, ua.Variant]] = []
        for i, w in enumerate(writes):
            tag = self._tags.get(w.tag)
            if tag is None:
                results[i] = WriteResult(w.tag, False, "not bound")
                continue
            if not tag.writable:
                results[i] = WriteResult(w.tag, False, "not writable (binding)")
                continue
            variant = _encode(w.value, tag.data_type)
            if isinstance(variant, str):
                results[i] = WriteResult(w.tag, False, variant)
                continue
            pending.append((i, variant))
        if pending:
            client = self._require_client()
            items = [
                ua.WriteValue(
                    NodeId=self._node_ids[writes[i].tag],
                    AttributeId=ua.AttributeIds.Value,
                    # No StatusCode and no timestamps: many DCSs refuse writes carrying them.
                    Value=ua.DataValue(variant, StatusCode=None),
                )
                for i, variant in pending
            ]
            statuses: list[ua.StatusCode] = []
            try:
                async with asyncio.timeout(self._endpoint.timeout_s):
                    for chunk in _chunks(items, self._max_write):
                        statuses.extend(await client.uaclient.write(ua.WriteParameters(NodesToWrite=chunk)))
            except Exception as exc:
                raise self._wrap(exc, "write") from exc
            if len(statuses) != len(pending):
                raise PlantIOError(f"server answered {len(statuses)} write results for {len(pending)} writes")
            for (i, _), status in zip(pending, statuses):
                ok = status.is_good()
                results[i] = WriteResult(writes[i].tag, ok, "" if ok else status.name)
        for i, res in enumerate(results):
            assert res is not None
            if not res.ok:
                self._log.warning("plant_write_refused", tag=res.tag, value=writes[i].value, detail=res.detail)
        return [r for r in results if r is not None]

    # -------------------------------------------------------------- close
    async def close(self) -> None:
        """Close the session (bounded by the timeout) and wait for pending teardowns."""
        await self._drop_client("close")
        if self._teardowns:
            await asyncio.gather(*self._teardowns, return_exceptions=True)

    # -------------------------------------------------------------- internals
    def _require_client(self) -> Client:
        if self._client is None or not self.connected:
            if self._client is not None:
                self._link_lost("connection lost (detected by the session watchdog)")
            raise PlantLinkDown(f"not connected to {self._endpoint.url}")
        return self._client

    def _wrap(self, exc: Exception, op: str) -> PlantIOError:
        """Classify an exception from asyncua; mark the link down when it is one."""
        if isinstance(exc, ua.UaStatusCodeError) and exc.code not in _LINK_STATUS:
            name = ua.StatusCode(exc.code).name
            return PlantIOError(f"{op} on {self._endpoint.url} refused: {name}")
        if isinstance(exc, TimeoutError):
            reason = f"{op}: no answer within {self._endpoint.timeout_s} s"
        else:
            reason = f"{op}: {type(exc).__name__}: {exc}"
        self._link_lost(reason)
        return PlantLinkDown(f"{self._endpoint.url}: {reason}")

    def _link_lost(self, reason: str) -> None:
        """Forget the session (tear it down in the background); first retry is due at once."""
        client, self._client = self._client, None
        if client is not None:
            self._discard(client)
            self._backoff.lost(self._clock_monotonic())
            self._log.warning("plant_link_down", reason=reason)

    def _discard(self, client: Client) -> None:
        task = asyncio.get_running_loop().create_task(self._teardown(client))
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)

    async def _drop_client(self, why: str) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._teardown(client)
            self._log.info("plant_link_closed", why=why)

    async def _teardown(self, client: Client) -> None:
        """Close session/channel politely if still up; always close the socket. Bounded."""
        try:
            async with asyncio.timeout(self._endpoint.timeout_s):
                if client.uaclient.state is UaClientState.CONNECTED:
                    await client.disconnect()
                else:
                    await client.close_session()  # cancels asyncua's background tasks
        except Exception:  # the link is being dropped anyway
            pass
        finally:
            client.disconnect_socket()
