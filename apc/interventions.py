"""Operator interventions from the audit log (``audit.jsonl`` and its rotated ``audit.<n>.jsonl.gz``
beside the flight records of ``apc run``): mode requests, operator-limit changes and MV enables.

Counted per unit, by the event's time (``ts``). A mode request that a process start makes (``why``
``process start``) is not an intervention; every other ``mode_request`` is. ``operator_limits``
events (from the HMI, or applied with a recipe reload) are limit changes; ``mv_enable`` with ``new``
false a disable, with ``new`` true an enable.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["INTERVENTION_KEYS", "AuditError", "Intervention", "audit_files_beside", "read_interventions"]

INTERVENTION_KEYS = ("mode_requests", "limit_changes", "mv_disables", "mv_enables")
"""The counts an intervention adds to (and ``interventions``, their sum)."""


class AuditError(ValueError):
    """An audit log cannot be read (names file and line)."""


@dataclass(frozen=True)
class Intervention:
    """One operator intervention on one unit."""

    utc: float
    unit: str
    key: str
    """One of :data:`INTERVENTION_KEYS`."""
    who: str


def audit_files_beside(record: Path) -> tuple[Path, ...]:
    """The audit log and its rotated parts in the folder of ``record`` (sorted; none when absent)."""
    folder = record.parent
    found = {p for pattern in ("audit.jsonl", "audit.*.jsonl", "audit.*.jsonl.gz") for p in folder.glob(pattern)}
    return tuple(sorted(found))


def _utc(ts: str) -> float:
    return dt.datetime.fromisoformat(ts).astimezone(dt.UTC).timestamp()


def _classify(event: dict[str, object]) -> str | None:
    name = event.get("event")
    if name == "mode_request":
        return None if event.get("why") == "process start" else "mode_requests"
    if name == "operator_limits":
        return "limit_changes"
    if name == "mv_enable":
        return "mv_enables" if event.get("new") else "mv_disables"
    return None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        yield from enumerate(f, start=1)


def read_interventions(paths: Iterable[Path]) -> list[Intervention]:
    """Every intervention in the audit files ``paths``, in time order. A final line cut off (the event
    being written when the process died) is skipped; any other line that is not a JSON object, or an
    intervention without a valid ``ts``, raises :class:`AuditError` naming file and line."""
    out: list[Intervention] = []
    for path in paths:
        pending: str | None = None
        for line_no, raw in _lines(path):
            if pending is not None:
                raise AuditError(pending)
            try:
                event = json.loads(raw)
            except ValueError as exc:
                pending = f"{path}:{line_no}: not a JSON line: {exc}"
                continue
            if not isinstance(event, dict):
                raise AuditError(f"{path}:{line_no}: not a JSON object")
            key = _classify(event)
            if key is None:
                continue
            ts = event.get("ts")
            try:
                utc = _utc(str(ts))
            except ValueError:
                raise AuditError(f"{path}:{line_no}: field 'ts' is not an ISO 8601 time: {ts!r}") from None
            out.append(Intervention(utc, str(event.get("unit") or ""), key, str(event.get("who") or "")))
    out.sort(key=lambda e: e.utc)
    return out
