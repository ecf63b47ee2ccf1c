"""Aliases: CreateAlias, GetAlias, UpdateAlias, DeleteAlias, ListAliases, and invoking through
an alias with weighted routing, with Lambda's rules."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import ROLE, SIGNED, Functions, Server, make_zip

pytestmark = pytest.mark.control_plane


def code(answer: str) -> str:
    return f"def handler(event, context):\n    return [{answer!r}, context.invoked_function_arn]\n"


def with_two_versions(functions: Functions, lam: Any, **kw: Any) -> str:
    name = str(functions.create(code("one"), Publish=True, **kw)["FunctionName"])
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": code("two")}))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    return name


def test_alias_lifecycle(functions: Functions, lam: Any) -> None:
    name = with_two_versions(functions, lam)
    created = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert created["AliasArn"].endswith(f":function:{name}:live")
    assert (created["FunctionVersion"], created["Description"]) == ("1", "")
    assert "RoutingConfig" not in created
    got = lam.get_alias(FunctionName=name, Name="live")
    assert got["RevisionId"] == created["RevisionId"]

    resp = lam.invoke(FunctionName=name, Qualifier="live")
    assert resp["ExecutedVersion"] == "1"
    assert json.loads(resp["Payload"].read()) == ["one", created["AliasArn"]]
    config = lam.get_function_configuration(FunctionName=f"{name}:live")
    assert (config["Version"], config["FunctionArn"]) == ("1", created["AliasArn"])

    updated = lam.update_alias(
        FunctionName=name, Name="live", FunctionVersion="2", Description="now two"
    )
    assert (updated["FunctionVersion"], updated["Description"]) == ("2", "now two")
    assert updated["RevisionId"] != created["RevisionId"]
    assert lam.invoke(FunctionName=f"{name}:live")["ExecutedVersion"] == "2"
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_alias(
            FunctionName=name, Name="live", Description="x", RevisionId=created["RevisionId"]
        )
    lam.update_alias(
        FunctionName=name, Name="live", Description="y", RevisionId=updated["RevisionId"]
    )

    lam.delete_alias(FunctionName=name, Name="live")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="live")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="live")


def test_weighted_routing_splits_invocations_by_weight(functions: Functions, lam: Any) -> None:
    name = with_two_versions(functions, lam)
    weight = 0.25
    lam.create_alias(
        FunctionName=name,
        Name="canary",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": weight}},
    )
    invokes = 2000
    seen: Counter[tuple[str, str]] = Counter()
    url = f"{lam.meta.endpoint_url}/2015-03-31/functions/{name}/invocations?Qualifier=canary"
    with httpx.Client(auth=SIGNED) as http:
        for _ in range(invokes):
            resp = http.post(url, content=b"{}")
            assert resp.status_code == 200
            answer = resp.json()[0]
            seen[(answer, resp.headers["X-Amz-Executed-Version"])] += 1
    assert set(seen) <= {("one", "1"), ("two", "2")}, seen
    # Binomial: within four standard deviations (a false alarm once in ~16,000 runs).
    expected = invokes * weight
    sigma = math.sqrt(invokes * weight * (1 - weight))
    assert abs(seen[("two", "2")] - expected) < 4 * sigma, seen
    # All to the additional version, then none.
    for share, answer in ((1.0, "two"), (0.0, "one")):
        lam.update_alias(
            FunctionName=name,
            Name="canary",
            RoutingConfig={"AdditionalVersionWeights": {"2": share}},
        )
        answers = {lam_answer(lam, name, "canary") for _ in range(20)}
        assert answers == {answer}
    lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={})
    assert "RoutingConfig" not in lam.get_alias(FunctionName=name, Name="canary")


def lam_answer(lam: Any, name: str, qualifier: str) -> str:
    return str(json.loads(lam.invoke(FunctionName=name, Qualifier=qualifier)["Payload"].read())[0])


def test_alias_rules(functions: Functions, lam: Any) -> None:
    name = with_two_versions(functions, lam)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as latest:
        lam.create_alias(
            FunctionName=name,
            Name="wide",
            FunctionVersion="$LATEST",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
        )
    assert "$LATEST" in str(latest.value)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_alias(FunctionName=name, Name="ghost", FunctionVersion="9")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_alias(
            FunctionName=name,
            Name="ghost",
            FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"9": 0.5}},
        )
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_alias(
            FunctionName=name,
            Name="self",
            FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}},
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_alias(FunctionName="no-such-function", Name="live", FunctionVersion="1")
    # A version an alias routes to cannot be deleted; an unused one can.
    lam.create_alias(
        FunctionName=name,
        Name="canary",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}},
    )
    for version in ("1", "2"):
        with pytest.raises(lam.exceptions.ResourceConflictException) as used:
            lam.delete_function(FunctionName=name, Qualifier=version)
        assert "canary" in str(used.value)
    lam.delete_alias(FunctionName=name, Name="canary")
    lam.delete_function(FunctionName=name, Qualifier="2")
    # An alias may point at $LATEST without routing.
    assert lam.create_alias(FunctionName=name, Name="edge", FunctionVersion="$LATEST")
    assert lam.invoke(FunctionName=name, Qualifier="edge")["ExecutedVersion"] == "$LATEST"


def test_alias_names_and_weights_are_validated(functions: Functions, lam_unchecked: Any) -> None:
    name = with_two_versions(functions, lam_unchecked)
    bad = lam_unchecked.exceptions.ClientError
    for alias, version, routing in (
        ("123", "1", None),  # all digits: that is a version
        ("has space", "1", None),
        ("ok", "latest", None),
        ("ok", "1", {"AdditionalVersionWeights": {"2": 1.5}}),
        ("ok", "1", {"AdditionalVersionWeights": {"two": 0.5}}),
    ):
        kw: dict[str, Any] = {"RoutingConfig": routing} if routing else {}
        with pytest.raises(bad) as e:
            lam_unchecked.create_alias(FunctionName=name, Name=alias, FunctionVersion=version, **kw)
        assert e.value.response["Error"]["Code"] == "ValidationException", (alias, version)


def test_list_aliases(functions: Functions, lam: Any) -> None:
    name = with_two_versions(functions, lam)
    for alias, version in (("b", "1"), ("a", "2"), ("c", "1"), ("d", "$LATEST")):
        lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)
    everything = lam.list_aliases(FunctionName=name)["Aliases"]
    assert [a["Name"] for a in everything] == ["a", "b", "c", "d"]
    on_one = lam.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]
    assert [a["Name"] for a in on_one] == ["b", "c"]
    pages = lam.get_paginator("list_aliases").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 3}
    )
    assert [a["Name"] for p in pages for a in p["Aliases"]] == ["a", "b", "c", "d"]
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_aliases(FunctionName=name)


def test_aliases_survive_a_restart(tmp_path: Path) -> None:
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
        lam.create_alias(FunctionName="kept", Name="live", FunctionVersion="1")
    finally:
        assert server.stop() == 0
    server = Server(data_dir=tmp_path / "data").start()
    try:
        lam = server.client()
        assert lam.get_alias(FunctionName="kept", Name="live")["FunctionVersion"] == "1"
        assert lam.invoke(FunctionName="kept", Qualifier="live")["ExecutedVersion"] == "1"
    finally:
        assert server.stop() == 0
