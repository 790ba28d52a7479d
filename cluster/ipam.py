"""Cluster-wide IPAM, pure: blocks of a weft network's subnet that hosts claim, and the
addresses a host hands out of the blocks it holds.

Calico's shape: the controller's store holds *claims* (``Claim``), each held by one
host: a **block** (a CIDR of ``block_prefix`` addresses a host allocates from on its
own, even while no controller answers) or a single **address** (``docker run --ip`` of
an address in no block, recorded before it is used).  Two rules make duplicates
impossible, whatever the interleaving and whichever host is offline:

- claims are decided in one store transaction (``choose_block``, ``address_verdict``), so
  no two blocks overlap and an address claim is never inside another host's block;
- a host hands out an address only from its own blocks, skipping the address claims
  inside them (``next_free``), or one it has claimed itself.

The store side (``choose_block``, ``address_verdict``) and the host side
(``next_free``, ``empty_blocks``) are plain functions of the claims.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

BLOCK = "block"
ADDRESS = "address"
KINDS = (BLOCK, ADDRESS)
LARGEST_BLOCK = 26          # 64 addresses, Calico's default
SMALLEST_BLOCK = 32


class IpamError(ValueError):
    """A claim the rules refuse; the message names what holds the address."""


@dataclass(frozen=True, order=True)
class Claim:
    """``cidr`` of weft network ``network`` held by ``host`` (kind: block or address)."""

    network: str
    cidr: str
    host: str
    kind: str = BLOCK

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)


def block_prefix(subnet: str) -> int:
    """The block size of a subnet: 16 blocks at least, none larger than a /26 (a /24
    gets /28 blocks of 16 addresses, a /16 gets /26 blocks)."""
    net = ipaddress.IPv4Network(subnet)
    return min(SMALLEST_BLOCK, max(LARGEST_BLOCK, net.prefixlen + 4))


def choose_block(subnet: str, prefix: int, claims: Iterable[Claim],
                 within: str | None = None) -> tuple[str, tuple[str, ...]] | None:
    """The first block of size ``prefix`` in ``within`` (else the subnet) that overlaps
    no block claim; one without address claims first, else the one with fewest.
    Returns the block and the address claims inside it (the host skips them), or None
    when every block is taken."""
    net = ipaddress.IPv4Network(subnet)
    space = ipaddress.IPv4Network(within) if within else net
    if not space.subnet_of(net):
        raise IpamError(f"{space} is not inside {net}")
    if not net.prefixlen <= prefix <= SMALLEST_BLOCK:
        raise IpamError(f"a /{prefix} block does not fit {net}")
    blocks = sorted(c.net for c in claims if c.kind == BLOCK)
    singles = [c.net.network_address for c in claims if c.kind == ADDRESS]
    best: tuple[int, ipaddress.IPv4Network] | None = None
    for cand in (space.subnets(new_prefix=prefix) if prefix >= space.prefixlen
                 else iter(())):
        if any(cand.overlaps(b) for b in blocks):
            continue
        if not any(_usable(a, net) for a in _addresses(cand)):
            continue
        inside = sum(1 for a in singles if a in cand)
        if inside == 0:
            return str(cand), ()
        if best is None or inside < best[0]:
            best = (inside, cand)
    if best is None:
        return None
    chosen = best[1]
    return str(chosen), tuple(str(a) for a in singles if a in chosen)


def address_verdict(network: str, address: str, host: str,
                    claims: Iterable[Claim]) -> Claim | None:
    """Who may use ``address``: the claim that already gives it to ``host`` (its block,
    or its own address claim), None if no claim covers it (claim it), or IpamError
    naming the other host that holds it."""
    addr = ipaddress.IPv4Address(address)
    for c in claims:
        if addr not in c.net:
            continue
        if c.host != host:
            what = "block " + c.cidr if c.kind == BLOCK else "address"
            raise IpamError(f"{address} of network {network!r} is held by host {c.host} "
                            f"({what}); choose another address or run the container there")
        return c
    return None


def _addresses(block: ipaddress.IPv4Network) -> Iterator[ipaddress.IPv4Address]:
    return iter(block) if block.num_addresses > 1 else iter((block.network_address,))


def _usable(addr: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network) -> bool:
    """A host address of the subnet (not its network or broadcast address)."""
    return addr in subnet and (subnet.num_addresses <= 2 or addr not in (
        subnet.network_address, subnet.broadcast_address))


def next_free(subnet: str, blocks: Iterable[str], used: Iterable[str]) -> str | None:
    """The lowest address of ``blocks`` that is a host address of the subnet and not in
    ``used`` (handed out, the gateway, others' address claims); None when all are."""
    net = ipaddress.IPv4Network(subnet)
    taken = set(used)
    for cidr in sorted(blocks, key=lambda c: ipaddress.IPv4Network(c)):
        for addr in _addresses(ipaddress.IPv4Network(cidr)):
            if _usable(addr, net) and str(addr) not in taken:
                return str(addr)
    return None


def block_of(address: str, blocks: Iterable[str]) -> str | None:
    """The block (of ``blocks``) that holds ``address``."""
    addr = ipaddress.IPv4Address(address)
    return next((b for b in blocks if addr in ipaddress.IPv4Network(b)), None)


def empty_blocks(blocks: Iterable[str], handed_out: Iterable[str]) -> list[str]:
    """The blocks none of whose addresses is handed out."""
    out = []
    addrs = [ipaddress.IPv4Address(a) for a in handed_out]
    for b in blocks:
        net = ipaddress.IPv4Network(b)
        if not any(a in net for a in addrs):
            out.append(b)
    return out


def check_claim(network: str, cidr: str, host: str, kind: str) -> Claim:
    """A claim's own values (a store document, an import): IpamError if not sound."""
    if kind not in KINDS:
        raise IpamError(f"kind {str(kind)[:20]!r} is not one of {', '.join(KINDS)}")
    try:
        net = ipaddress.IPv4Network(cidr)
    except ValueError:
        raise IpamError(f"{str(cidr)[:40]!r} is not an IPv4 CIDR") from None
    if kind == ADDRESS and net.prefixlen != 32:
        raise IpamError(f"an address claim is one address, not {net}")
    return Claim(network, str(net), host, kind)
