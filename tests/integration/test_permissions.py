"""Resource-based policies: AddPermission, RemovePermission and GetPolicy through boto3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from tests.conftest import ROLE, Functions, Server, make_zip

pytestmark = pytest.mark.control_plane

_MODEL = botocore.session.get_session().get_service_model("lambda")
CODE = "def handler(event, context):\n    return 1\n"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"
RULE = "arn:aws:events:us-east-1:000000000000:rule/r"


def error(exc: pytest.ExceptionInfo[Any]) -> tuple[str, str, int]:
    e = exc.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def members(data: dict[str, Any], shape_name: str) -> None:
    shape: Any = _MODEL.shape_for(shape_name)
    assert not set(data) - set(shape.members) - {"ResponseMetadata"}, data


def test_add_get_remove(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE)["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_policy(FunctionName=name)
    assert error(exc) == (
        "ResourceNotFoundException",
        "The resource you requested does not exist.",
        404,
    )

    added = lam.add_permission(
        FunctionName=name,
        StatementId="events",
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
        SourceArn=RULE,
        SourceAccount="000000000000",
    )
    members(added, "AddPermissionResponse")
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert json.loads(added["Statement"]) == {
        "Sid": "events",
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": ARN + name,
        "Condition": {
            "StringEquals": {"AWS:SourceAccount": "000000000000"},
            "ArnLike": {"AWS:SourceArn": RULE},
        },
    }
    lam.add_permission(
        FunctionName=name,
        StatementId="url",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
    )
    via = lam.add_permission(
        FunctionName=name,
        StatementId="via-url",
        Action="lambda:InvokeFunction",
        Principal="*",
        InvokedViaFunctionUrl=True,
    )
    assert json.loads(via["Statement"])["Condition"] == {
        "Bool": {"lambda:InvokedViaFunctionUrl": "true"}
    }
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.add_permission(
            FunctionName=name,
            StatementId="bad-via",
            Action="lambda:GetFunction",
            Principal="*",
            InvokedViaFunctionUrl=True,
        )
    lam.remove_permission(FunctionName=name, StatementId="via-url")
    lam.add_permission(
        FunctionName=name, StatementId="acct", Action="lambda:*", Principal="111122223333"
    )
    lam.add_permission(
        FunctionName=name,
        StatementId="user",
        Action="lambda:GetFunction",
        Principal="arn:aws:iam::000000000000:user/alice",
    )
    got = lam.get_policy(FunctionName=name)
    members(got, "GetPolicyResponse")
    policy = json.loads(got["Policy"])
    assert policy["Version"] == "2012-10-17" and policy["Id"] == "default"
    assert [s["Sid"] for s in policy["Statement"]] == ["events", "url", "acct", "user"]
    assert policy["Statement"][1]["Principal"] == "*"
    assert policy["Statement"][1]["Condition"] == {
        "StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}
    }
    assert policy["Statement"][2]["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    assert policy["Statement"][3]["Principal"] == {"AWS": "arn:aws:iam::000000000000:user/alice"}

    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        lam.add_permission(FunctionName=name, StatementId="url", Action="lambda:*", Principal="*")
    assert error(exc) == (
        "ResourceConflictException",
        "The statement id (url) provided already exists. Please provide a new statement id, "
        "or remove the existing statement.",
        409,
    )
    revision = got["RevisionId"]
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_permission(FunctionName=name, StatementId="url", RevisionId="nope")
    lam.remove_permission(FunctionName=name, StatementId="url", RevisionId=revision)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.remove_permission(FunctionName=name, StatementId="url")
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.add_permission(
            FunctionName=name, StatementId="x", Action="*", Principal="*", RevisionId=revision
        )
    after = lam.get_policy(FunctionName=name)
    assert after["RevisionId"] != revision
    for sid in ("events", "acct", "user"):
        lam.remove_permission(FunctionName=name, StatementId=sid)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)


def test_refusals(functions: Functions, lam: Any, lam_unchecked: Any) -> None:
    name = functions.create(CODE)["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.add_permission(FunctionName=name, StatementId="a", Action="lambda:*", Principal="bob")
    assert "principal was invalid" in error(exc)[1]
    for bad in (
        {"StatementId": "a b", "Action": "lambda:*", "Principal": "*"},
        {"StatementId": "a", "Action": "s3:GetObject", "Principal": "*"},
        {"StatementId": "a", "Action": "lambda:*", "Principal": "*", "SourceAccount": "12"},
        {"StatementId": "a", "Action": "lambda:*", "Principal": "*", "FunctionUrlAuthType": "X"},
    ):
        with pytest.raises(lam.exceptions.ClientError) as exc:
            lam_unchecked.add_permission(FunctionName=name, **bad)
        assert error(exc)[0] == "ValidationException", bad
    long_arn = "arn:aws:events:us-east-1:000000000000:rule/" + "r" * 6000
    for i in range(3):
        lam.add_permission(
            FunctionName=name, StatementId=f"s{i}", Action="*", Principal="*", SourceArn=long_arn
        )
    with pytest.raises(lam.exceptions.PolicyLengthExceededException):
        lam.add_permission(
            FunctionName=name, StatementId="s4", Action="*", Principal="*", SourceArn=long_arn
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.add_permission(FunctionName="nope-none", StatementId="a", Action="*", Principal="*")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_policy(FunctionName=name, Qualifier="nosuchalias")
    assert error(exc)[1] == f"Function not found: {ARN}{name}:nosuchalias"


def test_qualified_policies_and_deletion(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.add_permission(
        FunctionName=name, Qualifier="live", StatementId="a", Action="*", Principal="*"
    )
    lam.add_permission(FunctionName=f"{name}:1", StatementId="v", Action="*", Principal="*")
    live = json.loads(lam.get_policy(FunctionName=name, Qualifier="live")["Policy"])
    assert live["Statement"][0]["Resource"] == f"{ARN}{name}:live"
    assert (
        json.loads(lam.get_policy(FunctionName=f"{ARN}{name}:1")["Policy"])["Statement"][0][
            "Resource"
        ]
        == f"{ARN}{name}:1"
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)  # the unqualified function has none of its own
    lam.delete_alias(FunctionName=name, Name="live")
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name, Qualifier="live")  # went with the alias
    lam.delete_alias(FunctionName=name, Name="live")
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name, Qualifier="1")
    lam.add_permission(FunctionName=name, StatementId="f", Action="*", Principal="*")
    lam.delete_function(FunctionName=name)
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": CODE})},
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)  # went with the function


def test_policies_survive_a_restart(tmp_path: Path) -> None:
    server = Server(data_dir=tmp_path / "data").start()
    try:
        lam = server.client()
        lam.create_function(
            FunctionName="kept",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": CODE})},
        )
        lam.add_permission(FunctionName="kept", StatementId="s", Action="*", Principal="*")
        before = lam.get_policy(FunctionName="kept")
    finally:
        assert server.stop() == 0
    server = Server(data_dir=tmp_path / "data").start()
    try:
        after = server.client().get_policy(FunctionName="kept")
        assert (after["Policy"], after["RevisionId"]) == (before["Policy"], before["RevisionId"])
    finally:
        assert server.stop() == 0
