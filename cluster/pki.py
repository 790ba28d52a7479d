"""`weft-pki`: a small CA for weft's OpenFlow-over-TLS control channel.

    weft-pki init DIR                 a CA: DIR/ca-cert.pem, DIR/ca-privkey.pem (0600)
    weft-pki issue DIR NAME... [--san IP|DNS]... [--etcd-client]
                                      DIR/NAME-cert.pem + DIR/NAME-privkey.pem per NAME,
                                      signed by the CA (NAME: a host of hosts.yaml, or
                                      "controller"; an etcd member with --san its
                                      address(es), or etcd's client with --etcd-client)

Mutual TLS: the controller (weft-manager --ctl-privkey/--ctl-cert/--ca-certs)
accepts only switches with a certificate from this CA, and each switch (the
agent writes OVS's SSL table from ``ovs-agent --ssl-dir``) accepts only a
controller with one.  The same layout ``ovs-pki`` makes can be used instead:
the agent and controller only need the three files per name.

etcd (docs/security.md): a second CA in its own directory (so no switch's certificate
opens etcd), a certificate per member with its addresses as subject alternative names
(etcd serves and peers with it: clients and peers check the name), and one for the
controllers.  Any operator's CA works as well: weft-manager only reads the three files.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca-cert.pem", "ca-privkey.pem"
VALID_DAYS = 3650
# Certificates' keys are RSA (the CA's is EC P-256): OVS's IPsec (ovs-monitor-ipsec, strongSwan
# backend) names a host's private key in ipsec.secrets as `: RSA FILE`, which strongSwan
# loads as an RSA key only (stroke's load_private with KEY_RSA), so an EC key could not
# authenticate IKE; TLS (OpenFlow, OVSDB, etcd) takes RSA as well.
RSA_BITS = 2048            # as ovs-pki; 3072 costs 3x the time in labs of many hosts


def cert_path(d: Path, name: str) -> Path:
    return d / f"{name}-cert.pem"


def key_path(d: Path, name: str) -> Path:
    return d / f"{name}-privkey.pem"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        # RSA as PKCS#1 ("BEGIN RSA PRIVATE KEY"): what strongSwan's RSA loaders read
        fmt = serialization.PrivateFormat.TraditionalOpenSSL \
            if isinstance(key, rsa.RSAPrivateKey) else serialization.PrivateFormat.PKCS8
        f.write(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))


def _name(cn: str, client_only: bool = False) -> x509.Name:
    """O=weft, CN=name; a ``client_only`` certificate carries the name as OU, no CN: etcd
    (3.4) refuses gateway requests from a certificate with a CN when auth is on (the CN
    would be an etcd user name, which its JSON gateway cannot honour)."""
    last = NameOID.ORGANIZATIONAL_UNIT_NAME if client_only else NameOID.COMMON_NAME
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "weft"),
                      x509.NameAttribute(last, cn)])


def init_ca(d: Path, cn: str = "weft CA") -> Path:
    """Make the CA in ``d`` unless it exists; returns its certificate's path."""
    d.mkdir(parents=True, exist_ok=True)
    if (d / CA_CERT).exists() and (d / CA_KEY).exists():
        return d / CA_CERT
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(d / CA_KEY, key)
    (d / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / CA_CERT


# etcd maps a client certificate's CN to the etcd user of that name (on its gRPC port):
# a certificate called "root" would be etcd's administrator without a password
RESERVED = ("root",)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def issue(d: Path, name: str, san: list[str] | None = None,
          etcd_client: bool = False) -> tuple[Path, Path]:
    """A key and a certificate for ``name`` signed by the CA in ``d``: (key, cert);
    ``san``: addresses and DNS names it serves under (TLS clients check them);
    ``etcd_client``: a client certificate without a CN (see `_name`)."""
    if name in RESERVED:
        raise ValueError(f"{name!r} is etcd's administrator user: a certificate with that "
                         "name would log in as it (CN authentication); pick another name")
    ca_key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), None)
    ca = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
    key = rsa.generate_private_key(65537, RSA_BITS)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(name, etcd_client))
               .issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    # the name as a DNS name too: IPsec peers (strongSwan, from ovs-monitor-ipsec's
    # `options:remote_name`) match a peer's identity against its subjectAltNames
    names = list(san or []) + ([] if etcd_client or name in (san or []) else [name])
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())      # type: ignore[arg-type]
    _write_key(key_path(d, name), key)
    cert_path(d, name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path(d, name), cert_path(d, name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="weft-pki", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="make the CA")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("issue", help="a key and certificate per name, signed by the CA")
    p.add_argument("dir", type=Path)
    p.add_argument("names", nargs="+")
    p.add_argument("--san", action="append", default=[], metavar="IP|DNS",
                   help="an address or DNS name the certificate serves under (etcd "
                        "members: each address clients and peers use); repeatable")
    p.add_argument("--etcd-client", action="store_true",
                   help="a client certificate for etcd (weft-manager's --etcd-cert): the "
                        "name goes in OU, no CN (etcd's gateway refuses a CN with auth on)")
    args = ap.parse_args(argv)
    if args.cmd == "init":
        print(init_ca(args.dir))
        return 0
    if not (args.dir / CA_KEY).exists():
        print(f"weft-pki: no CA in {args.dir} (run: weft-pki init {args.dir})", file=sys.stderr)
        return 2
    for name in args.names:
        try:
            print(*issue(args.dir, name, args.san, args.etcd_client))
        except ValueError as exc:
            print(f"weft-pki: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
