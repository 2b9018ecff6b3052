"""Mosquitto ACL blocks bound to authenticated identities (broker/mosquitto/acl).

An edge agent's identity is `{site}.{edge node}` (`edge_identity`): its username in the password file, or
the CN of its TLS certificate (use_identity_as_username). Ids never contain '.' (the id rule), so the identity
names its site and node unambiguously. `edge_block` writes the ACL lines of one agent; `acl_text` is the
shipped ACL with a block for every edge identity among the given usernames (what the demo's broker loads).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable

from zhizao.broker.contract.ids import validate_id

__all__ = ["acl_text", "edge_block", "edge_identity", "parse_edge_identity", "shipped_acl"]

_WRITES = ("NBIRTH/{e}", "NDEATH/{e}", "NDATA/{e}", "DBIRTH/{e}/+", "DDEATH/{e}/+", "DDATA/{e}/+")


def edge_identity(site: str, edge_node: str) -> str:
    """The MQTT username (or certificate CN) of edge node `edge_node` of site `site`."""
    return f"{validate_id('site', site)}.{validate_id('edge_node', edge_node)}"


def parse_edge_identity(identity: str) -> tuple[str, str] | None:
    """(site, edge node) of an edge identity, None for any other username (the cloud, a bridge)."""
    site, dot, edge = identity.partition(".")
    if not dot:
        return None
    return validate_id("site", site), validate_id("edge_node", edge)


def edge_block(site: str, edge_node: str) -> str:
    """The ACL block of one edge agent: its own Sparkplug topics, command results and agent info to write;
    its own commands and delivery acks to read."""
    lines = [f"user {edge_identity(site, edge_node)}"]
    lines += [f"topic write spBv1.0/{site}/{t.format(e=edge_node)}" for t in _WRITES]
    lines += [f"topic read spBv1.0/{site}/NCMD/{edge_node}", f"topic read spBv1.0/{site}/DCMD/{edge_node}/+",
              f"topic read zhizao/v1/ack/{site}/{edge_node}", f"topic write zhizao/v1/cmd/{site}/{edge_node}",
              f"topic write zhizao/v1/edge/{site}/{edge_node}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def shipped_acl() -> str:
    """The text of broker/mosquitto/acl."""
    return (importlib.resources.files("zhizao.broker") / "mosquitto" / "acl").read_text()


def acl_text(usernames: Iterable[str]) -> str:
    """The shipped ACL plus the block of every edge identity in `usernames` it does not hold yet."""
    text = shipped_acl()
    for name in usernames:
        parsed = parse_edge_identity(name)
        if parsed is not None and f"\nuser {name}\n" not in text:
            text += "\n" + edge_block(*parsed)
    return text
