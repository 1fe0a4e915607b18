"""Flight recorder: an append-only, versioned JSON Lines record of every cycle.

The format is documented in ``docs/flight_record.md``. In short:

* The file is UTF-8 JSON Lines. Every line is one JSON object terminated by
  ``"\\n"``.
* Line 1 is a *header* ``{"format": "apc-flight-record", "version": 1, ...}``.
  A header is recognised by its ``"format"`` key; cycle records never carry
  that key. When a unit restarts on an existing file, a new header with
  ``"resumed": true`` is appended and the record continues.
* Every other line is one control cycle, written with a single ``write(2)``
  system call on an ``O_APPEND`` descriptor. There is no user-space buffer, so
  once :meth:`FlightRecorder.append` has returned the line is in the kernel and
  survives a ``SIGKILL`` of the process; with ``fsync=True`` it also survives a
  power loss. A killed process loses at most the cycle in progress, which shows
  up as a final line without a trailing newline and is dropped by the reader
  (:attr:`RecordFile.truncated_tail`).
* Non-finite floats are written as the JSON extension tokens ``NaN``,
  ``Infinity`` and ``-Infinity`` (Python's :mod:`json` default), so they
  round-trip exactly. Tools other than Python's :mod:`json` may need an option
  to accept them.
* Version 2: what did not change since the previous cycle is not written again.
  A cycle line may carry ``"_same": [...]`` naming top-level keys, or
  ``"key.subkey"`` second-level keys, whose values equal the previous cycle's
  (the previous line after the same header); :func:`iter_record` puts them back,
  so readers see whole cycles. Lossless; the first cycle after a header is whole.
* Segments (:class:`RotatingRecorder`): a record may go on in numbered
  segments ``<stem>.<n>.apcrec.gz`` (gzip), each starting with its own header.

Versioning rule: new fields may be added at any time without a version bump;
renaming or removing a field, or changing its meaning or unit, bumps
:data:`FORMAT_VERSION`. Readers refuse records newer than they understand.
"""

from __future__ import annotations

import enum
import gc
import gzip
import json
import math
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from apc.cycle_record import CycleRecord

try:  # POSIX only; on other platforms the single-writer lock is skipped.
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FlightRecorder",
    "NullRecorder",
    "RecordEntry",
    "RecordError",
    "RecordFile",
    "Recorder",
    "RotatingRecorder",
    "iter_record",
    "read_record",
]

FORMAT = "apc-flight-record"
"""Value of the ``"format"`` key of every header line."""

FORMAT_VERSION = 2
"""Version written by this module; readers accept this version and older (1: no ``_same``)."""

SAME = "_same"
"""Key of the list of values a v2 cycle line left out because they equal the previous cycle's."""

_RESERVED_HEADER_KEYS = frozenset({"format", "version"})


class RecordError(ValueError):
    """A flight record cannot be read or appended to.

    ``line_no`` is the 1-based line number of the offending line, if any.
    """

    def __init__(self, path: Path | str, message: str, line_no: int | None = None) -> None:
        where = f"{path}:{line_no}" if line_no is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line_no = line_no


def _json_default(obj: Any) -> Any:
    """Serialise the few non-JSON types the runtime hands us (numpy, enums)."""
    if isinstance(obj, enum.Enum):
        return obj.value
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"flight record: {type(obj).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(
    skipkeys=False,
    ensure_ascii=True,
    check_circular=False,
    allow_nan=True,
    sort_keys=False,
    indent=None,
    separators=(",", ":"),
    default=_json_default,
)


def _encode_line(obj: Mapping[str, Any]) -> bytes:
    # ensure_ascii=True: the line is pure ASCII, embedded newlines are escaped,
    # so one object is always exactly one line.
    return (_ENCODER.encode(obj) + "\n").encode("ascii")


def _check_header(path: Path, obj: Any, line_no: int) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise RecordError(path, f"not an {FORMAT!r} header", line_no)
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError(path, f"invalid format version {version!r}", line_no)
    if version > FORMAT_VERSION:
        raise RecordError(
            path,
            f"format version {version} is newer than the supported version "
            f"{FORMAT_VERSION}; upgrade the apc runtime to read this record",
            line_no,
        )
    return obj


def elide(record: Mapping[str, Any], prev: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``record`` without the values equal to ``prev``'s (top level and one level down), listed in
    ``_same`` (format version 2); ``record`` itself when nothing repeats or there is no ``prev``."""
    if prev is None:
        return record
    out: dict[str, Any] = {}
    same: list[str] = []
    for key, value in record.items():
        old = prev.get(key, _MISSING)
        if old is not _MISSING and old == value:
            same.append(key)
        elif isinstance(value, dict) and isinstance(old, dict):
            sub = {}
            for k, v in value.items():
                if k in old and old[k] == v:
                    same.append(f"{key}.{k}")
                else:
                    sub[k] = v
            out[key] = sub
        else:
            out[key] = value
    if not same:
        return record
    out[SAME] = same
    return out


def restore(line: Mapping[str, Any], prev: Mapping[str, Any]) -> dict[str, Any]:
    """The whole cycle behind a v2 ``line`` (its ``_same`` values taken from ``prev``, the previous cycle)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in line.items() if k != SAME}
    for path in line[SAME]:
        key, _, sub = path.partition(".")
        if sub:
            out.setdefault(key, {})[sub] = prev[key][sub]
        else:
            out[key] = prev[key]
    return out


_MISSING = object()


class Recorder(Protocol):
    """What the unit loop needs from a recorder."""

    def append(self, record: Mapping[str, Any]) -> None:
        """Record one cycle."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...

    def sync(self) -> None:
        """Make what was appended durable (fsync)."""
        ...


class FlightRecorder:
    """Append-only writer of a flight record.

    ``header`` is opaque to the recorder except that it must not set
    ``format`` or ``version``. If ``path`` already holds a record, the new
    header is appended with ``"resumed": true`` and earlier cycles are kept;
    a partial final line left by a killed writer is cut off first.

    Only one writer may hold a record at a time (an exclusive ``flock`` on
    POSIX); a second writer gets :class:`RecordError`.

    :meth:`append` raises on I/O errors (e.g. disk full) after rolling the file
    back to the last complete line, so a failed append never corrupts the
    record; the caller decides whether to continue without recording.
    """

    def __init__(self, path: Path, header: Mapping[str, Any], *, fsync: bool = False) -> None:
        self._path = Path(path)
        self._fsync = fsync
        self._fd: int | None = None
        self._cycles_written = 0
        self._prev: Mapping[str, Any] | None = None
        clash = _RESERVED_HEADER_KEYS.intersection(header)
        if clash:
            raise ValueError(f"header must not set reserved key(s) {sorted(clash)}")

        existed = self._path.exists()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self._lock(fd)
            size = self._repair_tail(fd)
            head: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, **header}
            if size > 0:
                head["resumed"] = True
            self._fd = fd
            self._size = size
            self._write(_encode_line(head))
            if fsync and not existed:
                self._fsync_dir()
        except BaseException:
            self._fd = None
            os.close(fd)
            raise

    # -- public API -------------------------------------------------------

    @property
    def path(self) -> Path:
        """The record file."""
        return self._path

    @property
    def cycles_written(self) -> int:
        """Cycles appended by this writer (not counting earlier sessions)."""
        return self._cycles_written

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._fd is None

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one cycle as one line; durable against process kill on return."""
        if self._fd is None:
            raise ValueError(f"flight recorder {self._path} is closed")
        if "format" in record or SAME in record:
            raise ValueError(f"cycle records must not have a 'format' or {SAME!r} key (reserved)")
        self._write(_encode_line(elide(record, self._prev)))
        self._prev = record
        self._cycles_written += 1

    @property
    def size_bytes(self) -> int:
        """Bytes in the file now."""
        return self._size

    def sync(self) -> None:
        """fsync the record (safe from another thread: only the descriptor is touched); no-op when closed."""
        fd = self._fd
        if fd is not None:
            os.fsync(fd)

    def close(self) -> None:
        """Flush (fsync if requested) and close; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)  # also releases the flock

    def __enter__(self) -> FlightRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"FlightRecorder({str(self._path)!r}, {state}, cycles_written={self._cycles_written})"

    # -- internals --------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """One ``write(2)`` per line (looping only on a short write)."""
        fd = self._fd
        if fd is None:
            raise RecordError(self._path, "recorder is closed")
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self._fsync:
                os.fsync(fd)
        except BaseException:
            # Roll back a partial line so the record stays parseable.
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                pass
            raise
        self._size += len(data)

    def _lock(self, fd: int) -> None:
        if fcntl is None:  # pragma: no cover - non-POSIX
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecordError(self._path, "record is being written by another process") from None

    def _repair_tail(self, fd: int) -> int:
        """Validate an existing record and cut a partial final line; return size."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        with open(self._path, "rb") as f:
            first = f.readline()
            if first.endswith(b"\n"):
                try:
                    obj = json.loads(first)
                except ValueError:
                    raise RecordError(self._path, "existing file is not a flight record", 1) from None
                _check_header(self._path, obj, 1)
            # Find the last newline; anything after it is a cycle cut by a kill.
            block = 1 << 16
            end = size
            keep = 0
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                chunk = f.read(end - start)
                idx = chunk.rfind(b"\n")
                if idx >= 0:
                    keep = start + idx + 1
                    break
                end = start
        if keep != size:
            os.ftruncate(fd, keep)
        return keep

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self._path.parent, os.O_RDONLY)
        except OSError:  # pragma: no cover - platform without directory fds
            return
        try:
            os.fsync(dfd)
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(dfd)


class NullRecorder:
    """Recorder with the :class:`FlightRecorder` API that drops everything."""

    def __init__(
        self,
        path: Path | None = None,
        header: Mapping[str, Any] | None = None,
        *,
        fsync: bool = False,
    ) -> None:
        self._closed = False
        self._cycles_written = 0

    @property
    def path(self) -> None:
        """Always ``None``: nothing is written."""
        return None

    @property
    def cycles_written(self) -> int:
        """Cycles handed to :meth:`append` (and dropped)."""
        return self._cycles_written

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def append(self, record: Mapping[str, Any]) -> None:
        """Drop the record."""
        if self._closed:
            raise ValueError("null recorder is closed")
        self._cycles_written += 1

    def sync(self) -> None:
        """Nothing to make durable."""

    def close(self) -> None:
        """Mark closed; idempotent."""
        self._closed = True

    def __enter__(self) -> NullRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- reading ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One line of a record as produced by :func:`iter_record`.

    ``kind`` is ``"header"``, ``"cycle"`` or ``"truncated"``; the latter is
    yielded at most once, last, for a final line that was cut off (the cycle
    in progress when the writer died) and has empty ``data``.
    """

    line_no: int
    kind: Literal["header", "cycle", "truncated"]
    data: dict[str, Any]


@dataclass(frozen=True)
class RecordFile:
    """A whole record read into memory (see :func:`read_record`)."""

    headers: tuple[dict[str, Any], ...]
    cycles: tuple[dict[str, Any], ...]
    """Cycle objects as the file holds them (JSON)."""
    truncated_tail: bool

    def cycle_records(self) -> tuple[CycleRecord, ...]:
        """The cycles as typed records (``KeyError`` names a key a cycle lacks)."""
        return tuple(CycleRecord.from_json(c) for c in self.cycles)


def iter_record(path: Path | str) -> Iterator[RecordEntry]:
    """Stream a record line by line, validating as it goes.

    Raises :class:`RecordError` if line 1 is not a supported header, if any
    header is of an unknown format or a newer version, or if a line other than
    the last one is not a JSON object. A last line that lacks its newline or
    fails to parse is reported as a ``"truncated"`` entry instead.
    """
    p = Path(path)
    pending_error: tuple[int, str] | None = None
    line_no = 0
    prev: dict[str, Any] | None = None
    with (gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")) as f:
        for raw in f:
            if pending_error is not None:  # a bad line was not the last one
                raise RecordError(p, pending_error[1], pending_error[0])
            line_no += 1
            if not raw.endswith(b"\n"):
                pending_error = (line_no, "line is cut off (no trailing newline)")
                continue
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                pending_error = (line_no, f"corrupt line: {exc}")
                continue
            if not isinstance(obj, dict):
                pending_error = (line_no, f"corrupt line: expected a JSON object, got {type(obj).__name__}")
                continue
            if line_no == 1 or "format" in obj:
                prev = None
                yield RecordEntry(line_no, "header", _check_header(p, obj, line_no))
            else:
                if SAME in obj:
                    if prev is None:
                        raise RecordError(p, f"{SAME!r} in the first cycle after a header", line_no)
                    obj = restore(obj, prev)
                prev = obj
                yield RecordEntry(line_no, "cycle", obj)
    if pending_error is not None:
        if pending_error[0] == 1:
            raise RecordError(p, "no complete header line: " + pending_error[1], 1)
        yield RecordEntry(pending_error[0], "truncated", {})
    elif line_no == 0:
        raise RecordError(p, "empty file: no header line")


def read_record(path: Path | str) -> RecordFile:
    """Read a whole record; see :func:`iter_record` for validation rules."""
    headers: list[dict[str, Any]] = []
    cycles: list[dict[str, Any]] = []
    truncated = False
    # Parsed JSON is acyclic; pausing the cyclic GC while building many
    # thousands of containers makes large records load several times faster.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for entry in iter_record(path):
            if entry.kind == "cycle":
                cycles.append(entry.data)
            elif entry.kind == "header":
                headers.append(entry.data)
            else:
                truncated = True
    finally:
        if gc_was_enabled:
            gc.enable()
    return RecordFile(headers=tuple(headers), cycles=tuple(cycles), truncated_tail=truncated)


# -- segments ------------------------------------------------------------------


class RotatingRecorder:
    """A flight record in segments: the current one ``<stem>.apcrec``; when it passes ``max_bytes``
    or a cycle's UTC day differs from its first's (``daily``), it is closed, renamed
    ``<stem>.<n>.apcrec`` and gzipped in a background thread to ``<stem>.<n>.apcrec.gz``, and a new
    current segment starts with the header (``"segment": n + 1``). Segments of the unit
    (``<unit>-*.apcrec.gz`` in the directory) older than ``keep_days`` are deleted at each rotation
    (0: kept). ``sync`` and ``close`` act on the current segment; ``close`` waits for compressions.
    """

    def __init__(self, path: Path, header: Mapping[str, Any], *, max_bytes: int, daily: bool = True,
                 keep_days: float = 0.0, prefix: str | None = None, fsync: bool = False) -> None:
        self._path = Path(path)
        self._header = dict(header)
        self._max_bytes = max_bytes
        self._daily = daily
        self._keep_s = keep_days * 86400.0
        self._prefix = prefix if prefix is not None else self._path.name.split("-")[0]
        self._fsync = fsync
        self._segment = 0
        self._day: int | None = None
        self._pending: list[Any] = []
        self._current = FlightRecorder(self._path, self._header, fsync=fsync)
        self._cycles = 0

    @property
    def path(self) -> Path:
        """The current segment."""
        return self._path

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._current.closed

    @property
    def cycles_written(self) -> int:
        """Cycles appended by this writer, over all segments."""
        return self._cycles

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one cycle, rotating first when the segment is full or the UTC day changed."""
        utc = record.get("utc")
        day = int(utc // 86400.0) if isinstance(utc, (int, float)) and math.isfinite(utc) else None
        if self._day is None:
            self._day = day
        if self._current.size_bytes >= self._max_bytes or (self._daily and day is not None and day != self._day):
            self._rotate()
            self._day = day
        self._current.append(record)
        self._cycles += 1

    def sync(self) -> None:
        """fsync the current segment."""
        self._current.sync()

    def close(self) -> None:
        """Close the current segment and wait for segments being compressed."""
        self._current.close()
        for done in self._pending:
            done.join()
        self._pending.clear()

    def _rotate(self) -> None:
        self._current.close()
        self._segment += 1
        closed = self._path.with_name(f"{self._path.stem}.{self._segment:04d}{self._path.suffix}")
        os.replace(self._path, closed)
        self._current = FlightRecorder(self._path, {**self._header, "segment": self._segment + 1,
                                                    "previous_segment": closed.name + ".gz"}, fsync=self._fsync)
        worker = threading.Thread(target=_gzip_and_remove, args=(closed,), name=f"gzip-{closed.name}", daemon=False)
        worker.start()
        self._pending = [t for t in self._pending if t.is_alive()] + [worker]
        if self._keep_s > 0:
            _expire(self._path.parent, f"{self._prefix}-", self._keep_s)


def _gzip_and_remove(path: Path) -> None:
    """``path`` → ``path.gz`` (written to a temporary name first), then ``path`` removed."""
    tmp = path.with_name(path.name + ".gz.tmp")
    with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(tmp, path.with_name(path.name + ".gz"))
    path.unlink()


def _expire(directory: Path, prefix: str, keep_s: float) -> None:
    """Delete compressed segments and rotated audit logs starting with ``prefix`` older than ``keep_s``."""
    import time

    cutoff = time.time() - keep_s
    for p in directory.glob(f"{prefix}*.gz"):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:  # already gone, or not ours to delete: retention is best effort
            pass
