"""The agent's small HTTP listener (``--listen ADDR:PORT``): GET routes behind the
controller's bearer token (``WEFT_API_TOKEN``, as the agent already has it).

One line adds a route: ``listener.route("/metrics", handler)``, where ``handler()``
returns (status, content type, body).  Like the controller's API it refuses to
listen beyond loopback without a token, and compares tokens in constant time.
A thread per request (stdlib `ThreadingHTTPServer`): a slow client holds no other.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = logging.getLogger("ovs-agent")
Handler = Callable[[], tuple[int, str, bytes]]

__all__ = ["Listener", "parse_address"]


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (ValueError naming what is wrong)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not ADDR:PORT")
    ipaddress.ip_address(host)          # an address, not a name: no resolver at start-up
    return host, int(port)


class Listener:
    def __init__(self, address: str, port: int, token: str | None) -> None:
        if not token and not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"refusing to listen on {address} without a token "
                             "(set WEFT_API_TOKEN, as for the controller's API)")
        self.routes: dict[str, Handler] = {}
        self.token = token
        listener = self

        class _Request(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                path = self.path.split("?", 1)[0]
                if listener.token and not _token_ok(self.headers.get("Authorization"),
                                                    listener.token):
                    self._send(401, "text/plain", b"a valid bearer token is required\n")
                    return
                handler = listener.routes.get(path)
                if handler is None:
                    self._send(404, "text/plain", b"not found\n")
                    return
                try:
                    status, ctype, body = handler()
                except Exception as exc:  # noqa: BLE001  (a route's bug: a 500, not a dead thread)
                    LOG.exception("listener: %s failed", path)
                    status, ctype, body = 500, "text/plain", f"{exc}\n".encode()
                self._send(status, ctype, body)

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:   # one line per scrape is noise
                pass

        self.server = ThreadingHTTPServer((address, port), _Request)
        self.server.daemon_threads = True
        self.address = self.server.server_address

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="weft-listener",
                         daemon=True).start()
        LOG.info("listening on %s:%d (%s)", self.address[0], self.address[1],
                 ", ".join(sorted(self.routes)))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _token_ok(authorization: str | None, token: str) -> bool:
    if not authorization or not authorization.startswith("Bearer "):
        return False
    given = authorization[7:].encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, token.encode("utf-8", "surrogateescape"))
