"""Each unit's alarm rules fed from its cycles into the site's alarm book."""

from __future__ import annotations

from typing import Any

from apc.alarms.book import AlarmBook, AlarmChange
from apc.alarms.rules import UnitAlarmRules
from apc.cycle_record import CycleRecord
from apc.kinds import kind_of


class SiteAlarms:
    """The rules of every unit and the book they report to; rules follow a reloaded recipe."""

    def __init__(self, book: AlarmBook) -> None:
        self.book = book
        self._rules: dict[str, tuple[Any, UnitAlarmRules]] = {}

    def observe(self, unit: Any, record: CycleRecord) -> list[AlarmChange]:
        """The alarm changes of ``unit``'s cycle ``record`` (a :class:`apc.unit.Unit`)."""
        recipe = unit.recipe
        held = self._rules.get(unit.name)
        if held is None or held[0] is not recipe:
            rules = UnitAlarmRules(recipe.alarms, kind_of(recipe).alarm_rules(recipe))
            self._rules[unit.name] = held = (recipe, rules)
        return self.book.evaluate(unit.name, held[1].evaluate(record, unit.alarm_signals), record.utc)
