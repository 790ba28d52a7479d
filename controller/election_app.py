"""`controller.election_app`: the os-ken app that makes this weft-manager one of several.

It campaigns for master on etcd (`controller.election`) and tells the OpenFlow
app its role: ``WeftController.set_role(role, generation_id)`` sends the
OpenFlow role request to every switch; a slave reads and tracks, only the
master sends flow/group/meter mods.  `weft-manager` loads this app when an
election is configured (``--weft-election``, or a ``--store`` on etcd).
"""
from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit
from typing import Any

from os_ken.base import app_manager

from controller import config
from controller.election import Election, EtcdGateway, Role, endpoints
from controller.store.open import configured_access

LOG = logging.getLogger("weft.controller")
logging.getLogger("httpx").setLevel(logging.WARNING)    # not a line per election round
CONTROLLER_APP = "WeftController"


def election_url(conf: Any) -> str | None:
    """The etcd to campaign on: --weft-election, else the --store when it is etcd."""
    if conf.weft_election:
        return conf.weft_election
    store = getattr(conf, "store", None)
    return store if isinstance(store, str) and store.startswith("etcd://") else None


def election_key(url: str) -> str:
    """The master key beside the store's prefix (``/weft/v1/`` -> ``/weft/v1-election/
    master``): one election per cluster, outside the range the store reads and watches."""
    from controller.store.etcd import DEFAULT_PREFIX
    path = urlsplit(url).path
    prefix = path.rstrip("/") if path not in ("", "/") else DEFAULT_PREFIX.rstrip("/")
    return f"{prefix}-election/master"


def node_name(conf: Any) -> str:
    return conf.weft_node_name or f"{socket.gethostname()}:{conf.wsapi_host}:{conf.wsapi_port}"


class WeftHA(app_manager.OSKenApp):
    """Runs the election and hands each role change to the OpenFlow app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.election: Election | None = None

    def start(self) -> Any:
        thread = super().start()
        conf = config.CONF
        url = election_url(conf)
        if url is None:
            return thread
        ctl = app_manager.lookup_service_brick(CONTROLLER_APP)
        if ctl is None:
            raise RuntimeError("controller.election_app needs controller.app in the same weft-manager")

        def on_change(role: Role) -> None:
            ctl.set_role(role.role, role.generation)
        access = configured_access(conf)
        self.election = Election(EtcdGateway(endpoints(url, access.scheme), access),
                                 node_name(conf),
                                 conf.weft_election_ttl, on_change, key=election_key(url))
        # writes by any instance reach every instance through etcd's change feed: each
        # resyncs (a standby only reads; the master sends the delta)
        ctl.core.store.watch(lambda _version: ctl.core.on_change())
        ctl.core.election_status = self.election.status
        LOG.info("weft-manager %s: campaigning for master on %s (lease %.1f s)",
                 self.election.core.name, url, conf.weft_election_ttl)
        self.election.start()
        return thread

    def stop(self) -> None:
        if self.election is not None:
            self.election.stop(resign=True)     # a clean stop hands over at once
        super().stop()
