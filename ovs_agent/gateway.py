"""Tenants' doors to the host stack: ``wx-<id>`` ports, policy routing, NAT, bounds.

For each tenant the controller lists for this host (``GET /v1/hosts/{host}/gateways``),
every pass keeps (docs/routing.md section 3):

* an OVS internal port ``wx-<id>`` on br0 (its MAC derived from the id, so the
  controller's egress flows know it without being told);
* the link up, at the container MTU, without IPv6; the kernel's next hop
  169.254.77.2 on it as a permanent neighbour with the tenant's next-hop MAC;
* routing table ``0x77000000 + id`` holding the tenant's subnets via that next hop,
  and a rule sending the tenant's mark there (replies find their tenant by mark);
* ``table ip weft-nat`` (``ovs_agent.nat``) with the tenants and the published ports
  the Docker plugin recorded in br0's external_ids;
* OVS conntrack zone limits for the tenants' ACL zones.

Tenants no longer listed lose their port, rule and table.  A controller that cannot be
asked changes nothing (the last list stays: egress keeps working through a controller
restart); one that does not know the route (404, an older controller) means no gateways.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cluster.hostsfile import BRIDGE
from ovs_agent import nat
from ovs_agent.desired import OWNER, OWNER_KEY, ROLE_KEY
from ovs_agent.hostnet import ensure_tx_checksum, ip
from ovs_agent.nat import Gateway, Published

LOG = logging.getLogger("ovs-agent")
ROLE = "gateway"                        # weft-role of wx-<id> ports
TENANT_ID_KEY = "weft-tenant-id"
PUBLISHED_PREFIX = "weft-dpub-"         # br0 external_ids key + endpoint: a Published as JSON
RULE_PREF = 31000                       # before the main table (32766)
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/src_valid_mark": "1"}
_LIMIT = re.compile(r"zone=(\d+),limit=(\d+)")


def fetch(api_url: str, host: str, timeout: float = 3) -> list[Gateway]:
    """This host's gateways from one controller; 404 (a controller without the route, or
    a host it does not know yet): none.  Raises httpx.HTTPError otherwise.  An entry that
    does not parse is skipped with a warning (the others still work)."""
    import httpx        # lazily, as attach does
    from ovs_agent.attach import api_headers
    resp = httpx.get(f"{api_url.rstrip('/')}/v1/hosts/{host}/gateways", timeout=timeout,
                     headers=api_headers())
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return parse_gateways(resp.json())


def parse_gateways(body: object) -> list[Gateway]:
    entries = body.get("gateways") if isinstance(body, dict) else None
    out = []
    for doc in entries if isinstance(entries, list) else []:
        try:
            out.append(Gateway.from_json(doc))
        except (KeyError, TypeError, ValueError) as exc:
            LOG.warning("controller's gateway entry %r ignored: %s", doc, exc)
    return out


def published_records(api) -> list[Published]:
    """The published ports the Docker plugin recorded on br0 (``weft-dpub-<endpoint>``)."""
    rows = api.db_find("Bridge", ("name", "=", BRIDGE), columns=["external_ids"]).execute(
        check_error=True)
    out = []
    for row in rows:
        for key, value in sorted(row["external_ids"].items()):
            if not key.startswith(PUBLISHED_PREFIX):
                continue
            try:
                out.append(Published(**json.loads(value)))
            except (TypeError, ValueError) as exc:
                LOG.warning("br0 external_ids %s ignored (not a published port): %s", key, exc)
    return out


def gateway_ports(api) -> dict[str, dict]:
    """wx-<id> Interface rows the agent made (name -> row)."""
    return {r["name"]: r for r in api.db_list(
        "Interface", columns=["name", "type", "mac", "external_ids"]).execute(check_error=True)
        if r["external_ids"].get(OWNER_KEY) == OWNER and r["external_ids"].get(ROLE_KEY) == ROLE}


def _mac_column(row: dict) -> str | None:
    mac = row["mac"]
    return (mac or [None])[0] if isinstance(mac, list) else mac


def ensure_ports(api, gateways: Iterable[Gateway]) -> list[str]:
    """One OVSDB transaction making br0's wx ports exactly these (none when nothing
    differs); what it did."""
    want = {g.port: g for g in gateways}
    have = gateway_ports(api)
    gone = sorted(set(have) - set(want))
    changed = []
    for name, g in sorted(want.items()):
        ext = {OWNER_KEY: OWNER, ROLE_KEY: ROLE, TENANT_ID_KEY: str(g.id),
               "weft-tenant": g.tenant}
        row = have.get(name)
        if row is None or not (row["type"] == "internal" and _mac_column(row) == g.mac
                               and row["external_ids"] == ext):
            changed.append((name, g, ext, row is None))
    if not gone and not changed:
        return []
    with api.transaction(check_error=True) as txn:
        for name in gone:
            txn.add(api.del_port(name, bridge=BRIDGE, if_exists=True))
        for name, g, ext, new in changed:
            if new:
                txn.add(api.add_port(BRIDGE, name, may_exist=True))
            txn.add(api.db_set("Interface", name, ("type", "internal"), ("mac", g.mac),
                               ("external_ids", ext)))
    return [f"del_port {n}" for n in gone] + [
        f"{'add_port' if new else 'set_port'} {name}" for name, _, _, new in changed]


def _json(*args: str) -> list:
    out = ip("-j", *args, check=False)
    try:
        return json.loads(out) if out.strip() else []
    except ValueError:
        return []


def _set_sysctl(path: str, value: str) -> bool:
    f = Path("/proc/sys") / path
    try:
        if f.read_text().strip() == value:
            return False
        f.write_text(value)
        return True
    except OSError as exc:
        LOG.warning("sysctl %s=%s: %s", path.replace("/", "."), value, exc)
        return False


def ensure_link(g: Gateway, mtu: int, tx_off: bool = False) -> list[str] | None:
    """The kernel side of one wx port; None while vswitchd has not made the device yet.

    ``tx_off``: the userspace datapath reads the port's tap and does not complete partial
    checksums (hostnet.needs_tx_checksum_off): the host's own connections to a published
    port would reach the container with bad TCP checksums."""
    links = _json("link", "show", "dev", g.port)
    if not links:
        return None
    link, done = links[0], []
    if link.get("address") != g.mac:
        ip("link", "set", "dev", g.port, "address", g.mac)
        done.append(f"address {g.mac}")
    if link.get("mtu") != mtu:
        ip("link", "set", "dev", g.port, "mtu", str(mtu))
        done.append(f"mtu {mtu}")
    if _set_sysctl(f"net/ipv6/conf/{g.port}/disable_ipv6", "1"):
        done.append("disable_ipv6")
    if "UP" not in link.get("flags", []):
        ip("link", "set", "dev", g.port, "up")
        done.append("up")
    if tx_off and ensure_tx_checksum(g.port, on=False):
        done.append("tx checksum offload off")
    neigh = [n for n in _json("neigh", "show", "dev", g.port)
             if n.get("dst") == nat.NEXT_HOP]
    if not (neigh and neigh[0].get("lladdr") == g.next_hop_mac
            and "PERMANENT" in neigh[0].get("state", [])):
        ip("neigh", "replace", nat.NEXT_HOP, "lladdr", g.next_hop_mac, "dev", g.port,
           "nud", "permanent")
        done.append(f"neigh {nat.NEXT_HOP} {g.next_hop_mac}")
    table = str(g.route_table)
    routes = {r.get("dst"): r for r in _json("route", "show", "table", table)}
    for subnet in g.subnets:
        r = routes.pop(subnet, None)
        if not (r and r.get("gateway") == nat.NEXT_HOP and r.get("dev") == g.port):
            ip("route", "replace", subnet, "via", nat.NEXT_HOP, "dev", g.port, "onlink",
               "table", table)
            done.append(f"route {subnet}")
    for dst in routes:
        ip("route", "del", dst, "table", table, check=False)
        done.append(f"route -{dst}")
    return done


def _our_rules() -> list[tuple[int, dict]]:
    """fwmark rules into a tenant's table: (table, rule)."""
    out = []
    for r in _json("rule", "show"):
        try:
            table = int(r.get("table", ""))
        except ValueError:
            continue
        if nat.ROUTE_TABLE_BASE < table <= nat.ROUTE_TABLE_BASE + 0xFFFF:
            out.append((table, r))
    return out


def ensure_rules(gateways: Iterable[Gateway]) -> list[str]:
    """Exactly one ``fwmark <mark> lookup <table>`` rule per tenant; stale tables flushed."""
    want = {g.route_table: g.mark for g in gateways}
    kept: set[int] = set()
    done = []
    for table, rule in _our_rules():
        fwmark = int(str(rule.get("fwmark", "0")).split("/")[0], 0)
        if want.get(table) == fwmark and rule.get("priority") == RULE_PREF \
                and table not in kept:
            kept.add(table)
            continue
        ip("rule", "del", "priority", str(rule.get("priority")), "lookup", str(table),
           check=False)
        done.append(f"rule -{table:#x}")
        if table not in want:
            ip("route", "flush", "table", str(table), check=False)
    for table, mark in sorted(want.items()):
        if table not in kept:
            ip("rule", "add", "priority", str(RULE_PREF), "fwmark", f"{mark:#x}/0xffffffff",
               "lookup", str(table))
            done.append(f"rule {mark:#x} -> {table:#x}")
    return done


def ct_limits() -> dict[int, int] | None:
    """OVS's conntrack zone limits (zone -> limit); None when ovs-appctl fails."""
    try:
        res = subprocess.run(["ovs-appctl", "dpctl/ct-get-limits"], capture_output=True,
                             text=True, check=False)
    except OSError:
        return None
    if res.returncode:
        return None
    return {int(z): int(n) for z, n in _LIMIT.findall(res.stdout)}


@dataclass
class GatewayKeeper:
    """What the agent last applied, so a pass changes only what differs."""
    nft: str | None = field(default_factory=lambda: shutil.which("nft"))
    applied: str | None = None              # the nft script last written
    limited: set[int] = field(default_factory=set)  # OVS zones we set limits on
    last: list[Gateway] = field(default_factory=list)
    _waiting: set[str] = field(default_factory=set)  # wx ports vswitchd has not made yet
    _clean: bool = False                    # the last pass had nothing and left nothing

    def ensure(self, api, gateways: list[Gateway] | None, mtu: int,
               tx_off: bool = False) -> list[str]:
        """One pass; ``gateways`` None: the controller was not asked or did not answer
        (the last list stays).  ``tx_off``: see ensure_link.  Returns what changed."""
        if gateways is not None:
            self.last = sorted({g.id: g for g in gateways}.values(), key=lambda g: g.id)
        gws = self.last
        published = published_records(api)
        if not gws and not published and self._clean:
            return []
        done = ensure_ports(api, gws)
        if gws:
            done += [f"sysctl {k}" for k, v in SYSCTLS.items() if _set_sysctl(k, v)]
        ready = []
        for g in gws:
            changed = ensure_link(g, mtu, tx_off)
            if changed is None:
                if g.port not in self._waiting:
                    LOG.info("%s: waiting for ovs-vswitchd to make the device", g.port)
                self._waiting.add(g.port)
                continue
            self._waiting.discard(g.port)
            ready.append(g)
            done += [f"{g.port}: {c}" for c in changed]
        # a rule for a port not made yet would route replies nowhere: only ready ones
        done += ensure_rules(ready)
        done += self._ensure_nat(gws, published)
        done += self._ensure_limits(gws)
        self._clean = not gws and not published
        return done

    def _ensure_nat(self, gws: list[Gateway], published: list[Published]) -> list[str]:
        if self.nft is None:
            return []
        present = subprocess.run([self.nft, "list", "table", "ip", nat.TABLE],
                                 capture_output=True, check=False).returncode == 0
        if not gws and not published:
            # nothing to NAT: no table, so no NAT hooks (conntrack) on this host for us
            if present:
                subprocess.run([self.nft, "delete", "table", "ip", nat.TABLE],
                               capture_output=True, check=False)
                self.applied = None
                return [f"nft: table ip {nat.TABLE} removed"]
            return []
        want = nat.ruleset(gws, published)
        if want == self.applied and present:
            return []
        res = subprocess.run([self.nft, "-f", "-"], input=want, text=True, capture_output=True,
                             check=False)
        if res.returncode:
            LOG.error("nft refused table ip %s: %s", nat.TABLE, res.stderr.strip())
            return []
        self.applied = want
        return [f"nft: table ip {nat.TABLE} written ({len(gws)} tenants, "
                f"{len(published)} published ports)"]

    def _ensure_limits(self, gws: list[Gateway]) -> list[str]:
        """OVS zone limits for the tenants here (set again after vswitchd restarts: it
        keeps them in the datapath only); limits of tenants gone are removed."""
        want = {g.id: g.conntrack_limit for g in gws if g.conntrack_limit > 0}
        if not want and not self.limited:
            return []
        have = ct_limits()
        if have is None:
            return []
        done = []
        stale = sorted(z for z in self.limited if z not in want and z in have)
        if stale:
            subprocess.run(["ovs-appctl", "dpctl/ct-del-limits",
                            "zone=" + ",".join(str(z) for z in stale)],
                           capture_output=True, check=False)
            done.append(f"ct limits removed: zones {stale}")
        missing = {z: n for z, n in want.items() if have.get(z) != n}
        if missing:
            res = subprocess.run(["ovs-appctl", "dpctl/ct-set-limits",
                                  *(f"zone={z},limit={n}" for z, n in sorted(missing.items()))],
                                 capture_output=True, text=True, check=False)
            if res.returncode:
                LOG.warning("ovs-appctl dpctl/ct-set-limits: %s", res.stderr.strip())
            else:
                done.append("ct limits " + ", ".join(f"zone {z}={n}"
                                                     for z, n in sorted(missing.items())))
        self.limited = set(want)
        return done
