"""Recursive loop detection: Get/PutFunctionRecursionConfig, and a function that invokes
itself asynchronously through the bundled boto3 (which passes the trace header on) being
stopped after 16 invocations of the chain with Terminate, and not with Allow."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from tests.conftest import SIGNED_HTTP, Functions, Server, seen, wait_for, wait_seen

ACCOUNT = "000000000000"

LOOPER = """
import json, os, time
import boto3, botocore.config

client = boto3.client("lambda", config=botocore.config.Config(retries={"total_max_attempts": 1}))

def handler(event, context):
    n = event["n"]
    print("SEEN " + json.dumps({
        "t": time.time(), "n": n, "trace": os.environ.get("_X_AMZN_TRACE_ID", ""),
    }))
    if n < event["stop"]:
        client.invoke(
            FunctionName=context.function_name,
            InvocationType="Event",
            Payload=json.dumps({"n": n + 1, "stop": event["stop"]}),
        )
    return n
"""

RECORDER = """
import json, time
def handler(event, context):
    print("SEEN " + json.dumps({"t": time.time(), "event": event}))
"""


def _arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"


def _lineage_hash(name: str) -> str:
    return hashlib.sha256(_arn(name).encode()).hexdigest()[:8]


def _invoker_role(server: Server) -> str:
    role = f"loop-{uuid.uuid4().hex[:8]}"
    statements = [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{role}",
        json={"Policies": [{"Version": "2012-10-17", "Statement": statements}]},
    )
    assert put.status_code in (200, 201), put.text
    return f"arn:aws:iam::{ACCOUNT}:role/{role}"


def _looper(functions: Functions, lam: Any, server: Server) -> tuple[str, str]:
    """A self-invoking function whose failed events go to a recorder: (looper, recorder)."""
    recorder = functions.create(RECORDER)["FunctionName"]
    name = functions.create(LOOPER, Role=_invoker_role(server), MemorySize=512, Timeout=30)[
        "FunctionName"
    ]
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": _arn(recorder)}},
    )
    return name, recorder


def _dropped_metric(server: Server, name: str) -> float:
    text = httpx.get(server.endpoint + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("lamina_recursive_invocations_dropped_total{") and (
            f'function="{name}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_config_operations(functions: Functions, lam: Any, lam_unchecked: Any) -> None:
    name = functions.create("def handler(e, c):\n    return 1\n")["FunctionName"]
    get = lam.get_function_recursion_config(FunctionName=name)
    assert {k: v for k, v in get.items() if k != "ResponseMetadata"} == {
        "RecursiveLoop": "Terminate"
    }
    put = lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    assert {k: v for k, v in put.items() if k != "ResponseMetadata"} == {"RecursiveLoop": "Allow"}
    assert lam.get_function_recursion_config(FunctionName=_arn(name))["RecursiveLoop"] == "Allow"
    with pytest.raises(ClientError) as e:
        lam_unchecked.put_function_recursion_config(FunctionName=name, RecursiveLoop="Never")
    assert e.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value 'Never' at 'recursiveLoop' failed to "
        "satisfy constraint: Member must satisfy enum value set: [Allow, Terminate]",
    }
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Allow"
    with pytest.raises(ClientError) as e:
        lam.get_function_recursion_config(FunctionName="t-no-such-function")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam_unchecked.get_function_recursion_config(FunctionName=f"{_arn(name)}:1")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    # The setting goes with the function.
    lam.delete_function(FunctionName=name)
    functions.create("def handler(e, c):\n    return 1\n", FunctionName=name)
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"


def test_an_async_loop_stops_after_16_invocations(
    functions: Functions, lam: Any, server: Server
) -> None:
    name, recorder = _looper(functions, lam, server)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 1, "stop": 40}))
    (failure,) = wait_seen(server, recorder, 1, timeout=120)
    record = failure["event"]
    assert record["requestContext"]["condition"] == "RecursiveInvocationException"
    assert record["requestPayload"] == {"n": 17, "stop": 40}
    runs = seen(server, name)
    assert [r["n"] for r in runs] == list(range(1, 17))
    # One chain: one trace root, and the function's Lineage counter went 1..16.
    roots = {r["trace"].split(";")[0] for r in runs}
    assert len(roots) == 1 and roots.pop().startswith("Root=1-")
    tag = _lineage_hash(name)
    assert [r["trace"].split(f"Lineage={tag}:")[1] for r in runs] == [str(n) for n in range(1, 17)]
    assert wait_for(lambda: _dropped_metric(server, name) == 1.0, message="the metric")


def test_an_async_loop_goes_on_with_allow(functions: Functions, lam: Any, server: Server) -> None:
    name, recorder = _looper(functions, lam, server)
    lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 1, "stop": 20}))
    runs = wait_seen(server, name, 20, timeout=120)
    assert [r["n"] for r in runs] == list(range(1, 21))
    assert seen(server, recorder) == []
    assert _dropped_metric(server, name) == 0.0


def test_a_synchronous_invoke_past_the_limit_is_refused(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = functions.create("def handler(e, c):\n    return 'ran'\n")["FunctionName"]
    tag = _lineage_hash(name)
    client = server.client()
    header: dict[str, str] = {}

    def add_trace(request: Any, **_: Any) -> None:
        request.headers["X-Amzn-Trace-Id"] = header["value"]

    client.meta.events.register("before-sign.lambda.Invoke", add_trace)
    root = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"
    header["value"] = f"{root};Lineage=0badc0de:3|{tag}:15"
    assert json.loads(client.invoke(FunctionName=name)["Payload"].read()) == "ran"
    header["value"] = f"{root};Lineage={tag}:16|0badc0de:3"
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName=name)
    assert e.value.response["Error"]["Code"] == "RecursiveInvocationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    assert json.loads(client.invoke(FunctionName=name)["Payload"].read()) == "ran"


PUTTER = """
import json, os, time
import boto3, botocore.config

client = boto3.client("events", config=botocore.config.Config(retries={"total_max_attempts": 1}))

def handler(event, context):
    n = event["detail"]["n"]
    print("SEEN " + json.dumps({"t": time.time(), "n": n}))
    client.put_events(Entries=[{
        "Source": event["source"], "DetailType": "loop", "Detail": json.dumps({"n": n + 1}),
    }])
"""


def test_a_loop_through_an_eventbridge_rule_stops_after_16(
    functions: Functions, lam: Any, server: Server
) -> None:
    """function -> PutEvents -> rule -> the same function: one chain, stopped at the 17th."""
    role = f"put-{uuid.uuid4().hex[:8]}"
    statements = [{"Effect": "Allow", "Action": "events:PutEvents", "Resource": "*"}]
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{role}",
        json={"Policies": [{"Version": "2012-10-17", "Statement": statements}]},
    )
    assert put.status_code in (200, 201), put.text
    recorder = functions.create(RECORDER)["FunctionName"]
    name = functions.create(
        PUTTER, Role=f"arn:aws:iam::{ACCOUNT}:role/{role}", MemorySize=512, Timeout=30
    )["FunctionName"]
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": _arn(recorder)}},
    )
    lam.add_permission(
        FunctionName=name,
        StatementId="events",
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
    )
    events = server.client("events")
    source = f"loop.{uuid.uuid4().hex[:8]}"
    rule = f"loop-{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": [source]}))
    try:
        events.put_targets(Rule=rule, Targets=[{"Id": "fn", "Arn": _arn(name)}])
        events.put_events(
            Entries=[{"Source": source, "DetailType": "loop", "Detail": json.dumps({"n": 1})}]
        )
        (failure,) = wait_seen(server, recorder, 1, timeout=120)
        assert failure["event"]["requestContext"]["condition"] == "RecursiveInvocationException"
        assert failure["event"]["requestPayload"]["detail"] == {"n": 17}
        assert [r["n"] for r in seen(server, name)] == list(range(1, 17))
    finally:
        events.remove_targets(Rule=rule, Ids=["fn"])
        events.delete_rule(Name=rule)
