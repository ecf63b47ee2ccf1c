"""The egress policy's pieces that need no network: parsing the operator's networks, and the
nftables table one server loads (checked by `nft -c` where it can run)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lamina import networks
from lamina.networks import NetworkSpecError, Subnet, Vpc, parse_cidr, parse_vpc
from lamina.sandbox._egress import (
    TOKENS,
    EgressPolicy,
    Firewall,
    HostFacts,
    host_networks,
    resolvers,
)


def test_parse_cidr_takes_networks_and_refuses_the_never_reachable() -> None:
    assert parse_cidr("10.0.0.0/8") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_cidr(" 192.168.7.9 ") == ipaddress.ip_network("192.168.7.9/32")
    assert parse_cidr("fd12::/16") == ipaddress.ip_network("fd12::/16")
    # Wider than a never-reachable range: accepted (the range inside stays closed).
    assert parse_cidr("0.0.0.0/0").prefixlen == 0
    for bad, fragment in [
        ("169.254.169.254", "inside 169.254.0.0/16"),
        ("169.254.0.0/16", "inside 169.254.0.0/16"),
        ("10.213.1.0/24", "inside 10.213.0.0/16"),
        ("fe80::1", "inside fe80::/10"),
        ("fd00:ec2::254", "inside fd00:ec2::254/128"),
        ("10.0.0.1/8", "host bits set"),
        ("10.0.0.0/33", "not a network"),
    ]:
        with pytest.raises(NetworkSpecError, match=fragment.replace(".", r"\.")):
            parse_cidr(bad)


def test_parse_vpc_groups_cidrs_by_subnet() -> None:
    vpc = parse_vpc("vpc-lab=subnet-a:10.20.1.0/24, subnet-b:10.20.2.0/24,subnet-a:fd20::/64")
    assert vpc == Vpc(
        "vpc-lab",
        (
            Subnet(
                "subnet-a",
                (ipaddress.ip_network("10.20.1.0/24"), ipaddress.ip_network("fd20::/64")),
            ),
            Subnet("subnet-b", (ipaddress.ip_network("10.20.2.0/24"),)),
        ),
    )
    assert [str(c) for c in vpc.cidrs] == ["10.20.1.0/24", "fd20::/64", "10.20.2.0/24"]
    for bad in ("vpc-lab", "VPC-lab=subnet-a:10.0.0.0/8", "vpc-lab=sub-a:10.0.0.0/8", "vpc-x="):
        with pytest.raises(NetworkSpecError):
            parse_vpc(bad)


def test_vpcs_and_subnets_are_unique() -> None:
    a = parse_vpc("vpc-a=subnet-1:10.1.0.0/16")
    networks.check_vpcs((a, parse_vpc("vpc-b=subnet-2:10.2.0.0/16")))
    with pytest.raises(NetworkSpecError, match="given twice"):
        networks.check_vpcs((a, parse_vpc("vpc-a=subnet-2:10.2.0.0/16")))
    with pytest.raises(NetworkSpecError, match="subnet subnet-1 is in both vpc-a and vpc-b"):
        networks.check_vpcs((a, parse_vpc("vpc-b=subnet-1:10.2.0.0/16")))


def _script() -> tuple[Firewall, str]:
    policy = EgressPolicy(
        allow=(ipaddress.ip_network("10.1.0.0/16"),),
        vpcs={
            "vpc-a": (ipaddress.ip_network("172.20.0.0/16"), ipaddress.ip_network("fd20::/64")),
            "vpc-b": (ipaddress.ip_network("192.168.50.0/24"),),
        },
    )
    firewall = Firewall("nft", "ip", policy)
    firewall.token = 0xABC
    facts = HostFacts(
        networks=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("10.5.0.0/16")),
        resolvers=(ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("127.0.0.53")),
    )
    return firewall, firewall.script(facts)


def test_the_table_matches_only_this_servers_groups() -> None:
    firewall, script = _script()
    base = 0xABC * 256
    assert firewall.table == "lamina_000abc"
    assert firewall.group(None) == base
    assert firewall.group("vpc-a") == base + 1 and firewall.group("vpc-b") == base + 2
    with pytest.raises(OSError, match="vpc-c is not defined"):
        firewall.group("vpc-c")
    assert f"iifgroup != {base}-{base + 255} accept" in script
    assert f"iifgroup {base + 1} ip daddr {{ 172.20.0.0/16 }} accept" in script
    assert f"iifgroup {base + 1} ip6 daddr {{ fd20::/64 }} accept" in script
    assert f"iifgroup {base + 2} ip daddr {{ 192.168.50.0/24 }} accept" in script


def test_every_token_gives_groups_ip_accepts() -> None:
    firewall = Firewall("nft", "ip", EgressPolicy(vpcs={f"vpc-{i}": () for i in range(255)}))
    firewall.token = max(TOKENS)
    assert firewall.group("vpc-254") == 2**31 - 1  # ip parses groups as signed 32-bit
    with pytest.raises(ValueError):
        Firewall("nft", "ip", EgressPolicy(vpcs={f"vpc-{i}": () for i in range(256)}))


def test_the_rules_come_in_the_policys_order() -> None:
    _, script = _script()
    lines = [line.strip() for line in script.splitlines()]
    order = [
        "meta l4proto { tcp, udp } th dport 53 ip daddr @dns4 accept",
        "ip daddr @never4 drop",
        "ip daddr @allow4 accept",
        "ip daddr @closed4 drop",
    ]
    # DNS to the host's resolvers, then never, then what is opened, then what is closed.
    assert [lines.index(rule) for rule in order] == sorted(lines.index(rule) for rule in order)
    sets = {line.split()[1]: line for line in lines if line.startswith("set ")}
    assert "10.0.0.2" in sets["dns4"] and "127.0.0.53" not in script
    assert "169.254.0.0/16" in sets["never4"] and "10.213.0.0/16" in sets["never4"]
    assert "fd00:ec2::254" in sets["never6"] and "fe80::/10" in sets["never6"]
    assert "10.1.0.0/16" in sets["allow4"]
    # The host's 10.5.0.0/16 merged into 10.0.0.0/8 (an interval set refuses overlaps).
    assert "10.5.0.0" not in sets["closed4"]
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
        assert network in sets["closed4"]
    assert "192.0.2.0/24" in sets["closed4"] and "fc00::/7" in sets["closed6"]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("unshare") is None,
    reason="nft -c needs root (CI runs as root)",
)
def test_nft_accepts_the_table() -> None:
    _, script = _script()
    # Checked, not loaded, and in a network namespace of its own: the host's rules untouched.
    done = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"],
        input=script.encode(),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_resolvers_are_read_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# comment\nsearch example\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n"
        "nameserver nonsense\noptions ndots:2\n"
    )
    assert resolvers(conf) == (ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("fe80::1"))
    assert resolvers(tmp_path / "missing") == ()


def test_host_networks_leave_out_loopback_link_local_and_the_sandboxes(tmp_path: Path) -> None:
    addrs = [
        {"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "prefixlen": 8}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"local": "192.0.2.2", "prefixlen": 24},
                {"local": "fd00::2", "prefixlen": 64},
                {"local": "fe80::1", "prefixlen": 64},
            ],
        },
        {"ifname": "lmv12", "addr_info": [{"local": "10.213.0.49", "prefixlen": 30}]},
        {"ifname": "br0", "addr_info": [{"local": "10.213.200.1", "prefixlen": 24}]},
    ]
    routes = [
        {"dst": "default", "dev": "eth0"},
        {"dst": "192.0.2.0/24", "dev": "eth0"},
        {"dst": "198.51.100.0/24", "dev": "eth1"},
        {"dst": "10.213.0.48/30", "dev": "lmv12"},
    ]
    fake_ip = tmp_path / "ip"
    fake_ip.write_text(
        "#!/bin/sh\n"
        f"case \"$2\" in addr) echo '{json.dumps(addrs)}';; route) echo '{json.dumps(routes)}';; "
        "esac\n"
    )
    fake_ip.chmod(0o755)
    assert [str(n) for n in host_networks(str(fake_ip))] == [
        "192.0.2.0/24",
        "fd00::/64",
        "198.51.100.0/24",
    ]
