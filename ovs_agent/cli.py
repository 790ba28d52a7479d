"""`ovs-agent`: run the reconcile loop, or attach/detach a container to br0.

    ovs-agent --peers hosts.yaml [--host NAME] [--once] [--ovsdb CONNECTION] [--register]
              [--listen ADDR:PORT]
    ovs-agent attach CONTAINER_NETNS --tenant NAME [--ip CIDR] [--mac MAC] [--port-security off]
    ovs-agent detach CONTAINER_NETNS
    ovs-agent docker-plugin --peers hosts.yaml [--host NAME] [--socket PATH]

Exit status 2 means the input (hosts.yaml or arguments) was refused and
nothing was changed.
"""
from __future__ import annotations

import argparse
import logging
import sys

if __name__ == "__main__":
    # The agent process only (never a process that also runs os-ken): the ovs library
    # imports eventlet merely to ask whether select is monkey-patched.  That import is
    # about half of the agent's start-up CPU, which 32 agents starting together on one
    # small machine pay 32 times (agent convergence figure, docs/performance.md).
    sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]
from pathlib import Path

from ovs_agent import attach, desired, dockerd, dockernets, hostnet, ovsdb
from ovs_agent.agent import DEFAULT_SUBNET_FILE, Agent, pick_host
from ovs_agent.desired import device_port_type
from cluster.hostsfile import HostsFileError, load, tunnel_mtu
from cluster.version import version


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--ovsdb", default=ovsdb.default_connection(),
                    help="OVSDB connection (default: %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true")


def _attach_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ovs-agent attach|detach")
    ap.add_argument("action", choices=["attach", "detach"])
    ap.add_argument("netns", help="the container's network namespace (ip netns name)")
    ap.add_argument("--tenant")
    ap.add_argument("--ip", help="address/prefix for the container interface; the port is "
                                 "bound with it: the container may send only from it")
    ap.add_argument("--mac")
    ap.add_argument("--ifname", default="eth0")
    ap.add_argument("--port-security", choices=["on", "off"], default="on",
                    help="off: bind the port without its MAC and address, so nothing it "
                         "sends is checked (a router or a bridge in the container); "
                         "default %(default)s")
    ap.add_argument("--peers", type=Path, help="hosts.yaml, for the MTU and port type")
    ap.add_argument("--host", help="this host's name in hosts.yaml")
    ap.add_argument("--mtu", type=int)
    _common(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cluster = load(args.peers) if args.peers else None
        mtu = args.mtu or (tunnel_mtu(cluster) if cluster else 1450)
        me = pick_host(cluster, args.host) if cluster else None
        port_type = device_port_type(cluster, me.name, attach.port_name(args.netns, args.ifname)) \
            if cluster and me else ""
        # without hosts.yaml the datapath is unknown: off is safe on both
        tx_off = hostnet.needs_tx_checksum_off(me.datapath_type) if me else True
    except HostsFileError as exc:
        print(f"ovs-agent: {exc}", file=sys.stderr)
        return 2
    api = ovsdb.connect(args.ovsdb, wait=10)
    try:
        if args.action == "attach":
            if not args.tenant:
                ap.error("attach needs --tenant")
            name = attach.attach(api, args.netns, args.tenant, mtu, args.ip, args.mac,
                                 args.ifname, port_type, tx_off,
                                 port_security=args.port_security == "on")
            print(f"attached {args.netns}:{args.ifname} to br0 as port {name} "
                  f"(tenant {args.tenant})")
        else:
            print(f"detached port {attach.detach(api, args.netns, args.ifname)}")
    except ValueError as exc:
        print(f"ovs-agent: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["attach"], ["detach"]):
        return _attach_main(argv)
    if argv[:1] == ["docker-plugin"]:
        from ovs_agent import pluginserver
        return pluginserver.main(argv[1:])
    ap = argparse.ArgumentParser(prog="ovs-agent", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    ap.add_argument("--peers", type=Path, required=True, help="hosts.yaml")
    ap.add_argument("--host", help="this host's name in hosts.yaml")
    ap.add_argument("--once", action="store_true", help="one reconcile pass, then exit")
    ap.add_argument("--subnet-file", type=Path, default=DEFAULT_SUBNET_FILE,
                    help="flannel-style subnet.env with DOCKER_OPTS (default: %(default)s)")
    ap.add_argument("--docker-config", type=Path,
                    help="daemon.json fragment for dockerd: bip, fixed-cidr, mtu "
                         "(default: daemon.json beside --subnet-file)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    ap.add_argument("--ssl-dir", type=Path, default=desired.DEFAULT_SSL_DIR,
                    help="with ssl: controller targets, OVS's TLS key, certificate and CA: "
                         "HOST-privkey.pem, HOST-cert.pem, ca-cert.pem (see weft-pki)")
    ap.add_argument("--register", action="store_true",
                    help="join by registering this host (its entry in --peers) with the "
                         "controller, renewing a lease; needs `membership: register` "
                         "(docs/hosts-yaml.md, Joining by registration)")
    ap.add_argument("--lease-ttl", type=float, default=30.0,
                    help="with --register: seconds the controller keeps this host without a "
                         "heartbeat (renewed every third of it; default %(default)s)")
    ap.add_argument("--docker-host", default=dockerd.DEFAULT_DOCKER,
                    help="this host's dockerd, asked for docker0's containers, whose MACs "
                         "the controller then pins to this host; 'none': do not ask "
                         "(default: %(default)s)")
    ap.add_argument("--plugin-socket", type=Path, default=dockernets.DEFAULT_PLUGIN_SOCKET,
                    help="the weft Docker plugin's socket: while it exists the agent keeps "
                         "this dockerd's weft networks those of the controller; 'none': "
                         "never (default: %(default)s)")
    ap.add_argument("--listen", metavar="ADDR:PORT",
                    help="the agent's HTTP listener (POST /v1/trace; bearer token "
                         "WEFT_API_TOKEN); default: this host's agent_api in hosts.yaml, "
                         "'none': no listener")
    ap.add_argument("--no-firewall", action="store_true",
                    help="do not write nftables table inet weft (then the host's own firewall "
                         "must keep containers off tunnel, OVSDB and OpenFlow ports)")
    _common(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s ovs-agent %(levelname)s %(message)s")
    agent = Agent(args.peers, args.host, args.ovsdb, args.subnet_file, args.interval,
                  args.docker_config, ssl_dir=args.ssl_dir)
    agent.register, agent.lease_ttl = args.register, args.lease_ttl
    agent.docker_host = None if args.docker_host == "none" else args.docker_host
    agent.plugin_socket = None if str(args.plugin_socket) == "none" else args.plugin_socket
    try:
        if agent.docker_host:
            dockerd.socket_of(agent.docker_host)
    except ValueError as exc:
        print(f"ovs-agent: --docker-host {exc}", file=sys.stderr)
        return 2
    if args.no_firewall:
        agent.host_firewall = None
    try:
        agent.load()
    except (HostsFileError, OSError) as exc:
        print(f"ovs-agent: {exc}", file=sys.stderr)
        return 2
    if agent.host_firewall is not None and agent.host_firewall.nft is None:
        # refuse rather than warn: without the table, containers reach the tunnel, OVSDB
        # and OpenFlow ports of every host, and a warning in a log protects nobody
        print("ovs-agent: nft not found, so the host firewall (table inet weft) cannot keep "
              "containers off the tunnel, OVSDB and OpenFlow ports: install nftables "
              "(apt-get install nftables), or run with --no-firewall if this host's own "
              "firewall does that (docs/security.md)", file=sys.stderr)
        return 2
    if args.register and not (agent.cluster.membership == "register" and agent.cluster.api):
        print(f"ovs-agent: {args.peers}: --register needs `membership: register` and "
              "controller.api in the file", file=sys.stderr)
        return 2
    logging.getLogger("ovs-agent").info("this host is %s (%s), %d peers", agent.me.name,
                                        agent.me.underlay_ip, len(agent.cluster.hosts) - 1)
    listen = args.listen or agent.me.agent_api
    if listen and listen != "none" and not args.once:
        from ovs_agent import httpserver
        httpserver.ROUTES[("GET", "/metrics")] = agent.metrics_http    # Prometheus
        try:
            httpserver.serve(httpserver.parse_listen(listen))
        except (ValueError, OSError) as exc:
            print(f"ovs-agent: --listen {listen}: {exc}", file=sys.stderr)
            return 2
    try:
        return agent.run(once=args.once)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
