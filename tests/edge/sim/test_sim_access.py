"""Like a PLC, the simulator lets anonymous clients read and subscribe but not write or call methods: they get
BadUserAccessDenied unless it runs with `--allow-anonymous-writes`; a configured user may (also with --security)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from zhizao.broker.embedded import wait_listening
from zhizao.edge.sim.server import SimServer

M = "ns=2;s=s1/l1/m01"
USER, PASSWORD = "edge", "plc-pass-1"


async def _attempts(client: Client) -> dict[str, str]:
    """Try one MachSpeed write and one Stop call; the outcome of each: 'ok' or the status code's name."""
    out: dict[str, str] = {}
    for what, action in (
        ("write", lambda: client.get_node(f"{M}/MachSpeed").write_value(ua.Variant(30.0, ua.VariantType.Double))),
        ("call", lambda: client.get_node(M).call_method("2:Stop")),
    ):
        try:
            await action()
            out[what] = "ok"
        except ua.UaStatusCodeError as exc:
            out[what] = ua.StatusCode(exc.code).name
    return out


def _client(endpoint: str, user: str | None = None, password: str | None = None) -> Client:
    client = Client(endpoint, timeout=5)
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    return client


def test_anonymous_writes_and_calls_are_refused_and_the_user_may(free_port: int, run_sim: Any,
                                                                 make_scenario: Any) -> None:  # fmt: skip
    async def main() -> None:
        sim = SimServer(make_scenario(1), free_port, seed=2, dt_ms=100, users={USER: PASSWORD})
        async with run_sim(sim):
            async with _client(sim.endpoint) as anonymous:
                assert await anonymous.get_node(f"{M}/MachSpeed").read_value() == 60.0  # reads stay open
                assert await _attempts(anonymous) == {"write": "BadUserAccessDenied", "call": "BadUserAccessDenied"}
                assert await anonymous.get_node(f"{M}/MachSpeed").read_value() == 60.0
                assert int(sim.model.state[0]) == 6  # still executing: the Stop never reached the machine
            async with _client(sim.endpoint, USER, PASSWORD) as user:
                assert await _attempts(user) == {"write": "ok", "call": "ok"}
                assert await user.get_node(f"{M}/MachSpeed").read_value() == 30.0
            with pytest.raises(ua.UaStatusCodeError) as refused:
                async with _client(sim.endpoint, USER, "wrong"):
                    pass
            assert refused.value.code == ua.StatusCodes.BadUserAccessDenied

    asyncio.run(main())


def test_with_security_anonymous_is_refused_on_every_endpoint(free_port: int, run_sim: Any, make_scenario: Any,
                                                              tmp_path: Path) -> None:  # fmt: skip
    async def main() -> None:
        sim = SimServer(make_scenario(1), free_port, seed=2, dt_ms=100, security=True, data_dir=tmp_path / "sim",
                        users={USER: PASSWORD})  # fmt: skip
        key, cert = tmp_path / "client-key.pem", tmp_path / "client-cert.der"
        await setup_self_signed_certificate(key, cert, "urn:zhizao:test:client", "localhost",
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "t"})  # fmt: skip
        async with run_sim(sim):
            for user in (None, USER):
                client = _client(sim.endpoint, user, PASSWORD)
                client.application_uri = "urn:zhizao:test:client"
                await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
                async with client:
                    want = "ok" if user else "BadUserAccessDenied"
                    assert await _attempts(client) == {"write": want, "call": want}, user
            async with _client(sim.endpoint) as plain:  # the None endpoint is no way round it
                assert await _attempts(plain) == {"write": "BadUserAccessDenied", "call": "BadUserAccessDenied"}

    asyncio.run(main())


def test_zhizao_sim_allow_anonymous_writes_and_user(free_port: int, make_scenario: Any, tmp_path: Path) -> None:
    scenario_file = tmp_path / "one.yaml"
    scenario_file.write_text(yaml.safe_dump(make_scenario(1).model_dump(mode="json")))
    argv = [sys.executable, "-m", "zhizao", "sim", "--scenario", str(scenario_file), "--port", str(free_port),
            "--dt-ms", "100", "--data-dir", str(tmp_path / "sim"), "--user", USER, "--password-env", "T_SIM_PW",
            "--allow-anonymous-writes"]  # fmt: skip
    log = tmp_path / "sim.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "T_SIM_PW": PASSWORD})
    try:
        wait_listening(free_port, lambda: proc.poll() is None, "simulator", log, timeout=60)

        async def main() -> list[dict[str, str]]:
            endpoint = f"opc.tcp://127.0.0.1:{free_port}/zhizao/sim"
            results = []
            for user in (None, USER):
                async with _client(endpoint, user, PASSWORD) as client:
                    results.append(await _attempts(client))
            return results

        assert asyncio.run(main()) == [{"write": "ok", "call": "ok"}] * 2
    finally:
        proc.terminate()
        proc.wait(30)
    # --user without its password is a clear error, before anything listens.
    done = subprocess.run(argv[:-1], capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                           if k != "T_SIM_PW"}, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "T_SIM_PW is not set (or empty): the password of 'edge'" in done.stderr
