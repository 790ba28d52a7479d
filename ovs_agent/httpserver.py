"""The agent's own HTTP listener: what the controller asks of one host's switch.

    ovs-agent --peers hosts.yaml [--listen ADDR:PORT]

The address defaults to this host's ``agent_api`` in hosts.yaml (docs/hosts-yaml.md);
without either the agent listens nowhere.  Every request needs the same bearer token as
the controller's REST API (``WEFT_API_TOKEN``, compared in constant time); without a
token the listener binds only to loopback, as the controller's API does.

Routes are one table, ``ROUTES``: (method, path) -> handler.  A handler takes the
request body (bytes) and returns (status, content type, body); adding a route is one
line.  The server is the standard library's threading HTTP server: no new dependency in
an agent that 32 lab hosts start at once, and no framework for two routes.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

from ovs_agent import tracing

LOG = logging.getLogger("ovs-agent")
Handler = Callable[[bytes], tuple[int, str, bytes]]
MAX_BODY = 64 * 1024

ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/trace"): tracing.handle,
}


def json_answer(status: int, body: object) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def error(status: int, field: str, message: str) -> tuple[int, str, bytes]:
    """The controller's error shape: {"error": ..., "field": ...}."""
    return json_answer(status, {"error": message, "field": field})


def token_ok(authorization: str | None, token: str) -> bool:
    """As controller.rest.deps: constant time, on bytes."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    given = authorization[7:].encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, token.encode("utf-8", "surrogateescape"))


def parse_listen(value: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``http://ADDR:PORT`` -> (IPv4 address, port); ValueError."""
    url = urlsplit(value if "://" in value else f"http://{value}")
    host, port = url.hostname or "", url.port
    ipaddress.IPv4Address(host)
    if not port:
        raise ValueError(f"{value!r} has no port")
    return host, port


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self, method: str) -> None:
        path = urlsplit(self.path).path
        token = self.server.token
        if token is not None and not token_ok(self.headers.get("Authorization"), token):
            self._send(*error(401, "authorization", "a valid bearer token is required"))
            return
        handler = self.server.routes.get((method, path))
        if handler is None:
            known = any(p == path for _, p in self.server.routes)
            self._send(*error(405 if known else 404, "path",
                              f"{method} {path} is not served here"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(*error(413, "body", f"at most {MAX_BODY} bytes"))
            return
        body = self.rfile.read(length) if length else b""
        try:
            self._send(*handler(body))
        except Exception as exc:        # a handler's bug is a 500, never a dead listener
            LOG.exception("agent listener: %s %s", method, path)
            self._send(*error(500, "", f"{type(exc).__name__}"))

    def do_GET(self) -> None:   # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:   # noqa: A002
        LOG.debug("agent listener: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], token: str | None,
                 routes: dict[tuple[str, str], Handler]) -> None:
        self.token, self.routes = token, routes
        super().__init__(addr, _Handler)


def serve(listen: tuple[str, int], token: str | None = None,
          routes: dict[tuple[str, str], Handler] | None = None) -> ThreadingHTTPServer:
    """Start the listener in a daemon thread; returns the server (``shutdown()`` stops it).

    ``token`` None reads WEFT_API_TOKEN; with no token only loopback is allowed
    (ValueError otherwise), so no host's switch answers strangers."""
    token = (token if token is not None else os.environ.get("WEFT_API_TOKEN")) or None
    if token is None and not ipaddress.IPv4Address(listen[0]).is_loopback:
        raise ValueError(f"refusing to listen on {listen[0]} without a token "
                         "(set WEFT_API_TOKEN, as the controller's)")
    server = _Server(listen, token, ROUTES if routes is None else routes)
    threading.Thread(target=server.serve_forever, name="agent-http", daemon=True).start()
    LOG.info("agent listener on http://%s:%d (%s)", listen[0], server.server_address[1],
             ", ".join(f"{m} {p}" for m, p in sorted(server.routes)))
    return server
