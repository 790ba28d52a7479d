"""`weft-pki`: a small CA for weft's OpenFlow-over-TLS control channel.

    weft-pki init DIR                 a CA: DIR/ca-cert.pem, DIR/ca-privkey.pem (0600)
    weft-pki issue DIR NAME...        DIR/NAME-cert.pem + DIR/NAME-privkey.pem per NAME,
                                      signed by the CA (NAME: a host of hosts.yaml, or
                                      "controller")

Mutual TLS: the controller (weft-manager --ctl-privkey/--ctl-cert/--ca-certs)
accepts only switches with a certificate from this CA, and each switch (the
agent writes OVS's SSL table from ``ovs-agent --ssl-dir``) accepts only a
controller with one.  The same layout ``ovs-pki`` makes can be used instead:
the agent and controller only need the three files per name.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca-cert.pem", "ca-privkey.pem"
VALID_DAYS = 3650


def cert_path(d: Path, name: str) -> Path:
    return d / f"{name}-cert.pem"


def key_path(d: Path, name: str) -> Path:
    return d / f"{name}-privkey.pem"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "weft"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


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


def issue(d: Path, name: str) -> tuple[Path, Path]:
    """A key and a certificate for ``name`` signed by the CA in ``d``: (key, cert)."""
    ca_key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), None)
    ca = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))      # type: ignore[arg-type]
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
    args = ap.parse_args(argv)
    if args.cmd == "init":
        print(init_ca(args.dir))
        return 0
    if not (args.dir / CA_KEY).exists():
        print(f"weft-pki: no CA in {args.dir} (run: weft-pki init {args.dir})", file=sys.stderr)
        return 2
    for name in args.names:
        print(*issue(args.dir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
