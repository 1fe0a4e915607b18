"""The HMI OPC UA server against real asyncua clients on loopback, with real simulated Units."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from apc.audit import make_logger
from apc.hmi.certs import application_uri_of, make_certificate
from apc.hmi.cli import add_subcommands
from apc.hmi.client_cmds import HmiClientError, HmiCredentials, load_credentials, read_status, request_mode
from apc.hmi.server import HMI_NAMESPACE, HmiServer, HmiServerError, hmi_node_id
from apc.hmi.users import Role, UsersFileError, add_user, load_users, verify_password
from apc.types import Mode
from tests.helpers.loopback_servers import free_port
from tests.helpers.sim_harness import SimUnit, is_on, move_writes

UNIT = "cell-t"
SERVER_URI = "urn:apc:test:hmi"
PASSWORDS = {"olga": "operator-secret", "vic": "viewer-secret", "erin": "engineer-secret"}
ROLES = {"olga": "operator", "vic": "viewer", "erin": "engineer"}
VT = ua.VariantType


@dataclass(frozen=True)
class Pki:
    """Certificates, users file and per-user credentials files made once for the module."""

    dir: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path
    other_key: Path
    users: Path
    trusted: Path
    """Trust list holding the client and other certificates."""

    def creds(self, user: str, password: str | None = None, *, cert: Path | None = None,
              key: Path | None = None) -> HmiCredentials:
        return HmiCredentials(user, PASSWORDS[user] if password is None else password,
                              cert or self.client_cert, key or self.client_key, self.server_cert)


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("hmi")
    sc, sk = make_certificate(d, "server", SERVER_URI, ["localhost", "127.0.0.1"])
    cc, ck = make_certificate(d, "client", "urn:apc:test:client", ["localhost"])
    oc, ok = make_certificate(d, "other", "urn:apc:test:other", ["localhost"])
    trusted = d / "trusted"
    trusted.mkdir()
    for cert in (cc, oc):
        (trusted / cert.name).write_bytes(cert.read_bytes())
    users = d / "users.yaml"
    for name, pw in PASSWORDS.items():
        add_user(users, name, ROLES[name], pw, n=2**10)  # cheap hashes keep the tests fast
    for name in PASSWORDS:
        _write_private(d / f"{name}.yaml", yaml.safe_dump({
            "username": name, "password": PASSWORDS[name], "client_cert": "client_cert.pem",
            "client_key": "client_key.pem", "server_cert": "server_cert.pem"}))
    return Pki(d, sc, sk, cc, ck, oc, ok, users, trusted)


class Audit:
    """An audit logger writing JSON lines to memory, and the events it logged."""

    def __init__(self) -> None:
        self.buf = io.StringIO()
        self.logger = make_logger(self.buf)

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.buf.getvalue().splitlines() if line]
        return [e for e in lines if e["event"] == name]


@asynccontextmanager
async def hmi(pki: Pki, su: SimUnit, audit: Audit, **kw: Any) -> AsyncIterator[HmiServer]:
    """A running HMI server for ``su`` on a free loopback port (trusting ``pki.trusted`` unless told)."""
    kw.setdefault("trusted_clients", pki.trusted)
    srv = HmiServer({UNIT: su.unit}, load_users(pki.users), endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc",
                    cert_path=pki.server_cert, key_path=pki.server_key, audit=audit.logger,
                    clock_utc=su.clock.utc, **kw)
    async with srv:
        yield srv


@asynccontextmanager
async def session(srv: HmiServer, creds: HmiCredentials) -> AsyncIterator[tuple[Client, int]]:
    """A raw asyncua SignAndEncrypt session (for writes the CLI functions do not make)."""
    c = Client(srv.endpoint_url, timeout=3)
    c.application_uri = application_uri_of(creds.client_cert)  # type: ignore[arg-type]
    c.set_user(creds.username)
    c.set_password(creds.password)
    await c.set_security(SecurityPolicyBasic256Sha256, str(creds.client_cert), str(creds.client_key),
                         server_certificate=str(creds.server_cert))
    async with c:
        yield c, await c.get_namespace_index(HMI_NAMESPACE)


async def write(c: Client, ns: int, path: tuple[str, ...], value: Any, vtype: ua.VariantType) -> str:
    """Write one typed value; the status code's name."""
    nid = ua.NodeId(hmi_node_id(UNIT, *path), ns)
    (status,) = await c.uaclient.write_attributes([nid], [ua.DataValue(ua.Variant(value, vtype))],
                                                  ua.AttributeIds.Value)
    return str(status.name)


async def read(c: Client, ns: int, *path: str) -> Any:
    """Read one HMI node's value."""
    return await c.get_node(ua.NodeId(hmi_node_id(UNIT, *path), ns)).read_value()


def test_operator_switches_unit_on_and_off_through_the_server(pki: Pki) -> None:
    """Operator ON reaches the Unit (audited as the user), cycles write, HMI shows ON and heartbeat; OFF stops them."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    recipe = su.recipe

    async def scenario() -> None:
        async with hmi(pki, su, audit) as srv:
            await srv.publish(UNIT, su.step()[0])
            requested, actual = await request_mode(srv.endpoint_url, pki.creds("olga"), UNIT, "ON", timeout_s=3)
            assert (requested, actual) == ("ON", "OFF")
            assert su.unit.modes.requested is Mode.ON
            (req,) = audit.events("mode_request")
            assert (req["who"], req["new"], req["unit"]) == ("olga", "ON", UNIT)
            assert req["where"].startswith("hmi 127.0.0.1:") and "urn:apc:test:client" in req["where"]
            rec = su.run_until(is_on, 1000)
            rec = su.step()[0]
            assert move_writes(rec, recipe), "ON cycles write setpoints"
            await srv.publish(UNIT, rec)
            async with session(srv, pki.creds("vic")) as (c, ns):
                assert await read(c, ns, "ActualMode") == "ON"
                assert await read(c, ns, "Heartbeat") == rec.k
                assert await read(c, ns, "MVs", "oxide_feed", "Value") == pytest.approx(rec.readback["oxide_feed"])
                state = rec.estimate.names[0]
                sigma = await read(c, ns, "Estimate", state, "Sigma")
                assert sigma == pytest.approx(math.sqrt(rec.estimate.P_diag[0]))
            await request_mode(srv.endpoint_url, pki.creds("olga"), UNIT, Mode.OFF, timeout_s=3)
            off = su.step(2)
            assert su.unit.modes.actual is Mode.OFF
            assert [move_writes(r, recipe) for r in off] == [[], []]
            await srv.publish(UNIT, off[-1])
            units = await read_status(srv.endpoint_url, pki.creds("vic"), timeout_s=3)
            assert [(u.name, u.requested, u.actual, u.heartbeat) for u in units] == [(UNIT, "OFF", "OFF", off[-1].k)]
            assert {m.name for m in units[0].mvs} == set(su.unit.mvs)

    asyncio.run(scenario())


def test_wrong_password_anonymous_and_unsecured_clients_are_refused(pki: Pki) -> None:
    """A wrong password gives BadUserAccessDenied (audited); anonymous and no-security sessions get nowhere."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)

    async def scenario() -> None:
        async with hmi(pki, su, audit) as srv:
            with pytest.raises(HmiClientError, match="BadUserAccessDenied"):
                await request_mode(srv.endpoint_url, pki.creds("olga", "guess-1234"), UNIT, "ON", timeout_s=3)
            anon = Client(srv.endpoint_url, timeout=2)
            anon.application_uri = "urn:apc:test:client"
            await anon.set_security(SecurityPolicyBasic256Sha256, str(pki.client_cert), str(pki.client_key),
                                    server_certificate=str(pki.server_cert))
            with pytest.raises(ua.UaStatusCodeError) as anon_err:
                await anon.connect()
            await anon.disconnect()
            assert anon_err.value.code == ua.StatusCodes.BadIdentityTokenRejected
            with pytest.raises(HmiClientError, match="BadSecurityPolicyRejected"):  # the server refuses it
                await request_mode(srv.endpoint_url, pki.creds("olga"), UNIT, "ON", insecure_loopback=True,
                                   timeout_s=2)
            endpoints = await srv._server.get_endpoints()  # type: ignore[union-attr]
            assert [(e.SecurityPolicyUri.rsplit("#")[-1], e.SecurityMode) for e in endpoints] == [
                ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)]
        assert su.unit.modes.requested is Mode.OFF
        refused = audit.events("hmi_login_refused")
        assert ("olga", "wrong user name or password") in {(e["who"], e["why"]) for e in refused}

    asyncio.run(scenario())


def test_viewer_writes_are_denied_and_change_nothing(pki: Pki) -> None:
    """A viewer gets BadUserAccessDenied on mode, Enabled and limit nodes; the Unit is unchanged; refusals audited."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    limits_before = su.unit.mvs["oxide_feed"].limits

    async def scenario() -> None:
        async with hmi(pki, su, audit) as srv, session(srv, pki.creds("vic")) as (c, ns):
            assert await write(c, ns, ("RequestedMode",), "ON", VT.String) == "BadUserAccessDenied"
            assert await write(c, ns, ("MVs", "oxide_feed", "Enabled"), False, VT.Boolean) == "BadUserAccessDenied"
            assert await write(c, ns, ("MVs", "oxide_feed", "OperatorHigh"), 10.0, VT.Double) == "BadUserAccessDenied"
            assert await read(c, ns, "RequestedMode") == "OFF"
            server_status = c.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_BuildInfo_ProductName))
            with pytest.raises(ua.UaStatusCodeError):
                await server_status.write_value(ua.DataValue(ua.Variant("pwned", VT.String)))
    asyncio.run(scenario())
    assert su.unit.modes.requested is Mode.OFF and su.unit.mvs["oxide_feed"].enabled
    assert su.unit.mvs["oxide_feed"].limits == limits_before
    refused = audit.events("hmi_write_refused")
    assert [(e["who"], e["what"], e["status"]) for e in refused[:3]] == [
        ("vic", f"{UNIT}.RequestedMode", "BadUserAccessDenied"),
        ("vic", f"{UNIT}.MVs.oxide_feed.Enabled", "BadUserAccessDenied"),
        ("vic", f"{UNIT}.MVs.oxide_feed.OperatorHigh", "BadUserAccessDenied")]
    assert audit.events("mode_request") == [] and audit.events("mv_enable") == []


def test_operator_limits_and_values_are_validated(pki: Pki) -> None:
    """Limits outside engineering or low > high: BadOutOfRange; wrong types: BadTypeMismatch; a valid pair applies."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    mv = su.unit.mvs["oxide_feed"]
    assert mv.limits.engineering == (0, 25) and mv.limits.operator == (0, 20)

    async def scenario() -> None:
        async with hmi(pki, su, audit) as srv, session(srv, pki.creds("olga")) as (c, ns):
            lim = ("MVs", "oxide_feed")
            assert await write(c, ns, (*lim, "OperatorLow"), -1.0, VT.Double) == "BadOutOfRange"
            assert await write(c, ns, (*lim, "OperatorHigh"), 26.0, VT.Double) == "BadOutOfRange"
            assert await write(c, ns, (*lim, "OperatorHigh"), math.nan, VT.Double) == "BadOutOfRange"
            assert await write(c, ns, (*lim, "OperatorLow"), 21.0, VT.Double) == "BadOutOfRange"  # above high (20)
            assert await write(c, ns, (*lim, "OperatorLow"), 3, VT.Int64) == "BadTypeMismatch"
            assert await write(c, ns, ("RequestedMode",), "AUTO", VT.String) == "BadOutOfRange"
            assert await write(c, ns, ("RequestedMode",), 1, VT.Int32) == "BadTypeMismatch"
            assert await write(c, ns, (*lim, "EngineeringHigh"), 30.0, VT.Double) == "BadNotWritable"
            assert mv.limits.operator == (0, 20) and su.unit.modes.requested is Mode.OFF
            # Both limits in one request move together, even past the old range.
            ids = [ua.NodeId(hmi_node_id(UNIT, *lim, k), ns) for k in ("OperatorLow", "OperatorHigh")]
            values = [ua.DataValue(ua.Variant(22.0, VT.Double)), ua.DataValue(ua.Variant(24.5, VT.Double))]
            statuses = await c.uaclient.write_attributes(ids, values, ua.AttributeIds.Value)
            assert [s.name for s in statuses] == ["Good", "Good"]
            assert mv.limits.operator == (22.0, 24.5)
            assert await read(c, ns, *lim, "OperatorLow") == 22.0
            await srv.update_batch(UNIT, {"State": "melting", "Segment": "S2", "Progress": 0.5})
            assert await read(c, ns, "Batch", "State") == "melting"
            assert await read(c, ns, "Batch", "Progress") == 0.5
    asyncio.run(scenario())
    (event,) = audit.events("operator_limits")
    assert (event["who"], event["mv"], event["old"], event["new"]) == ("olga", "oxide_feed", [0, 20], [22.0, 24.5])
    statuses = [e["status"] for e in audit.events("hmi_write_refused")]
    assert statuses == ["BadOutOfRange"] * 4 + ["BadTypeMismatch", "BadOutOfRange", "BadTypeMismatch",
                                                 "BadNotWritable"]


def test_operator_disables_an_mv_and_it_is_no_longer_written(pki: Pki) -> None:
    """Enabled=False goes through set_mv_enabled (audited with the user); the MV's setpoint is no longer written."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    feed_tag = su.recipe.io.mvs["oxide_feed"].tag

    async def scenario() -> None:
        async with hmi(pki, su, audit) as srv, session(srv, pki.creds("erin")) as (c, ns):
            assert await write(c, ns, ("RequestedMode",), "ON", VT.String) == "Good"
            su.run_until(is_on, 1000)
            assert feed_tag in {t for t, _ in move_writes(su.step()[0], su.recipe)}
            assert await write(c, ns, ("MVs", "oxide_feed", "Enabled"), False, VT.Boolean) == "Good"
            assert su.unit.mvs["oxide_feed"].enabled is False
            assert await read(c, ns, "MVs", "oxide_feed", "Enabled") is False
            recs = su.step(3)
            assert all(is_on(r) for r in recs)
            assert not any(t == feed_tag for r in recs for t, _ in move_writes(r, su.recipe))
    asyncio.run(scenario())
    (event,) = audit.events("mv_enable")
    assert (event["who"], event["mv"], event["old"], event["new"]) == ("erin", "oxide_feed", True, False)


def test_insecure_endpoint_only_on_loopback_and_still_needs_a_password(pki: Pki) -> None:
    """allow_insecure_loopback refuses a non-loopback host; on 127.0.0.1 it serves username logins without security."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)
    users = load_users(pki.users)
    for host in ("0.0.0.0", "192.168.1.10", "plant-hmi"):
        with pytest.raises(HmiServerError, match="loopback"):
            HmiServer({UNIT: su.unit}, users, endpoint_url=f"opc.tcp://{host}:4840/apc", cert_path=None,
                      key_path=None, allow_insecure_loopback=True, audit=audit.logger, clock_utc=su.clock.utc)
    with pytest.raises(HmiServerError, match="cert_path"):
        HmiServer({UNIT: su.unit}, users, endpoint_url="opc.tcp://127.0.0.1:4840/apc", cert_path=None,
                  key_path=None, audit=audit.logger, clock_utc=su.clock.utc)

    async def scenario() -> None:
        srv = HmiServer({UNIT: su.unit}, users, endpoint_url=f"opc.tcp://127.0.0.1:{free_port()}/apc",
                        cert_path=None, key_path=None, allow_insecure_loopback=True, audit=audit.logger,
                        clock_utc=su.clock.utc)
        async with srv:
            creds = HmiCredentials("olga", PASSWORDS["olga"])
            with pytest.raises(HmiClientError, match="BadUserAccessDenied"):
                await request_mode(srv.endpoint_url, HmiCredentials("olga", "nope-nope-1"), UNIT, "STANDBY",
                                   insecure_loopback=True, timeout_s=2)
            assert await request_mode(srv.endpoint_url, creds, UNIT, "STANDBY", insecure_loopback=True,
                                      timeout_s=2) == ("STANDBY", "OFF")
    asyncio.run(scenario())
    assert su.unit.modes.requested is Mode.STANDBY


def test_untrusted_client_certificate_is_refused_with_a_trust_list(pki: Pki, tmp_path: Path) -> None:
    """With trusted_clients set, only certificates in that directory may open a session."""
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "client_cert.pem").write_bytes(pki.client_cert.read_bytes())
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)

    async def scenario() -> None:
        async with hmi(pki, su, audit, trusted_clients=trusted) as srv:
            other = pki.creds("olga", cert=pki.other_cert, key=pki.other_key)
            with pytest.raises(HmiClientError, match="BadCertificateUntrusted"):
                await request_mode(srv.endpoint_url, other, UNIT, "ON", timeout_s=2)
            assert su.unit.modes.requested is Mode.OFF
            await request_mode(srv.endpoint_url, pki.creds("olga"), UNIT, "ON", timeout_s=3)
            assert su.unit.modes.requested is Mode.ON
    asyncio.run(scenario())


def test_users_file_must_be_private_and_well_formed(pki: Pki, tmp_path: Path) -> None:
    """A users file readable by group/others is refused; bad entries are reported with file:line."""
    users = tmp_path / "users.yaml"
    users.write_text(pki.users.read_text())
    users.chmod(0o640)
    with pytest.raises(UsersFileError, match="chmod 600"):
        load_users(users)
    users.chmod(0o600)
    db = load_users(users)
    assert db.get("vic").role is Role.VIEWER and verify_password("viewer-secret", db.get("vic").password_hash)
    assert "viewer-secret" not in users.read_text()
    bad = _write_private(tmp_path / "bad.yaml",
                         "users:\n  ann: {role: admin, password: 'x'}\n  bob: {role: operator, password: plain}\n")
    with pytest.raises(UsersFileError) as err:
        load_users(bad)
    assert f"{bad}:2: user 'ann': role must be one of" in str(err.value)
    assert f"{bad}:3: user 'bob': password must be" in str(err.value)
    creds = tmp_path / "creds.yaml"
    creds.write_text("username: olga\npassword: x\n")
    creds.chmod(0o644)
    with pytest.raises(HmiClientError, match="group/others"):
        load_credentials(creds)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="apc")
    add_subcommands(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cert_and_user_commands_write_private_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`apc hmi-cert` writes a SAN-URI certificate and a 0600 .pem key; `apc hmi-user` a 0600 hashed users file."""
    out = tmp_path / "pki"
    assert _cli(["hmi-cert", "--out", str(out), "--uri", "urn:site:apc:hmi", "--host", "hmi.plant"]) == 0
    key = out / "hmi_server_key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert application_uri_of(out / "hmi_server_cert.pem") == "urn:site:apc:hmi"
    assert _cli(["hmi-cert", "--out", str(out), "--uri", "urn:site:apc:hmi"]) == 1, "no silent overwrite"
    users = tmp_path / "users.yaml"
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert _cli(["hmi-user", "--users", str(users), "--name", "olga", "--role", "operator"]) == 0
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    account = load_users(users).get("olga")
    assert account is not None and account.role is Role.OPERATOR
    assert verify_password("a-long-password", account.password_hash)
    assert not verify_password("a-long-passwore", account.password_hash)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert _cli(["hmi-user", "--users", str(users), "--name", "vic", "--role", "viewer"]) == 1


def test_mode_and_status_commands_against_the_server(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    """`apc mode` and `apc status` (run as the CLI would, from another thread) act on and show the unit."""
    audit = Audit()
    su = SimUnit(audit=audit.logger, name=UNIT)

    async def scenario() -> None:
        async with hmi(pki, su, audit) as srv:
            await srv.publish(UNIT, su.step()[0])
            url = srv.endpoint_url
            creds = str(pki.dir / "olga.yaml")
            assert await asyncio.to_thread(_cli, ["mode", UNIT, "STANDBY", "--endpoint", url,
                                                 "--credentials", creds]) == 0
            assert su.unit.modes.requested is Mode.STANDBY
            await srv.publish(UNIT, su.step()[0])
            assert await asyncio.to_thread(_cli, ["status", "--endpoint", url, "--credentials",
                                                  str(pki.dir / "vic.yaml")]) == 0
            assert await asyncio.to_thread(_cli, ["mode", UNIT, "ON", "--endpoint", url, "--credentials",
                                                  str(pki.dir / "vic.yaml")]) == 1
            assert await asyncio.to_thread(_cli, ["mode", "no-such-unit", "ON", "--endpoint", url,
                                                  "--credentials", creds]) == 1
    asyncio.run(scenario())
    out, err = capsys.readouterr()
    assert f"{UNIT}: requested STANDBY (actual OFF)" in out
    assert f"{UNIT}: requested STANDBY, actual" in out and "heartbeat 1" in out
    assert "oxide_feed" in out and "operator [0, 20]" in out
    assert "mode request refused: BadUserAccessDenied" in err
    assert "'no-such-unit' is not served" in err
    assert su.unit.modes.requested is Mode.STANDBY
