"""Units operated together (a potline, a furnace bay): one mode request for the group, roll-ups.

A group request is one key for the whole group: it is audited once (``group_mode_requested``)
and handed to every member (:meth:`apc.unit.Unit.request_mode_as_member`), which still decides on
its own readiness — a latched shed stays latched, a member warming up stays in STANDBY — and
answers at once when it already knows why it cannot engage. Until a member's next cycle its
status is pending; after it, each member is ``engaged`` or ``not engaged: <why>``.

A group that declares the line current a disturbance takes each member's current MV away from it
at assembly (:func:`give_line_current`): the rectifier is the line's, no member writes it. A group
that gives the rectifier to the APC (``line_current: apc``) leaves the current MV to one member, the
``rectifier_unit``, whose tag is the rectifier's set point: the other members take the current as a
measured disturbance, and the rectifier unit's moves are bounded by the limits of *every* member
(:func:`share_line_limits`: the intersection of their engineering and operator limits, the smallest
rate), read at each of its cycles, so an operator narrowing one cell's current limits narrows the
line's at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from apc.cycle_record import CycleRecord
from apc.recipe.group_schema import GroupSpec, line_current_mv
from apc.recipe.schema import MvLimits, Recipe
from apc.types import Mode

PENDING = "pending: waiting for the unit's next cycle"
"""Member status between a group request and the member's next cycle."""
ENGAGED = "engaged"


class GroupMember(Protocol):
    """What a group needs of a unit (:class:`apc.unit.Unit` is one)."""

    name: str
    recipe: Recipe
    line_owned: dict[str, str]

    @property
    def modes(self) -> Any: ...

    def request_mode_as_member(self, mode: Mode, group: str, who: str, where: str, utc: float) -> str: ...

    def give_to_line(self, mv: str, reason: str, utc: float) -> None: ...

    def share_with_line(self, mv: str, limits: Callable[[], MvLimits | str], reason: str, utc: float) -> None: ...

    @property
    def mvs(self) -> Mapping[str, Any]: ...


def line_current_reason(group: str) -> str:
    """Why a member of ``group`` does not write its current MV."""
    return f"line current is a line disturbance (group {group})"


def give_line_current(groups: Sequence[GroupSpec], units: Mapping[str, GroupMember], utc: float) -> None:
    """Every member of a ``line_current`` group found in ``units`` gives its current MV to the line,
    except a ``line_current: apc`` group's rectifier unit (the recipes were checked at load: each
    member has one)."""
    for g in groups:
        if g.line_current is None:
            continue
        for name in g.units:
            unit = units.get(name)
            if unit is None or (g.line_current == "apc" and name == g.rectifier_unit):
                continue
            mv, why = line_current_mv(unit.recipe, g.current_mv)
            if why:
                raise ValueError(f"group {g.name}: unit {name}: {why}")
            reason = line_current_reason(g.name) if g.line_current == "disturbance" else \
                f"line current is set for group {g.name} by its rectifier unit {g.rectifier_unit}"
            unit.give_to_line(mv, reason, utc)


def line_limits(members: Sequence[tuple[GroupMember, str]]) -> MvLimits | str:
    """The limits every member's current MV allows now (engineering and operator intersected, the
    smallest rate), or why there are none (the members' limits do not overlap)."""
    lims = [(u.name, u.mvs[mv].limits) for u, mv in members]
    e_lo, e_hi = max(lim.engineering[0] for _, lim in lims), min(lim.engineering[1] for _, lim in lims)
    o_lo, o_hi = max(lim.operator[0] for _, lim in lims), min(lim.operator[1] for _, lim in lims)
    o_lo, o_hi = max(o_lo, e_lo), min(o_hi, e_hi)
    if not (e_lo <= e_hi and o_lo <= o_hi):
        spans = ", ".join(f"{n} [{max(lim.operator[0], lim.engineering[0]):g}, "
                          f"{min(lim.operator[1], lim.engineering[1]):g}]" for n, lim in lims)
        return f"the members' current limits do not overlap ({spans})"
    return MvLimits(engineering=(e_lo, e_hi), operator=(o_lo, o_hi), rate_per_s=min(lim.rate_per_s for _, lim in lims))


def share_line_limits(groups: Sequence[GroupSpec], units: Mapping[str, GroupMember], utc: float) -> None:
    """Bound each ``line_current: apc`` group's rectifier unit by every member's current limits
    (call once every member is built)."""
    for g in groups:
        if g.line_current != "apc" or g.rectifier_unit not in units:
            continue
        members = []
        for name in g.units:
            mv, why = line_current_mv(units[name].recipe, g.current_mv)
            if why:
                raise ValueError(f"group {g.name}: unit {name}: {why}")
            members.append((units[name], mv))
        rect = units[str(g.rectifier_unit)]
        rect_mv = next(mv for u, mv in members if u is rect)
        rect.share_with_line(rect_mv, functools.partial(line_limits, tuple(members)),
                             f"line current set point of group {g.name}: bounded by every member's limits", utc)


@dataclass(frozen=True)
class GroupRollup:
    """What the HMI shows of a group."""

    requested: str
    """The last group request (before any: the members' common requested mode, else ``MIXED``)."""
    members: tuple[str, ...]
    units_on: int
    units_standby: int
    units_off: int
    units_shed: int
    """Members with a latched shed."""
    member_status: tuple[str, ...]
    """Per member (same order): ``engaged``, ``not engaged: <why>`` or :data:`PENDING`."""
    line_current: str
    """``disturbance`` or '' (see :class:`~apc.recipe.group_schema.GroupSpec`)."""


@dataclass
class _Member:
    unit: GroupMember
    last: CycleRecord | None = None
    pending_after_k: int | None = None
    """Cycle number the member had reached at the group request (its status waits for a later one)."""
    answer: str = ""
    """The member's immediate answer to the last group request ('' none)."""


class UnitGroup:
    """One group of units (see the module docstring)."""

    def __init__(self, spec: GroupSpec, units: Mapping[str, GroupMember], audit: Any) -> None:
        self.spec = spec
        self.name = spec.name
        self._members = {n: _Member(units[n]) for n in spec.units}
        self._audit = audit
        self._requested: Mode | None = None

    @property
    def members(self) -> tuple[str, ...]:
        """Member unit names, in the site file's order."""
        return tuple(self._members)

    def request(self, mode: Mode, who: str, where: str, utc: float) -> dict[str, str]:
        """One request for every member: audited once, then each member's own request; returns each
        member's immediate answer ('' when its next cycle decides)."""
        self._requested = mode
        self._audit.info("group_mode_requested", utc=utc, group=self.name, members=list(self._members),
                         who=who, where=where, new=mode.value,
                         old={n: m.unit.modes.requested.value for n, m in self._members.items()})
        answers: dict[str, str] = {}
        for name, m in self._members.items():
            m.answer = m.unit.request_mode_as_member(mode, self.name, who, where, utc)
            m.pending_after_k = m.last.k if m.last is not None else -1
            answers[name] = m.answer
        return answers

    def observe(self, unit: str, record: CycleRecord) -> bool:
        """Take in a member's cycle record; False when ``unit`` is no member."""
        m = self._members.get(unit)
        if m is None:
            return False
        m.last = record
        if m.pending_after_k is not None and record.k > m.pending_after_k:
            m.pending_after_k = None
        return True

    def _status(self, m: _Member) -> str:
        modes = m.unit.modes
        want = self._requested or modes.requested
        if modes.requested is not want:
            return f"not engaged: requested {modes.requested.value} on the unit"
        if m.pending_after_k is not None:
            return f"not engaged: {m.answer}" if m.answer else PENDING
        rec = m.last
        actual = Mode(rec.mode.actual) if rec is not None else modes.actual
        if actual is want:
            return ENGAGED
        if rec is None:
            return f"not engaged: {m.answer}" if m.answer else "not engaged: no cycle yet"
        why = (f"shed latched: {rec.shed_reason}" if rec.shed_reason else rec.mode.hold) or m.answer
        return f"not engaged: {why or f'{actual.value}, requested {want.value}'}"

    def rollup(self) -> GroupRollup:
        """Counts and per-member status now."""
        ms = list(self._members.values())
        actual = [m.unit.modes.actual for m in ms]
        requested = {m.unit.modes.requested for m in ms}
        shown = self._requested.value if self._requested is not None else (
            requested.pop().value if len(requested) == 1 else "MIXED")
        return GroupRollup(
            requested=shown, members=self.members,
            units_on=sum(a is Mode.ON for a in actual), units_standby=sum(a is Mode.STANDBY for a in actual),
            units_off=sum(a is Mode.OFF for a in actual),
            units_shed=sum(bool(m.unit.modes.shed_reason) for m in ms),
            member_status=tuple(self._status(m) for m in ms),
            line_current=self.spec.line_current or "",
        )


def site_groups(groups: Sequence[GroupSpec], units: Mapping[str, GroupMember], audit: Any) -> dict[str, UnitGroup]:
    """The site's groups by name."""
    return {g.name: UnitGroup(g, units, audit) for g in groups}
