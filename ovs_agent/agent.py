"""The reconcile loop: hosts.yaml in, the smallest OVSDB change out, again and again.

A pass reads what OVS has, computes the delta to what hosts.yaml asks
(`desired.diff`) and applies it in one transaction.  Passes run on start,
when hosts.yaml changes, on SIGHUP, and every `interval` seconds so that an
OVS restart or a hand edit is repaired.  A bad hosts.yaml on reload is
logged and ignored: the last good configuration stays in force.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ovs_agent import (attach, desired, dockerd, dockernets, firewall, gateway, hostnet, ipsec,
                       metrics, nameservice, ovsdb, queues)
from ovs_agent.metrics import AgentCounters
from ovs_agent.nat import Gateway
from ovs_agent.reporting import ReportState, reason_to_send
from cluster.hostsfile import (REGISTER_KEYS, Cluster, Host, HostsFileError, Queues, load,
                               tunnel_mtu, tunnel_port_name, with_hosts)
from cluster.promtext import CONTENT_TYPE
from cluster.version import version

LOG = logging.getLogger("ovs-agent")
DEFAULT_SUBNET_FILE = Path("/run/weft/subnet.env")
DOCKER_CONFIG_NAME = "daemon.json"     # written beside the subnet file unless told otherwise


def pick_host(cluster: Cluster, name: str | None) -> Host:
    """This machine's entry: --host, else a local underlay address or the hostname."""
    if name:
        try:
            return cluster.host(name)
        except KeyError:
            raise HostsFileError("--host", f"no host named {name!r} in the file "
                                 f"(hosts: {', '.join(h.name for h in cluster.hosts)})",
                                 None, cluster.source) from None
    return cluster.find_self(hostnet.local_ips(), socket.gethostname())


def _exit_on_signal(*_: object) -> None:
    raise SystemExit(0)


@dataclass
class Agent:
    peers: Path
    host_name: str | None
    ovsdb_target: str
    subnet_file: Path = DEFAULT_SUBNET_FILE
    interval: float = 5.0
    docker_config: Path | None = None   # daemon.json fragment; default beside subnet_file
    cluster: Cluster | None = None      # the file plus peers learned from the controller
    me: Host | None = None
    register: bool = False              # join by registering with the controller (a lease)
    lease_ttl: float = 30.0
    file_cluster: Cluster | None = None  # hosts.yaml as read
    _remote: list = field(default_factory=list)     # members the controller listed, not in the file
    _members_changed: threading.Event = field(default_factory=threading.Event)
    passes: int = 0
    writes: int = 0                     # OVSDB transactions committed, for tests and logs
    _wake: threading.Event = field(default_factory=threading.Event)      # run a pass now
    _attached: threading.Event = field(default_factory=threading.Event)  # container ports moved
    _report_lock: threading.Lock = field(default_factory=threading.Lock)
    _reload: threading.Event = field(default_factory=threading.Event)    # re-read the file
    _mtime: float = 0.0
    _report: ReportState = field(default_factory=ReportState)
    _report_warned: float = -1e9        # last time a failed report was logged as a warning
    _api_index: int = 0                 # the controller API URL that answered last
    _tc_queues: Queues | None = None    # queues put on the NIC with tc (kernel datapath)
    afxdp_refused: frozenset[str] = frozenset()
    _unresolved: list[str] = field(default_factory=list)
    ssl_dir: Path = desired.DEFAULT_SSL_DIR
    host_firewall: firewall.Firewall | None = field(default_factory=firewall.Firewall)
    docker_host: str | None = dockerd.DEFAULT_DOCKER    # None: docker0 containers not asked
    # tenants' gateway ports, egress NAT and published ports (docs/routing.md section 3)
    host_gateways: gateway.GatewayKeeper | None = field(default_factory=gateway.GatewayKeeper)
    _gateways: list[Gateway] | None = None  # the controller's list; None: not answered yet
    _gateways_warned: float = -1e9
    _gateway_error: str = ""
    _docker0: list[attach.Attachment] = field(default_factory=list)
    _docker_warned: bool = False
    # the controller's networks as this dockerd's weft networks (docs/docker.md)
    plugin_socket: Path | None = dockernets.DEFAULT_PLUGIN_SOCKET   # None: not kept
    _networks_warned: float = -1e9
    _networks_reported: tuple[float, dict] = (-1e9, {})    # when, what the controller took
    serve_names: bool = True            # names across hosts: report, fetch, resolve (docs/dns.md)
    counters: AgentCounters = field(default_factory=AgentCounters)     # for /metrics
    _api: object | None = None          # the OVSDB connection, once run() made it (/metrics)
    _names: nameservice.NameService | None = None
    _keeper: dockernets.NetworkKeeper | None = None
    ipsec_psk: str | None = None        # encryption: ipsec with psk_file: the key read
    _ipsec_warned: float = -1e9
    _ipsec_ca: str | None = None        # the CA copy strongSwan was told to read

    def load(self) -> None:
        """Validate hosts.yaml into a Cluster; raises HostsFileError, changes nothing."""
        self._mtime = self.peers.stat().st_mtime
        cluster = load(self.peers)
        me = pick_host(cluster, self.host_name or (self.me.name if self.me else None))
        if cluster.encryption == "ipsec" and self.host_firewall is None:
            # the nftables guard is what keeps a missing or late IPsec from sending clear text
            raise HostsFileError("encryption", "encryption: ipsec needs the agent's nftables "
                                 "table (its guard drops tunnel packets that IPsec did not "
                                 "protect): run without --no-firewall", None, cluster.source)
        psk = ipsec.read_psk(cluster)
        self.file_cluster, self.me, self.ipsec_psk = cluster, me, psk
        self.cluster = self._with_remote(cluster, self._remote) or cluster

    def _with_remote(self, cluster: Cluster, remote: list) -> Cluster | None:
        """The file's cluster plus the controller's other members (registered hosts), by
        the file's rules; None (logged) when they do not fit together."""
        if cluster.membership != "register":
            return cluster
        listed = {h.name for h in cluster.hosts}
        extra = [{k: h.get(k) for k in REGISTER_KEYS} for h in remote if h.get("name") not in listed]
        try:
            return with_hosts(cluster, extra, "controller's member")
        except HostsFileError as exc:
            LOG.error("the controller's member list does not fit hosts.yaml, keeping the "
                      "previous peers: %s", exc)
            return None

    def _follow_members(self) -> None:
        """`membership: register`: renew this host's lease (with --register) every third of
        its TTL and learn the other members from the controller every `interval` seconds.
        While the controller is away the last known peers (and their tunnels) stay."""
        import httpx            # lazily, as attach does: not on the agent's start-up path
        next_beat, warned = 0.0, -1e9
        while True:
            urls, me = (self.cluster.apis or (self.cluster.api,)) if self.cluster else (), self.me
            if not (self.file_cluster and self.file_cluster.membership == "register"):
                urls = ()               # membership: file (also after a reload): nothing to do
            urls = tuple(u for u in urls if u)
            now = time.monotonic()
            try:
                if urls and me and self.register and now >= next_beat:
                    host = {k: getattr(me, k) for k in REGISTER_KEYS}

                    def register(url: str, host: dict = host) -> None:
                        attach.register(url, host, self.lease_ttl)
                    self._api_index, _ = attach.first_answer(urls, register, self._api_index)
                    if next_beat == 0.0:
                        LOG.info("registered with the controller as %s (lease %gs) at %s",
                                 me.name, self.lease_ttl, urls[self._api_index])
                    next_beat = now + self.lease_ttl / 3
                if urls:
                    self._api_index, remote = attach.first_answer(urls, attach.members,
                                                                  self._api_index)
                    if remote != self._remote:
                        self._remote = remote
                        self._members_changed.set()
                        self._wake.set()
            except (httpx.HTTPError, ValueError) as exc:
                if now - warned >= 30:
                    warned = now
                    detail = exc.response.text[:300] if isinstance(exc, httpx.HTTPStatusError) else ""
                    LOG.warning("controller membership at %s failed (retrying): %s %s",
                                ", ".join(urls), exc, detail)
                next_beat = min(next_beat, now + 1.0) if next_beat else 0.0
            time.sleep(self.interval)

    def reload(self) -> bool:
        try:
            self.load()
            LOG.info("hosts.yaml loaded: %d hosts, this host is %s", len(self.cluster.hosts),
                     self.me.name)
            return True
        except (HostsFileError, OSError) as exc:
            LOG.error("hosts.yaml rejected, keeping the previous configuration: %s", exc)
            return False
        except Exception:  # noqa: BLE001  (a reader bug must not stop the agent either)
            LOG.exception("hosts.yaml could not be read, keeping the previous configuration")
            return False

    def reconcile(self, api) -> int:
        """One pass; returns the number of OVSDB operations it applied."""
        assert self.cluster and self.me
        mtu = tunnel_mtu(self.cluster)
        netdev = self.me.datapath_type == "netdev"
        underlay_bridge = netdev and self.cluster.transport == "tunnel"
        hostnet.ensure_docker_link(mtu,
                                   tx_off=hostnet.needs_tx_checksum_off(self.me.datapath_type))
        state = ovsdb.read_state(api)
        phy = state.get(desired.UNDERLAY_BRIDGE)
        nic = hostnet.underlay_iface(self.me, desired.UNDERLAY_BRIDGE,
                                     [p.name for p in phy.ports] if phy else []) \
            if underlay_bridge else None
        if underlay_bridge:
            hostnet.remember_prefix(self.me)
            if nic is None:
                LOG.warning("no interface holds underlay address %s", self.me.underlay_ip)
        # the firewall before the ports: with encryption turned on, its guard (tunnel packets
        # only through IPsec) is in place before the tunnels get their IPsec options, so
        # nothing leaves in clear while ovs-monitor-ipsec sets IPsec up
        if self.host_firewall is not None and self.host_firewall.ensure(self.cluster):
            LOG.info("nftables: table inet %s written (tunnel, OVSDB and OpenFlow ports closed "
                     "to containers)", firewall.TABLE)
        self._cap_acquire_expiry()
        ops = desired.diff(desired.desired(self.cluster, self.me.name, nic, self.afxdp_refused,
                                           hostnet.mac_of(nic) if nic else None,
                                           self.ipsec_psk), state)
        if ops:
            ovsdb.apply(api, ops)
            self.writes += 1
            self.counters.add("repairs")
            self.counters.add("repair_ops", len(ops))
            for op in ops:
                LOG.info("ovsdb: %s %s", op[0], " ".join(
                    o.name if isinstance(o, desired.OvsPortSpec) else str(o) for o in op[1:]))
        self._ensure_gateways(api, mtu)
        self._ensure_ipsec(api)
        if ovsdb.ensure_ssl(api, desired.ssl_files(self.cluster, self.me.name, self.ssl_dir)):
            LOG.info("ovsdb: TLS for ssl: controllers from %s", self.ssl_dir)
            self.writes += 1
        if underlay_bridge and nic:
            hostnet.ensure_underlay_address(self.me, desired.UNDERLAY_BRIDGE, nic)
            hostnet.ensure_offloads_off(desired.UNDERLAY_BRIDGE)
            self.warm_peers()
        self._ensure_queues(api, nic)
        if netdev and self.cluster.transport == "vlan" and self.me.uplink:
            hostnet.ensure_offloads_off(self.me.uplink, ("tx", "rxvlan", "txvlan"))
        if ops and netdev and self.cluster.port_type == "auto":
            self._fall_back_from_afxdp(api)
        self._write_docker_files(mtu)
        self.passes += 1
        self.counters.add("passes")
        return len(ops)

    def _ensure_ipsec(self, api) -> None:
        """Certificates for IPsec in OVSDB (or ours removed), and a loud log line while
        ovs-monitor-ipsec is not there to make the IPsec options real (the nftables guard
        meanwhile drops the tunnels' packets: nothing leaves in clear)."""
        assert self.cluster and self.me
        sources = ipsec.pki_config(self.cluster, self.me.name)
        try:
            pki = ipsec.install_pki(sources)
        except OSError as exc:      # keep what OVSDB has; the next pass tries again
            if time.monotonic() - self._ipsec_warned >= 60:
                self._ipsec_warned = time.monotonic()
                LOG.error("IPsec certificates from %s: %s (the tunnels stay as they are)",
                          self.cluster.ipsec.pki_dir if self.cluster.ipsec else "-", exc)
            return
        if pki and pki["ca_cert"] != self._ipsec_ca:
            # strongSwan takes CAs from /etc/ipsec.d/cacerts (OVS's `ca` section in
            # ipsec.conf has no auto=add: starter never loads it): tell charon to reread
            if ipsec.reread_cacerts():
                self._ipsec_ca = pki["ca_cert"]
                LOG.info("IPsec: strongSwan reread its CA certificates (%s)", pki["ca_cert"])
        if ovsdb.ensure_ipsec_pki(api, pki):
            LOG.info("ovsdb: IPsec certificates %s (copies of %s)", pki, sources)
            self.writes += 1
        now = time.monotonic()
        if self.cluster.encryption == "ipsec" and now - self._ipsec_warned >= 60:
            if not ipsec.monitor_running():
                self._ipsec_warned = now
                LOG.error("encryption: ipsec, but ovs-monitor-ipsec is not running: the "
                          "tunnels carry nothing (their packets are dropped, never sent in "
                          "clear) until it does: apt-get install openvswitch-ipsec strongswan; "
                          "systemctl enable --now openvswitch-ipsec")
            elif ipsec.dropin_missing():
                self._ipsec_warned = now
                LOG.warning("encryption: ipsec, but %s (docs/docker.md's install) is missing: "
                            "a strongSwan restart sets the kernel's acquire expiry back to "
                            "165 s, and a tunnel whose first IKE attempt failed stays down "
                            "that long", ipsec.CHARON_DROPIN)

    def _cap_acquire_expiry(self) -> None:
        """Before the tunnels get IPsec options: the kernel's acquire expiry at most
        ACQUIRE_EXPIRY_S, also where strongSwan started without weft's drop-in."""
        if self.cluster and self.cluster.encryption == "ipsec" and ipsec.ensure_acquire_expiry():
            LOG.info("IPsec: a failed IKE attempt now blocks a tunnel for at most %ds "
                     "(net.core.xfrm_acq_expires)", ipsec.ACQUIRE_EXPIRY_S)

    def _ensure_gateways(self, api, mtu: int) -> None:
        """Tenants' wx ports, routes, NAT and bounds (`ovs_agent.gateway`).  Nothing until
        the controller has answered once: an agent started while the controller is away
        keeps what the host has.  A failure is logged and does not stop the pass."""
        keeper = self.host_gateways
        if keeper is None or (self._gateways is None and not keeper.last):
            return
        try:
            tx_off = hostnet.needs_tx_checksum_off(self.me.datapath_type)
            for change in keeper.ensure(api, self._gateways, mtu, tx_off):
                LOG.info("gateways: %s", change)
            if keeper.last and self.host_firewall is not None:
                for rule in firewall.ensure_docker_user():
                    LOG.info("iptables: inserted into %s", rule)
            self._gateway_error = ""
        except Exception as exc:  # noqa: BLE001  (ip/nft/OVSDB trouble: next pass retries)
            if str(exc) != self._gateway_error:
                LOG.warning("gateways: %s (retrying every pass)", exc)
            self._gateway_error = str(exc)

    def _fetch_gateways(self) -> None:
        """This host's gateways from the controller (`GET /v1/hosts/{host}/gateways`,
        failing over across the API URLs); a change wakes the loop.  No API configured:
        none.  No answer: the last list stays."""
        import httpx            # lazily, as attach does
        if not (self.cluster and self.me):
            return
        urls = tuple(u for u in (self.cluster.apis or (self.cluster.api,)) if u)
        got: list[Gateway] = []
        if urls:
            host = self.me.name
            try:
                self._api_index, got = attach.first_answer(
                    urls, lambda url: gateway.fetch(url, host), self._api_index)
            except (httpx.HTTPError, ValueError) as exc:
                now = time.monotonic()
                if now - self._gateways_warned >= 60:
                    self._gateways_warned = now
                    LOG.warning("could not ask %s for this host's gateways (keeping %s): %s",
                                ", ".join(urls), "none" if self._gateways is None else
                                f"{len(self._gateways)}", exc)
                return
        if got != self._gateways:
            LOG.info("gateways from the controller: %s", ", ".join(
                f"{g.tenant} ({g.port})" for g in got) or "none")
            self._gateways = got
            self._wake.set()

    def _follow_gateways(self) -> None:
        while True:
            try:
                self._fetch_gateways()
            except Exception:  # noqa: BLE001  (a bug here must not end the thread)
                LOG.exception("asking the controller for gateways failed")
            time.sleep(self.interval)

    def _network_keeper(self) -> dockernets.NetworkKeeper | None:
        if not (self.docker_host and self.plugin_socket):
            return None
        return dockernets.NetworkKeeper(self.docker_host,
                                        self.subnet_file.with_name(dockernets.STATUS_NAME),
                                        self.plugin_socket)

    def _sync_networks(self, keeper: dockernets.NetworkKeeper) -> None:
        """The controller's networks (any instance answers) into this dockerd; no
        answer: nothing changes, a warning a minute."""
        import httpx            # lazily, as attach does
        urls = tuple(u for u in (self.cluster.apis or (self.cluster.api,)) if u) \
            if self.cluster else ()
        if not urls:
            return
        try:
            self._api_index, wanted = attach.first_answer(urls, dockernets.fetch,
                                                          self._api_index)
        except (httpx.HTTPError, ValueError) as exc:
            now = time.monotonic()
            if now - self._networks_warned >= 60:
                self._networks_warned = now
                LOG.warning("could not ask %s for the cluster's networks (Docker networks "
                            "left as they are): %s", ", ".join(urls), exc)
            return
        keeper.sync(wanted)
        when, what = self._networks_reported
        if keeper.doc and (keeper.doc != what or time.monotonic() - when >= 60):
            doc, host = keeper.doc, self.me.name if self.me else ""
            try:
                self._api_index, _ = attach.first_answer(
                    urls, lambda url: dockernets.report(url, host, doc), self._api_index)
                self._networks_reported = (time.monotonic(), doc)
            except httpx.HTTPError as exc:   # the next pass reports again
                LOG.debug("could not report the Docker networks: %s", exc)

    def _follow_networks(self, keeper: dockernets.NetworkKeeper) -> None:
        while True:
            try:
                self._sync_networks(keeper)
            except Exception:  # noqa: BLE001  (a bug here must not end the thread)
                LOG.exception("keeping the Docker networks failed")
            time.sleep(self.interval)

    def _write_docker_files(self, mtu: int) -> None:
        """subnet.env (flannel style) and a daemon.json fragment with the same options."""
        assert self.cluster and self.me
        config = self.docker_config or self.subnet_file.with_name(DOCKER_CONFIG_NAME)
        for path, text in ((self.subnet_file, hostnet.subnet_env(self.cluster, self.me, mtu)),
                           (config, hostnet.docker_daemon_json(self.cluster, self.me, mtu))):
            if hostnet.write_if_changed(path, text):
                LOG.info("wrote %s: %s", path, " ".join(text.split()))

    def _ensure_queues(self, api, nic: str | None) -> None:
        """linux-htb queues on the egress NIC, where that NIC is an OVS port."""
        port = self.me.uplink if self.cluster.transport == "vlan" else nic
        if port is None:
            # kernel datapath with tunnels: the NIC holding the underlay address
            assert self.me
            dev = hostnet.underlay_iface(self.me, desired.UNDERLAY_BRIDGE, [])
            if dev is None:
                if self.cluster.queues:
                    LOG.warning("queues configured but no interface holds %s: not applied",
                                self.me.underlay_ip)
                return
            if queues.ensure_tc(dev, self.cluster.queues, self._tc_queues):
                self._tc_queues = self.cluster.queues
            return
        if queues.ensure(api, port, self.cluster.queues):
            self.writes += 1

    def warm_peers(self) -> None:
        """Resolve peers' underlay addresses (netdev only; see hostnet.warm_neighbours)."""
        if self.me.datapath_type != "netdev":
            return
        peers = [p.underlay_ip for p in self.cluster.peers(self.me.name)]
        unknown = hostnet.unresolved(peers, desired.UNDERLAY_BRIDGE)
        if unknown:
            hostnet.warm_neighbours(unknown, timeout=0.3)
        self._unresolved = hostnet.seed_tunnel_neighbours(peers, desired.UNDERLAY_BRIDGE)

    def _fall_back_from_afxdp(self, api, settle: float = 1.0) -> None:
        """Ports OVS could not open with AF_XDP go back to AF_PACKET on the next pass."""
        time.sleep(settle)              # vswitchd reports the error after reconfiguring
        refused = ovsdb.refused_afxdp(api)
        for name, error in refused.items():
            LOG.warning("AF_XDP refused on %s (%s): falling back to AF_PACKET", name, error)
        if refused:
            self.counters.add("afxdp_fallbacks", len(refused.keys() - self.afxdp_refused))
            self.afxdp_refused |= frozenset(refused)
            self._wake.set()

    def _report_attachments(self, api, ask_docker: bool = True) -> None:
        """Tell the controller which containers are plugged here (it binds them).

        One reporter per host, serialised: each report is the whole list as OVSDB
        has it now, so a later report never carries an older list.  It is sent when
        the list changed, when the controller is another instance or has another store
        than the one that acknowledged the last report, after a failed report, and
        every minute (`ovs_agent.reporting`).

        `ask_docker` False: docker0's containers as dockerd last listed them.  A port
        the Docker plugin just plugged is reported at once: asking dockerd first would
        wait on the very `docker run` that is plugging it (seen: 2.5 s instead of 0.4).
        """
        if not self.cluster.api:
            return
        import httpx            # lazily, as attach does: not on the agent's start-up path
        with self._report_lock:
            docker0 = self._docker0_containers() if ask_docker else self._docker0
            current = attach.attachments(api) + docker0
            urls = self.cluster.apis or (self.cluster.api,)
            identity = attach.controller_identity(urls[self._api_index % len(urls)])
            why = reason_to_send(self._report, current, identity, time.monotonic())
            if why is None:
                return
            try:
                self._api_index, acked_by = attach.report_any(urls, self.me.name, current,
                                                              self._api_index)
            except httpx.HTTPError as exc:
                self._report.failed()
                self.counters.add("reports_failed")
                detail = exc.response.text[:200] if isinstance(exc, httpx.HTTPStatusError) else ""
                now = time.monotonic()
                if self._report.failures == 1 or now - self._report_warned >= 60:
                    self._report_warned = now
                    LOG.warning("could not report %d attachment(s) to %s (%s; retrying every "
                                "%gs): %s %s", len(current), ", ".join(urls), why,
                                self.interval, exc, detail)
                return
            self._report.acknowledged(current, acked_by, time.monotonic())
            self.counters.add("reports_sent")
            log = LOG.debug if why == "periodic full report" else LOG.info
            log("reported %d attachment(s) to the controller (%s)", len(current), why)

    def _docker0_containers(self) -> list[attach.Attachment]:
        """docker0's containers as dockerd lists them now, reported as known endpoints
        behind the docker0 link.  dockerd not answering: the last list it gave (its
        containers may well still run); no socket at all: none (no Docker here)."""
        if not self.docker_host:
            return []
        try:
            self._docker0 = dockerd.ask_docker0(self.docker_host)
            self._docker_warned = False
        except dockerd.DockerUnavailable as exc:
            if not Path(dockerd.socket_of(self.docker_host)).exists():
                self._docker0 = []
            elif not self._docker_warned:
                self._docker_warned = True
                LOG.warning("could not ask dockerd for docker0's containers (keeping the "
                            "last %d): %s", len(self._docker0), exc)
        return self._docker0

    def _report_on_change(self, api) -> None:
        """Report as soon as a container port comes or goes (`ovs-agent attach`, the
        Docker plugin), and look at the controller every `interval` seconds: a new
        controller instance or store epoch gets the whole list again."""
        asked = 0.0
        while True:
            plugged = self._attached.wait(self.interval)
            self._attached.clear()
            now = time.monotonic()
            ask = not plugged or now - asked >= self.interval   # dockerd: each interval
            asked = now if ask else asked
            try:
                if plugged:     # the plugged port first: dockerd may be busy with its run
                    t0 = time.monotonic()
                    self._report_attachments(api, ask_docker=False)
                    LOG.debug("container port change reported in %.0f ms",
                              (time.monotonic() - t0) * 1000)
                if ask:
                    self._report_attachments(api, ask_docker=True)
            except Exception as exc:        # OVS restarting: the next round retries
                LOG.warning("reporting attachments failed: %s", exc)

    def run(self, once: bool = False) -> int:
        """Connect (waiting for ovsdb-server if needed) and reconcile until stopped."""
        api = ovsdb.connect(self.ovsdb_target, on_container_change=self._attached.set)
        if once:
            if self.host_gateways is not None:
                self._fetch_gateways()
            n = self.reconcile(api)
            self._report_attachments(api)
            keeper = self._network_keeper()
            if keeper is not None:
                self._sync_networks(keeper)
            LOG.info("pass done: %d changes", n)
            return 0
        def on_hup(*_: object) -> None:
            self._reload.set()
            self._wake.set()
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        self._attached.set()                # the first report goes out at once
        threading.Thread(target=self._report_on_change, args=(api,), daemon=True).start()
        threading.Thread(target=self._follow_members, daemon=True).start()
        if self.host_gateways is not None:
            threading.Thread(target=self._follow_gateways, daemon=True).start()
        keeper = self._keeper = self._network_keeper()
        if keeper is not None:
            threading.Thread(target=self._follow_networks, args=(keeper,), daemon=True).start()
        self._start_names()
        self._api = api
        hostnet.watch_links(("docker0", hostnet.DOCKER_LINK_PORT, hostnet.DOCKER_LINK_PEER),
                            self._wake.set)
        last = 0.0
        while True:
            changed_file = self._file_changed()
            if self._wake.is_set() or changed_file:
                self._wake.clear()
                if changed_file or self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                if self._members_changed.is_set() and self.file_cluster:
                    self._members_changed.clear()
                    merged = self._with_remote(self.file_cluster, self._remote)
                    if merged is not None and merged != self.cluster:
                        LOG.info("members from the controller: peers now %s", ", ".join(
                            h.name for h in merged.peers(self.me.name)) or "none")
                        self.cluster = merged
                last = 0.0
            if time.monotonic() - last >= self.interval:
                try:
                    n = self.reconcile(api)
                    if n:
                        LOG.info("pass done: %d changes", n)
                except Exception as exc:        # OVS restarting: retry next pass
                    self.counters.add("pass_failures")
                    LOG.warning("pass failed, retrying: %s", exc)
                    time.sleep(0.5)
                    continue
                last = time.monotonic()
            elif self._unresolved:
                self.warm_peers()       # a peer may have come up since: retry soon
            self._wake.wait(0.5)

    def metrics_http(self, _body: bytes) -> tuple[int, str, bytes]:
        """GET /metrics on the agent's listener (`ovs_agent.httpserver`): Prometheus text."""
        if self._api is None:
            return 503, "text/plain", b"the agent has not connected to OVSDB yet\n"
        return 200, CONTENT_TYPE, metrics.render_metrics(self.snapshot(self._api)).encode()

    def snapshot(self, api) -> metrics.AgentSnapshot:
        """What /metrics shows: the counters, plus tunnels (OVSDB's in-memory replica), the
        docker0 link (/sys), the resolver's counters and the Docker networks' last pass."""
        assert self.cluster and self.me
        peers = {tunnel_port_name(self.cluster.link_type(self.me.name, p.name), p.name): p.name
                 for p in self.cluster.peers(self.me.name)} \
            if self.cluster.transport == "tunnel" else {}
        tunnels = []
        for row in api.db_list("Interface", columns=["name", "type", "ofport", "link_state"]
                               ).execute(check_error=True):
            peer = peers.get(row["name"])
            if peer is None:
                continue
            ofport = row["ofport"][0] if isinstance(row["ofport"], list) and row["ofport"] \
                else row["ofport"]
            link = row["link_state"][0] if isinstance(row["link_state"], list) \
                and row["link_state"] else row["link_state"]
            tunnels.append(metrics.TunnelState(peer, row["type"],
                                               bool(ofport and ofport > 0 and link == "up")))
        resolver = zones = None
        if self._names is not None:
            r = self._names.server
            resolver = {"answered": r.answered, "forwarded": r.forwarded, "dropped": r.dropped,
                        "limited": r.limited}
            zones = len(r.zones)
        nets = None
        if self._keeper is not None and self._keeper.doc:
            doc = self._keeper.doc
            nets = {"managed": len(doc.get("created", ())) + len(doc.get("adopted", ())),
                    "conflicts": len(doc.get("conflicts", {})),
                    "waiting": len(doc.get("waiting", {})), "errors": len(doc.get("errors", {}))}
        return metrics.AgentSnapshot(self.me.name, version(), self.counters, tuple(tunnels),
                                     hostnet.docker_link_up(), resolver, zones, nets)

    def _start_names(self) -> None:
        """The names thread (``ovs_agent.nameservice``), when a controller API is known."""
        assert self.cluster and self.me
        urls = tuple(u for u in (self.cluster.apis or (self.cluster.api,)) if u)
        if not self.serve_names or not urls:
            return
        service = self._names = nameservice.NameService(self.me.name, urls, self.docker_host)
        threading.Thread(target=service.run, name="weft-names", daemon=True).start()

    def _file_changed(self) -> bool:
        try:
            return self.peers.stat().st_mtime != self._mtime
        except OSError:
            return False
