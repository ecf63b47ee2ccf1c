"""Capacity providers and function scaling configs with boto3 against a real server: the
operations' responses and refusals, and what they do on the host: MinExecutionEnvironments
kept started, MaxExecutionEnvironments and a provider's MaxVCpuCount capping concurrency."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import SIGNED_HTTP, Functions, Server, wait_for

pytestmark = pytest.mark.control_plane

ACCOUNT = "000000000000"
VPC = {"SubnetIds": ["subnet-0a1b2c"], "SecurityGroupIds": ["sg-0a1b2c"]}
OPERATOR = {"CapacityProviderOperatorRoleArn": f"arn:aws:iam::{ACCOUNT}:role/operator"}
SLEEPER = """
import time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return "ok"
"""


def _body(resp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def _provider_arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{ACCOUNT}:capacity-provider:{name}"


@pytest.fixture
def provider(lam: Any) -> Any:
    made: list[str] = []

    def create(**kwargs: Any) -> str:
        name = f"cp-{uuid.uuid4().hex[:8]}"
        lam.create_capacity_provider(
            CapacityProviderName=name, VpcConfig=VPC, PermissionsConfig=OPERATOR, **kwargs
        )
        made.append(name)
        return name

    yield create
    for name in made:
        with contextlib.suppress(ClientError):
            lam.delete_capacity_provider(CapacityProviderName=name)


def _attached(name: str, **inner: Any) -> dict[str, Any]:
    return {
        "LambdaManagedInstancesCapacityProviderConfig": {
            "CapacityProviderArn": _provider_arn(name),
            **inner,
        }
    }


def test_capacity_provider_operations(lam: Any, lam_unchecked: Any, provider: Any) -> None:
    name = provider(CapacityProviderScalingConfig={"MaxVCpuCount": 8, "ScalingMode": "Auto"})
    got = lam.get_capacity_provider(CapacityProviderName=name)["CapacityProvider"]
    last_modified = got.pop("LastModified")
    assert last_modified
    assert got == {
        "CapacityProviderArn": _provider_arn(name),
        "State": "Active",
        "VpcConfig": VPC,
        "PermissionsConfig": OPERATOR,
        "InstanceRequirements": {"Architectures": ["x86_64"]},
        "CapacityProviderScalingConfig": {"MaxVCpuCount": 8, "ScalingMode": "Auto"},
    }
    by_arn = lam.get_capacity_provider(CapacityProviderName=_provider_arn(name))
    assert by_arn["CapacityProvider"]["CapacityProviderArn"] == _provider_arn(name)
    listed = lam.list_capacity_providers(MaxItems=50)["CapacityProviders"]
    assert name in [p["CapacityProviderArn"].rsplit(":", 1)[1] for p in listed]
    assert lam.list_capacity_providers(State="Deleting")["CapacityProviders"] == []
    updated = lam.update_capacity_provider(
        CapacityProviderName=name, CapacityProviderScalingConfig={"MaxVCpuCount": 4}
    )
    assert updated["CapacityProvider"]["CapacityProviderScalingConfig"] == {"MaxVCpuCount": 4}
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202

    def refused(call: Any, **kwargs: Any) -> tuple[str, str]:
        with pytest.raises(ClientError) as e:
            call(**kwargs)
        return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]

    assert refused(
        lam.create_capacity_provider,
        CapacityProviderName=name,
        VpcConfig=VPC,
        PermissionsConfig=OPERATOR,
    ) == ("ResourceConflictException", f"Capacity provider already exists: {_provider_arn(name)}")
    assert refused(lam.get_capacity_provider, CapacityProviderName="cp-missing") == (
        "ResourceNotFoundException",
        f"Capacity provider not found: {_provider_arn('cp-missing')}",
    )
    code, message = refused(
        lam_unchecked.create_capacity_provider,
        CapacityProviderName="cp-novpc",
        PermissionsConfig=OPERATOR,
    )
    assert (code, message) == (
        "ValidationException",
        "1 validation error detected: Value null at 'vpcConfig' failed to satisfy "
        "constraint: Member must not be null",
    )
    code, _ = refused(
        lam.create_capacity_provider,
        CapacityProviderName="cp-types",
        VpcConfig=VPC,
        PermissionsConfig=OPERATOR,
        InstanceRequirements={"AllowedInstanceTypes": ["m7g.large"]},
    )
    assert code == "InvalidParameterValueException"
    code, _ = refused(
        lam_unchecked.create_capacity_provider,
        CapacityProviderName="cp-bad-subnet",
        VpcConfig={"SubnetIds": ["net-1"], "SecurityGroupIds": []},
        PermissionsConfig=OPERATOR,
    )
    assert code == "ValidationException"
    # Nothing half-made by the refusals.
    assert refused(lam.get_capacity_provider, CapacityProviderName="cp-types")[0] == (
        "ResourceNotFoundException"
    )
    # Pages of one: every provider once, in name order.
    others = sorted([name, provider(), provider()])
    seen_names: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = lam.list_capacity_providers(MaxItems=1, **marker)
        assert len(page["CapacityProviders"]) <= 1
        seen_names += [
            p["CapacityProviderArn"].rsplit(":", 1)[1] for p in page["CapacityProviders"]
        ]
        if "NextMarker" not in page:
            break
        marker = {"Marker": page["NextMarker"]}
    assert [n for n in seen_names if n in others] == others
    assert (
        refused(lam.list_function_versions_by_capacity_provider, CapacityProviderName="cp-missing")[
            0
        ]
        == "ResourceNotFoundException"
    )
    deleted = lam.delete_capacity_provider(CapacityProviderName=name)
    assert deleted["CapacityProvider"]["State"] == "Deleting"
    assert refused(lam.get_capacity_provider, CapacityProviderName=name)[0] == (
        "ResourceNotFoundException"
    )


def test_functions_on_a_provider(functions: Functions, lam: Any, provider: Any) -> None:
    name = provider()
    attached = _attached(name, ExecutionEnvironmentMemoryGiBPerVCpu=4)
    created = functions.create(SLEEPER, CapacityProviderConfig=attached)
    fn = created["FunctionName"]
    assert created["CapacityProviderConfig"] == attached
    version = lam.publish_version(FunctionName=fn)
    assert version["CapacityProviderConfig"] == attached
    listed = lam.list_function_versions_by_capacity_provider(CapacityProviderName=name)
    assert _body(listed) == {
        "CapacityProviderArn": _provider_arn(name),
        "FunctionVersions": [
            {"FunctionArn": f"{created['FunctionArn']}:$LATEST", "State": "Active"},
            {"FunctionArn": f"{created['FunctionArn']}:1", "State": "Active"},
        ],
    }
    with pytest.raises(ClientError) as e:
        lam.delete_capacity_provider(CapacityProviderName=name)
    assert e.value.response["Error"]["Code"] == "ResourceConflictException"
    # Refused configs leave no function behind.
    for bad in (
        _attached(name, PerExecutionEnvironmentMaxConcurrency=4),
        _attached("cp-missing"),
    ):
        with pytest.raises(ClientError) as e:
            functions.create(
                SLEEPER,
                FunctionName=f"t-{uuid.uuid4().hex[:10]}",
                wait=False,
                CapacityProviderConfig=bad,
            )
        assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert len(functions.names) == 1
    lam.delete_function(FunctionName=fn)
    assert (
        lam.list_function_versions_by_capacity_provider(CapacityProviderName=name)[
            "FunctionVersions"
        ]
        == []
    )
    lam.delete_capacity_provider(CapacityProviderName=name)


def _environments(server: Server, fn: str) -> dict[str, int]:
    """Live environments of the function, by version (Lamina's own listing)."""
    listed = SIGNED_HTTP.get(server.endpoint + "/lamina/environments").json()["Environments"]
    out: dict[str, int] = {}
    for env in listed:
        if env["FunctionName"] == fn and env["State"] != "dead":
            out[env["Version"]] = out.get(env["Version"], 0) + 1
    return out


def _burst(lam: Any, fn: str, qualifier: str, n: int, sleep: float) -> list[str]:
    """`n` invocations at once: each one's result ("ok") or error code."""

    def one(_: int) -> str:
        try:
            resp = lam.invoke(
                FunctionName=fn, Qualifier=qualifier, Payload=json.dumps({"sleep": sleep})
            )
            return str(json.loads(resp["Payload"].read()))
        except ClientError as e:
            return str(e.response["Error"]["Code"])

    with ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(one, range(n)))


def test_scaling_config_keeps_the_minimum_and_caps_at_the_maximum(
    functions: Functions, lam: Any, lam_unchecked: Any, provider: Any, server: Server
) -> None:
    plain = functions.create(SLEEPER)["FunctionName"]
    lam.publish_version(FunctionName=plain)
    with pytest.raises(ClientError) as e:
        lam.put_function_scaling_config(
            FunctionName=plain, Qualifier="1", FunctionScalingConfig={"MinExecutionEnvironments": 1}
        )
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"

    name = provider()
    fn = functions.create(SLEEPER, CapacityProviderConfig=_attached(name), Timeout=30)[
        "FunctionName"
    ]
    lam.publish_version(FunctionName=fn)
    with pytest.raises(ClientError) as e:
        lam.put_function_scaling_config(
            FunctionName=fn,
            Qualifier="1",
            FunctionScalingConfig={"MinExecutionEnvironments": 3, "MaxExecutionEnvironments": 2},
        )
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        lam_unchecked.put_function_scaling_config(
            FunctionName=fn, Qualifier="$LATEST", FunctionScalingConfig={}
        )
    assert e.value.response["Error"]["Code"] == "ValidationException"
    put = lam.put_function_scaling_config(
        FunctionName=fn,
        Qualifier="$LATEST.PUBLISHED",
        FunctionScalingConfig={"MinExecutionEnvironments": 2, "MaxExecutionEnvironments": 3},
    )
    assert _body(put) == {"FunctionState": "Active"}
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{fn}:1"

    def applied() -> dict[str, Any] | None:
        got = _body(lam.get_function_scaling_config(FunctionName=fn, Qualifier="1"))
        return (
            got
            if got["AppliedFunctionScalingConfig"].get("MinExecutionEnvironments") == 2
            else None
        )

    got = wait_for(applied, 30, "two environments started")
    assert got == {
        "FunctionArn": arn,
        "AppliedFunctionScalingConfig": {
            "MinExecutionEnvironments": 2,
            "MaxExecutionEnvironments": 3,
        },
        "RequestedFunctionScalingConfig": {
            "MinExecutionEnvironments": 2,
            "MaxExecutionEnvironments": 3,
        },
    }
    # The two started environments are the version's, before any invoke.
    assert _environments(server, fn) == {"1": 2}
    results = _burst(lam, fn, "1", 4, sleep=2.0)
    assert results == ["TooManyRequestsException", "ok", "ok", "ok"]
    # $LATEST is not capped: the config is the version's.
    assert _burst(lam, fn, "$LATEST", 4, sleep=1.0) == ["ok"] * 4
    # Lifting the maximum lifts the cap.
    lam.put_function_scaling_config(
        FunctionName=fn, Qualifier="1", FunctionScalingConfig={"MinExecutionEnvironments": 0}
    )
    assert _burst(lam, fn, "1", 4, sleep=1.0) == ["ok"] * 4
    # Without a minimum, idle environments are no longer kept started for the version.
    lam.delete_function(FunctionName=fn, Qualifier="1")
    wait_for(lambda: "1" not in _environments(server, fn), 30, "version 1's environments gone")


def test_a_providers_vcpu_cap_is_shared_by_its_versions(
    functions: Functions, lam: Any, provider: Any
) -> None:
    # 2 vCPUs; environments of 1024 MB at 2 GiB per vCPU count half a vCPU each: four at once.
    name = provider(CapacityProviderScalingConfig={"MaxVCpuCount": 2})
    first = functions.create(
        SLEEPER, CapacityProviderConfig=_attached(name), MemorySize=1024, Timeout=30
    )["FunctionName"]
    second = functions.create(
        SLEEPER, CapacityProviderConfig=_attached(name), MemorySize=1024, Timeout=30
    )["FunctionName"]

    def one(args: tuple[str, float]) -> str:
        fn, sleep = args
        try:
            lam.invoke(FunctionName=fn, Payload=json.dumps({"sleep": sleep}))
            return "ok"
        except ClientError as e:
            return str(e.response["Error"]["Code"])

    with ThreadPoolExecutor(5) as pool:
        results = sorted(pool.map(one, [(first, 2.0)] * 3 + [(second, 2.0)] * 2))
    assert results == ["TooManyRequestsException", "ok", "ok", "ok", "ok"]
    lam.update_capacity_provider(
        CapacityProviderName=name, CapacityProviderScalingConfig={"MaxVCpuCount": 15000}
    )
    with ThreadPoolExecutor(5) as pool:
        results = sorted(pool.map(one, [(first, 1.0)] * 3 + [(second, 1.0)] * 2))
    assert results == ["ok"] * 5


def test_providers_attachments_and_scaling_survive_a_restart(
    own_server: Callable[..., Server],
) -> None:
    srv = own_server()
    lam = srv.client()
    fns = Functions(lam)
    name = f"cp-{uuid.uuid4().hex[:8]}"
    lam.create_capacity_provider(
        CapacityProviderName=name,
        VpcConfig=VPC,
        PermissionsConfig=OPERATOR,
        CapacityProviderScalingConfig={"MaxVCpuCount": 4},
    )
    fn = fns.create(SLEEPER, CapacityProviderConfig=_attached(name))["FunctionName"]
    lam.publish_version(FunctionName=fn)
    lam.put_function_scaling_config(
        FunctionName=fn,
        Qualifier="1",
        FunctionScalingConfig={"MinExecutionEnvironments": 1, "MaxExecutionEnvironments": 1},
    )
    lam.put_function_recursion_config(FunctionName=fn, RecursiveLoop="Allow")
    before = lam.get_capacity_provider(CapacityProviderName=name)["CapacityProvider"]
    srv.stop()
    srv.start()
    assert lam.get_capacity_provider(CapacityProviderName=name)["CapacityProvider"] == before
    assert lam.get_function(FunctionName=fn, Qualifier="1")["Configuration"][
        "CapacityProviderConfig"
    ] == _attached(name)
    assert lam.get_function_recursion_config(FunctionName=fn)["RecursiveLoop"] == "Allow"
    wait_for(lambda: _environments(srv, fn) == {"1": 1}, 30, "the minimum started again")
    assert _burst(lam, fn, "1", 2, sleep=1.0) == ["TooManyRequestsException", "ok"]
    fns.cleanup()
