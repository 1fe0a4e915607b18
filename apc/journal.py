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
from typing import Callable, Iterable, Protocol, TextIO


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


def _sync(target: TextIO | Syncable | None) -> None:
    """fsync one target. Only the file descriptor is touched (the audit logger flushes each event on
    the event loop), so running this in a worker thread never races a write."""
    if target is None:
        return
    if hasattr(target, "sync"):
        target.sync()
    elif not target.closed:
        os.fsync(target.fileno())


async def sync_periodically(targets: Callable[[], Iterable[TextIO | Syncable | None]], interval_s: float,
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
