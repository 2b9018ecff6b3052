"""The attack suite: ways in that must stay shut, one row per attack with counters.

Every row counts `attempted` (attacks tried), `refused` (turned away as expected) and `allowed` (got through:
must be 0); `detail` says what was tried and, where a control request shows the attack was a fair one, how
the control fared. Rows (`ATTACKS`):

- tokens: forged, malformed, expired and revoked bearer tokens on every route of the OpenAPI (and on the live
  stream through `?token=`); refused = 401 (or 400 for a `?token=` longer than its documented maxLength).
- cross-site: a site-a admin token on site-b objects on every route: whatever names a site, line, machine,
  edge node, tag or token (path, query, body) names site-b's; allowed = a 2xx. Routes that name nothing
  (lists) must not show site-b in their body. Control: the same requests with a site-b admin token.
- sse: N live-stream clients, alternately of site-a and site-b, while both sites' events are published;
  allowed = events of the other site received. Every client must also get all events of its own site.
- ranges: huge, beyond-the-bounds and reversed time ranges on every route with from/to or start/end
  (series also at its finest buckets); refused = a 4xx, or a 2xx within `RANGE_DEADLINE_S` and
  `RANGE_MAX_BYTES`; allowed = a 5xx or a stall.
- mqtt-acl: the shipped Mosquitto ACL (broker/mosquitto/acl, with the agents' blocks) on a private mosquitto:
  anonymous and wrong-password connects, site-to-site publishes, NCMD/DCMD by an edge, a spoofed client id,
  STATE by an edge, a foreign subscription.
- opcua: anonymous writes and method calls on the simulator, a wrong password; refused = BadUserAccessDenied.

The target (`attack_target`): the two-site cluster of `fill_cluster` on a scratch database, a private
mosquitto with the shipped ACL, and the cloud service (no ingest) using it. `run_attacks(names, target)`
runs rows; `tests/faults/test_attacks.py` runs them short, `zhizao bench faults --rows attacks` long.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import queue
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from zhizao.bench.series import fill_rollups

__all__ = ["ATTACKS", "AttackRow", "Cluster", "Target", "attack_table", "attack_target", "fill_cluster",
           "run_attacks"]  # fmt: skip

# 2026-01-01T00:00:00Z: the samples of the temperature tag start here, one a second for two hours.
T0_MS = 1_767_225_600_000
N_SAMPLES = 7200


@dataclass(frozen=True)
class Cluster:
    """Ids of what `fill_cluster` wrote."""

    url: str
    temp_a: int  # site-a / m1 / Temperature/Spindle (double), 7200 samples
    text_a: int  # site-a / m1 / Status/Text (string)
    node_a: int  # site-a / line-1 node metric Node/Uptime
    temp_b: int  # site-b / m9 / Temperature/Spindle


def fill_cluster(url: str) -> Cluster:
    """Two sites (a: line-1 with m1, m2; b: line-9 with m9), tags, samples, rollups and latest values."""
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO sites (site_id, name, tz) VALUES ('site-a', 'Site A', 'Asia/Shanghai'),"
                     " ('site-b', 'Site B', 'Asia/Shanghai')")
        conn.execute(
            "INSERT INTO edge_nodes (site_id, edge_node_id, online, bd_seq, last_birth, outbox_depth,"
            " samples_per_s, reconnects, last_batch, acked_batch) VALUES"
            " ('site-a', 'line-1', true, 3, '2026-01-01T00:00:00Z', 5, 120.5, 1, 900, 899),"
            " ('site-b', 'line-9', false, 1, '2026-01-01T00:00:00Z', 0, 0, 0, 10, 10)"
        )
        conn.execute(
            "INSERT INTO machines (site_id, machine_id, edge_node_id, line_id, online, last_birth) VALUES"
            " ('site-a', 'm1', 'line-1', 'line-1', true, '2026-01-01T00:00:00Z'),"
            " ('site-a', 'm2', 'line-1', 'line-1', true, '2026-01-01T00:00:00Z'),"
            " ('site-b', 'm9', 'line-9', 'line-9', false, '2026-01-01T00:00:00Z')"
        )

        def tag(site: str, node: str, machine: str | None, name: str, datatype: int, unit: str | None) -> int:
            row = conn.execute(
                "INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype, unit)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING tag_id",
                [site, node, machine, name, datatype, unit],
            ).fetchone()
            assert row is not None
            return int(row[0])

        temp_a = tag("site-a", "line-1", "m1", "Temperature/Spindle", 10, "degC")
        text_a = tag("site-a", "line-1", "m1", "Status/Text", 12, None)
        node_a = tag("site-a", "line-1", None, "Node/Uptime", 4, "s")
        temp_b = tag("site-b", "line-9", "m9", "Temperature/Spindle", 10, "degC")
        # A deterministic, bumpy signal; every 500th value is NULL (bad quality) to exercise the aggregates.
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value, quality)"
            " SELECT to_timestamp(%(t0)s / 1000.0) + i * interval '1 second', %(tag)s,"
            "        CASE WHEN i %% 500 = 499 THEN NULL ELSE (i %% 97) * 0.5 + i / 60.0 END,"
            "        CASE WHEN i %% 500 = 499 THEN 0 ELSE 192 END"
            " FROM generate_series(0, %(n)s - 1) AS i",
            {"t0": T0_MS, "tag": temp_a, "n": N_SAMPLES},
        )
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value) SELECT to_timestamp(%(t0)s / 1000.0) + i * interval '1 second',"
            " %(tag)s, 1000 + i FROM generate_series(0, 99) AS i",
            {"t0": T0_MS, "tag": temp_b},
        )
        conn.execute(
            "INSERT INTO samples_text (ts, tag_id, value) VALUES"
            " (to_timestamp(%(t0)s / 1000.0), %(tag)s, 'idle'),"
            " (to_timestamp(%(t0)s / 1000.0) + interval '5 seconds', %(tag)s, 'running')",
            {"t0": T0_MS, "tag": text_a},
        )
        conn.execute(
            "INSERT INTO latest_values (tag_id, ts, value, text_value) VALUES"
            " (%s, '2026-01-01T01:59:59Z', 42.5, NULL), (%s, '2026-01-01T00:00:05Z', NULL, 'running'),"
            " (%s, '2026-01-01T00:01:39Z', 1099, NULL)",
            [temp_a, text_a, temp_b],
        )
    # The rollup rows, as the ingest maintains them on plain PostgreSQL.
    with psycopg.connect(url) as conn:
        fill_rollups(conn, [temp_a, temp_b])
    return Cluster(url, temp_a, text_a, node_a, temp_b)


# ---- the rows' counters -----------------------------------------------------------------------------------------
@dataclass
class AttackRow:
    """One attack: how many were tried, turned away, let through; what was tried and examples of what got in."""

    row: str
    attempted: int = 0
    refused: int = 0
    allowed: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    allowed_examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing got through and every attempt was refused."""
        return self.allowed == 0 and self.refused == self.attempted and self.attempted > 0

    def count(self, refused: bool, what: str) -> None:
        """Count one attempt."""
        self.attempted += 1
        if refused:
            self.refused += 1
        else:
            self.allowed += 1
            if len(self.allowed_examples) < 10:
                self.allowed_examples.append(what)


# ---- the target ---------------------------------------------------------------------------------------------
CLOUD_USER = "zhizao-cloud"
AGENT_A, AGENT_B = "site-a.line-1", "site-b.line-9"  # the agents' broker identities (broker/acl.py)


@dataclass
class Target:
    """The running cloud and broker the attacks go at, and the credentials they use or forge."""

    api: str
    database_url: str
    mqtt_port: int
    passwords: dict[str, str]
    cluster: Cluster
    tokens: dict[str, str]  # admin_a, admin_b, viewer_a, viewer_b, expired, revoked
    victim_token_id: int  # a site-b token a site-a admin must not revoke or rotate
    live: Any  # the service's LiveHub


def _token_id(url: str, name: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT token_id FROM api_tokens WHERE name = %s", [name]).fetchone()
    assert row is not None, name
    return int(row[0])


@contextlib.contextmanager
def attack_target(database_url: str, work: Path) -> Iterator[Target]:
    """Migrate and fill the (empty) database `database_url`, start a private mosquitto with the shipped ACL
    and the cloud service on both; stop them afterwards."""
    from zhizao.broker.embedded import start_broker
    from zhizao.cloud.auth import create_token, revoke_token
    from zhizao.cloud.service import CloudService
    from zhizao.cloud.settings import CloudSettings
    from zhizao.cloud.storage.migrate import TimescaleHorizons, apply_migrations

    apply_migrations(database_url, horizons=TimescaleHorizons(use_timescale=False))
    cluster = fill_cluster(database_url)
    tokens = {name: create_token(database_url, role, sites, name) for name, role, sites in (
        ("admin_a", "admin", "site-a"), ("admin_b", "admin", "site-b"), ("viewer_a", "viewer", "site-a"),
        ("viewer_b", "viewer", "site-b"), ("victim_b", "operator", "site-b"), ("revoked", "admin", "*"),
        ("expired", "admin", "*"))}  # fmt: skip
    assert revoke_token(database_url, _token_id(database_url, "revoked"))
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'expired'")
    passwords = {who: secrets.token_urlsafe(12) for who in (CLOUD_USER, AGENT_A, AGENT_B)}
    work.mkdir(parents=True, exist_ok=True)
    # mosquitto started as root drops to its own user, which must reach its folder: a world-enterable one.
    broker_dir = Path(tempfile.mkdtemp(prefix="zhizao-attack-broker-"))
    broker_dir.chmod(0o755)
    broker_url, stop_broker = start_broker(broker_dir, kind="mosquitto", users=passwords)
    try:
        port = int(broker_url.rsplit(":", 1)[1])
        settings = CloudSettings(database_url=database_url, api_port=0, data_dir=work, host_id=f"attack-{uuid.uuid4().hex[:8]}",
                                 mqtt_url=f"mqtt://{CLOUD_USER}:{quote(passwords[CLOUD_USER], safe='')}@127.0.0.1:{port}")  # fmt: skip
        service = CloudService(settings, ingest=False, warm_up=False, oee=False, monitoring=False)
        api = service.start_in_thread(timeout=120)
        try:
            yield Target(api, database_url, port, passwords, cluster, tokens,
                         _token_id(database_url, "victim_b"), service.live)  # fmt: skip
        finally:
            service.stop()
    finally:
        stop_broker()
        shutil.rmtree(broker_dir, ignore_errors=True)


# ---- requests from the OpenAPI ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    """One operation of the OpenAPI."""

    method: str
    path: str
    spec: dict[str, Any]


def operations(spec: dict[str, Any]) -> list[Op]:
    """Every operation of the OpenAPI document `spec`."""
    return [Op(m.upper(), p, o) for p, ops in spec["paths"].items() for m, o in ops.items()]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    branches = [b for b in schema.get("anyOf", schema.get("oneOf", [])) if b.get("type") != "null"]
    return _resolve(spec, branches[0]) if branches else schema


def _value(spec: dict[str, Any], name: str, schema: dict[str, Any], values: dict[str, Any]) -> Any:
    if name in values:
        return values[name]
    s = _resolve(spec, schema)
    if "default" in s and s["default"] is not None:
        return s["default"]
    if "enum" in s:
        return s["enum"][0]
    kind = s.get("type")
    if kind == "integer":
        return max(int(s.get("minimum", 1)), 1)
    if kind == "number":
        return float(max(s.get("minimum", 1.0), 1.0))
    if kind == "boolean":
        return False
    if kind == "array":
        return [_value(spec, name, s.get("items", {}), values)] * int(s.get("minItems", 0))
    if kind == "object" or "properties" in s:
        return _body(spec, s, values)
    return "2026-01-01T00:00:00Z" if s.get("format") == "date-time" else "x"


def _body(spec: dict[str, Any], schema: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A small body: the required properties, and every property that names a site object in `values`."""
    s = _resolve(spec, schema)
    props: dict[str, Any] = s.get("properties", {})
    want = [k for k in props if k in s.get("required", []) or k in values]
    return {k: _value(spec, k, props[k], values) for k in want}


def request_of(spec: dict[str, Any], op: Op, values: dict[str, Any]) -> tuple[str, dict[str, Any], Any, bool]:
    """(url, query, json body or None, names a site object): the operation filled from `values`."""
    named = False
    url = op.path
    query: dict[str, Any] = {}
    for p in op.spec.get("parameters", []):
        name = p["name"]
        named |= name in SITE_KEYS
        if p["in"] == "path":
            url = url.replace("{" + name + "}", quote(str(_value(spec, name, p.get("schema", {}), values)), safe=""))
        elif p["in"] == "query" and (p.get("required") or name in values):
            query[name] = _value(spec, name, p.get("schema", {}), values)
    body = None
    if "requestBody" in op.spec:
        content = op.spec["requestBody"].get("content", {})
        schema = content.get("application/json", {}).get("schema")
        if schema is not None:
            body = _body(spec, schema, values)
            named |= any(k in SITE_KEYS for k in body)
    return url, query, body, named


SITE_KEYS = {"site", "site_id", "sites", "from_site", "to_site", "line", "line_id", "machine", "machine_id",
             "edge", "edge_node", "edges", "tag_id", "token_id"}  # fmt: skip
_EXCLUDED = {("GET", "/healthz"), ("GET", "/api/v1/live"), ("POST", "/api/v1/me/rotate")}  # public, SSE, self
_TIME = {"from": 1_767_225_600_000, "to": 1_767_229_200_000, "start": 1_767_225_600_000,
         "end": 1_767_229_200_000, "shift_start": "1767225600000"}  # fmt: skip


def _values(target: Target, site: str) -> dict[str, Any]:
    c = target.cluster
    if site == "site-a":
        ids: dict[str, Any] = {"site": "site-a", "line": "line-1", "machine": "m1", "edge": "line-1", "tag_id": c.temp_a,
                               "token_id": _token_id(target.database_url, "viewer_a")}  # fmt: skip
    else:
        ids = {"site": "site-b", "line": "line-9", "machine": "m9", "edge": "line-9", "tag_id": c.temp_b,
               "token_id": target.victim_token_id}
    return {**_TIME, **ids, "site_id": ids["site"], "sites": [ids["site"]], "from_site": ids["site"],
            "to_site": ids["site"], "line_id": ids["line"], "machine_id": ids["machine"], "edge_node": ids["edge"],
            "edges": [ids["edge"]], "name": "Temperature/Spindle", "signal": "Temperature/Spindle"}  # fmt: skip


def _client(target: Target) -> Any:
    import httpx

    return httpx.Client(base_url=target.api, timeout=30)


def _spec(client: Any) -> dict[str, Any]:
    doc: dict[str, Any] = client.get("/openapi.json").raise_for_status().json()
    return doc


def _send(client: Any, op: Op, url: str, query: dict[str, Any], body: Any, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.request(op.method, url, params=query, json=body, headers=headers)


# ---- row: tokens ----------------------------------------------------------------------------------------------
def bad_tokens(target: Target) -> dict[str, str]:
    """Tokens that must get 401 everywhere: forged (the right shape, never issued), malformed, expired, revoked."""
    from zhizao.cloud.auth import TOKEN_PREFIX

    return {"forged": TOKEN_PREFIX + secrets.token_urlsafe(32), "malformed-short": "x",
            "malformed-long": TOKEN_PREFIX + "a" * 300, "malformed-quote": TOKEN_PREFIX + "' OR '1'='1",
            "malformed-prefix": target.tokens["admin_a"][::-1],
            "expired": target.tokens["expired"], "revoked": target.tokens["revoked"]}  # fmt: skip


def attack_tokens(target: Target) -> AttackRow:
    """Every bad token on every route (header), and on the live stream (?token=)."""
    row = AttackRow("tokens")
    kinds: dict[str, list[int]] = {}
    with _client(target) as client:
        spec = _spec(client)
        # Every route but the open /healthz; the live stream below (a stream); /me/rotate too: refused, nothing rotates.
        ops = [op for op in operations(spec) if (op.method, op.path) not in _EXCLUDED - {("POST", "/api/v1/me/rotate")}]
        values = _values(target, "site-a")
        for kind, token in bad_tokens(target).items():
            tally = kinds.setdefault(kind, [0, 0])
            for op in ops:
                url, query, body, _ = request_of(spec, op, values)
                status = _send(client, op, url, query, body, token).status_code
                row.count(status == 401, f"{kind} {op.method} {url}: {status}")
                tally[0] += 1
                tally[1] += status == 401
            # The live stream takes its token in the query (EventSource cannot set headers) or the header.
            for how in ("query", "header"):
                q, h = ({"token": token}, {}) if how == "query" else ({}, {"Authorization": f"Bearer {token}"})
                with client.stream("GET", "/api/v1/live", params=q, headers=h) as r:
                    # A query token longer than the parameter's documented maxLength (256) is a 400 instead.
                    refused = r.status_code == 401 or (r.status_code == 400 and how == "query" and len(token) > 256)
                    row.count(refused, f"{kind} live by {how}: {r.status_code}")
                    tally[0] += 1
                    tally[1] += refused
    row.detail = {"routes": len(ops) + 1, "kinds": {k: {"attempted": a, "refused": r} for k, (a, r) in kinds.items()}}
    return row


# ---- row: cross-site ------------------------------------------------------------------------------------------
_FOREIGN = re.compile(r'"(site-b|line-9|m9)"|site="site-b"|site_id="site-b"')


def _discloses(text: str) -> bool:
    """True when a JSON body holds any data: a string value, a non-zero number (empty lists and all-zero
    counters disclose nothing)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return bool(text.strip())

    def walk(v: Any) -> bool:
        if isinstance(v, dict):
            return any(walk(x) for x in v.values())
        if isinstance(v, list):
            return any(walk(x) for x in v)
        if isinstance(v, bool) or v is None:
            return False
        return bool(v) if isinstance(v, int | float) else True

    return walk(doc)


def attack_cross_site(target: Target) -> AttackRow:
    """A site-a admin on site-b objects on every route; lists must not show site-b. A site-b admin sends the
    same requests first (they create site-b objects where the generated body is a valid one, so the lists
    and filters have site-b data to leak) and its DELETEs after; its 2xx count shows the requests were fair."""
    row = AttackRow("cross-site")
    attacker, control = target.tokens["admin_a"], target.tokens["admin_b"]
    control_2xx = named_ops = list_ops = empty_2xx = 0
    empty_routes: list[str] = []
    with _client(target) as client:
        spec = _spec(client)
        values = _values(target, "site-b")
        ops = [(op, *request_of(spec, op, values)) for op in operations(spec) if (op.method, op.path) not in _EXCLUDED]
        for op, url, query, body, _ in ops:
            if op.method != "DELETE":
                control_2xx += 200 <= _send(client, op, url, query, body, control).status_code < 300
        for op, url, query, body, named in ops:
            r = _send(client, op, url, query, body, attacker)
            ok = 200 <= r.status_code < 300
            if named:
                named_ops += 1
                got_in = ok and _discloses(r.text)
                if ok and not got_in:
                    empty_2xx += 1
                    empty_routes.append(f"{op.method} {op.path}")
                row.count(not got_in, f"{op.method} {url} {query}: {r.status_code} {r.text[:120]}")
            else:
                list_ops += 1
                leak = ok and _FOREIGN.search(r.text) is not None
                row.count(not leak, f"{op.method} {url}: site-b in the body")
        for op, url, query, body, _ in ops:
            if op.method == "DELETE":
                control_2xx += 200 <= _send(client, op, url, query, body, control).status_code < 300
    row.detail = {"routes_naming_site_b": named_ops, "routes_without_a_site (no site-b in the body)": list_ops,
                  "control_2xx (site-b admin, same requests)": control_2xx,
                  "answered_2xx_without_data": empty_routes}  # fmt: skip
    return row


# ---- row: sse -------------------------------------------------------------------------------------------------
class _SseClient:
    """An SSE client of /api/v1/live in a thread: the `data` of every event."""

    def __init__(self, port: int, token: str) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status = 0
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self._conn.request("GET", f"/api/v1/live?token={token}")
        self._thread = threading.Thread(target=self._run, name="attack-sse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            r = self._conn.getresponse()
            self.status = r.status
            while raw := r.readline():
                line = raw.decode().rstrip("\n")
                if line.startswith("data:"):
                    self.events.put(json.loads(line[5:]))

    def close(self) -> None:
        if self._conn.sock is not None:
            with contextlib.suppress(OSError):
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._conn.close()


def attack_sse(target: Target, clients: int = 20, events: int = 10, timeout_s: float = 60.0) -> AttackRow:
    """`clients` live-stream clients, alternately of site-a and site-b; `events` events per site published
    (interleaved), then a marker per site. allowed = events of the other site a client received."""
    row = AttackRow("sse")
    port = int(target.api.rsplit(":", 1)[1])
    sites = ["site-a" if i % 2 == 0 else "site-b" for i in range(clients)]
    readers = [_SseClient(port, target.tokens["viewer_a" if s == "site-a" else "viewer_b"]) for s in sites]
    try:
        _wait(lambda: target.live.subscribers() >= clients, timeout_s, f"{clients} live-stream subscribers")
        for i in range(events):
            for site in ("site-a", "site-b"):
                target.live.publish("state", site, {"machine": "m1" if site == "site-a" else "m9", "seq": i})
        for site in ("site-a", "site-b"):
            target.live.publish("state", site, {"marker": True})
        got: list[list[dict[str, Any]]] = [[] for _ in readers]
        deadline = time.monotonic() + timeout_s
        for k, reader in enumerate(readers):
            while not any(e.get("marker") for e in got[k]):
                try:
                    got[k].append(reader.events.get(timeout=max(0.01, deadline - time.monotonic())))
                except queue.Empty:
                    raise TimeoutError(f"SSE client {k} ({sites[k]}) never got its marker") from None
        missing = 0
        for k, site in enumerate(sites):
            foreign = [e for e in got[k] if e.get("site") != site]
            own = [e for e in got[k] if e.get("site") == site and not e.get("marker")]
            missing += events - len(own)
            for _ in range(events + 1):  # every event of the other site was a chance to leak
                row.attempted += 1
            row.allowed += len(foreign)
            row.refused += events + 1 - len(foreign)
            row.allowed_examples += [f"client {k} ({site}) got {e}" for e in foreign][: 10 - len(row.allowed_examples)]
        row.detail = {"clients": clients, "events_per_site": events, "own_events_missing": missing,
                      "status_200": sum(r.status == 200 for r in readers)}  # fmt: skip
        if missing:
            row.allowed_examples.append(f"{missing} own events missing")
    finally:
        for reader in readers:
            reader.close()
    return row


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


# ---- row: ranges ----------------------------------------------------------------------------------------------
RANGE_DEADLINE_S = 10.0
RANGE_MAX_BYTES = 32 * 1024 * 1024
_PAIRS = (("from", "to"), ("start", "end"))


def attack_ranges(target: Target) -> AttackRow:
    """Huge, out-of-bounds and reversed ranges on every route with a time range (series at fine buckets too)."""
    import httpx

    row = AttackRow("ranges")
    statuses: dict[str, int] = {}
    slowest = 0.0
    routes = 0
    with _client(target) as client:
        spec = _spec(client)
        values = _values(target, "site-a")
        for op in operations(spec):
            params = {p["name"]: p for p in op.spec.get("parameters", []) if p["in"] == "query"}
            pair = next(((a, b) for a, b in _PAIRS if a in params and b in params), None)
            if pair is None or (op.method, op.path) in _EXCLUDED:
                continue
            routes += 1
            lo_name, hi_name = pair
            bounds = _resolve(spec, params[lo_name]["schema"])
            lo, hi = int(bounds.get("minimum", -(2**53))), int(bounds.get("maximum", 2**53))
            cases: list[dict[str, Any]] = [{lo_name: lo, hi_name: hi}, {lo_name: lo - 1, hi_name: hi + 1},
                                           {lo_name: hi, hi_name: lo}, {lo_name: 0, hi_name: hi}]  # fmt: skip
            if "bucket" in params:
                cases += [{lo_name: lo, hi_name: hi, "bucket": b} for b in ("1000ms", "1s", "raw")]
            if "limit" in params:
                limit_max = int(_resolve(spec, params["limit"]["schema"]).get("maximum", 100_000))
                cases += [{lo_name: lo, hi_name: hi, "limit": limit_max}]
            for case in cases:
                url, query, body, _ = request_of(spec, op, {**values, **case})
                t0 = time.perf_counter()
                try:
                    r = _send(client, op, url, query, body, target.tokens["admin_a"])
                    status, size = r.status_code, len(r.content)
                except httpx.HTTPError as exc:  # a stall (read timeout) or a dropped connection: counted, not raised
                    status, size = 0, 0
                    row.detail.setdefault("errors", []).append(f"{url} {case}: {exc!r}")
                took = time.perf_counter() - t0
                slowest = max(slowest, took)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                held = 400 <= status < 500 or (200 <= status < 300 and took <= RANGE_DEADLINE_S and size <= RANGE_MAX_BYTES)
                row.count(held, f"{op.method} {url} {query}: {status} in {took:.1f} s, {size} bytes")
    row.detail.update({"routes": routes, "statuses": statuses, "slowest_s": round(slowest, 3),
                       "deadline_s": RANGE_DEADLINE_S})  # fmt: skip
    return row


# ---- row: mqtt-acl --------------------------------------------------------------------------------------------
class _Mqtt:
    """A paho MQTT 5 client for one attack: connect result, PUBACK and SUBACK reason codes."""

    def __init__(self, port: int, user: str | None, password: str | None, client_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.connected = threading.Event()
        self.failed = False
        self.pubacks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, [r.value for r in rcs])
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.connected.wait(5)

    def _on_connect(self, c: Any, u: Any, f: Any, rc: Any, p: Any = None) -> None:
        self.failed = bool(rc.is_failure)
        self.connected.set()

    def publish(self, topic: str) -> int:
        info = self.c.publish(topic, b"attack", qos=1)
        _wait(lambda: info.mid in self.pubacks, 5, f"PUBACK of {topic}")
        return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> int:
        _, mid = self.c.subscribe(topic, qos=1)
        assert mid is not None, topic
        _wait(lambda: mid in self.subacks, 5, f"SUBACK of {topic}")
        return self.subacks[mid][0]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def attack_mqtt_acl(target: Target) -> AttackRow:
    """The shipped ACL's expected refusals on the target's private mosquitto (MQTT 5: 0x87 = not authorized)."""
    row = AttackRow("mqtt-acl")
    port, pw = target.mqtt_port, target.passwords
    for who, password in ((None, None), (AGENT_A, "wrong"), ("nobody", "x")):
        c = _Mqtt(port, who, password, f"attack-{uuid.uuid4().hex[:6]}")
        row.count(c.failed or not c.connected.is_set(), f"connect as {who} with a wrong or no password")
        c.close()
    cloud = _Mqtt(port, CLOUD_USER, pw[CLOUD_USER], f"attack-cloud-{uuid.uuid4().hex[:6]}")
    edge = _Mqtt(port, AGENT_A, pw[AGENT_A], "line-1")
    spoof = _Mqtt(port, AGENT_A, pw[AGENT_A], "line-9")  # agent A's credential, agent B's client id
    try:
        own = edge.publish("spBv1.0/site-a/NDATA/line-1")  # 0, or 0x10: no subscriber (both a success)
        refusals = {
            "site-to-site NBIRTH": (edge, "spBv1.0/site-b/NBIRTH/line-9"),
            "site-to-site NDATA": (edge, "spBv1.0/site-b/NDATA/line-9"),
            "site-to-site DDATA": (edge, "spBv1.0/site-b/DDATA/line-9/m9"),
            "NCMD by an edge (itself)": (edge, "spBv1.0/site-a/NCMD/line-1"),
            "DCMD by an edge (itself)": (edge, "spBv1.0/site-a/DCMD/line-1/m1"),
            "NCMD by an edge (another site)": (edge, "spBv1.0/site-b/NCMD/line-9"),
            "DCMD by an edge (another site)": (edge, "spBv1.0/site-b/DCMD/line-9/m9"),
            "STATE by an edge": (edge, "spBv1.0/STATE/attack"),
            "ack by an edge": (edge, "zhizao/v1/ack/site-a/line-1"),
            "identity spoof NBIRTH": (spoof, "spBv1.0/site-b/NBIRTH/line-9"),
            "identity spoof NDATA": (spoof, "spBv1.0/site-b/NDATA/line-9"),
            "identity spoof command result": (spoof, "zhizao/v1/cmd/site-b/line-9"),
        }
        for what, (client, topic) in refusals.items():
            rc = client.publish(topic)
            row.count(rc == 0x87, f"{what} ({topic}): reason {rc:#x}")
        # Mosquitto grants any subscription and checks read access per message: the foreign commands and
        # acks the cloud publishes must not arrive, the agent's own (published last) must.
        got: list[str] = []
        edge.c.on_message = lambda c, u, m: got.append(m.topic)
        spoof.c.on_message = lambda c, u, m: got.append("spoof:" + m.topic)
        foreign = ["spBv1.0/site-b/NCMD/line-9", "zhizao/v1/ack/site-b/line-9"]
        for client in (edge, spoof):
            client.subscribe("spBv1.0/site-b/#")
            client.subscribe("zhizao/v1/ack/#")
            client.subscribe("spBv1.0/site-a/NCMD/line-1")
        for topic in [*foreign, "spBv1.0/site-a/NCMD/line-1"]:
            cloud.publish(topic)
        _wait(lambda: got.count("spBv1.0/site-a/NCMD/line-1") == 1 and "spoof:spBv1.0/site-a/NCMD/line-1" in got,
              10, "the agent's own command at both of its sessions")  # fmt: skip
        for topic in foreign:
            for prefix in ("", "spoof:"):
                row.count(prefix + topic not in got, f"{prefix or 'edge:'}{topic} delivered to agent A")
        row.detail = {"own_ndata_reason": own, "identities": [CLOUD_USER, AGENT_A, AGENT_B]}
        if own not in (0, 0x10):
            row.allowed_examples.append(f"the agent's own NDATA was refused ({own:#x}): the ACL is too tight")
            row.allowed += 1
    finally:
        for c in (edge, spoof, cloud):
            c.close()
    return row


# ---- row: opcua -----------------------------------------------------------------------------------------------
def attack_opcua(work: Path) -> AttackRow:
    """Anonymous writes and calls on a simulator with a user, and a wrong password: BadUserAccessDenied."""
    from asyncua import ua as _ua
    from asyncua.client.client import Client

    from zhizao.broker.embedded import free_port
    from zhizao.edge.sim.server import SimServer
    from zhizao.seeds import load_scenario

    ua: Any = _ua  # asyncua's stubs do not export what the module has
    row = AttackRow("opcua")
    scenario = load_scenario()
    path = scenario.machine_paths()[0]
    user, password = "edge", secrets.token_urlsafe(12)

    async def main() -> dict[str, Any]:
        sim = SimServer(scenario.subset([path]), free_port(), data_dir=work / "sim", users={user: password})
        await sim.start()
        node = f"ns=2;s={path}"
        speed = float(sim.model.ideal[0]) / 2  # inside the machine's range: only the identity decides
        try:
            async with Client(sim.endpoint, timeout=5) as anonymous:
                for what in ("write MachSpeed", "call Start", "call Stop", "call Reset"):
                    try:
                        if what.startswith("write"):
                            await anonymous.get_node(f"{node}/MachSpeed").write_value(
                                ua.Variant(speed, ua.VariantType.Double))  # fmt: skip
                        else:
                            await anonymous.get_node(node).call_method(f"2:{what.split()[1]}")
                        row.count(False, f"anonymous {what} accepted")
                    except ua.uaerrors.UaStatusCodeError as exc:
                        row.count(exc.code == ua.StatusCodes.BadUserAccessDenied, f"anonymous {what}: {exc}")
            wrong = Client(sim.endpoint, timeout=5)
            wrong.set_user(user)
            wrong.set_password("wrong")
            try:
                async with wrong:
                    row.count(False, "a wrong password opened a session")
            except ua.uaerrors.UaStatusCodeError as exc:
                row.count(exc.code == ua.StatusCodes.BadUserAccessDenied, f"wrong password: {exc}")
            good = Client(sim.endpoint, timeout=5)
            good.set_user(user)
            good.set_password(password)
            async with good:  # the control: the user may
                await good.get_node(f"{node}/MachSpeed").write_value(ua.Variant(speed, ua.VariantType.Double))
                await good.get_node(node).call_method("2:Stop")
            return {"machine": path, "user_write_and_call": "ok"}
        finally:
            await sim.stop()

    row.detail = asyncio.run(main())
    return row


# ---- running rows ---------------------------------------------------------------------------------------------
ATTACKS: dict[str, str] = {
    "tokens": "forged, malformed, expired and revoked tokens on every route",
    "cross-site": "site-a's token on site-b's objects on every route",
    "sse": "live-stream clients of different sites",
    "ranges": "huge time ranges on every route that takes one",
    "mqtt-acl": "the shipped Mosquitto ACL's expected refusals",
    "opcua": "anonymous OPC UA writes and method calls on the simulator",
}


def run_attacks(names: list[str], target: Target, work: Path, *, sse_clients: int = 20,
                sse_events: int = 10) -> list[AttackRow]:  # fmt: skip
    """Run the named rows against `target`, in order."""
    out: list[AttackRow] = []
    for name in names:
        if name == "tokens":
            out.append(attack_tokens(target))
        elif name == "cross-site":
            out.append(attack_cross_site(target))
        elif name == "sse":
            out.append(attack_sse(target, sse_clients, sse_events))
        elif name == "ranges":
            out.append(attack_ranges(target))
        elif name == "mqtt-acl":
            out.append(attack_mqtt_acl(target))
        elif name == "opcua":
            out.append(attack_opcua(work))
        else:
            raise ValueError(f"attack {name!r}: unknown; known: {', '.join(ATTACKS)}")
    return out


def attack_table(rows: list[AttackRow]) -> str:
    """The printed table: one line per attack row."""
    lines = [f"{'attack':<18}{'attempted':>11}{'refused':>11}{'allowed':>11}  result"]
    lines += [f"{r.row:<18}{r.attempted:>11}{r.refused:>11}{r.allowed:>11}  {'ok' if r.ok else 'FAIL'}" for r in rows]
    return "\n".join(lines)


def bench_attacks(names: list[str], server_url: str, work: Path, figures: dict[str, Any], *,
                  sse_clients: int = 200, sse_events: int = 50) -> list[AttackRow]:  # fmt: skip
    """The rows of `zhizao bench faults` that are attacks: one target on a scratch database of `server_url`;
    each row's counters into `figures[name]`."""
    from zhizao.bench.harness import scratch_database

    if not names:
        return []
    rows: list[AttackRow] = []
    with scratch_database(server_url, "attacks") as url, attack_target(url, work / "attacks") as target:
        for name in names:
            try:
                (r,) = run_attacks([name], target, work / "attacks", sse_clients=sse_clients, sse_events=sse_events)
            except (TimeoutError, OSError, AssertionError) as exc:  # the row did not finish: say so, go on
                figures[name] = {"error": str(exc)}
                continue
            rows.append(r)
            figures[r.row] = {"attempted": r.attempted, "refused": r.refused, "allowed": r.allowed, "ok": r.ok,
                              "detail": r.detail, "allowed_examples": r.allowed_examples}  # fmt: skip
    return rows
