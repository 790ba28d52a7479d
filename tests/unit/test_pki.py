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


def test_etcd_certificates_name_their_addresses_and_clients_carry_no_cn(tmp_path):
    """A member's certificate lists the addresses clients and peers check; the
    controllers' etcd client certificate has no CN (etcd's gateway refuses one with auth
    on); a certificate called root (etcd's administrator by CN) is refused."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    assert pki.main(["init", str(tmp_path)]) == 0
    assert pki.main(["issue", str(tmp_path), "e1", "--san", "10.0.0.1",
                     "--san", "etcd1.example"]) == 0
    cert = x509.load_pem_x509_certificate(pki.cert_path(tmp_path, "e1").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["etcd1.example", "e1"]
    assert pki.main(["issue", str(tmp_path), "weft-manager", "--etcd-client"]) == 0
    client = x509.load_pem_x509_certificate(
        pki.cert_path(tmp_path, "weft-manager").read_bytes())
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    assert client.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "weft-manager"
    assert pki.main(["issue", str(tmp_path), "root"]) == 2
    assert not pki.cert_path(tmp_path, "root").exists()


def test_host_certificates_carry_their_name_as_dns_name_for_ipsec(tmp_path):
    """IPsec with weft-pki's certificates: strongSwan matches ovs-monitor-ipsec's
    remote_name (the peer's host name) against the peer certificate's subjectAltNames."""
    from cryptography import x509
    assert pki.main(["init", str(tmp_path)]) == 0
    assert pki.main(["issue", str(tmp_path), "host2"]) == 0
    cert = x509.load_pem_x509_certificate(pki.cert_path(tmp_path, "host2").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["host2"]
    assert pki.main(["issue", str(tmp_path), "c", "--etcd-client"]) == 0
    client = x509.load_pem_x509_certificate(pki.cert_path(tmp_path, "c").read_bytes())
    assert not _has_san(client)


def _has_san(cert) -> bool:
    from cryptography import x509
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return True
    except x509.ExtensionNotFound:
        return False
