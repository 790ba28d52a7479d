"""The agent reports its attachments, registers and reads the member list at any live
controller instance: losing one, the first URL of hosts.yaml included, stops nothing."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from ovs_agent.attach import first_answer, members, register, report_any


def _server(status: int) -> tuple[HTTPServer, str, list[str]]:
    got: list[str] = []

    class H(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            got.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"instance": "i1", "epoch": "e1"}'     # as the controller answers
            self._answer(body)

        do_POST = do_PUT                                    # registration

        def do_GET(self) -> None:                           # the member list
            got.append(self.path)
            self._answer(b'[{"name": "host1", "underlay_ip": "10.0.0.1"}]')

        def _answer(self, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:
            pass
    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}", got


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"      # closed again: refused


def test_fails_over_past_a_dead_and_an_unavailable_instance():
    busy, busy_url, busy_got = _server(503)
    ok, ok_url, ok_got = _server(200)
    try:
        i, identity = report_any((_dead_url(), busy_url, ok_url), "host1", [])
        assert identity == ("i1", "e1")
        assert i == 2 and ok_got == ["/v1/hosts/host1/attachments"] and busy_got
        # the next report starts with the instance that answered
        assert report_any((_dead_url(), busy_url, ok_url), "host1", [], prefer=i)[0] == 2
        assert len(busy_got) == 1
    finally:
        busy.shutdown()
        ok.shutdown()


def test_a_refusal_is_an_answer_not_a_failover():
    bad, bad_url, _ = _server(422)
    ok, ok_url, ok_got = _server(200)
    try:
        with pytest.raises(httpx.HTTPStatusError):
            report_any((bad_url, ok_url), "host1", [])
        assert ok_got == []
    finally:
        bad.shutdown()
        ok.shutdown()


def test_all_down_raises():
    with pytest.raises(httpx.HTTPError):
        report_any((_dead_url(), _dead_url()), "host1", [])


def test_registration_and_the_member_list_fail_over_past_a_dead_first_instance():
    ok, ok_url, ok_got = _server(200)
    try:
        urls = (_dead_url(), ok_url)
        i, _ = first_answer(urls, lambda url: register(url, {"name": "host3"}, 6.0))
        assert i == 1 and ok_got == ["/v1/hosts/register"]
        i, remote = first_answer(urls, members, prefer=i)
        assert i == 1 and remote == [{"name": "host1", "underlay_ip": "10.0.0.1"}]
    finally:
        ok.shutdown()
