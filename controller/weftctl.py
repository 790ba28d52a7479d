"""`weftctl`: the REST API from a shell.  Tables for people, --json for scripts.

    weftctl tenant create NAME [--vlan N] [--subnet CIDR] [--subnet6 CIDR] [--vni N] [--description TEXT]
                 [--gateway IP|none] [--gateway6 IP6|none] [--egress on|off] [--conntrack-limit N]
    weftctl tenant list | show NAME | delete NAME [--force]
    weftctl tenant set NAME --conntrack-limit N
    weftctl network create NAME --tenant T [--subnet CIDR] [--subnet6 CIDR] [--gateway IP|none]
                 [--gateway6 IP6|none] [--egress on|off] [--vni N] [--vlan N] [--description TEXT]
    weftctl network list [--tenant T] | show NAME | delete NAME [--force]
    weftctl network set NAME [--subnet CIDR|none] [--subnet6 CIDR|none] [--gateway IP|none]
                 [--gateway6 IP6|none] [--egress on|off]
                 [--vlan N|none] [--description TEXT]
    weftctl route add TENANT PREFIX --via IP|IP6 [--mac MAC] | list TENANT | del TENANT PREFIX
    weftctl port bind HOST PORT [NETWORK] [--mac MAC] [--trunk N1,N2] [--replace]
    weftctl port unbind HOST PORT | list [--host H] [--tenant T]
    weftctl qos limit HOST (--port PORT | --tenant T) (--kbps N [--burst-kb N] |
                 --pps N [--burst-pkts N])
    weftctl qos limit-set ID [--kbps N] [--burst-kb N] [--pps N] [--burst-pkts N] | limit-del ID
    weftctl qos rule TENANT --priority N [--proto tcp] [--src CIDR] [--dst CIDR]
                 [--src-port N] [--dst-port N] [--dscp N] [--kbps N] [--set-dscp N] [--queue N]
    weftctl qos rule-set ID [--kbps N] [--set-dscp N] | rule-del ID
    weftctl qos list | stats
    weftctl acl list TENANT [--counters] | default TENANT allow|deny
    weftctl acl add TENANT --priority N --action allow|drop [--direction ingress|egress]
                 [--proto tcp] [--remote CIDR] [--local CIDR] [--port N] [--icmp-type N]
    weftctl acl set TENANT ID [same options] | del TENANT ID
    weftctl switch list
    weftctl flows HOST
    weftctl topology                          (hosts, tunnels, tenants, ports, counters)
    weftctl graph [--output FILE.svg] [--title TEXT]   (the same as an SVG, for a report)
    weftctl export > model.json | import model.json [--replace]

The API address comes from --api or WEFT_API (http://HOST:PORT or unix:/path),
the token from --token or WEFT_API_TOKEN.  Exit status: 0 ok, 1 the API
refused the request (its error is printed), 2 bad usage or unreachable API.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import httpx

from cluster.version import version
from controller.topology_svg import to_svg


def seg(value: object) -> str:
    """One URL path segment: '/', '?', '#' and '..' can never change which resource is meant."""
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


def client(api: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if api.startswith("unix:"):
        return httpx.Client(transport=httpx.HTTPTransport(uds=api[5:]), base_url="http://weft",
                            headers=headers, timeout=10)
    return httpx.Client(base_url=api, headers=headers, timeout=10)


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="weftctl", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    ap.add_argument("--api", default=os.environ.get("WEFT_API", "http://127.0.0.1:8080"))
    ap.add_argument("--token", default=os.environ.get("WEFT_API_TOKEN"))
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    sub = ap.add_subparsers(dest="noun", required=True)
    for nouns in (_tenant_args, _network_args, _route_args, _port_args, _qos_args, _acl_args):
        nouns(sub)
    s = sub.add_parser("switch").add_subparsers(dest="verb", required=True)
    s.add_parser("list")
    sub.add_parser("flows").add_argument("host")
    tr = sub.add_parser("trace", help="the path a packet takes, traced on the switches' own "
                                      "flows: hosts, tables, tunnels, the verdict and its cause")
    tr.add_argument("src", help="the sending port: HOST/PORT, its address, or a container name")
    tr.add_argument("dst", help="an IPv4 address, HOST/PORT or a container name")
    tr.add_argument("--proto", choices=["icmp", "tcp", "udp"])
    tr.add_argument("--port", type=int, help="destination port (tcp/udp; alone: tcp)")
    tr.add_argument("--tenant", help="the tenant or network, when an address is bound in several")
    tr.add_argument("--src-ip", help="send from this address (a spoofed packet)")
    tr.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    sub.add_parser("topology", help="hosts, tunnels, tenants, ports and their counters")
    g = sub.add_parser("graph", help="the topology as SVG (for a report)")
    g.add_argument("--output", "-o", help="write the SVG here (default: stdout)")
    g.add_argument("--title", default="weft topology")
    sub.add_parser("export", help="the whole model as JSON (a backup)")
    im = sub.add_parser("import", help="restore an export (all or nothing)")
    im.add_argument("file", help="an export's JSON file, - for stdin")
    im.add_argument("--replace", action="store_true",
                    help="overwrite a store that is not empty")
    return ap


def _tenant_args(sub: Any) -> None:
    t = sub.add_parser("tenant").add_subparsers(dest="verb", required=True)
    tc = t.add_parser("create")
    tc.add_argument("name")
    tc.add_argument("--vlan", type=int)
    tc.add_argument("--vni", type=int)
    tc.add_argument("--subnet")
    tc.add_argument("--subnet6", help="an IPv6 subnet beside --subnet (dual-stack)")
    tc.add_argument("--description", default="")
    _gateway_args(tc)
    tc.add_argument("--conntrack-limit", type=int,
                    help="connections per host through NAT and conntrack (default 65536)")
    ts = t.add_parser("set", help="tenant-wide settings (a network's: network set)")
    ts.add_argument("name")
    ts.add_argument("--conntrack-limit", type=int, required=True)
    t.add_parser("list")
    t.add_parser("show").add_argument("name")
    td = t.add_parser("delete")
    td.add_argument("name")
    td.add_argument("--force", action="store_true", help="also remove its port bindings")


def _none_or(kind: Any) -> Any:
    """An option value where ``none`` means null (no gateway, no VLAN, no subnet)."""
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else kind(text)
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


_UNSET = object()       # an option not given (None would mean "none": a null)


def _gateway_args(p: Any) -> None:
    p.add_argument("--gateway", type=_none_or(str), default=_UNSET,
                   help="the gateway address, or none (default: the subnet's first address)")
    p.add_argument("--gateway6", type=_none_or(str), default=_UNSET,
                   help="the IPv6 gateway, an address of --subnet6, or none (default: "
                        "the IPv6 subnet's first address when there is a gateway)")
    p.add_argument("--egress", choices=["on", "off"],
                   help="reach outside the cluster, NATed by the host (default: on with a "
                        "gateway)")


def _network_args(sub: Any) -> None:
    n = sub.add_parser("network", help="networks inside a tenant (each its own segment)")
    nv = n.add_subparsers(dest="verb", required=True)
    nc = nv.add_parser("create")
    nc.add_argument("name")
    nc.add_argument("--tenant", required=True)
    nc.add_argument("--subnet")
    nc.add_argument("--subnet6", help="an IPv6 subnet beside --subnet (dual-stack), "
                                      "like fd00:10::/64")
    nc.add_argument("--vni", type=int)
    nc.add_argument("--vlan", type=int)
    nc.add_argument("--description")
    _gateway_args(nc)
    nv.add_parser("list").add_argument("--tenant")
    nv.add_parser("show").add_argument("name")
    ns = nv.add_parser("set")
    ns.add_argument("name")
    ns.add_argument("--subnet", type=_none_or(str), default=_UNSET)
    ns.add_argument("--subnet6", type=_none_or(str), default=_UNSET,
                    help="an IPv6 subnet (dual-stack), or none")
    ns.add_argument("--vlan", type=_none_or(int), default=_UNSET)
    ns.add_argument("--description")
    _gateway_args(ns)
    nd = nv.add_parser("delete")
    nd.add_argument("name")
    nd.add_argument("--force", action="store_true", help="also remove its port bindings")


def _route_args(sub: Any) -> None:
    r = sub.add_parser("route", help="a tenant's static routes").add_subparsers(
        dest="verb", required=True)
    ra = r.add_parser("add")
    ra.add_argument("tenant")
    ra.add_argument("prefix", help="IPv4 CIDR, 0.0.0.0/0 for a default route; or IPv6 "
                                   "(via an IPv6 next hop)")
    ra.add_argument("--via", required=True, help="next hop in one of the tenant's networks")
    ra.add_argument("--mac", help="the next hop's MAC (unless a bound port has the address)")
    r.add_parser("list").add_argument("tenant")
    rd = r.add_parser("del")
    rd.add_argument("tenant")
    rd.add_argument("prefix")


def _port_args(sub: Any) -> None:
    p = sub.add_parser("port").add_subparsers(dest="verb", required=True)
    pb = p.add_parser("bind", help="access: NETWORK (a network or a tenant); trunk: --trunk "
                                   "and an optional native NETWORK")
    pb.add_argument("host")
    pb.add_argument("port")
    pb.add_argument("tenant", nargs="?", metavar="network")
    pb.add_argument("--mac")
    pb.add_argument("--trunk", help="comma-separated tenants carried tagged (makes a trunk)")
    pb.add_argument("--replace", action="store_true", help="change an existing binding")
    pu = p.add_parser("unbind")
    pu.add_argument("host")
    pu.add_argument("port")
    pl = p.add_parser("list")
    pl.add_argument("--host")
    pl.add_argument("--tenant")


def _qos_args(sub: Any) -> None:
    q = sub.add_parser("qos").add_subparsers(dest="verb", required=True)
    ql = q.add_parser("limit", help="rate-limit what a port sends, or a tenant on a host")
    ql.add_argument("host")
    grp = ql.add_mutually_exclusive_group(required=True)
    grp.add_argument("--port")
    grp.add_argument("--tenant")
    unit = ql.add_mutually_exclusive_group(required=True)
    unit.add_argument("--kbps", type=int, help="rate in kbit/s")
    unit.add_argument("--pps", type=int, help="rate in packets/s (against small-frame floods)")
    ql.add_argument("--burst-kb", type=int, default=None,
                    help="kbit (default: a quarter second of the rate, see docs/qos.md)")
    ql.add_argument("--burst-pkts", type=int, default=None,
                    help="with --pps: packets (default: a quarter second of the rate)")
    qls = q.add_parser("limit-set")
    qls.add_argument("id", type=int)
    sunit = qls.add_mutually_exclusive_group()
    sunit.add_argument("--kbps", type=int)
    sunit.add_argument("--pps", type=int, help="packets/s (switches a kbps limit to pps)")
    qls.add_argument("--burst-kb", type=int)
    qls.add_argument("--burst-pkts", type=int)
    q.add_parser("limit-del").add_argument("id", type=int)
    qr = q.add_parser("rule", help="per-flow QoS rule of a tenant")
    qr.add_argument("tenant")
    qr.add_argument("--priority", type=int, required=True)
    qr.add_argument("--proto")
    qr.add_argument("--src")
    qr.add_argument("--dst")
    qr.add_argument("--src-port", type=int)
    qr.add_argument("--dst-port", type=int)
    qr.add_argument("--dscp", type=int)
    qr.add_argument("--kbps", type=int)
    qr.add_argument("--burst-kb", type=int, default=None,
                    help="kbit (default: a quarter second of the rate, see docs/qos.md)")
    qr.add_argument("--set-dscp", type=int)
    qr.add_argument("--queue", type=int)
    qrs = q.add_parser("rule-set")
    qrs.add_argument("id", type=int)
    qrs.add_argument("--kbps", type=int)
    qrs.add_argument("--burst-kb", type=int)
    qrs.add_argument("--set-dscp", type=int)
    q.add_parser("rule-del").add_argument("id", type=int)
    q.add_parser("list")
    q.add_parser("stats")


def _acl_args(sub: Any) -> None:
    a = sub.add_parser("acl").add_subparsers(dest="verb", required=True)
    al = a.add_parser("list", help="a tenant's default and rules, highest priority first")
    al.add_argument("tenant")
    al.add_argument("--counters", action="store_true", help="packets/bytes per rule")
    ad = a.add_parser("default", help="what happens when no rule matches a new connection")
    ad.add_argument("tenant")
    ad.add_argument("default", choices=["allow", "deny"])
    for verb in ("add", "set"):
        ap_ = a.add_parser(verb)
        ap_.add_argument("tenant")
        if verb == "set":
            ap_.add_argument("id", type=int)
        ap_.add_argument("--priority", type=int, required=verb == "add")
        ap_.add_argument("--action", choices=["allow", "drop"], required=verb == "add")
        ap_.add_argument("--direction", choices=["ingress", "egress"])
        ap_.add_argument("--proto")
        ap_.add_argument("--remote", help="the other side: IPv4 or IPv6 address or CIDR")
        ap_.add_argument("--local", help="the tenant's endpoints: IPv4 or IPv6 address or "
                                         "CIDR (one rule is of one family)")
        ap_.add_argument("--port", type=int, help="destination TCP/UDP port")
        ap_.add_argument("--icmp-type", type=int)
        ap_.add_argument("--description")
    adl = a.add_parser("del")
    adl.add_argument("tenant")
    adl.add_argument("id", type=int)


def run(args: argparse.Namespace, c: httpx.Client) -> tuple[Any, str]:
    """Do the request; return (JSON result, human rendering)."""
    def ok(r: httpx.Response) -> Any:
        is_json = r.headers.get("content-type", "").startswith("application/json")
        try:
            body = r.json() if is_json else None
        except ValueError:
            is_json, body = False, None
        if r.status_code >= 400:
            if not isinstance(body, dict):
                body = {"error": r.text[:200].strip() or r.reason_phrase, "field": ""}
            raise ApiError(r.status_code, body)
        if not is_json:
            raise UnexpectedAnswer(f"{r.request.url} answered {r.status_code} with "
                                   f"{r.headers.get('content-type') or 'no content type'}, "
                                   "not JSON: is --api a weft controller?")
        return body

    if args.noun == "trace":
        from controller.trace import render
        req = {"src": args.src, "dst": args.dst,
                "proto": args.proto or ("tcp" if args.port else "icmp"), "port": args.port,
                "tenant": args.tenant, "src_ip": args.src_ip}
        res = ok(c.post("/v1/trace", json={k: v for k, v in req.items() if v is not None},
                        timeout=60))
        return res, render(res)
    if args.noun in ("topology", "graph"):
        return _topology(args, ok(c.get("/v1/topology")))
    if args.noun == "export":
        res = ok(c.get("/v1/export"))
        return res, json.dumps(res, indent=1)
    if args.noun == "import":
        try:
            text = sys.stdin.read() if args.file == "-" else open(args.file).read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
        try:
            model = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{args.file} is not JSON: {exc}") from None
        res = ok(c.post("/v1/import", json=model, params={"replace": "true"} if args.replace
                        else None, timeout=120))
        counts = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in res["imported"].items())
        return res, f"imported: {counts}; store epoch {res['epoch']}"
    if args.noun == "tenant":
        if args.verb == "create":
            new = {k: v for k, v in {"name": args.name, "vlan": args.vlan, "vni": args.vni,
                                      "subnet": args.subnet, "subnet6": args.subnet6,
                                      "description": args.description,
                                      "conntrack_limit": args.conntrack_limit}.items()
                   if v is not None}
            res = ok(c.post("/v1/tenants", json={**new, **_gateway_body(args)}))
            return res, f"tenant {res['name']} created (vni {res['vni']}{_gw_text(res)})"
        if args.verb == "set":
            res = ok(c.patch(f"/v1/tenants/{seg(args.name)}",
                             json={"conntrack_limit": args.conntrack_limit}))
            return res, f"tenant {res['name']}: conntrack limit {res['conntrack_limit']}"
        if args.verb == "list":
            res = ok(c.get("/v1/tenants"))
            rows = [{**r, "egress": _on(r.get("egress")),
                     "networks": ",".join(r.get("networks", []))} for r in res]
            return res, table(rows, ["name", "vni", "vlan", "subnet", "subnet6", "gateway",
                                     "gateway6", "egress", "networks", "description"])
        if args.verb == "show":
            res = ok(c.get(f"/v1/tenants/{seg(args.name)}"))
            head = "\n".join(f"{k}: {res.get(k)}" for k in ("name", "vni", "vlan", "subnet",
                                                             "subnet6", "gateway", "gateway6",
                                                             "conntrack_limit", "description"))
            head += f"\negress: {_on(res.get('egress'))}\nnetworks: " + \
                (", ".join(res.get("networks", [])) or "(none)")
            return res, head + "\nports:\n" + table(res["ports"], ["host", "port", "mac", "source"]) \
            + "\ndocker networks (as the hosts' agents reported):\n" \
            + table(res.get("docker", []), ["host", "state", "reason"])
        res = ok(c.delete(f"/v1/tenants/{seg(args.name)}",
                          params={"force": "true"} if args.force else None))
        return res, f"tenant {args.name} deleted ({res['bindings_removed']} bindings removed)"
    if args.noun == "port":
        if args.verb == "bind":
            body: dict[str, Any] = {"tenant": args.tenant}
            if args.trunk:
                body.update(mode="trunk", trunk=[t for t in args.trunk.split(",") if t])
            if args.mac:
                body["mac"] = args.mac
            if args.replace:
                res = ok(c.put(f"/v1/ports/{seg(args.host)}/{seg(args.port)}", json=body))
            else:
                res = ok(c.post("/v1/ports", json={"host": args.host, "port": args.port, **body}))
            what = (f"trunk {','.join(res['trunk'])}" + (f", native {res['tenant']}"
                                                          if res["tenant"] else "")
                    if res["mode"] == "trunk" else f"tenant {res['tenant']}")
            return res, f"{args.host}/{args.port} bound: {what}"
        if args.verb == "unbind":
            res = ok(c.delete(f"/v1/ports/{seg(args.host)}/{seg(args.port)}"))
            return res, f"{args.host}/{args.port} unbound"
        params = {k: v for k, v in (("host", args.host), ("tenant", args.tenant)) if v}
        res = ok(c.get("/v1/ports", params=params))
        rows = [{**r, "trunk": ",".join(r["trunk"])} for r in res]
        return res, table(rows, ["host", "port", "mode", "tenant", "trunk", "mac", "source"])
    if args.noun == "network":
        return _network(args, ok, c)
    if args.noun == "route":
        return _route(args, ok, c)
    if args.noun == "qos":
        return _qos(args, ok, c)
    if args.noun == "acl":
        return _acl(args, ok, c)
    if args.noun == "switch":
        res = ok(c.get("/v1/switches"))
        rows = [{**s, "ports": len(s["ports"]), "tunnels": ", ".join(
            f"{n}->{t['peer']}" for n, t in s["tunnels"].items())} for s in res]
        return res, table(rows, ["host", "dpid", "connected", "in_sync", "ports",
                                 "flow_mods_sent", "tunnels"])
    res = ok(c.get(f"/v1/switches/{seg(args.host)}/flows"))
    rows = [{**f, "match": ",".join(f"{k}={v}" for k, v in f["match"].items()),
             "instructions": "; ".join(f["instructions"])[:80]} for f in res]
    return res, table(sorted(rows, key=lambda f: (f["table"], -f["priority"])),
                      ["feature", "table", "priority", "match", "packets", "instructions"])


def _on(value: Any) -> str:
    return "on" if value else "off"


def _gw_text(res: dict) -> str:
    gw6 = f", gateway6 {res['gateway6']}" if res.get("gateway6") else ""
    return f", gateway {res['gateway']}{gw6}, egress {_on(res.get('egress'))}" \
        if res.get("gateway") else ", no gateway"


def _gateway_body(args: argparse.Namespace) -> dict[str, Any]:
    """--gateway, --gateway6 and --egress as a request body's fields (only those given)."""
    body: dict[str, Any] = {}
    if args.gateway is not _UNSET:
        body["gateway"] = args.gateway
    if args.gateway6 is not _UNSET:
        body["gateway6"] = args.gateway6
    if args.egress is not None:
        body["egress"] = args.egress == "on"
    return body


_NETWORK_COLUMNS = ["name", "tenant", "vni", "vlan", "subnet", "subnet6", "gateway", "gateway6",
                    "egress", "description"]


def _network(args: argparse.Namespace, ok: Any, c: httpx.Client) -> tuple[Any, str]:
    if args.verb == "create":
        body = {k: v for k, v in {"name": args.name, "tenant": args.tenant, "vni": args.vni,
                                  "vlan": args.vlan, "subnet": args.subnet,
                                  "subnet6": args.subnet6,
                                  "description": args.description}.items() if v is not None}
        res = ok(c.post("/v1/networks", json={**body, **_gateway_body(args)}))
        return res, (f"network {res['name']} of tenant {res['tenant']} created "
                     f"(vni {res['vni']}{_gw_text(res)})")
    if args.verb == "list":
        res = ok(c.get("/v1/networks", params={"tenant": args.tenant} if args.tenant else None))
        return res, table([{**r, "egress": _on(r["egress"])} for r in res], _NETWORK_COLUMNS)
    if args.verb == "show":
        res = ok(c.get(f"/v1/networks/{seg(args.name)}"))
        head = "\n".join(f"{k}: {_on(res[k]) if k == 'egress' else res.get(k)}"
                         for k in (*_NETWORK_COLUMNS, "gateway_mac"))
        return res, head + "\nports:\n" + table(res["ports"], ["host", "port", "mac", "source"]) \
            + "\ndocker networks (as the hosts' agents reported):\n" \
            + table(res.get("docker", []), ["host", "state", "reason"])
    if args.verb == "set":
        body = {k: v for k, v in (("subnet", args.subnet), ("subnet6", args.subnet6),
                                  ("vlan", args.vlan)) if v is not _UNSET}
        if args.description is not None:
            body["description"] = args.description
        body.update(_gateway_body(args))
        if not body:
            raise UsageError("network set: give at least one of --subnet, --subnet6, --vlan, "
                             "--gateway, --gateway6, --egress, --description")
        res = ok(c.patch(f"/v1/networks/{seg(args.name)}", json=body))
        return res, f"network {res['name']} updated ({res['subnet'] or 'no subnet'}" \
            f"{_gw_text(res)})"
    res = ok(c.delete(f"/v1/networks/{seg(args.name)}",
                      params={"force": "true"} if args.force else None))
    return res, f"network {args.name} deleted ({res['bindings_removed']} bindings removed)"


def _route(args: argparse.Namespace, ok: Any, c: httpx.Client) -> tuple[Any, str]:
    base = f"/v1/tenants/{seg(args.tenant)}/routes"
    if args.verb == "add":
        body = {"prefix": args.prefix, "via": args.via}
        if args.mac:
            body["mac"] = args.mac
        res = ok(c.post(base, json=body))
        return res, f"tenant {res['tenant']}: route {res['prefix']} via {res['via']} " \
                    f"(network {res['network']})"
    if args.verb == "list":
        res = ok(c.get(base))
        return res, table(res, ["prefix", "via", "mac", "network"])
    res = ok(c.delete(base, params={"prefix": args.prefix}))
    return res, f"tenant {res['tenant']}: route {res['deleted']} deleted"


def _rate(limit: dict) -> str:
    """A limit's rate in its unit."""
    if limit.get("pps") is not None:
        return f"{limit['pps']} packets/s"
    return f"{limit['kbps']} kbit/s"


def _qos(args: argparse.Namespace, ok: Any, c: httpx.Client) -> tuple[Any, str]:
    def given(**kw: Any) -> dict:
        return {k: v for k, v in kw.items() if v is not None}
    if args.verb == "limit":
        res = ok(c.post("/v1/qos/limits", json=given(host=args.host, port=args.port,
                                                      tenant=args.tenant, kbps=args.kbps,
                                                      burst_kb=args.burst_kb, pps=args.pps,
                                                      burst_pkts=args.burst_pkts)))
        return res, f"rate limit {res['id']}: {_rate(res)} on {args.host}"
    if args.verb == "limit-set":
        res = ok(c.patch(f"/v1/qos/limits/{seg(args.id)}", json=given(
            kbps=args.kbps, burst_kb=args.burst_kb, pps=args.pps, burst_pkts=args.burst_pkts)))
        return res, f"rate limit {res['id']} now {_rate(res)}"
    if args.verb in ("limit-del", "rule-del"):
        kind = "limits" if args.verb == "limit-del" else "rules"
        res = ok(c.delete(f"/v1/qos/{kind}/{seg(args.id)}"))
        return res, f"deleted {kind[:-1]} {args.id}"
    if args.verb == "rule":
        proto = int(args.proto) if args.proto and args.proto.isdigit() else args.proto
        match = given(ip_proto=proto, src=args.src, dst=args.dst, src_port=args.src_port,
                      dst_port=args.dst_port, dscp=args.dscp)
        res = ok(c.post("/v1/qos/rules", json=given(
            tenant=args.tenant, priority=args.priority, match=match, kbps=args.kbps,
            burst_kb=args.burst_kb, set_dscp=args.set_dscp, queue=args.queue)))
        return res, f"QoS rule {res['id']} for tenant {res['tenant']}"
    if args.verb == "rule-set":
        res = ok(c.patch(f"/v1/qos/rules/{seg(args.id)}", json=given(
            kbps=args.kbps, burst_kb=args.burst_kb, set_dscp=args.set_dscp)))
        return res, f"QoS rule {res['id']} updated"
    if args.verb == "list":
        limits, rules = ok(c.get("/v1/qos/limits")), ok(c.get("/v1/qos/rules"))
        rrows = [{**r, "match": ",".join(f"{k}={v}" for k, v in r["match"].items()) or "any"}
                 for r in rules]
        return {"limits": limits, "rules": rules}, (
            "rate limits:\n" + table(limits, ["id", "host", "port", "tenant", "kbps", "burst_kb",
                                              "pps", "burst_pkts"])
            + "\nrules:\n" + table(rrows, ["id", "tenant", "priority", "match", "kbps",
                                            "set_dscp", "queue"]))
    res = ok(c.get("/v1/qos/stats"))
    rows = [{"host": h["host"], **m} for h in res for m in h["meters"]]
    notes = "\n".join(f"{h['host']}: queues {'supported' if h['queues']['supported'] else 'NOT supported'}"
                      f" ({h['queues']['reason']})" for h in res)
    return res, table(rows, ["host", "meter_id", "packets_passed", "bytes_passed",
                             "packets_dropped", "bytes_dropped"]) + "\n" + notes


def _acl(args: argparse.Namespace, ok: Any, c: httpx.Client) -> tuple[Any, str]:
    base = f"/v1/tenants/{seg(args.tenant)}/acls"
    if args.verb == "list":
        res = ok(c.get(base, params={"counters": "true"} if args.counters else None))
        cols = ["id", "priority", "action", "direction", "ip_proto", "remote", "local", "port",
                "icmp_type"] + (["packets", "bytes"] if args.counters else [])
        return res, f"tenant {res['tenant']}: default {res['default']}\n" + table(res["rules"],
                                                                                 cols)
    if args.verb == "default":
        res = ok(c.put(f"{base}/default", json={"default": args.default}))
        return res, f"tenant {args.tenant}: default {res['default']}"
    if args.verb == "del":
        res = ok(c.delete(f"{base}/{seg(args.id)}"))
        return res, f"ACL rule {args.id} deleted"
    proto = int(args.proto) if args.proto and args.proto.isdigit() else args.proto
    body = {k: v for k, v in {"priority": args.priority, "action": args.action,
                              "direction": args.direction, "ip_proto": proto,
                              "remote": args.remote, "local": args.local, "port": args.port,
                              "icmp_type": args.icmp_type,
                              "description": args.description}.items() if v is not None}
    if args.verb == "add":
        res = ok(c.post(base, json=body))
        return res, f"ACL rule {res['id']} of tenant {res['tenant']} (priority {res['priority']})"
    res = ok(c.patch(f"{base}/{seg(args.id)}", json=body))
    return res, f"ACL rule {res['id']} updated"


def _topology(args: argparse.Namespace, res: dict) -> tuple[Any, str]:
    if args.noun == "graph":
        svg = to_svg(res, args.title)
        if not args.output:
            return res, svg.rstrip("\n")
        try:
            with open(args.output, "w") as f:
                f.write(svg)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
        return res, f"wrote {args.output} ({len(res['hosts'])} hosts, " \
                    f"{len(res['tenants'])} tenants, {len(res['ports'])} ports)"
    hosts = [{**h, "switch": "connected" if h["connected"] else "disconnected"}
             for h in res["hosts"]]
    tunnels = [{"between": " - ".join(t["hosts"]), "type": t["type"], "state": t["state"],
                "ends": ", ".join(f"{e['host']}:{e['port']} {e['state']}" for e in t["ends"])}
               for t in res["tunnels"]]
    nets = [{"tenant": t["name"], **n} for t in res["tenants"] for n in t["networks"]]
    ports = [{**p, "ips": " ".join(p["ips"]),
              **{k: (p["counters"] or {}).get(k) for k in ("rx_packets", "tx_packets")}}
             for p in res["ports"]]
    return res, "\n\n".join([
        table(hosts, ["name", "address", "dpid", "switch", "in_sync"]),
        table(tunnels, ["between", "type", "state", "ends"]),
        table(nets, ["tenant", "name", "vni", "vlan", "subnet", "gateway"]),
        table(ports, ["host", "port", "container", "tenant", "network", "mac", "ips", "state",
                      "rx_packets", "tx_packets"])])


class ApiError(Exception):
    def __init__(self, status: int, body: dict) -> None:
        super().__init__(f"{status}: {body.get('error')}")
        self.status, self.body = status, body


class UsageError(Exception):
    """Bad input on our side (an unreadable file): exit 2."""


class UnexpectedAnswer(Exception):
    """The API answered something weftctl does not understand (not weft, or a newer one)."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.token is not None and not (args.token.isascii() and args.token.isprintable()):
        print("weftctl: the API token must be printable ASCII (it travels in an HTTP header)",
              file=sys.stderr)
        return 2
    try:
        with client(args.api, args.token) as c:
            res, human = run(args, c)
    except ApiError as exc:
        print(json.dumps(exc.body) if args.json else
              f"weftctl: {exc.status} {exc.body.get('field', '')}: {exc.body.get('error')}",
              file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"weftctl: cannot reach the API at {args.api}: {exc}", file=sys.stderr)
        return 2
    except (UnexpectedAnswer, UsageError) as exc:
        print(f"weftctl: {exc}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        print(f"weftctl: unexpected answer from the API at {args.api} "
              f"({type(exc).__name__}: {str(exc)[:120]})", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001  (a CLI answers every input with one line)
        print(f"weftctl: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1) if args.json else human)
    return 0


if __name__ == "__main__":
    sys.exit(main())
