"""The agent's names thread, its pure parts: dockerd's answers into records (inspecting a
container only when its networks change), the controller's answer into zones."""
from __future__ import annotations

from ovs_agent import dnswire, dockerd, names, nameservice
from ovs_agent.names import NameRecord

NETS = [{"Id": "n1", "Name": "red-web", "Driver": "weft", "Options": {"tenant": "red-web"}},
        {"Id": "n0", "Name": "bridge", "Driver": "bridge", "Options": {}}]


def listed(ip: str) -> list[dict]:
    return [{"Id": "c1", "NetworkSettings": {"Networks": {"red-web": {
                "NetworkID": "n1", "IPAddress": ip}}}},
            {"Id": "c0", "NetworkSettings": {"Networks": {"bridge": {
                "NetworkID": "n0", "IPAddress": "172.17.0.2"}}}}]


def test_collect_inspects_only_what_changed(monkeypatch):
    calls: list[str] = []
    state = {"ip": "10.10.1.5"}

    def get(_host: str, path: str):
        calls.append(path)
        if path == "/networks":
            return NETS
        if path == "/containers/json":
            return listed(state["ip"])
        if path == "/networks/bridge":
            return {"Options": {}, "Containers": {"c0": {
                "Name": "Plain", "IPv4Address": "172.17.1.2/16"}, "x": {"Name": "no name"}}}
        assert path == "/containers/c1/json", path       # never the bridge-only container
        return {"Id": "c1", "Name": "/web1", "NetworkSettings": {"Networks": {"red-web": {
            "NetworkID": "n1", "IPAddress": state["ip"], "Aliases": ["web"]}}}}
    monkeypatch.setattr(dockerd, "get", get)
    d = nameservice.DockerNames("unix:///x")
    first = d.collect()
    assert first == [NameRecord("default", "plain", "172.17.1.2", "c0", True),
                     NameRecord("red-web", "web", "10.10.1.5", "c1"),
                     NameRecord("red-web", "web1", "10.10.1.5", "c1", True)]
    assert d.collect() == first
    assert calls.count("/containers/c1/json") == 1
    state["ip"] = "10.10.1.9"
    assert {r.ip for r in d.collect() if r.network == "red-web"} == {"10.10.1.9"}
    assert calls.count("/containers/c1/json") == 2


def test_docker0_records_only_on_docker0():
    net = {"Options": {"com.docker.network.bridge.name": "docker0"},
           "Containers": {"c1": {"Name": "web", "IPv4Address": "172.17.1.2/16"}}}
    assert names.docker0_records(net) == [NameRecord("default", "web", "172.17.1.2", "c1",
                                                     True)]
    net["Options"] = {"com.docker.network.bridge.name": "cbr0"}
    assert names.docker0_records(net) == []
    assert names.docker0_records(None) == []


def test_zones_from_the_controller():
    zones = nameservice.parse_names({"tenants": [
        {"tenant": "red", "id": 1000, "subnets": ["10.10.1.0/24"],
         "records": [["web1", "10.10.1.5", True], ["web", "10.10.1.5", False]]},
        {"tenant": "bad", "id": "x", "records": []},
        {"tenant": "blue", "id": 2000, "subnets": ["10.10.1.0/24"], "records": []}]})
    assert set(zones) == {1000, 2000}
    q = dnswire.parse_query(dnswire.query("web1"))
    assert dnswire.parse_answer(names.answer(q, zones[1000], 0) or b"").a == ("10.10.1.5",)
    assert dnswire.parse_answer(names.answer(q, zones[2000], 0) or b"").rcode == \
        dnswire.RCODE_NXDOMAIN
    assert nameservice.parse_names(None) == {}
