"""HMI accounts: a YAML users file (never the recipe) with scrypt password hashes.

File layout (written by ``apc hmi-user``; must be private, mode 0600)::

    users:
      alice: {role: operator, password: "scrypt$16384$8$1$<salt>$<hash>"}

Roles are ordered ``viewer`` < ``operator`` < ``engineer``. A file readable or
writable by group/others, or owned by someone else, is refused (as ssh does).
Hashes whose scrypt cost exceeds :data:`MAX_SCRYPT_COST` (N*r*p) are refused
too, so a users file cannot make one password check take seconds. Login
itself (throttling, hashing off the event loop, asyncua's user manager) is in
:mod:`apc.hmi.login`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import yaml
from asyncua.crypto.permission_rules import User
from yaml.nodes import MappingNode, Node, ScalarNode

__all__ = [
    "MAX_SCRYPT_COST",
    "HmiAccount",
    "HmiUser",
    "Role",
    "UserDb",
    "UsersFileError",
    "add_user",
    "check_private_file",
    "hash_password",
    "load_users",
    "verify_password",
]

SCRYPT_N = 2**14
"""Default scrypt N: about 50 ms per check (checks run in a small thread pool, off the event loop)."""
SCRYPT_R = 8
SCRYPT_P = 1
MAX_SCRYPT_COST = 2**15 * 8
"""Largest N*r*p accepted in a users file or by :func:`hash_password` (N=2^15, r=8, p=1:
about 100 ms and 32 MiB per check); anything dearer is refused."""
_MAX_N = 2**20
_DKLEN = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LEN = 10


class Role(enum.Enum):
    """HMI role; each role can do everything the lower ones can."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"

    @property
    def rank(self) -> int:
        """0 for viewer, 1 for operator, 2 for engineer."""
        return _RANK[self]

    def at_least(self, other: Role) -> bool:
        """True when this role includes the rights of ``other``."""
        return self.rank >= other.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ENGINEER: 2}


class UsersFileError(Exception):
    """A users or credentials file that cannot be used; the message names file (and line)."""


@dataclass(frozen=True)
class HmiAccount:
    """One account of the users file."""

    name: str
    role: Role
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class UserDb:
    """All accounts of one users file (read-only)."""

    accounts: Mapping[str, HmiAccount]
    path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "accounts", MappingProxyType(dict(self.accounts)))

    def get(self, name: str) -> HmiAccount | None:
        """The account called ``name``, or None."""
        return self.accounts.get(name)


# --------------------------------------------------------------------------- hashing
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P,
                  salt: bytes | None = None) -> str:
    """Encode ``password`` as ``scrypt$N$r$p$<salt b64>$<hash b64>`` with a fresh 16-byte salt."""
    _check_params(n, r, p)
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN,
                            maxmem=_maxmem(n, r))
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _maxmem(n: int, r: int) -> int:
    return 128 * r * n + 1024 * 1024


def _check_params(n: int, r: int, p: int) -> None:
    if n < 2 or n > _MAX_N or n & (n - 1):
        raise ValueError(f"scrypt N must be a power of two in [2, {_MAX_N}], got {n}")
    if not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"scrypt r must be in [1, 32] and p in [1, 16], got r={r} p={p}")
    if n * r * p > MAX_SCRYPT_COST:
        raise ValueError(f"scrypt cost N*r*p = {n}*{r}*{p} is above the bound {MAX_SCRYPT_COST} "
                         "(N=2^15, r=8, p=1); hash the password again with `apc hmi-user`")


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """Split an encoded hash; ValueError says what is wrong."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("password must be 'scrypt$N$r$p$salt$hash' (make it with `apc hmi-user`)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"password hash is malformed ({exc})") from None
    _check_params(n, r, p)
    if len(salt) < 16 or len(digest) != _DKLEN:
        raise ValueError("password hash needs a salt of at least 16 bytes and a 32-byte digest")
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded`` (constant-time comparison of the digests)."""
    try:
        n, r, p, salt, digest = _parse_hash(encoded)
    except ValueError:
        return False
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest),
                               maxmem=_maxmem(n, r))
    return hmac.compare_digest(candidate, digest)


# --------------------------------------------------------------------------- file access
def check_private_file(path: Path, what: str) -> None:
    """Refuse a file that group/others may access or that another user owns (like ssh)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsersFileError(f"{path}: {what} is not a regular file")
    if st.st_mode & 0o077:
        raise UsersFileError(
            f"{path}: {what} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {path}")
    if hasattr(os, "getuid") and st.st_uid not in (os.getuid(), 0):
        raise UsersFileError(f"{path}: {what} is owned by uid {st.st_uid}, not by this user")


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _mapping_items(node: MappingNode) -> list[tuple[ScalarNode | Node, Node]]:
    return list(node.value)


def load_users(path: str | Path) -> UserDb:
    """Read and check a users file; raises :class:`UsersFileError` listing every problem as file:line."""
    path = Path(path)
    check_private_file(path, "users file")
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UsersFileError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"{path}: cannot read users file: {exc}") from None
    problems: list[str] = []
    accounts: dict[str, HmiAccount] = {}
    users_node: Node | None = None
    if isinstance(root, MappingNode):
        for k, v in _mapping_items(root):
            key = k.value if isinstance(k, ScalarNode) else None
            if key == "users":
                users_node = v
            else:
                problems.append(f"{path}:{_line(k)}: unknown key {key!r} (expected 'users')")
    if not isinstance(users_node, MappingNode):
        line = _line(users_node) if users_node is not None else (_line(root) if root is not None else 1)
        problems.append(f"{path}:{line}: expected a mapping 'users: {{name: {{role: ..., password: ...}}}}'")
    else:
        for k, v in _mapping_items(users_node):
            name = k.value if isinstance(k, ScalarNode) else ""
            at = f"{path}:{_line(k)}"
            if not _NAME_RE.match(str(name)):
                problems.append(f"{at}: user name {name!r} must be 1-64 of A-Z a-z 0-9 _ . @ -")
                continue
            if name in accounts:
                problems.append(f"{at}: user {name!r} is listed twice")
                continue
            account = _account(str(name), v, path, problems)
            if account is not None:
                accounts[name] = account
    if problems:
        raise UsersFileError("\n".join(problems))
    return UserDb(accounts, path)


def _account(name: str, node: Node, path: Path, problems: list[str]) -> HmiAccount | None:
    if not isinstance(node, MappingNode):
        problems.append(f"{path}:{_line(node)}: user {name!r}: expected {{role: ..., password: ...}}")
        return None
    fields: dict[str, ScalarNode] = {}
    ok = True
    for k, v in _mapping_items(node):
        key = k.value if isinstance(k, ScalarNode) else None
        if key not in ("role", "password"):
            problems.append(f"{path}:{_line(k)}: user {name!r}: unknown key {key!r} (expected role, password)")
            ok = False
        elif not isinstance(v, ScalarNode):
            problems.append(f"{path}:{_line(v)}: user {name!r}: {key} must be a string")
            ok = False
        else:
            fields[str(key)] = v
    for key in ("role", "password"):
        if key not in fields and ok:
            problems.append(f"{path}:{_line(node)}: user {name!r}: missing {key}")
            ok = False
    if not ok:
        return None
    role_node, pw_node = fields["role"], fields["password"]
    try:
        role = Role(role_node.value)
    except ValueError:
        problems.append(f"{path}:{_line(role_node)}: user {name!r}: role must be one of "
                        f"{[r.value for r in Role]}, got {role_node.value!r}")
        return None
    try:
        _parse_hash(str(pw_node.value))
    except ValueError as exc:
        problems.append(f"{path}:{_line(pw_node)}: user {name!r}: {exc}")
        return None
    return HmiAccount(name, role, str(pw_node.value))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to ``path`` with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    path.chmod(0o600)


def add_user(path: str | Path, name: str, role: Role | str, password: str, *, n: int = SCRYPT_N) -> None:
    """Add or replace account ``name`` in the users file (created 0600 if missing)."""
    path = Path(path)
    role = Role(role)
    if not _NAME_RE.match(name):
        raise UsersFileError(f"user name {name!r} must be 1-64 of A-Z a-z 0-9 _ . @ -")
    if len(password) < MIN_PASSWORD_LEN:
        raise UsersFileError(f"password must have at least {MIN_PASSWORD_LEN} characters")
    accounts = dict(load_users(path).accounts) if path.exists() else {}
    accounts[name] = HmiAccount(name, role, hash_password(password, n=n))
    lines = ["# APC HMI users (apc hmi-user). Keep private: mode 0600, outside recipes and git.", "users:"]
    for acc in sorted(accounts.values(), key=lambda a: a.name):
        lines.append(f"  {acc.name}: {{role: {acc.role.value}, password: \"{acc.password_hash}\"}}")
    _write_private(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- session user
@dataclass
class HmiUser(User):
    """An authenticated HMI session user (asyncua's ``User`` with the HMI role)."""

    hmi_role: Role = Role.VIEWER
    client: str = ""
    """Client application URI from its certificate ('' when none)."""
