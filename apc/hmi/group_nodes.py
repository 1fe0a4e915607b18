"""The HMI nodes of the site's groups (:mod:`apc.groups`), under ``Objects/APC/Groups``::

    Objects/APC/Groups/<group>/             "Groups.<group>"
        RequestedMode   String   rw operator  ON | STANDBY | OFF for every member at once
        Members         String[]              member unit names
        UnitsOn, UnitsStandby, UnitsOff, UnitsShed   Int64 (actual modes; latched sheds)
        MemberStatus    String[]              per member: engaged | not engaged: <why> | pending: ...
        LineCurrent     String                disturbance | '' (see docs/runtime.md, "Groups")
        ActiveAlarms, UnackedAlarms           Int64 members' active / unacknowledged alarms
        ServiceFactor   Double                members' ON time over available time (docs/performance_kpis.md)
        OnHours, AvailableHours  Double       summed over members since the process started
        ShedsTotal      Int64                 sheds of the members since the process started

The server builds them with its own node factory (so writes and audit go through its checks) and
refreshes them from :meth:`apc.groups.UnitGroup.rollup`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from asyncua import ua

from apc.groups import GroupRollup, UnitGroup
from plant_io.ua_values import data_value, status_code

GROUPS_FOLDER = "Groups"
"""Browse name (and node id) of the folder of the groups under ``Objects/APC``."""

VarFactory = Callable[[ua.NodeId, str, str, Any, ua.VariantType, bool, bool], Awaitable[ua.NodeId]]
"""``var(parent, node id string, browse name, value, type, group command, array)`` of the server."""
FolderFactory = Callable[[ua.NodeId, str, str], Awaitable[ua.NodeId]]
"""``folder(parent, node id string, browse name)`` of the server."""

_VT = ua.VariantType


def group_node_id(group: str, *path: str) -> str:
    """String identifier of a group node, e.g. ``group_node_id("potline-1", "RequestedMode")``."""
    return ".".join((GROUPS_FOLDER, group, *path))


@dataclass(frozen=True)
class GroupNodeIds:
    """Node ids of one group's variables, by browse name."""

    ids: Mapping[str, ua.NodeId]


@dataclass(frozen=True)
class GroupExtras:
    """What the server adds to a group's roll-up: its members' alarms and plant KPIs."""

    active_alarms: int = 0
    unacked_alarms: int = 0
    service_factor: float = math.nan
    on_h: float = 0.0
    available_h: float = 0.0
    sheds: int = 0


def _values(r: GroupRollup, x: GroupExtras) -> dict[str, tuple[Any, ua.VariantType]]:
    return {
        "RequestedMode": (r.requested, _VT.String),
        "Members": (list(r.members), _VT.String),
        "UnitsOn": (r.units_on, _VT.Int64),
        "UnitsStandby": (r.units_standby, _VT.Int64),
        "UnitsOff": (r.units_off, _VT.Int64),
        "UnitsShed": (r.units_shed, _VT.Int64),
        "MemberStatus": (list(r.member_status), _VT.String),
        "LineCurrent": (r.line_current, _VT.String),
        "ActiveAlarms": (x.active_alarms, _VT.Int64),
        "UnackedAlarms": (x.unacked_alarms, _VT.Int64),
        "ServiceFactor": (x.service_factor, _VT.Double),
        "OnHours": (x.on_h, _VT.Double),
        "AvailableHours": (x.available_h, _VT.Double),
        "ShedsTotal": (x.sheds, _VT.Int64),
    }


_ARRAYS = frozenset({"Members", "MemberStatus"})


async def build_group_nodes(root: ua.NodeId, groups: Mapping[str, UnitGroup], var: VarFactory,
                            folder: FolderFactory) -> dict[str, GroupNodeIds]:
    """The ``Groups`` folder under ``root`` and every group's variables (``RequestedMode`` writable)."""
    if not groups:
        return {}
    top = await folder(root, GROUPS_FOLDER, GROUPS_FOLDER)
    out: dict[str, GroupNodeIds] = {}
    for name, group in groups.items():
        gfolder = await folder(top, group_node_id(name), name)
        ids = {}
        for key, (value, vtype) in _values(group.rollup(), GroupExtras()).items():
            ids[key] = await var(gfolder, group_node_id(name, key), key, value, vtype, key == "RequestedMode",
                                 key in _ARRAYS)
        out[name] = GroupNodeIds(ids)
    return out


def rollup_writes(nodes: GroupNodeIds, rollup: GroupRollup, ts: dt.datetime | None,
                  extras: GroupExtras | None = None) -> list[tuple[ua.NodeId, ua.DataValue]]:
    """The internal writes that show ``rollup`` (and ``extras``) on the group's nodes."""
    good = status_code(ua.StatusCodes.Good)
    return [(nodes.ids[key], data_value(ua.Variant(value, vtype), good, ts, None))
            for key, (value, vtype) in _values(rollup, extras or GroupExtras()).items()]
