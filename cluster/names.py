"""A container's name on a weft network, as agents report it and the controller keeps it
(docs/dns.md).  Shared by both daemons: the agent builds and serves records, the
controller validates and stores them."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# weft's resolver on every host (link-local: never routed anywhere else); containers'
# queries reach it through their tenant's gateway port, also with egress off
RESOLVER_ADDRESS = "169.254.53.53"
RESOLVER_PORT = 53
MAX_NAMES_PER_HOST = 20000          # records one agent may report (a bound on its PUT)
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def valid_name(name: str) -> bool:
    """A DNS name weft can serve (lower-case labels of letters, digits, _ and -)."""
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(p) for p in name.split("."))


@dataclass(frozen=True, order=True)
class NameRecord:
    """One name of one container on one weft network.  ``primary``: the container's own
    name (what a PTR answers), not an alias."""

    network: str
    name: str
    ip: str
    container: str = ""
    primary: bool = False

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"name record: {self.name!r} is not a DNS name")
        ipaddress.IPv4Address(self.ip)
        if not self.network or len(self.network) > 64:
            raise ValueError(f"name record {self.name!r}: bad network {self.network!r}")
        if len(self.container) > 64:
            raise ValueError(f"name record {self.name!r}: container id longer than 64")

    def to_json(self) -> dict[str, Any]:
        return {"network": self.network, "name": self.name, "ip": self.ip,
                "container": self.container, "primary": self.primary}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> NameRecord:
        """Raises KeyError/TypeError/ValueError."""
        if not isinstance(doc, Mapping):
            raise TypeError("a name record is an object")
        return cls(str(doc["network"]), str(doc["name"]).lower(), str(doc["ip"]),
                   str(doc.get("container") or ""), bool(doc.get("primary", False)))
