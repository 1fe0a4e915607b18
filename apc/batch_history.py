"""A furnace's batch history: one row per finished batch, in SQLite beside the batch state file.

Each row keeps what the batch identified (the filter's parameter biases, their variances), what it
achieved (KPIs from measured and estimated data), what it ran (batch id, material lot, curve name
and hash, the adjustable terms in force) and what it proposes for the next batch. Durable: WAL
journal, ``synchronous=FULL``, one transaction per batch, so a kill or a power loss keeps every
batch whose :meth:`BatchHistory.add` returned. A learning reset (after maintenance) is a row of its
own; batches before the last reset are kept but no longer learned from.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apc.json_safe import finite_json

__all__ = ["HISTORY_SCHEMA_VERSION", "BatchHistory", "BatchHistoryError", "BatchRecord", "LearningReset"]

HISTORY_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL,
    lot TEXT NOT NULL,
    furnace TEXT NOT NULL,
    final_state TEXT NOT NULL,
    started_s REAL NOT NULL,
    ended_s REAL NOT NULL,
    ended_utc REAL NOT NULL,
    curve_name TEXT NOT NULL,
    curve_sha256 TEXT NOT NULL,
    controller TEXT NOT NULL,
    learned INTEGER NOT NULL,
    parameters TEXT NOT NULL,
    kpis TEXT NOT NULL,
    terms TEXT NOT NULL,
    proposal TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    after_batch_seq INTEGER NOT NULL,
    utc REAL NOT NULL,
    who TEXT NOT NULL,
    why TEXT NOT NULL
);
"""


class BatchHistoryError(Exception):
    """The history file cannot be opened or is not a batch history."""


def _dumps(v: Any) -> str:
    return json.dumps(finite_json(v), sort_keys=True, allow_nan=False)


@dataclass(frozen=True)
class BatchRecord:
    """One finished batch."""

    batch_id: str
    lot: str
    furnace: str
    final_state: str
    """``complete`` or ``aborted``."""
    started_s: float
    ended_s: float
    ended_utc: float
    curve_name: str
    curve_sha256: str
    controller: str
    learned: bool
    """True when the batch started from the history (parameters carried or terms adjusted)."""
    parameters: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Bias name → (value, std) identified at the batch's end."""
    kpis: Mapping[str, float | None] = field(default_factory=dict)
    terms: Mapping[str, float] = field(default_factory=dict)
    """Adjustable terms the batch ran with."""
    proposal: Mapping[str, float] = field(default_factory=dict)
    """Terms proposed for the next batch."""
    seq: int | None = None
    """Row number (None before it is stored)."""


@dataclass(frozen=True)
class LearningReset:
    """An engineer's reset of the learning (after maintenance)."""

    after_batch_seq: int
    utc: float
    who: str
    why: str


class BatchHistory:
    """The SQLite batch history of one furnace (see the module docstring)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """Open (``create``: and create) the history at ``path``."""
        self.path = path
        if not create and not path.exists():
            raise BatchHistoryError(f"{path}: no batch history there")
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._tx():
                for statement in _statements():
                    self._db.execute(statement)
                row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(HISTORY_SCHEMA_VERSION),))
                elif row[0] != str(HISTORY_SCHEMA_VERSION):
                    raise BatchHistoryError(f"{path}: history schema_version {row[0]} is not "
                                            f"{HISTORY_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise BatchHistoryError(f"{path}: not a usable batch history ({exc})") from None

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def add(self, record: BatchRecord) -> int:
        """Store one finished batch in one transaction; its row number."""
        params = {k: [v, s] for k, (v, s) in record.parameters.items()}
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO batches (batch_id, lot, furnace, final_state, started_s, ended_s, ended_utc, curve_name,"
                " curve_sha256, controller, learned, parameters, kpis, terms, proposal)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.batch_id, record.lot, record.furnace, record.final_state, record.started_s, record.ended_s,
                 record.ended_utc, record.curve_name, record.curve_sha256, record.controller, int(record.learned),
                 _dumps(params), _dumps(record.kpis), _dumps(record.terms), _dumps(record.proposal)))
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def reset(self, who: str, why: str, utc: float) -> LearningReset:
        """Forget what was learned so far (the rows stay): the next batch starts from the recipe."""
        if not who.strip() or not why.strip():
            raise ValueError("a learning reset needs who and why")
        with self._tx():
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()
            self._db.execute("INSERT INTO resets (after_batch_seq, utc, who, why) VALUES (?, ?, ?, ?)",
                             (int(row[0]), utc, who, why))
        return LearningReset(int(row[0]), utc, who, why)

    def resets(self) -> list[LearningReset]:
        """Every reset, oldest first."""
        rows = self._db.execute("SELECT after_batch_seq, utc, who, why FROM resets ORDER BY seq").fetchall()
        return [LearningReset(int(a), float(u), str(w), str(y)) for a, u, w, y in rows]

    def records(self) -> list[BatchRecord]:
        """Every batch, oldest first."""
        rows = self._db.execute("SELECT seq, batch_id, lot, furnace, final_state, started_s, ended_s, ended_utc,"
                                " curve_name, curve_sha256, controller, learned, parameters, kpis, terms, proposal"
                                " FROM batches ORDER BY seq").fetchall()
        return [_record(r) for r in rows]

    def last(self) -> BatchRecord | None:
        """The newest batch after the last reset (what the next batch learns from), if any."""
        rows = self._db.execute("SELECT COALESCE(MAX(after_batch_seq), 0) FROM resets").fetchone()
        cut = int(rows[0])
        r = self._db.execute("SELECT seq, batch_id, lot, furnace, final_state, started_s, ended_s, ended_utc,"
                             " curve_name, curve_sha256, controller, learned, parameters, kpis, terms, proposal"
                             " FROM batches WHERE seq > ? ORDER BY seq DESC LIMIT 1", (cut,)).fetchone()
        return None if r is None else _record(r)


def _statements() -> list[str]:
    return [s.strip() for s in _SCHEMA.split(";") if s.strip()]


def _record(r: tuple[Any, ...]) -> BatchRecord:
    params = {k: (float("nan") if v[0] is None else float(v[0]), float("nan") if v[1] is None else float(v[1]))
              for k, v in json.loads(r[12]).items()}
    return BatchRecord(batch_id=r[1], lot=r[2], furnace=r[3], final_state=r[4], started_s=float(r[5]),
                       ended_s=float(r[6]), ended_utc=float(r[7]), curve_name=r[8], curve_sha256=r[9],
                       controller=r[10], learned=bool(r[11]), parameters=params, kpis=json.loads(r[13]),
                       terms=json.loads(r[14]), proposal=json.loads(r[15]), seq=int(r[0]))


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
