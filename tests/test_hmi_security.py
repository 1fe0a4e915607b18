"""Security of the HMI server against real clients on loopback: unsecured channels, logins, trust list, port.

The raw clients are built on asyncua's lower layer (``UaClient`` and its
``UASocketProtocol``), which sends whatever it is told, unlike the high-level
``Client`` that refuses a missing endpoint on its own side.
"""

from __future__ import annotations

import asyncio
import base64
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncua
import pytest
from asyncua import ua
from asyncua.client.ua_client import UaClient
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256, SecurityPolicyNone
from asyncua.server.uaprocessor import UaProcessor
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from apc.hmi.certs import application_uri_of, make_certificate
from apc.hmi.login import PasswordPool, certificate_thumbprint
from apc.hmi.server import HMI_NAMESPACE, HmiServer, HmiServerError, hmi_node_id
from apc.hmi.throttle import LoginThrottle
from apc.hmi.users import MAX_SCRYPT_COST, UsersFileError, add_user, hash_password, load_users, verify_password
from apc.types import Mode
from tests.helpers import hmi_clients
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import ND_RECIPE, SimUnit
from tests.test_hmi_server import PASSWORDS, SERVER_URI, UNIT, Audit, Pki, _write_private, hmi, pki  # noqa: F401

VT = ua.VariantType
RNG = random.Random(62443)
OUTSIDER = "127.0.0.2"
"""Loopback source address of the misbehaving peer (Linux routes all of 127.0.0.0/8 to lo)."""


# --------------------------------------------------------------------------- clients
@dataclass
class FakeMonotonic:
    """An injected monotonic clock that moves only when told."""

    now_s: float = 1000.0

    def __call__(self) -> float:
        return self.now_s


async def status_of(request: Awaitable[Any]) -> str:
    """'Good', or the name of the status the server refused the request with."""
    try:
        await request
    except ua.UaStatusCodeError as exc:
        return str(ua.StatusCode(exc.code).name)
    return "Good"


@asynccontextmanager
async def raw_channel(url: str, policy: Any = None,
                      mode: ua.MessageSecurityMode = ua.MessageSecurityMode.None_) -> AsyncIterator[UaClient]:
    """A socket, Hello and OpenSecureChannel through asyncua's low-level UaClient (SecurityPolicy None by default)."""
    target = urlparse(url)
    uac = UaClient(timeout=3)
    uac.set_security(policy or SecurityPolicyNone())
    await uac.connect_socket(target.hostname, target.port)
    try:
        await uac.send_hello(url)
        params = ua.OpenSecureChannelParameters()
        params.ClientProtocolVersion = 0
        params.RequestType = ua.SecurityTokenRequestType.Issue
        params.SecurityMode = mode
        params.ClientNonce = RNG.randbytes(uac.security_policy.secure_channel_nonce_length)
        params.RequestedLifetime = 3_600_000
        await uac.open_secure_channel(params)
        yield uac
    finally:
        uac.disconnect_socket()


def session_params(url: str, *, certificate: bytes | None = None,
                   app_uri: str = "urn:raw:client") -> ua.CreateSessionParameters:
    """CreateSession parameters as a client application would send them."""
    params = ua.CreateSessionParameters()
    params.ClientDescription = ua.ApplicationDescription(
        ApplicationUri=app_uri, ApplicationName=ua.LocalizedText("raw"), ApplicationType=ua.ApplicationType.Client)
    params.EndpointUrl = url
    params.SessionName = "raw"
    params.ClientNonce = RNG.randbytes(32)
    params.ClientCertificate = certificate
    params.RequestedSessionTimeout = 60_000
    params.MaxResponseMessageSize = 0
    return params


async def channel_policy(pki: Pki, cert: Path, key: Path,
                         mode: ua.MessageSecurityMode) -> SecurityPolicyBasic256Sha256:
    """A client-side Basic256Sha256 policy with ``cert``/``key`` in ``mode``, against the test server's certificate."""
    return SecurityPolicyBasic256Sha256(await uacrypto.load_certificate(str(pki.server_cert)),
                                        await uacrypto.load_certificate(str(cert)),
                                        await uacrypto.load_private_key(str(key)), mode)


def password_login(user: str, password: str) -> ua.ActivateSessionParameters:
    """ActivateSession with a UserNameIdentityToken carrying the password in clear."""
    params = ua.ActivateSessionParameters()
    params.UserIdentityToken = ua.UserNameIdentityToken(PolicyId="username", UserName=user,
                                                        Password=password.encode("utf-8"))
    params.ClientSignature = ua.SignatureData()
    return params


def mode_write(ns: int, value: str) -> ua.WriteParameters:
    """A Write of ``value`` to the unit's RequestedMode node."""
    params = ua.WriteParameters()
    params.NodesToWrite = [ua.WriteValue(NodeId=ua.NodeId(hmi_node_id(UNIT, "RequestedMode"), ns),
                                         AttributeId=ua.AttributeIds.Value,
                                         Value=ua.DataValue(ua.Variant(value, VT.String)))]
    return params


def mode_read(ns: int) -> ua.ReadParameters:
    """A Read of the unit's RequestedMode node."""
    params = ua.ReadParameters()
    params.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(hmi_node_id(UNIT, "RequestedMode"), ns),
                                         AttributeId=ua.AttributeIds.Value)]
    return params


def browse_objects() -> ua.BrowseParameters:
    """A Browse of the Objects folder."""
    params = ua.BrowseParameters()
    params.NodesToBrowse = [ua.BrowseDescription(NodeId=ua.NodeId(ua.ObjectIds.ObjectsFolder),
                                                 BrowseDirection=ua.BrowseDirection.Forward,
                                                 ResultMask=ua.BrowseResultMask.All)]
    return params


async def login(srv: HmiServer, pki: Pki, user: str, password: str, *, source: str = "127.0.0.1",
                cert: Path | None = None, key: Path | None = None) -> str:
    """One SignAndEncrypt login to ``srv`` from ``source`` (client certificate by default): 'Good' or the refusal."""
    return await hmi_clients.login(srv.endpoint_url, pki.server_cert, user, password, source=source,
                                   cert=cert or pki.client_cert, key=key or pki.client_key)


class LoopGaps:
    """A periodic coroutine on the event loop (as a unit's cycle would be); the largest gap between its ticks."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.max_gap_s = 0.0
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(self.period_s)
            now = time.perf_counter()
            self.max_gap_s = max(self.max_gap_s, now - last)
            self.ticks += 1
            last = now

    async def __aenter__(self) -> LoopGaps:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


def der_of(cert: Path) -> bytes:
    """DER bytes of a PEM certificate file."""
    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)


def events(audit: Audit, name: str, **match: Any) -> list[dict[str, Any]]:
    """Audit events called ``name`` whose fields start with the given values."""
    return [e for e in audit.events(name) if all(str(e.get(k, "")).startswith(v) for k, v in match.items())]


# --------------------------------------------------------------------------- Defect A: unsecured channels
def test_none_channel_serves_discovery_only_and_a_raw_client_cannot_write(pki: Pki) -> None:
    """Over a None channel only GetEndpoints/FindServers work; CreateSession, ActivateSession (even with a live
    session's token), Read, Write and Browse get BadSecurityPolicyRejected, the mode is unchanged, all audited."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    su.unit.request_mode(Mode.ON, who="test", where="test", utc=su.clock.utc())

    async def scenario() -> dict[str, str]:
        got: dict[str, str] = {}
        async with hmi(pki, su, audit) as srv, raw_channel(srv.endpoint_url) as uac:
            ns = srv.namespace_index
            endpoints = await uac.get_endpoints(ua.GetEndpointsParameters(EndpointUrl=srv.endpoint_url))
            assert [(e.SecurityPolicyUri.rsplit("#")[-1], e.SecurityMode) for e in endpoints] == [
                ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)]
            servers = await uac.find_servers(ua.FindServersParameters(EndpointUrl=srv.endpoint_url))
            assert [s.ApplicationUri for s in servers] == [SERVER_URI]
            got["CreateSession"] = await status_of(uac.create_session(session_params(srv.endpoint_url)))
            got["ActivateSession"] = await status_of(uac.activate_session(password_login("olga", PASSWORDS["olga"])))
            got["Write"] = await status_of(uac.write(mode_write(ns, "OFF")))
            got["Read"] = await status_of(uac.read(mode_read(ns)))
            got["Browse"] = await status_of(uac.browse(browse_objects()))
            # A session that olga opened properly: its token must not be usable over the None channel either.
            c = hmi_clients.FromAddress(srv.endpoint_url, "127.0.0.1")
            c.application_uri = application_uri_of(pki.client_cert)
            c.set_user("olga")
            c.set_password(PASSWORDS["olga"])
            await c.set_security(SecurityPolicyBasic256Sha256, str(pki.client_cert), str(pki.client_key),
                                 server_certificate=str(pki.server_cert))
            async with c:
                uac.session.restore_authentication_token(c.uaclient.session.authentication_token)
                got["ActivateSession with token"] = await status_of(
                    uac.activate_session(password_login("olga", PASSWORDS["olga"])))
                got["Write with token"] = await status_of(uac.write(mode_write(ns, "OFF")))
        return got

    got = asyncio.run(scenario())
    assert got == dict.fromkeys(got, "BadSecurityPolicyRejected") and len(got) == 7
    assert su.unit.modes.requested is Mode.ON
    refused = events(audit, "hmi_service_refused", where="hmi 127.0.0.1:", policy="None")
    assert [e["service"] for e in refused] == ["CreateSession", "ActivateSession", "Write", "Read", "Browse",
                                               "ActivateSession", "Write"]
    assert {e["status"] for e in refused} == {"BadSecurityPolicyRejected"}
    assert [e["who"] for e in audit.events("mode_request")] == ["test"], "only the set-up's own request"
    assert [e["where"].split()[1].split(":")[0] for e in audit.events("hmi_login")] == ["127.0.0.1"]  # olga's own


def test_sign_only_channel_is_refused_when_only_sign_and_encrypt_is_offered(pki: Pki) -> None:
    """A Basic256Sha256 Sign (not SignAndEncrypt) channel is refused at OpenSecureChannel (audited): no session."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)

    async def scenario() -> str:
        async with hmi(pki, su, audit) as srv:
            policy = await channel_policy(pki, pki.client_cert, pki.client_key, ua.MessageSecurityMode.Sign)
            try:
                async with raw_channel(srv.endpoint_url, policy, ua.MessageSecurityMode.Sign) as uac:
                    return await status_of(uac.create_session(
                        session_params(srv.endpoint_url, certificate=uacrypto.der_from_x509(policy.host_certificate))))
            except ua.UaStatusCodeError as exc:
                return f"open: {ua.StatusCode(exc.code).name}"

    assert asyncio.run(scenario()) == "open: BadSecurityPolicyRejected"
    (refused,) = audit.events("hmi_channel_refused")
    assert (refused["policy"], refused["mode"], refused["status"]) == ("Basic256Sha256", "Sign",
                                                                       "BadSecurityPolicyRejected")
    assert refused["where"].startswith("hmi 127.0.0.1:")
    assert audit.events("hmi_login") == [] and audit.events("hmi_login_refused") == []


def test_secure_session_must_present_its_own_channel_certificate(pki: Pki, tmp_path: Path) -> None:
    """An untrusted channel certificate cannot borrow a trusted one in CreateSession, nor omit it
    (BadCertificateInvalid)."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    evil_cert, evil_key = make_certificate(tmp_path, "evil", "urn:apc:test:client", ["localhost"])
    trusted_der = der_of(pki.client_cert)

    async def scenario() -> list[str]:
        out = []
        async with hmi(pki, su, audit) as srv:
            for presented in (trusted_der, None):
                policy = await channel_policy(pki, evil_cert, evil_key, ua.MessageSecurityMode.SignAndEncrypt)
                async with raw_channel(srv.endpoint_url, policy, ua.MessageSecurityMode.SignAndEncrypt) as uac:
                    out.append(await status_of(uac.create_session(session_params(
                        srv.endpoint_url, certificate=presented, app_uri="urn:apc:test:client"))))
        return out

    assert asyncio.run(scenario()) == ["BadCertificateInvalid", "BadCertificateInvalid"]
    assert [e["status"] for e in events(audit, "hmi_session_refused", where="hmi 127.0.0.1:")] == [
        "BadCertificateInvalid", "BadCertificateInvalid"]


def test_a_failed_activation_cannot_take_over_another_session(pki: Pki, tmp_path: Path) -> None:
    """A live session's (sequential) token used from another certificate is refused before any password check,
    and leaves nothing bound: the following Write is refused; a refused CreateSession cannot be activated."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    su.unit.request_mode(Mode.ON, who="test", where="test", utc=su.clock.utc())
    evil_cert, evil_key = make_certificate(tmp_path, "evil", "urn:apc:test:client", ["localhost"])
    anonymous = ua.ActivateSessionParameters()
    anonymous.UserIdentityToken = ua.AnonymousIdentityToken(PolicyId="anonymous")
    anonymous.ClientSignature = ua.SignatureData()

    async def scenario() -> dict[str, str]:
        got = {}
        sign_encrypt = ua.MessageSecurityMode.SignAndEncrypt
        async with hmi(pki, su, audit) as srv:
            victim = hmi_clients.FromAddress(srv.endpoint_url, "127.0.0.1")
            victim.application_uri = application_uri_of(pki.client_cert)
            victim.set_user("olga")
            victim.set_password(PASSWORDS["olga"])
            await victim.set_security(SecurityPolicyBasic256Sha256, str(pki.client_cert), str(pki.client_key),
                                      server_certificate=str(pki.server_cert))
            async with victim:
                token = victim.uaclient.session.authentication_token
                ns = srv.namespace_index
                for who, cert, key in (("untrusted", evil_cert, evil_key),
                                       ("other HMI", pki.other_cert, pki.other_key)):
                    policy = await channel_policy(pki, cert, key, sign_encrypt)
                    async with raw_channel(srv.endpoint_url, policy, sign_encrypt) as uac:
                        uac.session.restore_authentication_token(token)
                        got[f"{who}: activate"] = await status_of(uac.activate_session(anonymous))
                        got[f"{who}: activate as olga"] = await status_of(
                            uac.activate_session(password_login("olga", PASSWORDS["olga"])))
                        got[f"{who}: write"] = await status_of(uac.write(mode_write(ns, "OFF")))
                policy = await channel_policy(pki, evil_cert, evil_key, sign_encrypt)
                async with raw_channel(srv.endpoint_url, policy, sign_encrypt) as uac:
                    got["untrusted: create"] = await status_of(uac.create_session(session_params(
                        srv.endpoint_url, certificate=der_of(evil_cert), app_uri="urn:apc:test:client")))
                    got["untrusted: activate own"] = await status_of(
                        uac.activate_session(password_login("olga", PASSWORDS["olga"])))
                    got["untrusted: write own"] = await status_of(uac.write(mode_write(ns, "OFF")))
        return got

    assert asyncio.run(scenario()) == {
        "untrusted: activate": "BadSessionIdInvalid", "untrusted: activate as olga": "BadSessionIdInvalid",
        "untrusted: write": "BadUserAccessDenied",
        "other HMI: activate": "BadSessionIdInvalid", "other HMI: activate as olga": "BadSessionIdInvalid",
        "other HMI: write": "BadUserAccessDenied",
        "untrusted: create": "BadCertificateUntrusted", "untrusted: activate own": "BadSessionIdInvalid",
        "untrusted: write own": "BadUserAccessDenied"}
    assert su.unit.modes.requested is Mode.ON
    assert len(audit.events("hmi_login")) == 1 and audit.events("hmi_login_refused") == [], \
        "only the victim's own login: no password was checked for the others"
    assert [e["why"] for e in audit.events("hmi_session_refused")].count(
        "session was created on another certificate or security") == 4


def test_insecure_loopback_endpoint_still_serves_sessions_and_discovery(pki: Pki) -> None:
    """With allow_insecure_loopback on 127.0.0.1 a raw None-channel session logs in and writes (the demo's case)."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)

    async def scenario() -> None:
        srv = HmiServer({UNIT: su.unit}, load_users(pki.users), endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc",
                        cert_path=None, key_path=None, allow_insecure_loopback=True, audit=audit.logger,
                        clock_utc=su.clock.utc)
        async with srv, raw_channel(srv.endpoint_url) as uac:
            endpoints = await uac.get_endpoints(ua.GetEndpointsParameters(EndpointUrl=srv.endpoint_url))
            assert [e.SecurityMode for e in endpoints] == [ua.MessageSecurityMode.None_]
            assert await status_of(uac.create_session(session_params(srv.endpoint_url))) == "Good"
            assert await status_of(uac.activate_session(password_login("olga", PASSWORDS["olga"]))) == "Good"
            (status,) = await uac.write(mode_write(srv.namespace_index, "STANDBY"))
            assert status.is_good()

    asyncio.run(scenario())
    assert su.unit.modes.requested is Mode.STANDBY
    assert audit.events("hmi_service_refused") == []
    (ok,) = audit.events("hmi_login")
    assert ok["who"] == "olga" and ok["where"].startswith("hmi 127.0.0.1:")


def test_insecure_loopback_without_trust_list_trusts_no_client_certificate(pki: Pki) -> None:
    """With certificates but no trust list, allow_insecure_loopback starts; the secure endpoint trusts nobody."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    url = f"opc.tcp://127.0.0.1:{free_port()}/apc"
    with pytest.raises(HmiServerError, match="trusted_clients is required"):
        HmiServer({UNIT: su.unit}, load_users(pki.users), endpoint_url=url, cert_path=pki.server_cert,
                  key_path=pki.server_key, audit=audit.logger, clock_utc=su.clock.utc)

    async def scenario() -> tuple[str, str]:
        srv = HmiServer({UNIT: su.unit}, load_users(pki.users), endpoint_url=url, cert_path=pki.server_cert,
                        key_path=pki.server_key, allow_insecure_loopback=True, audit=audit.logger,
                        clock_utc=su.clock.utc)
        async with srv, raw_channel(srv.endpoint_url) as uac:
            secure = await login(srv, pki, "olga", PASSWORDS["olga"])
            await uac.create_session(session_params(srv.endpoint_url))
            return secure, await status_of(uac.activate_session(password_login("olga", PASSWORDS["olga"])))

    assert asyncio.run(scenario()) == ("BadCertificateUntrusted", "Good")


def test_server_refuses_to_start_when_asyncua_hook_points_change(pki: Pki,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Another asyncua series, or a hooked method with another signature, stops the start (never unguarded)."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)

    async def start() -> None:
        async with hmi(pki, su, audit):
            pass

    monkeypatch.setattr(asyncua, "__version__", "2.2.0")
    with pytest.raises(HmiServerError, match=r"unprotected: asyncua 2.2.0"):
        asyncio.run(start())
    monkeypatch.undo()

    async def changed(self: Any, typeid: Any, body: Any) -> bool:
        return True

    monkeypatch.setattr(UaProcessor, "_process_message", changed)
    with pytest.raises(HmiServerError, match=r"unprotected: asyncua UaProcessor._process_message"):
        asyncio.run(start())
    assert audit.events("hmi_server_started") == []


# --------------------------------------------------------------------------- Defect B: logins
@pytest.fixture(scope="module")
def costly_users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A users file whose hash has the largest accepted scrypt cost (N=2^15, r=8: ~100 ms per check)."""
    path = tmp_path_factory.mktemp("costly") / "users.yaml"
    add_user(path, "olga", "operator", PASSWORDS["olga"], n=2**15)
    return path


def test_login_flood_from_one_peer_neither_delays_another_peer_nor_stalls_the_loop(pki: Pki,
                                                                                    costly_users: Path) -> None:
    """40 wrong logins from one peer: another peer's correct login succeeds at its first try, the flood costs
    at most free_failures + 1 scrypt checks, and a periodic task on the loop never waits 3/4 of one check."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    clock = FakeMonotonic()
    throttle = LoginThrottle(monotonic=clock)
    pool = PasswordPool()
    users = load_users(costly_users)
    account = users.get("olga")
    assert account is not None
    check_s = time.perf_counter()
    assert verify_password(PASSWORDS["olga"], account.password_hash)
    check_s = time.perf_counter() - check_s  # one check's cost, here and now (what the old code spent on the loop)

    async def scenario() -> tuple[list[str], str, float]:
        srv = HmiServer({UNIT: su.unit}, users, endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc",
                        cert_path=pki.server_cert, key_path=pki.server_key, trusted_clients=pki.trusted,
                        audit=audit.logger, clock_utc=su.clock.utc, throttle=throttle, password_pool=pool)
        spec = hmi_clients.Flood(
            url=srv.endpoint_url, server_cert=str(pki.server_cert), user="olga", source=OUTSIDER,
            cert=str(pki.other_cert), key=str(pki.other_key), operator_password=PASSWORDS["olga"],
            operator_cert=str(pki.client_cert), operator_key=str(pki.client_key),
            operator_read=(HMI_NAMESPACE, hmi_node_id(UNIT, "RequestedMode")), waves=10, per_wave=4)
        async with srv:  # the clients run in another process, as on another host
            proc = await hmi_clients.start_flood(spec, Path(__file__).resolve().parents[1])  # noqa: ASYNC240
            async with LoopGaps(0.005) as gaps:
                result = await hmi_clients.flood_outcome(proc)
        return result["flood"], result["operator"], gaps.max_gap_s

    flooded, ok, max_gap_s = asyncio.run(scenario())
    assert len(flooded) == 40 and set(flooded) == {"BadUserAccessDenied"}, flooded
    assert ok == "Good", ok
    # the outsider's checks: its free failures plus the one that blocks it; plus the operator's own
    assert pool.checks_run <= throttle.free_failures + 1 + 1
    assert throttle.blocked_s(f"peer {OUTSIDER}") > 0 and throttle.blocked_s("peer 127.0.0.1") == 0
    mine = [e for e in audit.events("hmi_login_refused") + audit.events("hmi_login")
            if e["where"].startswith("hmi 127.0.0.1:")]
    assert [e["event"] for e in mine] == ["hmi_login"], "the operator's first attempt got in"
    assert len(events(audit, "hmi_login_refused", where=f"hmi {OUTSIDER}:")) == 40
    print(f"largest loop gap {max_gap_s * 1e3:.1f} ms; one scrypt check {check_s * 1e3:.0f} ms")
    # The old code ran each check on the loop: every admitted guess stalled it for a whole check_s.
    assert max_gap_s < 0.75 * check_s, f"loop stalled {max_gap_s * 1e3:.0f} ms (one check: {check_s * 1e3:.0f} ms)"


def test_outsider_cannot_lock_out_a_named_user(pki: Pki) -> None:
    """Wrong guesses as olga from one peer slow that peer and its certificate only; olga elsewhere logs in at once."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    clock = FakeMonotonic()
    throttle = LoginThrottle(monotonic=clock, free_failures=3, first_delay_s=1.0, max_delay_s=30.0)
    other = {"cert": pki.other_cert, "key": pki.other_key}

    async def scenario() -> None:
        async with hmi(pki, su, audit, throttle=throttle) as srv:
            guesses = [await login(srv, pki, "olga", f"guess-{i}-xyzzy", source=OUTSIDER, **other) for i in range(20)]
            assert set(guesses) == {"BadUserAccessDenied"}
            assert await login(srv, pki, "olga", PASSWORDS["olga"]) == "Good"           # olga, her peer: at once
            assert await login(srv, pki, "olga", PASSWORDS["olga"], source=OUTSIDER, **other) == "BadUserAccessDenied"
            assert await login(srv, pki, "olga", PASSWORDS["olga"], source="127.0.0.3", **other) \
                == "BadUserAccessDenied", "the outsider's certificate is slowed from any address"
            clock.now_s += throttle.max_delay_s
            assert await login(srv, pki, "olga", PASSWORDS["olga"], source=OUTSIDER, **other) == "Good"

    asyncio.run(scenario())
    refused = events(audit, "hmi_login_refused", where=f"hmi {OUTSIDER}:")
    assert sum(e["why"] == "wrong user name or password" for e in refused) == throttle.free_failures + 1
    assert all("failed logins" in e["why"] for e in refused if e["why"] != "wrong user name or password")
    thumb = certificate_thumbprint(der_of(pki.other_cert))
    assert any(thumb in e["why"] for e in events(audit, "hmi_login_refused", where="hmi 127.0.0.3:"))
    assert [e["where"].split()[1].split(":")[0] for e in audit.events("hmi_login")] == ["127.0.0.1", OUTSIDER]


def test_password_checks_beyond_the_pool_bound_are_refused_at_once(pki: Pki, tmp_path: Path) -> None:
    """With every pool slot busy, one more login is refused at once with BadTooManyOperations (audited)."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    release = threading.Event()
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    certs = {}
    for name in ("olga", "vic", "erin"):  # one certificate and one source address per login
        certs[name] = make_certificate(tmp_path, name, f"urn:apc:test:{name}", ["localhost"])
        shutil.copy(certs[name][0], trusted)

    async def scenario() -> tuple[str, str, str]:
        loop = asyncio.get_running_loop()
        entered: asyncio.Queue[None] = asyncio.Queue()

        def held_verify(password: str, encoded: str) -> bool:
            loop.call_soon_threadsafe(entered.put_nowait, None)
            release.wait(timeout=10)
            return verify_password(password, encoded)

        def attempt(user: str, source: str) -> Awaitable[str]:
            cert, key = certs[user]
            return login(srv, pki, user, PASSWORDS[user], source=source, cert=cert, key=key)

        pool = PasswordPool(workers=2, max_pending=2, verify=held_verify)
        async with hmi(pki, su, audit, trusted_clients=trusted, password_pool=pool) as srv:
            first = asyncio.create_task(attempt("olga", "127.0.0.2"))
            second = asyncio.create_task(attempt("vic", "127.0.0.3"))
            async with asyncio.timeout(10):  # a guard against a hang, not a synchronisation
                await entered.get()
                await entered.get()
            assert pool.pending == 2
            third = await attempt("erin", "127.0.0.4")
            release.set()
            return await first, await second, third

    try:
        assert asyncio.run(scenario()) == ("Good", "Good", "BadTooManyOperations")
    finally:
        release.set()
    (busy,) = events(audit, "hmi_login_refused", where="hmi 127.0.0.4:")
    assert busy["status"] == "BadTooManyOperations" and busy["who"] == "erin"


def test_throttle_memory_is_a_bounded_lru_of_failing_sources() -> None:
    """Only failing sources are kept, at most max_sources of them; the least recently seen one is dropped."""
    clock = FakeMonotonic()
    throttle = LoginThrottle(monotonic=clock, free_failures=0, max_sources=3)
    for i in range(5):
        key = (f"peer 10.0.0.{i}",)
        assert throttle.admit(key) == ""
        throttle.finish(key, ok=False)
    assert len(throttle) == 3
    assert [throttle.blocked_s(f"peer 10.0.0.{i}") > 0 for i in range(5)] == [False, False, True, True, True]
    assert throttle.admit(("peer 10.0.0.9",)) == ""
    assert throttle.admit(("peer 10.0.0.9",)) != "", "one check per source at a time"
    throttle.finish(("peer 10.0.0.9",), ok=True)
    assert len(throttle) == 3 and throttle.blocked_s("peer 10.0.0.2") > 0, "a success leaves nothing behind"


def test_users_file_with_excessive_scrypt_cost_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    """A hash above N*r*p = 2^15*8 is refused at load (file:line) and cannot be made by hash_password/add_user."""
    salt, digest = base64.b64encode(RNG.randbytes(16)).decode(), base64.b64encode(RNG.randbytes(32)).decode()
    ok = hash_password("a-long-password", n=2**15, r=8)
    users = _write_private(tmp_path / "users.yaml", (
        "users:\n"
        f"  olga: {{role: operator, password: '{ok}'}}\n"
        f"  bob: {{role: viewer, password: 'scrypt$65536$8$1${salt}${digest}'}}\n"
        f"  eve: {{role: viewer, password: 'scrypt$16384$8$4${salt}${digest}'}}\n"))
    with pytest.raises(UsersFileError) as err:
        load_users(users)
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{users}:3: user 'bob': scrypt cost N*r*p = 65536*8*1 is above the bound")
    assert lines[1].startswith(f"{users}:4: user 'eve': scrypt cost N*r*p = 16384*8*4 is above the bound")
    assert MAX_SCRYPT_COST == 2**15 * 8
    with pytest.raises(ValueError, match="above the bound"):
        hash_password("a-long-password", n=2**16)
    with pytest.raises(ValueError, match="above the bound"):
        add_user(tmp_path / "new.yaml", "vic", "viewer", "a-long-password", n=2**16)
    assert not (tmp_path / "new.yaml").exists()


def test_trust_list_is_reloaded_without_a_restart(pki: Pki, tmp_path: Path) -> None:
    """A certificate copied into trusted_clients is accepted by the running server, a removed one refused; audited."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "other_cert.pem").write_bytes(pki.other_cert.read_bytes())

    async def scenario() -> list[str]:
        async with hmi(pki, su, audit, trusted_clients=trusted) as srv:
            out = [await login(srv, pki, "olga", PASSWORDS["olga"])]
            shutil.copy(pki.client_cert, trusted / "olga.pem")
            out.append(await login(srv, pki, "olga", PASSWORDS["olga"]))
            (trusted / "olga.pem").unlink()
            out.append(await login(srv, pki, "olga", PASSWORDS["olga"]))
            return out

    assert asyncio.run(scenario()) == ["BadCertificateUntrusted", "Good", "BadCertificateUntrusted"]
    thumb = certificate_thumbprint(der_of(pki.client_cert))
    reloads = audit.events("hmi_trust_list_reloaded")
    assert [(e["added"], e["removed"]) for e in reloads] == [([thumb], []), ([], [thumb])]
    assert all(e["where"] == str(trusted) for e in reloads)


# --------------------------------------------------------------------------- Defect C: port in use
def test_run_with_the_hmi_port_taken_prints_one_line_and_fails(pki: Pki, tmp_path: Path) -> None:
    """`apc run` whose HMI port is already bound on loopback exits 1 with one 'error: ... already in use' line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"opc.tcp://127.0.0.1:{port}/apc/hmi"
        site = tmp_path / "site.yaml"
        site.write_text(
            "schema_version: 1\nsite: t\nspeed: 1\n"
            f"hmi:\n  endpoint_url: {url}\n  certificate: {pki.server_cert}\n  private_key: {pki.server_key}\n"
            f"  users: {pki.users}\n  trusted_clients: {pki.trusted}\n"
            f"units:\n  - {{name: a, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 1}}}}\n")
        run = subprocess.run([sys.executable, "-m", "apc.cli", "run", str(site), "--hours", "0.01",
                              "--record-dir", str(tmp_path / "rec")], capture_output=True, text=True, timeout=120,
                             check=False, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 1
    assert run.stderr.splitlines() == [f"error: HMI endpoint {url}: port {port} already in use"]
