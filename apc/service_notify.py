"""systemd service notifications (``sd_notify``): ready at start, a watchdog that only the running
core can feed, stopping at the end.

With ``Type=notify`` and ``WatchdogSec=`` in the unit file, systemd passes ``NOTIFY_SOCKET`` and
``WATCHDOG_USEC`` in the environment. :class:`ServiceNotifier` sends ``READY=1``, ``STOPPING=1`` and
``WATCHDOG=1`` datagrams to that socket (the protocol is a few ``KEY=VALUE`` lines; no library
needed); outside systemd it does nothing. :func:`feed_watchdog` sends ``WATCHDOG=1`` every half
watchdog period, but only while every unit has completed a cycle recently: a core whose event loop
hangs (or whose units stop cycling) stops feeding it, and systemd restarts the process (whose units
come back in STANDBY, see ``docs/safety.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping


class ServiceNotifier:
    """Datagrams to systemd's notification socket (``socket_path``: default ``$NOTIFY_SOCKET``)."""

    def __init__(self, socket_path: str | None = None, watchdog_usec: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path  # '@': Linux abstract namespace
        usec = watchdog_usec if watchdog_usec is not None else os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else None
        """The service's watchdog period (``None``: no watchdog configured)."""

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notification socket."""
        return bool(self._address)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE``); False when there is no socket or sending failed."""
        if not self._address:
            return False
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # never wait on systemd: a full queue drops this notification
            sock.sendto("\n".join(lines).encode(), self._address)
            return True
        return False


async def feed_watchdog(notifier: ServiceNotifier, last_cycle_mono: Mapping[str, float],
                        stale_after_s: Callable[[str], float], stop: asyncio.Event) -> None:
    """Send ``WATCHDOG=1`` every half watchdog period while each unit's last completed cycle
    (``last_cycle_mono[unit]``, ``time.monotonic()``) is younger than ``stale_after_s(unit)``."""
    if notifier.watchdog_s is None:
        return
    half = notifier.watchdog_s / 2.0
    while not stop.is_set():
        now = time.monotonic()
        if all(now - t <= stale_after_s(u) for u, t in last_cycle_mono.items()):
            notifier.notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), half)
