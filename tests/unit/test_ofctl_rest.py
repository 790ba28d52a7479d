"""Ryu ofctl_rest paths on weft, without switches: status codes, flow entries as
operator flows (stored, validated, deleted strictly and non-strictly, cleared), and the
stats plumbing with a datapath stand-in answering like a switch."""
from __future__ import annotations

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from controller.rest.app import create_app
from controller.core import Core
from cluster.hostsfile import parse
from tests.unit.test_api import HOSTS, TOKEN
from tests.conftest import api_client


@pytest.fixture
def env(make_store):
    core = Core(make_store(), parse(HOSTS))
    client = api_client(core, TOKEN)
    sw = core.switch_by_name("h1")
    core.publish({**core.switches, sw.dpid: replace(sw, ports={"p1": 1, "free": 5})})
    core.store.create_tenant("red")
    core.store.bind("h1", "p1", "red")
    return client, core, sw.dpid


def test_token_and_status_codes_like_ryu(env):
    api, core, dpid = env
    assert TestClient(create_app(core, TOKEN)).get("/stats/switches").status_code == 401
    assert api.get("/stats/switches").json() == []             # none connected
    assert api.get(f"/stats/flow/{dpid}").status_code == 404
    assert api.get("/stats/flow/notanumber").status_code == 400
    assert api.get(f"/stats/desc/{dpid}").status_code == 404
    assert api.post("/stats/flowentry/add", content=b"{not json").status_code == 400
    assert api.post("/stats/flowentry/add", json={"dpid": 12345}).status_code == 404
    assert api.post("/stats/flowentry/bogus", json={"dpid": dpid}).status_code == 404


def test_flowentry_commands_are_operator_flows(env):
    api, core, dpid = env
    entry = {"dpid": dpid, "table_id": 100, "priority": 11111, "match": {"in_port": 5},
             "actions": [{"type": "OUTPUT", "port": 5}]}
    assert api.post("/stats/flowentry/add", json=entry).status_code == 200
    assert api.post("/stats/flowentry/add", json={**entry, "priority": 2}).status_code == 200
    # Ryu's example in table 0, output to a tenant's port: weft's 422 naming the field
    bad = api.post("/stats/flowentry/add", json={**entry, "table_id": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "table_id"
    bad = api.post("/stats/flowentry/add",
                   json={**entry, "actions": [{"type": "OUTPUT", "port": 1}]})
    assert bad.status_code == 422 and bad.json()["field"] == "actions[0].port"
    assert api.post("/stats/flowentry/add",
                    json={**entry, "table_id": 0, "override": True}).status_code == 200
    assert len(core.store.operator_flows(dpid)) == 3
    # modify_strict replaces the one entry's actions (a new stored flow, a new cookie)
    mod = {**entry, "actions": [{"type": "OUTPUT", "port": 6}]}
    assert api.post("/stats/flowentry/modify_strict", json=mod).status_code == 200
    flows = {f.priority: f for f in core.store.operator_flows(dpid)}
    assert flows[11111].actions == ({"type": "OUTPUT", "port": 6},)
    assert flows[2].actions == ({"type": "OUTPUT", "port": 5},)
    # delete_strict: exactly that one; delete (non-strict) by match: every covering one
    assert api.post("/stats/flowentry/delete_strict",
                    json={"dpid": dpid, "table_id": 100, "priority": 2,
                          "match": {"in_port": 5}}).status_code == 200
    assert sorted(f.priority for f in core.store.operator_flows(dpid)) == [11111, 11111]
    assert api.post("/stats/flowentry/delete",
                    json={"dpid": dpid, "table_id": 100, "match": {"in_port": 5}}).status_code == 200
    assert [f.table_id for f in core.store.operator_flows(dpid)] == [0]
    assert api.delete(f"/stats/flowentry/clear/{dpid}").status_code == 200
    assert core.store.operator_flows(dpid) == []


class _AnsweringDatapath:
    """A stand-in switch: answers a desc or flow-stats request at once, in two parts for
    flows (REPLY_MORE), through its ``waiters`` as the app's queries do."""

    ofproto, ofproto_parser = ofp, ofpp

    def __init__(self, dpid: int) -> None:
        self.id, self.xid = dpid, 0
        self.waiters: dict = {}

    def set_xid(self, msg) -> None:
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg) -> None:
        lock, msgs = self.waiters[self.id][msg.xid]
        if isinstance(msg, ofpp.OFPDescStatsRequest):
            body = ofpp.OFPDescStats("weft", "ovs", "3.1", "0", "br0")
            msgs.append(type("R", (), {"body": body, "flags": 0})())
        else:
            stat = ofpp.OFPFlowStats(table_id=0, duration_sec=1, duration_nsec=0, priority=7,
                                     idle_timeout=0, hard_timeout=0, flags=0, cookie=5,
                                     packet_count=3, byte_count=300, match=ofpp.OFPMatch(in_port=1),
                                     instructions=[ofpp.OFPInstructionActions(
                                         ofp.OFPIT_APPLY_ACTIONS, [ofpp.OFPActionOutput(2)])])
            msgs.append(type("R", (), {"body": [stat], "flags": ofp.OFPMPF_REPLY_MORE})())
            msgs.append(type("R", (), {"body": [stat], "flags": 0})())
        lock.set()


def test_stats_shapes_come_from_os_kens_ofctl(env):
    api, core, dpid = env
    core.publish({**core.switches, dpid: replace(core.switches[dpid], connected=True)})
    core.openflow.ofctl_datapath = _AnsweringDatapath
    assert api.get("/stats/switches").json() == [dpid]
    desc = api.get(f"/stats/desc/{dpid}").json()
    assert desc == {str(dpid): {"mfr_desc": "weft", "hw_desc": "ovs", "sw_desc": "3.1",
                                "serial_num": "0", "dp_desc": "br0"}}
    flows = api.post(f"/stats/flow/{dpid}", json={"table_id": 0}).json()[str(dpid)]
    assert len(flows) == 2
    assert flows[0]["actions"] == ["OUTPUT:2"] and flows[0]["match"] == {"in_port": 1}
    assert flows[0]["packet_count"] == 3 and flows[0]["priority"] == 7


def test_every_weft_flow_prints_through_ofctl():
    """os-ken's ofctl raises on learn(limit=...) (no raw data kept); ofctl_printable fixes
    that, so GET /stats/flow answers 200 on a switch running weft's pipeline."""
    from os_ken.lib import ofctl_v1_3

    from controller.ofmsg import ofctl_printable
    from controller.pipeline import desired_state
    from tests.unit.test_acl_pipeline import PORTS, TUNNELS, WEB, topo
    from tests.unit.test_ofmsg import stats_echo
    state = desired_state("h1", topo(WEB), PORTS["h1"], TUNNELS["h1"])
    msg = type("Reply", (), {"body": [stats_echo(f) for f in state.flows]})()
    with pytest.raises(AttributeError):
        for st in msg.body:
            ofctl_v1_3.actions_to_str(st.instructions)
    ofctl_printable(msg)
    printed = [ofctl_v1_3.actions_to_str(st.instructions) for st in msg.body]
    assert any(a.startswith("NX_UNKNOWN") for acts in printed for a in acts)   # learn2
    assert any(a.startswith("NX_CT") for acts in printed for a in acts)
