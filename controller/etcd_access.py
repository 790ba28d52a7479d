"""How weft reaches etcd: TLS (a CA to trust, a client certificate) and the weft user.

Everything that talks to etcd (the store, the election, the lab) takes one `EtcdAccess`.
It refuses clear text unless told so explicitly (``--etcd-insecure``): etcd holds every
tenant, and anyone who reaches a member in clear (or without credentials) rewrites them.

Authentication is etcd's user/password: weft speaks to etcd's JSON gateway (etcd3gw,
httpx), and etcd does not apply client-certificate CN authentication to gateway requests
(the gateway forwards them on its own connection): a token from ``/v3/auth/authenticate``
in the ``Authorization`` header is what it honours.  The client certificate still gates
the TLS connection itself (etcd ``--client-cert-auth``).  The password comes from a file
(``--etcd-password-file``) or the environment (``WEFT_ETCD_PASSWORD``), never argv.
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PASSWORD_ENV = "WEFT_ETCD_PASSWORD"


class EtcdAccessError(ValueError):
    """The options do not say how to reach etcd safely; the message says what to add."""


@dataclass(frozen=True)
class EtcdAccess:
    """TLS files and credentials for etcd; ``insecure`` allows http (an explicit choice)."""
    ca: str | None = None               # CA file that signed the members' certificates
    cert: str | None = None             # client certificate (etcd --client-cert-auth)
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    def check(self) -> EtcdAccess:
        """This access, or a one-line reason it cannot be used."""
        if self.insecure:
            if self.ca or self.cert or self.key:
                raise EtcdAccessError("--etcd-insecure (clear text) contradicts "
                                      "--etcd-ca/--etcd-cert/--etcd-key: choose one")
        elif not self.ca:
            raise EtcdAccessError(
                "refusing to talk to etcd in clear: give --etcd-ca (and --etcd-cert, "
                "--etcd-key, --etcd-user with --etcd-password-file or WEFT_ETCD_PASSWORD), "
                "or --etcd-insecure to accept clear text and no TLS (docs/security.md)")
        elif not self.user:
            raise EtcdAccessError("etcd over TLS needs the weft user too: --etcd-user and "
                                  "--etcd-password-file (or WEFT_ETCD_PASSWORD)")
        if bool(self.cert) != bool(self.key):
            raise EtcdAccessError("--etcd-cert and --etcd-key go together")
        if self.user and not self.password:
            raise EtcdAccessError(f"--etcd-user {self.user} needs its password: "
                                  f"--etcd-password-file FILE or {PASSWORD_ENV}")
        for what, path in (("--etcd-ca", self.ca), ("--etcd-cert", self.cert),
                           ("--etcd-key", self.key)):
            if path and not os.access(path, os.R_OK):
                raise EtcdAccessError(f"{what} {path}: cannot read it")
        return self

    def verify(self) -> str | bool:
        """What requests/httpx take as ``verify``: the CA file (TLS), else nothing to do."""
        return self.ca or False

    def client_cert(self) -> tuple[str, str] | None:
        return (self.cert, self.key) if self.cert and self.key else None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """httpx's ``verify``: the CA and the client certificate (False: clear text)."""
        if not self.ca:
            return False
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert and self.key:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def login(self, post: Callable[[str, dict], Any]) -> str | None:
        """The weft user's token (``post(path, body)`` -> etcd's JSON answer), or None
        without a user.  etcd forgets tokens when a member restarts or after
        ``--auth-token-ttl`` idle: a client answered 401 logs in again."""
        if not self.user:
            return None
        out = post("/v3/auth/authenticate", {"name": self.user, "password": self.password})
        return str(out["token"])


def access_from_conf(conf: Any) -> EtcdAccess:
    """The `EtcdAccess` weft-manager's flags describe, checked (EtcdAccessError)."""
    password = os.environ.get(PASSWORD_ENV) or None
    if conf.etcd_password_file:
        try:
            password = Path(conf.etcd_password_file).read_text().strip()
        except OSError as exc:
            raise EtcdAccessError(f"--etcd-password-file: {exc}") from None
    return EtcdAccess(ca=conf.etcd_ca, cert=conf.etcd_cert, key=conf.etcd_key,
                      user=conf.etcd_user, password=password,
                      insecure=bool(conf.etcd_insecure)).check()
