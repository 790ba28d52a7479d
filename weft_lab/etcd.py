"""Real etcd members on loopback for tests and benchmarks: free ports, a temporary data
directory, stopped by PID and removed afterwards (no lab, no namespace: 127.0.0.1 only).

Secured by default, as weft expects etcd in production (docs/security.md): TLS for
clients and peers with certificates from a `weft-pki` CA made for the cluster, client
certificates required, and authentication on: ``root`` (set-up only) and ``weft``, whose
role reads and writes only ``prefix``.  ``secure=False`` runs the clear-text cluster
that weft uses only with ``--etcd-insecure``."""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from cluster import pki
from controller.etcd_access import EtcdAccess

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log: str
    proc: subprocess.Popen | None = None
    pki: Path | None = None         # TLS: this member's certificate from the cluster's CA

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def scheme(self) -> str:
        return "https" if self.pki else "http"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        s = self.scheme
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [ETCD, "--name", self.name, "--data-dir", self.data_dir,
                 "--listen-client-urls", f"{s}://127.0.0.1:{self.client_port}",
                 "--advertise-client-urls", f"{s}://127.0.0.1:{self.client_port}",
                 "--listen-peer-urls", f"{s}://127.0.0.1:{self.peer_port}",
                 "--initial-advertise-peer-urls", f"{s}://127.0.0.1:{self.peer_port}",
                 *(tls_flags(self.pki, self.name) if self.pki else []),
                 "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
                 "--initial-cluster-token", f"weft-test-{os.getpid()}",
                 "--max-txn-ops", "100000", "--max-request-bytes", str(32 * 1024 * 1024),
                 "--heartbeat-interval", "100", "--election-timeout", "1000"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def tls_flags(d: Path, name: str) -> list[str]:
    """etcd's flags for TLS with the member certificate ``name`` from the CA in ``d``:
    clients and peers must show a certificate from that CA too."""
    cert, key, ca = pki.cert_path(d, name), pki.key_path(d, name), d / pki.CA_CERT
    return ["--cert-file", str(cert), "--key-file", str(key), "--trusted-ca-file", str(ca),
            "--client-cert-auth", "--peer-cert-file", str(cert), "--peer-key-file", str(key),
            "--peer-trusted-ca-file", str(ca), "--peer-client-cert-auth"]


CLIENT = "weft-manager"         # the controllers' client certificate (not an etcd user)
WEFT_USER = "weft"
PASSWORD_FILE = "weft.password"  # the weft user's, beside the certificates (0600)
ROOT_PASSWORD_FILE = "root.password"


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def make_pki(d: Path, members: dict[str, list[str]]) -> None:
    """The CA of an etcd cluster in ``d`` (unless there), a certificate per member
    (``members``: name -> the addresses it serves and peers from), the controllers'
    client certificate, and the root and weft users' passwords (0600)."""
    if (d / ROOT_PASSWORD_FILE).exists():
        return
    pki.init_ca(d, "weft etcd CA")
    for name, ips in members.items():
        pki.issue(d, name, ips)
    pki.issue(d, CLIENT, etcd_client=True)
    for name in (PASSWORD_FILE, ROOT_PASSWORD_FILE):
        fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16) + "\n")


def client_access(d: Path, user: str | None = WEFT_USER) -> EtcdAccess:
    """The controllers' access to the cluster of the PKI in ``d`` (``user`` None: the
    certificate alone, for health checks and set-up)."""
    return EtcdAccess(ca=str(d / pki.CA_CERT), cert=str(pki.cert_path(d, CLIENT)),
                      key=str(pki.key_path(d, CLIENT)), user=user,
                      password=(d / PASSWORD_FILE).read_text().strip() if user else None)


def enable_auth(url: str, d: Path, prefix: str) -> None:
    """Turn authentication on at member ``url`` (https://ip:port) with the PKI in ``d``."""
    with httpx.Client(verify=client_access(d, None).ssl_context(), trust_env=False) as http:
        def post(path: str, body: dict) -> Any:
            r = http.post(url + path, content=json.dumps(body), timeout=10)
            r.raise_for_status()
            return r.json()
        auth_setup(post, prefix, (d / ROOT_PASSWORD_FILE).read_text().strip(),
                   (d / PASSWORD_FILE).read_text().strip())


def auth_setup(post: Callable[[str, dict], Any], prefix: str, root_password: str,
               weft_password: str) -> None:
    """Turn authentication on: ``root`` (the administrator, for set-up) and ``weft``,
    whose role reads and writes the keys under ``prefix`` only.  ``post(path, body)``
    sends one request to etcd's JSON gateway."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    steps: list[tuple[str, dict]] = [
            ("/v3/auth/user/add", {"name": "root", "password": root_password}),
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/role/add", {"name": WEFT_USER}),
            ("/v3/auth/role/grant", {"name": WEFT_USER, "perm": {
                "permType": "READWRITE", "key": _b64(prefix), "range_end": _b64(end)}}),
            ("/v3/auth/user/add", {"name": WEFT_USER, "password": weft_password}),
            ("/v3/auth/user/grant", {"user": WEFT_USER, "role": WEFT_USER}),
            ("/v3/auth/enable", {})]
    for path, body in steps:
        post(path, body)


@dataclass
class EtcdCluster:
    members: list[Member] = field(default_factory=list)
    pki: Path | None = None         # the cluster's CA and certificates (None: clear text)

    @property
    def weft_password(self) -> str:
        return (self.pki / PASSWORD_FILE).read_text().strip() if self.pki else ""

    @property
    def root_password(self) -> str:
        return (self.pki / ROOT_PASSWORD_FILE).read_text().strip() if self.pki else ""

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    @property
    def access(self) -> EtcdAccess:
        """How weft reaches this cluster: TLS + the weft user, or (not secure) clear text."""
        return client_access(self.pki) if self.pki else EtcdAccess(insecure=True)

    def manager_args(self, url: str | None = None) -> list[str]:
        """weft-manager's flags for this cluster (``url``: another prefix on it)."""
        a, url = self.access, url or self.url
        if self.pki is None:
            return ["--store", url, "--etcd-insecure"]
        return ["--store", url, "--etcd-ca", str(a.ca), "--etcd-cert", str(a.cert),
                "--etcd-key", str(a.key), "--etcd-user", WEFT_USER,
                "--etcd-password-file", str(self.pki / PASSWORD_FILE)]

    def http(self) -> httpx.Client:
        """A client with the cluster's client certificate (no etcd user: set-up, health)."""
        return httpx.Client(verify=self.access.ssl_context(), trust_env=False)

    def root_token(self, http: httpx.Client) -> str:
        m = self.members[0]
        r = http.post(f"{m.scheme}://{m.endpoint}/v3/auth/authenticate",
                      json={"name": "root", "password": self.root_password}, timeout=5)
        r.raise_for_status()
        return str(r.json()["token"])

    def endpoints(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", m.client_port) for m in self.members]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for m in self.members:
            if m.proc is None:
                continue
            while True:
                if m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited: {open(m.log).read()[-2000:]}")
                try:
                    with self.http() as http:
                        r = http.get(f"{m.scheme}://{m.endpoint}/health", timeout=2)
                    if r.status_code == 200 and r.json().get("health") == "true":
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd {m.name} not healthy: {open(m.log).read()[-2000:]}")
                time.sleep(0.1)


@contextmanager
def etcd_cluster(size: int = 1, on_disk: bool = False, secure: bool = True,
                 prefix: str = "/") -> Iterator[EtcdCluster]:
    """``size`` members on loopback; everything killed (by PID) and removed at the end.
    Data in /dev/shm (tests: fsync costs nothing) unless ``on_disk`` (benchmarks).
    ``secure``: TLS and authentication, the weft user's role limited to ``prefix``
    (tests use many prefixes: "/" by default)."""
    shm = os.path.isdir("/dev/shm") and not on_disk
    base = tempfile.mkdtemp(prefix="weft-etcd-", dir="/dev/shm" if shm else "/var/tmp")
    d = Path(base) / "pki" if secure else None
    cluster = EtcdCluster([Member(f"m{i}", free_port(), free_port(), f"{base}/m{i}",
                                  f"{base}/m{i}.log", pki=d) for i in range(size)], pki=d)
    if d is not None:
        make_pki(d, {m.name: ["127.0.0.1"] for m in cluster.members})
    s = "https" if secure else "http"
    initial = ",".join(f"{m.name}={s}://127.0.0.1:{m.peer_port}" for m in cluster.members)
    try:
        for m in cluster.members:
            m.start(initial)
        cluster.wait_healthy()
        if d is not None:
            enable_auth(f"https://{cluster.members[0].endpoint}", d, prefix)
        yield cluster
    finally:
        for m in cluster.members:
            m.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    # the lab's set-up, run inside its controller namespace:
    #   python -m weft_lab.etcd secure https://IP:PORT PKI_DIR PREFIX
    import sys
    if len(sys.argv) != 5 or sys.argv[1] != "secure":
        sys.exit("usage: python -m weft_lab.etcd secure https://IP:PORT PKI_DIR PREFIX")
    enable_auth(sys.argv[2], Path(sys.argv[3]), sys.argv[4])
