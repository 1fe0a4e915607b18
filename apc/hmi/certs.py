"""Self-signed OPC UA application certificates for the HMI server and its clients.

``apc hmi-cert --out DIR --uri URN --host NAME`` writes ``<name>_cert.pem`` and
``<name>_key.pem`` (RSA 2048, SHA-256, key file mode 0600). The application
URI goes into the subjectAltName (OPC UA requires it to match the
application's ``ApplicationUri``), together with every ``--host`` as DNS name
or IP address. Key usages cover both server and client use, so the same
command makes the certificates of HMI clients (``apc mode``/``apc status``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plant_io.ua_certificate import application_uri_of

__all__ = ["application_uri_of", "make_certificate"]


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_certificate(out_dir: str | Path, name: str, uri: str, hosts: Sequence[str], *,
                     days: int = 365 * 2, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<name>_cert.pem`` and ``<name>_key.pem`` (0600) in ``out_dir``; return their paths.

    Refuses to overwrite existing files unless ``overwrite``.
    """
    if not uri or ":" not in uri:
        raise ValueError(f"application URI must be a URI such as 'urn:site:apc:hmi', got {uri!r}")
    if days <= 0:
        raise ValueError("days must be > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}_cert.pem", out / f"{name}_key.pem"
    if not overwrite:
        existing = [str(p) for p in (cert_path, key_path) if p.exists()]
        if existing:
            raise FileExistsError(f"refusing to overwrite {', '.join(existing)}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    san += [_san_entry(h) for h in dict.fromkeys(hosts)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if overwrite else os.O_EXCL)
    fd = os.open(key_path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
