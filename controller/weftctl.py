"""`weftctl`: the REST API from a shell.  Tables for people, --json for scripts.

    weftctl tenant create NAME [--vlan N] [--subnet CIDR] [--vni N] [--description TEXT]
    weftctl tenant list | show NAME | delete NAME [--force]
    weftctl port bind HOST PORT [TENANT] [--mac MAC] [--trunk T1,T2] [--replace]
    weftctl port unbind HOST PORT | list [--host H] [--tenant T]
    weftctl switch list
    weftctl flows HOST

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

import httpx


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
    ap.add_argument("--api", default=os.environ.get("WEFT_API", "http://127.0.0.1:8080"))
    ap.add_argument("--token", default=os.environ.get("WEFT_API_TOKEN"))
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    sub = ap.add_subparsers(dest="noun", required=True)

    t = sub.add_parser("tenant").add_subparsers(dest="verb", required=True)
    tc = t.add_parser("create")
    tc.add_argument("name")
    tc.add_argument("--vlan", type=int)
    tc.add_argument("--vni", type=int)
    tc.add_argument("--subnet")
    tc.add_argument("--description", default="")
    t.add_parser("list")
    t.add_parser("show").add_argument("name")
    td = t.add_parser("delete")
    td.add_argument("name")
    td.add_argument("--force", action="store_true", help="also remove its port bindings")

    p = sub.add_parser("port").add_subparsers(dest="verb", required=True)
    pb = p.add_parser("bind", help="access: TENANT; trunk: --trunk and optional native TENANT")
    pb.add_argument("host")
    pb.add_argument("port")
    pb.add_argument("tenant", nargs="?")
    pb.add_argument("--mac")
    pb.add_argument("--trunk", help="comma-separated tenants carried tagged (makes a trunk)")
    pb.add_argument("--replace", action="store_true", help="change an existing binding")
    pu = p.add_parser("unbind")
    pu.add_argument("host")
    pu.add_argument("port")
    pl = p.add_parser("list")
    pl.add_argument("--host")
    pl.add_argument("--tenant")

    s = sub.add_parser("switch").add_subparsers(dest="verb", required=True)
    s.add_parser("list")
    sub.add_parser("flows").add_argument("host")
    return ap


def run(args: argparse.Namespace, c: httpx.Client) -> tuple[Any, str]:
    """Do the request; return (JSON result, human rendering)."""
    def ok(r: httpx.Response) -> Any:
        if r.status_code >= 400:
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") \
                else {"error": r.text}
            raise ApiError(r.status_code, body)
        return r.json()

    if args.noun == "tenant":
        if args.verb == "create":
            body = {k: v for k, v in {"name": args.name, "vlan": args.vlan, "vni": args.vni,
                                      "subnet": args.subnet,
                                      "description": args.description}.items() if v is not None}
            res = ok(c.post("/v1/tenants", json=body))
            return res, f"tenant {res['name']} created (vni {res['vni']})"
        if args.verb == "list":
            res = ok(c.get("/v1/tenants"))
            return res, table(res, ["name", "vni", "vlan", "subnet", "description"])
        if args.verb == "show":
            res = ok(c.get(f"/v1/tenants/{args.name}"))
            head = "\n".join(f"{k}: {res[k]}" for k in ("name", "vni", "vlan", "subnet",
                                                         "description"))
            return res, head + "\nports:\n" + table(res["ports"], ["host", "port", "mac", "source"])
        res = ok(c.delete(f"/v1/tenants/{args.name}",
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
                res = ok(c.put(f"/v1/ports/{args.host}/{args.port}", json=body))
            else:
                res = ok(c.post("/v1/ports", json={"host": args.host, "port": args.port, **body}))
            what = (f"trunk {','.join(res['trunk'])}" + (f", native {res['tenant']}"
                                                          if res["tenant"] else "")
                    if res["mode"] == "trunk" else f"tenant {res['tenant']}")
            return res, f"{args.host}/{args.port} bound: {what}"
        if args.verb == "unbind":
            res = ok(c.delete(f"/v1/ports/{args.host}/{args.port}"))
            return res, f"{args.host}/{args.port} unbound"
        params = {k: v for k, v in (("host", args.host), ("tenant", args.tenant)) if v}
        res = ok(c.get("/v1/ports", params=params))
        rows = [{**r, "trunk": ",".join(r["trunk"])} for r in res]
        return res, table(rows, ["host", "port", "mode", "tenant", "trunk", "mac", "source"])
    if args.noun == "switch":
        res = ok(c.get("/v1/switches"))
        rows = [{**s, "ports": len(s["ports"]), "tunnels": ", ".join(
            f"{n}->{t['peer']}" for n, t in s["tunnels"].items())} for s in res]
        return res, table(rows, ["host", "dpid", "connected", "in_sync", "ports",
                                 "flow_mods_sent", "tunnels"])
    res = ok(c.get(f"/v1/switches/{args.host}/flows"))
    rows = [{**f, "match": ",".join(f"{k}={v}" for k, v in f["match"].items()),
             "instructions": "; ".join(f["instructions"])[:80]} for f in res]
    return res, table(sorted(rows, key=lambda f: (f["table"], -f["priority"])),
                      ["feature", "table", "priority", "match", "packets", "instructions"])


class ApiError(Exception):
    def __init__(self, status: int, body: dict) -> None:
        super().__init__(f"{status}: {body.get('error')}")
        self.status, self.body = status, body


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    print(json.dumps(res, indent=1) if args.json else human)
    return 0


if __name__ == "__main__":
    sys.exit(main())
