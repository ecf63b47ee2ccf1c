"""Tags by resource ARN: TagResource, UntagResource, ListTags, and CreateFunction's Tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import Functions, Server
from tests.integration.test_authorization import client, new_key

pytestmark = pytest.mark.control_plane

CODE = "def handler(event, context):\n    return 1\n"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


def error(exc: pytest.ExceptionInfo[Any]) -> tuple[str, str, int]:
    e = exc.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def test_tag_list_untag(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE, Tags={"team": "a"})["FunctionName"]
    arn = ARN + name
    listed = lam.list_tags(Resource=arn)
    assert listed["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert listed["Tags"] == {"team": "a"}

    tagged = lam.tag_resource(Resource=arn, Tags={"team": "b", "env": "prod", "empty": ""})
    assert tagged["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "b", "env": "prod", "empty": ""}
    assert lam.get_function(FunctionName=name)["Tags"] == {
        "team": "b",
        "env": "prod",
        "empty": "",
    }

    untagged = lam.untag_resource(Resource=arn, TagKeys=["team", "absent"])
    assert untagged["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "prod", "empty": ""}
    lam.untag_resource(Resource=arn, TagKeys=["env", "empty"])
    assert lam.list_tags(Resource=arn)["Tags"] == {}
    assert "Tags" not in lam.get_function(FunctionName=name)


def test_tags_go_with_the_function(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE)["FunctionName"]
    lam.tag_resource(Resource=ARN + name, Tags={"k": "v"})
    lam.delete_function(FunctionName=name)
    # A new function of the same name starts without the old one's tags.
    functions.create(CODE, FunctionName=name)
    assert lam.list_tags(Resource=ARN + name)["Tags"] == {}


def test_unknown_function(lam: Any) -> None:
    arn = ARN + "no-such-function"
    for call in (
        lambda: lam.list_tags(Resource=arn),
        lambda: lam.tag_resource(Resource=arn, Tags={"k": "v"}),
        lambda: lam.untag_resource(Resource=arn, TagKeys=["k"]),
    ):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            call()
        assert error(exc) == ("ResourceNotFoundException", f"Function not found: {arn}", 404)
    other = "arn:aws:lambda:us-east-1:111111111111:function:f"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=other)


def test_versions_and_aliases_have_no_tags(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    for qualified in (f"{ARN}{name}:1", f"{ARN}{name}:live"):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            lam.tag_resource(Resource=qualified, Tags={"k": "v"})
        assert error(exc) == (
            "InvalidParameterValueException",
            "Tags on function aliases and versions are not supported. Please specify a "
            "function ARN.",
            400,
        )
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.list_tags(Resource=qualified)


def test_limits(functions: Functions, lam: Any, lam_unchecked: Any) -> None:
    name = functions.create(CODE, Tags={f"k{i}": "v" for i in range(40)})["FunctionName"]
    arn = ARN + name
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.tag_resource(Resource=arn, Tags={f"n{i}": "v" for i in range(11)})
    assert error(exc)[0] == "InvalidParameterValueException"
    assert "tag limit" in error(exc)[1]
    assert len(lam.list_tags(Resource=arn)["Tags"]) == 40  # nothing half-written
    # Replacing existing keys does not count them twice.
    lam.tag_resource(Resource=arn, Tags={f"k{i}": "w" for i in range(40)} | {"x": "1"})
    assert len(lam.list_tags(Resource=arn)["Tags"]) == 41

    for bad in ({"aws:x": "v"}, {"AWS:Owner": "v"}):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            lam.tag_resource(Resource=arn, Tags=bad)
        assert "reserved" in error(exc)[1]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.untag_resource(Resource=arn, TagKeys=["aws:x"])

    for bad in ({"k" * 129: "v"}, {"k": "v" * 257}, {"": "v"}, {"k!": "v"}):
        with pytest.raises(lam_unchecked.exceptions.ClientError) as exc:
            lam_unchecked.tag_resource(Resource=arn, Tags=bad)
        assert error(exc)[0] == "ValidationException", bad
    lam.tag_resource(Resource=arn, Tags={"k" * 128: "v" * 256, "é ü:/=+-@.": "ok"})
    assert lam.list_tags(Resource=arn)["Tags"]["é ü:/=+-@."] == "ok"

    with pytest.raises(lam_unchecked.exceptions.ClientError) as exc:
        lam_unchecked.tag_resource(Resource="arn:aws:s3:::bucket", Tags={"k": "v"})
    assert error(exc)[0] == "ValidationException"


def test_create_function_checks_tags(functions: Functions, lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        functions.create(CODE, Tags={f"k{i}": "v" for i in range(51)})
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        functions.create(CODE, Tags={"aws:k": "v"})
    assert not [
        f for f in lam.list_functions()["Functions"] if f["FunctionName"] in functions.names
    ]


def test_get_function_shows_tags_only_to_who_may_list_them(
    functions: Functions, lam: Any, server: Server, tmp_path: Path
) -> None:
    name = functions.create(CODE, Tags={"team": "a"})["FunctionName"]
    arn = ARN + name
    get = {"Effect": "Allow", "Action": "lambda:GetFunction", "Resource": arn}
    reader = client(server, new_key(server, tmp_path, get))
    got = reader.get_function(FunctionName=name)
    assert "Tags" not in got
    assert got["TagsError"]["ErrorCode"] == "AccessDeniedException"
    assert got["TagsError"]["Message"].endswith(
        f"is not authorized to perform: lambda:ListTags on resource: {arn} because no "
        "identity-based policy allows the lambda:ListTags action"
    )
    lister = client(
        server,
        new_key(
            server, tmp_path, get, {"Effect": "Allow", "Action": "lambda:ListTags", "Resource": arn}
        ),
    )
    got = lister.get_function(FunctionName=name)
    assert got["Tags"] == {"team": "a"} and "TagsError" not in got
    assert lister.list_tags(Resource=arn)["Tags"] == {"team": "a"}
    # TagResource is an action of its own.
    with pytest.raises(ClientError) as exc:
        lister.tag_resource(Resource=arn, Tags={"k": "v"})
    assert error(exc)[0] == "AccessDeniedException"
