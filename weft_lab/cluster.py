"""The weft side of a lab: controller, tenants, attached containers, convergence.

The controller runs in ``LAB.ctl`` and serves its API on TCP inside the lab
(for the agents) and on a unix socket in the lab's state dir (for tools in
the root namespace: `api()` below, `weftctl --api unix:...`).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from weft_lab import keeper
from weft_lab.lab import CTL, LabError, host_dir, ns_name, ovs_env, pki_dir, state_dir
from weft_lab.shell import run, succeeds
from weft_lab.topology import Topology


def api_socket(lab: str) -> Path:
    return state_dir(lab) / "api.sock"


def api_token(lab: str) -> str:
    return (state_dir(lab) / "api.token").read_text().strip()


def api(lab: str, timeout: float = 10) -> httpx.Client:
    """An HTTP client for the lab controller's REST API (over its unix socket)."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(api_socket(lab))),
                        base_url="http://weft", timeout=timeout,
                        headers={"Authorization": f"Bearer {api_token(lab)}"})


def start_controller(topo: Topology, *extra: str) -> int:
    """weft-manager in LAB.ctl, under the keeper (`extra`: more flags, e.g. --adopt)."""
    sd = state_dir(topo.name)
    token = api_token(topo.name)
    return keeper.request(sd, {
        "op": "spawn", "ns": ns_name(topo.name, CTL), "env": {"WEFT_API_TOKEN": token},
        "log": str(sd / "weft-manager.log"),
        "argv": [sys.executable, "-m", "controller.manager", "controller.app",
                 "--weft-hosts", str(sd / "hosts.yaml"), "--weft-db", str(sd / "weft.db"),
                 "--ofp-listen-host", topo.controller_ip, *_openflow_listen(topo.name),
                 "--wsapi-host", topo.controller_ip, "--wsapi-port", "8080",
                 "--wsapi-unix", str(api_socket(topo.name)), *extra]})["pid"]


def _openflow_listen(lab: str) -> list[str]:
    """OpenFlow over mutual TLS when the lab has its PKI (labs with weft's controller)."""
    pki = pki_dir(lab)
    if not (pki / "controller-cert.pem").exists():
        return ["--ofp-tcp-listen-port", "6653"]
    return ["--ofp-ssl-listen-port", "6653", "--ctl-privkey", str(pki / "controller-privkey.pem"),
            "--ctl-cert", str(pki / "controller-cert.pem"), "--ca-certs", str(pki / "ca-cert.pem")]


def wait_api(lab: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api_socket(lab).exists():
            try:
                with api(lab, timeout=2) as c:
                    if c.get("/v1/health").status_code == 200:
                        return
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    raise LabError(f"the controller API did not come up; see {state_dir(lab)}/weft-manager.log")


def setup_tenants(topo: Topology) -> None:
    with api(topo.name) as c:
        for t in topo.tenants:
            body = {"name": t.name, "vlan": t.vlan, "subnet": t.subnet}
            r = c.post("/v1/tenants", json=body)
            if r.status_code not in (201, 409):
                raise LabError(f"creating tenant {t.name}: {r.status_code} {r.text}")


def attach_containers(topo: Topology) -> None:
    """`ovs-agent attach` each br0 container on its host, as an operator would."""
    sd = state_dir(topo.name)
    for c in topo.containers:
        if c.attach != "br0":
            continue
        _wait_bridge(topo.name, c.host)
        argv = [sys.executable, "-m", "ovs_agent.cli", "attach", ns_name(topo.name, c.name),
                "--tenant", c.tenant or "default", "--ip", c.ip, "--peers", str(sd / "hosts.yaml"),
                "--host", c.host]
        if c.mac:
            argv += ["--mac", c.mac]
        run(argv, ns=ns_name(topo.name, c.host), env=ovs_env(topo.name, c.host))


def weft_network_args(tenant) -> list[str]:
    """`docker network create` for a tenant's weft network, as a user types it."""
    return ["network", "create", "-d", "weft", "--ipam-driver", "weft", "-o",
            f"tenant={tenant.name}", "--subnet", tenant.subnet, tenant.name]


def run_weft_containers(topo: Topology) -> None:
    """A weft network per tenant with a subnet on every host, then `attach: weft` containers."""
    from weft_lab import docker
    for h in topo.hosts:
        for t in topo.tenants:
            if t.subnet:
                docker.docker(host_dir(topo.name, h.name), *weft_network_args(t))
    for c in topo.containers:
        if c.attach == "weft":
            docker.run_container(host_dir(topo.name, c.host), topo.name, c.name,
                                 ns_name(topo.name, c.name), c.mac, network=c.tenant,
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


def wait_converged(topo: Topology, timeout: float = 60) -> float:
    """Wait until every agent finished a pass and every switch is connected and in sync."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    expected = sum(1 for c in topo.containers if c.attach in ("br0", "weft")) + \
        len(topo.switches)
    while time.monotonic() < deadline:
        try:
            with api(topo.name, timeout=3) as c:
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
