"""Fixtures for the OPC UA adapter tests: a real asyncua server (see simserver.py) and certificates."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.simserver import ServerThread, free_port


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """One server for the tests of a module (MACHINES with PackML tags and Start/Stop/Reset)."""
    srv = ServerThread(port=free_port(), extra=230)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Self-signed server and client certificates (DER) with PEM keys."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    d = tmp_path_factory.mktemp("certs")
    files = {k: d / n for k, n in [("server_cert", "server.der"), ("server_key", "server.pem"),
                                    ("client_cert", "client.der"), ("client_key", "client.pem")]}

    async def gen() -> None:
        await setup_self_signed_certificate(files["server_key"], files["server_cert"], "urn:zhizao:test:server",
                                            "localhost", [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": "sim"})
        await setup_self_signed_certificate(files["client_key"], files["client_cert"], "urn:zhizao:edge",
                                            "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "edge"})

    asyncio.run(gen())
    return files
