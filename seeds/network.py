"""Pydantic models of the cluster's manufacturing network: products, families, line kinds, changeovers, transport.

A network file (`seeds/network.yaml`) belongs to a scenario (`cluster.yaml`): every line it names must be
one of the scenario's lines and every site one of its sites; `check_against(scenario)` says which is not.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zhizao.broker.contract.ids import Id
from zhizao.seeds.model import Scenario, format_validation_error

__all__ = [
    "Capability",
    "Changeover",
    "Family",
    "LineKind",
    "Network",
    "Product",
    "Route",
    "load_network",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Family(_Model):
    """Products that share tooling and settings: changeovers are between families."""

    id: Id
    name: str = ""


class Product(_Model):
    """A product an order can ask for, in its own unit (parts, boards, metres, cases, modules)."""

    id: Id
    name: str = ""
    family: Id
    unit: str = Field(default="unit", min_length=1)


class Capability(_Model):
    """A line kind can make `product` at `rate_per_min` good-or-bad units per minute (ideal) and `yield_` good."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    product: Id
    rate_per_min: float = Field(gt=0)
    yield_: float = Field(default=1.0, gt=0, le=1, alias="yield")
    counts_per_unit: float = Field(default=1.0, gt=0, description="output-machine counts per product unit")


class Changeover(_Model):
    """Minutes to change a line of this kind from family `from_` to family `to`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: Id = Field(alias="from")
    to: Id
    minutes: float = Field(ge=0)


class LineKind(_Model):
    """Lines built alike: what they make, at which rate, and their changeover matrix between families."""

    id: Id
    name: str = ""
    lines: list[str] = Field(min_length=1, description="site/line ids of the scenario")
    output_machine: dict[str, str] = Field(
        default_factory=dict, description="site/line -> the machine whose good count is the line's output, "
        "or 'all' for a hall of parallel machines (default: the line's last machine)")
    makes: list[Capability] = Field(min_length=1)
    changeover_min: float = Field(default=30, ge=0, description="between different families not listed")
    changeovers: list[Changeover] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> LineKind:
        made = [c.product for c in self.makes]
        for i, p in enumerate(made):
            if p in made[:i]:
                raise ValueError(f"makes[{i}].product: {p!r} is listed twice")
        pairs = [(c.from_, c.to) for c in self.changeovers]
        for i, pair in enumerate(pairs):
            if pair in pairs[:i]:
                raise ValueError(f"changeovers[{i}]: {pair[0]!r} -> {pair[1]!r} is listed twice")
        for i, line in enumerate(self.lines):
            if line.count("/") != 1:
                raise ValueError(f"lines[{i}]: {line!r} is not site/line")
        for key in self.output_machine:
            if key not in self.lines:
                raise ValueError(f"output_machine: {key!r} is not one of this kind's lines")
        return self


class Route(_Model):
    """Road transport between two sites (both directions): distance, truck hours and cost per lot shipped."""

    a: Id
    b: Id
    km: float = Field(gt=0)
    hours: float = Field(gt=0)
    cost: float = Field(ge=0, description="per lot shipped (one truck), in CNY")


class Network(_Model):
    """The manufacturing network of a scenario."""

    scenario: Id
    transport_source: str = Field(min_length=1, description="where the distances and times come from")
    families: list[Family] = Field(min_length=1)
    products: list[Product] = Field(min_length=1)
    line_kinds: list[LineKind] = Field(min_length=1)
    transport: list[Route] = Field(default_factory=list)
    same_site_hours: float = Field(default=0, ge=0, description="moving a lot within its own site")

    @model_validator(mode="after")
    def _references(self) -> Network:
        families = [f.id for f in self.families]
        products = [p.id for p in self.products]
        for where, ids in (("families", families), ("products", products), ("line_kinds", [k.id for k in self.line_kinds])):
            for i, value in enumerate(ids):
                if value in ids[:i]:
                    raise ValueError(f"{where}[{i}].id: {value!r} is not unique")
        for i, p in enumerate(self.products):
            if p.family not in families:
                raise ValueError(f"products[{i}].family: {p.family!r} is not one of the families")
        seen_lines: dict[str, str] = {}
        for i, kind in enumerate(self.line_kinds):
            for j, c in enumerate(kind.makes):
                if c.product not in products:
                    raise ValueError(f"line_kinds[{i}].makes[{j}].product: {c.product!r} is not one of the products")
            for j, ch in enumerate(kind.changeovers):
                for name, fam in (("from", ch.from_), ("to", ch.to)):
                    if fam not in families:
                        raise ValueError(f"line_kinds[{i}].changeovers[{j}].{name}: {fam!r} is not one of the families")
            for j, line in enumerate(kind.lines):
                if line in seen_lines:
                    raise ValueError(f"line_kinds[{i}].lines[{j}]: {line!r} is already of kind {seen_lines[line]!r}")
                seen_lines[line] = kind.id
        routes = [frozenset((r.a, r.b)) for r in self.transport]
        for i, r in enumerate(self.transport):
            if r.a == r.b:
                raise ValueError(f"transport[{i}]: {r.a!r} to itself (use same_site_hours)")
            if routes[i] in routes[:i]:
                raise ValueError(f"transport[{i}]: {r.a!r} - {r.b!r} is listed twice")
        return self

    def check_against(self, scenario: Scenario) -> list[str]:
        """Problems with the scenario: unknown lines, machines and sites, site pairs without a route."""
        problems = []
        if scenario.name != self.scenario:
            problems.append(f"scenario: {self.scenario!r} but the scenario file is {scenario.name!r}")
        lines = {f"{s.id}/{ln.id}": ln for s in scenario.sites for ln in s.lines}
        for i, kind in enumerate(self.line_kinds):
            for j, line in enumerate(kind.lines):
                if line not in lines:
                    problems.append(f"line_kinds[{i}].lines[{j}]: {line!r} is not a line of {scenario.name!r}")
            for key, machine in kind.output_machine.items():
                if key in lines and machine != "all" and machine not in [m.id for m in lines[key].machines]:
                    problems.append(f"line_kinds[{i}].output_machine.{key}: {machine!r} is not a machine of that line")
        sites = [s.id for s in scenario.sites]
        for i, r in enumerate(self.transport):
            for name, site in (("a", r.a), ("b", r.b)):
                if site not in sites:
                    problems.append(f"transport[{i}].{name}: {site!r} is not a site of {scenario.name!r}")
        have = {frozenset((r.a, r.b)) for r in self.transport}
        for i, a in enumerate(sites):
            for b in sites[i + 1:]:
                if frozenset((a, b)) not in have:
                    problems.append(f"transport: no route between {a!r} and {b!r}")
        return problems

    def output_machine(self, scenario: Scenario, site_line: str) -> str:
        """The machine whose good count is a line's output (configured or 'all', else the line's last machine)."""
        for kind in self.line_kinds:
            if site_line in kind.output_machine:
                return kind.output_machine[site_line]
        site, line = site_line.split("/")
        for s in scenario.sites:
            for ln in s.lines:
                if s.id == site and ln.id == line:
                    return ln.machines[-1].id
        raise KeyError(site_line)


def load_network(path: Path | str | None = None, scenario: Scenario | None = None) -> Network:
    """Load and validate a network file (default: the packaged `network.yaml`) against its scenario."""
    from zhizao.seeds import SEEDS_DIR, ScenarioError, _read_yaml, load_scenario

    source = Path(path) if path is not None else SEEDS_DIR / "network.yaml"
    data = _read_yaml(source)
    try:
        network = Network.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, format_validation_error(exc)) from exc
    sc = scenario if scenario is not None else load_scenario(source.parent / "cluster.yaml")
    problems = network.check_against(sc)
    if problems:
        raise ScenarioError(source, problems)
    return network
