"""The application URI an OPC UA application certificate carries (asyncua requires the session's to match)."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509


def application_uri_of(cert_path: str | Path) -> str:
    """The first URI in the certificate's subjectAltName (PEM or DER); ValueError, naming the file, when
    there is none or the file is no certificate."""
    data = Path(cert_path).read_bytes()
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"{cert_path}: not an X.509 certificate ({exc})") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError(f"{cert_path}: certificate has no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise ValueError(f"{cert_path}: certificate has no URI in its subjectAltName")
    return str(uris[0])
