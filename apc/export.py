"""``apc export``: a flight record as CSV (standard library) or Parquet (pyarrow, the ``export``
extra), one row per cycle (columns: :mod:`apc.record_table`, ``docs/trends_and_export.md``).

CSV follows pandas' conventions: a missing or non-finite value is an empty field (``read_csv``
gives NaN), floats are written with their shortest round-trip repr, booleans as ``True``/``False``.
Parquet: missing and non-finite values are null; each field's metadata holds its ``unit``, the
schema's metadata the record's first header (``apc_header``, strict JSON).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Literal

from apc.json_safe import finite_json
from apc.record_table import RecordTable

ExportFormat = Literal["csv", "parquet"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "parquet")


class MissingExtraError(RuntimeError):
    """An optional dependency of a command is not installed."""


def require(module: str, extra: str) -> Any:
    """Import ``module``, or raise :class:`MissingExtraError` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: pip install 'apc-runtime[{extra}]'") from None


def default_out(record: Path, suffix: str) -> Path:
    """``record`` beside itself with its record suffixes (``.apcrec``, ``.gz``, ``.jsonl``) replaced by ``suffix``."""
    name = record.name
    for ext in (".gz", ".apcrec", ".jsonl"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return record.with_name(name + suffix)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def write_csv(table: RecordTable, out: Path) -> None:
    """Write ``table`` to ``out`` as CSV with a header row."""
    cols = [c.values for c in table.columns]
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(table.names())
        for i in range(table.rows):
            w.writerow([_csv_cell(c[i]) for c in cols])


def write_parquet(table: RecordTable, out: Path) -> None:
    """Write ``table`` to ``out`` as Parquet (needs pyarrow)."""
    pa = require("pyarrow", "export")
    pq = require("pyarrow.parquet", "export")
    types = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "str": pa.string()}
    fields, arrays = [], []
    for c in table.columns:
        fields.append(pa.field(c.name, types[c.type], nullable=True, metadata={"unit": c.unit}))
        arrays.append(pa.array(c.values, type=types[c.type]))
    schema = pa.schema(fields, metadata={"apc_header": json.dumps(finite_json(table.header), allow_nan=False)})
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), out)


def export(table: RecordTable, fmt: ExportFormat, out: Path) -> None:
    """Write ``table`` to ``out`` in ``fmt``."""
    if fmt == "csv":
        write_csv(table, out)
    elif fmt == "parquet":
        write_parquet(table, out)
    else:
        raise ValueError(f"unknown export format {fmt!r}; known: {FORMATS}")
