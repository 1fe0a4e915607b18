"""systemd notifications: READY, a watchdog fed only while units cycle on time, STOPPING (a real
datagram socket stands in for systemd's)."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from pathlib import Path

import apc.runtime as runtime
from apc.assembly import load_site_file
from apc.service_notify import ServiceNotifier, feed_watchdog
from tests.helpers.sim_harness import ND_RECIPE


def listen(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(path)
    sock.setblocking(False)
    return sock, path


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_run_site_says_ready_feeds_the_watchdog_and_says_stopping(tmp_path: Path, monkeypatch: object) -> None:
    """Under a notify socket with a watchdog, apc run sends READY=1 once its units run, WATCHDOG=1 while they cycle, and STOPPING=1 at the end."""
    sock, path = listen(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)  # type: ignore[attr-defined]
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # type: ignore[attr-defined]
    site = tmp_path / "site.yaml"
    site.write_text("schema_version: 1\nsite: notify\nunits:\n"
                    f"  - {{name: c1, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 4}}, requested_mode: STANDBY}}\n")
    messages: list[str] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), lambda: messages.extend(drain(sock)))  # systemd reads as they come
        try:
            return await runtime.run_site(load_site_file(site), speed=100.0, hours=0.1, record_dir=tmp_path / "r",
                                          out=io.StringIO(), compute_workers=0)
        finally:
            loop.remove_reader(sock.fileno())

    code = asyncio.run(main())
    assert code == 0
    messages += drain(sock)
    assert messages[0].startswith("READY=1") and messages[-1] == "STOPPING=1"
    assert messages.count("WATCHDOG=1") >= 3  # 3.6 s of run, fed every 0.2 s


def test_watchdog_is_not_fed_while_a_unit_stops_cycling(tmp_path: Path) -> None:
    """With one unit's last cycle older than its limit, no WATCHDOG=1 is sent (systemd would then restart the process)."""
    sock, path = listen(tmp_path)
    notifier = ServiceNotifier(path, "100000")
    now = time.monotonic()
    last = {"fresh": now + 10.0, "stuck": now - 60.0}

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(feed_watchdog(notifier, last, lambda u: 5.0, stop))
        await asyncio.sleep(0.2)  # the watchdog's own period is what is tested: let it tick a few times
        stop.set()
        await task

    asyncio.run(run())
    assert drain(sock) == []
    assert ServiceNotifier("", "").notify("READY=1") is False  # outside systemd: nothing to tell
