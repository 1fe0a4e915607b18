"""The alarm book as OPC UA Alarms & Conditions (Part 9) on the HMI server.

Each condition is an object ``Objects/APC/<unit>/Alarms/<cause>`` (node id
``s=<unit>.Alarms.<cause>``, with a ``ShelvingState`` child), created when first needed. Every change
of the book is one ``AlarmConditionType`` event emitted by the Server object (where ordinary clients
subscribe), with ``SourceName`` the unit, ``ConditionName`` the cause, ``Severity``, ``Message``,
``Retain`` and the Active/Acked/Confirmed states (``…/Id`` Booleans), ``SuppressedOrShelved`` and
``ShelvingState/CurrentState``. Retained conditions are sent again on ``ConditionRefresh``.

Methods, called with the condition (or its ``ShelvingState``) as the object, as the standard has it:
``Acknowledge`` and ``Confirm`` (EventId, Comment), ``AddComment`` (EventId, Comment),
``TimedShelve`` (ShelvingTime ms), ``OneShotShelve``, ``Unshelve``. Each needs the operator role;
a viewer gets ``BadUserAccessDenied``. The EventId must be one this server sent for the condition's
current episode (``BadEventIdUnknown`` otherwise). Refusals and actions are audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from asyncua import Server, ua
from asyncua.common.event_objects import AlarmCondition
from asyncua.server.event_generator import EventGenerator

from apc.alarms.book import Alarm, AlarmBook, AlarmChange, AlarmRefused
from apc.hmi.channel_guard import REQUEST_USER
from apc.hmi.users import HmiUser, Role
from plant_io.ua_values import node_id, status_code

_VT = ua.VariantType
_OI = ua.ObjectIds
_REFUSAL_CODE = {
    "unknown": ua.StatusCodes.BadNodeIdUnknown,
    "already_acked": ua.StatusCodes.BadConditionBranchAlreadyAcked,
    "already_confirmed": ua.StatusCodes.BadConditionBranchAlreadyConfirmed,
    "not_acked": ua.StatusCodes.BadInvalidState,
    "not_shelved": ua.StatusCodes.BadConditionNotShelved,
    "already_shelved": ua.StatusCodes.BadConditionAlreadyShelved,
    "not_active": ua.StatusCodes.BadInvalidState,
    "bad_duration": ua.StatusCodes.BadShelvingTimeOutOfRange,
}
_EVENT_IDS_KEPT = 64


def _lt(text: str) -> ua.LocalizedText:
    return ua.LocalizedText(text, "en")


class AlarmEvents:
    """Conditions, events and operator methods of one HMI server (see the module docstring)."""

    def __init__(self, server: Server, ns: int, book: AlarmBook, unit_folders: Mapping[str, ua.NodeId], *,
                 audit: Any, clock_utc: Callable[[], float], where: Callable[[Any], str]) -> None:
        self._server = server
        self._ns = ns
        self._book = book
        self._folders = dict(unit_folders)
        self._audit = audit
        self._utc = clock_utc
        self._where = where
        self._alarm_folders: dict[str, ua.NodeId] = {}
        self._conditions: dict[ua.NodeId, str] = {}
        """Condition node (and its ShelvingState) → condition id."""
        self._generators: dict[str, EventGenerator] = {}
        self._event_ids: dict[str, list[bytes]] = {}
        self._first_generator = True

    async def start(self, restored: list[AlarmChange]) -> None:
        """Register the condition methods and send the conditions retained before a restart."""
        methods: dict[int, Callable[..., Any]] = {
            _OI.AcknowledgeableConditionType_Acknowledge: self._acknowledge,
            _OI.AcknowledgeableConditionType_Confirm: self._confirm,
            _OI.ConditionType_AddComment: self._add_comment,
            _OI.ShelvedStateMachineType_TimedShelve: self._timed_shelve,
            _OI.ShelvedStateMachineType_OneShotShelve: self._oneshot_shelve,
            _OI.ShelvedStateMachineType_Unshelve: self._unshelve,
            _OI.AlarmConditionType_ShelvingState_TimedShelve: self._timed_shelve,
            _OI.AlarmConditionType_ShelvingState_OneShotShelve: self._oneshot_shelve,
            _OI.AlarmConditionType_ShelvingState_Unshelve: self._unshelve,
        }
        for method, callback in methods.items():
            self._server.link_method(self._server.get_node(node_id(method)), callback)
        await self.publish(restored)

    # ------------------------------------------------------------------ events
    async def publish(self, changes: list[AlarmChange]) -> None:
        """One event per change, in order."""
        for ch in changes:
            await self._emit(ch.alarm, ch)

    async def _condition_node(self, alarm: Alarm) -> ua.NodeId:
        cid = alarm.condition_id
        nid = node_id(cid, self._ns)
        if nid in self._conditions:
            return nid
        unit_folder = self._folders[alarm.unit]
        folder = self._alarm_folders.get(alarm.unit)
        if folder is None:
            node = await self._server.get_node(unit_folder).add_folder(
                node_id(f"{alarm.unit}.Alarms", self._ns), ua.QualifiedName("Alarms", self._ns))
            folder = self._alarm_folders[alarm.unit] = node.nodeid
        cond = await self._server.get_node(folder).add_object(nid, ua.QualifiedName(alarm.cause, self._ns))
        shelving = await cond.add_object(node_id(f"{cid}.ShelvingState", self._ns),
                                         ua.QualifiedName("ShelvingState", 0))
        self._conditions[nid] = cid
        self._conditions[shelving.nodeid] = cid
        return nid

    async def _generator(self, alarm: Alarm) -> EventGenerator:
        gen = self._generators.get(alarm.condition_id)
        if gen is None:
            nid = await self._condition_node(alarm)
            event: Any = AlarmCondition(sourcenode=self._folders[alarm.unit], severity=alarm.severity)
            event.add_property("NodeId", nid, _VT.NodeId)  # the ConditionId (Part 9, 5.5.2)
            event.add_property("ShelvingState/CurrentState", None, _VT.LocalizedText)
            event.add_property("ShelvingState/UnshelveTime", None, _VT.Double)
            event.add_property("ActiveState/TransitionTime", None, _VT.DateTime)  # typed UtcTime by asyncua
            event.SourceName = alarm.unit
            gen = EventGenerator(self._server.iserver.isession)
            await gen.init(event, emitting_node=node_id(_OI.Server), add_generates_event=self._first_generator)
            self._first_generator = False
            self._generators[alarm.condition_id] = gen
        return gen

    async def _emit(self, alarm: Alarm, change: AlarmChange) -> None:
        gen = await self._generator(alarm)
        ev: Any = gen.event
        ts = dt.datetime.fromtimestamp(alarm.changed_utc, dt.UTC)
        ev.ConditionName = alarm.cause
        ev.ConditionClassId = node_id(_OI.ProcessConditionClassType)
        ev.ConditionClassName = _lt("Process")
        ev.Severity = alarm.severity
        ev.LastSeverity = alarm.severity
        ev.Retain = alarm.retain
        ev.BranchId = ua.NodeId()
        ev.EnabledState = _lt("Enabled")
        setattr(ev, "EnabledState/Id", True)
        ev.ActiveState = _lt("Active" if alarm.active else "Inactive")
        setattr(ev, "ActiveState/Id", alarm.active)
        setattr(ev, "ActiveState/TransitionTime", dt.datetime.fromtimestamp(alarm.active_since_utc, dt.UTC))
        ev.AckedState = _lt("Acknowledged" if alarm.acked else "Unacknowledged")
        setattr(ev, "AckedState/Id", alarm.acked)
        ev.ConfirmedState = _lt("Confirmed" if alarm.confirmed else "Unconfirmed")
        setattr(ev, "ConfirmedState/Id", alarm.confirmed)
        ev.SuppressedOrShelved = bool(alarm.shelved)
        state = {"": "Unshelved", "timed": "TimedShelved", "oneshot": "OneShotShelved"}[alarm.shelved]
        setattr(ev, "ShelvingState/CurrentState", _lt(state))
        left_ms = ((alarm.shelved_until_utc - alarm.changed_utc) * 1000.0
                   if alarm.shelved == "timed" and alarm.shelved_until_utc is not None else 0.0)
        setattr(ev, "ShelvingState/UnshelveTime", left_ms)
        ev.Comment = _lt(alarm.comment)
        ev.ClientUserId = change.who
        ev.Quality = status_code(ua.StatusCodes.Good)
        await gen.trigger(time_attr=ts, message=f"{alarm.title}: {alarm.message}")
        ids = self._event_ids.setdefault(alarm.condition_id, [])
        if change.what == "raised":
            ids.clear()  # a new episode: acknowledgements refer to its events only
        ids.append(bytes(ev.EventId.Value))
        del ids[:-_EVENT_IDS_KEPT]

    # ------------------------------------------------------------------ methods
    def _caller(self) -> tuple[HmiUser | None, str]:
        user = REQUEST_USER.get()
        return (user if isinstance(user, HmiUser) else None), self._where(user)

    async def _judge(self, parent: ua.NodeId, service: str, act: Callable[[str, str, str, float], AlarmChange],
                     event_id: Any = None, check_event: bool = False) -> ua.StatusCode:
        user, where = self._caller()
        who = (user.name if user is not None else None) or "anonymous"
        cid = self._conditions.get(parent, "")
        code, why = 0, ""
        if user is None:
            code, why = ua.StatusCodes.BadUserAccessDenied, "not an HMI user"
        elif not user.hmi_role.at_least(Role.OPERATOR):
            why = f"role {user.hmi_role.value} may not {service} alarms (needs operator)"
            code = ua.StatusCodes.BadUserAccessDenied
        elif not cid:
            code, why = ua.StatusCodes.BadNodeIdUnknown, "not an alarm condition"
        elif check_event and _bytes(event_id) not in self._event_ids.get(cid, []):
            code, why = ua.StatusCodes.BadEventIdUnknown, "EventId is not one of this alarm's current episode"
        if not code:
            try:
                change = act(cid, who, where, self._utc())
            except AlarmRefused as exc:
                code, why = _REFUSAL_CODE.get(exc.code, ua.StatusCodes.BadInvalidState), str(exc)
            else:
                await self._emit(change.alarm, change)
                return status_code(ua.StatusCodes.Good)
        self._audit.warning("hmi_alarm_call_refused", utc=self._utc(), who=who, where=where, condition=cid or
                            parent.to_string(), service=service, why=why, status=status_code(code).name)
        return status_code(code)

    async def _acknowledge(self, parent: ua.NodeId, event_id: Any = None, comment: Any = None) -> ua.StatusCode:
        text = _text(comment)
        return await self._judge(parent, "acknowledge",
                                 lambda c, who, where, utc: self._book.acknowledge(c, who, where, text, utc),
                                 event_id, check_event=True)

    async def _confirm(self, parent: ua.NodeId, event_id: Any = None, comment: Any = None) -> ua.StatusCode:
        text = _text(comment)
        return await self._judge(parent, "confirm",
                                 lambda c, who, where, utc: self._book.confirm(c, who, where, text, utc),
                                 event_id, check_event=True)

    async def _add_comment(self, parent: ua.NodeId, event_id: Any = None, comment: Any = None) -> ua.StatusCode:
        text = _text(comment)
        return await self._judge(parent, "comment on",
                                 lambda c, who, where, utc: self._book.add_comment(c, who, where, text, utc),
                                 event_id, check_event=True)

    async def _timed_shelve(self, parent: ua.NodeId, shelving_ms: Any = None) -> ua.StatusCode:
        value = shelving_ms.Value if isinstance(shelving_ms, ua.Variant) else shelving_ms
        duration_s = float(value) / 1000.0 if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0
        return await self._judge(parent, "shelve",
                                 lambda c, who, where, utc: self._book.shelve(c, who, where, utc, duration_s))

    async def _oneshot_shelve(self, parent: ua.NodeId) -> ua.StatusCode:
        return await self._judge(parent, "shelve",
                                 lambda c, who, where, utc: self._book.shelve(c, who, where, utc, None))

    async def _unshelve(self, parent: ua.NodeId) -> ua.StatusCode:
        return await self._judge(parent, "unshelve", self._book.unshelve)


def _bytes(value: Any) -> bytes:
    v = value.Value if isinstance(value, ua.Variant) else value
    return bytes(v) if isinstance(v, (bytes, bytearray)) else b""


def _text(value: Any) -> str:
    v = value.Value if isinstance(value, ua.Variant) else value
    if isinstance(v, ua.LocalizedText):
        return str(v.Text or "")
    return str(v) if isinstance(v, str) else ""
