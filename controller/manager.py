"""`weft-manager [controller.app] [flags]`: the ryu-manager of weft.

os-ken 4 ships no manager command; this one parses the same kind of flags
into os-ken's CONF and runs the apps with AppManager.run_apps.
"""
from __future__ import annotations

import gc
import logging
import os
import sys

os.environ.setdefault("OSKEN_HUB_TYPE", "native")

from cluster.quiet import quiet_eventlet  # noqa: E402

quiet_eventlet()
from os_ken.base.app_manager import AppManager  # noqa: E402
from os_ken.ofproto import ofproto_common  # noqa: E402

from cluster.version import version  # noqa: E402
from controller import config  # noqa: E402


def preflight(hosts: str, token: str | None, conf: object) -> str | None:
    """Everything that would otherwise end the controller later, as one line (or None)."""
    from cluster.hostsfile import HostsFileError, load
    from controller.store import StoreFileError
    from controller.store.open import open_configured
    if token is not None and not (token.isascii() and token.isprintable() and token.strip()):
        return ("the API token must be printable ASCII (it travels in an HTTP header); "
                "use e.g. `openssl rand -hex 16`")
    try:
        load(hosts)
    except HostsFileError as exc:
        return str(exc)
    try:
        open_configured(conf).close()   # etcd: in clear unasked, or unreachable, fails here
    except StoreFileError as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    conf = config.CONF
    conf(argv, project="weft", prog="weft-manager", version=f"weft-manager {version()}")
    apps = list(conf.app) or ["controller.app"]
    from controller.election_app import election_url
    if election_url(conf) and "controller.election_app" not in apps:
        apps.append("controller.election_app")        # several instances: campaign for master
    if conf.ofp_tcp_listen_port is None:
        conf.set_override("ofp_tcp_listen_port", ofproto_common.OFP_TCP_PORT)
    token = conf.api_token or os.environ.get("WEFT_API_TOKEN")
    problem = preflight(conf.weft_hosts, token, conf)
    if not problem and election_url(conf):
        from controller.election import endpoints
        try:
            endpoints(election_url(conf) or "")
        except ValueError as exc:
            problem = f"--weft-election: {exc}"
        if conf.weft_election_ttl < 1:
            problem = "--weft-election-ttl must be at least 1 second"
    if problem:
        print(f"weft-manager: {problem}", file=sys.stderr)
        return 2
    if conf.wsapi_port and conf.wsapi_host not in ("127.0.0.1", "::1", "localhost") and not token:
        print("weft-manager: refusing to serve the API on {} without --api-token "
              "(or WEFT_API_TOKEN)".format(conf.wsapi_host), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("weft.controller").info(
        "weft-manager: apps %s, OpenFlow on %s:%d, API on %s:%d", ", ".join(apps),
        conf.ofp_listen_host, conf.ofp_tcp_listen_port, conf.wsapi_host, conf.wsapi_port)
    # The controller keeps every switch's flows as small immutable objects (some 300,000
    # at 10,000 endpoints on 16 hosts) and allocates as many more per sync; with the
    # default thresholds (700 allocations) the cyclic GC walks that heap over and over
    # and took about half of a large sync.  Weft's values hold no cycles worth chasing
    # often: collect young objects 70x less often.
    gc.set_threshold(50_000, 20, 100)
    try:
        AppManager.run_apps(apps)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
