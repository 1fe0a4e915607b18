"""Login throttle keyed by where an attempt comes from (peer address, client certificate), never by user name.

A source may fail ``free_failures`` times; each further failure blocks it for
``first_delay_s``, doubling up to ``max_delay_s``. A success clears it. At most
one password check per source runs at a time. Nothing is global and nothing
is keyed by the user name, so a guessing peer slows only itself: it cannot
lock a named operator out, nor starve another peer. The state is an LRU of at
most ``max_sources`` failing sources (the least recently seen one is dropped).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["LoginThrottle"]


@dataclass
class _Failures:
    count: int = 0
    blocked_until_s: float = 0.0


class LoginThrottle:
    """Per-source back-off for password checks (see module docstring); ``monotonic`` is injectable."""

    def __init__(self, *, free_failures: int = 3, first_delay_s: float = 1.0, max_delay_s: float = 60.0,
                 max_sources: int = 4096, monotonic: Callable[[], float] = time.monotonic) -> None:
        if free_failures < 0 or first_delay_s <= 0 or max_delay_s < first_delay_s or max_sources < 1:
            raise ValueError("free_failures >= 0, 0 < first_delay_s <= max_delay_s and max_sources >= 1")
        self.free_failures = free_failures
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.max_sources = max_sources
        self._mono = monotonic
        self._failing: OrderedDict[str, _Failures] = OrderedDict()
        self._in_flight: set[str] = set()
        """Sources with a check running (as many as checks admitted and not finished: bounded by the caller)."""

    def __len__(self) -> int:
        """Number of failing sources remembered."""
        return len(self._failing)

    def admit(self, sources: Sequence[str]) -> str:
        """'' when a password check may run now for ``sources`` (then marked in flight), else why not."""
        now = self._mono()
        for key in sources:
            if key in self._in_flight:
                return f"{key}: a login from there is already being checked"
            state = self._failing.get(key)
            if state is not None:
                self._failing.move_to_end(key)
                if now < state.blocked_until_s:
                    return (f"{key}: {state.count} failed logins, next attempt allowed in "
                            f"{state.blocked_until_s - now:.1f} s")
        self._in_flight.update(sources)
        return ""

    def finish(self, sources: Sequence[str], ok: bool) -> None:
        """End the check admitted for ``sources``: a success clears them, a failure counts (and may block)."""
        now = self._mono()
        for key in sources:
            self._in_flight.discard(key)
            if ok:
                self._failing.pop(key, None)
                continue
            state = self._failing.pop(key, None) or _Failures()
            self._failing[key] = state  # most recently seen
            state.count += 1
            extra = state.count - self.free_failures
            if extra > 0:
                state.blocked_until_s = now + min(self.first_delay_s * 2.0 ** min(extra - 1, 60), self.max_delay_s)
        while len(self._failing) > self.max_sources:
            self._failing.popitem(last=False)

    def release(self, sources: Sequence[str]) -> None:
        """End an admitted check that was not run (e.g. the pool was full): neither success nor failure."""
        self._in_flight.difference_update(sources)

    def blocked_s(self, source: str) -> float:
        """Seconds until ``source`` may try again (0 when it may now)."""
        state = self._failing.get(source)
        return max(0.0, state.blocked_until_s - self._mono()) if state is not None else 0.0
