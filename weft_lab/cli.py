"""`weft-lab`: up, down, status and exec for a lab cluster on one machine."""
from __future__ import annotations

import argparse
import json
import os
import sys

from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.shell import CommandError
from weft_lab.topology import TopologyError, load


def _print_status(st: dict) -> None:
    print(f"lab {st['lab']}  (controller namespace {st['ctl']['netns']})")
    for p in st["ctl"]["processes"]:
        print(f"  ctl process {p}")
    for h in st["hosts"]:
        print(f"host {h['name']:<12} netns {h['netns']:<20} underlay {h['underlay_ip']:<15} "
              f"mgmt {h['mgmt_ip']:<15} docker0 {h['docker_ip']}  {'up' if h['up'] else 'DOWN'}")
        for br, ports in h["bridges"].items():
            print(f"    bridge {br}: {', '.join(ports) or '-'}")
        for p in h["processes"]:
            print(f"    process {p}")
    for c in st["containers"]:
        extra = f"tenant {c['tenant']}" if c["tenant"] else "default tenant (docker0)"
        print(f"container {c['name']:<9} on {c['host']:<12} {c['attach']:<8} {c['ip']:<18} "
              f"{extra}  {'up' if c['up'] else 'DOWN'}")
    for s in st["switches"]:
        vl = ", ".join(f"{v['vlan'] or 'untagged'}={v['ip']}" for v in s["vlans"])
        print(f"switch {s['name']} on {s['host']} port {s['port']}: {vl}")
    if "wan" in st:
        print(f"router {st['wan']['netns']:<20} underlay {st['wan']['underlay_ip']:<15} "
              f"{'up' if st['wan']['up'] else 'DOWN'}")
    for e in st["external"]:
        print(f"external {e['name']:<10} netns {e['netns']:<20} {e['ip']:<18} "
              f"serves {', '.join(e['serve'])}  {'up' if e['up'] else 'DOWN'}")
        for p in e["processes"]:
            print(f"    process {p}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="weft-lab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="build a lab from a topology file")
    p_up.add_argument("topology")
    p_up.add_argument("--lab", help="lab name (default: the topology's name)")
    p_down = sub.add_parser("down", help="remove a lab and everything it made")
    p_down.add_argument("topology", nargs="?")
    p_down.add_argument("--lab")
    p_down.add_argument("--all", action="store_true", help="every lab on this machine")
    p_st = sub.add_parser("status", help="hosts, containers, bridges and processes")
    p_st.add_argument("--lab")
    p_st.add_argument("--json", action="store_true")
    p_ex = sub.add_parser("exec", help="run a command on a node: weft-lab exec NODE -- CMD")
    p_ex.add_argument("--lab")
    p_ex.add_argument("node")
    p_ex.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("list", help="labs that are up")
    sub.add_parser("bench", help="benchmarks (weft-lab bench --help)", add_help=False)
    sub.add_parser("vm", help="the VM lab: kernel datapath in QEMU guests (weft-lab vm --help); "
                   "weft vs plain kernel OVS vs flannel-style VXLAN (weft-lab vm bench --help)",
                   add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["vm", "bench"]:
        from weft_lab.vmbench import main as vmbench_main
        return vmbench_main(argv[2:])
    if argv[:1] == ["vm"]:
        from weft_lab.vm import main as vm_main
        return vm_main(argv[1:])
    if argv[:1] == ["bench"]:
        from weft_lab.bench import main as bench_main
        return bench_main(argv[1:])
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            topo = load(args.topology)
            if args.lab:
                topo = topo.with_name(args.lab)
            secs = L.up(topo, log=print)
            print(f"lab {topo.name} up in {secs:.1f}s: {len(topo.hosts)} hosts, "
                  f"{len(topo.containers)} containers, {len(topo.switches)} switches")
        elif args.cmd == "down":
            if args.all:
                labs = N.list_labs()
            elif args.lab or not args.topology:
                labs = [N.resolve_lab(args.lab)]
            else:
                labs = [load(args.topology).name]
            for name in labs:
                print(f"lab {name} down in {L.down(name):.1f}s")
        elif args.cmd == "status":
            st = L.status(N.resolve_lab(args.lab))
            print(json.dumps(st, indent=1)) if args.json else _print_status(st)
        elif args.cmd == "list":
            print("\n".join(N.list_labs()))
        elif args.cmd == "exec":
            cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not cmd:
                ap.error("exec needs a command after --")
            full = N.exec_argv(N.resolve_lab(args.lab), args.node, cmd)
            os.execvp(full[0], full)
    except TopologyError as exc:
        print(f"weft-lab: {exc}", file=sys.stderr)
        return 2
    except (N.LabError, CommandError) as exc:
        print(f"weft-lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
