"""Where a lab and its nodes are: names, state paths, and how to run a command on a node.

The bottom layer of weft_lab: every other module (building a lab, its controllers,
traffic, measurements) finds a lab from its name alone through these functions,
so they need none of each other.  Every namespace of lab L is ``L.<node>`` (``L.ctl``
holds the underlay and management bridges and the controller), and every file lives
in ``/run/weft-lab/L/``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from weft_lab.shell import netns_list, run

RUN_ROOT = Path(os.environ.get("WEFT_LAB_RUN", "/run/weft-lab"))
CTL = "ctl"
WAN = "wan"         # the router to the external nodes (weft_lab.topology.WAN)


class LabError(RuntimeError):
    """The lab could not be built or found; the message says what to do."""


def ns_name(lab: str, node: str) -> str:
    return f"{lab}.{node}"


def state_dir(lab: str) -> Path:
    return RUN_ROOT / lab


def host_dir(lab: str, host: str) -> Path:
    return state_dir(lab) / "hosts" / host


def pki_dir(lab: str) -> Path:
    """The lab's CA, and a key and certificate per host and for the controller."""
    return state_dir(lab) / "pki"


def ovs_env(lab: str, host: str) -> dict[str, str]:
    """Environment that points OVS tools at a lab host's private OVS."""
    d = str(host_dir(lab, host))
    return {"OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d}


def vsctl(lab: str, host: str, *args: str, timeout: float = 30) -> str:
    """Run ovs-vsctl against a lab host's private OVS."""
    return run(["ovs-vsctl", f"--timeout={int(timeout)}", *args],
               ns=ns_name(lab, host), env=ovs_env(lab, host), timeout=timeout + 5)


def lab_exists(lab: str) -> bool:
    return state_dir(lab).exists() or any(n.startswith(lab + ".") for n in netns_list())


def list_labs() -> list[str]:
    """Labs known by state dir or by namespaces (a crashed `up` may leave only the latter)."""
    names = {p.name for p in RUN_ROOT.iterdir()} if RUN_ROOT.exists() else set()
    for ns in netns_list():
        if ns.endswith("." + CTL):
            names.add(ns[: -len(CTL) - 1])
    return sorted(names)


def load_state(lab: str) -> dict:
    try:
        return json.loads((state_dir(lab) / "topology.json").read_text())
    except (OSError, ValueError):
        raise LabError(f"lab {lab!r} is not up (known labs: {', '.join(list_labs()) or 'none'})")


def resolve_lab(lab: str | None) -> str:
    """The lab a command means: the one named, or the only one that is up."""
    if lab:
        return lab
    labs = list_labs()
    if len(labs) != 1:
        raise LabError("name the lab with --lab (labs up: " + (", ".join(labs) or "none") + ")")
    return labs[0]


def exec_argv(lab: str, node: str, cmd: list[str]) -> list[str]:
    """The argv that runs `cmd` on a lab node (host, container, switch, external node,
    ctl or wan), or in a
    namespace a test added to the lab (e.g. `weft_lab.measure.plug_bare_port`)."""
    state = load_state(lab)
    outside = {e["name"] for e in state.get("external", [])}
    nodes = {CTL} | {h["name"] for h in state["hosts"]} | \
        {c["name"] for c in state["containers"]} | {s["name"] for s in state["switches"]} | \
        outside | ({WAN} if outside else set())
    if node not in nodes and Path(f"/run/netns/{ns_name(lab, node)}").exists():
        return ["ip", "netns", "exec", ns_name(lab, node), *cmd]
    if node not in nodes:
        raise LabError(f"no node {node!r} in lab {lab!r} (nodes: {', '.join(sorted(nodes))})")
    with_ovs = {h["name"] for h in state["hosts"]} | {s["name"] for s in state["switches"]}
    env = [f"{k}={v}" for k, v in ovs_env(lab, node).items()] if node in with_ovs else []
    return ["ip", "netns", "exec", ns_name(lab, node), "env", *env, *cmd]
