"""VpcConfig: functions join the VPCs the operator defines (`lamina serve --vpc`) through
their subnets, with Lambda's validation and response shapes; `--allow-egress` and `--vpc`
refuse what can never be opened. (What a VPC opens on the network is tests/system/
test_egress.py's.)"""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ROLE, SIGNED_HTTP, Functions, Server, make_zip

HELLO = "def handler(event, context):\n    return {'ok': True}\n"
VPC_ARGS = (
    "--vpc",
    "vpc-lab=subnet-a:10.20.1.0/24,subnet-b:10.20.2.0/24",
    "--vpc",
    "vpc-other=subnet-c:172.20.0.0/16",
)


@pytest.fixture(scope="module")
def vpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(data_dir=tmp_path_factory.mktemp("vpc") / "data", extra_args=VPC_ARGS).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def vlam(vpc_server: Server) -> Any:
    return vpc_server.client()


@pytest.fixture(scope="module")
def unchecked(vpc_server: Server) -> Any:
    return vpc_server.client(parameter_validation=False)


@pytest.fixture
def fns(vlam: Any) -> Iterator[Functions]:
    f = Functions(vlam)
    yield f
    f.cleanup()


def _create(client: Any, name: str, **kw: Any) -> Any:
    return client.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": HELLO})},
        **kw,
    )


def _error(e: pytest.ExceptionInfo[Any]) -> tuple[str, str]:
    err = e.value.response["Error"]
    return err["Code"], err["Message"]


def test_function_joins_a_vpc_through_its_subnets(vlam: Any, fns: Functions) -> None:
    vpc = {"SubnetIds": ["subnet-b", "subnet-a"], "SecurityGroupIds": ["sg-123abc"]}
    created = fns.create(HELLO, VpcConfig=vpc)
    expected = {**vpc, "VpcId": "vpc-lab", "Ipv6AllowedForDualStack": False}
    assert created["VpcConfig"] == expected
    name = created["FunctionName"]
    assert vlam.get_function_configuration(FunctionName=name)["VpcConfig"] == expected
    assert vlam.get_function(FunctionName=name)["Configuration"]["VpcConfig"] == expected
    listed = [f for f in vlam.list_functions()["Functions"] if f["FunctionName"] == name]
    assert listed[0]["VpcConfig"] == expected
    out = vlam.invoke(FunctionName=name, Payload=b"{}")
    assert out["StatusCode"] == 200 and "FunctionError" not in out, out


def test_function_without_vpc_reports_none(vlam: Any, fns: Functions) -> None:
    name = fns.create(HELLO)["FunctionName"]
    assert "VpcConfig" not in vlam.get_function_configuration(FunctionName=name)


@pytest.mark.parametrize(
    ("vpc", "fragment"),
    [
        (
            {"SubnetIds": ["subnet-nowhere"], "SecurityGroupIds": ["sg-1"]},
            "Error occurred while DescribeSubnets. EC2 Error Code: InvalidSubnetID.NotFound. "
            "EC2 Error Message: The subnet ID 'subnet-nowhere' does not exist",
        ),
        (
            {"SubnetIds": ["subnet-a"]},
            "SubnetIds and SecurityIds must coexist or be both empty list.",
        ),
        ({"SecurityGroupIds": ["sg-1"]}, "must coexist"),
        (
            {"SubnetIds": ["subnet-a", "subnet-c"], "SecurityGroupIds": ["sg-1"]},
            "must all be in one VPC (subnet-a in vpc-lab, subnet-c in vpc-other)",
        ),
    ],
)
def test_bad_vpc_config_is_refused_and_creates_nothing(
    vlam: Any, vpc: dict[str, Any], fragment: str
) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    with pytest.raises(vlam.exceptions.InvalidParameterValueException) as e:
        _create(vlam, name, VpcConfig=vpc)
    assert fragment in _error(e)[1]
    with pytest.raises(vlam.exceptions.ResourceNotFoundException):
        vlam.get_function(FunctionName=name)


@pytest.mark.parametrize(
    ("vpc", "fragment"),
    [
        (
            {"SubnetIds": ["subnet-A"], "SecurityGroupIds": ["sg-1"]},
            "Value '[subnet-A]' at 'vpcConfig.subnetIds' failed to satisfy constraint: Member "
            "must satisfy constraint: [Member must have length less than or equal to 1024, "
            "Member must have length greater than or equal to 0, Member must satisfy regular "
            "expression pattern: ^subnet-[0-9a-z]*$]",
        ),
        (
            {"SubnetIds": ["subnet-a"], "SecurityGroupIds": ["group-1"]},
            "at 'vpcConfig.securityGroupIds' failed to satisfy constraint",
        ),
        (
            {"SubnetIds": [f"subnet-{i}" for i in range(17)], "SecurityGroupIds": ["sg-1"]},
            "at 'vpcConfig.subnetIds' failed to satisfy constraint: Member must have length "
            "less than or equal to 16",
        ),
        (
            {"SubnetIds": ["subnet-a"], "SecurityGroupIds": ["sg-1"], "Ipv6AllowedForDualStack": 1},
            "at 'vpcConfig.ipv6AllowedForDualStack' failed to satisfy constraint",
        ),
    ],
)
def test_malformed_vpc_config_is_a_validation_error(
    unchecked: Any, vpc: Any, fragment: str
) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    with pytest.raises(unchecked.exceptions.ClientError) as e:
        _create(unchecked, name, VpcConfig=vpc)
    code, message = _error(e)
    assert code == "ValidationException", (code, message)
    assert fragment in message


@pytest.mark.parametrize(
    ("vpc", "fragment"),
    [
        ("subnet-a", "at 'vpcConfig' failed to satisfy constraint: Member must be a structure"),
        (
            {"SubnetIds": "subnet-a", "SecurityGroupIds": ["sg-1"]},
            "at 'vpcConfig.subnetIds' failed to satisfy constraint: Member must be a list",
        ),
    ],
)
def test_vpc_config_of_the_wrong_type_is_a_validation_error(
    vpc_server: Server, vpc: Any, fragment: str
) -> None:
    # (boto3 cannot send these: raw JSON, signed)
    body = {
        "FunctionName": f"t-{uuid.uuid4().hex[:10]}",
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": base64.b64encode(make_zip({"app.py": HELLO})).decode()},
        "VpcConfig": vpc,
    }
    resp = SIGNED_HTTP.post(vpc_server.endpoint + "/2015-03-31/functions", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.headers["x-amzn-ErrorType"] == "ValidationException"
    assert fragment in resp.json()["message"]


def test_update_moves_detaches_and_versions_keep_theirs(vlam: Any, fns: Functions) -> None:
    lab = {"SubnetIds": ["subnet-a"], "SecurityGroupIds": ["sg-1"]}
    name = fns.create(HELLO, VpcConfig=lab)["FunctionName"]
    v1 = vlam.publish_version(FunctionName=name)
    assert v1["VpcConfig"]["VpcId"] == "vpc-lab"

    other = {"SubnetIds": ["subnet-c"], "SecurityGroupIds": ["sg-2", "sg-3"]}
    updated = vlam.update_function_configuration(FunctionName=name, VpcConfig=other)
    assert updated["VpcConfig"] == {**other, "VpcId": "vpc-other", "Ipv6AllowedForDualStack": False}
    vlam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    v2 = vlam.publish_version(FunctionName=name)
    assert v2["Version"] != v1["Version"]  # a new VPC is new content
    again = vlam.get_function_configuration(FunctionName=name, Qualifier=v1["Version"])
    assert again["VpcConfig"]["SubnetIds"] == ["subnet-a"]
    assert again["VpcConfig"]["VpcId"] == "vpc-lab"

    # A refused update changes nothing.
    with pytest.raises(vlam.exceptions.InvalidParameterValueException):
        vlam.update_function_configuration(
            FunctionName=name, VpcConfig={"SubnetIds": ["subnet-zz"], "SecurityGroupIds": ["sg-1"]}
        )
    assert vlam.get_function_configuration(FunctionName=name)["VpcConfig"]["VpcId"] == "vpc-other"
    # Other updates keep the VPC.
    vlam.update_function_configuration(FunctionName=name, Description="still in its VPC")
    assert vlam.get_function_configuration(FunctionName=name)["VpcConfig"]["VpcId"] == "vpc-other"

    detached = vlam.update_function_configuration(
        FunctionName=name, VpcConfig={"SubnetIds": [], "SecurityGroupIds": []}
    )
    empty = {"SubnetIds": [], "SecurityGroupIds": [], "VpcId": "", "Ipv6AllowedForDualStack": False}
    assert detached["VpcConfig"] == empty
    assert vlam.get_function_configuration(FunctionName=name)["VpcConfig"] == empty


def test_vpc_gone_after_restart_fails_invokes_not_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = Server(data_dir=data, extra_args=VPC_ARGS).start()
    try:
        lam = srv.client()
        vpc = {"SubnetIds": ["subnet-c"], "SecurityGroupIds": ["sg-1"]}
        _create(lam, "in-vpc", VpcConfig=vpc)
        _create(lam, "plain")
        lam.get_waiter("function_active_v2").wait(
            FunctionName="in-vpc", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        assert srv.stop() == 0, srv.log()
        # Restarted with vpc-lab only: vpc-other and its subnet are gone.
        srv = Server(data_dir=data, extra_args=VPC_ARGS[:2]).start()
        lam = srv.client()
        with pytest.raises(lam.exceptions.InvalidSubnetIDException) as e:
            lam.invoke(FunctionName="in-vpc", Payload=b"{}")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
        assert "subnet-c" in _error(e)[1]
        # Its configuration still says what it asked for; other functions run.
        got = lam.get_function_configuration(FunctionName="in-vpc")["VpcConfig"]
        assert got["SubnetIds"] == ["subnet-c"] and got["VpcId"] == "vpc-other"
        assert lam.invoke(FunctionName="plain", Payload=b"{}")["StatusCode"] == 200
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--allow-egress", "169.254.169.254"), "inside 169.254.0.0/16"),
        (("--allow-egress", "10.213.4.0/24"), "inside 10.213.0.0/16"),
        (("--allow-egress", "10.1.2.3/8"), "has host bits set"),
        (("--allow-egress", "nonsense"), "is not a network"),
        (("--vpc", "lab=subnet-a:10.0.0.0/8"), "expected VPC_ID=SUBNET_ID:CIDR"),
        (("--vpc", "vpc-lab=10.0.0.0/8"), "is not SUBNET_ID:CIDR"),
        (("--vpc", "vpc-lab=subnet-a:fe80::/64"), "inside fe80::/10"),
        (
            ("--vpc", "vpc-a=subnet-x:10.1.0.0/16", "--vpc", "vpc-b=subnet-x:10.2.0.0/16"),
            "subnet subnet-x is in both vpc-a and vpc-b",
        ),
    ],
)
def test_serve_refuses_what_cannot_be_opened(
    tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lamina", "serve", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert fragment in done.stderr, done.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was made
