"""The function operations through boto3, checked against what Lambda returns."""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.exceptions import ClientError
from tests.conftest import ROLE, Functions, Server, make_zip

pytestmark = pytest.mark.control_plane

HELLO = "def handler(event, context):\n    return {'hello': event.get('name', 'world')}\n"
ARN = re.compile(r"arn:aws:lambda:us-east-1:000000000000:function:[a-zA-Z0-9_-]+")
LAST_MODIFIED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000")

_MODEL = botocore.session.get_session().get_service_model("lambda")


def assert_shape(data: dict[str, Any], shape_name: str) -> None:
    """Every member we return is a member of botocore's shape (no invented fields)."""
    shape = _MODEL.shape_for(shape_name)
    unknown = set(data) - set(shape.members) - {"ResponseMetadata"}
    assert not unknown, f"{shape_name} has no members {unknown}"


def test_create_returns_what_lambda_fills(functions: Functions) -> None:
    zipped = make_zip({"app.py": HELLO})
    resp = functions.create(HELLO, wait=False, Description="first", Timeout=7, MemorySize=256)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert ARN.fullmatch(resp["FunctionArn"])
    assert resp["FunctionArn"].endswith(":function:" + resp["FunctionName"])
    assert resp["Runtime"] == "python3.11"
    assert resp["Handler"] == "app.handler"
    assert resp["Role"] == ROLE
    assert resp["Version"] == "$LATEST"
    assert resp["CodeSize"] == len(zipped)
    assert resp["CodeSha256"] == base64.b64encode(hashlib.sha256(zipped).digest()).decode()
    assert LAST_MODIFIED.fullmatch(resp["LastModified"])
    assert re.fullmatch(r"[0-9a-f-]{36}", resp["RevisionId"])
    assert (resp["Description"], resp["Timeout"], resp["MemorySize"]) == ("first", 7, 256)
    assert resp["State"] == "Pending"
    assert resp["StateReasonCode"] == "Creating"
    assert resp["PackageType"] == "Zip"
    assert resp["EphemeralStorage"] == {"Size": 512}
    assert_shape(resp, "FunctionConfiguration")


def test_function_becomes_active_and_waiters_work(functions: Functions, lam: Any) -> None:
    name = functions.create(HELLO)["FunctionName"]  # waits with function_active_v2
    config = lam.get_function_configuration(FunctionName=name)
    assert config["State"] == "Active"
    assert config["LastUpdateStatus"] == "Successful"
    assert "StateReason" not in config


def test_defaults(functions: Functions, lam: Any) -> None:
    name = functions.create(HELLO)["FunctionName"]
    config = lam.get_function_configuration(FunctionName=name)
    assert (config["Timeout"], config["MemorySize"], config["Description"]) == (3, 128, "")
    assert config["Architectures"] == ["x86_64"]


def test_get_function_has_code_location_and_tags(functions: Functions, lam: Any) -> None:
    zipped = make_zip({"app.py": HELLO})
    name = functions.create(HELLO, Tags={"team": "core"})["FunctionName"]
    resp = lam.get_function(FunctionName=name)
    assert_shape(resp, "GetFunctionResponse")
    assert resp["Configuration"]["FunctionName"] == name
    assert resp["Tags"] == {"team": "core"}
    assert resp["Code"]["RepositoryType"] == "S3"
    download = httpx.get(resp["Code"]["Location"])
    assert download.status_code == 200
    assert download.content == zipped


@pytest.mark.parametrize("form", ["name", "partial", "arn"])
def test_function_name_forms(functions: Functions, lam: Any, form: str) -> None:
    name = functions.create(HELLO)["FunctionName"]
    ref = {
        "name": name,
        "partial": f"000000000000:function:{name}",
        "arn": f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
    }[form]
    assert lam.get_function(FunctionName=ref)["Configuration"]["FunctionName"] == name
    assert lam.invoke(FunctionName=ref)["StatusCode"] == 200


def test_arn_of_another_account_or_region_is_refused(functions: Functions, lam: Any) -> None:
    """As Lambda answers: another account's ARN is AccessDeniedException, another region's
    is ResourceNotFoundException saying the region is not reachable."""
    name = functions.create(HELLO)["FunctionName"]
    with pytest.raises(lam.exceptions.ClientError) as denied:
        lam.get_function(FunctionName=f"arn:aws:lambda:us-east-1:111111111111:function:{name}")
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as elsewhere:
        lam.get_function(FunctionName=f"arn:aws:lambda:eu-west-1:000000000000:function:{name}")
    assert elsewhere.value.response["Error"]["Message"] == (
        "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"
    )


def test_list_functions_paginates(functions: Functions, lam: Any) -> None:
    names = {functions.create(HELLO, wait=False)["FunctionName"] for _ in range(5)}
    first = lam.list_functions(MaxItems=2)
    assert len(first["Functions"]) == 2
    assert first["NextMarker"]
    seen = []
    for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}):
        assert len(page["Functions"]) <= 2
        seen += [f["FunctionName"] for f in page["Functions"]]
        for f in page["Functions"]:
            assert_shape(f, "FunctionConfiguration")
    assert names <= set(seen)
    assert len(seen) == len(set(seen)), "a function was listed twice"


def test_list_rejects_bad_max_items(lam: Any) -> None:
    with pytest.raises(ClientError) as e:
        lam.list_functions(MaxItems=10001)
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_update_code_changes_sha_and_revision(functions: Functions, lam: Any) -> None:
    created = functions.create(HELLO)
    name = created["FunctionName"]
    new_code = make_zip({"app.py": "def handler(e, c):\n    return 'v2'\n"})
    resp = lam.update_function_code(FunctionName=name, ZipFile=new_code)
    assert resp["LastUpdateStatus"] == "InProgress"
    assert resp["RevisionId"] != created["RevisionId"]
    assert resp["CodeSha256"] == base64.b64encode(hashlib.sha256(new_code).digest()).decode()
    assert resp["CodeSize"] == len(new_code)
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    assert lam.get_function(FunctionName=name)["Configuration"]["LastUpdateStatus"] == "Successful"
    assert lam.invoke(FunctionName=name)["Payload"].read() == b'"v2"'


def test_update_configuration(functions: Functions, lam: Any) -> None:
    created = functions.create(
        {"app.py": HELLO, "other.py": "import os\ndef run(e, c):\n    return os.environ['KEY']\n"}
    )
    name = created["FunctionName"]
    resp = lam.update_function_configuration(
        FunctionName=name,
        Handler="other.run",
        Timeout=30,
        MemorySize=512,
        Description="changed",
        Environment={"Variables": {"KEY": "v"}},
    )
    assert resp["LastUpdateStatus"] == "InProgress"
    assert resp["RevisionId"] != created["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    config = lam.get_function_configuration(FunctionName=name)
    assert config["Handler"] == "other.run"
    assert (config["Timeout"], config["MemorySize"]) == (30, 512)
    assert config["Description"] == "changed"
    assert config["Environment"] == {"Variables": {"KEY": "v"}}
    assert config["CodeSha256"] == created["CodeSha256"]
    assert lam.invoke(FunctionName=name)["Payload"].read() == b'"v"'


def test_revision_id_precondition(functions: Functions, lam: Any) -> None:
    created = functions.create(HELLO)
    name = created["FunctionName"]
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId="stale")
    ok = lam.update_function_configuration(
        FunctionName=name, Timeout=5, RevisionId=created["RevisionId"]
    )
    assert ok["Timeout"] == 5


def test_delete_function(functions: Functions, lam: Any) -> None:
    name = functions.create(HELLO)["FunctionName"]
    lam.invoke(FunctionName=name)
    resp = lam.delete_function(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_function(FunctionName=name)
    assert name in e.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name)
    # The name is free again.
    functions.create(HELLO, FunctionName=name)


def test_deleted_code_is_removed_from_disk(functions: Functions, lam: Any, server: Server) -> None:
    unique = HELLO + "# delete-me-marker\n"
    zipped = make_zip({"app.py": unique})
    sha = hashlib.sha256(zipped).hexdigest()
    name = functions.create(unique)["FunctionName"]
    lam.invoke(FunctionName=name)
    assert (server.data_dir / "code" / "zips" / f"{sha}.zip").exists()
    assert (server.data_dir / "code" / "tasks" / sha).is_dir()
    lam.delete_function(FunctionName=name)
    # Removed once the function's last environment has stopped (in the background).
    deadline = time.monotonic() + 10
    while (server.data_dir / "code" / "tasks" / sha).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (server.data_dir / "code" / "zips" / f"{sha}.zip").exists()
    assert not (server.data_dir / "code" / "tasks" / sha).exists()


def test_same_code_is_stored_once(functions: Functions, server: Server) -> None:
    code = HELLO + "# shared\n"
    sha = hashlib.sha256(make_zip({"app.py": code})).hexdigest()
    functions.create(code)
    functions.create(code)
    zips = list((server.data_dir / "code" / "zips").glob(f"{sha}*"))
    assert len(zips) == 1


def test_create_accepts_an_arn_as_name(functions: Functions, lam: Any) -> None:
    name = f"arn-{uuid.uuid4().hex[:8]}"
    resp = functions.create(
        HELLO, FunctionName=f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    )
    functions.names.append(name)
    assert resp["FunctionName"] == name
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        functions.create(HELLO, FunctionName=f"{name}-x:prod")
