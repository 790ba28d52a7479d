"""etcd secured (docs/security.md): a real member with TLS, client certificates and
authentication, as the lab and weft_lab/etcd.py run it.  What an attacker who reaches the
etcd port tries: no certificate, another CA's certificate, clear text, a valid
certificate without the weft user's password, the weft user outside its prefix; and what
a careless operator does: start weft-manager without saying how to reach etcd (refused),
or with --etcd-insecure on a clear-text etcd (works, the one explicit opt-in)."""
from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from cluster import pki
from controller.etcd_access import EtcdAccess
from controller.store import StoreFileError
from controller.store.etcd import EtcdStore
from weft_lab.etcd import etcd_cluster

PREFIX = "/weft/"
KEY = "/weft/v1/tenants/red"
HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
"""


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture(scope="module")
def etcd():
    """One secured member; the weft user's role covers /weft/ only."""
    with etcd_cluster(1, prefix=PREFIX) as cluster:
        store = EtcdStore(cluster.endpoints(), "/weft/v1/", access=cluster.access)
        store.create_tenant("red")          # the key an attacker goes after
        store.close()
        yield cluster


def _stored(cluster) -> str:
    """The tenant document as root reads it (the attacks must leave it alone)."""
    with cluster.http() as http:
        r = http.post(f"https://{cluster.members[0].endpoint}/v3/kv/range",
                      json={"key": _b64(KEY)},
                      headers={"Authorization": cluster.root_token(http)})
        r.raise_for_status()
        return base64.b64decode(r.json()["kvs"][0]["value"]).decode()


def _attempts(client: httpx.Client, url: str, headers: dict | None = None) -> list:
    """Read the tenant key, overwrite it, delete the prefix: each answer (or the error
    that kept the request from being sent)."""
    out = []
    for path, body in [("/v3/kv/range", {"key": _b64(KEY)}),
                       ("/v3/kv/put", {"key": _b64(KEY), "value": _b64('{"vni": 1}')}),
                       ("/v3/kv/deleterange", {"key": _b64(PREFIX),
                                               "range_end": _b64("/weft0")})]:
        try:
            r = client.post(url + path, json=body, headers=headers, timeout=5)
            out.append((r.status_code, r.text))
        except httpx.HTTPError as exc:
            out.append((None, type(exc).__name__))
    return out


def test_no_certificate_or_another_cas_is_turned_away_at_tls(etcd, tmp_path):
    """Without a client certificate from the cluster's CA, no request reaches etcd: not
    with the CA checked, not with checks off, not in clear text; another CA's
    certificate (a `weft-pki` of its own, a name etcd knows) fares no better."""
    before = _stored(etcd)
    url = f"https://{etcd.members[0].endpoint}"
    other = tmp_path / "other-ca"
    pki.init_ca(other)
    key, cert = pki.issue(other, "intruder", etcd_client=True)
    strangers = ssl.create_default_context(cafile=str(etcd.pki / pki.CA_CERT))
    strangers.load_cert_chain(str(cert), str(key))
    clients = {
        "no certificate": httpx.Client(verify=EtcdAccess(ca=etcd.access.ca).ssl_context(),
                                       trust_env=False),
        "no certificate, no checks": httpx.Client(verify=False, trust_env=False),
        "another CA's certificate": httpx.Client(verify=strangers, trust_env=False),
    }
    for what, client in clients.items():
        with client:
            for got in _attempts(client, url):
                assert got[0] is None, (what, got)         # the handshake failed
    with httpx.Client(trust_env=False) as clear:
        for got in _attempts(clear, f"http://{etcd.members[0].endpoint}"):
            assert got[0] in (None, 400), got      # TLS port: a clear request is garbage
            assert "kvs" not in got[1], got
    assert _stored(etcd) == before


def test_a_valid_certificate_without_the_weft_password_reads_and_writes_nothing(etcd):
    before = _stored(etcd)
    url = f"https://{etcd.members[0].endpoint}"
    with etcd.http() as http:
        for got in _attempts(http, url):                        # no token
            assert got[0] == 400 and "user name is empty" in got[1], got
        for got in _attempts(http, url, {"Authorization": "forged.token"}):
            assert got[0] == 401 and "invalid auth token" in got[1], got
        r = http.post(url + "/v3/auth/authenticate",
                      json={"name": "weft", "password": "guess"})
        assert r.status_code == 400 and "authentication failed" in r.text, r.text
        r = http.post(url + "/v3/auth/authenticate",
                      json={"name": "weft", "password": etcd.weft_password})
        token = r.json()["token"]
        # the weft user itself: its role is weft's prefix, nothing else (etcd's own
        # users and roles included)
        for path, body in [("/v3/kv/put", {"key": _b64("/other/x"), "value": _b64("x")}),
                           ("/v3/kv/range", {"key": _b64("/"), "range_end": _b64("0")}),
                           ("/v3/auth/user/add", {"name": "evil", "password": "x"}),
                           ("/v3/auth/role/grant", {"name": "weft", "perm": {
                               "permType": "READWRITE", "key": _b64("/")}})]:
            r = http.post(url + path, json=body, headers={"Authorization": token})
            assert r.status_code in (400, 403) and "permission denied" in r.text, \
                (path, r.text)
    assert _stored(etcd) == before


def test_the_store_with_the_wrong_password_says_so(etcd):
    bad = replace(etcd.access, password="not-it")
    with pytest.raises(StoreFileError, match="etcd refused weft's credentials.*authentication"
                                             " failed"):
        EtcdStore(etcd.endpoints(), "/weft/v1/", access=bad)
    with pytest.raises(StoreFileError, match="refusing to talk to etcd in clear"):
        EtcdStore(etcd.endpoints(), "/weft/v1/")        # no access given: refused, unsent


def _manager(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    return subprocess.run([sys.executable, "-m", "controller.manager", "--weft-hosts",
                           str(hosts), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_weft_manager_refuses_clear_etcd_unless_told(etcd, tmp_path):
    """A careless operator's `--store etcd://...` alone: exit 2 naming the flags, before
    any request (a clear-text etcd on that port would have answered)."""
    r = _manager(["--store", etcd.url], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "refusing to talk to etcd in clear: give --etcd-ca" in r.stderr, r.stderr
    assert "--etcd-insecure" in r.stderr
    args = etcd.manager_args()
    r = _manager(args[:args.index("--etcd-password-file")], tmp_path)  # no password
    assert r.returncode == 2 and "--etcd-user weft needs its password" in r.stderr, r.stderr
    r = _manager([*args, "--etcd-insecure"], tmp_path)
    assert r.returncode == 2 and "contradicts" in r.stderr, r.stderr


def test_the_explicit_insecure_opt_in_works_on_a_clear_etcd(tmp_path):
    from weft_lab.store_bench import manager
    with etcd_cluster(1, secure=False) as clear:
        assert clear.manager_args()[-1] == "--etcd-insecure"
        with manager(clear.manager_args(), tmp_path) as api:
            assert api.post("/v1/tenants", json={"name": "red"}).status_code == 201
            assert api.get("/v1/tenants/red").status_code == 200
