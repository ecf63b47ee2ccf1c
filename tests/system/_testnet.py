"""Test hosts for the sandboxes' network: each a network namespace made here, behind a veth
pair from the host, with an HTTP server answering on every address it has.

A test host has the address of its veth (on a /30 with the host's end: a network directly
connected to the host) and, optionally, addresses on its loopback that the host routes to it
(`routed`): a "public" one (TEST-NET-3), a private one, even 169.254.169.254. The host routes
each such /32 through the veth, so a packet for it never leaves this machine: the tests send
traffic only to addresses they made.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

TEST_HOST_PORT = 8080
#: transit /30s of the test hosts, apart from Lamina's 10.213.0.0/16
TRANSIT_NET = ipaddress.IPv4Network("10.214.0.0/16")
#: TEST-NET-3 (RFC 5737): public-style addresses no real host has
PUBLIC_NET = ipaddress.IPv4Network("203.0.113.0/24")

# Answers every GET with the address the request came from and the one it reached.
TEST_HOST_SERVER = """
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "client": self.client_address[0],
            "server": self.connection.getsockname()[0],
            "path": self.path,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
Server(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _used_addresses() -> str:
    return subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout


def _routed(address: str) -> bool:
    """The host already has a route of its own for exactly this address."""
    out = subprocess.run(
        ["ip", "-4", "route", "show", "exact", f"{address}/32"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return bool(out.strip())


def free_subnet(within: ipaddress.IPv4Network, prefix: int = 30) -> ipaddress.IPv4Network:
    """A random subnet of `within` that no interface of the host has an address in."""
    used = _used_addresses()
    subnets = list(within.subnets(new_prefix=prefix))[1:]
    for _ in range(100):
        subnet = random.choice(subnets)
        if not any(f" {host}/" in used for host in subnet) and not any(
            _routed(str(h)) for h in list(subnet.hosts())[:2]
        ):
            return subnet
    raise RuntimeError(f"no free test subnet in {within}")


def free_address(within: ipaddress.IPv4Network) -> str:
    """A random address of `within` that the host neither has nor routes on its own."""
    used = _used_addresses()
    hosts = list(within.hosts())
    for _ in range(100):
        address = str(random.choice(hosts))
        if f" {address}/" not in used and not _routed(address):
            return address
    raise RuntimeError(f"no free test address in {within}")


@dataclass
class OutsideHost:
    """A machine on the outside, for the sandboxes."""

    netns: str
    host_veth: str
    #: the host's end of the veth (what the test host sees as the NAT's address)
    host_address: str
    #: the test host's end of the veth (on a network directly connected to the host)
    address: str
    #: addresses on its loopback that the host routes to it
    routed: tuple[str, ...] = ()

    def url(self, address: str | None = None) -> str:
        return f"http://{address or self.address}:{TEST_HOST_PORT}/lamina-test"

    def run(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Python code run inside the test host's namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )


@contextmanager
def outside_host(
    transit: ipaddress.IPv4Network | None = None, routed: Sequence[str] = ()
) -> Iterator[OutsideHost]:
    """A test host on `transit` (a free /30 of 10.214.0.0/16 by default) answering HTTP on
    port 8080 at its veth's address and at each of `routed`, which the host routes to it.
    Refuses an address the host already routes (another test's, or a real one)."""
    tag = uuid.uuid4().hex[:8]
    netns, outside, inside = f"lamtest-{tag}", f"lt{tag}a", f"lt{tag}b"
    assert not outside.startswith("lmv")  # Lamina's own prefix, which its firewall matches
    subnet = transit or free_subnet(TRANSIT_NET)
    host_address, address = (str(h) for h in subnet.hosts())
    server = None
    routes: list[str] = []
    try:
        ip("netns", "add", netns)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", netns)
        ip("addr", "add", f"{host_address}/{subnet.prefixlen}", "dev", outside)
        ip("link", "set", outside, "up")
        ip("-n", netns, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", inside)
        ip("-n", netns, "link", "set", inside, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "route", "add", "default", "via", host_address)
        for extra in routed:
            if _routed(extra):
                raise RuntimeError(f"{extra} is routed on this host already: not a test address")
            ip("-n", netns, "addr", "add", f"{extra}/32", "dev", "lo")
            ip("route", "add", f"{extra}/32", "via", address, "dev", outside)
            routes.append(extra)
            # Never a packet off this machine: the route must lead into the test host.
            got = subprocess.run(
                ["ip", "-4", "route", "get", extra], capture_output=True, text=True, check=True
            ).stdout
            assert f" dev {outside} " in got, got
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                "-c",
                TEST_HOST_SERVER,
                str(TEST_HOST_PORT),
            ]
        )
        for target in (address, *routes):
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((target, TEST_HOST_PORT), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.05)
        yield OutsideHost(netns, outside, host_address, address, tuple(routes))
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for extra in routes:
            subprocess.run(["ip", "route", "del", f"{extra}/32"], capture_output=True, timeout=30)
        # Deleting the namespace takes its end of the veth, and with it the host's end.
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=30)
