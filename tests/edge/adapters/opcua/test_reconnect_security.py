"""OpcUaAdapter: reconnect after the server restarts, and Basic256Sha256 SignAndEncrypt with user/password."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.simserver import M1, M2, ServerThread, free_port, make_adapter
from zhizao.edge.adapters.base import AdapterAuthError, AdapterConfigError, AdapterTemporaryError

T0 = 1_767_225_600_000


def test_reconnect_after_server_restart_recreates_subscription() -> None:
    srv = ServerThread(port=free_port())
    node = M1 + "Temperature/Spindle"
    adapter, sink = make_adapter(srv.url, [node, M2 + "State"])

    async def scenario() -> None:
        await adapter.connect()
        task = asyncio.create_task(adapter.run())
        await sink.wait_for(lambda: len(sink.all()) >= 2)
        await srv.write(node, 41.0, T0)
        await sink.wait_for(lambda: 41.0 in sink.values(0))
        await asyncio.to_thread(srv.stop)
        with pytest.raises(AdapterTemporaryError, match="lost"):
            await asyncio.wait_for(task, 15)
        assert sink.device_states[-2:] == [("cnc-1-m01", False), ("cnc-1-m02", False)]
        # what the runtime does: close, then connect again with backoff until the device is back
        await adapter.close()
        with pytest.raises(AdapterTemporaryError):
            await adapter.connect()
        await adapter.close()
        await asyncio.to_thread(srv.restart)
        for _ in range(50):
            try:
                await adapter.connect()
                break
            except AdapterTemporaryError:
                await asyncio.sleep(0.2)
        task = asyncio.create_task(adapter.run())
        try:
            await srv.write(node, 42.0, T0 + 1)
            await sink.wait_for(lambda: 42.0 in sink.values(0))
        finally:
            task.cancel()
            await adapter.close()

    try:
        asyncio.run(scenario())
    finally:
        srv.close()
    assert sink.device_states[-2:] == [("cnc-1-m01", False), ("cnc-1-m02", False)]
    assert ("cnc-1-m01", True) in sink.device_states[2:-2]  # back online after the reconnect


def security(certs: dict[str, Path], **over: Any) -> dict[str, Any]:
    sec: dict[str, Any] = {
        "mode": "SignAndEncrypt", "policy": "Basic256Sha256",
        "certificate": str(certs["client_cert"]), "private_key": str(certs["client_key"]),
        "server_certificate": str(certs["server_cert"]), "username": "edge", "password": "s3cret",
    }
    sec.update(over)
    return sec


def test_sign_and_encrypt_with_user_password(certs: dict[str, Path]) -> None:
    srv = ServerThread(port=free_port(), security=(certs["server_cert"], certs["server_key"]), users=("edge", "s3cret"))
    node = M1 + "MachSpeed"

    async def scenario() -> None:
        adapter, sink = make_adapter(srv.url, [node], security=security(certs))
        await adapter.connect()
        task = asyncio.create_task(adapter.run())
        try:
            await sink.wait_for(lambda: len(sink.all()) >= 1)
            await adapter.write(0, 55.0)
            await sink.wait_for(lambda: 55.0 in sink.values(0))
            assert adapter._client is not None
            assert adapter._client.security_policy.URI.endswith("#Basic256Sha256")
        finally:
            task.cancel()
            await adapter.close()

        os.environ["ZHIZAO_TEST_OPCUA_PW"] = "s3cret"
        from_env, _ = make_adapter(srv.url, [node], security=security(
            certs, password=None, password_env="ZHIZAO_TEST_OPCUA_PW"))
        await from_env.connect()
        await from_env.close()
        del os.environ["ZHIZAO_TEST_OPCUA_PW"]
        with pytest.raises(AdapterConfigError, match="ZHIZAO_TEST_OPCUA_PW"):
            await from_env.connect()
        await from_env.close()

        wrong, _ = make_adapter(srv.url, [node], security=security(certs, password="guess"))
        with pytest.raises(AdapterAuthError, match="Bad"):
            await wrong.connect()
        await wrong.close()

        plain, _ = make_adapter(srv.url, [node])  # mode None against a server without a None endpoint
        with pytest.raises(AdapterConfigError, match="no endpoint for this security policy"):
            await plain.connect()
        await plain.close()

    try:
        asyncio.run(scenario())
    finally:
        srv.close()
