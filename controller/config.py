"""weft-manager's options, registered on os-ken's oslo.config CONF.

Ryu-like flags (--ofp-tcp-listen-port, --wsapi-host, --wsapi-port,
--config-file) plus weft's own: the hosts.yaml path, the state store (a
SQLite file, or an etcd cluster) and the API token.
"""
from __future__ import annotations

from os_ken import cfg

CONF = cfg.CONF
CONF.register_cli_opts([
    cfg.MultiStrOpt("app", positional=True, default=[],
                    help="os-ken applications to run (default: controller.app)"),
    cfg.StrOpt("weft-hosts", default="/etc/weft/hosts.yaml",
               help="hosts.yaml shared by the agents and the controller"),
    cfg.StrOpt("weft-db", default="/var/lib/weft/weft.db",
               help="SQLite state database (the embedded default: one controller)"),
    cfg.StrOpt("store", default=None,
               help="etcd://HOST:PORT[,HOST:PORT...][/PREFIX]: keep the state in etcd, "
                    "shared by several weft-managers (replaces --weft-db)"),
    cfg.StrOpt("etcd-ca", default=None,
               help="CA certificate that signed the etcd members' certificates: TLS to "
                    "etcd (the store and the election; docs/security.md)"),
    cfg.StrOpt("etcd-cert", default=None, help="client certificate for etcd (with --etcd-key)"),
    cfg.StrOpt("etcd-key", default=None, help="the client certificate's private key"),
    cfg.StrOpt("etcd-user", default=None,
               help="etcd user weft logs in as (a role limited to weft's prefix)"),
    cfg.StrOpt("etcd-password-file", default=None,
               help="file holding --etcd-user's password (or env WEFT_ETCD_PASSWORD)"),
    cfg.BoolOpt("etcd-insecure", default=False,
                help="talk to etcd in clear text without TLS (refused unless given)"),
    cfg.FloatOpt("weft-audit-interval", default=60.0,
                 help="seconds between full re-reads of every switch (0: never)"),
    cfg.FloatOpt("weft-stats-interval", default=5.0,
                 help="seconds between reads of every switch's port, meter and ACL counters "
                      "for /metrics (0: never)"),
    cfg.BoolOpt("adopt", default=False,
                help="take over switches programmed under another store (or an older weft): "
                     "their weft flows become this store's model, deleting what it lacks. "
                     "Without it such switches are left untouched (GET /v1/switches: "
                     "sync_refused)"),
    cfg.StrOpt("wsapi-host", default="127.0.0.1", help="REST API listen address"),
    cfg.IntOpt("wsapi-port", default=8080, help="REST API port (0 disables the API)"),
    cfg.StrOpt("wsapi-unix", default=None,
               help="also serve the REST API on this unix socket (the lab uses it)"),
    cfg.StrOpt("api-token", default=None, secret=True,
               help="bearer token required for writes (or env WEFT_API_TOKEN); "
                    "required when the API listens beyond loopback"),
    cfg.StrOpt("weft-election", default=None,
               help="campaign for master among several weft-managers on this etcd "
                    "(etcd://h:p,h:p); default: the --store's etcd when it is one"),
    cfg.FloatOpt("weft-election-ttl", default=3.0,
                 help="election lease TTL in seconds: a dead master is replaced within it"),
    cfg.StrOpt("weft-node-name", default=None,
               help="this instance's name in the election (default: hostname:api-port)"),
])
