"""``apc alarms``: list and acknowledge the HMI server's alarms as an ordinary OPC UA A&C client.

Listing subscribes to AlarmCondition events of the Server object and calls ``ConditionRefresh``:
the server re-sends every retained condition between a RefreshStart and a RefreshEnd event.
Acknowledging calls ``Acknowledge`` on the condition with the EventId just received.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from asyncua import Client, ua

from apc.hmi.client_cmds import HmiClientError, HmiCredentials, hmi_session, load_credentials
from plant_io.ua_values import node_id

_REFRESH_END = node_id(ua.ObjectIds.RefreshEndEventType)


@dataclass(frozen=True)
class AlarmView:
    """One retained alarm as the server shows it."""

    condition: str
    """``<unit>.Alarms.<cause>``."""
    unit: str
    cause: str
    severity: int
    message: str
    active: bool
    acked: bool
    confirmed: bool
    shelved: str
    time_utc: str
    event_id: bytes

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("event_id")
        return out


class _Collector:
    def __init__(self) -> None:
        self.views: dict[str, AlarmView] = {}
        self.done = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        if getattr(event, "EventType", None) == _REFRESH_END:
            self.done.set()
            return
        cid = getattr(event, "NodeId", None)
        if not isinstance(cid, ua.NodeId) or not getattr(event, "ConditionName", None):
            return
        time = event.Time.replace(tzinfo=dt.UTC).isoformat() if isinstance(event.Time, dt.datetime) else ""
        shelving = getattr(event, "ShelvingState/CurrentState", None)
        view = AlarmView(str(cid.Identifier), str(event.SourceName), str(event.ConditionName), int(event.Severity),
                         str(getattr(event.Message, "Text", "") or ""), bool(getattr(event, "ActiveState/Id")),
                         bool(getattr(event, "AckedState/Id")), bool(getattr(event, "ConfirmedState/Id")),
                         "" if shelving is None or shelving.Text in (None, "Unshelved") else str(shelving.Text),
                         time, bytes(event.EventId))
        if event.Retain:
            self.views[view.condition] = view
        else:
            self.views.pop(view.condition, None)


async def _refresh(client: Client, timeout_s: float) -> dict[str, AlarmView]:
    collector = _Collector()
    sub = await client.create_subscription(50, collector)
    await sub.subscribe_events(client.nodes.server, [ua.ObjectIds.AlarmConditionType,
                                                    ua.ObjectIds.RefreshEndEventType])
    await client.nodes.server.call_method(node_id(ua.ObjectIds.ConditionType_ConditionRefresh),
                                          ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
    await asyncio.wait_for(collector.done.wait(), timeout_s)
    await sub.delete()
    return collector.views


async def list_alarms(endpoint: str, creds: HmiCredentials, *, insecure_loopback: bool = False,
                      timeout_s: float = 5.0) -> list[AlarmView]:
    """Every retained alarm, most severe first."""
    async with hmi_session(endpoint, creds, insecure_loopback=insecure_loopback, timeout_s=timeout_s) as (c, _):
        try:
            views = await _refresh(c, timeout_s)
        except TimeoutError:
            raise HmiClientError(f"{endpoint}: no answer to ConditionRefresh within {timeout_s:g} s") from None
        except ua.UaStatusCodeError as exc:
            raise HmiClientError(f"{endpoint}: ConditionRefresh refused: {ua.StatusCode(exc.code).name}") from None
    return sorted(views.values(), key=lambda v: (-v.severity, v.time_utc, v.condition))


async def acknowledge(endpoint: str, creds: HmiCredentials, conditions: Sequence[str], comment: str, *,
                      all_unacked: bool = False, insecure_loopback: bool = False,
                      timeout_s: float = 5.0) -> list[tuple[str, str]]:
    """Acknowledge the named conditions (or every unacknowledged one): (condition, outcome) each."""
    async with hmi_session(endpoint, creds, insecure_loopback=insecure_loopback, timeout_s=timeout_s) as (c, ns):
        try:
            views = await _refresh(c, timeout_s)
        except TimeoutError:
            raise HmiClientError(f"{endpoint}: no answer to ConditionRefresh within {timeout_s:g} s") from None
        targets = [v.condition for v in views.values() if not v.acked] if all_unacked else list(conditions)
        out = []
        for cid in targets:
            view = views.get(cid)
            if view is None:
                out.append((cid, "no such retained alarm"))
                continue
            try:
                await c.get_node(node_id(cid, ns)).call_method(
                    node_id(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge),
                    ua.Variant(view.event_id, ua.VariantType.ByteString), ua.LocalizedText(comment, "en"))
                out.append((cid, "acknowledged"))
            except ua.UaStatusCodeError as exc:
                out.append((cid, f"refused: {ua.StatusCode(exc.code).name}"))
        return out


def format_alarms(views: Sequence[AlarmView]) -> str:
    """One line per alarm."""
    if not views:
        return "no alarms"
    lines = []
    for v in views:
        state = ("ACTIVE " if v.active else "cleared") + (" unacked" if not v.acked else "        ")
        shelf = f" [{v.shelved}]" if v.shelved else ""
        lines.append(f"{v.severity:4d}  {v.condition:36s} {state}{shelf}  {v.time_utc[:19]}  {v.message}")
    return "\n".join(lines)


def cmd_alarms(args: argparse.Namespace) -> int:
    """``apc alarms --endpoint URL --credentials FILE [--ack CONDITION ... | --ack-all] [--json]``."""
    try:
        creds = load_credentials(args.credentials)
        if args.ack or args.ack_all:
            results = asyncio.run(acknowledge(args.endpoint, creds, args.ack or [], args.comment,
                                              all_unacked=args.ack_all, insecure_loopback=args.insecure_loopback,
                                              timeout_s=args.timeout))
            for cid, outcome in results:
                print(f"{cid}: {outcome}")
            return 0 if all(o == "acknowledged" for _, o in results) else 1
        views = asyncio.run(list_alarms(args.endpoint, creds, insecure_loopback=args.insecure_loopback,
                                        timeout_s=args.timeout))
    except HmiClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps([v.to_json() for v in views], indent=2, sort_keys=True) if args.json else format_alarms(views))
    return 0
