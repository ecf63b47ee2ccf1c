"""One server's egress firewall: what its environments may reach beyond Lamina's NAT.

`_netns.py`'s shared table (`inet lamina`) NATs the environments out and keeps them off the
host and off each other. This module adds, per server, a table of its own,
`inet lamina_<token>`, applying the egress policy of `lamina.networks` to that server's
environments only: several servers may share a host (each with its own `--allow-egress` and
VPCs), and a packet any table drops is dropped, so a shared policy would be the strictest
server's, or the last one's to start.

A server's veths are told apart by their *interface group*: each server owns a block of 256
group numbers (`token << 8`); an environment's veth is made in the block's first group and,
when the environment is bound to a function in a VPC, moved to that VPC's group with one
netlink message (no process to run on the cold-start path). The table's rules match the
groups, so environments being made need no rule of their own.

A server that dies leaves its table behind; the next server to start deletes it. Liveness is
a lock: each server holds an flock on `/run/lamina/egress-<token>.lock` for its life, and a
table whose lock file exists and is not locked belongs to no one.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import random
import re
import socket
import struct
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lamina.networks import NEVER, PRIVATE, SANDBOX_SUBNET, IPNetwork

log = logging.getLogger(__name__)

LOCK_DIR = Path("/run/lamina")
_TABLE = re.compile(r"lamina_([0-9a-f]{6})")
#: groups per server: the default one, then one per VPC
_BLOCK = 256
#: a server's token times the block: interface groups below 2**31, which `ip` takes (it
#: parses a group as a signed 32-bit number)
TOKENS = range(1, (1 << 31) // _BLOCK)
RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class EgressPolicy:
    """What one server's environments may reach besides the internet (see `networks`)."""

    #: opened for every environment (`--allow-egress`)
    allow: tuple[IPNetwork, ...] = ()
    #: VPC ID -> its networks, opened for the environments of functions in that VPC
    vpcs: Mapping[str, tuple[IPNetwork, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class HostFacts:
    """What the policy takes from the host at start."""

    #: the host's own directly connected networks (closed like private ranges)
    networks: tuple[IPNetwork, ...] = ()
    #: the host's DNS resolvers (port 53 open to them: functions resolve names as the host)
    resolvers: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()


class Firewall:
    """The egress table of this server: `install()` at start, `remove()` at the end."""

    def __init__(self, nft: str, ip: str, policy: EgressPolicy) -> None:
        self._nft = nft
        self._ip = ip
        self._policy = policy
        self._vpc_index = {vpc: i + 1 for i, vpc in enumerate(policy.vpcs)}
        if len(self._vpc_index) >= _BLOCK:
            raise ValueError(f"at most {_BLOCK - 1} VPCs")
        self._lock: int | None = None
        self.token = 0
        self.facts = HostFacts()

    @property
    def table(self) -> str:
        return f"lamina_{self.token:06x}"

    @property
    def default_group(self) -> int:
        """The interface group veths are made in (the environment's function not known)."""
        return self.token * _BLOCK

    def group(self, vpc: str | None) -> int:
        """The interface group of an environment of a function in `vpc` (None: no VPC)."""
        if vpc is None:
            return self.default_group
        index = self._vpc_index.get(vpc)
        if index is None:
            raise OSError(f"VPC {vpc} is not defined on this server (--vpc)")
        return self.default_group + index

    def install(self) -> None:
        """Delete tables left by dead servers, claim a token, load this server's table.
        Blocking (runs `nft` and `ip`); raises OSError or SubprocessError."""
        self._collect_stale()
        self.facts = HostFacts(host_networks(self._ip), resolvers())
        self._claim()
        try:
            self._run(self.script(self.facts))
        except BaseException:
            self._release_claim()
            raise

    def remove(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._run(f"delete table inet {self.table}\n")
        self._release_claim()

    def script(self, facts: HostFacts) -> str:
        """The table, as `nft -f` reads it (a pure function of the policy and the facts)."""
        base = self.default_group
        never = _split(NEVER)
        closed = _split((*PRIVATE, *facts.networks))
        allow = _split(self._policy.allow)
        dns = _split(ipaddress.ip_network(a) for a in facts.resolvers if not a.is_loopback)
        lines = [
            f"table inet {self.table} {{",
            _set("dns4", "ipv4_addr", dns[4]),
            _set("dns6", "ipv6_addr", dns[6]),
            _set("never4", "ipv4_addr", never[4]),
            _set("never6", "ipv6_addr", never[6]),
            _set("allow4", "ipv4_addr", allow[4]),
            _set("allow6", "ipv6_addr", allow[6]),
            _set("closed4", "ipv4_addr", closed[4]),
            _set("closed6", "ipv6_addr", closed[6]),
            "  chain input {",
            "    type filter hook input priority -20; policy accept;",
            f"    iifgroup {base}-{base + _BLOCK - 1} ct state established,related accept",
            f"    iifgroup {base}-{base + _BLOCK - 1} drop",
            "  }",
            "  chain forward {",
            "    type filter hook forward priority -20; policy accept;",
            # Another server's environment, or not an environment at all: not ours to judge.
            f"    iifgroup != {base}-{base + _BLOCK - 1} accept",
            "    meta l4proto { tcp, udp } th dport 53 ip daddr @dns4 accept",
            "    meta l4proto { tcp, udp } th dport 53 ip6 daddr @dns6 accept",
            "    ip daddr @never4 drop",
            "    ip6 daddr @never6 drop",
            "    ip daddr @allow4 accept",
            "    ip6 daddr @allow6 accept",
        ]
        for vpc, cidrs in self._policy.vpcs.items():
            group = self.group(vpc)
            for family, nets in _split(cidrs).items():
                if nets:
                    keyword = "ip" if family == 4 else "ip6"
                    lines.append(
                        f"    iifgroup {group} {keyword} daddr {{ {', '.join(nets)} }} accept"
                    )
        lines += [
            "    ip daddr @closed4 drop",
            "    ip6 daddr @closed6 drop",
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    # -- the token and its lock ------------------------------------------------------------

    def _claim(self) -> None:
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        tables = self._tables()
        for _ in range(64):
            token = random.choice(TOKENS)
            if f"lamina_{token:06x}" in tables:
                continue
            path = LOCK_DIR / f"egress-{token:06x}.lock"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock, self.token = fd, token
            return
        raise OSError("no free egress table token")

    def _release_claim(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            (LOCK_DIR / f"egress-{self.token:06x}.lock").unlink()
        os.close(self._lock)
        self._lock = None

    def _collect_stale(self) -> None:
        for table in self._tables():
            match = _TABLE.fullmatch(table)
            if match is None:
                continue
            path = LOCK_DIR / f"egress-{match.group(1)}.lock"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # not a table we can judge (another mount namespace's server?)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its server is alive
            try:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self._run(f"delete table inet {table}\n")
                path.unlink(missing_ok=True)
                log.info("removed the egress table of a server that is gone: %s", table)
            finally:
                os.close(fd)

    def _tables(self) -> set[str]:
        done = subprocess.run(
            [self._nft, "-j", "list", "tables", "inet"], capture_output=True, timeout=30
        )
        if done.returncode != 0:
            return set()
        try:
            items = json.loads(done.stdout)["nftables"]
        except (ValueError, KeyError):
            return set()
        return {i["table"]["name"] for i in items if "table" in i}

    def _run(self, script: str) -> None:
        done = subprocess.run(
            [self._nft, "-f", "-"], input=script.encode(), capture_output=True, timeout=30
        )
        if done.returncode != 0:
            raise OSError(f"nft: {done.stderr.decode(errors='replace').strip()}")


def _split(networks: Iterable[IPNetwork]) -> dict[int, list[str]]:
    """Networks by IP version, overlaps merged (an nft interval set refuses overlaps)."""
    nets = list(networks)
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return {
        4: [str(n) for n in ipaddress.collapse_addresses(v4)],
        6: [str(n) for n in ipaddress.collapse_addresses(v6)],
    }


def _set(name: str, kind: str, elements: Sequence[str]) -> str:
    body = f"type {kind}; flags interval;"
    if elements:
        body += f" elements = {{ {', '.join(elements)} }}"
    return f"  set {name} {{ {body} }}"


def host_networks(ip: str) -> tuple[IPNetwork, ...]:
    """The networks of the host's own addresses and its on-link routes, apart from loopback,
    link-local (never reachable anyway) and Lamina's sandbox subnet. Read once, at start: a
    network added later is closed only if private."""
    found: list[IPNetwork] = []
    addrs = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, timeout=30)
    routes = subprocess.run(
        [ip, "-j", "route", "show", "table", "main", "scope", "link"],
        capture_output=True,
        timeout=30,
    )
    with contextlib.suppress(ValueError, KeyError, TypeError):
        for link in json.loads(addrs.stdout or b"[]"):
            if link.get("ifname", "").startswith("lmv"):
                continue
            for a in link.get("addr_info", []):
                found.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network)
    with contextlib.suppress(ValueError, KeyError, TypeError):
        for route in json.loads(routes.stdout or b"[]"):
            if route.get("dev", "").startswith("lmv") or route.get("dst") in (None, "default"):
                continue
            found.append(ipaddress.ip_network(route["dst"], strict=False))
    # (an address's network and its on-link route are usually the same network: once)
    return tuple(
        n
        for n in dict.fromkeys(found)
        if not (n.is_loopback or n.is_link_local)
        and not (isinstance(n, ipaddress.IPv4Network) and n.overlaps(SANDBOX_SUBNET))
    )


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolvers(path: Path = RESOLV_CONF) -> tuple[IPAddress, ...]:
    """The name servers of the host's resolv.conf (which the sandbox sees as its own)."""
    out = []
    try:
        text = path.read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            with contextlib.suppress(ValueError):
                out.append(ipaddress.ip_address(fields[1].split("%")[0]))
    return tuple(out)


_RTM_NEWLINK = 16
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLMSG_ERROR = 2
_IFLA_GROUP = 27


def set_group(ifname: str, group: int) -> None:
    """Move an interface to another group: one rtnetlink message (~tens of µs), what
    `ip link set NAME group N` does without starting a process."""
    index = socket.if_nametoindex(ifname)
    info = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
    attr = struct.pack("=HHI", 8, _IFLA_GROUP, group)
    header = struct.pack(
        "=IHHII", 16 + len(info) + len(attr), _RTM_NEWLINK, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.settimeout(5)
        nl.send(header + info + attr)
        reply = nl.recv(4096)
    _, kind = struct.unpack_from("=IH", reply)
    if kind != _NLMSG_ERROR:
        raise OSError(f"netlink: unexpected reply {kind} setting the group of {ifname}")
    error = struct.unpack_from("=i", reply, 16)[0]
    if error:
        raise OSError(-error, f"set the group of {ifname}: {os.strerror(-error)}")
