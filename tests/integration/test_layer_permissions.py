"""Layer version permissions: AddLayerVersionPermission, GetLayerVersionPolicy,
RemoveLayerVersionPermission, and what they allow callers without identity permissions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import ROLE, Functions, Server, make_zip
from tests.integration.test_authorization import client, new_key

pytestmark = pytest.mark.control_plane

ACCOUNT = "000000000000"
CODE = "def handler(event, context):\n    return 1\n"


def error(exc: pytest.ExceptionInfo[Any]) -> tuple[str, str, int]:
    e = exc.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def layer(lam: Any) -> Iterator[dict[str, Any]]:
    name = f"l-{uuid.uuid4().hex[:10]}"
    resp: dict[str, Any] = lam.publish_layer_version(
        LayerName=name, Content={"ZipFile": make_zip({"python/lib.py": "X = 1\n"})}
    )
    yield resp
    lam.delete_layer_version(LayerName=name, VersionNumber=resp["Version"])


def name_of(layer: dict[str, Any]) -> tuple[str, int]:
    return layer["LayerArn"].rsplit(":", 1)[1], layer["Version"]


def test_add_get_remove(lam: Any, layer: dict[str, Any]) -> None:
    name, version = name_of(layer)
    arn = layer["LayerVersionArn"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_layer_version_policy(LayerName=name, VersionNumber=version)
    assert error(exc) == (
        "ResourceNotFoundException",
        "No policy is associated with the given resource.",
        404,
    )

    added = lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=version,
        StatementId="xaccount",
        Action="lambda:GetLayerVersion",
        Principal="111122223333",
    )
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    first = {
        "Sid": "xaccount",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "lambda:GetLayerVersion",
        "Resource": arn,
    }
    assert json.loads(added["Statement"]) == first
    org = lam.add_layer_version_permission(
        LayerName=layer["LayerArn"],  # the layer's ARN names it as well
        VersionNumber=version,
        StatementId="org",
        Action="lambda:GetLayerVersion",
        Principal="*",
        OrganizationId="o-abcdefghij",
        RevisionId=added["RevisionId"],
    )
    second = {
        "Sid": "org",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "lambda:GetLayerVersion",
        "Resource": arn,
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}},
    }
    assert json.loads(org["Statement"]) == second
    got = lam.get_layer_version_policy(LayerName=name, VersionNumber=version)
    assert got["RevisionId"] == org["RevisionId"] != added["RevisionId"]
    assert json.loads(got["Policy"]) == {
        "Version": "2012-10-17",
        "Id": "default",
        "Statement": [first, second],
    }

    with pytest.raises(lam.exceptions.ResourceConflictException) as conflict:
        lam.add_layer_version_permission(
            LayerName=name,
            VersionNumber=version,
            StatementId="org",
            Action="lambda:GetLayerVersion",
            Principal="*",
        )
    assert error(conflict)[2] == 409
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_layer_version_permission(
            LayerName=name, VersionNumber=version, StatementId="org", RevisionId=added["RevisionId"]
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as missing:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=version, StatementId="x")
    assert error(missing)[1] == "Statement x is not found in resource policy."

    removed = lam.remove_layer_version_permission(
        LayerName=name, VersionNumber=version, StatementId="org", RevisionId=org["RevisionId"]
    )
    assert removed["ResponseMetadata"]["HTTPStatusCode"] == 204
    lam.remove_layer_version_permission(
        LayerName=name, VersionNumber=version, StatementId="xaccount"
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_policy(LayerName=name, VersionNumber=version)


def test_bad_input(lam: Any, lam_unchecked: Any, layer: dict[str, Any]) -> None:
    name, version = name_of(layer)
    good = {
        "LayerName": name,
        "VersionNumber": version,
        "StatementId": "s",
        "Action": "lambda:GetLayerVersion",
        "Principal": "*",
    }
    for bad in (
        {"Action": "lambda:InvokeFunction"},
        {"Principal": "events.amazonaws.com"},
        {"Principal": "arn:aws:iam::111122223333:user/u"},
        {"StatementId": "bad id"},
        {"OrganizationId": "org"},
    ):
        with pytest.raises(ClientError) as exc:
            lam_unchecked.add_layer_version_permission(**(good | bad))
        assert error(exc)[0] == "ValidationException", bad
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.add_layer_version_permission(
            **(good | {"Principal": "111122223333", "OrganizationId": "o-abcdefghij"})
        )
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.add_layer_version_permission(**good, RevisionId=str(uuid.uuid4()))
    for where in ({"VersionNumber": version + 1}, {"LayerName": "no-such-layer"}):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            lam.add_layer_version_permission(**(good | where))
        wanted = f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:" + (
            f"{(good | where)['LayerName']}:{(good | where)['VersionNumber']}"
        )
        assert error(exc) == (
            "ResourceNotFoundException",
            f"Layer version {wanted} does not exist.",
            404,
        )
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_layer_version_policy(
                LayerName=(good | where)["LayerName"], VersionNumber=(good | where)["VersionNumber"]
            )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_policy(LayerName=name, VersionNumber=version)  # nothing written


def test_policy_goes_with_the_version(lam: Any) -> None:
    name = f"l-{uuid.uuid4().hex[:10]}"
    zipped = make_zip({"python/lib.py": "X = 1\n"})
    v1 = lam.publish_layer_version(LayerName=name, Content={"ZipFile": zipped})["Version"]
    lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=v1,
        StatementId="all",
        Action="lambda:GetLayerVersion",
        Principal="*",
    )
    lam.delete_layer_version(LayerName=name, VersionNumber=v1)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_policy(LayerName=name, VersionNumber=v1)
    v2 = lam.publish_layer_version(LayerName=name, Content={"ZipFile": zipped})["Version"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_policy(LayerName=name, VersionNumber=v2)
    lam.delete_layer_version(LayerName=name, VersionNumber=v2)


def test_the_policy_grants_use_of_the_layer(
    functions: Functions, lam: Any, server: Server, tmp_path: Path, layer: dict[str, Any]
) -> None:
    name, version = name_of(layer)
    arn = layer["LayerVersionArn"]
    # A key that may manage functions but has no lambda:GetLayerVersion of its own.
    key = new_key(
        server,
        tmp_path,
        {
            "Effect": "Allow",
            "Action": ["lambda:CreateFunction", "lambda:UpdateFunctionConfiguration"],
            "Resource": "*",
        },
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"},
    )
    user = client(server, key)
    fn = f"t-{uuid.uuid4().hex[:12]}"
    create = {
        "FunctionName": fn,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": make_zip({"app.py": CODE})},
        "Layers": [arn],
    }

    def denied(call: Any) -> str:
        with pytest.raises(ClientError) as exc:
            call()
        code, message, status = error(exc)
        assert (code, status) == ("AccessDeniedException", 403)
        return message

    message = denied(lambda: user.create_function(**create))
    assert f"lambda:GetLayerVersion on resource: {arn}" in message
    assert "no identity-based policy allows" in message
    denied(lambda: user.get_layer_version(LayerName=name, VersionNumber=version))
    denied(lambda: user.get_layer_version_by_arn(Arn=arn))

    # An organization's accounts only: callers here belong to none.
    lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=version,
        StatementId="org",
        Action="lambda:GetLayerVersion",
        Principal="*",
        OrganizationId="o-abcdefghij",
    )
    denied(lambda: user.create_function(**create))
    # Another account only.
    lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=version,
        StatementId="other",
        Action="lambda:GetLayerVersion",
        Principal="111122223333",
    )
    denied(lambda: user.get_layer_version_by_arn(Arn=arn))

    # This account: the caller's.
    lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=version,
        StatementId="mine",
        Action="lambda:GetLayerVersion",
        Principal=ACCOUNT,
    )
    assert user.get_layer_version(LayerName=name, VersionNumber=version)["Version"] == version
    assert user.get_layer_version_by_arn(Arn=arn)["LayerVersionArn"] == arn
    user.create_function(**create)
    functions.names.append(fn)
    assert [x["Arn"] for x in lam.get_function(FunctionName=fn)["Configuration"]["Layers"]] == [arn]

    lam.remove_layer_version_permission(LayerName=name, VersionNumber=version, StatementId="mine")
    lam.get_waiter("function_active_v2").wait(
        FunctionName=fn, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    denied(lambda: user.update_function_configuration(FunctionName=fn, Layers=[arn]))
    # Leaving the layers alone needs no permission on them.
    user.update_function_configuration(FunctionName=fn, Description="d")


def test_policies_and_tags_survive_a_restart(own_server: Any, tmp_path: Path) -> None:
    srv = own_server()
    lam = srv.client()
    name = f"l-{uuid.uuid4().hex[:10]}"
    zipped = make_zip({"python/lib.py": "X = 1\n"})
    layer = lam.publish_layer_version(LayerName=name, Content={"ZipFile": zipped})
    lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=1,
        StatementId="mine",
        Action="lambda:GetLayerVersion",
        Principal=ACCOUNT,
    )
    policy = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    fn = "tagged"
    lam.create_function(
        FunctionName=fn,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": CODE})},
        Tags={"team": "a"},
    )
    lam.tag_resource(Resource=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{fn}", Tags={"b": "2"})
    assert srv.stop() == 0, srv.log()

    srv = own_server(srv.data_dir)
    lam = srv.client()
    again = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert (again["Policy"], again["RevisionId"]) == (policy["Policy"], policy["RevisionId"])
    assert lam.list_tags(Resource=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{fn}")["Tags"] == {
        "team": "a",
        "b": "2",
    }
    # Loaded, not only stored: the policy still lets a key without permissions read it.
    key = new_key(srv, tmp_path)
    user = client(srv, key)
    assert user.get_layer_version_by_arn(Arn=layer["LayerVersionArn"])["Version"] == 1
