"""The alarm book: one condition per (unit, cause), raised once, updated, cleared, acknowledged,
confirmed and shelved by operators, audited, and kept across a restart.

A condition is *retained* (shown to operators, kept in the state file) while it is active or not
yet acknowledged: an alarm that returns to normal unacknowledged stays until an operator
acknowledges it (ISA-18.2 "return to normal, unacknowledged"). Shelving hides a condition from
the operator's list without silencing the record: a timed shelve ends after its duration (at most
``max_shelve_s``), a one-shot shelve when the condition clears. Nothing here reads a clock: every
call gives the plant's UTC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apc.alarms.causes import CAUSES
from apc.alarms.rules import ActiveCause
from apc.state_file import read_json_object, write_json_atomic

ALARMS_FILE_NAME = "alarms.json"
_FORMAT = 1


@dataclass(frozen=True)
class Alarm:
    """One condition as it stands now."""

    unit: str
    cause: str
    severity: int
    message: str
    active: bool
    acked: bool
    confirmed: bool
    active_since_utc: float
    """When the current (or last) episode was raised."""
    changed_utc: float
    shelved: str = ""
    """'' (not shelved), ``timed`` or ``oneshot``."""
    shelved_until_utc: float | None = None
    comment: str = ""
    comment_by: str = ""
    changes: int = 0
    """Changes of this condition so far (each change is one event)."""

    @property
    def condition_id(self) -> str:
        """``<unit>.Alarms.<cause>``: the condition's name on the HMI server."""
        return f"{self.unit}.Alarms.{self.cause}"

    @property
    def retain(self) -> bool:
        """Operators must still see it: active, or not yet acknowledged."""
        return self.active or not self.acked

    @property
    def title(self) -> str:
        return CAUSES[self.cause].title


@dataclass(frozen=True)
class AlarmChange:
    """One change of a condition: ``raised``, ``updated``, ``cleared``, ``acknowledged``, ``confirmed``,
    ``commented``, ``shelved``, ``unshelved`` or ``restored`` (after a restart)."""

    alarm: Alarm
    what: str
    who: str = "runtime"
    where: str = ""
    comment: str = ""


class AlarmRefused(Exception):
    """An operator action the condition's state does not allow (the message says why)."""

    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code
        """``unknown``, ``already_acked``, ``already_confirmed``, ``not_acked``, ``not_shelved``,
        ``already_shelved``, ``not_active`` or ``bad_duration``."""


class AlarmStateError(Exception):
    """The alarm state file cannot be used; the message names the file."""


class AlarmBook:
    """Every unit's conditions (see the module docstring)."""

    def __init__(self, path: Path | None, *, audit: Any, max_shelve_s: float = 8 * 3600.0,
                 update_min_s: float = 60.0) -> None:
        self._path = path
        self._audit = audit
        self.max_shelve_s = max_shelve_s
        """Longest timed shelve an operator may ask for."""
        self.update_min_s = update_min_s
        """A message that changes while its severity does not is re-sent at most this often."""
        self._alarms: dict[str, Alarm] = {}
        self._active: dict[str, int] = {}
        self._unacked: dict[str, int] = {}
        self.persist_error = ""
        """Why the state file could not be written last time ('' when it could)."""

    # ------------------------------------------------------------------ reading
    def alarms(self, unit: str | None = None) -> list[Alarm]:
        """Retained conditions (of one unit), most severe first."""
        out = [a for a in self._alarms.values() if a.retain and (unit is None or a.unit == unit)]
        return sorted(out, key=lambda a: (-a.severity, a.active_since_utc, a.condition_id))

    def get(self, condition_id: str) -> Alarm | None:
        """A condition by its id (retained or not)."""
        return self._alarms.get(condition_id)

    def active_count(self, unit: str) -> int:
        """Active conditions of a unit (shelved ones included); safe to call from another thread (the
        metrics endpoint's): it reads a count kept up to date by every change."""
        return self._active.get(unit, 0)

    def unacked_count(self, unit: str) -> int:
        """Retained conditions of a unit not yet acknowledged."""
        return self._unacked.get(unit, 0)

    # ------------------------------------------------------------------ persistence
    def load(self, utc: float) -> list[AlarmChange]:
        """Read the conditions retained before a restart (none when there is no file)."""
        if self._path is None or not self._path.exists():
            return []
        try:
            data = read_json_object(self._path)
            if data.get("format") != _FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            fields = {f.name for f in dataclasses.fields(Alarm)}
            alarms = [Alarm(**{k: v for k, v in item.items() if k in fields}) for item in data["alarms"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AlarmStateError(f"{self._path}: {exc}") from None
        changes = []
        for a in alarms:
            if a.cause not in CAUSES:
                continue
            self._put(a, "restored")
            changes.append(AlarmChange(a, "restored"))
        if changes:
            self._audit.info("alarms_restored", utc=utc, who="runtime", where=str(self._path),
                             alarms=[a.condition_id for a in alarms])
        return changes

    def _save(self, utc: float) -> None:
        if self._path is None:
            return
        data = {"format": _FORMAT, "alarms": [dataclasses.asdict(a) for a in self._alarms.values() if a.retain]}
        try:
            write_json_atomic(self._path, data)
            self.persist_error = ""
        except (OSError, ValueError) as exc:
            if not self.persist_error:
                self._audit.error("alarm_state_write_failed", utc=utc, who="runtime", where=str(self._path),
                                  error=f"{type(exc).__name__}: {exc}")
            self.persist_error = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ from the cycles
    def evaluate(self, unit: str, active: Mapping[str, ActiveCause], utc: float) -> list[AlarmChange]:
        """Bring the unit's conditions in line with the causes active this cycle; the changes made."""
        changes: list[AlarmChange] = []
        for cause, now in active.items():
            cid = f"{unit}.Alarms.{cause}"
            old = self._alarms.get(cid)
            if old is None or not old.active:
                new = Alarm(unit, cause, now.severity, now.message, active=True, acked=False, confirmed=False,
                            active_since_utc=utc, changed_utc=utc,
                            shelved=old.shelved if old is not None and old.shelved == "timed" else "",
                            shelved_until_utc=old.shelved_until_utc if old is not None and old.shelved == "timed"
                            else None, changes=(old.changes + 1) if old is not None else 1)
                changes.append(self._put(new, "raised"))
            elif now.severity != old.severity or (now.message != old.message
                                                  and utc - old.changed_utc >= self.update_min_s):
                changes.append(self._put(dataclasses.replace(
                    old, severity=now.severity, message=now.message, changed_utc=utc, changes=old.changes + 1),
                    "updated"))
        for a in list(self._alarms.values()):
            if a.unit != unit:
                continue
            if a.active and a.cause not in active:
                oneshot = a.shelved == "oneshot"
                changes.append(self._put(dataclasses.replace(
                    a, active=False, changed_utc=utc, changes=a.changes + 1,
                    shelved="" if oneshot else a.shelved, shelved_until_utc=None if oneshot else a.shelved_until_utc),
                    "cleared"))
            now_a = self._alarms[a.condition_id]
            if now_a.shelved == "timed" and now_a.shelved_until_utc is not None and utc >= now_a.shelved_until_utc:
                changes.append(self._put(dataclasses.replace(now_a, shelved="", shelved_until_utc=None,
                                                             changed_utc=utc, changes=now_a.changes + 1),
                                         "unshelved", who="runtime", comment="timed shelve expired"))
        for ch in changes:
            self._journal(ch, utc)
        if changes:
            self._save(utc)
        return changes

    # ------------------------------------------------------------------ operators
    def acknowledge(self, condition_id: str, who: str, where: str, comment: str, utc: float) -> AlarmChange:
        """An operator acknowledges the condition; :class:`AlarmRefused` when it is not unacknowledged."""
        a = self._retained(condition_id)
        if a.acked:
            raise AlarmRefused("already_acked", f"{condition_id} is already acknowledged")
        return self._operator(dataclasses.replace(a, acked=True), "acknowledged", who, where, comment, utc)

    def confirm(self, condition_id: str, who: str, where: str, comment: str, utc: float) -> AlarmChange:
        """An operator confirms an acknowledged condition (the action taken on it is complete)."""
        a = self._retained(condition_id, any_state=True)
        if not a.acked:
            raise AlarmRefused("not_acked", f"{condition_id} must be acknowledged before it is confirmed")
        if a.confirmed:
            raise AlarmRefused("already_confirmed", f"{condition_id} is already confirmed")
        return self._operator(dataclasses.replace(a, confirmed=True), "confirmed", who, where, comment, utc)

    def add_comment(self, condition_id: str, who: str, where: str, comment: str, utc: float) -> AlarmChange:
        """An operator's comment on the condition."""
        a = self._retained(condition_id, any_state=True)
        return self._operator(a, "commented", who, where, comment, utc)

    def shelve(self, condition_id: str, who: str, where: str, utc: float, duration_s: float | None) -> AlarmChange:
        """Shelve for ``duration_s`` (timed, at most :attr:`max_shelve_s`) or until it clears (``None``)."""
        a = self._retained(condition_id)
        if duration_s is not None and not 0.0 < duration_s <= self.max_shelve_s:
            raise AlarmRefused("bad_duration", f"a shelve lasts more than 0 s and at most {self.max_shelve_s:g} s, "
                                               f"got {duration_s:g} s")
        if duration_s is None and not a.active:
            raise AlarmRefused("not_active", f"{condition_id} is not active: a one-shot shelve needs an active alarm")
        if duration_s is None and a.shelved:
            raise AlarmRefused("already_shelved", f"{condition_id} is already shelved ({a.shelved})")
        new = dataclasses.replace(a, shelved="timed" if duration_s is not None else "oneshot",
                                  shelved_until_utc=utc + duration_s if duration_s is not None else None)
        text = f"for {duration_s:g} s" if duration_s is not None else "until it clears"
        return self._operator(new, "shelved", who, where, text, utc)

    def unshelve(self, condition_id: str, who: str, where: str, utc: float) -> AlarmChange:
        """End a shelve."""
        a = self._retained(condition_id, any_state=True)
        if not a.shelved:
            raise AlarmRefused("not_shelved", f"{condition_id} is not shelved")
        return self._operator(dataclasses.replace(a, shelved="", shelved_until_utc=None), "unshelved", who, where,
                              "", utc)

    def _retained(self, condition_id: str, *, any_state: bool = False) -> Alarm:
        a = self._alarms.get(condition_id)
        if a is None or (not a.retain and not any_state):
            raise AlarmRefused("unknown", f"no alarm {condition_id!r} to act on")
        return a

    def _operator(self, new: Alarm, what: str, who: str, where: str, comment: str, utc: float) -> AlarmChange:
        if comment:
            new = dataclasses.replace(new, comment=comment, comment_by=who)
        change = self._put(dataclasses.replace(new, changed_utc=utc, changes=new.changes + 1), what, who=who,
                           where=where, comment=comment)
        self._journal(change, utc)
        self._save(utc)
        return change

    # ------------------------------------------------------------------ internals
    def _put(self, alarm: Alarm, what: str, *, who: str = "runtime", where: str = "", comment: str = "") -> AlarmChange:
        self._alarms[alarm.condition_id] = alarm
        mine = [a for a in self._alarms.values() if a.unit == alarm.unit]
        self._active[alarm.unit] = sum(a.active for a in mine)
        self._unacked[alarm.unit] = sum(not a.acked for a in mine)
        return AlarmChange(alarm, what, who, where, comment)

    def _journal(self, ch: AlarmChange, utc: float) -> None:
        a = ch.alarm
        level = "warning" if ch.what == "raised" else "info"
        getattr(self._audit, level)(f"alarm_{ch.what}", utc=utc, who=ch.who, where=ch.where, unit=a.unit,
                                    cause=a.cause, severity=a.severity, message=a.message, active=a.active,
                                    acked=a.acked, confirmed=a.confirmed, shelved=a.shelved,
                                    **({"comment": ch.comment} if ch.comment else {}))


def retained_summary(alarms: Iterable[Alarm]) -> str:
    """One line per alarm, for logs and the CLI."""
    lines = []
    for a in alarms:
        state = ("ACTIVE" if a.active else "cleared") + ("" if a.acked else " unacked")
        shelf = f" shelved({a.shelved})" if a.shelved else ""
        lines.append(f"{a.severity:4d} {a.condition_id:40s} {state}{shelf}  {a.message}")
    return "\n".join(lines)
