"""Endpoint security of the simulator: None only by default; Basic256Sha256 Sign/SignAndEncrypt with `--security`."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from asyncua import ua as _ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.server.server import Server
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)
# asyncua's generated stubs declare NodeId(Int32) etc., which plain ints and strs fail under --strict.
ua: Any = _ua

APP_URI = "urn:zhizao:sim:server"


async def configure_security(server: Server, secure: bool, data_dir: Path) -> None:
    """Restrict endpoints; with `secure`, generate (once) a self-signed cert under `data_dir/pki` and offer it."""
    await server.set_application_uri(APP_URI)
    server.set_identity_tokens([ua.AnonymousIdentityToken])
    if not secure:
        # The demo and the example agent configs ask for mode None explicitly; nothing else is offered.
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        return
    pki = data_dir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    key, cert = pki / "sim-key.pem", pki / "sim-cert.der"
    await setup_self_signed_certificate(
        key,
        cert,
        APP_URI,
        socket.gethostname(),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "CN", "organizationName": "zhizao", "commonName": "zhizao OPC UA simulator"},
    )
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    # None stays for the demo's local agents; the two Basic256Sha256 modes are for anything that crosses a network.
    server.set_security_policy(
        [
            ua.SecurityPolicyType.NoSecurity,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ]
    )
    log.info("simulator security: None + Basic256Sha256 Sign/SignAndEncrypt, certificate %s", cert)
