"""weft-pki: a CA and certificates a TLS server and client accept from each other."""
from __future__ import annotations

import socket
import ssl
import threading

from cluster import pki


def test_issued_certificates_authenticate_both_ends(tmp_path):
    assert pki.main(["init", str(tmp_path)]) == 0
    assert pki.main(["issue", str(tmp_path), "controller", "host1"]) == 0
    assert oct((tmp_path / "host1-privkey.pem").stat().st_mode & 0o777) == "0o600"
    ca = str(tmp_path / pki.CA_CERT)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.cert_path(tmp_path, "controller"),
                           pki.key_path(tmp_path, "controller"))
    server.verify_mode, _ = ssl.CERT_REQUIRED, server.load_verify_locations(ca)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(ca)
    client.load_cert_chain(pki.cert_path(tmp_path, "host1"), pki.key_path(tmp_path, "host1"))
    a, b = socket.socketpair()
    peer: dict = {}

    def serve() -> None:
        with server.wrap_socket(a, server_side=True) as s:
            peer.update(s.getpeercert())
            s.sendall(b"ok")
    t = threading.Thread(target=serve)
    t.start()
    with client.wrap_socket(b) as c:
        assert c.recv(2) == b"ok"
    t.join(5)
    assert ((("commonName", "host1"),) in peer["subject"])


def test_issue_without_a_ca_is_refused(tmp_path):
    assert pki.main(["issue", str(tmp_path), "host1"]) == 2
