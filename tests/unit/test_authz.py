"""The authorization wrapper with a stub app behind it and a principal placed in the scope."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from lamina.api.authz import Authorize
from lamina.auth.policy import parse
from lamina.auth.principal import SCOPE_KEY, Principal
from lamina.auth.triggers import (
    apigateway_may_invoke,
    authorize_url,
    events_may_invoke,
    public_url_allowed,
)

ACCOUNT = "000000000000"
FN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
USER = f"arn:aws:iam::{ACCOUNT}:user/alice"


def allow(action: str, resource: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}],
    }


class Policies:
    def __init__(self) -> None:
        self.docs: dict[tuple[str, str | None], Any] = {}

    def policy_for(self, name: str, qualifier: str | None) -> Any:
        return self.docs.get((name, qualifier))


def client(principal: Principal | None, policies: Policies | None = None) -> httpx.AsyncClient:
    seen: list[bytes] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner:" + seen[-1]})

    state: Any = SimpleNamespace(
        settings=SimpleNamespace(region="us-east-1", account_id=ACCOUNT),
        functions=SimpleNamespace(policies=policies or Policies()),
    )
    wrapped = Authorize(inner, state)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if principal is not None:
            scope[SCOPE_KEY] = principal
        await wrapped(scope, receive, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def alice(*policies: dict[str, Any], admin: bool = False) -> Principal:
    return Principal("AKIAALICE", USER, ACCOUNT, admin=admin, policies=policies)


async def test_no_principal_and_admin_pass() -> None:
    async with client(None) as c:
        assert (await c.post("/2015-03-31/functions/f/invocations")).status_code == 200
    async with client(alice(admin=True)) as c:
        assert (await c.post("/2015-03-31/functions/f/invocations")).status_code == 200


async def test_allowed_on_one_function_only() -> None:
    me = alice(allow("lambda:InvokeFunction", FN + "f"))
    async with client(me) as c:
        ok = await c.post("/2015-03-31/functions/f/invocations", content=b"{}")
        assert (ok.status_code, ok.content) == (200, b"inner:{}")
        denied = await c.post("/2015-03-31/functions/g/invocations")
        assert denied.status_code == 403
        assert denied.headers["x-amzn-errortype"] == "AccessDeniedException"
        assert denied.json()["Message"] == (
            f"User: {USER} is not authorized to perform: lambda:InvokeFunction on resource: "
            f"{FN}g because no identity-based policy allows the lambda:InvokeFunction action"
        )
        # the alias is another resource
        assert (await c.post("/2015-03-31/functions/f:prod/invocations")).status_code == 403
        assert (await c.get("/2015-03-31/functions/f")).status_code == 403
        assert (await c.get("/health")).status_code == 200


async def test_explicit_deny_message() -> None:
    deny = {
        "Version": "2012-10-17",
        "Statement": {"Effect": "Deny", "Action": "lambda:Delete*", "Resource": "*"},
    }
    async with client(alice(allow("lambda:*", "*"), deny)) as c:
        r = await c.delete("/2015-03-31/functions/f")
        assert r.status_code == 403
        assert r.json()["Message"].endswith("with an explicit deny in an identity-based policy")
        assert (await c.get("/2015-03-31/functions/f")).status_code == 200


async def test_json_api_denial_shape_and_body_replay() -> None:
    me = alice(allow("logs:FilterLogEvents", f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:a:*"))
    async with client(me) as c:
        body = json.dumps({"logGroupName": "a"}).encode()
        target = {"x-amz-target": "Logs_20140328.FilterLogEvents"}
        ok = await c.post("/", content=body, headers=target)
        assert ok.content == b"inner:" + body  # the wrapper read the body and replayed it
        bad = await c.post("/", content=b'{"logGroupName": "b"}', headers=target)
        assert bad.status_code == 403
        assert bad.headers["content-type"] == "application/x-amz-json-1.1"
        assert bad.json()["__type"] == "AccessDeniedException"
        assert "logs:FilterLogEvents on resource: arn:aws:logs:us-east-1" in bad.json()["Message"]


async def test_resource_policy_allows_the_named_caller() -> None:
    policies = Policies()
    policies.docs[("f", "live")] = parse(
        {
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow",
                "Principal": {"AWS": USER},
                "Action": "lambda:InvokeFunction",
                "Resource": FN + "f:live",
            },
        },
        resource_policy=True,
    )
    async with client(alice(), policies) as c:
        assert (await c.post("/2015-03-31/functions/f:live/invocations")).status_code == 200
        assert (await c.post("/2015-03-31/functions/f/invocations")).status_code == 403


async def test_source_ip_condition() -> None:
    policy = allow("lambda:ListFunctions", "*")
    policy["Statement"][0]["Condition"] = {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
    async with client(alice(policy)) as c:
        # httpx's ASGI transport calls from 127.0.0.1
        assert (await c.get("/2015-03-31/functions/")).status_code == 403


async def test_time_conditions() -> None:
    now = int(time.time())
    for condition, allowed in (
        ({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}, True),
        ({"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}, False),
        ({"NumericGreaterThan": {"aws:EpochTime": str(now - 60)}}, True),
        ({"NumericLessThan": {"aws:EpochTime": str(now - 60)}}, False),
    ):
        policy = allow("lambda:ListFunctions", "*")
        policy["Statement"][0]["Condition"] = condition
        async with client(alice(policy)) as c:
            status = (await c.get("/2015-03-31/functions/")).status_code
            assert status == (200 if allowed else 403), condition


def test_trigger_rules() -> None:
    url_policy = parse(
        {
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "lambda:InvokeFunctionUrl",
                "Resource": FN + "f",
                "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
            },
        },
        resource_policy=True,
    )
    # lambda:InvokeFunctionUrl alone is not enough: lambda:InvokeFunction too, since 2025
    assert not public_url_allowed(FN + "f", url_policy)
    both = parse(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "lambda:InvokeFunctionUrl",
                    "Resource": FN + "f",
                    "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
                },
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "lambda:InvokeFunction",
                    "Resource": FN + "f",
                    "Condition": {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}},
                },
            ],
        },
        resource_policy=True,
    )
    assert public_url_allowed(FN + "f", both)
    assert not public_url_allowed(FN + "f", None)
    assert not public_url_allowed(FN + "f:live", both)
    assert authorize_url(alice(), FN + "f", both).value == "implicit_deny"  # NONE only
    me = alice(allow("lambda:InvokeFunctionUrl", FN + "f"))
    assert authorize_url(me, FN + "f", None).value == "implicit_deny"
    me = alice(allow("lambda:InvokeFunction*", FN + "f"))
    assert authorize_url(me, FN + "f", None).value == "allow"

    rule = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/r"
    events_policy = parse(
        {
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
                "Resource": FN + "f",
                "Condition": {"ArnLike": {"AWS:SourceArn": rule}},
            },
        },
        resource_policy=True,
    )
    assert events_may_invoke(FN + "f", rule, ACCOUNT, events_policy)
    assert not events_may_invoke(FN + "f", rule + "2", ACCOUNT, events_policy)
    assert not events_may_invoke(FN + "f", rule, ACCOUNT, None)


def test_apigateway_may_invoke_by_source_arn() -> None:
    """A WebSocket route's invocation: apigateway.amazonaws.com, the route's execute-api ARN."""
    api = f"arn:aws:execute-api:us-east-1:{ACCOUNT}:abcdefghij"

    def policy(source: str, service: str = "apigateway.amazonaws.com") -> Any:
        statement = {
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "lambda:InvokeFunction",
            "Resource": FN + "f",
            "Condition": {"ArnLike": {"AWS:SourceArn": source}},
        }
        document = {"Version": "2012-10-17", "Statement": statement}
        return parse(document, resource_policy=True)

    route = api + "/prod/$connect"
    assert apigateway_may_invoke(FN + "f", route, ACCOUNT, policy(api + "/*"))
    assert apigateway_may_invoke(FN + "f", route, ACCOUNT, policy(api + "/prod/$connect"))
    assert not apigateway_may_invoke(FN + "f", route, ACCOUNT, policy(api + "/prod/other"))
    other = f"arn:aws:execute-api:us-east-1:{ACCOUNT}:zzzzzzzzzz/*"
    assert not apigateway_may_invoke(FN + "f", route, ACCOUNT, policy(other))
    assert not apigateway_may_invoke(
        FN + "f", route, ACCOUNT, policy(api + "/*", "events.amazonaws.com")
    )
    assert not apigateway_may_invoke(FN + "f:live", route, ACCOUNT, policy(api + "/*"))
    assert not apigateway_may_invoke(FN + "f", route, ACCOUNT, None)


pytestmark = pytest.mark.anyio


async def test_a_malformed_identity_policy_denies() -> None:
    broken = {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "lambda:*"}}
    async with client(alice(broken)) as c:
        assert (await c.get("/2015-03-31/functions/")).status_code == 403
