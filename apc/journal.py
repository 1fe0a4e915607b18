"""The runtime's journal files (audit log, flight records): held back until a start is accepted,
then fsynced at a fixed interval.

Durability: every line is handed to the kernel when it is written (it survives a crash of the
process at once); :func:`sync_periodically` fsyncs the files every ``interval_s`` seconds, so a
power loss loses at most that long of audit events and records. Unit and batch state files are
fsynced on every change (see :mod:`apc.state_file`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TextIO


class DeferredStream:
    """A text stream that keeps what is written until :meth:`commit` hands it a file; then it writes
    through. A start that is refused never commits: its audit events are dropped with it."""

    def __init__(self) -> None:
        self._held: list[str] = []
        self._file: TextIO | None = None

    def write(self, text: str) -> int:
        """Write through to the committed file, or hold ``text``."""
        if self._file is not None:
            return self._file.write(text)
        self._held.append(text)
        return len(text)

    def flush(self) -> None:
        """Flush the committed file (nothing to do while holding)."""
        if self._file is not None:
            self._file.flush()

    def commit(self, file: TextIO) -> None:
        """Write what was held to ``file`` and write through to it from now on."""
        file.write("".join(self._held))
        file.flush()
        self._held.clear()
        self._file = file


class Syncable(Protocol):
    """A journal file that can be made durable (a flight recorder)."""

    def sync(self) -> None:
        """fsync what was written so far."""
        ...


class Descriptor(Protocol):
    """A journal file fsynced through its descriptor (an open text file, :class:`RotatingTextFile`)."""

    @property
    def closed(self) -> bool:
        """True once closed (nothing left to sync)."""
        ...

    def fileno(self) -> int:
        """The file descriptor of the moment."""
        ...


def _sync(target: Descriptor | Syncable | None) -> None:
    """fsync one target. Only the file descriptor is touched (the audit logger flushes each event on
    the event loop), so running this in a worker thread never races a write."""
    if target is None:
        return
    if hasattr(target, "sync"):
        target.sync()
    elif not target.closed:
        os.fsync(target.fileno())  # the descriptor of the moment (a rotation may have just replaced it)


async def sync_periodically(targets: Callable[[], Iterable[Descriptor | Syncable | None]], interval_s: float,
                            stop: asyncio.Event) -> None:
    """fsync every target every ``interval_s`` wall seconds (in a worker thread: the event loop never
    waits on the disk) until ``stop``, then once more. A failing fsync is left to the next append to
    report (the recorder and the audit log raise on write errors)."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        for target in list(targets()):
            with contextlib.suppress(OSError, ValueError):
                await asyncio.to_thread(_sync, target)
        if stop.is_set():
            return


class RotatingTextFile:
    """An append-only text file (the audit log) that rotates by size or UTC day: the full one is
    renamed ``<stem>.<n><suffix>`` and gzipped in the background; files ``<stem>*.gz`` older than
    ``keep_days`` are deleted at each rotation (0: kept). ``utc`` is the runtime's clock (its day
    decides the daily rotation)."""

    def __init__(self, path: Path, *, max_bytes: int, daily: bool, keep_days: float,
                 utc: Callable[[], float]) -> None:
        self.path = Path(path)
        self._max_bytes = max_bytes
        self._daily = daily
        self._keep_s = keep_days * 86400.0
        self._utc = utc
        self._file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (the journal's open file)
        self._size = self.path.stat().st_size
        self._day = int(utc() // 86400.0)
        rotated = self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}.gz")
        self._n = max((int(p.name.split(".")[-3]) for p in rotated if p.name.split(".")[-3].isdigit()), default=0)
        self._pending: list[threading.Thread] = []

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._file.closed

    def fileno(self) -> int:
        """The current file's descriptor (for fsync)."""
        return self._file.fileno()

    def write(self, text: str) -> int:
        """Append ``text``, rotating first when the file is full or the UTC day changed."""
        day = int(self._utc() // 86400.0)
        if self._size >= self._max_bytes or (self._daily and day != self._day):
            self._rotate()
            self._day = day
        n = self._file.write(text)
        self._size += len(text.encode("utf-8"))
        return n

    def flush(self) -> None:
        """Flush to the operating system."""
        self._file.flush()

    def close(self) -> None:
        """Close and wait for files being compressed."""
        self._file.close()
        for t in self._pending:
            t.join()

    def _rotate(self) -> None:
        from apc.recorder import _expire, _gzip_and_remove

        self._file.close()
        self._n += 1
        rotated = self.path.with_name(f"{self.path.stem}.{self._n:04d}{self.path.suffix}")
        os.replace(self.path, rotated)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (the next segment)
        self._size = 0
        t = threading.Thread(target=_gzip_and_remove, args=(rotated,), name=f"gzip-{rotated.name}", daemon=False)
        t.start()
        self._pending = [p for p in self._pending if p.is_alive()] + [t]
        if self._keep_s > 0:
            _expire(self.path.parent, self.path.stem, self._keep_s)
