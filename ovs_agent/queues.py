"""Egress queues: OVSDB QoS (linux-htb) and Queue rows on the host's egress NIC.

hosts.yaml's `queues` section says which queues exist; the controller's QoS
rules send traffic to them with set_queue.  The NIC is the one tunnels or
VLANs leave by, and it must be an OVS port for OVS to own its qdisc: the
uplink (transport vlan) or the underlay NIC on br-phy (netdev).  Note that
the userspace datapath creates the HTB classes but does not steer packets
into them (set_queue is not carried to the kernel qdisc; measured, see
docs/qos.md), so the controller refuses queue rules for netdev hosts.
"""
from __future__ import annotations

import logging

from ovs_agent.desired import OWNER, OWNER_KEY
from cluster.hostsfile import Queues

LOG = logging.getLogger("ovs-agent")


def desired_rows(q: Queues) -> tuple[dict[str, str], dict[int, dict[str, str]]]:
    """(QoS other_config, {queue id: Queue other_config}), rates in bit/s as OVS wants."""
    qos = {"max-rate": str(q.max_kbps * 1000)}
    queues = {c.id: {"min-rate": str(c.min_kbps * 1000), "max-rate": str(c.max_kbps * 1000)}
              for c in q.classes}
    if 0 not in queues:         # unclassified traffic goes to queue 0: give it the link
        queues[0] = {"max-rate": str(q.max_kbps * 1000)}
    return qos, queues


def _uuid(ref):
    """OVSDB references come back as UUIDs or as IDL Row objects: use the UUID."""
    return getattr(ref, "uuid", ref)


def _current(api, port: str) -> tuple[dict | None, dict[str, dict]]:
    """(the QoS row on `port` or None, every Queue row's other_config by uuid)."""
    rows = api.db_find("Port", ("name", "=", port), columns=["qos"]).execute(check_error=True)
    ref = rows[0]["qos"] if rows else None
    ref = _uuid((ref[0] if ref else None) if isinstance(ref, list) else ref)
    qos = next((r for r in api.db_list("QoS", columns=["_uuid", "type", "other_config",
                                                        "queues"]).execute(check_error=True)
                if r["_uuid"] == ref), None) if ref else None
    queues = {r["_uuid"]: dict(r["other_config"]) for r in api.db_list(
        "Queue", columns=["_uuid", "other_config"]).execute(check_error=True)}
    return qos, queues


def ensure(api, port: str, q: Queues | None) -> bool:
    """Make `port`'s QoS what `q` says (or none); True if anything was written.

    The old QoS row and its Queue rows go in the same transaction as the new
    ones arrive: both tables are roots in OVSDB, nothing else would remove them.
    """
    want = desired_rows(q) if q else None
    qos, queue_cfg = _current(api, port)
    have = None
    if qos is not None and qos["type"] == "linux-htb":
        have = (dict(qos["other_config"]),
                {int(k): queue_cfg.get(_uuid(u), {}) for k, u in qos["queues"].items()})
    if want == have:
        return False
    tag = {OWNER_KEY: OWNER}
    with api.transaction(check_error=True) as txn:
        if want is None:
            txn.add(api.db_clear("Port", port, "qos"))
        else:
            queue_cmds = {qid: txn.add(api.db_create("Queue", other_config=cfg, external_ids=tag))
                          for qid, cfg in want[1].items()}
            qos_cmd = txn.add(api.db_create("QoS", type="linux-htb", other_config=want[0],
                                            queues=queue_cmds, external_ids=tag))
            txn.add(api.db_set("Port", port, ("qos", qos_cmd)))
        if qos is not None:
            txn.add(api.db_destroy("QoS", qos["_uuid"]))
            for uuid in {_uuid(u) for u in qos["queues"].values()}:
                txn.add(api.db_destroy("Queue", uuid))
    LOG.info("queues on %s: %s", port, "removed" if want is None else
             ", ".join(f"q{qid} {cfg}" for qid, cfg in sorted(want[1].items())))
    return True


# -- kernel datapath with tunnels: the NIC is not an OVS port ---------------------------------
#
# OVS's kernel datapath turns set_queue N into skb->priority 1:(N+1), which survives the
# kernel's VXLAN/GRE encapsulation; the encapsulated packet leaves by the underlay NIC,
# where an HTB qdisc with handle 1: classifies it by that priority into class 1:(N+1)
# (the same numbering OVS's linux-htb uses on its own ports).  So the agent puts the
# qdisc on the NIC with tc itself.

def tc_commands(dev: str, q: Queues) -> list[list[str]]:
    """The tc commands that make `dev`'s root qdisc what `q` says (OVS's numbering)."""
    _, queues = desired_rows(q)
    cmds = [["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1"],
            ["tc", "class", "replace", "dev", dev, "parent", "1:", "classid", "1:fffe", "htb",
             "rate", f"{q.max_kbps}kbit", "ceil", f"{q.max_kbps}kbit"]]
    for qid, cfg in sorted(queues.items()):
        ceil = int(cfg["max-rate"]) // 1000
        rate = int(cfg.get("min-rate", "0")) // 1000 or min(ceil, 8)
        cmds.append(["tc", "class", "replace", "dev", dev, "parent", "1:fffe",
                     "classid", f"1:{qid + 1:x}", "htb", "rate", f"{rate}kbit",
                     "ceil", f"{ceil}kbit"])
    return cmds


def _root_is_ours(dev: str) -> bool:
    import json
    import subprocess
    out = subprocess.run(["tc", "-j", "qdisc", "show", "dev", dev, "root"],
                         capture_output=True, text=True).stdout
    try:
        qd = json.loads(out or "[]")
    except ValueError:
        return False
    return any(d.get("kind") == "htb" and d.get("handle") == "1:" for d in qd)


def ensure_tc(dev: str, q: Queues | None, applied: Queues | None) -> bool:
    """HTB on a NIC that is not an OVS port; True if tc was run.  `applied` is what
    this agent set last (None at start): re-applied when it differs or the root qdisc
    is not ours any more (a reboot, someone's `tc qdisc del`)."""
    import subprocess
    if q is None:
        if applied is None:
            return False
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)
        LOG.info("queues on %s: removed (tc)", dev)
        return True
    if q == applied and _root_is_ours(dev):
        return False
    for cmd in tc_commands(dev, q):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            LOG.error("queues on %s: `%s` failed: %s", dev, " ".join(cmd), proc.stderr.strip())
            return False
    LOG.info("queues on %s (tc htb, not an OVS port): %s", dev,
             ", ".join(f"q{c.id} {c.min_kbps}-{c.max_kbps} kbit/s" for c in q.classes))
    return True
