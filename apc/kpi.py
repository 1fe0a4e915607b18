"""KPIs of any unit kind: the flight-record replay behind ``apc report`` and the presentation.

Each kind computes its own KPIs (its accumulator, :meth:`apc.kinds.UnitKind.kpi`); the record
header carries the accumulator's configuration, so :func:`report` replays a record through the
same arithmetic as the live run (bit-identical: JSON round-trips Python floats exactly).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apc.cycle_record import CycleRecord
from apc.kinds import get_kind, kind_names
from apc.protocols import KpiSink
from apc.recorder import RecordError, iter_record

__all__ = ["format_kpis", "kpi_labels", "kpis_to_json", "record_kpi_labels", "report"]


def kpi_labels(unit_kind: str) -> Mapping[str, tuple[str, str, str]]:
    """(label, unit, format) per KPI key of ``unit_kind`` (empty when it has none)."""
    return get_kind(unit_kind).kpi_labels


def _fmt_value(value: Any, spec: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a" if math.isnan(value) else str(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def format_kpis(kpis: Mapping[str, Any], labels: Mapping[str, tuple[str, str, str]] | None = None) -> str:
    """An aligned, human-readable table (one KPI a line; NaN shown as n/a); ``labels`` gives each
    key's (label, unit, format), a key without one is shown as it is."""
    rows: list[tuple[str, str, str]] = []
    for key, value in kpis.items():
        label, unit, spec = (labels or {}).get(key, (key, "", ""))
        rows.append((label, _fmt_value(value, spec), unit))
    if not rows:
        return ""
    w_label = max(len(r[0]) for r in rows)
    w_value = max(len(r[1]) for r in rows)
    return "\n".join(f"{label:<{w_label}}  {value:>{w_value}}  {unit}".rstrip() for label, value, unit in rows)


def kpis_to_json(kpis: Mapping[str, Any]) -> str:
    """Strict JSON (sorted keys, indented); NaN and infinities become ``null``.

    Unlike the flight record, this output is meant for other tools, so it
    stays within standard JSON.
    """
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in kpis.items()}
    return json.dumps(clean, sort_keys=True, indent=2, allow_nan=False)


def _accumulator(header: Mapping[str, Any]) -> tuple[str, str, KpiSink] | None:
    """(unit kind, header key of the KPI configuration, accumulator) the header configures: by its
    ``unit_kind``, else by the first kind that recognises the header (records written before
    headers named their kind)."""
    named = header.get("unit_kind")
    for name in ([str(named)] if named else list(kind_names())):
        kind = get_kind(name)
        acc = kind.kpi_from_header(header)
        if acc is not None:
            return name, kind.kpi_header_key, acc
    return None


def record_kpi_labels(path: Path | str) -> Mapping[str, tuple[str, str, str]]:
    """KPI labels of the unit kind whose KPIs a record's first header configures (none if none)."""
    for entry in iter_record(Path(path)):
        if entry.kind == "header":
            try:
                found = _accumulator(entry.data)
            except (KeyError, TypeError, ValueError):
                return {}
            return kpi_labels(found[0]) if found is not None else {}
    return {}


def report(path: Path | str) -> dict[str, float | int]:
    """Replay a flight record through its kind's KPI accumulator (configured by the first header).

    A resumed header with another configuration is an error. Each cycle must carry what the
    accumulator reads (``t_s``, ``truth``, ``guard.clamps``, ``shed``, a furnace's ``batch``). The
    record is streamed (:func:`apc.recorder.iter_record`), so memory does not grow with its length;
    a truncated final line is ignored, as in ``read_record``.
    """
    p = Path(path)
    acc: KpiSink | None = None
    key, config = "", None
    for entry in iter_record(p):
        if entry.kind == "header":
            if acc is None:
                try:
                    found = _accumulator(entry.data)
                except (KeyError, TypeError, ValueError) as exc:
                    raise RecordError(p, f"bad KPI configuration: {exc}", entry.line_no) from None
                if found is None:
                    raise RecordError(p, "header has no 'kpi' configuration", entry.line_no)
                _, key, acc = found
                config = entry.data.get(key)
            elif key in entry.data and entry.data[key] != config:
                raise RecordError(p, f"resumed header changes the '{key}' configuration", entry.line_no)
        elif entry.kind == "cycle":
            assert acc is not None  # iter_record guarantees a header first
            try:
                acc.add(CycleRecord.from_json(entry.data))
            except KeyError as exc:
                raise RecordError(
                    p, f"cycle lacks {exc} needed for the KPI report (is this a simulated run?)", entry.line_no
                ) from None
            except (TypeError, ValueError) as exc:
                raise RecordError(p, f"cycle not usable for the KPI report: {exc}", entry.line_no) from None
    if acc is None:
        raise RecordError(p, "no header")
    return dict(acc.result())

