"""The egress policy of the namespace backend, against test hosts made here: metadata and
link-local never reachable, private networks and the host's own networks closed unless the
operator opens them (`--allow-egress`) or the function is in a VPC that holds them
(`--vpc` + VpcConfig), the internet open; each server's policy for its own environments only.

Every address a function tries is one a test host here has, routed by the host into that
test host's namespace (`_testnet.py`), 169.254.169.254 included: nothing leaves this machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Functions, Server
from tests.system._harness import functions_on, result, running_server
from tests.system._testnet import (
    PUBLIC_NET,
    OutsideHost,
    free_address,
    free_subnet,
    outside_host,
)

# CI runs the suite as root, and tests/conftest.py fails any CI run in which a test was
# skipped: this skip can only hide these tests on an unprivileged developer machine.
if os.geteuid() != 0:
    pytest.skip("namespace sandboxes need root", allow_module_level=True)

pytestmark = pytest.mark.system

METADATA = "169.254.169.254"
#: the private test hosts' addresses, apart from test_network.py's transit 10.214.0.0/16
PRIVATE_NET = ipaddress.IPv4Network("10.215.0.0/16")
#: TEST-NET-2: the public-style network directly connected to the host
LAN_NET = ipaddress.IPv4Network("198.51.100.0/24")
VPC_ID, SUBNET_ID = "vpc-egresstest", "subnet-egresstest"

PROBE = """
import json, urllib.error, urllib.request

def handler(event, context):
    try:
        with urllib.request.urlopen(event["url"], timeout=2) as r:
            return {"status": r.status, "body": json.loads(r.read())}
    except urllib.error.URLError as e:
        return {"type": type(e.reason).__name__}
    except OSError as e:
        return {"type": type(e).__name__}
"""


# Answers every A query with the second address given (UDP, port 53 of the first: bound to
# it, so that replies come from the address the query went to).
DNS_SERVER = """
import socket, struct, sys
answer = socket.inet_aton(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 53))
while True:
    query, peer = sock.recvfrom(512)
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12:end + 5]
    qtype = struct.unpack(">H", query[end + 1:end + 3])[0]
    records = struct.pack(">HHHLH", 0xC00C, 1, 1, 60, 4) + answer if qtype == 1 else b""
    header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1 if records else 0, 0, 0)
    sock.sendto(header + question + records, peer)
"""

DNS_PROBE = """
import socket

def handler(event, context):
    resolv = open("/etc/resolv.conf").read()
    if event["resolver"] not in resolv:
        return {"resolv": resolv}  # not the test's resolver: ask nothing
    try:
        infos = socket.getaddrinfo(event["name"], 8080, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        return {"resolv": resolv, "error": str(e)}
    return {"resolv": resolv, "addresses": sorted({i[4][0] for i in infos})}
"""


@dataclass
class Hosts:
    world: OutsideHost
    public: str
    #: opened by --allow-egress
    allowed: str
    #: in the VPC's subnet
    in_vpc: str
    vpc_subnet: str
    #: private, opened by nothing
    closed: str
    #: private, where a DNS server runs (the host's resolver, for the DNS test's server)
    resolver: str
    #: a test host directly on a network of the host's (made before the servers start)
    lan: OutsideHost

    @staticmethod
    def url(address: str) -> str:
        return f"http://{address}:8080/lamina-test"


def _private_addresses() -> tuple[list[str], list[str]]:
    """Four addresses in four different /24s of PRIVATE_NET, and those /24s."""
    subnets = random.sample(list(PRIVATE_NET.subnets(new_prefix=24)), 4)
    addresses = [free_address(ipaddress.IPv4Network(f"{s.network_address}/29")) for s in subnets]
    return addresses, [str(s) for s in subnets]


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    public = free_address(PUBLIC_NET)
    (allowed, in_vpc, closed, resolver), (_, vpc_subnet, _, _) = _private_addresses()
    routed = [public, METADATA, allowed, in_vpc, closed, resolver]
    with (
        outside_host(routed=routed) as world,
        outside_host(transit=free_subnet(LAN_NET)) as lan,
    ):
        yield Hosts(world, public, allowed, in_vpc, vpc_subnet, closed, resolver, lan)


@pytest.fixture(scope="module")
def server(hosts: Hosts) -> Iterator[Server]:
    args = (
        "--allow-egress",
        f"{hosts.allowed}/32",
        "--vpc",
        f"{VPC_ID}={SUBNET_ID}:{hosts.vpc_subnet}",
    )
    with running_server("namespace", args) as server:
        yield server


@pytest.fixture(scope="module")
def lam(server: Server) -> Any:
    return server.client()


@pytest.fixture(scope="module")
def fns(server: Server) -> Iterator[Functions]:
    with functions_on(server) as functions:
        yield functions


@pytest.fixture(scope="module")
def plain(fns: Functions) -> str:
    return str(fns.create(PROBE, Timeout=10)["FunctionName"])


@pytest.fixture(scope="module")
def in_vpc(fns: Functions) -> str:
    vpc = {"SubnetIds": [SUBNET_ID], "SecurityGroupIds": ["sg-egresstest"]}
    created = fns.create(PROBE, Timeout=10, VpcConfig=vpc)
    assert created["VpcConfig"]["VpcId"] == VPC_ID
    return str(created["FunctionName"])


def fetch(lam: Any, fn: str, address: str) -> Any:
    return result(lam, fn, {"url": Hosts.url(address)})


def reached(out: Any, address: str) -> bool:
    if out.get("status") == 200 and out["body"]["server"] == address:
        return True
    # Dropped by the firewall: no answer at all (a refusal would mean something answered).
    assert out == {"type": "TimeoutError"}, out
    return False


def from_host(address: str) -> dict[str, Any]:
    """The test host answers this address (from the host itself: the control)."""
    with urllib.request.urlopen(Hosts.url(address), timeout=5) as r:
        body: dict[str, Any] = json.loads(r.read())
    assert body["server"] == address, body
    return body


def test_metadata_is_never_reachable(lam: Any, plain: str, in_vpc: str, hosts: Hosts) -> None:
    from_host(METADATA)  # a test host answers there: what stops the functions is Lamina
    assert not reached(fetch(lam, plain, METADATA), METADATA)
    assert not reached(fetch(lam, in_vpc, METADATA), METADATA)


def test_public_addresses_stay_reachable(lam: Any, plain: str, in_vpc: str, hosts: Hosts) -> None:
    for fn in (plain, in_vpc):
        out = fetch(lam, fn, hosts.public)
        assert reached(out, hosts.public)
        assert out["body"]["client"] == hosts.world.host_address  # through the NAT


def test_private_networks_are_closed_by_default(
    lam: Any, plain: str, in_vpc: str, hosts: Hosts
) -> None:
    from_host(hosts.closed)
    assert not reached(fetch(lam, plain, hosts.closed), hosts.closed)
    # A VPC opens its own networks, not others.
    assert not reached(fetch(lam, in_vpc, hosts.closed), hosts.closed)


def test_host_networks_are_closed_by_default(lam: Any, plain: str, hosts: Hosts) -> None:
    # A public-style network, but one the host is directly on: closed like a private one.
    from_host(hosts.lan.address)
    assert not reached(fetch(lam, plain, hosts.lan.address), hosts.lan.address)


def test_allow_egress_opens_a_network_to_every_function(
    lam: Any, plain: str, in_vpc: str, hosts: Hosts
) -> None:
    assert reached(fetch(lam, plain, hosts.allowed), hosts.allowed)
    assert reached(fetch(lam, in_vpc, hosts.allowed), hosts.allowed)


def test_a_vpc_opens_its_networks_to_its_functions_only(
    lam: Any, plain: str, in_vpc: str, hosts: Hosts
) -> None:
    assert reached(fetch(lam, in_vpc, hosts.in_vpc), hosts.in_vpc)
    assert not reached(fetch(lam, plain, hosts.in_vpc), hosts.in_vpc)
    # Taken out of its VPC, the function's new environments are closed to it again.
    lam.update_function_configuration(
        FunctionName=in_vpc, VpcConfig={"SubnetIds": [], "SecurityGroupIds": []}
    )
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=in_vpc, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    try:
        assert not reached(fetch(lam, in_vpc, hosts.in_vpc), hosts.in_vpc)
    finally:
        vpc = {"SubnetIds": [SUBNET_ID], "SecurityGroupIds": ["sg-egresstest"]}
        lam.update_function_configuration(FunctionName=in_vpc, VpcConfig=vpc)
        lam.get_waiter("function_updated_v2").wait(
            FunctionName=in_vpc, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )


def _table(server: Server) -> str:
    detail = httpx.get(server.endpoint + "/health", timeout=5).json()["sandboxDetail"]
    return str(detail.split("table inet ")[1].rstrip(")"))


def _tables() -> set[str]:
    out = subprocess.run(
        ["nft", "-j", "list", "tables", "inet"], capture_output=True, check=True, timeout=30
    ).stdout
    return {i["table"]["name"] for i in json.loads(out)["nftables"] if "table" in i}


def test_each_server_applies_its_own_policy(
    lam: Any, server: Server, plain: str, hosts: Hosts
) -> None:
    """A second server on the host, with no allowance, alongside: its functions are closed to
    what this one's open; killed, it leaves its table, which the next server removes; and
    through all of it this server's policy holds."""
    base = Path(tempfile.mkdtemp(prefix="lamina-system-", dir="/var/tmp"))
    base.chmod(0o755)
    other = Server(data_dir=base / "data", extra_args=("--sandbox", "namespace"))
    third = Server(data_dir=base / "data3", extra_args=("--sandbox", "namespace"))
    try:
        other.start()
        other_table = _table(other)
        assert other_table != _table(server) and other_table in _tables()
        with functions_on(other) as theirs:
            fn = str(theirs.create(PROBE, Timeout=10)["FunctionName"])
            olam = other.client()
            assert not reached(fetch(olam, fn, hosts.allowed), hosts.allowed)
            assert reached(fetch(olam, fn, hosts.public), hosts.public)
            assert reached(fetch(lam, plain, hosts.allowed), hosts.allowed)
        other.stop(signal.SIGKILL)
        assert other_table in _tables()  # left behind by the killed server
        third.start()
        assert other_table not in _tables()  # and removed by the next one
        third_table = _table(third)
        assert third.stop() == 0, third.log()
        assert third_table not in _tables()  # a clean stop removes its own
        # This server's policy held throughout.
        assert _table(server) in _tables()
        assert reached(fetch(lam, plain, hosts.allowed), hosts.allowed)
        assert not reached(fetch(lam, plain, hosts.closed), hosts.closed)
    finally:
        for srv in (other, third):
            if srv.proc is not None and srv.proc.poll() is None:
                srv.proc.kill()
                srv.proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_dns_to_the_hosts_resolver_stays_open_on_port_53_only(hosts: Hosts, tmp_path: Path) -> None:
    """Functions resolve names with the host's resolver even where it is a private address
    (a VPC's .2 resolver, say): port 53 to it is open, nothing else. The server runs in a
    mount namespace of its own whose /etc/resolv.conf names a resolver made here."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {hosts.resolver}\n")
    in_world = ("ip", "netns", "exec", hosts.world.netns, sys.executable, "-c")
    dns = subprocess.Popen([*in_world, DNS_SERVER, hosts.resolver, hosts.public])
    base = Path(tempfile.mkdtemp(prefix="lamina-system-", dir="/var/tmp"))
    base.chmod(0o755)
    mount_resolv = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    unshare = ("unshare", "--mount", "--propagation", "private", "--")
    server = Server(
        data_dir=base / "data",
        extra_args=("--sandbox", "namespace"),
        wrapper=(*unshare, "sh", "-c", mount_resolv, str(resolv)),
    )
    try:
        server.start()
        with functions_on(server) as theirs:
            lam = server.client()
            # (a refused query fails in a second rather than glibc's 2 x 5 s)
            quick = {"Variables": {"RES_OPTIONS": "timeout:1 attempts:1"}}
            probe = str(theirs.create(DNS_PROBE, Timeout=10, Environment=quick)["FunctionName"])
            name = "lamina-egress.test"
            out = result(lam, probe, {"resolver": hosts.resolver, "name": name})
            assert out == {"resolv": resolv.read_text(), "addresses": [hosts.public]}, out
            fn = str(theirs.create(PROBE, Timeout=10)["FunctionName"])
            got = result(lam, fn, {"url": f"http://{name}:8080/lamina-test"})
            assert reached(got, hosts.public)
            # The resolver's host answers HTTP too (from the host), but not to functions.
            from_host(hosts.resolver)
            assert not reached(fetch(lam, fn, hosts.resolver), hosts.resolver)
        assert server.stop() == 0, server.log()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        dns.kill()
        dns.wait()
        shutil.rmtree(base, ignore_errors=True)
