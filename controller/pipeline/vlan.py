"""VLAN trunks (802.1Q): tags exist only on trunk ports.

A tenant's frames are untagged inside the pipeline and in the tunnels (the VNI
says whose they are)::

    access port          in_port=P,vlan_vid=0 (untagged only)        -> tenant
    trunk, native tenant in_port=P,vlan_vid=0                        -> tenant
    trunk, tagged tenant in_port=P,vlan_vid=0x1000|T.vlan, pop_vlan  -> T
    anything else on a local port (other VLANs, tags on access ports): table-miss drop

Out to a trunk for a tagged tenant T (flood buckets, learned flows):
``push_vlan:0x8100, set_field:0x1000|T.vlan->vlan_vid, output:P``
(``controller.pipeline.base.to_port``); out to an access port or for the native
tenant: plain output.  So a VLAN on one host's trunk is the VNI in the tunnels
and the same VLAN on every other host's trunks.

POLICY drops whatever is still tagged after CLASSIFY (double-tagged frames
on trunks, whose outer tag was popped; tagged frames out of a tunnel).  OVS
parses only ``other_config:vlan-limit`` tags (default 1): beyond it, the inner
tag shows as ``eth_type`` 0x8100/0x88a8 and, after the pop, the frame looks
untagged, so POLICY drops on those Ethertypes too.  Trunk-only flows and the
POLICY drops carry COOKIE_VLAN; a native tenant's CLASSIFY flow is exactly an
access port's (``controller.pipeline.classify``), so turning an access port
into a trunk with that native tenant changes nothing for it.
"""
from __future__ import annotations

from controller.flows import COOKIE_VLAN, Flow, flow
from controller.pipeline.base import (
    ETH_TYPE_QINQ, ETH_TYPE_VLAN, OFPVID_PRESENT, Feature, Part, SwitchContext, metered,
)
from controller.pipeline.classify import enter_tenant
from controller.pipeline.l2 import learn_local
from controller.pipeline.tables import (
    CLASSIFY, POLICY, PRIO_CLASSIFY, PRIO_DROP_INNER_TAG, PRIO_DROP_TAGGED,
)

__all__ = ["FEATURE"]


def _drop_tagged() -> list[Flow]:
    """POLICY: no frame still carrying a tag goes on (double tags, tags out of tunnels)."""
    return [
        flow(POLICY, PRIO_DROP_TAGGED, {"vlan_vid": (OFPVID_PRESENT, OFPVID_PRESENT)}, (),
             COOKIE_VLAN),
        flow(POLICY, PRIO_DROP_INNER_TAG, {"eth_type": ETH_TYPE_VLAN}, (), COOKIE_VLAN),
        flow(POLICY, PRIO_DROP_INNER_TAG, {"eth_type": ETH_TYPE_QINQ}, (), COOKIE_VLAN),
    ]


def _classify_tagged(ofport: int, ids: tuple[int, int], vlan: int, meter: int | None = None,
                     uplink: bool = False) -> Flow:
    """A trunk's tagged tenant: its VLAN, popped; the learned flow pushes it back."""
    vni, domain = ids
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "vlan_vid": OFPVID_PRESENT | vlan},
                [*metered(meter), ("apply", (("pop_vlan",), *learn_local(vni, ofport, vlan))),
                 *enter_tenant(vni, from_tunnel=False, uplink=uplink, domain=domain)],
                COOKIE_VLAN)


def _contribute(sw: SwitchContext) -> Part:
    return Part(flows=[*_drop_tagged(), *(
        _classify_tagged(m.ofport, sw.ids(m.tenant), m.vlan, sw.port_meter.get(m.port),
                         m.uplink)
        for m in sw.members if m.vlan is not None)])


FEATURE = Feature("vlan", _contribute)
