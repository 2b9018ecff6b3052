"""The manufacturing network in the database: seeding it from `seeds/network.yaml`, reading it for planning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from zhizao.cloud.storage.db import translate_errors
from zhizao.seeds.model import Scenario
from zhizao.seeds.network import Network

__all__ = ["Capability", "LineInfo", "NetworkModel", "load_model", "seed_network", "seed_network_beside"]

Conn = psycopg.Connection[Any]


def seed_network(conninfo: str, network: Network, scenario: Scenario) -> int:
    """Upsert families, products, line kinds, capabilities, lines, changeovers per line and transport (both
    directions) in one transaction; rows edited through the API (source 'api') are kept. Returns the line count."""
    keep = " WHERE {t}.source = 'seeds'"
    with translate_errors(), psycopg.connect(conninfo) as conn, conn.transaction():
        for f in network.families:
            conn.execute("INSERT INTO plan_families (family_id, name) VALUES (%s, %s) ON CONFLICT (family_id)"
                         " DO UPDATE SET name = excluded.name" + keep.format(t="plan_families"), [f.id, f.name or f.id])
        for p in network.products:
            conn.execute("INSERT INTO plan_products (product_id, name, family_id, unit) VALUES (%s, %s, %s, %s)"
                         " ON CONFLICT (product_id) DO UPDATE SET name = excluded.name, family_id = excluded.family_id,"
                         " unit = excluded.unit" + keep.format(t="plan_products"), [p.id, p.name or p.id, p.family, p.unit])
        lines = 0
        for k in network.line_kinds:
            conn.execute("INSERT INTO plan_line_kinds (kind_id, name, changeover_min) VALUES (%s, %s, %s)"
                         " ON CONFLICT (kind_id) DO UPDATE SET name = excluded.name,"
                         " changeover_min = excluded.changeover_min" + keep.format(t="plan_line_kinds"),
                         [k.id, k.name or k.id, k.changeover_min])
            for c in k.makes:
                conn.execute("INSERT INTO plan_capabilities (kind_id, product_id, rate_per_min, yield, counts_per_unit)"
                             " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kind_id, product_id) DO UPDATE SET"
                             " rate_per_min = excluded.rate_per_min, yield = excluded.yield,"
                             " counts_per_unit = excluded.counts_per_unit" + keep.format(t="plan_capabilities"),
                             [k.id, c.product, c.rate_per_min, c.yield_, c.counts_per_unit])
            for site_line in k.lines:
                lines += 1
                site, line = site_line.split("/")
                conn.execute("INSERT INTO plan_lines (site_id, line_id, kind_id, output_machine) VALUES (%s, %s, %s, %s)"
                             " ON CONFLICT (site_id, line_id) DO UPDATE SET kind_id = excluded.kind_id,"
                             " output_machine = excluded.output_machine" + keep.format(t="plan_lines"),
                             [site, line, k.id, network.output_machine(scenario, site_line)])
                for ch in k.changeovers:
                    conn.execute("INSERT INTO plan_changeovers (site_id, line_id, from_family, to_family, minutes)"
                                 " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (site_id, line_id, from_family, to_family)"
                                 " DO UPDATE SET minutes = excluded.minutes" + keep.format(t="plan_changeovers"),
                                 [site, line, ch.from_, ch.to, ch.minutes])
        for r in network.transport:
            for a, b in ((r.a, r.b), (r.b, r.a)):
                conn.execute("INSERT INTO plan_transport (from_site, to_site, km, hours, cost) VALUES (%s, %s, %s, %s, %s)"
                             " ON CONFLICT (from_site, to_site) DO UPDATE SET km = excluded.km, hours = excluded.hours,"
                             " cost = excluded.cost" + keep.format(t="plan_transport"), [a, b, r.km, r.hours, r.cost])
    return lines


def seed_network_beside(conninfo: str, scenario_file: Path, scenario: Scenario) -> str:
    """Seed the `network.yaml` next to a scenario file if there is one naming this scenario (else nothing, "");
    a summary line for the CLI. ScenarioError when it names the scenario and does not validate against it."""
    from zhizao.seeds.network import load_network

    path = scenario_file.parent / "network.yaml"
    if not path.exists():
        return ""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("scenario") != scenario.name:
        return ""
    network = load_network(path, scenario)
    lines = seed_network(conninfo, network, scenario)
    return f"{path.name}: {len(network.families)} families, {len(network.products)} products, {lines} lines"


@dataclass(frozen=True)
class Capability:
    rate_per_min: float
    yield_: float
    counts_per_unit: float


@dataclass(frozen=True)
class LineInfo:
    site: str
    line: str
    kind: str
    output_machine: str

    @property
    def key(self) -> str:
        return f"{self.site}/{self.line}"


@dataclass
class NetworkModel:
    """Everything the planner reads about the network, in plain dicts."""

    lines: list[LineInfo]
    products: dict[str, tuple[str, str, str]]  # id -> (family, unit, name)
    capabilities: dict[str, dict[str, Capability]]  # kind -> product -> capability
    kind_changeover_min: dict[str, float]
    changeovers: dict[tuple[str, str], dict[tuple[str, str], float]] = field(default_factory=dict)  # (site, line)
    transport: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # (from, to) -> (h, cost)
    same_site_hours: float = 0.0

    def changeover_min(self, line: LineInfo, from_family: str | None, to_family: str) -> float:
        """Minutes to change `line` from a family to another (0 within a family or from an unknown state)."""
        if from_family is None or from_family == to_family:
            return 0.0
        own = self.changeovers.get((line.site, line.line), {})
        return own.get((from_family, to_family), self.kind_changeover_min.get(line.kind, 30.0))

    def route(self, from_site: str, to_site: str) -> tuple[float, float]:
        """(hours, cost) of moving a lot; a pair without a route is far away (48 h) and costly."""
        if from_site == to_site:
            return self.same_site_hours, 0.0
        return self.transport.get((from_site, to_site), (48.0, 10_000.0))

    def makes(self, line: LineInfo, product: str) -> Capability | None:
        return self.capabilities.get(line.kind, {}).get(product)


def load_model(conn: Conn) -> NetworkModel:
    """The network as stored (only lines that exist in the asset tree or have a plan_lines row)."""
    lines = [LineInfo(str(s), str(ln), str(k), str(o)) for s, ln, k, o in conn.execute(
        "SELECT site_id, line_id, kind_id, output_machine FROM plan_lines ORDER BY site_id, line_id").fetchall()]
    products = {str(p): (str(f), str(u), str(n or p)) for p, f, u, n in conn.execute(
        "SELECT product_id, family_id, unit, name FROM plan_products").fetchall()}
    caps: dict[str, dict[str, Capability]] = {}
    for k, p, r, y, c in conn.execute(
            "SELECT kind_id, product_id, rate_per_min, yield, counts_per_unit FROM plan_capabilities").fetchall():
        caps.setdefault(str(k), {})[str(p)] = Capability(float(r), float(y), float(c))
    kinds = {str(k): float(c) for k, c in conn.execute("SELECT kind_id, changeover_min FROM plan_line_kinds").fetchall()}
    changeovers: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
    for s, ln, f, t, mins in conn.execute(
            "SELECT site_id, line_id, from_family, to_family, minutes FROM plan_changeovers").fetchall():
        changeovers.setdefault((str(s), str(ln)), {})[(str(f), str(t))] = float(mins)
    transport = {(str(a), str(b)): (float(h), float(c)) for a, b, h, c in conn.execute(
        "SELECT from_site, to_site, hours, cost FROM plan_transport").fetchall()}
    return NetworkModel(lines, products, caps, kinds, changeovers, transport)
