"""GetResourcePolicy, PutResourcePolicy, DeleteResourcePolicy: a function's whole policy."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.conftest import Functions

pytestmark = pytest.mark.control_plane

CODE = "def handler(event, context):\n    return 1\n"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


def error(exc: pytest.ExceptionInfo[Any]) -> tuple[str, str, int]:
    e = exc.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def document(resource: str, sid: str = "all") -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
                "Resource": resource,
            }
        ],
    }


def test_put_get_delete(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE)["FunctionName"]
    arn = ARN + name
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_resource_policy(ResourceArn=arn)

    put = lam.put_resource_policy(ResourceArn=arn, Policy=json.dumps(document(arn)))
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert json.loads(put["Policy"]) == document(arn)
    got = lam.get_resource_policy(ResourceArn=arn)
    assert (got["Policy"], got["RevisionId"]) == (put["Policy"], put["RevisionId"])
    # The same policy GetPolicy shows and AddPermission extends.
    assert lam.get_policy(FunctionName=name)["Policy"] == put["Policy"]
    lam.add_permission(
        FunctionName=name,
        StatementId="s3",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
    )
    sids = [
        s["Sid"]
        for s in json.loads(lam.get_resource_policy(ResourceArn=arn)["Policy"])["Statement"]
    ]
    assert sids == ["all", "s3"]

    current = lam.get_resource_policy(ResourceArn=arn)["RevisionId"]
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.put_resource_policy(
            ResourceArn=arn, Policy=json.dumps(document(arn)), RevisionId=put["RevisionId"]
        )
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.delete_resource_policy(ResourceArn=arn, RevisionId=put["RevisionId"])
    replaced = lam.put_resource_policy(
        ResourceArn=arn, Policy=json.dumps(document(arn, "new")), RevisionId=current
    )
    assert replaced["RevisionId"] != current
    deleted = lam.delete_resource_policy(ResourceArn=arn, RevisionId=replaced["RevisionId"])
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_resource_policy(ResourceArn=arn)


def test_qualified_and_missing(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for qualifier in ("1", "live"):
        arn = f"{ARN}{name}:{qualifier}"
        lam.put_resource_policy(ResourceArn=arn, Policy=json.dumps(document(arn)))
        assert lam.get_policy(FunctionName=name, Qualifier=qualifier)["Policy"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_resource_policy(ResourceArn=ARN + name)  # the unqualified one has none
    # $LATEST is the unqualified function's policy.
    lam.put_resource_policy(ResourceArn=f"{ARN}{name}:$LATEST", Policy=json.dumps(document("*")))
    assert lam.get_resource_policy(ResourceArn=ARN + name)["Policy"]

    for missing in (f"{ARN}{name}:9", f"{ARN}{name}:nope", ARN + "no-such-function"):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            lam.put_resource_policy(ResourceArn=missing, Policy=json.dumps(document("*")))
        assert error(exc) == ("ResourceNotFoundException", f"Function not found: {missing}", 404)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_resource_policy(
            ResourceArn="arn:aws:lambda:us-east-1:000000000000:runtime/python3.12"
        )


def test_bad_input(functions: Functions, lam: Any, lam_unchecked: Any) -> None:
    name = functions.create(CODE)["FunctionName"]
    arn = ARN + name
    for bad in ("not json", "{}", json.dumps({"Statement": [{"Effect": "Allow"}]})):
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.put_resource_policy(ResourceArn=arn, Policy=bad)
    with pytest.raises(lam_unchecked.exceptions.ClientError) as exc:
        lam_unchecked.put_resource_policy(ResourceArn="arn:aws:s3:::b", Policy="{}")
    assert error(exc)[0] == "ValidationException"
    with pytest.raises(lam_unchecked.exceptions.ClientError) as exc:
        lam_unchecked.put_resource_policy(
            ResourceArn=arn, Policy=json.dumps(document(arn)), RevisionId="x"
        )
    assert error(exc)[0] == "ValidationException"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)  # nothing half-written
