"""The agent's controller rows: a long inactivity probe and a short reconnect backoff, set
on rows it creates and corrected on rows that differ (pure desired-vs-actual diff)."""
from __future__ import annotations

from cluster.hostsfile import load
from ovs_agent.desired import (
    CONTROLLER_MAX_BACKOFF_MS, CONTROLLER_PROBE_MS, ActualBridge, desired, diff)

HOSTS = """
controller: {openflow: ["tcp:10.99.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
"""


def _have(want, probes, backoffs) -> dict[str, ActualBridge]:
    return {br.name: ActualBridge(br.name, br.columns(), tuple(sorted(br.controllers)), br.ports,
                                  frozenset(p.name for p in br.ports),
                                  probes if br.controllers else (),
                                  backoffs if br.controllers else ())
            for br in want}


def test_controller_rows_get_the_probe_and_the_backoff(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(HOSTS)
    want = desired(load(path), "h1", None)
    assert any(br.controllers for br in want)
    in_place = _have(want, (CONTROLLER_PROBE_MS,), (CONTROLLER_MAX_BACKOFF_MS,))
    assert diff(want, in_place) == []
    for probes, backoffs in (((CONTROLLER_PROBE_MS,), (None,)),     # rows of an older agent
                             ((CONTROLLER_PROBE_MS,), (8000,)),
                             ((None,), (CONTROLLER_MAX_BACKOFF_MS,))):
        ops = diff(want, _have(want, probes, backoffs))
        assert [op for op in ops if op[0] == "set_probe"] == [
            ("set_probe", br.name, CONTROLLER_PROBE_MS, CONTROLLER_MAX_BACKOFF_MS)
            for br in want if br.controllers]
