"""Where a function's network may go: the address facts of Lamina's egress policy and the
operator's VPCs (the networks functions join through Lambda's `VpcConfig.SubnetIds`).

A leaf module (no Lamina imports): the CLI parses `--allow-egress` and `--vpc` with it,
`control/` resolves a function's subnets with it, and the namespace sandbox builds its
firewall from it.

The policy, as the namespace backend enforces it (docs/networking.md says it for users):
- never reachable: link-local (which holds the cloud metadata services), the other metadata
  addresses clouds use, and Lamina's own sandbox subnet (environments never reach each other);
- closed unless opened: the private and shared ranges and the host's own networks, opened
  for every function by `--allow-egress CIDR`, or for the functions in a VPC by its CIDRs;
- open: everything else (the internet), as on Lambda without a VPC.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Lamina's sandbox subnet: a /30 per environment's veth
SANDBOX_SUBNET = ipaddress.IPv4Network("10.213.0.0/16")

#: never forwarded to, whatever is allowed: link-local (169.254.169.254 and 169.254.170.2,
#: the EC2/GCP/Azure/OpenStack and ECS metadata services, are in it), cloud metadata
#: addresses outside it, and the sandbox subnet
NEVER: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("169.254.0.0/16"),
    ipaddress.IPv4Network("100.100.100.200/32"),  # Alibaba Cloud's metadata service
    ipaddress.IPv4Network("168.63.129.16/32"),  # Azure's platform endpoint (wireserver)
    SANDBOX_SUBNET,
    ipaddress.IPv6Network("fe80::/10"),
    ipaddress.IPv6Network("fd00:ec2::254/128"),  # EC2's metadata service over IPv6
    ipaddress.IPv6Network("fd20:ce::254/128"),  # GCP's metadata service over IPv6
)

#: closed unless the operator opens them (with the host's own networks, found at start)
PRIVATE: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
    ipaddress.IPv4Network("100.64.0.0/10"),  # shared address space (carrier-grade NAT)
    ipaddress.IPv6Network("fc00::/7"),
)

#: botocore's patterns for the IDs (VpcId has none; EC2's is the subnet's, with `vpc-`)
SUBNET_ID = re.compile(r"subnet-[0-9a-z]*")
SECURITY_GROUP_ID = re.compile(r"sg-[0-9a-zA-Z]*")
VPC_ID = re.compile(r"vpc-[0-9a-z]+")
#: the most VPCs one server defines (each takes an interface group of the server's block)
MAX_VPCS = 255


class NetworkSpecError(ValueError):
    """An `--allow-egress` or `--vpc` value Lamina cannot use; the message says why."""


def parse_cidr(text: str, what: str = "CIDR") -> IPNetwork:
    """A network such as `10.20.0.0/16` (a bare address is a /32 or /128). Refuses host bits
    (a likely typo) and networks entirely inside what is never reachable."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise NetworkSpecError(f"{what} {text!r} is not a network: {e}") from None
    for never in NEVER:
        if network.version == never.version and network.subnet_of(never):  # type: ignore[arg-type]
            raise NetworkSpecError(
                f"{what} {text} is inside {never}, which functions can never reach "
                "(link-local and metadata addresses, and Lamina's own sandbox subnet)"
            )
    return network


@dataclass(frozen=True)
class Subnet:
    id: str
    cidrs: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class Vpc:
    """A network the operator defines (`--vpc`): its subnets, by the IDs functions name."""

    id: str
    subnets: tuple[Subnet, ...]

    @property
    def cidrs(self) -> tuple[IPNetwork, ...]:
        """What a function in this VPC reaches: every subnet's networks (on AWS a VPC's
        subnets route to each other, whichever subnets the function's interfaces are in)."""
        out: list[IPNetwork] = []
        for subnet in self.subnets:
            out += [c for c in subnet.cidrs if c not in out]
        return tuple(out)


def parse_vpc(text: str) -> Vpc:
    """`VPC_ID=SUBNET_ID:CIDR[,SUBNET_ID:CIDR...]`; a subnet named twice gets both CIDRs
    (an IPv4 and an IPv6 one, say)."""
    vpc_id, sep, rest = text.partition("=")
    vpc_id = vpc_id.strip()
    if not sep or not VPC_ID.fullmatch(vpc_id):
        raise NetworkSpecError(
            f"--vpc {text!r}: expected VPC_ID=SUBNET_ID:CIDR[,SUBNET_ID:CIDR...] with a VPC ID "
            "such as vpc-lab (lower-case letters and digits after 'vpc-')"
        )
    subnets: dict[str, list[IPNetwork]] = {}
    for part in rest.split(","):
        subnet_id, colon, cidr = part.strip().partition(":")
        if not colon or not subnet_id or not SUBNET_ID.fullmatch(subnet_id):
            raise NetworkSpecError(
                f"--vpc {vpc_id}: {part.strip()!r} is not SUBNET_ID:CIDR with a subnet ID such "
                "as subnet-db (lower-case letters and digits after 'subnet-')"
            )
        subnets.setdefault(subnet_id, []).append(parse_cidr(cidr, f"--vpc {vpc_id} {subnet_id}"))
    return Vpc(vpc_id, tuple(Subnet(s, tuple(c)) for s, c in subnets.items()))


def check_vpcs(vpcs: tuple[Vpc, ...]) -> None:
    """VPC IDs and subnet IDs are unique across the server's VPCs."""
    if len(vpcs) > MAX_VPCS:
        raise NetworkSpecError(f"at most {MAX_VPCS} VPCs (--vpc) per server")
    seen_vpcs: set[str] = set()
    owner: dict[str, str] = {}
    for vpc in vpcs:
        if vpc.id in seen_vpcs:
            raise NetworkSpecError(f"--vpc {vpc.id} is given twice: name all its subnets in one")
        seen_vpcs.add(vpc.id)
        for subnet in vpc.subnets:
            if subnet.id in owner:
                raise NetworkSpecError(
                    f"subnet {subnet.id} is in both {owner[subnet.id]} and {vpc.id}"
                )
            owner[subnet.id] = vpc.id


class VpcDirectory:
    """The server's VPCs, by subnet ID (what `control/` validates a VpcConfig against)."""

    def __init__(self, vpcs: tuple[Vpc, ...]) -> None:
        self._vpcs = {v.id: v for v in vpcs}
        self._by_subnet = {s.id: v for v in vpcs for s in v.subnets}

    def vpc_of(self, subnet_id: str) -> Vpc | None:
        return self._by_subnet.get(subnet_id)

    def get(self, vpc_id: str) -> Vpc | None:
        return self._vpcs.get(vpc_id)
