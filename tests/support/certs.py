"""A throwaway certificate authority for TLS tests: CA, server certificate (127.0.0.1, localhost), client certs."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCa", "make_ca"]


@dataclass(frozen=True)
class TestCa:
    """PEM files: the CA certificate, a server pair and a client pair signed by it."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, usage: x509.ObjectIdentifier | None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca(directory: Path, client_name: str = "zhizao-edge") -> TestCa:
    """Write a CA, a server certificate for 127.0.0.1/localhost and a client certificate (CN `client_name`)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("zhizao test CA", ca_key, None, ca_key, ca=True, usage=None)
    files = TestCa(*(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, cn, usage in (
        (files.server_cert, files.server_key, "localhost", ExtendedKeyUsageOID.SERVER_AUTH),
        (files.client_cert, files.client_key, client_name, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = _key()
        cert_path.write_bytes(_cert(cn, key, ca.subject, ca_key, ca=False, usage=usage)
                              .public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return files
