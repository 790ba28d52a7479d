"""How weft-manager's flags become its access to etcd: clear text only when asked."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from controller.etcd_access import EtcdAccess, EtcdAccessError, access_from_conf


def _conf(**kw):
    base = dict(etcd_ca=None, etcd_cert=None, etcd_key=None, etcd_user=None,
                etcd_password_file=None, etcd_insecure=False)
    return SimpleNamespace(**{**base, **kw})


def test_nothing_said_is_refused_and_names_the_flags(monkeypatch):
    monkeypatch.delenv("WEFT_ETCD_PASSWORD", raising=False)
    with pytest.raises(EtcdAccessError, match="refusing to talk to etcd in clear.*"
                                              "--etcd-insecure"):
        access_from_conf(_conf())
    assert access_from_conf(_conf(etcd_insecure=True)).scheme == "http"


def test_tls_needs_the_weft_user_and_its_password(tmp_path, monkeypatch):
    monkeypatch.delenv("WEFT_ETCD_PASSWORD", raising=False)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(EtcdAccessError, match="needs the weft user"):
        access_from_conf(_conf(etcd_ca=str(ca)))
    with pytest.raises(EtcdAccessError, match="needs its password"):
        access_from_conf(_conf(etcd_ca=str(ca), etcd_user="weft"))
    with pytest.raises(EtcdAccessError, match="go together"):
        EtcdAccess(ca=str(ca), cert=str(ca), user="weft", password="p").check()
    with pytest.raises(EtcdAccessError, match="cannot read"):
        EtcdAccess(ca=str(tmp_path / "nope"), user="weft", password="p").check()
    with pytest.raises(EtcdAccessError, match="contradicts"):
        access_from_conf(_conf(etcd_ca=str(ca), etcd_insecure=True))
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    a = access_from_conf(_conf(etcd_ca=str(ca), etcd_user="weft", etcd_password_file=str(pw)))
    assert (a.scheme, a.password) == ("https", "s3cret")
    assert "s3cret" not in repr(a)
    monkeypatch.setenv("WEFT_ETCD_PASSWORD", "fromenv")
    assert access_from_conf(_conf(etcd_ca=str(ca), etcd_user="weft")).password == "fromenv"
