"""What the routers' handlers share, through FastAPI's ``Depends``.

The app holds the `Core` and the token in ``app.state`` (`create_app`); handlers get
the core by declaring a `CoreDep` parameter, writes are gated by `writer`, every
request by `authorized` (an app-wide dependency), a switch named in the path by
`KnownSwitch`.
"""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from controller.core import Core, Switch
from controller.rest.errors import Unauthorized
from controller.store import NotFound, Unavailable

OPEN_PATHS = {"/v1/health", "/ui"}  # everything else needs the token when one is set
# (/ui is a static page without data: docs/observability.md "Live picture")


def get_core(request: Request) -> Core:
    return request.app.state.core


CoreDep = Annotated[Core, Depends(get_core)]


def _token_ok(authorization: str | None, token: str) -> bool:
    """Constant-time, and on bytes: a non-ASCII header or token is just a wrong token."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    given = authorization[7:].encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, token.encode("utf-8", "surrogateescape"))


def authorized(request: Request,
               authorization: str | None = Header(None, include_in_schema=False)) -> None:
    token = request.app.state.token
    if token and request.url.path not in OPEN_PATHS and not _token_ok(authorization, token):
        raise Unauthorized("authorization", "a valid bearer token is required")


def writer(core: CoreDep) -> None:
    """Writes are refused, not left hanging, while the OpenFlow loop is stuck."""
    health = core.openflow.loop_health()
    if health and not health["alive"]:
        raise Unavailable("controller", f"{health['reason']}; nothing was changed")


def find_switch(core: Core, key: str) -> Switch:
    """A switch by host name or dpid; 404 naming ``dpid`` when there is none."""
    sw = core.switch_by_name(key)
    if sw is None:
        raise NotFound("dpid", f"no switch {key!r} (a dpid or a host name)")
    return sw


def known_switch(key: str, core: CoreDep) -> Switch:
    return find_switch(core, key)


# For routes whose only input is the switch: a route with a body or other path values
# calls `find_switch` itself, so those are validated (422) before the switch is looked
# up (404), as before the routers were split.
KnownSwitch = Annotated[Switch, Depends(known_switch)]
