"""REST API v1: tenants, port bindings, hosts, switches and their live flows.

FastAPI gives the OpenAPI document at /openapi.json.  Every refused request
is a 4xx JSON body ``{"error": ..., "field": ...}`` and changes nothing;
writes need the bearer token when one is configured.
"""
from __future__ import annotations

import hmac
import threading
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from controller.core import Core
from controller.model import Binding, Tenant
from controller.store import Conflict, NotFound, StoreError
from ovs_agent.hostsfile import datapath_id, dpid_str


class Unauthorized(StoreError):
    status = 401


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(_In):
    name: str = Field(description="lowercase letter first; letters, digits, - and _")
    vni: int | None = Field(None, description="auto-assigned when omitted")
    vlan: int | None = Field(None, ge=1, le=4094, description="802.1Q id on trunk ports")
    subnet: str | None = None
    description: str = ""


class TenantPatch(_In):
    vlan: int | None = Field(None, ge=1, le=4094)
    subnet: str | None = None
    description: str | None = None


class PortSpec(_In):
    tenant: str | None = Field(None, description="access: the tenant; trunk: the native "
                                                 "(untagged) tenant, optional")
    mode: str = Field("access", description="access or trunk")
    mac: str | None = Field(None, description="access only: a known endpoint behind the port")
    trunk: list[str] = Field(default_factory=list,
                             description="trunk only: tenants carried tagged with their VLAN id")


class PortIn(PortSpec):
    host: str
    port: str = Field(description="port name on the host's br0")


class Attachment(_In):
    port: str
    tenant: str
    mac: str | None = None
    container: str | None = None


def tenant_json(t: Tenant) -> dict[str, Any]:
    return {"name": t.name, "vni": t.vni, "vlan": t.vlan, "subnet": t.subnet,
            "description": t.description, "builtin": t.name == "default"}


def binding_json(b: Binding, source: str) -> dict[str, Any]:
    return {"host": b.host, "port": b.port, "tenant": b.tenant, "mode": b.mode, "mac": b.mac,
            "trunk": list(b.trunk), "source": source}


def make_app(core: Core, token: str | None) -> FastAPI:
    app = FastAPI(title="weft", version="1", description=__doc__)

    def writer(authorization: str | None = Header(None)) -> None:
        if token and not (authorization and authorization.startswith("Bearer ")
                          and hmac.compare_digest(authorization[7:], token)):
            raise Unauthorized("authorization", "a valid bearer token is required for writes")

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"error": first.get("msg", "invalid request"), "field": field,
                             "errors": [{"field": ".".join(str(x) for x in e.get("loc", ())),
                                         "error": e.get("msg")} for e in exc.errors()]},
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
    def get_tenant(name: str) -> dict:
        t = core.store.tenant(name)
        return {**tenant_json(t), "ports": [binding_json(sb.binding, sb.source)
                                            for sb in core.store.bindings(tenant=name)]}

    @app.patch("/v1/tenants/{name}", dependencies=[Depends(writer)])
    def update_tenant(name: str, body: TenantPatch) -> dict:
        t = core.store.update_tenant(name, **body.model_dump(exclude_unset=True))
        changed()
        return tenant_json(t)

    @app.delete("/v1/tenants/{name}", dependencies=[Depends(writer)])
    def delete_tenant(name: str, force: bool = False) -> dict:
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
                            trunk=tuple(body.trunk))
        changed()
        return binding_json(b, "api")

    @app.put("/v1/ports/{host}/{port}", dependencies=[Depends(writer)])
    def rebind(host: str, port: str, body: PortSpec) -> dict:
        """Change a bound port in place (e.g. access <-> trunk): only its flows change."""
        not_reserved(host, port)
        b = core.store.bind(host, port, body.tenant, body.mode, body.mac,
                            trunk=tuple(body.trunk), replace=True)
        changed()
        return binding_json(b, "api")

    @app.post("/v1/ports/bulk", status_code=201, dependencies=[Depends(writer)])
    def bind_many(body: list[PortIn]) -> dict:
        """Bind many ports in one transaction: all or nothing."""
        for b in body:
            not_reserved(b.host, b.port)
        n = core.store.bind_many([b.model_dump() for b in body])
        changed()
        return {"bound": n}

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
    def attachments(host: str, body: list[Attachment]) -> dict:
        """Containers the host's ovs-agent plugged into br0 (replaces the previous list)."""
        if host not in {h.name for h in core.cluster.hosts}:
            raise NotFound("host", f"no host {host!r} in hosts.yaml")
        before = core.store.version
        n = core.store.replace_agent_bindings(host, [a.model_dump() for a in body])
        if core.store.version != before:
            changed()
        return {"host": host, "attachments": n}

    # -- hosts and switches -----------------------------------------------------------
    @app.get("/v1/hosts")
    def hosts() -> list[dict]:
        out = []
        for h in core.cluster.hosts:
            sw = core.switches.get(datapath_id(h))
            out.append({"name": h.name, "underlay_ip": h.underlay_ip,
                        "docker_subnet": h.docker_subnet, "tunnel_type": h.tunnel_type,
                        "dpid": dpid_str(datapath_id(h)),
                        "connected": bool(sw and sw.connected)})
        return out

    def _switch_json(sw) -> dict:
        return {**sw.summary(core.cluster),
                "in_sync": sw.connected and not sw.syncing
                and sw.synced_version == core.store.version}

    @app.get("/v1/switches")
    def switches() -> list[dict]:
        with core.lock:
            return [_switch_json(sw) for sw in core.switches.values()]

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

    @app.get("/v1/health")
    def health() -> dict:
        connected = sum(1 for sw in core.switches.values() if sw.connected)
        return {"status": "ok", "hosts": len(core.cluster.hosts),
                "switches_connected": connected, "state_version": core.store.version}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        lines = ["# TYPE weft_switch_connected gauge", "# TYPE weft_flow_mods_sent_total counter",
                 "# TYPE weft_syncs_total counter"]
        for sw in core.switches.values():
            lbl = f'{{host="{sw.host}",dpid="{dpid_str(sw.dpid)}"}}'
            lines += [f"weft_switch_connected{lbl} {int(sw.connected)}",
                      f"weft_flow_mods_sent_total{lbl} {sw.flow_mods}",
                      f"weft_syncs_total{lbl} {sw.syncs}"]
        lines += [f"weft_tenants {len(core.store.tenants())}",
                  f"weft_port_bindings {len(core.store.bindings())}"]
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
    binds = ([{"host": host, "port": port}] if port else []) + ([{"uds": unix}] if unix else [])
    for bind in binds:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               **bind))
        threading.Thread(target=server.run, name=f"weft-api-{bind}", daemon=True).start()
