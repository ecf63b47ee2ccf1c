"""A function's VpcConfig against the server's VPCs (`lamina serve --vpc`), with Lambda's
errors: what EC2's lookups would refuse on AWS, Lamina refuses against its own definitions."""

from __future__ import annotations

from dataclasses import replace

from lamina.errors import InvalidParameterValueError
from lamina.models import VpcConfig
from lamina.networks import VpcDirectory


def resolve(directory: VpcDirectory, config: VpcConfig) -> VpcConfig:
    """`config` with its VpcId, once its subnets are known to be of one VPC of this server.
    Empty lists take the function out of its VPC."""
    if bool(config.subnet_ids) != bool(config.security_group_ids):
        # (Lambda's wording, "SecurityIds" included)
        raise InvalidParameterValueError(
            "SubnetIds and SecurityIds must coexist or be both empty list."
        )
    if not config.subnet_ids:
        return replace(config, vpc_id="")
    vpcs: dict[str, str] = {}
    for subnet in config.subnet_ids:
        vpc = directory.vpc_of(subnet)
        if vpc is None:
            raise InvalidParameterValueError(
                "Error occurred while DescribeSubnets. EC2 Error Code: InvalidSubnetID.NotFound. "
                f"EC2 Error Message: The subnet ID '{subnet}' does not exist"
            )
        vpcs.setdefault(vpc.id, subnet)
    if len(vpcs) > 1:
        named = ", ".join(f"{subnet} in {vpc}" for vpc, subnet in vpcs.items())
        raise InvalidParameterValueError(
            f"The subnets of a function must all be in one VPC ({named})."
        )
    return replace(config, vpc_id=next(iter(vpcs)))
