"""REST API v1: tenants, port bindings, hosts, switches and their live flows.

FastAPI gives the OpenAPI document at /openapi.json.  Every refused request
is a 4xx JSON body ``{"error": ..., "field": ...}`` and changes nothing;
writes need the bearer token when one is configured.
"""
from __future__ import annotations

import hmac
import logging
import threading
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from controller.core import Core
from controller.flows import acl_rule_of, feature_of
from controller.model import (HOST_NAME_PATTERN, MAC_PATTERN, MAX_ACL_PRIORITY, MAX_DESCRIPTION,
                              MAX_METER_ID, MAX_VNI, PORT_NAME_PATTERN, TENANT_NAME_PATTERN,
                              AclRule, Binding, QosRule, RateLimit, Tenant)
from controller.pipeline import LEARN_LIMIT_MACS, PRIO_ACL_EST, PRIO_ACL_RULE_BASE, VNI_MASK
from controller.store import Conflict, Invalid, NotFound, StoreError, Unavailable
from cluster.hostsfile import datapath_id, dpid_str
from cluster.version import version

# Published anchored: JSON Schema and pydantic's regex engine have no trailing-newline
# quirk, and the model checks the same patterns with fullmatch.
TENANT_NAME = f"^{TENANT_NAME_PATTERN}$"
HOST_NAME = f"^{HOST_NAME_PATTERN}$"
PORT_NAME = f"^{PORT_NAME_PATTERN}$"
MAC = f"^{MAC_PATTERN}$"
MAX_BULK = 10_000
LOG = logging.getLogger("weft.api")
OPEN_PATHS = {"/v1/health"}         # everything else needs the token when one is set


class ErrorOut(BaseModel):
    """Every refused request: what is wrong and which field (dotted path) it is about."""
    error: str
    field: str
    errors: list[dict[str, Any]] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what} for code, what in (
        (400, "bad request"),
        (401, "a valid bearer token is required (when the controller has one)"),
        (404, "no such tenant, port, host, switch or QoS id"),
        (409, "conflicts with the current state (in use, already exists, switch not answering)"),
        (422, "a field is invalid; `field` names it"),
        (503, "the state database or the OpenFlow event loop cannot serve the request now"))}


class Unauthorized(StoreError):
    status = 401


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


TenantName = Field(pattern=TENANT_NAME, max_length=32)
Subnet = Field(None, max_length=64, description="IPv4 or IPv6 network, CIDR")


class TenantIn(_In):
    name: str = Field(pattern=TENANT_NAME, max_length=32,
                      description="lowercase letter first; letters, digits, - and _")
    vni: int | None = Field(None, ge=1000, le=MAX_VNI, description="auto-assigned when omitted")
    vlan: int | None = Field(None, ge=1, le=4094, description="802.1Q id on trunk ports")
    subnet: str | None = Subnet
    description: str = Field("", max_length=MAX_DESCRIPTION)


class TenantPatch(_In):
    vlan: int | None = Field(None, ge=1, le=4094, description="null: no VLAN")
    subnet: str | None = Subnet
    description: str = Field("", max_length=MAX_DESCRIPTION)


class AddressPair(_In):
    ip_address: str = Field(max_length=43, description="IPv4 address or CIDR")
    mac_address: str | None = Field(None, pattern=MAC, description="default: the port's mac")


class PortSpec(_In):
    tenant: str | None = Field(None, pattern=TENANT_NAME, max_length=32,
                               description="access: the tenant; trunk: the native "
                                           "(untagged) tenant, optional")
    mode: Literal["access", "trunk"] = Field("access", description="access or trunk")
    mac: str | None = Field(None, pattern=MAC,
                            description="access only: a known endpoint behind the port")
    trunk: list[Annotated[str, Field(pattern=TENANT_NAME, max_length=32)]] = Field(
        default_factory=list, max_length=4094,
        description="trunk only: tenants carried tagged with their VLAN id")
    ips: list[str] = Field(default_factory=list, max_length=256,
                           description="port security (needs mac): the IPv4 addresses/CIDRs "
                                       "the port may send from")
    allowed_address_pairs: list[AddressPair] = Field(
        default_factory=list, max_length=256,
        description="port security: more (ip, mac) the port may send from, as Neutron's; "
                    "mac defaults to the port's")


class RegisterIn(_In):
    """A host joining by itself (hosts.yaml `membership: register`); see docs/hosts-yaml.md."""
    name: str = Field(pattern=HOST_NAME, max_length=63)
    underlay_ip: str = Field(max_length=15, description="IPv4 address its tunnels use")
    docker_subnet: str | None = Field(None, max_length=18,
                                      description="its docker0 fixed-cidr, inside cluster_subnet")
    tunnel_type: Literal["vxlan", "gre"] | None = None
    datapath_type: Literal["system", "netdev"] | None = None
    ttl: float = Field(30.0, ge=3, le=3600, description="lease seconds; renew before it ends")


class PortIn(PortSpec):
    host: str = Field(pattern=HOST_NAME, max_length=63)
    port: str = Field(pattern=PORT_NAME, max_length=15, description="port name on the host's br0")


BURST_DOC = ("burst in kbit; default a quarter second of the rate (TCP through a policer "
             "needs room: 2000 kbit at 20 Mbit/s gave 11 Mbit/s, 5000 gave 19-20); 0: none")


def sensible_burst(kbps: int | None, burst_kb: int | None, field: str = "burst_kb") -> int:
    """Default and bound the burst: between one MTU and ten seconds of the rate."""
    if kbps is None:
        if burst_kb:
            raise Invalid(field, "a burst needs a rate (kbps)")
        return 0
    if burst_kb is None:
        return max(kbps // 4, 12)
    if burst_kb and not 12 <= burst_kb <= 10 * kbps:
        raise Invalid(field, f"burst {burst_kb} kbit is not between one packet (12 kbit) and "
                             f"ten seconds of the rate ({10 * kbps} kbit)")
    return burst_kb


BURST_PKTS_DOC = ("pps only: burst in packets; default a quarter second of the rate "
                  "(at least 1); 0: none (the switch's default bucket)")
PPS_DOC = ("rate in packets/s, instead of kbps (one unit per limit: an OpenFlow meter has one). "
           "Use it against small-frame floods: 10 Mbit/s lets ~16k 64-byte frames/s through")


def sensible_burst_pkts(pps: int, burst_pkts: int | None) -> int:
    """Default and bound a packet burst: between one packet and ten seconds of the rate."""
    if burst_pkts is None:
        return max(pps // 4, 1)
    if burst_pkts and burst_pkts > 10 * pps:
        raise Invalid("burst_pkts", f"burst {burst_pkts} packets is more than ten seconds of "
                                    f"the rate ({10 * pps} packets)")
    return burst_pkts


def _one_rate(kbps: int | None, pps: int | None, burst_kb: int | None,
              burst_pkts: int | None) -> None:
    """A limit has one unit; a burst in the other unit is a mistake worth a 422."""
    if kbps is not None and pps is not None:
        raise Invalid("pps", "give one rate: kbps (kbit/s) or pps (packets/s), not both")
    if pps is not None and burst_kb:
        raise Invalid("burst_kb", "burst_kb goes with kbps; a pps limit takes burst_pkts")
    if kbps is not None and burst_pkts:
        raise Invalid("burst_pkts", "burst_pkts goes with pps; a kbps limit takes burst_kb")


class LimitIn(_In):
    host: str = Field(pattern=HOST_NAME, max_length=63)
    port: str | None = Field(None, pattern=PORT_NAME, max_length=15,
                             description="a bound port: limits the traffic it sends")
    tenant: str | None = Field(None, pattern=TENANT_NAME, max_length=32,
                               description="or: the tenant's aggregate on the host")
    kbps: int | None = Field(None, gt=0, le=100_000_000,
                             description="rate in kbit/s (give exactly one of kbps or pps)")
    burst_kb: int | None = Field(None, ge=0, le=10_000_000, description=BURST_DOC)
    pps: int | None = Field(None, gt=0, le=100_000_000, description=PPS_DOC)
    burst_pkts: int | None = Field(None, ge=0, le=10_000_000, description=BURST_PKTS_DOC)


class LimitPatch(_In):
    kbps: int | None = Field(None, gt=0, le=100_000_000,
                             description="new rate in kbit/s; on a pps limit: switches it to kbit/s")
    burst_kb: int | None = Field(None, ge=0, le=10_000_000, description=BURST_DOC)
    pps: int | None = Field(None, gt=0, le=100_000_000,
                            description="new rate in packets/s; on a kbps limit: switches it "
                                        "to packets/s")
    burst_pkts: int | None = Field(None, ge=0, le=10_000_000, description=BURST_PKTS_DOC)


class QosMatch(_In):
    ip_proto: Annotated[int, Field(ge=0, le=255)] | Literal["tcp", "udp", "icmp"] | None = None
    src: str | None = Field(None, max_length=18, description="IPv4 address or CIDR")
    dst: str | None = Field(None, max_length=18, description="IPv4 address or CIDR")
    src_port: int | None = Field(None, ge=1, le=65535, description="needs ip_proto tcp/udp")
    dst_port: int | None = Field(None, ge=1, le=65535, description="needs ip_proto tcp/udp")
    dscp: int | None = Field(None, ge=0, le=63)


class RuleIn(_In):
    tenant: str = Field(pattern=TENANT_NAME, max_length=32)
    priority: int = Field(ge=1, le=1000, description="higher first; unique per tenant")
    match: QosMatch = Field(default_factory=lambda: QosMatch.model_validate({}))
    kbps: int | None = Field(None, gt=0, le=100_000_000, description="meter: rate limit")
    burst_kb: int | None = Field(None, ge=0, le=10_000_000, description=BURST_DOC)
    set_dscp: int | None = Field(None, ge=0, le=63, description="remark IPv4 DSCP")
    queue: int | None = Field(None, ge=0, le=7, description="OpenFlow set_queue")


class RulePatch(_In):
    kbps: int | None = Field(None, gt=0, le=100_000_000)
    burst_kb: int | None = Field(None, ge=0, le=10_000_000)
    set_dscp: int | None = Field(None, ge=0, le=63)


class AclIn(_In):
    priority: int = Field(ge=1, le=MAX_ACL_PRIORITY,
                          description="higher decides first; unique in the tenant")
    action: Literal["allow", "drop"]
    direction: Literal["ingress", "egress"] = Field(
        "ingress", description="ingress: connections to the tenant's endpoints (remote = "
                               "source, local = destination); egress: from them")
    ip_proto: Annotated[int, Field(ge=0, le=255)] | Literal["tcp", "udp", "icmp"] | None = None
    remote: str | None = Field(None, max_length=18, description="IPv4 address or CIDR")
    local: str | None = Field(None, max_length=18,
                              description="IPv4 address or CIDR of the tenant's endpoints")
    port: int | None = Field(None, ge=1, le=65535,
                             description="destination port; needs ip_proto tcp/udp")
    icmp_type: int | None = Field(None, ge=0, le=255, description="needs ip_proto icmp")
    description: str = Field("", max_length=MAX_DESCRIPTION)


class AclPatch(_In):
    priority: int | None = Field(None, ge=1, le=MAX_ACL_PRIORITY)
    action: Literal["allow", "drop"] | None = None
    direction: Literal["ingress", "egress"] | None = None
    ip_proto: Annotated[int, Field(ge=0, le=255)] | Literal["tcp", "udp", "icmp"] | None = None
    remote: str | None = Field(None, max_length=18)
    local: str | None = Field(None, max_length=18)
    port: int | None = Field(None, ge=1, le=65535)
    icmp_type: int | None = Field(None, ge=0, le=255)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)


class OperatorFlowIn(_In):
    table_id: int = Field(100, ge=0, le=253, description="operator tables 100..199; "
                                                         "others need override")
    priority: int = Field(32768, ge=0, le=65535)
    match: dict[str, Any] = Field(default_factory=dict,
                                  description="ofctl (Ryu ofctl_rest) field names and values")
    actions: list[dict[str, Any]] = Field(default_factory=list, max_length=64,
                                          description="ofctl (Ryu ofctl_rest) actions")
    idle_timeout: int = Field(0, ge=0, le=0, description="must be 0: the flow is permanent")
    hard_timeout: int = Field(0, ge=0, le=0, description="must be 0: the flow is permanent")
    override: bool = Field(False, description="allow weft's tables, tenant ports, port sets "
                                              "(logged)")
    description: str = Field("", max_length=MAX_DESCRIPTION)


class AclDefaultIn(_In):
    default: Literal["allow", "deny"] = Field(
        description="when no rule matches a new connection: allow (weft's default) or deny")


class Attachment(_In):
    """A container port an agent plugged, or (port ``weft-d0``) a docker0 container."""
    port: str = Field(pattern=PORT_NAME, max_length=15)
    tenant: str = Field(pattern=TENANT_NAME, max_length=32)
    mac: str | None = Field(None, pattern=MAC)
    container: str | None = Field(None, max_length=256)
    ips: list[str] = Field(default_factory=list, max_length=256,
                           description="its IPv4 addresses: the only sources the port may "
                                       "use (port security)")
    port_security: bool = Field(True, description="false: bound without MAC and addresses, "
                                                  "nothing it sends is checked")


def _addresses(body: PortSpec) -> dict[str, Any]:
    """Port security addresses of a request, as ``Store.bind`` takes them."""
    return {"ips": tuple(body.ips), "allowed_address_pairs": tuple(
        (p.ip_address, p.mac_address) for p in body.allowed_address_pairs)}


def tenant_json(t: Tenant) -> dict[str, Any]:
    return {"name": t.name, "vni": t.vni, "vlan": t.vlan, "subnet": t.subnet,
            "description": t.description, "builtin": t.name == "default"}


def binding_json(b: Binding, source: str) -> dict[str, Any]:
    return {"host": b.host, "port": b.port, "tenant": b.tenant, "mode": b.mode, "mac": b.mac,
            "trunk": list(b.trunk), "source": source, "ips": list(b.ips),
            "allowed_address_pairs": [{"ip_address": ip, "mac_address": mac}
                                      for ip, mac in b.allowed_address_pairs]}


def limit_json(x: RateLimit) -> dict[str, Any]:
    return {"id": x.id, "meter_id": x.id, "host": x.host, "port": x.port, "tenant": x.tenant,
            "kbps": x.kbps, "burst_kb": x.burst_kb, "pps": x.pps, "burst_pkts": x.burst_pkts,
            "unit": "pps" if x.pps is not None else "kbps"}


def rule_json(r: QosRule) -> dict[str, Any]:
    return {"id": r.id, "meter_id": r.id if r.kbps else None, "tenant": r.tenant,
            "priority": r.priority, "match": dict(r.match), "kbps": r.kbps,
            "burst_kb": r.burst_kb, "set_dscp": r.set_dscp, "queue": r.queue}


def acl_json(r: AclRule) -> dict[str, Any]:
    return {"id": r.id, "tenant": r.tenant, "priority": r.priority, "action": r.action,
            "direction": r.direction, "ip_proto": r.ip_proto, "remote": r.remote,
            "local": r.local, "port": r.port, "icmp_type": r.icmp_type,
            "description": r.description}


def _vni_of(match: dict) -> int | None:
    md = match.get("metadata")
    value = md[0] if isinstance(md, (tuple, list)) else md
    return None if value is None else int(value) & VNI_MASK


def acl_counters(flows_by_host: dict[str, list[dict]],
                 vni: int | None = None) -> dict[Any, dict[str, int]]:
    """Packets/bytes per ACL rule id summed over switches ("default", "established" too).

    A rule's flows see the first packet of each connection it decided; the rest
    of an allowed connection (and its replies) passes the tenant's established flows."""
    out: dict[Any, dict[str, int]] = {}
    for flows in flows_by_host.values():
        for f in flows:
            cookie = int(f["cookie"], 16)
            if feature_of(cookie) != "acl" or (vni is not None and _vni_of(f["match"]) != vni):
                continue
            rule = acl_rule_of(cookie)
            key: int | str = rule if rule is not None else \
                {PRIO_ACL_EST: "established", PRIO_ACL_EST + 1: "established",
                 PRIO_ACL_RULE_BASE: "default"}.get(f["priority"], "other")
            c = out.setdefault(key, {"packets": 0, "bytes": 0})
            c["packets"] += f["packets"]
            c["bytes"] += f["bytes"]
    return out


def _token_ok(authorization: str | None, token: str) -> bool:
    """Constant-time, and on bytes: a non-ASCII header or token is just a wrong token."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    given = authorization[7:].encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, token.encode("utf-8", "surrogateescape"))


def make_app(core: Core, token: str | None) -> FastAPI:
    def authorized(request: Request,
                   authorization: str | None = Header(None, include_in_schema=False)) -> None:
        if token and request.url.path not in OPEN_PATHS and not _token_ok(authorization, token):
            raise Unauthorized("authorization", "a valid bearer token is required")

    app = FastAPI(title="weft", version="1", description=__doc__, responses=ERRORS,
                  dependencies=[Depends(authorized)])

    @app.middleware("http")
    async def _one_segment_per_name(request: Request, call_next: Any) -> Any:
        """ASGI decodes %2F before routing: 'red%2Fports' would become another resource."""
        raw = request.scope.get("raw_path") or b""
        if b"%2f" in raw.lower() or b"%5c" in raw.lower():
            return JSONResponse({"error": "a name in the path cannot contain '/' or '\\'",
                                 "field": "path"}, status_code=404)
        return await call_next(request)

    def writer() -> None:
        """Writes are refused, not left hanging, while the OpenFlow loop is stuck."""
        health = core.loop_health() if core.loop_health else None
        if health and not health["alive"]:
            raise Unavailable("controller", f"{health['reason']}; nothing was changed")

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()[:20]
        first = errors[0] if errors else {}

        def where(e: Any) -> str:
            return ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "path",
                                                                          "query"))[:200]
        return JSONResponse({"error": str(first.get("msg", "invalid request"))[:300],
                             "field": where(first),
                             "errors": [{"field": where(e), "error": str(e.get("msg"))[:300]}
                                        for e in errors]},
                            status_code=422)

    def changed() -> None:
        core.on_change()

    def not_reserved(host: str, port: str) -> None:
        """The uplink of a VLAN-transport host belongs to the cluster, not to a binding."""
        if core.cluster.transport == "vlan" and any(
                h.name == host and h.uplink == port for h in core.cluster.hosts):
            raise Conflict("port", f"{port} is {host}'s uplink (transport vlan): not bindable")

    # -- tenants ---------------------------------------------------------------------
    @app.get("/v1/tenants")
    def list_tenants() -> list[dict]:
        return [tenant_json(t) for t in core.store.tenants()]

    @app.post("/v1/tenants", status_code=201, dependencies=[Depends(writer)])
    def create_tenant(body: TenantIn) -> dict:
        t = core.store.create_tenant(body.name, body.vni, body.vlan, body.subnet,
                                     body.description)
        changed()
        return tenant_json(t)

    @app.get("/v1/tenants/{name}")
    def get_tenant(name: str = Path(max_length=64)) -> dict:
        t = core.store.tenant(name)
        return {**tenant_json(t), "ports": [binding_json(sb.binding, sb.source)
                                            for sb in core.store.bindings(tenant=name)]}

    @app.patch("/v1/tenants/{name}", dependencies=[Depends(writer)])
    def update_tenant(body: TenantPatch, name: str = Path(max_length=64)) -> dict:
        t = core.store.update_tenant(name, **body.model_dump(exclude_unset=True))
        changed()
        return tenant_json(t)

    @app.delete("/v1/tenants/{name}", dependencies=[Depends(writer)])
    def delete_tenant(name: str = Path(max_length=64), force: bool = False) -> dict:
        n = core.store.delete_tenant(name, force)
        changed()
        return {"deleted": name, "bindings_removed": n}

    # -- port bindings ------------------------------------------------------------------
    @app.get("/v1/ports")
    def list_ports(host: str | None = None, tenant: str | None = None) -> list[dict]:
        return [binding_json(sb.binding, sb.source)
                for sb in core.store.bindings(host=host, tenant=tenant)]

    @app.post("/v1/ports", status_code=201, dependencies=[Depends(writer)])
    def bind(body: PortIn) -> dict:
        not_reserved(body.host, body.port)
        b = core.store.bind(body.host, body.port, body.tenant, body.mode, body.mac,
                            trunk=tuple(body.trunk), **_addresses(body))
        changed()
        return binding_json(b, "api")

    @app.put("/v1/ports/{host}/{port}", dependencies=[Depends(writer)])
    def rebind(host: str, port: str, body: PortSpec) -> dict:
        """Change a bound port in place (e.g. access <-> trunk): only its flows change."""
        not_reserved(host, port)
        b = core.store.bind(host, port, body.tenant, body.mode, body.mac,
                            trunk=tuple(body.trunk), replace=True, **_addresses(body))
        changed()
        return binding_json(b, "api")

    @app.post("/v1/ports/bulk", status_code=201, dependencies=[Depends(writer)])
    def bind_many(body: Annotated[list[PortIn], Field(max_length=MAX_BULK)]) -> dict:
        """Bind many ports in one transaction: all or nothing."""
        for b in body:
            not_reserved(b.host, b.port)
        n = core.store.bind_many([b.model_dump() for b in body])
        changed()
        return {"bound": n}

    # -- backup: the whole model ------------------------------------------------------
    @app.get("/v1/export")
    def export() -> dict:
        """Tenants, bindings, QoS limits and rules, ACLs, operator flows and the store
        epoch, from one consistent read (`weftctl export > model.json`)."""
        return core.store.export()

    @app.post("/v1/import", dependencies=[Depends(writer)])
    def import_model(body: dict[str, Any], replace: bool = False) -> dict:
        """Restore an export: all validated first, applied in one transaction (bad input
        changes nothing); 409 on a store holding anything unless ``replace=true``."""
        counts = core.store.import_model(body, replace)
        changed()
        return {"imported": counts, "epoch": core.store.epoch()}

    @app.get("/v1/tenants/{name}/ports")
    def tenant_ports(name: str) -> list[dict]:
        core.store.tenant(name)
        return list_ports(tenant=name)

    @app.delete("/v1/ports/{host}/{port}", dependencies=[Depends(writer)])
    def unbind(host: str, port: str) -> dict:
        core.store.unbind(host, port)
        changed()
        return {"unbound": f"{host}/{port}"}

    @app.put("/v1/hosts/{host}/attachments", dependencies=[Depends(writer)])
    def attachments(body: Annotated[list[Attachment], Field(max_length=MAX_BULK)],
                    host: str = Path(max_length=63)) -> dict:
        """Containers the host's ovs-agent plugged into br0 (replaces the previous list)."""
        if host not in {h.name for h in core.cluster.hosts}:
            raise NotFound("host", f"no host {host!r} in hosts.yaml")
        before = core.store.version
        n = core.store.replace_agent_bindings(host, [a.model_dump() for a in body])
        if core.store.version != before:
            changed()
        return {"host": host, "attachments": n, **core.identity()}

    # -- ACLs ---------------------------------------------------------------------------
    def live_flows() -> dict[str, list[dict]]:
        """Every connected switch's flows (for counters); a silent switch counts nothing."""
        out: dict[str, list[dict]] = {}
        for sw in list(core.switches.values()):
            if sw.connected and sw.host:
                try:
                    out[sw.host] = core.dump_flows(sw.dpid)
                except (LookupError, TimeoutError):
                    continue
        return out

    @app.get("/v1/tenants/{name}/acls")
    def tenant_acls(name: str = Path(max_length=64), counters: bool = False) -> dict:
        """The tenant's default and rules, highest priority first; with ``counters=true``
        each rule's packets/bytes (first packets of the connections it decided)."""
        default = core.store.acl_default(name)
        rules = [acl_json(r) for r in core.store.acls(name)]
        body: dict[str, Any] = {"tenant": name, "default": default, "rules": rules}
        if counters:
            totals = acl_counters(live_flows(), core.store.tenant(name).vni)
            for r in rules:
                r.update(totals.get(r["id"], {"packets": 0, "bytes": 0}))
            body["default_counters"] = totals.get("default", {"packets": 0, "bytes": 0})
            body["established_counters"] = totals.get("established",
                                                      {"packets": 0, "bytes": 0})
        return body

    @app.put("/v1/tenants/{name}/acls/default", dependencies=[Depends(writer)])
    def acl_default(body: AclDefaultIn, name: str = Path(max_length=64)) -> dict:
        d = core.store.set_acl_default(name, body.default)
        changed()
        return {"tenant": name, "default": d}

    @app.post("/v1/tenants/{name}/acls", status_code=201, dependencies=[Depends(writer)])
    def add_acl(body: AclIn, name: str = Path(max_length=64)) -> dict:
        r = core.store.add_acl(name, **body.model_dump())
        changed()
        return acl_json(r)

    @app.get("/v1/tenants/{name}/acls/{rule_id}")
    def get_acl(name: str = Path(max_length=64),
                rule_id: int = Path(ge=1, le=0xFFFFFFFF)) -> dict:
        r = next((r for r in core.store.acls(name) if r.id == rule_id), None)
        if r is None:
            core.store.acl_default(name)          # 404 naming the tenant first
            raise NotFound("id", f"tenant {name!r} has no ACL rule {rule_id}")
        return {**acl_json(r), **acl_counters(live_flows()).get(r.id, {"packets": 0,
                                                                        "bytes": 0})}

    @app.patch("/v1/tenants/{name}/acls/{rule_id}", dependencies=[Depends(writer)])
    def update_acl(body: AclPatch, name: str = Path(max_length=64),
                   rule_id: int = Path(ge=1, le=0xFFFFFFFF)) -> dict:
        r = core.store.update_acl(name, rule_id, **body.model_dump(exclude_unset=True))
        changed()
        return acl_json(r)

    @app.delete("/v1/tenants/{name}/acls/{rule_id}", dependencies=[Depends(writer)])
    def delete_acl(name: str = Path(max_length=64),
                   rule_id: int = Path(ge=1, le=0xFFFFFFFF)) -> dict:
        core.store.delete_acl(name, rule_id)
        changed()
        return {"deleted": rule_id}

    # -- operator flows -----------------------------------------------------------------
    def known_switch(key: str):
        sw = core.switch_by_name(key)
        if sw is None:
            raise NotFound("dpid", f"no switch {key!r} (a dpid or a host name)")
        return sw

    def guarded_ports(sw) -> dict[int, str]:
        """Ports of this switch an operator flow must not output to without override."""
        out: dict[int, str] = {}
        if not sw.host:
            return out
        topo = core.topology()
        for b in topo.bindings_on(sw.host):
            if b.port in sw.ports:
                out[sw.ports[b.port]] = f"port {b.port} of tenant(s) {', '.join(b.tenants)}"
        for peer, name in core.tunnels(sw.host).items():
            if name in sw.ports:
                out[sw.ports[name]] = f"the tunnel to {peer}"
        return out

    def checked_operator_flows(sw, items: list[dict], prefix: str = "") -> list[dict]:
        """Validate operator flows of one switch (422 naming the field), log overrides."""
        from controller.model import ModelError
        from controller.ofmsg import OFP13, ofctl_match_ok
        from controller.operator import check
        guarded = guarded_ports(sw)
        out = []
        for i, f in enumerate(items):
            where = f"{prefix}{i}." if prefix else ""
            try:
                escapes = check(f.get("table_id"), f.get("priority"), f.get("match", {}),
                                f.get("actions", []), bool(f.get("override")), guarded,
                                f.get("idle_timeout", 0), f.get("hard_timeout", 0),
                                f.get("description", ""))
            except ModelError as exc:
                raise Invalid(where + exc.field, exc.message) from None
            if not ofctl_match_ok(OFP13, f.get("match", {})):
                raise Invalid(where + "match", "a match field is unknown to ofctl or its "
                                               "value is invalid")
            for why in escapes:
                LOG.warning("operator flow on %s accepted with override: %s", sw.host, why)
            out.append({**f, "dpid": sw.dpid})
        return out

    def operator_json(of, counters: dict[int, dict] | None = None) -> dict:
        body = {"id": of.id, "dpid": dpid_str(of.dpid), "cookie": hex(of.cookie),
                "table_id": of.table_id, "priority": of.priority, "match": dict(of.match),
                "actions": [dict(a) for a in of.actions], "override": of.override,
                "description": of.description}
        if counters is not None:
            body.update(counters.get(of.id, {"packets": None, "bytes": None,
                                             "installed": False}))
        return body

    @app.post("/v1/switches/{key}/flows", status_code=201, dependencies=[Depends(writer)])
    def add_operator_flow(body: OperatorFlowIn, key: str) -> dict:
        """An operator flow: stored, re-installed after restarts, never touched by a sync."""
        sw = known_switch(key)
        of = core.store.add_operator_flows(checked_operator_flows(sw, [body.model_dump()]))[0]
        changed()
        return operator_json(of)

    @app.post("/v1/switches/{key}/flows/bulk", status_code=201, dependencies=[Depends(writer)])
    def add_operator_flows(body: Annotated[list[OperatorFlowIn], Field(max_length=MAX_BULK)],
                           key: str) -> dict:
        """Many operator flows of one switch, all or nothing."""
        sw = known_switch(key)
        flows = core.store.add_operator_flows(checked_operator_flows(
            sw, [b.model_dump() for b in body], prefix="flows."))
        changed()
        return {"added": [of.id for of in flows]}

    @app.get("/v1/switches/{key}/operator-flows")
    def operator_flows(key: str) -> list[dict]:
        """The switch's stored operator flows, with their live counters when connected."""
        sw = known_switch(key)
        counters: dict[int, dict] = {}
        if sw.connected:
            from controller.operator import operator_id_of
            try:
                for f in core.dump_flows(sw.dpid):
                    op = operator_id_of(int(f["cookie"], 16))
                    if op is not None:
                        counters[op] = {"packets": f["packets"], "bytes": f["bytes"],
                                        "installed": True}
            except (LookupError, TimeoutError):
                pass
        return [operator_json(of, counters) for of in core.store.operator_flows(sw.dpid)]

    @app.delete("/v1/switches/{key}/flows/{flow_id}", dependencies=[Depends(writer)])
    def delete_operator_flow(key: str, flow_id: int = Path(ge=1, le=0xFFFFFFFF)) -> dict:
        sw = known_switch(key)
        if not core.store.delete_operator_flows(sw.dpid, [flow_id]):
            raise NotFound("id", f"switch {key!r} has no operator flow {flow_id}")
        changed()
        return {"deleted": flow_id}

    from controller import ofctl_rest
    ofctl_rest.register(app, core, checked_operator_flows, changed)

    # -- hosts and switches -----------------------------------------------------------
    @app.get("/v1/hosts")
    def hosts() -> list[dict]:
        """Members: hosts.yaml's (as it is now) and registered ones with their lease."""
        out = []
        leases = core.members.registered()
        for h in core.cluster.hosts:
            sw = core.switches.get(datapath_id(h))
            out.append({"name": h.name, "underlay_ip": h.underlay_ip,
                        "docker_subnet": h.docker_subnet, "tunnel_type": h.tunnel_type,
                        "datapath_type": h.datapath_type, "dpid": dpid_str(datapath_id(h)),
                        "connected": bool(sw and sw.connected), "queues": queue_support(h),
                        "source": "registered" if h.name in leases else "hosts.yaml",
                        "lease_expires_in": leases.get(h.name)})
        return out

    @app.post("/v1/hosts/register", dependencies=[Depends(writer)])
    def register_host(body: RegisterIn) -> dict:
        """Join (or renew the lease): the agent's heartbeat.  Refused when hosts.yaml does
        not say `membership: register` or lists this name (the file is the source of truth)."""
        return core.members.register(body.model_dump(exclude={"ttl"}), body.ttl)

    def _switch_json(sw) -> dict:
        return {**sw.summary(core.cluster),
                "in_sync": sw.connected and not sw.syncing
                and sw.synced_version == core.store.version}

    @app.get("/v1/switches")
    def switches() -> list[dict]:
        return [_switch_json(sw) for sw in core.switches.values()]   # an immutable snapshot

    @app.get("/v1/switches/{key}")
    def switch(key: str) -> dict:
        sw = core.switch_by_name(key)
        if sw is None:
            raise NotFound("dpid", f"no switch {key!r} (a dpid or a host name)")
        return _switch_json(sw)

    @app.get("/v1/switches/{key}/flows")
    def flows(key: str) -> list[dict]:
        sw = core.switch_by_name(key)
        if sw is None:
            raise NotFound("dpid", f"no switch {key!r} (a dpid or a host name)")
        if not sw.connected:
            raise Conflict("dpid", f"switch {key!r} is not connected")
        try:
            return core.dump_flows(sw.dpid)
        except (LookupError, TimeoutError) as exc:
            raise Conflict("dpid", f"switch {key!r} did not answer: {exc}") from None

    # -- QoS ----------------------------------------------------------------------------
    def queue_support(host) -> dict:
        if host.datapath_type == "netdev":
            return {"supported": False,
                    "reason": "the userspace (netdev) datapath does not honour OpenFlow "
                              "set_queue with linux-htb queues; use meters (rate limits)"}
        return {"supported": True, "reason": "kernel datapath: linux-htb queues from hosts.yaml"}

    @app.get("/v1/qos/limits")
    def limits() -> list[dict]:
        return [limit_json(x) for x in core.store.limits()]

    @app.post("/v1/qos/limits", status_code=201, dependencies=[Depends(writer)])
    def add_limit(body: LimitIn) -> dict:
        if body.host not in {h.name for h in core.cluster.hosts}:
            raise NotFound("host", f"no host {body.host!r} in hosts.yaml")
        _one_rate(body.kbps, body.pps, body.burst_kb, body.burst_pkts)
        if body.pps is not None:
            x = core.store.add_limit(body.host, None, 0, body.port, body.tenant, body.pps,
                                     sensible_burst_pkts(body.pps, body.burst_pkts))
        elif body.kbps is not None:
            x = core.store.add_limit(body.host, body.kbps,
                                     sensible_burst(body.kbps, body.burst_kb), body.port,
                                     body.tenant)
        else:
            raise Invalid("kbps", "give a rate: kbps (kbit/s) or pps (packets/s)")
        changed()
        return limit_json(x)

    @app.patch("/v1/qos/limits/{limit_id}", dependencies=[Depends(writer)])
    def update_limit(body: LimitPatch, limit_id: int = Path(ge=1, le=MAX_METER_ID)) -> dict:
        cur = next((x for x in core.store.limits() if x.id == limit_id), None)
        if cur is None:
            raise NotFound("id", f"no rate limit {limit_id}")
        if body.model_dump(exclude_none=True) == {}:
            return limit_json(cur)
        _one_rate(body.kbps, body.pps, body.burst_kb, body.burst_pkts)
        to_pps = body.pps is not None or (body.kbps is None and cur.pps is not None)
        if to_pps:
            _one_rate(None, 1, body.burst_kb, None)
            pps = body.pps or cur.pps or 0
            pburst = body.burst_pkts if body.burst_pkts is not None else \
                (None if body.pps else cur.burst_pkts)
            x = core.store.update_limit(limit_id, pps=pps,
                                        burst_pkts=sensible_burst_pkts(pps, pburst))
        else:
            _one_rate(1, None, None, body.burst_pkts)
            kbps = body.kbps or cur.kbps
            burst = body.burst_kb if body.burst_kb is not None else \
                (None if body.kbps else cur.burst_kb)
            x = core.store.update_limit(limit_id, kbps, sensible_burst(kbps, burst))
        changed()
        return limit_json(x)

    @app.delete("/v1/qos/limits/{limit_id}", dependencies=[Depends(writer)])
    def delete_limit(limit_id: int = Path(ge=1, le=MAX_METER_ID)) -> dict:
        core.store.delete_qos("limit", limit_id)
        changed()
        return {"deleted": limit_id}

    @app.get("/v1/qos/rules")
    def rules() -> list[dict]:
        return [rule_json(r) for r in core.store.rules()]

    @app.post("/v1/qos/rules", status_code=201, dependencies=[Depends(writer)])
    def add_rule(body: RuleIn) -> dict:
        if body.queue is not None:
            refuse_queues()
        r = core.store.add_rule(body.tenant, body.priority, body.match.model_dump(
            exclude_none=True), body.kbps, sensible_burst(body.kbps, body.burst_kb),
            body.set_dscp, body.queue)
        changed()
        return rule_json(r)

    def refuse_queues() -> None:
        cannot = [h.name for h in core.cluster.hosts if not queue_support(h)["supported"]]
        if cannot:
            raise Conflict("queue", f"hosts {', '.join(cannot)} cannot honour queues: "
                                    + queue_support(core.cluster.host(cannot[0]))["reason"])

    @app.patch("/v1/qos/rules/{rule_id}", dependencies=[Depends(writer)])
    def update_rule(body: RulePatch, rule_id: int = Path(ge=1, le=MAX_METER_ID)) -> dict:
        changes = body.model_dump(exclude_unset=True)
        if "kbps" in changes or "burst_kb" in changes:
            cur = next((r for r in core.store.rules() if r.id == rule_id), None)
            if cur is None:
                raise NotFound("id", f"no QoS rule {rule_id}")
            kbps = changes.get("kbps", cur.kbps)
            burst = changes.get("burst_kb", None if "kbps" in changes else cur.burst_kb)
            changes["burst_kb"] = sensible_burst(kbps, burst)
        r = core.store.update_rule(rule_id, **changes)
        changed()
        return rule_json(r)

    @app.delete("/v1/qos/rules/{rule_id}", dependencies=[Depends(writer)])
    def delete_rule(rule_id: int = Path(ge=1, le=MAX_METER_ID)) -> dict:
        core.store.delete_qos("rule", rule_id)
        changed()
        return {"deleted": rule_id}

    @app.get("/v1/qos/stats")
    def qos_stats() -> list[dict]:
        """Per host: every meter's packets/bytes passed and dropped; queue support."""
        out = []
        for h in core.cluster.hosts:
            sw = core.switches.get(datapath_id(h))
            entry = {"host": h.name, "connected": bool(sw and sw.connected),
                     "queues": queue_support(h), "meters": []}
            if sw and sw.connected:
                try:
                    entry["meters"] = core.dump_meters(sw.dpid)
                except (LookupError, TimeoutError) as exc:
                    raise Conflict("host", f"switch of {h.name} did not answer: {exc}") from None
            out.append(entry)
        return out

    @app.get("/v1/health", responses={503: {"description": "the OpenFlow event loop is "
                                                          "stuck or the store is unusable"}})
    def health() -> JSONResponse:
        """Open without a token: counts only.  503 when the controller cannot do its job."""
        switches = core.switches                # one immutable snapshot
        connected = sum(1 for sw in switches.values() if sw.connected)
        loop = core.loop_health() if core.loop_health else None
        problems = [loop["reason"]] if loop and not loop["alive"] else []
        identity: dict[str, str | None] = {"instance": core.instance, "epoch": None}
        try:
            bindings = core.store.count_bindings()
            identity.update(core.identity())
        except StoreError as exc:
            bindings, problems = -1, problems + [exc.message]
        body = {"status": "unhealthy" if problems else "ok", "problems": problems, **identity,
                "version": version(),
                "hosts": len(core.cluster.hosts),
                "switches_connected": connected, "state_version": core.store.version,
                "bindings": bindings,
                "switches_in_sync": sum(1 for sw in switches.values()
                                        if sw.connected and not sw.syncing
                                        and sw.synced_version == core.store.version),
                # the wipe guard: switches left untouched, programmed under another store
                "switches_refused": sorted(sw.host or dpid_str(sw.dpid)
                                           for sw in switches.values() if sw.sync_refused),
                "event_loop": loop,
                "election": core.election_status() if core.election_status else None}
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        lines = ["# TYPE weft_switch_connected gauge", "# TYPE weft_flow_mods_sent_total counter",
                 "# TYPE weft_syncs_total counter", "# TYPE weft_learned_flows gauge",
                 "# TYPE weft_learn_limit_macs gauge"]
        for sw in core.switches.values():
            lbl = f'{{host="{sw.host}",dpid="{dpid_str(sw.dpid)}"}}'
            lines += [f"weft_switch_connected{lbl} {int(sw.connected)}",
                      f"weft_flow_mods_sent_total{lbl} {sw.flow_mods}",
                      f"weft_syncs_total{lbl} {sw.syncs}",
                      f"weft_learned_flows{lbl} {sw.learned_flows}"]
        lines += [f"weft_learn_limit_macs {LEARN_LIMIT_MACS}",
                  f"weft_tenants {len(core.store.tenants())}",
                  f"weft_port_bindings {len(core.store.bindings())}",
                  "# TYPE weft_handler_errors_total counter"]
        lines += [f'weft_handler_errors_total{{handler="{name}"}} {n}'
                  for name, n in sorted(core.handler_errors.items())]
        rules = {r.id: r for r in core.store.acls()}
        if rules:
            lines += ["# TYPE weft_acl_rule_packets_total counter",
                      "# TYPE weft_acl_rule_bytes_total counter"]
            totals = acl_counters(live_flows())
            for rid, r in sorted(rules.items()):
                c = totals.get(rid, {"packets": 0, "bytes": 0})
                lbl = f'{{tenant="{r.tenant}",rule="{rid}",action="{r.action}"}}'
                lines += [f"weft_acl_rule_packets_total{lbl} {c['packets']}",
                          f"weft_acl_rule_bytes_total{lbl} {c['bytes']}"]
        loop = core.loop_health() if core.loop_health else None
        if loop:
            lines += ["# TYPE weft_event_queue_depth gauge",
                      f"weft_event_queue_depth {loop['queue_depth']}",
                      "# TYPE weft_event_loop_alive gauge",
                      f"weft_event_loop_alive {int(loop['alive'])}"]
        return "\n".join(lines) + "\n"

    return app


def serve_in_thread(core: Core, host: str, port: int, unix: str | None,
                    token: str | None) -> None:
    """Run the API beside the OpenFlow loop (uvicorn skips signal handlers off-main).

    A unix socket is reachable from any network namespace through the
    filesystem, which lets the lab's tools talk to a controller that lives
    in the lab's namespace without a single address outside it.
    """
    app = make_app(core, token)
    binds: list[dict[str, Any]] = (([{"host": host, "port": port}] if port else [])
                                   + ([{"uds": unix}] if unix else []))
    for bind in binds:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               **bind))
        threading.Thread(target=server.run, name=f"weft-api-{bind}", daemon=True).start()
