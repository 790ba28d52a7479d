"""The weft side of a lab: controller, tenants, attached containers, convergence.

The controller runs in ``LAB.ctl`` and serves its API on TCP inside the lab
(for the agents) and on a unix socket in the lab's state dir (for tools in
the root namespace: `api()` below, `weftctl --api unix:...`).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from weft_lab import keeper
from weft_lab.nodes import CTL, LabError, host_dir, ns_name, ovs_env, pki_dir, state_dir
from weft_lab.shell import CommandError, run, succeeds
from weft_lab.topology import Network, Tenant, Topology


def api_socket(lab: str, instance: int = 1) -> Path:
    """The unix socket of controller instance 1, 2, ... (1 is the only one by default)."""
    return state_dir(lab) / ("api.sock" if instance == 1 else f"api-{instance}.sock")


def api_token(lab: str) -> str:
    return (state_dir(lab) / "api.token").read_text().strip()


def api(lab: str, timeout: float = 10, instance: int = 1) -> httpx.Client:
    """An HTTP client for the lab controller's REST API (over its unix socket)."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(api_socket(lab, instance))),
                        base_url="http://weft", timeout=timeout,
                        headers={"Authorization": f"Bearer {api_token(lab)}"})


ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
PIDS_FILE = "pids.json"      # {"controller-1": pid, "etcd-1": pid, ...} for fault injection


def etcd_url(topo: Topology) -> str:
    """The lab's etcd cluster as weft-manager takes it: etcd://ip:port,ip:port."""
    return "etcd://" + ",".join(f"{ip}:{ETCD_CLIENT_PORT}"
                                for ip in topo.controller_ips()[:topo.etcd])


ETCD_PREFIX = "/weft/"      # the weft user's role: the store (/weft/v1/) and the election


def etcd_pki(lab: str) -> Path:
    """The lab's etcd CA (its own: no switch certificate opens etcd), member and client
    certificates and the root and weft passwords (weft_lab/etcd.py make_pki)."""
    return state_dir(lab) / "etcd-pki"


def etcd_args(topo: Topology) -> list[str]:
    """weft-manager's flags for the lab's etcd: TLS, client certificate, the weft user."""
    from weft_lab.etcd import PASSWORD_FILE, client_access
    d = etcd_pki(topo.name)
    a = client_access(d)
    return ["--store", etcd_url(topo), "--etcd-ca", str(a.ca), "--etcd-cert", str(a.cert),
            "--etcd-key", str(a.key), "--etcd-user", str(a.user),
            "--etcd-password-file", str(d / PASSWORD_FILE)]


def etcd_curl(lab: str) -> list[str]:
    """curl with the lab etcd's CA and client certificate (health, status, attacks)."""
    from weft_lab.etcd import CLIENT
    d = etcd_pki(lab)
    return ["curl", "-s", "-m", "2", "--cacert", str(d / "ca-cert.pem"),
            "--cert", str(d / f"{CLIENT}-cert.pem"), "--key", str(d / f"{CLIENT}-privkey.pem")]


def record_pid(lab: str, name: str, pid: int) -> None:
    path = state_dir(lab) / PIDS_FILE
    pids = json.loads(path.read_text()) if path.exists() else {}
    pids[name] = pid
    path.write_text(json.dumps(pids))


def pid_of(lab: str, name: str) -> int:
    """The pid of a lab daemon started here: controller-K or etcd-K (1-based)."""
    return json.loads((state_dir(lab) / PIDS_FILE).read_text())[name]


def start_etcd(topo: Topology, members: Iterable[int] | None = None) -> None:
    """An etcd cluster of ``topo.etcd`` members in LAB.ctl, member k on the k-th controller
    address; data under the lab's state dir (removed by `down`)."""
    from weft_lab.etcd import make_pki, tls_flags
    sd, ips = state_dir(topo.name), topo.controller_ips()[:topo.etcd]
    d = etcd_pki(topo.name)
    # etcd checks a peer's certificate against the address the connection comes from;
    # the lab's members share LAB.ctl, where a connection leaves from the namespace's
    # first address whatever member opens it: each member's certificate names them all
    # (on real hosts, one address each: docs/security.md)
    make_pki(d, {f"e{k + 1}": ips for k in range(len(ips))})
    peers = ",".join(f"e{k + 1}=https://{ip}:{ETCD_PEER_PORT}" for k, ip in enumerate(ips))
    new_cluster = not (sd / "etcd").exists()
    for k in members if members is not None else range(topo.etcd):
        ip, data = ips[k], sd / "etcd" / f"e{k + 1}"
        fresh = not data.exists()
        data.mkdir(parents=True, exist_ok=True)
        pid = keeper.request(sd, {
            "op": "spawn", "ns": ns_name(topo.name, CTL), "log": str(sd / f"etcd-{k + 1}.log"),
            "argv": ["etcd", "--name", f"e{k + 1}", "--data-dir", str(data),
                     "--listen-client-urls", f"https://{ip}:{ETCD_CLIENT_PORT}",
                     "--advertise-client-urls", f"https://{ip}:{ETCD_CLIENT_PORT}",
                     "--listen-peer-urls", f"https://{ip}:{ETCD_PEER_PORT}",
                     "--initial-advertise-peer-urls", f"https://{ip}:{ETCD_PEER_PORT}",
                     *tls_flags(d, f"e{k + 1}"),
                     "--initial-cluster", peers, "--initial-cluster-token", topo.name,
                     "--initial-cluster-state", "new" if fresh else "existing",
                     # a lost leader is replaced in about 0.6-1.2 s (default 1-2 s), well
                     # inside the controllers' election lease (3 s)
                     "--heartbeat-interval", "100", "--election-timeout", "600",
                     "--logger", "zap", "--log-level", "warn"]})["pid"]
        record_pid(topo.name, f"etcd-{k + 1}", pid)
    wait_etcd(topo)
    if new_cluster:         # authentication on, once: root and the weft user
        run([sys.executable, "-m", "weft_lab.etcd", "secure",
             f"https://{ips[0]}:{ETCD_CLIENT_PORT}", str(d), ETCD_PREFIX],
            ns=ns_name(topo.name, CTL))


def wait_etcd(topo: Topology, timeout: float = 30) -> None:
    """Until the cluster has a leader (a write through member 1's view succeeds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ip in topo.controller_ips()[:topo.etcd]:
            r = run([*etcd_curl(topo.name), f"https://{ip}:{ETCD_CLIENT_PORT}/health"],
                    ns=ns_name(topo.name, CTL), check=False)
            if '"health":"true"' in r.replace(" ", ""):
                return
        time.sleep(0.2)
    logs = sorted(state_dir(topo.name).glob("etcd-*.log"))
    tails = "; ".join(f"{p.name}: {p.read_text()[-600:]}" for p in logs)
    raise LabError(f"etcd did not come up; see {state_dir(topo.name)}/etcd-*.log ({tails})")


# The controllers' election lease in HA labs.  It must stay well above etcd's own leader
# election (docs/failures.md): here that took up to ~2 s under load (writes stalled
# 2.06 s in CI), and with 3 s the master lost its lease to an etcd leader kill in 2 of 2
# full runs (standalone: 0 of 3).
ELECTION_TTL = 5.0


def start_controller(topo: Topology, *extra: str,
                     instances: range | None = None) -> list[int]:
    """weft-manager instance k+1 on the k-th controller address; several campaign for
    master on the lab's etcd.  Instance 1 keeps the names a single controller has
    (weft-manager.log, api.sock, weft.db).  `extra`: more flags, e.g. --adopt."""
    sd = state_dir(topo.name)
    token = api_token(topo.name)
    pids = []
    for k in instances if instances is not None else range(topo.controllers):
        n, ip = k + 1, topo.controller_ips()[k]
        suffix = "" if n == 1 else f"-{n}"
        # on etcd: the shared store, and an election among the instances
        store = [*etcd_args(topo), "--weft-node-name", f"ctl{n}",
                 "--weft-election-ttl", f"{ELECTION_TTL:g}"] if topo.etcd else []
        pid = keeper.request(sd, {
            "op": "spawn", "ns": ns_name(topo.name, CTL), "env": {"WEFT_API_TOKEN": token},
            "log": str(sd / f"weft-manager{suffix}.log"),
            "argv": [sys.executable, "-m", "controller.manager", "controller.app",
                     "--weft-hosts", str(sd / "hosts.yaml"),
                     "--weft-db", str(sd / f"weft{suffix}.db"),
                     "--ofp-listen-host", ip, *_openflow_listen(topo.name),
                     "--wsapi-host", ip, "--wsapi-port", "8080",
                     "--wsapi-unix", str(api_socket(topo.name, n)), *store, *extra]})["pid"]
        record_pid(topo.name, f"controller-{n}", pid)
        pids.append(pid)
    return pids


def _openflow_listen(lab: str) -> list[str]:
    """OpenFlow over mutual TLS when the lab has its PKI (labs with weft's controller)."""
    pki = pki_dir(lab)
    if not (pki / "controller-cert.pem").exists():
        return ["--ofp-tcp-listen-port", "6653"]
    return ["--ofp-ssl-listen-port", "6653", "--ctl-privkey", str(pki / "controller-privkey.pem"),
            "--ctl-cert", str(pki / "controller-cert.pem"), "--ca-certs", str(pki / "ca-cert.pem")]


def wait_api(lab: str, timeout: float = 30, instances: int = 1) -> None:
    """Until every controller instance's API answers."""
    deadline = time.monotonic() + timeout
    for n in range(1, instances + 1):
        while not _api_up(lab, n):
            if time.monotonic() > deadline:
                raise LabError(f"the controller API did not come up; see {state_dir(lab)}/"
                               f"weft-manager{'' if n == 1 else f'-{n}'}.log")
            time.sleep(0.1)


def _api_up(lab: str, instance: int) -> bool:
    if not api_socket(lab, instance).exists():
        return False
    try:
        with api(lab, timeout=2, instance=instance) as c:
            return c.get("/v1/health").status_code == 200
    except httpx.HTTPError:
        return False


def setup_tenants(topo: Topology) -> None:
    """The topology's tenants, then their further networks (POST /v1/networks)."""
    with api(topo.name) as c:
        for t in topo.tenants:
            # a tenant's own subnet stays flat (no gateway), as lab topologies made
            # before networks expect (devices on the first address); routed segments are
            # its `networks:`
            body = {"name": t.name, "vlan": t.vlan, "subnet": t.subnet, "gateway": None}
            r = c.post("/v1/tenants", json=body)
            if r.status_code not in (201, 409):
                raise LabError(f"creating tenant {t.name}: {r.status_code} {r.text}")
        for t in topo.tenants:
            for n in t.networks:
                r = c.post("/v1/networks", json=network_body(t, n))
                if r.status_code not in (201, 409):
                    raise LabError(f"creating network {n.name} of tenant {t.name}: "
                                   f"{r.status_code} {r.text}")


def network_body(tenant: Tenant, n: Network) -> dict:
    """POST /v1/networks for a topology's network; unset fields are the controller's
    defaults (gateway: the first address; egress: on)."""
    body: dict = {"name": n.name, "tenant": tenant.name, "subnet": n.subnet}
    if n.gateway is not None:
        body["gateway"] = n.gateway
    if n.egress is not None:
        body["egress"] = n.egress
    return body


def attach_containers(topo: Topology) -> None:
    """`ovs-agent attach` each br0 container on its host, as an operator would."""
    sd = state_dir(topo.name)
    for c in topo.containers:
        if c.attach != "br0":
            continue
        _wait_bridge(topo.name, c.host)
        argv = [sys.executable, "-m", "ovs_agent.cli", "attach", ns_name(topo.name, c.name),
                "--tenant", c.segment or "default", "--ip", c.ip, "--peers", str(sd / "hosts.yaml"),
                "--host", c.host]
        if c.mac:
            argv += ["--mac", c.mac]
        run(argv, ns=ns_name(topo.name, c.host), env=ovs_env(topo.name, c.host))


def weft_network_args(segment: Tenant | Network) -> list[str]:
    """`docker network create` for a tenant's (or a network's) weft network, as a user
    types it.  `-o tenant=` names a tenant's own network or a further network: a
    network name is accepted wherever a tenant's is (docs/routing.md)."""
    gateway = ["--gateway", segment.gateway] if isinstance(segment, Network) \
        and segment.gateway else []
    assert segment.subnet is not None
    return ["network", "create", "-d", "weft", "--ipam-driver", "weft", "-o",
            f"tenant={segment.name}", "--subnet", segment.subnet, *gateway, segment.name]


def docker_networks(topo: Topology, host: str) -> dict[str, dict]:
    """A host's weft Docker networks by name, as `docker network ls` and inspect show
    them (Options, Labels, IPAM)."""
    from weft_lab import docker
    d = host_dir(topo.name, host)
    for _ in range(5):      # a network the agent removes between ls and inspect: ask again
        names = docker.docker(d, "network", "ls", "--filter", "driver=weft", "--format",
                              "{{.Name}}").split()
        if not names:
            return {}
        try:
            return {n["Name"]: n
                    for n in json.loads(docker.docker(d, "network", "inspect", *names))}
        except CommandError as exc:
            if "No such network" not in str(exc):
                raise
    raise LabError(f"{host}'s weft Docker networks kept changing under `docker network ls`")


def wait_docker_networks(topo: Topology, names: set[str], timeout: float = 30,
                         hosts: list[str] | None = None) -> float:
    """Wait until every host's dockerd has the weft networks ``names`` (each host's agent
    creates the controller's networks: docs/docker.md, Tenant networks); the seconds it
    took."""
    t0 = time.monotonic()
    missing: dict[str, set[str]] = {}
    while time.monotonic() - t0 < timeout:
        missing = {h: names - set(docker_networks(topo, h))
                   for h in hosts or [h.name for h in topo.members]}
        if not any(missing.values()):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise LabError(f"weft Docker networks missing after {timeout:.0f}s: "
                   + "; ".join(f"{h}: {', '.join(sorted(m))}" for h, m in missing.items() if m)
                   + " (see the hosts' ovs-agent.log)")


def run_weft_containers(topo: Topology) -> None:
    """The `attach: weft` containers, once every host's agent has made the weft network of
    each tenant with a subnet and of each further network."""
    from weft_lab import docker
    wait_docker_networks(topo, {seg.name for t in topo.tenants
                                for seg in ([t] if t.subnet else []) + list(t.networks)})
    for c in topo.containers:
        if c.attach == "weft":
            docker.run_container(host_dir(topo.name, c.host), topo.name, c.name,
                                 ns_name(topo.name, c.name), c.mac, network=c.segment,
                                 ip=c.ip.split("/")[0])
            run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                ns=ns_name(topo.name, c.name))


def bind_switches(topo: Topology) -> None:
    """Plug each external switch's trunk into br0 and bind it, as an operator would.

    The trunk carries every tenant whose VLAN the switch has; other VLANs of the
    switch (deliberately) are not allowed on it.  `native` takes untagged frames.
    """
    for sw in topo.switches:
        _wait_bridge(topo.name, sw.host)
        run(["ovs-vsctl", "--may-exist", "add-port", "br0", sw.port], ns=ns_name(topo.name, sw.host),
            env=ovs_env(topo.name, sw.host))
        vids = {v.vlan for v in sw.vlans if v.vlan is not None}
        trunk = [t.name for t in topo.tenants if t.vlan in vids]
        with api(topo.name) as c:
            r = c.post("/v1/ports", json={"host": sw.host, "port": sw.port, "mode": "trunk",
                                          "trunk": trunk, "tenant": sw.native})
            if r.status_code != 201:
                raise LabError(f"binding trunk {sw.host}/{sw.port}: {r.status_code} {r.text}")


def _wait_bridge(lab: str, host: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if succeeds(["ovs-vsctl", "--timeout=3", "br-exists", "br0"], ns=ns_name(lab, host),
                    env=ovs_env(lab, host)) and (host_dir(lab, host) / "subnet.env").exists():
            return
        time.sleep(0.1)
    raise LabError(f"br0 did not appear on {host}; see {host_dir(lab, host)}/ovs-agent.log")


def tunnels_resolved(topo: Topology) -> bool:
    """Every host's ovs-vswitchd knows every peer's underlay MAC in its own tunnel
    neighbour cache (the kernel's table is not enough: a first tunnelled frame to a
    peer missing there is dropped)."""
    if topo.transport != "tunnel" or len(topo.members) < 2:
        return True
    for h in topo.members:
        out = run(["ovs-appctl", "tnl/neigh/show"], ns=ns_name(topo.name, h.name),
                  env=ovs_env(topo.name, h.name), check=False)
        known = {line.split()[0] for line in out.splitlines()
                 if line[:1].isdigit() and len(line.split()) >= 2}
        if not {p.underlay_ip for p in topo.members if p is not h} <= known:
            return False
    return True


def election(lab: str, instance: int) -> dict | None:
    """An instance's election status from /v1/health, or None when it does not answer."""
    try:
        with api(lab, timeout=1, instance=instance) as c:
            return c.get("/v1/health").json().get("election")
    except (httpx.HTTPError, ValueError):
        return None


def master(topo: Topology, exclude: tuple[int, ...] = ()) -> int | None:
    """The instance (1-based) that says it is master, if exactly one does."""
    found = [n for n in range(1, topo.controllers + 1) if n not in exclude
             and (election(topo.name, n) or {}).get("role") == "master"]
    return found[0] if len(found) == 1 else None


def wait_converged(topo: Topology, timeout: float = 60) -> float:
    """Wait until every agent finished a pass and every switch is connected and in sync."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    expected = sum(1 for c in topo.containers if c.attach in ("br0", "weft")) + \
        len(topo.switches)
    while time.monotonic() < deadline:
        try:
            instance = 1
            if topo.controllers > 1:                    # the master's view of the switches
                instance = master(topo) or 1
            with api(topo.name, timeout=3, instance=instance) as c:
                health = c.get("/v1/health").json()      # cheap: counts, not lists
            agents_done = not topo.agent or (all(
                (host_dir(topo.name, h.name) / "subnet.env").exists() for h in topo.members)
                and tunnels_resolved(topo))
            if (health["switches_in_sync"] == len(topo.members)
                    and health["bindings"] >= expected and agents_done):
                return time.monotonic() - t0
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise LabError(f"lab {topo.name} did not converge in {timeout}s")
