"""The live picture (/ui) in Debian's real headless Chromium against a real lab.

topologies/docker-plugin.yaml (two hosts with dockerd and the weft plugin, tenants red,
blue and bare, `docker run --network` containers): Chromium runs in the lab's controller
namespace, where the API listens on the lab's management address, opens
``/ui#token=...`` and the page polls /v1/topology.  What is asserted is read from the
rendered DOM.  A screenshot lands in the artifacts directory ($WEFT_ARTIFACTS, default
./artifacts): ui-topology.png.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import converged_lab, lab_name
from weft_lab import browser as B
from weft_lab import cluster as C
from weft_lab import docker as D
from weft_lab import nodes as N
from weft_lab.shell import run
from weft_lab.topology import load
from weft_lab.traffic import ping

ROOT = Path(__file__).resolve().parents[2]
HOSTS = {"host1", "host2"}
TENANTS = {"default", "red", "blue", "bare"}
# names and addresses of the lab that a page or answer without the token must not hold
# (not x1, d1 and the like: the page's own script has SVG attributes x1, y1...)
LAB_NAMES = re.compile(r"\b(host1|host2|red|blue|bare|red1|red2|blue1|blue2|"
                       r"10\.10\.0\.\d+|10\.50\.0\.\d+|192\.168\.50\.\d+|"
                       r"02:00:00:00:00:(02|82))\b")
PORT_ROWS = """JSON.stringify([...document.querySelectorAll('#ports tbody tr')].map(r => ({
  port: r.dataset.port, container: r.dataset.container, tenant: r.dataset.tenant,
  rx: Number(r.querySelector('[data-k=rx_packets]').textContent || -1),
  tx: Number(r.querySelector('[data-k=tx_packets]').textContent || -1)})))"""


@pytest.fixture(scope="module")
def lab():
    if not B.available():
        pytest.fail("the UI test needs Debian's chromium (run ./dev.sh setup)")
    with converged_lab(load(ROOT / "topologies" / "docker-plugin.yaml")
                       .with_name(lab_name("ui"))) as topo:
        yield topo


@pytest.fixture(scope="module")
def browser(lab):
    with B.chromium(ns=N.ns_name(lab.name, N.CTL)) as b:
        yield b


def base(lab) -> str:
    return f"http://{lab.controller_ips()[0]}:8080"


@pytest.fixture(scope="module")
def page(lab, browser):
    """One tab on the page with the token in the URL fragment, updated at least once."""
    started = time.monotonic()
    tab = browser.open(f"{base(lab)}/ui#token={C.api_token(lab.name)}")
    browser.wait(tab, "Number(document.body.dataset.updates || 0) >= 1", 30, "first update")
    print(f"/ui: first picture {time.monotonic() - started:.2f} s after opening the tab")
    browser.evaluate(tab, "window.sameDocument = true")     # gone if the page reloads
    return tab


def ports(browser, tab) -> list[dict]:
    return json.loads(browser.evaluate(tab, PORT_ROWS))


def test_the_page_shows_every_host_tunnel_and_tenant(lab, browser, page):
    hosts = browser.evaluate(page, "[...document.querySelectorAll('#hosts tbody tr')]"
                                   ".map(r => r.dataset.host)")
    assert set(hosts) == HOSTS
    tenants = browser.evaluate(page, "[...document.querySelectorAll('#tenants tbody tr')]"
                                     ".map(r => r.dataset.tenant)")
    assert set(tenants) == TENANTS
    # connected, in sync, and the tunnel up as both switches' port descs say
    text = browser.evaluate(page, "document.querySelector('#hosts').innerText")
    assert text.count("connected") - text.count("disconnected") == 2
    # flows: in sync (an agent's report may have just moved the state version on)
    browser.wait(page, "[...document.querySelectorAll('#hosts [data-k=sync]')]"
                       ".every(c => c.textContent === 'in sync')", 20, "both hosts in sync")
    tunnel = browser.wait(page, "document.querySelector('#tunnels tbody tr [data-k=state]')"
                                "?.textContent === 'up'", 20, "the tunnel up")
    assert tunnel
    rows = {p["container"]: p for p in ports(browser, page)}
    for name, tenant in (("red1", "red"), ("red2", "red"), ("blue1", "blue"),
                         ("blue2", "blue")):
        assert rows[name]["tenant"] == tenant, rows
    # the SVG drew every host
    svg = browser.evaluate(page, "document.getElementById('graph').textContent")
    assert all(h in svg for h in HOSTS)
    # the token left the address bar at once
    assert "token" not in browser.evaluate(page, "location.href")
    # what one poll costs: /v1/topology reads both switches' port desc and stats
    with C.api(lab.name) as api:
        took = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert api.get("/v1/topology").status_code == 200
            took.append(time.perf_counter() - t0)
    took.sort()
    print(f"/v1/topology on 2 hosts, 6 ports: p50 {took[10] * 1000:.1f} ms, "
          f"max {took[-1] * 1000:.1f} ms (20 requests, the page polling beside them)")


def test_a_new_container_appears_without_a_reload(lab, browser, page):
    host_dir = N.host_dir(lab.name, "host1")
    started = time.monotonic()
    D.run_container(host_dir, lab.name, "red3", N.ns_name(lab.name, "red3"), network="red")
    try:
        row = browser.wait(page, f"JSON.parse({PORT_ROWS}).find(p => p.container === 'red3')",
                           30, "red3 on the page")
        print(f"/ui: red3 shown {time.monotonic() - started:.2f} s after docker run started")
        assert row["tenant"] == "red" and row["port"].startswith("host1/")
        assert browser.evaluate(page, "window.sameDocument") is True
    finally:
        D.docker(host_dir, "rm", "-f", "red3")
        run(["ip", "netns", "del", N.ns_name(lab.name, "red3")], check=False)
    browser.wait(page, f"!JSON.parse({PORT_ROWS}).some(p => p.container === 'red3')", 30,
                 "red3 gone from the page")


def test_counters_move_when_traffic_flows(lab, browser, page, artifacts):
    before = {p["container"]: p for p in ports(browser, page)}["red1"]
    assert before["rx"] >= 0 and before["tx"] >= 0, before
    assert ping(lab.name, "red1", lab.addr("red2"), count=30, interval=0.01).received >= 25
    # red1 sent 30 echo requests: the switch received them from red1's port (rx)
    moved = browser.wait(page, f"JSON.parse({PORT_ROWS}).find(p => p.container === 'red1' "
                               f"&& p.rx >= {before['rx'] + 30} && p.tx >= {before['tx'] + 25})",
                         15, "red1's counters to move")
    assert moved and browser.evaluate(page, "window.sameDocument") is True
    shot = browser.screenshot(page, artifacts / "ui-topology.png")
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"/ui screenshot: {shot}")


def test_without_the_token_nothing_leaks(lab, browser):
    # a page opened without the token: the token prompt, and no name of the lab
    tab = browser.open(f"{base(lab)}/ui")
    browser.wait(tab, "document.getElementById('login')?.hidden === false", 10,
                 "the token prompt")
    html = browser.evaluate(tab, "document.documentElement.outerHTML")
    assert not LAB_NAMES.search(html), LAB_NAMES.search(html)
    # the page's own request without a token, and with a wrong one: 401, nothing in it
    for headers in ("{}", "{Authorization: 'Bearer wrong'}"):
        status, body = browser.evaluate(tab, f"fetch('/v1/topology', {{headers: {headers}}})"
                                             ".then(async r => [r.status, await r.text()])")
        assert status == 401 and not LAB_NAMES.search(body), body
    # a wrong token typed in: refused, still no data on the page
    browser.evaluate(tab, "document.getElementById('token').value = 'wrong';"
                          "document.getElementById('use').click()")
    browser.wait(tab, "document.getElementById('login-why').textContent.includes('refused')",
                 10, "the refusal")
    assert not LAB_NAMES.search(browser.evaluate(tab, "document.documentElement.outerHTML"))
    # and from outside the browser, the API's other address (its unix socket)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(C.api_socket(lab.name))),
                      base_url="http://weft", timeout=10) as anon:
        r = anon.get("/v1/topology")
        assert r.status_code == 401 and not LAB_NAMES.search(r.text)
        assert anon.get("/ui").status_code == 200
