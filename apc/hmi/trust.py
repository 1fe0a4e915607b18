"""The HMI's trust list: client certificates pinned by a directory, re-read without a restart.

Every certificate file (``*.pem``, ``*.der``, ``*.crt``) in the directory is
trusted, by its exact SHA-256 thumbprint (no CA chains). The directory's
listing (names, sizes, modification times) is compared on every new session;
when it changed the list is re-read and the change audited as
``hmi_trust_list_reloaded`` with the thumbprints ``added`` and ``removed``.
Without a directory (``None``) no client certificate is trusted.

A trusted certificate must still pass asyncua's checks (validity period,
application URI in the SAN, key usage, client role).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["TrustList", "TrustListError"]

_SUFFIXES = frozenset({".pem", ".der", ".crt"})


class TrustListError(Exception):
    """The trust directory cannot be used."""


@dataclass(frozen=True)
class _Entry:
    name: str
    size: int
    mtime_ns: int


def _load_der(path: Path) -> bytes:
    data = path.read_bytes()
    cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    return cert.public_bytes(Encoding.DER)


class TrustList:
    """Certificate validator for asyncua (``await trust(cert, app_description)``) over a pinned directory."""

    def __init__(self, directory: str | Path | None, *, audit: Any = None,
                 clock_utc: Callable[[], float] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._audit = audit
        self._utc = clock_utc
        self._listing: tuple[_Entry, ...] | None = None
        self._thumbprints: frozenset[str] = frozenset()
        self._checks = CertificateValidator(CertificateValidatorOptions.EXT_VALIDATION
                                            | CertificateValidatorOptions.PEER_CLIENT)

    @property
    def thumbprints(self) -> frozenset[str]:
        """SHA-256 thumbprints (hex) of the trusted certificates."""
        return self._thumbprints

    def load(self) -> None:
        """First read; :class:`TrustListError` when the directory is missing or holds an unreadable file."""
        if self.directory is None:
            return
        if not self.directory.is_dir():
            raise TrustListError(f"trusted_clients {self.directory} is not a directory")
        listing = self._list()
        thumbprints, bad = self._read(listing)
        if bad:
            raise TrustListError(f"trusted_clients {self.directory}: not a certificate: {', '.join(bad)}")
        self._listing, self._thumbprints = listing, thumbprints

    def refresh(self) -> bool:
        """Re-read the directory when its listing changed (audited); True when the list changed."""
        if self.directory is None:
            return False
        listing = self._list()
        if listing == self._listing:
            return False
        thumbprints, bad = self._read(listing)
        added, removed = thumbprints - self._thumbprints, self._thumbprints - thumbprints
        self._listing, self._thumbprints = listing, thumbprints
        if self._audit is not None:
            self._audit.warning("hmi_trust_list_reloaded", utc=self._utc() if self._utc else None, who="runtime",
                                where=str(self.directory), added=sorted(added), removed=sorted(removed),
                                unreadable=bad, trusted=len(thumbprints))
        return bool(added or removed)

    def _list(self) -> tuple[_Entry, ...]:
        assert self.directory is not None
        entries = []
        try:
            for path in self.directory.iterdir():
                if path.suffix.lower() not in _SUFFIXES:
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                entries.append(_Entry(path.name, st.st_size, st.st_mtime_ns))
        except OSError:  # the directory went away: nothing is trusted any more
            return ()
        return tuple(sorted(entries, key=lambda e: e.name))

    def _read(self, listing: tuple[_Entry, ...]) -> tuple[frozenset[str], list[str]]:
        assert self.directory is not None
        thumbprints, bad = set(), []
        for entry in listing:
            try:
                thumbprints.add(hashlib.sha256(_load_der(self.directory / entry.name)).hexdigest())
            except (OSError, ValueError):
                bad.append(entry.name)
        return frozenset(thumbprints), bad

    def is_trusted(self, der: bytes) -> bool:
        """True when the DER certificate is in the list (after a refresh)."""
        self.refresh()
        return hashlib.sha256(bytes(der)).hexdigest() in self._thumbprints

    async def __call__(self, cert: x509.Certificate, app_description: ua.ApplicationDescription) -> None:
        """asyncua's validator hook (called at CreateSession): raise ServiceError unless trusted and valid."""
        await self._checks.validate(cert, app_description)
        if not self.is_trusted(cert.public_bytes(Encoding.DER)):
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
