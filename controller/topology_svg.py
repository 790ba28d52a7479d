"""The topology of `controller.topology.assemble` (``GET /v1/topology``) as a standalone
SVG for a report (``weftctl graph``): hosts in a row with their bound ports, tunnels as
arcs coloured by state, tenants and their networks as a legend.

Pure: JSON in, SVG text out, every name escaped.  No graphviz: a row of hosts with
arcs reads well up to a few dozen hosts and needs nothing installed.
"""
from __future__ import annotations

import hashlib
from typing import Any
from xml.sax.saxutils import escape

HOST_W, GAP, TOP, ROW = 230, 50, 150, 16
STATE_COLOUR = {"up": "#1e7b34", "down": "#b3261e"}
UNKNOWN_COLOUR = "#b59a2a"


def tenant_colour(name: str | None) -> str:
    """A stable colour per tenant (the page uses its own; both only tell tenants apart)."""
    if not name or name == "default":
        return "#7f8c8d"
    hue = int.from_bytes(hashlib.sha1(name.encode()).digest()[:2], "big") % 360
    return f"hsl({hue},60%,45%)"


def _text(x: float, y: float, text: Any, size: int = 12, anchor: str = "start",
          weight: str = "normal", fill: str = "#1d2329") -> str:
    return (f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(str(text))}</text>')


def _counters(c: dict[str, int] | None) -> str:
    return "" if not c else f" rx {c['rx_packets']} tx {c['tx_packets']} pkts"


def to_svg(topo: dict[str, Any], title: str = "weft topology") -> str:
    hosts = topo.get("hosts", [])
    ports_of: dict[str, list[dict[str, Any]]] = {h["name"]: [] for h in hosts}
    for p in topo.get("ports", []):
        ports_of.setdefault(p["host"], []).append(p)
    x_of = {h["name"]: 20 + i * (HOST_W + GAP) for i, h in enumerate(hosts)}
    tallest = max((len(ps) for ps in ports_of.values()), default=0)
    box_h = 50 + ROW * max(1, tallest)
    body: list[str] = []
    span = max(1, len(hosts) - 1)
    for t in topo.get("tunnels", []):
        a, b = (x_of[n] + HOST_W / 2 for n in t["hosts"])
        lift = 30 + 90 * abs(b - a) / ((HOST_W + GAP) * span)
        colour = STATE_COLOUR.get(t["state"], UNKNOWN_COLOUR)
        dash = "" if t["state"] == "up" else ' stroke-dasharray="6 4"'
        body.append(f'<path d="M {a:.0f} {TOP} Q {(a + b) / 2:.0f} {TOP - 2 * lift:.0f} '
                    f'{b:.0f} {TOP}" fill="none" stroke="{colour}" stroke-width="3"{dash}>'
                    f'<title>{escape(" - ".join(t["hosts"]))}: {escape(t["type"])} '
                    f'{escape(t["state"])}</title></path>')
        body.append(_text((a + b) / 2, TOP - lift - 4, f'{t["type"]} {t["state"]}', 11,
                          "middle", fill=colour))
    for h in hosts:
        x = x_of[h["name"]]
        ok = h["connected"] and h["in_sync"]
        stroke = "#1e7b34" if ok else "#b59a2a" if h["connected"] else "#b3261e"
        body.append(f'<rect x="{x}" y="{TOP}" width="{HOST_W}" height="{box_h}" rx="8" '
                    f'fill="#ffffff" stroke="{stroke}" stroke-width="2"/>')
        body.append(_text(x + 10, TOP + 20, h["name"], 14, weight="bold"))
        state = ("in sync" if h["in_sync"] else "syncing") if h["connected"] else "disconnected"
        body.append(_text(x + 10, TOP + 36, f'{h["address"]}  {state}', 11, fill="#51606e"))
        for i, p in enumerate(ports_of.get(h["name"], [])):
            y = TOP + 56 + i * ROW
            body.append(f'<rect x="{x + 10}" y="{y - 9}" width="10" height="10" rx="2" '
                        f'fill="{tenant_colour(p.get("tenant"))}"/>')
            label = f'{p.get("container") or p["port"]} {p.get("network") or ""}' \
                    f'{_counters(p.get("counters"))}'
            body.append(_text(x + 26, y, label, 11))
    y = TOP + box_h + 34
    body.append(_text(20, y, "tenants and networks", 13, weight="bold"))
    for t in topo.get("tenants", []):
        for n in t.get("networks", []):
            y += 18
            body.append(f'<rect x="20" y="{y - 10}" width="10" height="10" rx="2" '
                        f'fill="{tenant_colour(t["name"])}"/>')
            extra = " ".join(f"{k} {n[k]}" for k in ("subnet", "gateway", "vlan")
                             if n.get(k) is not None)
            body.append(_text(36, y, f'{t["name"]} / {n["name"]}  vni {n["vni"]}  {extra}', 12))
    width = max(600, 40 + len(hosts) * (HOST_W + GAP))
    height = y + 20
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif">\n'
            f"<title>{escape(title)}</title>\n"
            f'<rect width="100%" height="100%" fill="#f6f7f9"/>\n'
            + _text(20, 28, title, 16, weight="bold") + "\n"
            + _text(20, 46, f'state version {topo.get("state_version")}; '
                            f'{len(hosts)} hosts, {len(topo.get("tenants", []))} tenants, '
                            f'{len(topo.get("ports", []))} ports', 11, fill="#51606e") + "\n"
            + "\n".join(body) + "\n</svg>\n")

