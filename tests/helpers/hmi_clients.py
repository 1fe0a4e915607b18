"""Real asyncua HMI clients for security tests: logins from a chosen loopback source address, and a login flood.

``python -m tests.helpers.hmi_clients '<json>'`` runs :func:`flood` in its own
process (an outsider is another machine: its client-side crypto must not run
on the server's event loop) and prints the outcomes as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from plant_io.ua_certificate import application_uri_of


class FromAddress(Client):  # type: ignore[misc]
    """asyncua's high-level Client whose TCP connection starts from a given loopback address (127.0.0.x)."""

    def __init__(self, url: str, source: str, timeout: float = 3) -> None:
        super().__init__(url, timeout=timeout)
        self.source = source

    async def connect_socket(self) -> None:
        uac = self.uaclient  # as UaClient.connect_socket, plus local_addr
        uac._set_state(UaClientState.CONNECTING)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                uac._make_protocol, self.server_url.hostname, self.server_url.port,
                local_addr=(self.source, 0)), uac._timeout)
        except BaseException:
            uac._set_state(UaClientState.DISCONNECTED)
            raise
        uac._set_state(UaClientState.SOCKET_OPEN)


async def login(url: str, server_cert: Path, user: str, password: str, *, cert: Path, key: Path,
                source: str = "127.0.0.1", read: tuple[str, str] | None = None, timeout_s: float = 3) -> str:
    """One SignAndEncrypt login from ``source``: 'Good' (after reading node ``read`` = (namespace URI,
    string id) when given), the name of the status it was refused with, or 'Timeout'."""
    client = FromAddress(url, source, timeout=timeout_s)
    client.application_uri = application_uri_of(cert)
    client.set_user(user)
    client.set_password(password)
    await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), server_certificate=str(server_cert))
    try:
        await client.connect()
    except (ua.UaStatusCodeError, TimeoutError) as exc:
        with suppress(Exception):
            await client.disconnect()
        return str(ua.StatusCode(exc.code).name) if isinstance(exc, ua.UaStatusCodeError) else "Timeout"
    try:
        if read is not None:
            ns = await client.get_namespace_index(read[0])
            await client.get_node(ua.NodeId(read[1], ns)).read_value()
    finally:
        await client.disconnect()
    return "Good"


@dataclass(frozen=True)
class Flood:
    """``waves`` x ``per_wave`` concurrent wrong logins as ``user`` from ``source``; after wave
    ``operator_after`` the operator logs in (correct password, own certificate, 127.0.0.1) meanwhile."""

    url: str
    server_cert: str
    user: str
    source: str
    cert: str
    key: str
    operator_password: str
    operator_cert: str
    operator_key: str
    operator_read: tuple[str, str]
    waves: int = 10
    per_wave: int = 4
    operator_after: int = 4


async def flood(spec: Flood) -> dict[str, Any]:
    """Run the flood and the operator's login; {'flood': [status, ...], 'operator': status}."""
    halfway = asyncio.Event()

    async def guesses() -> list[str]:
        out: list[str] = []
        for wave in range(spec.waves):
            out += await asyncio.gather(*(
                login(spec.url, Path(spec.server_cert), spec.user, f"guess-{wave}-{i}-xyzzy", source=spec.source,
                      cert=Path(spec.cert), key=Path(spec.key), timeout_s=10) for i in range(spec.per_wave)))
            if wave == spec.operator_after:
                halfway.set()
        return out

    async def operator() -> str:
        await halfway.wait()
        return await login(spec.url, Path(spec.server_cert), spec.user, spec.operator_password,
                           cert=Path(spec.operator_cert), key=Path(spec.operator_key),
                           read=(spec.operator_read[0], spec.operator_read[1]), timeout_s=10)

    flooded, ok = await asyncio.gather(guesses(), operator())
    return {"flood": flooded, "operator": ok}


async def start_flood(spec: Flood, cwd: Path) -> asyncio.subprocess.Process:
    """Start :func:`flood` in a child process; read its outcome with :func:`flood_outcome`."""
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.helpers.hmi_clients",
                                                json.dumps(asdict(spec)), cwd=str(cwd),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def flood_outcome(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """Wait (without blocking the loop) for the flood process: {'flood': [status, ...], 'operator': status}."""
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"flood process failed ({proc.returncode}): {err.decode()[-2000:]}")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    args["operator_read"] = tuple(args["operator_read"])
    print(json.dumps(asyncio.run(flood(Flood(**args)))))
