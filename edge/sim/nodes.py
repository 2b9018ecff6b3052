"""The simulator's node table: one row per OPC UA variable, in a fixed order the model writes into by index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zhizao.seeds.model import Machine, Scenario

NAMESPACE_URI = "urn:zhizao:sim"
ENDPOINT_PATH = "/zhizao/sim"

# PackML-style tags every machine carries, in this order, with their OPC UA types.
PACKML_TAGS: tuple[tuple[str, str], ...] = (
    ("State", "Int32"),
    ("StopReason", "Int32"),
    ("ProdProcessedCount", "Int32"),
    ("ProdDefectiveCount", "Int32"),
    ("MachSpeed", "Double"),
    ("CurMachSpeed", "Double"),
    ("MachDesignSpeed", "Double"),
)
T_STATE, T_REASON, T_PROCESSED, T_DEFECTIVE, T_SETPOINT, T_SPEED, T_DESIGN = range(len(PACKML_TAGS))
METHODS = ("Start", "Stop", "Reset")


def node_id(path: str, tag: str) -> str:
    """The string node id `ns=2;s={site}/{line}/{machine}/{tag}`."""
    return f"ns=2;s={path}/{tag}"


@dataclass(frozen=True)
class NodeTable:
    """Every variable the simulator serves: ids, types, and index arrays the model uses to write values."""

    machine_paths: list[str]
    machines: list[Machine]
    site_index: npt.NDArray[np.int64]  # per machine
    site_ids: list[str]
    tags: list[str]  # per node, the tag after the machine path
    node_ids: list[str]  # per node, "ns=2;s=..."
    is_int: npt.NDArray[np.bool_]  # per node: Int32 (else Double)
    node_machine: npt.NDArray[np.int64]  # per node: machine index
    packml: npt.NDArray[np.int64]  # [machine, tag] -> node index for PACKML_TAGS
    signal_nodes: npt.NDArray[np.int64]  # per process signal (scenario order): node index
    signal_machine: npt.NDArray[np.int64]  # per process signal: machine index

    @property
    def size(self) -> int:
        """Number of variables."""
        return len(self.node_ids)

    def index_of(self, path: str, tag: str) -> int:
        """Node index of a machine tag (raises KeyError for an unknown one)."""
        return self.node_ids.index(node_id(path, tag))


def build_node_table(scenario: Scenario) -> NodeTable:
    """Lay out the nodes of a scenario: per machine the PackML tags, then its process signals."""
    paths: list[str] = []
    machines: list[Machine] = []
    site_index: list[int] = []
    for s_i, site in enumerate(scenario.sites):
        for line in site.lines:
            for machine in line.machines:
                paths.append(f"{site.id}/{line.id}/{machine.id}")
                machines.append(machine)
                site_index.append(s_i)
    tags: list[str] = []
    ids: list[str] = []
    is_int: list[bool] = []
    node_machine: list[int] = []
    packml = np.zeros((len(paths), len(PACKML_TAGS)), dtype=np.int64)
    signal_nodes: list[int] = []
    signal_machine: list[int] = []
    for m_i, (path, machine) in enumerate(zip(paths, machines, strict=True)):
        for t_i, (tag, vtype) in enumerate(PACKML_TAGS):
            packml[m_i, t_i] = len(ids)
            tags.append(tag)
            ids.append(node_id(path, tag))
            is_int.append(vtype == "Int32")
            node_machine.append(m_i)
        for signal in machine.signals:
            signal_nodes.append(len(ids))
            signal_machine.append(m_i)
            tags.append(signal.name)
            ids.append(node_id(path, signal.name))
            is_int.append(False)
            node_machine.append(m_i)
    return NodeTable(
        machine_paths=paths,
        machines=machines,
        site_index=np.asarray(site_index, dtype=np.int64),
        site_ids=[s.id for s in scenario.sites],
        tags=tags,
        node_ids=ids,
        is_int=np.asarray(is_int, dtype=np.bool_),
        node_machine=np.asarray(node_machine, dtype=np.int64),
        packml=packml,
        signal_nodes=np.asarray(signal_nodes, dtype=np.int64),
        signal_machine=np.asarray(signal_machine, dtype=np.int64),
    )
