"""HMI logins: throttled per source, scrypt checked off the event loop, verdict handed to asyncua.

asyncua calls ``UserManager.get_user`` synchronously inside ActivateSession, on
the event loop that also runs every unit's control loop. A scrypt check there
(50-100 ms) stalls them all. So the channel guard (:mod:`apc.hmi.channel_guard`)
decrypts the identity token first and awaits :meth:`LoginGate.check`:

1. :class:`~apc.hmi.throttle.LoginThrottle` admits the attempt per source (peer
   address and client-certificate thumbprint), never per user name;
2. :class:`PasswordPool` runs the scrypt check in a small dedicated thread pool
   (hashlib.scrypt releases the GIL) with a bound on queued work: when full,
   the attempt is refused at once (``BadTooManyOperations``);
3. the verdict is handed, through a context variable of the gate, to
   :class:`HmiUserManager`, whose ``get_user`` only consumes it: it never
   hashes. Without a verdict for exactly these credentials it refuses.

Every refusal is audited as ``hmi_login_refused`` (``who``, ``where`` = peer
address and client URI, ``why``), every success as ``hmi_login``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509

from apc.hmi.throttle import LoginThrottle
from apc.hmi.users import HmiUser, Role, UserDb, hash_password, verify_password
from plant_io.ua_values import status_code

__all__ = ["HmiUserManager", "LoginGate", "LoginSource", "LoginVerdict", "PasswordPool", "certificate_thumbprint"]


def certificate_thumbprint(der: bytes | None) -> str:
    """SHA-256 of a DER certificate, lower-case hex ('' for none)."""
    return hashlib.sha256(bytes(der)).hexdigest() if der else ""


def client_uri(der: bytes | None) -> str:
    """Application URI in the SAN of a DER certificate ('' when none or unreadable)."""
    if not der:
        return ""
    try:
        cert = x509.load_der_x509_certificate(bytes(der))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        return str(uris[0]) if uris else ""
    except Exception:  # an odd certificate must not break the login path
        return ""


@dataclass(frozen=True)
class LoginSource:
    """Where a login attempt comes from: the TCP peer and the secure channel's client certificate."""

    address: str
    port: int
    thumbprint: str = ""
    """SHA-256 of the channel's client certificate ('' on an unsecured channel)."""
    client_uri: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """Throttle keys: the peer address and, when there is one, the certificate."""
        return (f"peer {self.address}",) + ((f"cert {self.thumbprint}",) if self.thumbprint else ())

    @property
    def where(self) -> str:
        """Audit ``where``: ``hmi <address>:<port> [<client URI>]``."""
        return " ".join(p for p in ("hmi", f"{self.address}:{self.port}", self.client_uri) if p)


@dataclass(frozen=True)
class LoginVerdict:
    """Outcome of one password check, for one user name and password (kept only as an HMAC tag)."""

    username: str
    tag: bytes
    status: int
    """``ua.StatusCodes.Good`` when the password is right, else the refusal's status code."""
    role: Role | None
    source: LoginSource
    why: str = ""

    @property
    def ok(self) -> bool:
        """True when the user may log in."""
        return self.status == ua.StatusCodes.Good and self.role is not None


class PasswordPool:
    """A small dedicated thread pool for scrypt checks, with a bound on running plus queued checks."""

    def __init__(self, *, workers: int = 2, max_pending: int = 8,
                 verify: Callable[[str, str], bool] = verify_password) -> None:
        if workers < 1 or max_pending < workers:
            raise ValueError("workers >= 1 and max_pending >= workers")
        self.workers = workers
        self.max_pending = max_pending
        self._verify = verify
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hmi-scrypt")
        self._pending = 0
        self._lock = threading.Lock()
        self.checks_run = 0
        """Number of checks started (for tests and monitoring)."""

    @property
    def pending(self) -> int:
        """Checks running or queued now."""
        return self._pending

    async def verify(self, password: str, encoded: str) -> bool | None:
        """True/False from ``verify_password`` run in the pool; None at once when the pool is full."""
        with self._lock:
            if self._pending >= self.max_pending:
                return None
            self._pending += 1
            self.checks_run += 1
        try:
            future = self._executor.submit(self._verify, password, encoded)
        except RuntimeError:  # shut down
            self._done(None)
            return None
        future.add_done_callback(self._done)  # the slot is freed when the work ends, even if the caller is gone
        verdict: bool = await asyncio.wrap_future(future)
        return bool(verdict)

    async def hash(self, password: str) -> str:
        """``hash_password`` in the pool (for the dummy hash of unknown names)."""
        return await asyncio.wrap_future(self._executor.submit(hash_password, password))

    def _done(self, _: object) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        """Stop the pool (queued checks are cancelled, running ones finish in their thread)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class LoginGate:
    """Throttle, off-loop password check and audit of one login attempt (see module docstring)."""

    def __init__(self, users: UserDb, *, audit: Any = None, clock_utc: Callable[[], float] = time.time,
                 throttle: LoginThrottle | None = None, pool: PasswordPool | None = None) -> None:
        self._users = users
        self._audit = audit
        self._utc = clock_utc
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self.pool = pool if pool is not None else PasswordPool()
        self._key = secrets.token_bytes(32)
        self._dummy = ""
        self._current: ContextVar[LoginVerdict | None] = ContextVar(f"hmi_login_verdict_{id(self):x}",
                                                                    default=None)

    async def start(self) -> None:
        """Make the dummy hash that unknown names are checked against (in the pool)."""
        if not self._dummy:
            self._dummy = await self.pool.hash(secrets.token_urlsafe(16))

    def close(self) -> None:
        """Stop the password pool."""
        self.pool.close()

    def _tag(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()

    async def check(self, username: str | None, password: str | None, source: LoginSource) -> LoginVerdict:
        """Judge one username/password attempt from ``source``; refusals are audited here."""
        name = username or ""
        tag = self._tag(password or "")

        def refuse(code: int, why: str) -> LoginVerdict:
            self.log("hmi_login_refused", name or "anonymous", source, why, status=status_code(code).name)
            return LoginVerdict(name, tag, code, None, source, why)

        if not username or password is None:
            return refuse(ua.StatusCodes.BadIdentityTokenInvalid, "username and password required")
        why = self.throttle.admit(source.keys)
        if why:
            return refuse(ua.StatusCodes.BadUserAccessDenied, why)
        account = self._users.get(username)
        if not self._dummy:
            await self.start()
        try:
            right = await self.pool.verify(password, account.password_hash if account else self._dummy)
        except BaseException:
            self.throttle.release(source.keys)
            raise
        if right is None:
            self.throttle.release(source.keys)
            return refuse(ua.StatusCodes.BadTooManyOperations,
                          f"too many password checks pending (max {self.pool.max_pending})")
        ok = right and account is not None
        self.throttle.finish(source.keys, ok)
        if not ok or account is None:
            return refuse(ua.StatusCodes.BadUserAccessDenied, "wrong user name or password")
        return LoginVerdict(name, tag, ua.StatusCodes.Good, account.role, source)

    @contextmanager
    def handoff(self, verdict: LoginVerdict) -> Iterator[None]:
        """Make ``verdict`` the one :meth:`take` sees in this task while the block runs."""
        token = self._current.set(verdict)
        try:
            yield
        finally:
            self._current.reset(token)

    def take(self, username: str | None, password: str | None) -> LoginVerdict | None:
        """The handed-off verdict when it is for exactly these credentials (consumed), else None."""
        verdict = self._current.get()
        if verdict is None or password is None or verdict.username != (username or ""):
            return None
        if not hmac.compare_digest(verdict.tag, self._tag(password)):
            return None
        self._current.set(None)
        return verdict

    def log(self, event: str, who: str, source: LoginSource | None, why: str, **extra: Any) -> None:
        """One audit event (warning when ``why`` is given)."""
        if self._audit is None:
            return
        method = self._audit.warning if why else self._audit.info
        method(event, utc=self._utc(), who=who, where=source.where if source else "hmi", why=why, **extra)


class HmiUserManager(UserManager):
    """asyncua user manager that only consumes the :class:`LoginGate`'s verdicts (it never hashes)."""

    def __init__(self, gate: LoginGate) -> None:
        self._gate = gate

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        """The session's user, or None (asyncua then answers BadUserAccessDenied)."""
        verdict = self._gate.take(username, password)
        if verdict is None:
            self._gate.log("hmi_login_refused", username or "anonymous", None,
                           "no verdict of the login gate for these credentials")
            return None
        if not verdict.ok or verdict.role is None:
            return None
        self._gate.log("hmi_login", verdict.username, verdict.source, "", role=verdict.role.value)
        return HmiUser(role=UserRole.User, name=verdict.username, hmi_role=verdict.role,
                       client=verdict.source.client_uri)
