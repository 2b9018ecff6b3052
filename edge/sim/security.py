"""Endpoint security of the simulator: None only by default; Basic256Sha256 Sign/SignAndEncrypt with `--security`.

Like a PLC, the simulator lets anonymous sessions read, browse and subscribe, but refuses their writes and
method calls with BadUserAccessDenied unless started with `allow_anonymous_writes`; sessions of a configured
user (username/password, on every endpoint) may write and call.
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asyncua import ua as _ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import USER_TYPES, SimpleRoleRuleset, User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)
# asyncua's generated stubs declare NodeId(Int32) etc., which plain ints and strs fail under --strict.
ua: Any = _ua

APP_URI = "urn:zhizao:sim:server"
PASSWORD_ENV = "ZHIZAO_SIM_PASSWORD"  # where `zhizao sim --user` (and the demo's agents) find the password
_WRITES = frozenset(ua.NodeId(t) for t in (ua.ObjectIds.WriteRequest_Encoding_DefaultBinary,
                                           ua.ObjectIds.CallRequest_Encoding_DefaultBinary))  # fmt: skip
_SERVICES = frozenset(ua.NodeId(t) for t in USER_TYPES)


class SimUsers(UserManager):
    """Anonymous sessions get role Anonymous; a configured username with its password gets role User; any
    other username or password is refused at session activation (BadUserAccessDenied)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:  # fmt: skip
        if username is None:  # an anonymous token (`certificate` is the channel's, not an identity: none offered)
            return User(role=UserRole.Anonymous)
        known = self._users.get(username or "")
        if known is not None and hmac.compare_digest(known.encode(), (password or "").encode()):
            return User(role=UserRole.User, name=username)
        return None


class WriteRules(SimpleRoleRuleset):
    """The services a session may call: every user service, but Write and Call only for authenticated users
    (or for anyone with `allow_anonymous_writes`). A refused request gets a BadUserAccessDenied service fault."""

    def __init__(self, allow_anonymous_writes: bool) -> None:
        # (SimpleRoleRuleset's own table is not built: check_validity below is the whole rule set.)
        self._anonymous = _SERVICES if allow_anonymous_writes else _SERVICES - _WRITES

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        if user is None or user.role is UserRole.Anonymous:
            return action_type_id in self._anonymous
        return action_type_id in _SERVICES


async def configure_security(server: Server, secure: bool, data_dir: Path, *,
                             users: Mapping[str, str] | None = None,
                             allow_anonymous_writes: bool = False) -> None:  # fmt: skip
    """Restrict endpoints and identities; with `secure`, generate (once) a self-signed cert under
    `data_dir/pki` and offer it. Anonymous sessions may write and call only with `allow_anonymous_writes`."""
    await server.set_application_uri(APP_URI)
    server.iserver.set_user_manager(SimUsers(users or {}))
    tokens: list[type] = [ua.AnonymousIdentityToken]
    if users:
        tokens.append(ua.UserNameIdentityToken)
    server.set_identity_tokens(tokens)
    rules = WriteRules(allow_anonymous_writes)
    who = ", ".join(sorted(users or {})) or "nobody"
    log.info("simulator writes and calls: %s%s", who, " and anonymous clients" if allow_anonymous_writes else "")
    if not secure:
        # The demo and the example agent configs ask for mode None explicitly; nothing else is offered.
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity], permission_ruleset=rules)
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
        ],
        permission_ruleset=rules,
    )
    log.info("simulator security: None + Basic256Sha256 Sign/SignAndEncrypt, certificate %s", cert)
