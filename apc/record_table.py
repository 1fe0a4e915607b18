"""A flight record as a table: one row per cycle, one typed column per signal (``apc export``,
``apc plot``).

Column names carry their unit where the record's header names it (``io`` in the header, see
``docs/flight_record.md``): a signal ``cell_voltage`` in V becomes ``input.cell_voltage_V``. Floats
that are not finite (the record's ``NaN``/``Infinity`` tokens) and values a cycle lacks are ``None``
here, so no writer can emit such a token. See ``docs/trends_and_export.md`` for every column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from apc.cycle_record import CycleRecord
from apc.recorder import iter_record

ColumnType = Literal["float", "int", "bool", "str"]

_UNIT_WORDS = {"%": "pct", "wt%": "wtpct", "°C": "degC", "1": ""}


def unit_suffix(unit: str | None) -> str:
    """The unit as a name suffix in this project's spelling (``kg/h`` → ``kg_h``, ``wt%`` → ``wtpct``,
    dimensionless ``1`` → '')."""
    if not unit:
        return ""
    word = _UNIT_WORDS.get(unit)
    if word is None:
        word = unit.replace("%", "pct").replace("/", "_").replace("·", "").replace(" ", "")
        word = re.sub(r"[^0-9A-Za-z_]", "", word)
    return word


def with_unit(name: str, unit: str | None) -> str:
    """``name`` with its unit appended (``cell_voltage``, ``V`` → ``cell_voltage_V``), unless it
    already ends with it or the unit is dimensionless or unknown."""
    suffix = unit_suffix(unit)
    if not suffix or name.endswith("_" + suffix):
        return name
    return f"{name}_{suffix}"


@dataclass(frozen=True)
class Column:
    """One column: its name, value type, unit ('' when none or not known) and one value per row
    (``None`` where missing or not finite)."""

    name: str
    type: ColumnType
    unit: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class RecordTable:
    """A record's cycles as columns, with the record's first header."""

    header: Mapping[str, Any]
    columns: tuple[Column, ...]
    rows: int

    def names(self) -> tuple[str, ...]:
        """Column names in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The column ``name`` (``KeyError`` when the record has none)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def get(self, name: str) -> Column | None:
        """The column ``name``, or None."""
        try:
            return self.column(name)
        except KeyError:
            return None


def _finite(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class _Builder:
    """Accumulates rows into columns; a column first seen at row n is ``None`` before it."""

    def __init__(self) -> None:
        self.values: dict[str, list[Any]] = {}
        self.types: dict[str, ColumnType] = {}
        self.units: dict[str, str] = {}
        self.rows = 0

    def add(self, row: Mapping[str, tuple[ColumnType, str, Any]]) -> None:
        for name, (ctype, unit, raw) in row.items():
            col = self.values.get(name)
            if col is None:
                col = self.values[name] = [None] * self.rows
                self.types[name], self.units[name] = ctype, unit
            value: Any = raw
            if ctype == "float":
                value = _finite(raw)
            elif raw is not None and ctype == "int":
                value = int(raw)
            elif raw is not None and ctype == "bool":
                value = bool(raw)
            elif raw is not None and ctype == "str":
                value = str(raw)
            col.append(value)
        self.rows += 1
        for col in self.values.values():
            if len(col) < self.rows:
                col.append(None)

    def columns(self) -> tuple[Column, ...]:
        """Columns grouped as in :data:`GROUPS`, first seen first within a group."""
        names = sorted(self.values, key=_group_rank)
        return tuple(Column(n, self.types[n], self.units[n], tuple(self.values[n])) for n in names)


ColumnBuilder = _Builder
"""Rows of ``{column: (type, unit, value)}`` into typed columns (``add`` each row, then ``columns``); other
tables built like a record's (``apc replay``) use it."""


GROUPS = ("session", "k", "t_s", "utc", "mode_", "input.", "estimate.", "plan.", "guard.", "readback.",
          "dcs_at_limit", "shed", "shed_reason", "late", "fault", "batch.", "truth.")
"""Column groups in table order (a name belongs to the last group it starts with)."""


def _group_rank(name: str) -> int:
    rank = len(GROUPS)
    for i, g in enumerate(GROUPS):
        if name == g or (g.endswith((".", "_")) and name.startswith(g)):
            rank = i
    return rank


class _Signals:
    """Units and column keys of a header's inputs and MVs (names without units when it has none)."""

    def __init__(self, header: Mapping[str, Any]) -> None:
        io = header.get("io") or {}
        self.inputs: Mapping[str, Mapping[str, Any]] = io.get("inputs") or {}
        self.mvs: Mapping[str, Mapping[str, Any]] = io.get("mvs") or {}

    def input_unit(self, name: str) -> str:
        return str((self.inputs.get(name) or {}).get("unit") or "")

    def mv_unit(self, name: str) -> str:
        return str((self.mvs.get(name) or {}).get("unit") or "")


def input_key(header: Mapping[str, Any], name: str) -> str:
    """Column stem of input ``name``: ``input.<name>_<unit>``."""
    return "input." + with_unit(name, _Signals(header).input_unit(name))


def mv_key(header: Mapping[str, Any], prefix: str, name: str) -> str:
    """Column of MV ``name`` under ``prefix`` (``plan``, ``guard``, ``readback``): ``<prefix>.<name>_<unit>``."""
    return f"{prefix}." + with_unit(name, _Signals(header).mv_unit(name))


def cycle_row(record: CycleRecord, session: int, signals: _Signals) -> dict[str, tuple[ColumnType, str, Any]]:
    """One cycle as (type, unit, value) by column name."""
    row: dict[str, tuple[ColumnType, str, Any]] = {
        "session": ("int", "", session), "k": ("int", "", record.k), "t_s": ("float", "s", record.t_s),
        "utc": ("float", "s", record.utc),
        "mode_requested": ("str", "", record.mode.requested), "mode_actual": ("str", "", record.mode.actual),
        "mode_hold": ("str", "", record.mode.hold),
    }
    for name, inp in record.inputs.items():
        unit = signals.input_unit(name)
        key = "input." + with_unit(name, unit)
        row[key] = ("float", unit, inp.value)
        row[key + ".verdict"] = ("str", "", inp.verdict)
        if (signals.inputs.get(name) or {}).get("role") == "sample" or inp.sample_ts is not None:
            row[key + ".sample_utc"] = ("float", "s", inp.sample_ts)
    est = record.estimate
    row["estimate.health"] = ("str", "", est.health)
    for i, name in enumerate(est.names):
        row["estimate." + name] = ("float", "", est.x[i] if i < len(est.x) else None)
        p = est.P_diag[i] if est.P_diag is not None and i < len(est.P_diag) else None
        p = _finite(p)
        row[f"estimate.{name}_sigma"] = ("float", "", None if p is None or p < 0 else math.sqrt(p))
    for name, value in est.extras.items():
        row.setdefault("estimate." + name, ("float", "", value))
    plan = record.plan
    row["plan.status"] = ("str", "", None if plan is None else plan.status)
    row["plan.reason"] = ("str", "", None if plan is None else plan.reason)
    for name, move in (plan.moves if plan is not None else {}).items():
        unit = signals.mv_unit(name)
        row["plan." + with_unit(name, unit)] = ("float", unit, move)
    row["guard.clamps"] = ("int", "", record.guard_clamps)
    for name, d in record.decisions.items():
        unit = signals.mv_unit(name)
        key = "guard." + with_unit(name, unit)
        row[key] = ("float", unit, d.value)
        row[key + ".written"] = ("bool", "", d.write)
        row[key + ".clamps"] = ("str", "", ";".join(d.clamps))
    for name, value in record.readback.items():
        unit = signals.mv_unit(name)
        row["readback." + with_unit(name, unit)] = ("float", unit, value)
    row["dcs_at_limit"] = ("str", "", ";".join(f"{n}={v}" for n, v in sorted(record.dcs_at_limit.items())))
    row["shed"] = ("bool", "", record.shed)
    row["shed_reason"] = ("str", "", record.shed_reason)
    row["late"] = ("str", "", record.late)
    row["fault"] = ("str", "", "" if record.fault is None else
                    f"{record.fault.get('stage', '')}: {record.fault.get('error', '')}")
    if record.batch is not None:
        b = record.batch
        row.update({"batch.state": ("str", "", b.state), "batch.segment": ("int", "", b.segment),
                    "batch.kind": ("str", "", b.kind), "batch.target_degC": ("float", "degC", b.target_degC),
                    "batch.upper_degC": ("float", "degC", b.upper_degC),
                    "batch.lower_degC": ("float", "degC", b.lower_degC),
                    "batch.hold_degC": ("float", "degC", b.hold_degC),
                    "batch.soak_done_s": ("float", "s", b.soak_done_s),
                    "batch.stage_power_kW": ("float", "kW", b.stage_power_kW)})
    for name, value in (record.truth or {}).items():
        row["truth." + name] = ("float", "", value)
    return row


def table_from_cycles(header: Mapping[str, Any], cycles: Iterable[tuple[int, CycleRecord]]) -> RecordTable:
    """A table of ``(session, cycle)`` pairs described by ``header``."""
    signals, builder = _Signals(header), _Builder()
    for session, record in cycles:
        builder.add(cycle_row(record, session, signals))
    return RecordTable(dict(header), builder.columns(), builder.rows)


def read_table(path: Path | str) -> RecordTable:
    """The record at ``path`` as a table (streamed; units from its first header; ``session`` counts
    the headers a cycle follows, from 0)."""
    header: dict[str, Any] = {}
    signals, builder = _Signals({}), _Builder()
    session = -1
    for entry in iter_record(path):
        if entry.kind == "header":
            session += 1
            if session == 0:
                header, signals = entry.data, _Signals(entry.data)
        elif entry.kind == "cycle":
            builder.add(cycle_row(CycleRecord.from_json(entry.data), session, signals))
    return RecordTable(header, builder.columns(), builder.rows)
