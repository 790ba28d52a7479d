"""REST API v1: tenants, their networks and routes, port bindings, hosts, switches and
their live flows, the live picture (/v1/topology, /ui).

FastAPI gives the OpenAPI document at /openapi.json.  Every refused request
is a 4xx JSON body ``{"error": ..., "field": ...}`` and changes nothing;
writes need the bearer token when one is configured.
"""
from __future__ import annotations

import threading
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI

from controller.core import Core
from controller.rest import (acls, backup, errors, hosts, ipam, names, networks, observe,
                             ofctl_rest, operator_flows, ports, qos, switches, tenants,
                             topology, trace)
from controller.rest.deps import authorized

ROUTERS = (tenants, networks, ipam, ports, backup, acls, operator_flows, ofctl_rest, hosts,
           switches, qos, observe, names, trace, topology)


def create_app(core: Core, token: str | None) -> FastAPI:
    """The API of ``core``; with ``token``, every path but /v1/health needs it."""
    app = FastAPI(title="weft", version="1", description=__doc__, responses=errors.ERRORS,
                  dependencies=[Depends(authorized)])
    app.state.core, app.state.token = core, token
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    return app


def serve_in_thread(core: Core, host: str, port: int, unix: str | None,
                    token: str | None) -> None:
    """Run the API beside the OpenFlow loop (uvicorn skips signal handlers off-main).

    A unix socket is reachable from any network namespace through the
    filesystem, which lets the lab's tools talk to a controller that lives
    in the lab's namespace without a single address outside it.
    """
    app = create_app(core, token)
    binds: list[dict[str, Any]] = (([{"host": host, "port": port}] if port else [])
                                   + ([{"uds": unix}] if unix else []))
    for bind in binds:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               **bind))
        threading.Thread(target=server.run, name=f"weft-api-{bind}", daemon=True).start()
