"""A namespace sandbox's network: out to the world through Lamina's NAT, to Lamina's own API
through the relay, and nowhere else — not the host, not another environment; with
`LAMINA_NETWORK=none`, nowhere at all but the Runtime API.

"The world" is a test host made here (`_testnet.py`), in a network namespace of its own behind
a veth pair, at a public-style address the host routes to it: the tests never send a packet off
this machine. What the egress policy closes is tests/system/test_egress.py's.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.conftest import Functions
from tests.system._harness import Neighbour, result
from tests.system._testnet import PUBLIC_NET, OutsideHost, free_address, outside_host

# CI runs the suite as root, and tests/conftest.py fails any CI run in which a test was
# skipped: this skip can only hide these tests on an unprivileged developer machine.
if os.geteuid() != 0:
    pytest.skip("namespace sandboxes need root", allow_module_level=True)

pytestmark = pytest.mark.system

NET = """
import json, os, socket, urllib.error, urllib.request

listener = None

def failure(e):
    return {"type": type(e).__name__, "errno": getattr(e, "errno", None)}

def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return {"status": r.status, "body": json.loads(r.read())}
    except urllib.error.URLError as e:
        return failure(e.reason)
    except OSError as e:
        return failure(e)

def connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return {"ok": True}
    except OSError as e:
        return failure(e)

def gateway():
    for line in open("/proc/net/route").readlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))

def handler(event, context):
    probe = event["probe"]
    if probe == "fetch":
        return fetch(event["url"])
    if probe == "api":
        # Unsigned: Lamina's authentication answers (signed calls from inside are
        # tests/integration/test_authorization.py's); any answer proves the path is open.
        try:
            with urllib.request.urlopen(
                os.environ["AWS_ENDPOINT_URL"] + "/2015-03-31/functions/", timeout=2
            ) as r:
                return {"status": r.status}
        except urllib.error.HTTPError as e:
            return {"status": e.code, "error": e.headers.get("x-amzn-ErrorType")}
        except urllib.error.URLError as e:
            return failure(e.reason)
        except OSError as e:
            return failure(e)
    if probe == "interfaces":
        return {"interfaces": sorted(name for _, name in socket.if_nameindex()),
                "gateway": gateway()}
    if probe == "connect":
        host = gateway() if event["host"] == "gateway" else event["host"]
        return {"host": host, **connect(host, event["port"])}
    if probe == "listen":
        # A listener kept for the life of the environment, and this environment's address.
        global listener
        if listener is None:
            listener = socket.socket()
            listener.bind(("0.0.0.0", event["port"]))
            listener.listen(8)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((event["via"], 9))
            address = s.getsockname()[0]
        return {"address": address, "self": connect(address, event["port"])}
    raise ValueError(probe)
"""


@dataclass
class World:
    """The outside as the tests see it: a test host with a public-style address routed to
    it (the internet, which the egress policy leaves open)."""

    host: OutsideHost
    #: the routed public-style address (TEST-NET-3)
    address: str

    @property
    def url(self) -> str:
        return self.host.url(self.address)

    @property
    def host_address(self) -> str:
        """The host's end of the test host's veth: the NAT's address, as the outside sees it."""
        return self.host.host_address

    def run(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.host.run(code, *args)


@pytest.fixture(scope="module")
def test_host() -> Iterator[World]:
    address = free_address(PUBLIC_NET)
    with outside_host(routed=[address]) as host:
        yield World(host, address)


@pytest.fixture(scope="module")
def net_fn(ns_functions: Functions) -> str:
    return str(ns_functions.create(NET, Timeout=10)["FunctionName"])


@pytest.fixture(scope="module")
def offline_fn(ns_functions: Functions) -> str:
    env = {"Variables": {"LAMINA_NETWORK": "none"}}
    return str(ns_functions.create(NET, Timeout=10, Environment=env)["FunctionName"])


def test_egress_reaches_the_outside_through_nat(
    ns_lam: Any, net_fn: str, test_host: World, neighbour: Neighbour
) -> None:
    out = result(ns_lam, net_fn, {"probe": "fetch", "url": test_host.url})
    assert out.get("status") == 200, out
    # Masqueraded: the outside sees the host's address, not the sandbox's.
    assert out["body"] == {
        "client": test_host.host_address,
        "server": test_host.address,
        "path": "/lamina-test",
    }
    neighbour.assert_all_well()


def test_no_network_reaches_nothing(
    ns_lam: Any, net_fn: str, offline_fn: str, test_host: World, neighbour: Neighbour
) -> None:
    out = result(ns_lam, offline_fn, {"probe": "fetch", "url": test_host.url})
    assert out == {"type": "OSError", "errno": errno.ENETUNREACH}, out  # no route at all
    offline = result(ns_lam, offline_fn, {"probe": "interfaces"})
    assert offline == {"interfaces": ["lo"], "gateway": None}, offline
    online = result(ns_lam, net_fn, {"probe": "interfaces"})
    assert online["interfaces"] == ["eth0", "lo"] and online["gateway"], online
    neighbour.assert_all_well()


def test_lamina_api_reachable_from_inside(
    ns_lam: Any, net_fn: str, offline_fn: str, neighbour: Neighbour
) -> None:
    out = result(ns_lam, net_fn, {"probe": "api"})
    assert out == {"status": 403, "error": "MissingAuthenticationTokenException"}, out
    offline = result(ns_lam, offline_fn, {"probe": "api"})
    assert "status" not in offline and offline.get("type"), offline
    neighbour.assert_all_well()


def test_environments_cannot_reach_each_other(
    ns_lam: Any, ns_functions: Functions, net_fn: str, test_host: World, neighbour: Neighbour
) -> None:
    port = 7000
    a = result(ns_lam, net_fn, {"probe": "listen", "port": port, "via": test_host.address})
    assert ipaddress.ip_address(a["address"]) in ipaddress.ip_network("10.213.0.0/16"), a
    assert a["self"] == {"ok": True}, a  # A's listener is up, on that address
    other = str(ns_functions.create(NET, Timeout=10)["FunctionName"])
    b = result(ns_lam, other, {"probe": "connect", "host": a["address"], "port": port})
    assert b.get("type") in ("TimeoutError", "ConnectionRefusedError"), b
    # B itself is online (so the failure is the firewall's, not a missing network).
    assert result(ns_lam, other, {"probe": "fetch", "url": test_host.url}).get("status") == 200
    neighbour.assert_all_well()


def _link_local_of_host_end(gateway: str) -> str:
    """The IPv6 link-local address of the host's end of the veth whose IPv4 is `gateway`."""
    links = json.loads(
        subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    )
    [link] = [k for k in links if any(a.get("local") == gateway for a in k["addr_info"])]
    assert link["ifname"].startswith("lmv"), link
    [address] = [
        a["local"]
        for a in link["addr_info"]
        if a["family"] == "inet6" and a["local"].startswith("fe80:")
    ]
    return str(address)


@pytest.mark.parametrize("host", ["test-veth", "gateway", "ipv6-link-local"])
def test_host_addresses_out_of_reach(
    ns_lam: Any, net_fn: str, test_host: World, neighbour: Neighbour, host: str
) -> None:
    # One listener on every address of the host, IPv4 and IPv6.
    with socket.socket(socket.AF_INET6) as listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        if host == "test-veth":
            target = test_host.host_address
        elif host == "gateway":
            target = "gateway"
        else:
            gateway = result(ns_lam, net_fn, {"probe": "interfaces"})["gateway"]
            target = _link_local_of_host_end(gateway) + "%eth0"
        event = {"probe": "connect", "host": target, "port": port}
        out = result(ns_lam, net_fn, event)
        # (a new eth0's own link-local address stays tentative for a second or two)
        deadline = time.monotonic() + 5
        while out.get("errno") == errno.EADDRNOTAVAIL and time.monotonic() < deadline:
            time.sleep(0.2)
            out = result(ns_lam, net_fn, event)
        assert out.get("type") == "TimeoutError", out  # dropped by Lamina's firewall
        with pytest.raises(BlockingIOError):
            listener.accept()
        # The same listener, at the test veth's address, is open to the test host: what
        # stopped the function was Lamina's firewall.
        code = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
        control = test_host.run(code, test_host.host_address, str(port))
        assert control.returncode == 0, control.stderr
        listener.setblocking(True)
        listener.settimeout(5)
        conn, _ = listener.accept()
        conn.close()
    neighbour.assert_all_well()


def _published_snapstart(lam: Any, functions: Functions, **kwargs: Any) -> str:
    name = str(
        functions.create(
            NET,
            runtime="python3.12",
            Timeout=10,
            SnapStart={"ApplyOn": "PublishedVersions"},
            **kwargs,
        )["FunctionName"]
    )
    lam.publish_version(FunctionName=name)
    deadline = time.monotonic() + 60
    while (state := lam.get_function(FunctionName=name, Qualifier="1")["Configuration"])[
        "State"
    ] == "Pending":
        assert time.monotonic() < deadline, "the SnapStart version stayed Pending"
        time.sleep(0.1)
    assert state["State"] == "Active", state
    return name


def test_a_snapstart_copy_has_the_network_of_any_environment(
    ns_lam: Any, ns_functions: Functions, test_host: World, neighbour: Neighbour
) -> None:
    # A restored environment's network namespace is made by the copy itself; Lamina sets it
    # up from outside as a pooled one's: the same egress, relay and isolation.
    online = _published_snapstart(ns_lam, ns_functions)
    offline = _published_snapstart(
        ns_lam, ns_functions, Environment={"Variables": {"LAMINA_NETWORK": "none"}}
    )
    out = result(ns_lam, online, {"probe": "fetch", "url": test_host.url}, Qualifier="1")
    assert out.get("status") == 200, out
    assert out["body"]["client"] == test_host.host_address  # masqueraded
    seen = result(ns_lam, online, {"probe": "interfaces"}, Qualifier="1")
    assert seen["interfaces"] == ["eth0", "lo"] and seen["gateway"], seen
    api = result(ns_lam, online, {"probe": "api"}, Qualifier="1")
    assert api == {"status": 403, "error": "MissingAuthenticationTokenException"}, api
    out = result(ns_lam, offline, {"probe": "fetch", "url": test_host.url}, Qualifier="1")
    assert out == {"type": "OSError", "errno": errno.ENETUNREACH}, out
    seen = result(ns_lam, offline, {"probe": "interfaces"}, Qualifier="1")
    assert seen == {"interfaces": ["lo"], "gateway": None}, seen
    neighbour.assert_all_well()
