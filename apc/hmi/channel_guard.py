"""Per-message security checks of the HMI server, hooked into asyncua 2.1's binary server.

asyncua opens a SecurityPolicy#None channel even when no None endpoint is
offered, and then serves every service over it: a raw client could create and
activate a session there (password in clear) and write. This module installs,
through the binary server's protocol factory, a :class:`GuardedProcessor` (a
``UaProcessor`` subclass) on every connection. Before dispatch it checks the
channel's security policy URI and mode against what the server offers:

* OpenSecureChannel with a policy/mode pair that is not offered (e.g.
  Basic256Sha256 Sign when only SignAndEncrypt is) is answered with an
  ``Error`` message ``BadSecurityPolicyRejected`` and the connection closed.
  A None channel may open, for discovery only.
* Over a channel that is not one of the offered secure ones, only
  GetEndpoints and FindServers are served. Every other service gets
  ``BadSecurityPolicyRejected`` (``BadSecurityModeInsufficient`` when only
  the mode is wrong), unless the server was built with
  ``insecure_loopback`` *and* the peer address is loopback.
* CreateSession over a secure channel must carry the channel's own client
  certificate (else asyncua would validate another, or none at all). A
  refused CreateSession leaves no half-made session on the channel.
* ActivateSession of a session created on another channel (asyncua's
  reconnect path, found by its authentication token, which asyncua numbers
  sequentially) needs the same client certificate and security as at its
  creation; and a failed ActivateSession never leaves another session bound
  to the channel (asyncua binds it before checking the client signature).
* ActivateSession with a username token: the token is decrypted here and the
  password checked by :class:`~apc.hmi.login.LoginGate` off the event loop;
  asyncua's ``get_user`` then only consumes the verdict.

Every refusal is audited (``hmi_channel_refused``, ``hmi_service_refused``,
``hmi_session_refused``) with the peer address and the service. A channel
is closed after ``max_refusals_per_channel`` refused requests.

:func:`check_hook_points` verifies that the asyncua internals used here
exist with the expected signatures; :class:`GuardedServer` calls it at start
and refuses to start otherwise, rather than run unprotected.
"""

from __future__ import annotations

import contextvars
import inspect
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import asyncua
from asyncua import Server, ua
from asyncua.common.connection import SecureConnection
from asyncua.common.utils import ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyNone
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.internal_server import InternalServer
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary, uatcp_to_binary

from apc.hmi.login import LoginGate, LoginSource, LoginVerdict, certificate_thumbprint, client_uri
from plant_io.ua_values import error_message, node_id, status_code

__all__ = ["REQUEST_USER", "ChannelGuard", "ChannelGuardError", "ChannelRules", "GuardedProcessor", "GuardedServer",
           "check_hook_points", "is_loopback_host", "service_name"]

_log = logging.getLogger(__name__)
NONE_URI = SecurityPolicyNone.URI
_NONE_MODE = ua.MessageSecurityMode.None_
_CREATE_SESSION = node_id(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary)
_ACTIVATE_SESSION = node_id(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
DISCOVERY_SERVICES = frozenset({node_id(ua.ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary),
                                node_id(ua.ObjectIds.FindServersRequest_Encoding_DefaultBinary)})
"""The only services served over a channel that is not an offered secure one."""
ASYNCUA_SERIES = (2, 1)
"""The asyncua release series whose internals this module was checked against."""


REQUEST_USER: contextvars.ContextVar[Any] = contextvars.ContextVar("hmi_request_user", default=None)
"""The user of the session whose request is being served (asyncua passes none to method callbacks:
a Call is judged by the caller's role through this)."""


class ChannelGuardError(Exception):
    """asyncua does not offer the hook points the guard needs: the server must not start."""


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and loopback IP addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def service_name(typeid: ua.NodeId) -> str:
    """``CreateSession`` for the CreateSessionRequest encoding id, etc."""
    ident = typeid.Identifier
    name = ua.ObjectIdNames.get(ident) if typeid.NamespaceIndex == 0 and isinstance(ident, int) else None
    if not isinstance(name, str):
        return typeid.to_string()
    return name.removesuffix("_Encoding_DefaultBinary").removesuffix("Request")


def _policy_name(uri: str) -> str:
    return uri.rsplit("#", 1)[-1] if uri else "?"


def _mode_name(mode: Any) -> str:
    return mode.name if isinstance(mode, ua.MessageSecurityMode) else str(mode)


@dataclass(frozen=True)
class ChannelRules:
    """What each channel may do: the offered secure (policy URI, mode) pairs and the loopback exception."""

    secure: frozenset[tuple[str, ua.MessageSecurityMode]]
    insecure_loopback: bool = False
    """Serve everything over a None channel, to loopback peers only (``allow_insecure_loopback``)."""
    max_refusals_per_channel: int = 16

    def channel_allowed(self, uri: str, mode: ua.MessageSecurityMode) -> bool:
        """May a secure channel open with this policy and mode (None always may, for discovery)?"""
        return (uri, mode) in self.secure or (uri == NONE_URI and mode == _NONE_MODE)

    def service_refusal(self, uri: str, mode: ua.MessageSecurityMode, peer_host: str | None,
                        typeid: ua.NodeId) -> tuple[int, str]:
        """(0, '') when the service may be dispatched over this channel, else (status code, why)."""
        if (uri, mode) in self.secure:
            return 0, ""
        if uri == NONE_URI and mode == _NONE_MODE and self.insecure_loopback and is_loopback_host(peer_host):
            return 0, ""
        if typeid in DISCOVERY_SERVICES:
            return 0, ""
        if any(u == uri for u, _ in self.secure):
            return (ua.StatusCodes.BadSecurityModeInsufficient,
                    f"security mode {_mode_name(mode)} of {_policy_name(uri)} is not offered")
        if uri == NONE_URI:
            why = ("only GetEndpoints and FindServers are served over an unsecured channel"
                   + (" (the insecure loopback endpoint is for loopback peers only)" if self.insecure_loopback else ""))
            return ua.StatusCodes.BadSecurityPolicyRejected, why
        return ua.StatusCodes.BadSecurityPolicyRejected, f"security policy {_policy_name(uri)} is not offered"

    def check_offered(self, offered: set[tuple[str, ua.MessageSecurityMode]]) -> None:
        """Raise :class:`ChannelGuardError` unless asyncua offers exactly these rules' endpoints."""
        want = set(self.secure) | ({(NONE_URI, _NONE_MODE)} if self.insecure_loopback else set())
        if offered != want:
            raise ChannelGuardError(f"asyncua offers {sorted((_policy_name(u), _mode_name(m)) for u, m in offered)}, "
                                    f"the guard expects {sorted((_policy_name(u), _mode_name(m)) for u, m in want)}")


@dataclass(frozen=True)
class SessionOrigin:
    """The channel a session was created on: its client certificate and security."""

    thumbprint: str
    policy_uri: str
    mode: ua.MessageSecurityMode


class ChannelGuard:
    """The rules, the login gate and the audit log shared by every guarded connection."""

    def __init__(self, rules: ChannelRules, *, audit: Any, clock_utc: Callable[[], float],
                 gate: LoginGate | None = None) -> None:
        self.rules = rules
        self.gate = gate
        self._audit = audit
        self._utc = clock_utc
        self.origins: WeakKeyDictionary[Any, SessionOrigin] = WeakKeyDictionary()
        """Where each live session of this server was created (forgotten with the session)."""

    def audit(self, event: str, who: str, where: str, **fields: Any) -> None:
        """One warning-level audit event."""
        if self._audit is not None:
            self._audit.warning(event, utc=self._utc(), who=who, where=where, **fields)


class GuardedProcessor(UaProcessor):
    """asyncua's UaProcessor with the guard's checks before OpenSecureChannel and before every dispatch."""

    def __init__(self, internal_server: InternalServer, transport: Any, limits: Any, *, guard: ChannelGuard) -> None:
        super().__init__(internal_server, transport, limits)
        if not isinstance(getattr(self, "_connection", None), SecureConnection):
            raise ChannelGuardError("UaProcessor has no SecureConnection _connection")
        self._guard = guard
        self._refusals = 0
        peer = self.name if isinstance(self.name, tuple) else (str(self.name or ""), 0)
        self._peer_host = str(peer[0])
        self._peer_port = int(peer[1]) if len(peer) > 1 and isinstance(peer[1], int) else 0

    @property
    def where(self) -> str:
        """``hmi <peer address>:<port>``."""
        return f"hmi {self._peer_host}:{self._peer_port}"

    def _who(self) -> str:
        user = getattr(self.session, "user", None) if self.session is not None else None
        return str(getattr(user, "name", None) or "unauthenticated")

    # ------------------------------------------------------------------ channel
    def open_secure_channel(self, algohdr: Any, seqhdr: Any, body: Any) -> None:
        if not self._connection.is_open():
            request = struct_from_binary(ua.OpenSecureChannelRequest, body.copy())
            uri, mode = algohdr.SecurityPolicyURI, request.Parameters.SecurityMode
            if not self._guard.rules.channel_allowed(uri, mode):
                why = f"{_policy_name(uri)} {_mode_name(mode)} is not offered"
                self._guard.audit("hmi_channel_refused", "unauthenticated", self.where, service="OpenSecureChannel",
                                  policy=_policy_name(uri), mode=_mode_name(mode),
                                  status="BadSecurityPolicyRejected", why=why)
                error = error_message(status_code(ua.StatusCodes.BadSecurityPolicyRejected), why)
                # asyncua annotates the message type as its MessageType class, whose members are bytes
                self._transport.write(uatcp_to_binary(ua.MessageType.Error, error))  # type: ignore[arg-type]
                self._transport.close()
                return
        super().open_secure_channel(algohdr, seqhdr, body)  # type: ignore[no-untyped-call]  # unannotated in asyncua

    # ------------------------------------------------------------------ services
    async def _process_message(self, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any) -> bool:
        policy = self._connection.security_policy
        code, why = self._guard.rules.service_refusal(policy.URI, policy.Mode, self._peer_host, typeid)
        if code:
            return self._refuse(typeid, requesthdr, seqhdr, code, why)
        secure = policy.Mode != _NONE_MODE
        channel_cert = policy.peer_certificate if secure else None
        if typeid == _CREATE_SESSION:
            if secure:
                code, why = self._session_certificate_refusal(body, channel_cert)
                if code:
                    return self._refuse(typeid, requesthdr, seqhdr, code, why, event="hmi_session_refused")
            return await self._create_session(typeid, requesthdr, seqhdr, body, self._origin())
        if typeid == _ACTIVATE_SESSION:
            return await self._activate_session(typeid, requesthdr, seqhdr, body, channel_cert)
        return await self._dispatch(typeid, requesthdr, seqhdr, body)

    async def _dispatch(self, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any) -> bool:
        """asyncua's own handling of one request (unannotated there): True when it was answered. The
        session's user is known to method callbacks during it (:data:`REQUEST_USER`)."""
        token = REQUEST_USER.set(getattr(self.session, "user", None) if self.session is not None else None)
        try:
            return bool(await super()._process_message(typeid, requesthdr, seqhdr, body))  # type: ignore[no-untyped-call]
        finally:
            REQUEST_USER.reset(token)

    def _origin(self) -> SessionOrigin:
        policy = self._connection.security_policy
        secure = policy.Mode != _NONE_MODE
        return SessionOrigin(certificate_thumbprint(policy.peer_certificate) if secure else "", policy.URI,
                             policy.Mode)

    async def _create_session(self, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any,
                              origin: SessionOrigin) -> bool:
        """asyncua's CreateSession; a refused one is audited and leaves no half-made session behind."""
        previous = self.session
        try:
            ok = await self._dispatch(typeid, requesthdr, seqhdr, body)
        except (ServiceError, ua.UaStatusCodeError) as exc:
            await self._drop_session_since(previous)
            self._guard.audit("hmi_session_refused", self._who(), self.where, service="CreateSession",
                              status=status_code(exc.code).name, why="CreateSession refused",
                              client=client_uri(self._connection.security_policy.peer_certificate))
            raise
        except BaseException:
            await self._drop_session_since(previous)
            raise
        if self.session is not None and self.session is not previous:
            self._guard.origins[self.session] = origin
        return ok

    async def _drop_session_since(self, previous: Any) -> None:
        """Close a session asyncua bound to this channel during a request that then failed."""
        made, self.session = self.session, previous
        if made is not None and made is not previous and not made.is_activated():
            try:
                await made.close_session(True)
            except Exception:  # the request already failed; closing is best effort
                _log.exception("closing a half-made HMI session failed")

    async def _activate_session(self, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, body: Any,
                                channel_cert: bytes | None) -> bool:
        """ActivateSession: the session must be this channel's or come from the same certificate; the
        password is checked off the loop; a failure never leaves another session bound here."""
        previous = self.session
        target = previous or self.iserver.lookup_external_session(requesthdr.AuthenticationToken)
        if target is None or target.nonce is None:  # unknown, or CreateSession never completed
            return self._refuse(typeid, requesthdr, seqhdr, ua.StatusCodes.BadSessionIdInvalid,
                                "no session to activate", event="hmi_session_refused")
        if previous is None and self._guard.origins.get(target) != self._origin():
            return self._refuse(typeid, requesthdr, seqhdr, ua.StatusCodes.BadSessionIdInvalid,
                                "session was created on another certificate or security", event="hmi_session_refused")
        verdict = None
        if self._guard.gate is not None:
            verdict = await self._check_login(target, body, channel_cert)
            if verdict is not None and not verdict.ok:
                raise ServiceError(verdict.status)  # audited by the gate
        try:
            if verdict is None or self._guard.gate is None:
                return await self._dispatch(typeid, requesthdr, seqhdr, body)
            with self._guard.gate.handoff(verdict):
                return await self._dispatch(typeid, requesthdr, seqhdr, body)
        except BaseException:
            if self.session is not previous:  # asyncua bound the looked-up session before it failed
                self.session = previous
            raise

    def _refuse(self, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any, code: int, why: str,
                event: str = "hmi_service_refused") -> bool:
        """Audit, answer a ServiceFault; False (close the connection) after too many refusals."""
        policy = self._connection.security_policy
        self._refusals += 1
        status = status_code(code)
        self._guard.audit(event, self._who(), self.where, service=service_name(typeid),
                          policy=_policy_name(policy.URI), mode=_mode_name(policy.Mode), status=status.name, why=why)
        response = ua.ServiceFault()
        response.ResponseHeader.ServiceResult = status
        self.send_response(requesthdr.RequestHandle, seqhdr, response)  # type: ignore[no-untyped-call]  # asyncua
        return self._refusals < self._guard.rules.max_refusals_per_channel

    @staticmethod
    def _session_certificate_refusal(body: Any, channel_cert: bytes | None) -> tuple[int, str]:
        params = struct_from_binary(ua.CreateSessionParameters, body.copy())
        if not params.ClientCertificate or not channel_cert:
            return ua.StatusCodes.BadCertificateInvalid, "CreateSession without the secure channel's client certificate"
        if bytes(params.ClientCertificate) != bytes(channel_cert):
            return ua.StatusCodes.BadCertificateInvalid, "CreateSession certificate is not the secure channel's"
        return 0, ""

    async def _check_login(self, session: Any, body: Any, channel_cert: bytes | None) -> LoginVerdict | None:
        """The gate's verdict for a username token; None when asyncua refuses the request by itself."""
        assert self._guard.gate is not None
        params = struct_from_binary(ua.ActivateSessionParameters, body.copy())
        token = params.UserIdentityToken
        if not isinstance(token, ua.UserNameIdentityToken):
            return None  # asyncua refuses other tokens (or get_user finds no verdict and refuses)
        try:
            username, password = self.iserver.decrypt_user_token(session, token)
        except Exception:
            return None  # asyncua answers BadIdentityTokenInvalid before get_user
        source = LoginSource(self._peer_host, self._peer_port, certificate_thumbprint(channel_cert),
                             client_uri(channel_cert))
        return await self._guard.gate.check(username, password, source)


class _GuardedProtocol(OPCUAProtocol):
    """One connection; its processor is a :class:`GuardedProcessor` (or the connection is closed)."""

    def __init__(self, *args: Any, guard: ChannelGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.processor is None:  # refused by asyncua (max connections)
            return
        try:
            processor = GuardedProcessor(self.iserver, self.transport, self.limits, guard=self._guard)
            processor.set_policies(self.policies)  # type: ignore[no-untyped-call]  # unannotated in asyncua
        except Exception:  # never serve a connection unguarded
            _log.exception("HMI channel guard could not be installed; closing %s", self.peer_name)
            self.processor = None
            transport.close()
            return
        self.processor = processor


class _GuardedBinaryServer(BinaryServer):
    def __init__(self, internal_server: InternalServer, hostname: str | None, port: int | None, limits: Any, *,
                 guard: ChannelGuard) -> None:
        # asyncua's Server passes its endpoint's host and port, which urlparse types as optional
        super().__init__(internal_server, hostname, port, limits)  # type: ignore[arg-type]
        self._guard = guard

    def _make_protocol(self) -> OPCUAProtocol:
        return _GuardedProtocol(iserver=self.iserver, policies=self._policies, clients=self.clients,
                                closing_tasks=self.closing_tasks, limits=self.limits, guard=self._guard)


_EXPECTED: tuple[tuple[Any, str, tuple[str, ...]], ...] = (
    (UaProcessor, "__init__", ("self", "internal_server", "transport", "limits")),
    (UaProcessor, "open_secure_channel", ("self", "algohdr", "seqhdr", "body")),
    (UaProcessor, "process_message", ("self", "seqhdr", "body")),
    (UaProcessor, "_process_message", ("self", "typeid", "requesthdr", "seqhdr", "body")),
    (UaProcessor, "send_response", ("self", "requesthandle", "seqhdr", "response", "msgtype")),
    (OPCUAProtocol, "__init__", ("self", "iserver", "policies", "clients", "closing_tasks", "limits")),
    (OPCUAProtocol, "connection_made", ("self", "transport")),
    (BinaryServer, "__init__", ("self", "internal_server", "hostname", "port", "limits")),
    (BinaryServer, "_make_protocol", ("self",)),
    (BinaryServer, "set_policies", ("self", "policies")),
    (Server, "_setup_server_nodes", ("self",)),
    (Server, "_get_bind_socket_info", ("self",)),
    (InternalServer, "decrypt_user_token", ("self", "isession", "token")),
    (InternalServer, "lookup_external_session", ("self", "auth_token")),
    (SecureConnection, "is_open", ("self",)),
)


def check_hook_points() -> None:
    """Raise :class:`ChannelGuardError` unless asyncua is 2.1.x with the internals this module hooks."""
    try:
        series = tuple(int(x) for x in asyncua.__version__.split(".")[:2])
    except ValueError:
        series = ()
    if series != ASYNCUA_SERIES:
        raise ChannelGuardError(f"asyncua {asyncua.__version__}: the HMI channel guard is checked against "
                                f"{'.'.join(map(str, ASYNCUA_SERIES))}.x only")
    for cls, name, params in _EXPECTED:
        fn = cls.__dict__.get(name)
        if not callable(fn):
            raise ChannelGuardError(f"asyncua {cls.__name__}.{name} is missing")
        got = tuple(inspect.signature(fn).parameters)
        if got != params:
            raise ChannelGuardError(f"asyncua {cls.__name__}.{name}{got} changed (expected {params})")


class GuardedServer(Server):
    """asyncua Server whose binary server installs the :class:`GuardedProcessor` on every connection."""

    def __init__(self, *, user_manager: Any, guard: ChannelGuard) -> None:
        check_hook_points()
        super().__init__(user_manager=user_manager)
        self._guard = guard

    async def start(self) -> None:
        """Listen, as ``Server.start`` does, with the guarded binary server; OSError when it cannot bind."""
        check_hook_points()
        for attr in ("_policies", "limits", "_application_uri", "iserver"):
            if not hasattr(self, attr):
                raise ChannelGuardError(f"asyncua Server has no {attr}")
        if self.iserver.certificate is not None:  # logs validity and URI problems (host names vary: not checked)
            uacrypto.check_certificate(self.iserver.certificate, self._application_uri)
        await self._setup_server_nodes()
        self._guard.rules.check_offered({(f.cls.URI, f.mode) for f in self._policies})
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            bserver = _GuardedBinaryServer(self.iserver, host, port, self.limits, guard=self._guard)
            bserver.set_policies(self._policies)
            await bserver.start()
        except BaseException:
            await self.iserver.stop()
            raise
        self.bserver = bserver
