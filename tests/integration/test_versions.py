"""Function versions: PublishVersion, ListVersionsByFunction, and qualified reads, invokes
and deletes, as Lambda has them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import ROLE, Functions, Server, make_zip

pytestmark = pytest.mark.control_plane


def code(answer: str) -> str:
    return f"def handler(event, context):\n    return [{answer!r}, context.invoked_function_arn]\n"


def call(lam: Any, name: str, **kw: Any) -> tuple[dict[str, Any], Any]:
    resp = lam.invoke(FunctionName=name, **kw)
    return resp, json.loads(resp["Payload"].read())


def update_code(lam: Any, name: str, answer: str, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = lam.update_function_code(
        FunctionName=name, ZipFile=make_zip({"app.py": code(answer)}), **kw
    )
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    return out


def test_publish_snapshots_latest_and_versions_stay_as_published(
    functions: Functions, lam: Any
) -> None:
    name = functions.create(code("one"), Description="first")["FunctionName"]
    v1 = lam.publish_version(FunctionName=name)
    assert v1["Version"] == "1"
    assert v1["FunctionArn"].endswith(f":function:{name}:1")
    assert v1["Description"] == "first"
    update_code(lam, name, "two")
    lam.update_function_configuration(FunctionName=name, Timeout=7)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    v2 = lam.publish_version(FunctionName=name, Description="second")
    assert (v2["Version"], v2["Description"], v2["Timeout"]) == ("2", "second", 7)
    assert v2["CodeSha256"] != v1["CodeSha256"]
    assert v2["RevisionId"] != v1["RevisionId"]

    resp, out = call(lam, name, Qualifier="1")
    assert resp["ExecutedVersion"] == "1"
    assert out == ["one", f"{v1['FunctionArn']}"]
    resp, out = call(lam, f"{name}:2")
    assert resp["ExecutedVersion"] == "2"
    assert out[0] == "two"
    resp, out = call(lam, name)
    assert resp["ExecutedVersion"] == "$LATEST"
    assert out == ["two", lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]]

    got = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert (got["Version"], got["Timeout"], got["CodeSha256"]) == ("1", 3, v1["CodeSha256"])
    # The version's own code can be downloaded, though $LATEST moved on.
    location = lam.get_function(FunctionName=name, Qualifier="1")["Code"]["Location"]
    package = httpx.get(location).content
    digest = base64.b64encode(hashlib.sha256(package).digest()).decode()
    assert digest == v1["CodeSha256"]
    assert b"one" in zipfile.ZipFile(io.BytesIO(package)).read("app.py")


def test_publishing_unchanged_code_and_configuration_returns_the_last_version(
    functions: Functions, lam: Any
) -> None:
    name = functions.create(code("one"))["FunctionName"]
    first = lam.publish_version(FunctionName=name)
    again = lam.publish_version(FunctionName=name, Description="ignored: nothing changed")
    assert again["Version"] == first["Version"] == "1"
    assert again["RevisionId"] == first["RevisionId"]
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"


def test_publish_preconditions(functions: Functions, lam: Any) -> None:
    created = functions.create(code("one"))
    name = created["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as wrong_code:
        lam.publish_version(FunctionName=name, CodeSha256="bm90IHRoZSBjb2Rl")
    assert "CodeSHA256" in str(wrong_code.value)
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.publish_version(FunctionName=name, RevisionId="not-the-revision")
    current = lam.get_function_configuration(FunctionName=name)
    published = lam.publish_version(
        FunctionName=name, CodeSha256=current["CodeSha256"], RevisionId=current["RevisionId"]
    )
    assert published["Version"] == "1"
    assert lam.list_versions_by_function(FunctionName=name)["Versions"][1]["Version"] == "1"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.publish_version(FunctionName="no-such-function-here")


def test_publish_flag_on_create_and_update_code(functions: Functions, lam: Any) -> None:
    created = functions.create(code("one"), Publish=True)
    name = created["FunctionName"]
    assert created["Version"] == "1"
    # As Lambda answers: the function's own ARN (reusing it acts on $LATEST, not version 1).
    assert created["FunctionArn"].endswith(f":function:{name}")
    updated = update_code(lam, name, "two", Publish=True)
    assert updated["Version"] == "2"
    assert call(lam, name, Qualifier="2")[1][0] == "two"
    assert call(lam, name, Qualifier="1")[1][0] == "one"


def test_list_versions_in_order_and_by_page(functions: Functions, lam: Any) -> None:
    name = functions.create(code("v0"))["FunctionName"]
    for i in range(1, 12):
        update_code(lam, name, f"v{i}")
        assert lam.publish_version(FunctionName=name)["Version"] == str(i)
    everything = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in everything] == ["$LATEST", *map(str, range(1, 12))]
    seen, marker = [], None
    while True:
        page = lam.list_versions_by_function(
            FunctionName=name, MaxItems=5, **({"Marker": marker} if marker else {})
        )
        seen += [v["Version"] for v in page["Versions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert seen == [v["Version"] for v in everything]
    paginator = lam.get_paginator("list_versions_by_function")
    pages = paginator.paginate(FunctionName=name, PaginationConfig={"PageSize": 4})
    assert [v["Version"] for p in pages for v in p["Versions"]] == seen


def test_delete_a_version(functions: Functions, lam: Any) -> None:
    name = functions.create(code("one"), Publish=True)["FunctionName"]
    update_code(lam, name, "two", Publish=True)
    call(lam, name, Qualifier="1")  # an environment of version 1 is running
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name, Qualifier="1")
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == [
        "$LATEST",
        "2",
    ]
    assert call(lam, name, Qualifier="2")[1][0] == "two"
    # Numbers are never reused.
    update_code(lam, name, "three")
    assert lam.publish_version(FunctionName=name)["Version"] == "3"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")


def test_unknown_versions_are_not_found(functions: Functions, lam: Any) -> None:
    name = functions.create(code("one"))["FunctionName"]
    for qualifier in ("1", "7", "some-alias"):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.invoke(FunctionName=name, Qualifier=qualifier)
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function_configuration(FunctionName=name, Qualifier=qualifier)


def test_versions_survive_a_restart(tmp_path: Path) -> None:
    server = Server(data_dir=tmp_path / "data").start()
    try:
        lam = server.client()
        lam.create_function(
            FunctionName="kept",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": code("one")})},
            Publish=True,
        )
        lam.get_waiter("function_active_v2").wait(FunctionName="kept")
        update_code(lam, "kept", "two")
        lam.delete_function(FunctionName="kept", Qualifier="1")
        update_code(lam, "kept", "three", Publish=True)
    finally:
        assert server.stop() == 0
    server = Server(data_dir=tmp_path / "data").start()
    try:
        lam = server.client()
        versions = lam.list_versions_by_function(FunctionName="kept")["Versions"]
        assert [v["Version"] for v in versions] == ["$LATEST", "2"]
        assert call(lam, "kept", Qualifier="2")[1][0] == "three"
        update_code(lam, "kept", "four")
        assert lam.publish_version(FunctionName="kept")["Version"] == "3"
    finally:
        assert server.stop() == 0
