"""A packet to trace, validated field by field, and the flow string OVS's ofproto/trace
takes (shared: the controller builds it, each agent re-validates it before running
``ovs-appctl ofproto/trace``, so no string from a request ever reaches a switch as is).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Packet", "PROTOCOLS", "MAC_RE"]

PROTOCOLS = ("icmp", "tcp", "udp")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class Packet:
    """A packet as one hop sees it; every field validated, so ``flow()`` is safe to run.

    ``tunnel``: (in tunnel id, tun_src, tun_dst) when it enters from a peer's tunnel."""

    in_port: int
    dl_src: str
    dl_dst: str
    nw_src: str
    nw_dst: str
    proto: str = "icmp"
    dst_port: int | None = None
    src_port: int = 40000
    nw_ttl: int = 64
    tunnel: tuple[int, str, str] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.in_port <= 0xFFFFFF00:
            raise ValueError(f"in_port {self.in_port} is not an OpenFlow port number")
        for name in ("dl_src", "dl_dst"):
            if not MAC_RE.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)!r} is not a lowercase MAC")
        for name in ("nw_src", "nw_dst"):
            ipaddress.IPv4Address(getattr(self, name))      # ValueError names the value
        if self.proto not in PROTOCOLS:
            raise ValueError(f"proto {self.proto!r} is not one of {', '.join(PROTOCOLS)}")
        for name, value, lo in (("dst_port", self.dst_port, 1), ("src_port", self.src_port, 1),
                                ("nw_ttl", self.nw_ttl, 0)):
            if value is not None and not (isinstance(value, int) and lo <= value <= 65535):
                raise ValueError(f"{name} {value!r} is out of range")
        if self.nw_ttl > 255:
            raise ValueError(f"nw_ttl {self.nw_ttl} is out of range")
        if self.dst_port is not None and self.proto == "icmp":
            raise ValueError("dst_port needs proto tcp or udp")
        if self.tunnel is not None:
            tid, src, dst = self.tunnel
            if not 0 <= tid < 1 << 64:
                raise ValueError(f"tun_id {tid} is out of range")
            ipaddress.IPv4Address(src)
            ipaddress.IPv4Address(dst)

    def flow(self) -> str:
        """The flow ``ovs-appctl ofproto/trace`` takes: one argv element, never a shell."""
        parts = [self.proto, f"in_port={self.in_port}"]
        if self.tunnel is not None:
            tid, src, dst = self.tunnel
            parts += [f"tun_id={tid:#x}", f"tun_src={src}", f"tun_dst={dst}"]
        parts += [f"dl_src={self.dl_src}", f"dl_dst={self.dl_dst}", f"nw_src={self.nw_src}",
                  f"nw_dst={self.nw_dst}", f"nw_ttl={self.nw_ttl}"]
        if self.proto == "icmp":
            parts += ["icmp_type=8", "icmp_code=0"]
        else:
            parts += [f"tp_src={self.src_port}", f"tp_dst={self.dst_port or 80}"]
            if self.proto == "tcp":
                parts.append("tcp_flags=syn")       # a new connection (ACLs decide those)
        return ",".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in (
            "in_port", "dl_src", "dl_dst", "nw_src", "nw_dst", "proto", "dst_port", "src_port",
            "nw_ttl")}
        d["tunnel"] = list(self.tunnel) if self.tunnel else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Packet:
        """The agent's side: a JSON body into a validated packet (ValueError/TypeError)."""
        known = {"in_port", "dl_src", "dl_dst", "nw_src", "nw_dst", "proto", "dst_port",
                 "src_port", "nw_ttl", "tunnel"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        args = dict(d)
        for k in ("in_port", "src_port", "nw_ttl", "dst_port"):
            if k in args and args[k] is not None and (isinstance(args[k], bool)
                                                       or not isinstance(args[k], int)):
                raise ValueError(f"{k} must be an integer")
        for k in ("dl_src", "dl_dst", "nw_src", "nw_dst", "proto"):
            if k in args and not isinstance(args[k], str):
                raise ValueError(f"{k} must be a string")
        tun = args.get("tunnel")
        if tun is not None:
            if not (isinstance(tun, list) and len(tun) == 3 and isinstance(tun[0], int)
                    and all(isinstance(x, str) for x in tun[1:])):
                raise ValueError("tunnel must be [tun_id, tun_src, tun_dst]")
            args["tunnel"] = (tun[0], tun[1], tun[2])
        return cls(**args)
