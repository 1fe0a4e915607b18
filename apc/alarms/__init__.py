"""Alarms: what each unit's cycle says is wrong (:mod:`apc.alarms.rules`), one condition per cause
kept, acknowledged and persisted by :class:`apc.alarms.book.AlarmBook`, served to operators as OPC UA
Alarms & Conditions by :mod:`apc.hmi.alarm_events` (``docs/alarms.md``)."""
