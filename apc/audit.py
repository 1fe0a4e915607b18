"""Structured JSON logging and audit events (structlog, no global configuration).

Every write and every mode change is one JSON event with who, what, old,
new and why. Timestamps come from the injected clock, so a virtual-time run
logs virtual UTC and stays reproducible.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any, Protocol, TextIO, cast

import structlog
from structlog.typing import EventDict, WrappedLogger


def _iso(utc_s: float) -> str:
    return dt.datetime.fromtimestamp(utc_s, tz=dt.UTC).isoformat(timespec="milliseconds")


def _ts_from_event(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Render the ``utc`` field (seconds from the injected clock) as ISO 8601."""
    utc = event.pop("utc", None)
    if utc is not None:
        event["ts"] = _iso(float(utc))
    return event


class TextSink(Protocol):
    """What a JSON logger writes to: an open text file, or a stream that holds or redirects lines."""

    def write(self, text: str, /) -> int:
        """Write ``text``; the number of characters written."""
        ...

    def flush(self) -> None:
        """Hand what was written on."""
        ...


def print_logger_file(stream: TextSink) -> TextIO:
    """``stream`` as the file of structlog's PrintLogger, which declares ``TextIO`` but only writes and
    flushes (a stream holding or redirecting lines qualifies)."""
    return cast(TextIO, stream)


def make_logger(stream: TextSink | None = None, **context: Any) -> structlog.typing.FilteringBoundLogger:
    """A JSON logger writing one line per event to ``stream`` (stderr by default)."""
    processors: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        _ts_from_event,
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(sort_keys=True),
    ]
    logger = structlog.wrap_logger(
        structlog.PrintLogger(print_logger_file(stream or sys.stderr)),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(0),
    )
    return logger.bind(**context)  # type: ignore[no-any-return]


def null_logger() -> structlog.typing.FilteringBoundLogger:
    """A logger that drops everything (fast path for offline simulation)."""
    def drop(_: WrappedLogger, __: str, ___: EventDict) -> EventDict:
        raise structlog.DropEvent

    return structlog.wrap_logger(  # type: ignore[no-any-return]
        structlog.ReturnLogger(),
        processors=[drop],
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
    )
