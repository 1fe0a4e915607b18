"""Certificates, a users file and per-user credentials files for HMI tests (cheap scrypt cost)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from apc.hmi.certs import make_certificate
from apc.hmi.client_cmds import HmiCredentials
from apc.hmi.users import add_user

SERVER_URI = "urn:apc:test:hmi"
PASSWORDS = {"olga": "operator-secret", "vic": "viewer-secret", "erin": "engineer-secret"}
ROLES = {"olga": "operator", "vic": "viewer", "erin": "engineer"}


@dataclass(frozen=True)
class HmiPki:
    """Server and client certificates, the users file, the trust list and credentials files."""

    dir: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    users: Path
    trusted: Path

    def creds(self, user: str) -> HmiCredentials:
        """The user's credentials (the one client certificate of the tests)."""
        return HmiCredentials(user, PASSWORDS[user], self.client_cert, self.client_key, self.server_cert)

    def creds_file(self, user: str) -> Path:
        """The user's credentials file (mode 0600), as `apc alarms --credentials` reads it."""
        return self.dir / f"{user}.yaml"


def make_pki(d: Path) -> HmiPki:
    """Everything an HMI test needs, in ``d``."""
    sc, sk = make_certificate(d, "server", SERVER_URI, ["localhost", "127.0.0.1"])
    cc, ck = make_certificate(d, "client", "urn:apc:test:client", ["localhost"])
    trusted = d / "trusted"
    trusted.mkdir()
    (trusted / cc.name).write_bytes(cc.read_bytes())
    users = d / "users.yaml"
    for name, pw in PASSWORDS.items():
        add_user(users, name, ROLES[name], pw, n=2**10)
        fd = os.open(d / f"{name}.yaml", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(yaml.safe_dump({"username": name, "password": pw, "client_cert": cc.name,
                                    "client_key": ck.name, "server_cert": sc.name}))
    return HmiPki(d, sc, sk, cc, ck, users, trusted)
