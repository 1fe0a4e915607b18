"""``apc report RECORD...``: the plant KPIs of every unit in one or more flight records (segments of
one unit, several units), whole and per UTC day or shift, with the simulator-truth KPIs of an
``apc sim`` record beside them (``docs/performance_kpis.md``).

Files are grouped by the header's ``unit`` and read in the order of their first cycle. Interventions
come from the audit log given (``audit``) or found beside the records (``audit.jsonl`` and its rotated
parts); without one, from what the record shows (:class:`apc.plant_kpi.RecordInterventions`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from apc.cycle_record import CycleRecord
from apc.interventions import INTERVENTION_KEYS, Intervention, audit_files_beside, read_interventions
from apc.json_safe import finite_json
from apc.kinds import UnknownKindError, get_kind, kind_names
from apc.plant_kpi import PlantKpis, header_period_s
from apc.protocols import KpiSink
from apc.recorder import RecordError, iter_record

__all__ = ["PeriodFigures", "Split", "UnitReport", "format_report", "parse_hhmm", "plant_report", "report_json"]

DAY_S = 86400.0


def parse_hhmm(text: str) -> float:
    """``HH:MM`` → seconds after midnight (``ValueError`` naming the expected form)."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if m is None or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f"shift start {text!r} is not a time HH:MM (00:00 to 23:59)")
    return int(m[1]) * 3600.0 + int(m[2]) * 60.0


@dataclass(frozen=True)
class Split:
    """How the figures are split: per UTC ``day``, or per ``shift`` (``shift_hours`` long, the first
    starting ``shift_start_s`` after UTC midnight; the shifts of a day repeat every day)."""

    by: Literal["day", "shift"]
    shift_start_s: float = 6 * 3600.0
    shift_hours: float = 8.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift_start_s < DAY_S:
            raise ValueError(f"shift start must be within the day, got {self.shift_start_s} s")
        n = 24.0 / self.shift_hours if self.shift_hours > 0 else 0.0
        if not (self.shift_hours > 0 and abs(n - round(n)) < 1e-9):
            raise ValueError(f"shift hours must divide 24 (e.g. 8, 12), got {self.shift_hours:g}")

    def start_of(self, utc: float) -> float:
        """Start (UTC s) of the day or shift ``utc`` falls in."""
        if self.by == "day":
            return math.floor(utc / DAY_S) * DAY_S
        length = self.shift_hours * 3600.0
        return self.shift_start_s + math.floor((utc - self.shift_start_s) / length) * length

    def length_s(self) -> float:
        """Length of one period, s."""
        return DAY_S if self.by == "day" else self.shift_hours * 3600.0

    def label(self, start: float) -> str:
        """``YYYY-MM-DD`` of a day, ``YYYY-MM-DDTHH:MMZ`` of a shift's start."""
        t = dt.datetime.fromtimestamp(start, tz=dt.UTC)
        return t.strftime("%Y-%m-%d") if self.by == "day" else t.strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class PeriodFigures:
    """The plant KPIs over one stretch of time."""

    label: str
    from_utc: float
    """First cycle's UTC time."""
    to_utc: float
    """Last cycle's UTC time plus one period."""
    values: Mapping[str, float | int]
    not_computable: Mapping[str, str]


@dataclass(frozen=True)
class UnitReport:
    """Everything ``apc report`` says of one unit."""

    unit: str
    unit_kind: str
    files: tuple[str, ...]
    interventions_source: str
    whole: PeriodFigures
    periods: tuple[PeriodFigures, ...] = ()
    sim_kpis: Mapping[str, float | int] | None = None
    """The simulator-truth KPIs (``apc.kpi.report``), when every cycle carries the truth."""
    sim_note: str = ""
    """Why there are no truth KPIs ('' when there are)."""
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class _Bucket:
    kpis: PlantKpis
    first_utc: float
    last_utc: float
    interventions: dict[str, int]


def _first_entries(path: Path) -> tuple[dict[str, Any], float]:
    """(first header, UTC of the first cycle or the header's start) of a record."""
    header: dict[str, Any] | None = None
    for entry in iter_record(path):
        if entry.kind == "header" and header is None:
            header = entry.data
        elif entry.kind == "cycle":
            assert header is not None
            return header, float(entry.data.get("utc", header.get("started_utc") or 0.0))
    if header is None:
        raise RecordError(path, "no header")
    started = header.get("started_utc")
    return header, float(started) if isinstance(started, (int, float)) else 0.0


def _new_kpis(header: Mapping[str, Any], kind: str, with_record_interventions: bool) -> PlantKpis:
    sink = get_kind(kind).plant_kpis(header) if kind else None
    return PlantKpis(header, sink, record_interventions=with_record_interventions)


def _truth_sink(header: Mapping[str, Any], kind: str) -> KpiSink | None:
    """The truth-KPI accumulator the header configures (by its kind, else the first kind that
    recognises it, as :func:`apc.kpi.report` finds it); None on a plant record."""
    for name in [kind] if kind else list(kind_names()):
        try:
            sink = get_kind(name).kpi_from_header(header)
        except (KeyError, TypeError, ValueError):
            sink = None
        if sink is not None:
            return sink
    return None


def _with_interventions(kpis: PlantKpis, counts: Mapping[str, int] | None) -> tuple[dict[str, float | int],
                                                                                   dict[str, str]]:
    values, missing = kpis.result(), kpis.not_computable()
    if counts is not None:
        values.update({k: counts.get(k, 0) for k in INTERVENTION_KEYS})
        values["interventions"] = sum(counts.get(k, 0) for k in INTERVENTION_KEYS)
        missing.pop("limit_changes", None)
    else:
        missing["interventions"] = "no audit log: the total needs the operator-limit changes"
    return dict(sorted(values.items())), dict(sorted(missing.items()))


def _unit_report(unit: str, files: Sequence[Path], audit: Sequence[Path] | None, split: Split | None) -> UnitReport:
    header0, _ = _first_entries(files[0])
    kind = str(header0.get("unit_kind") or "")
    notes: list[str] = []
    if kind:
        try:
            get_kind(kind)
        except UnknownKindError:
            notes.append(f"unit kind {kind!r} is not known to this build: its own KPIs are left out")
            kind = ""
    else:
        notes.append("the header names no unit_kind (an older record): only the generic KPIs")
    audit_files = tuple(audit) if audit is not None else tuple(
        sorted({p for f in files for p in audit_files_beside(f)}))
    events: list[Intervention] | None = None
    if audit_files:
        events = [e for e in read_interventions(audit_files) if e.unit == unit]
        source = "audit log " + ", ".join(str(p) for p in audit_files)
    else:
        source = ("the record (no audit log given or found beside it: requests repeating the mode in force and "
                  "operator-limit changes are not counted)")
    use_record = events is None
    try:
        whole = _new_kpis(header0, kind, use_record)
    except ValueError as exc:
        raise RecordError(files[0], f"header not usable for the report: {exc}", 1) from None
    period_s = header_period_s(header0)
    truth: KpiSink | None = _truth_sink(header0, kind)
    sim_note = "" if truth is not None else "the header has no simulator KPI configuration (a plant record)"
    buckets: dict[float, _Bucket] = {}
    first_utc = last_utc = math.nan
    for path in files:
        for entry in iter_record(path):
            if entry.kind == "header":
                h_kind = str(entry.data.get("unit_kind") or "")
                if kind and h_kind and h_kind != kind:
                    raise RecordError(path, f"unit {unit!r} is of kind {h_kind!r} here, {kind!r} before", entry.line_no)
                continue
            if entry.kind != "cycle":
                continue
            try:
                rec = CycleRecord.from_json(entry.data)
            except KeyError as exc:
                raise RecordError(path, f"cycle lacks {exc}", entry.line_no) from None
            except (TypeError, ValueError) as exc:
                raise RecordError(path, f"cycle not usable for the report: {exc}", entry.line_no) from None
            whole.add(rec)
            if truth is not None:
                if rec.truth is None:
                    truth, sim_note = None, f"{path}:{entry.line_no}: cycle without simulator truth (a plant record)"
                else:
                    try:
                        truth.add(rec)
                    except (KeyError, TypeError, ValueError) as exc:
                        truth, sim_note = None, f"{path}:{entry.line_no}: truth not usable: {exc}"
            first_utc = rec.utc if math.isnan(first_utc) else first_utc
            last_utc = rec.utc
            if split is not None:
                start = split.start_of(rec.utc)
                b = buckets.get(start)
                if b is None:
                    b = buckets[start] = _Bucket(_new_kpis(header0, kind, use_record), rec.utc, rec.utc, {})
                b.kpis.add(rec)
                b.last_utc = rec.utc
    end_utc = last_utc + period_s
    counts: dict[str, int] | None = None
    if events is not None:
        counts = {}
        for e in events:
            if not first_utc <= e.utc < end_utc:
                continue
            counts[e.key] = counts.get(e.key, 0) + 1
            if split is not None and (b := buckets.get(split.start_of(e.utc))) is not None:
                b.interventions[e.key] = b.interventions.get(e.key, 0) + 1
    values, missing = _with_interventions(whole, counts)
    whole_fig = PeriodFigures("whole record", first_utc, end_utc, values, missing)
    periods = []
    for start in sorted(buckets):
        b = buckets[start]
        v, m = _with_interventions(b.kpis, b.interventions if counts is not None else None)
        periods.append(PeriodFigures(split.label(start) if split else "", b.first_utc, b.last_utc + period_s, v, m))
    return UnitReport(unit, kind, tuple(str(f) for f in files), source, whole_fig, tuple(periods),
                      None if truth is None else dict(truth.result()), sim_note, tuple(notes))


def plant_report(paths: Iterable[Path | str], *, audit: Sequence[Path] | None = None,
                 split: Split | None = None) -> list[UnitReport]:
    """The report of every unit in ``paths`` (in the order units first appear). ``audit``: the audit
    files to read (default: those beside the records). Raises :class:`RecordError` (file, line) and
    :class:`apc.interventions.AuditError`."""
    by_unit: dict[str, list[tuple[float, Path]]] = {}
    for raw in paths:
        p = Path(raw)
        header, first = _first_entries(p)
        by_unit.setdefault(str(header.get("unit") or p.name), []).append((first, p))
    return [_unit_report(unit, [p for _, p in sorted(items, key=lambda x: (x[0], str(x[1])))], audit, split)
            for unit, items in by_unit.items()]


# -- presentation -------------------------------------------------------------

def _iso(utc: float) -> str | None:
    if not math.isfinite(utc):
        return None
    return dt.datetime.fromtimestamp(utc, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _period_json(p: PeriodFigures) -> dict[str, Any]:
    return {"period": p.label, "from_utc": _iso(p.from_utc), "to_utc": _iso(p.to_utc), "kpis": dict(p.values),
            "not_computable": dict(p.not_computable)}


def report_json(reports: Sequence[UnitReport]) -> str:
    """Deterministic JSON (sorted keys, NaN as null): ``units`` by name, and ``kpis`` (the truth KPIs,
    as before plant KPIs existed) when the report is of one unit whose cycles carry the truth."""
    out: dict[str, Any] = {"units": {}}
    for r in reports:
        unit: dict[str, Any] = {
            "unit_kind": r.unit_kind, "files": list(r.files), "interventions_source": r.interventions_source,
            "plant": _period_json(r.whole), "notes": list(r.notes),
        }
        if r.periods:
            unit["periods"] = [_period_json(p) for p in r.periods]
        if r.sim_kpis is not None:
            unit["sim_kpis"] = dict(r.sim_kpis)
        else:
            unit["sim_kpis_note"] = r.sim_note
        out["units"][r.unit] = unit
    if len(reports) == 1 and reports[0].sim_kpis is not None:
        out["kpis"] = dict(reports[0].sim_kpis)
    return json.dumps(finite_json(out), sort_keys=True, indent=2, allow_nan=False)


def _fmt(key: str, value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "n/a"
    return format(value, ".3f" if key in ("service_factor", "energy_kWh_per_kg") else ".2f")


def _table(values: Mapping[str, float | int], indent: str) -> list[str]:
    if not values:
        return []
    w_key = max(len(k) for k in values)
    w_val = max(len(_fmt(k, v)) for k, v in values.items())
    return [f"{indent}{k:<{w_key}}  {_fmt(k, v):>{w_val}}" for k, v in values.items()]


def _figures(p: PeriodFigures, indent: str) -> list[str]:
    lines = _table(p.values, indent)
    if p.not_computable:
        lines.append(f"{indent}not computable:")
        lines += [f"{indent}  {k}: {why}" for k, why in p.not_computable.items()]
    return lines


def format_report(reports: Sequence[UnitReport], sim_table: str = "") -> str:
    """The terminal form: ``sim_table`` (the truth KPIs' table, printed first as before), then per unit
    its plant KPIs, what could not be computed and why, and its periods."""
    lines: list[str] = [sim_table, ""] if sim_table else []
    for r in reports:
        w = r.whole
        n = len(r.files)
        lines.append(f"plant KPIs · {r.unit} ({r.unit_kind or 'unknown kind'}) · {n} file{'s' if n != 1 else ''} · "
                     f"{_iso(w.from_utc)} – {_iso(w.to_utc)}")
        lines.append(f"  interventions from {r.interventions_source}")
        lines += [f"  note: {note}" for note in r.notes]
        lines += _figures(w, "  ")
        for p in r.periods:
            lines.append(f"  -- {p.label} ({_iso(p.from_utc)} – {_iso(p.to_utc)})")
            lines += _figures(p, "    ")
        lines.append("")
    return "\n".join(lines).rstrip("\n")
