"""WebSocket APIs: the apigatewayv2 control plane through boto3, connections through real
WebSocket clients (Python `websockets`), the `@connections` API through boto3's
`apigatewaymanagementapi`, from outside and from inside a function."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from tests.conftest import SIGNED_HTTP, Functions, Server, free_port, lamina, wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

#: the chat function: `whoami` answers the caller's connection id (a two-way route),
#: `sendmessage` broadcasts `data` to the ids in `to` through PostToConnection (from inside
#: the sandbox, with no endpoint_url: AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI names Lamina)
CHAT = """
import json
import time

import boto3

def handler(event, context):
    ctx = event["requestContext"]
    route = ctx["routeKey"]
    print("EVENT", route, ctx["eventType"], ctx["connectionId"])
    if route == "$connect":
        if (event.get("queryStringParameters") or {}).get("deny") == "1":
            return {"statusCode": 401}
        return {"statusCode": 200}
    if route == "$disconnect":
        return {"statusCode": 200}
    if route == "$default":
        return {"statusCode": 200, "body": "default:" + event["body"]}
    if route.endswith("-v1"):
        return {"statusCode": 200, "body": "routed:" + route}
    body = json.loads(event["body"])
    if route == "whoami":
        return {"statusCode": 200, "body": json.dumps({"id": ctx["connectionId"],
                "stage": ctx["stage"], "domainName": ctx["domainName"], "apiId": ctx["apiId"]})}
    if route == "sendmessage":
        client = boto3.client("apigatewaymanagementapi")
        for cid in body["to"]:
            client.post_to_connection(ConnectionId=cid, Data=body["data"].encode())
        return {"statusCode": 200}
    if route == "fail":
        raise RuntimeError("boom")
    if route == "slow":
        time.sleep(3)
        return {"statusCode": 200, "body": "slow done"}
    return {"statusCode": 200}
"""

MANAGE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "execute-api:ManageConnections", "Resource": "*"},
    ],
}


@pytest.fixture(scope="module")
def v2(server: Server) -> Any:
    return server.client("apigatewayv2")


def _role(server: Server, policies: list[dict[str, Any]]) -> str:
    name = f"ws-{uuid.uuid4().hex[:10]}"
    put = SIGNED_HTTP.put(f"{server.endpoint}/lamina/roles/{name}", json={"Policies": policies})
    assert put.status_code == 200, put.text
    return f"arn:aws:iam::000000000000:role/{name}"


def grant(server: Server, function: str, api_id: str, scope: str = "*") -> str:
    """Let API `api_id` invoke `function` (AddPermission, as on AWS): the statement id."""
    sid = f"ws-{uuid.uuid4().hex[:10]}"
    server.client("lambda").add_permission(
        FunctionName=function,
        StatementId=sid,
        Action="lambda:InvokeFunction",
        Principal="apigateway.amazonaws.com",
        SourceArn=f"arn:aws:execute-api:us-east-1:000000000000:{api_id}/{scope}",
    )
    return sid


class ChatApi:
    def __init__(self, server: Server, v2: Any, functions: Functions, permit: bool = True) -> None:
        role = _role(server, [MANAGE_POLICY])
        fn = functions.create(CHAT, Role=role, Timeout=30)
        self.function = fn["FunctionName"]
        api = v2.create_api(
            Name="chat", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
        )
        self.api = api
        self.api_id = api["ApiId"]
        if permit:
            grant(server, self.function, self.api_id)
        integration = v2.create_integration(
            ApiId=self.api_id, IntegrationType="AWS_PROXY", IntegrationUri=fn["FunctionArn"]
        )
        target = f"integrations/{integration['IntegrationId']}"
        for key in ("$connect", "$disconnect", "$default", "sendmessage", "fail"):
            v2.create_route(ApiId=self.api_id, RouteKey=key, Target=target)
        v2.create_route(
            ApiId=self.api_id,
            RouteKey="whoami",
            Target=target,
            RouteResponseSelectionExpression="$default",
        )
        v2.create_stage(ApiId=self.api_id, StageName="prod")
        self.url = f"{api['ApiEndpoint']}/prod"
        self.v2 = v2

    def connect(self, query: str = "") -> ClientConnection:
        return connect(self.url + query, open_timeout=30, max_size=2**20)


@pytest.fixture
def chat(server: Server, v2: Any, functions: Functions) -> Iterator[ChatApi]:
    made = ChatApi(server, v2, functions)
    yield made
    v2.delete_api(ApiId=made.api_id)


def _whoami(ws: ClientConnection) -> dict[str, Any]:
    ws.send(json.dumps({"action": "whoami"}))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=30))
    return reply


def test_control_plane_shapes_and_errors(v2: Any, functions: Functions) -> None:
    fn = functions.create(CHAT)
    api = v2.create_api(
        Name="shapes", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )
    api_id = api["ApiId"]
    try:
        assert api["ProtocolType"] == "WEBSOCKET"
        assert api["ApiEndpoint"].startswith("ws://127.0.0.1:")
        assert api["ApiEndpoint"].endswith(f"/ws/{api_id}")
        assert api["RouteSelectionExpression"] == "$request.body.action"
        assert "CreatedDate" in api
        assert v2.get_api(ApiId=api_id)["Name"] == "shapes"
        assert api_id in [a["ApiId"] for a in v2.get_apis()["Items"]]
        # API Gateway's own URI form for a Lambda integration
        uri = (
            "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
            f"{fn['FunctionArn']}/invocations"
        )
        integ = v2.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=uri)
        assert integ["IntegrationUri"] == uri
        assert (
            v2.get_integration(ApiId=api_id, IntegrationId=integ["IntegrationId"])[
                "IntegrationType"
            ]
            == "AWS_PROXY"
        )
        route = v2.create_route(
            ApiId=api_id, RouteKey="$default", Target=f"integrations/{integ['IntegrationId']}"
        )
        assert route["RouteKey"] == "$default"
        assert [r["RouteId"] for r in v2.get_routes(ApiId=api_id)["Items"]] == [route["RouteId"]]
        stage = v2.create_stage(ApiId=api_id, StageName="dev")
        assert stage["StageName"] == "dev"
        updated = v2.update_stage(ApiId=api_id, StageName="dev", StageVariables={"k": "v"})
        assert updated["StageVariables"] == {"k": "v"}
        changed = v2.update_integration(
            ApiId=api_id, IntegrationId=integ["IntegrationId"], TimeoutInMillis=5000
        )
        assert changed["TimeoutInMillis"] == 5000
        assert changed["IntegrationUri"] == uri
        assert v2.get_stages(ApiId=api_id)["Items"][0]["StageName"] == "dev"

        # errors, with API Gateway's exception classes
        with pytest.raises(v2.exceptions.ConflictException):
            v2.create_route(ApiId=api_id, RouteKey="$default")
        with pytest.raises(v2.exceptions.ConflictException):
            v2.create_stage(ApiId=api_id, StageName="dev")
        with pytest.raises(v2.exceptions.ConflictException):
            v2.delete_integration(ApiId=api_id, IntegrationId=integ["IntegrationId"])
        with pytest.raises(v2.exceptions.BadRequestException):
            v2.create_route(ApiId=api_id, RouteKey="x", Target="integrations/nope")
        with pytest.raises(v2.exceptions.BadRequestException):
            v2.create_integration(ApiId=api_id, IntegrationType="HTTP", IntegrationUri="http://x")
        with pytest.raises(v2.exceptions.NotFoundException):
            v2.get_route(ApiId=api_id, RouteId="nope")
        with pytest.raises(v2.exceptions.NotFoundException):
            v2.get_stage(ApiId=api_id, StageName="nope")
        with pytest.raises(v2.exceptions.BadRequestException):
            v2.create_api(Name="h", ProtocolType="HTTP")
        with pytest.raises(v2.exceptions.BadRequestException):
            v2.create_api(
                Name="h", ProtocolType="WEBSOCKET", RouteSelectionExpression="$context.routeKey"
            )

        v2.delete_route(ApiId=api_id, RouteId=route["RouteId"])
        v2.delete_integration(ApiId=api_id, IntegrationId=integ["IntegrationId"])
        v2.delete_stage(ApiId=api_id, StageName="dev")
        assert v2.get_routes(ApiId=api_id)["Items"] == []
    finally:
        v2.delete_api(ApiId=api_id)
    with pytest.raises(v2.exceptions.NotFoundException):
        v2.get_api(ApiId=api_id)
    with pytest.raises(v2.exceptions.NotFoundException):
        v2.delete_api(ApiId=api_id)


def test_chat_broadcast_and_disconnect(server: Server, chat: ChatApi) -> None:
    with chat.connect() as alice, chat.connect("?user=bob") as bob:
        a, b = _whoami(alice), _whoami(bob)
        assert a["id"] != b["id"]
        assert a["stage"] == "prod" and a["apiId"] == chat.api_id
        # the function broadcasts from inside its sandbox through PostToConnection
        alice.send(json.dumps({"action": "sendmessage", "data": "hi", "to": [a["id"], b["id"]]}))
        assert alice.recv(timeout=30) == "hi"
        assert bob.recv(timeout=30) == "hi"
        # $default: a one-way route answers nothing; a message on it reaches the function
        # unrouted messages go to $default (not two-way: nothing comes back)
        # management API from outside: GetConnection
        manage = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=chat.url.replace("ws://", "http://"),
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"total_max_attempts": 1}),
        )
        info = manage.get_connection(ConnectionId=b["id"])
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        manage.post_to_connection(ConnectionId=b["id"], Data=b"from outside")
        assert bob.recv(timeout=30) == "from outside"
        # DeleteConnection closes bob's socket from the server side
        manage.delete_connection(ConnectionId=b["id"])
        with pytest.raises(ConnectionClosed):
            bob.recv(timeout=30)
        with pytest.raises(manage.exceptions.GoneException):
            manage.post_to_connection(ConnectionId=b["id"], Data=b"late")
        with pytest.raises(manage.exceptions.GoneException):
            manage.get_connection(ConnectionId="AAAAAAAAAAAAAAA=")

    group = f"/aws/lambda/{chat.function}"

    def disconnected() -> bool:
        text = "".join(server.streams_text(group).values())
        return f"EVENT $disconnect DISCONNECT {a['id']}" in text and (
            f"EVENT $disconnect DISCONNECT {b['id']}" in text
        )

    wait_for(disconnected, 30, "$disconnect for both connections")


def test_connect_refused_and_failures(chat: ChatApi) -> None:
    with pytest.raises(InvalidStatus) as refused:
        chat.connect("?deny=1")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(chat.url.replace("/prod", "/nostage"), open_timeout=30)
    with chat.connect() as ws:
        ws.send(json.dumps({"action": "fail"}))
        error = json.loads(ws.recv(timeout=30))
        assert error["message"] == "Internal server error"
        assert "connectionId" in error and "requestId" in error


def test_oversize_message_closes_with_1009(chat: ChatApi) -> None:
    with chat.connect() as ws:
        ws.send("x" * (128 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_default_route_two_way_when_route_response(chat: ChatApi) -> None:
    routes = chat.v2.get_routes(ApiId=chat.api_id)["Items"]
    default = next(r for r in routes if r["RouteKey"] == "$default")
    chat.v2.create_route_response(
        ApiId=chat.api_id, RouteId=default["RouteId"], RouteResponseKey="$default"
    )
    with chat.connect() as ws:
        ws.send("not json")
        assert ws.recv(timeout=30) == "default:not json"


def test_management_api_needs_permission(server: Server, chat: ChatApi) -> None:
    key = SIGNED_HTTP.post(f"{server.endpoint}/lamina/keys", json={})
    assert key.status_code in (200, 201), key.text
    made = key.json()
    access, secret = made["AccessKeyId"], made["SecretAccessKey"]
    with chat.connect() as ws:
        me = _whoami(ws)
        manage = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=chat.url.replace("ws://", "http://"),
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1}),
        )
        with pytest.raises(manage.exceptions.ForbiddenException):
            manage.post_to_connection(ConnectionId=me["id"], Data=b"no")
        # the control plane: apigateway:<METHOD> on the API's ARN
        v2 = boto3.client(
            "apigatewayv2",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1}),
        )
        with pytest.raises(v2.exceptions.AccessDeniedException):
            v2.get_api(ApiId=chat.api_id)
        # granted on this API's prod stage only (both path forms)
        resource = f"arn:aws:execute-api:us-east-1:000000000000:{chat.api_id}/prod/*"
        grant = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "execute-api:ManageConnections",
                    "Resource": resource,
                },
                {
                    "Effect": "Allow",
                    "Action": "apigateway:GET",
                    "Resource": f"arn:aws:apigateway:us-east-1::/apis/{chat.api_id}",
                },
            ],
        }
        put = SIGNED_HTTP.post(f"{server.endpoint}/lamina/keys/{access}/policies", json=grant)
        assert put.status_code == 200, put.text
        assert v2.get_api(ApiId=chat.api_id)["ApiId"] == chat.api_id
        manage.post_to_connection(ConnectionId=me["id"], Data=b"granted")
        assert ws.recv(timeout=30) == "granted"
        short = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1}),
        )
        short.post_to_connection(ConnectionId=me["id"], Data=b"short form")
        assert ws.recv(timeout=30) == "short form"


#: a Node.js client on the npm package `ws`: learns its id, broadcasts to itself and to the
#: id given, prints what it receives, and closes
NODE_CLIENT = """
const WebSocket = require(process.env.WS_MODULE);
const [url, other] = process.argv.slice(2);
const ws = new WebSocket(url);
let me = null;
ws.on("open", () => ws.send(JSON.stringify({ action: "whoami" })));
ws.on("message", (data) => {
  const text = data.toString();
  if (me === null) {
    me = JSON.parse(text).id;
    ws.send(JSON.stringify({ action: "sendmessage", data: "node-hi", to: [me, other] }));
  } else {
    console.log("received " + text);
    ws.close(1000);
  }
});
ws.on("close", (code) => { console.log("closed " + code); process.exit(0); });
ws.on("error", (e) => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="session")
def node_ws(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The npm package `ws`, installed once into a directory beside the runtime cache (npm
    is what CI installs for the Node.js runtimes' SDK)."""
    prefix = Path(os.environ["LAMINA_RUNTIME_CACHE"]).parent / "lamina-test-npm-ws"
    module = prefix / "node_modules" / "ws"
    if not (module / "package.json").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), "ws@8"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return str(module)


def test_node_ws_client(chat: ChatApi, node_ws: str, tmp_path: Path) -> None:
    script = tmp_path / "client.js"
    script.write_text(NODE_CLIENT)
    with chat.connect() as bob:
        b = _whoami(bob)
        out = subprocess.run(
            ["node", str(script), chat.url, b["id"]],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "WS_MODULE": node_ws},
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["received node-hi", "closed 1000"]
        assert bob.recv(timeout=30) == "node-hi"


def test_cli_lists_apis_routes_and_connections(server: Server, chat: ChatApi) -> None:
    listed = lamina("websockets", endpoint=server.endpoint)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(chat.api_id))
    assert chat.api["ApiEndpoint"] in line and "prod" in line
    routes = lamina("websockets", "routes", chat.api_id, endpoint=server.endpoint)
    assert routes.returncode == 0, routes.stderr
    whoami = next(x for x in routes.stdout.splitlines() if x.startswith("whoami"))
    assert chat.function in whoami and whoami.rstrip().endswith("yes")
    with chat.connect() as ws:
        me = _whoami(ws)
        conns = lamina("websockets", "connections", endpoint=server.endpoint)
        assert conns.returncode == 0, conns.stderr
        assert any(x.startswith(me["id"]) for x in conns.stdout.splitlines()), conns.stdout


def test_binary_frames_and_payload_limits(chat: ChatApi) -> None:
    routes = chat.v2.get_routes(ApiId=chat.api_id)["Items"]
    default = next(r for r in routes if r["RouteKey"] == "$default")
    chat.v2.update_route(
        ApiId=chat.api_id, RouteId=default["RouteId"], RouteResponseSelectionExpression="$default"
    )
    manage = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=chat.url.replace("ws://", "http://"),
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )
    with chat.connect() as ws:
        # a binary frame reaches the function base64-encoded
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=30) == "default:AAH/"
        me = _whoami(ws)
        # binary data posted back arrives as a binary frame; text as text
        manage.post_to_connection(ConnectionId=me["id"], Data=b"\xff\xfe")
        assert ws.recv(timeout=30) == b"\xff\xfe"
        with pytest.raises(manage.exceptions.PayloadTooLargeException):
            manage.post_to_connection(ConnectionId=me["id"], Data=b"x" * (128 * 1024 + 1))
        # exactly the limit passes
        manage.post_to_connection(ConnectionId=me["id"], Data=b"y" * (128 * 1024))
        assert ws.recv(timeout=30) == "y" * (128 * 1024)


def test_idle_timeout_and_connection_duration(own_server: Any) -> None:
    """At clock rate 1200, API Gateway's 10-minute idle timeout is 0.5 s and its 2-hour
    connection duration 6 s. An API with no routes: each message gets Forbidden."""
    srv = own_server(None, "--test-clock-rate", "1200")
    v2 = srv.client("apigatewayv2")
    api = v2.create_api(
        Name="limits", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )
    v2.create_stage(ApiId=api["ApiId"], StageName="s")
    url = f"{api['ApiEndpoint']}/s"
    with connect(url, open_timeout=30) as idle:
        with pytest.raises(ConnectionClosed) as closed:
            idle.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    with connect(url, open_timeout=30) as busy:
        answers = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # activity every 0.1 s keeps it from idling out; its age ends it
                busy.send('{"action": "nothing"}')
                answer = json.loads(busy.recv(timeout=30))
                assert answer["message"] == "Forbidden"
                answers += 1
                with contextlib.suppress(TimeoutError):
                    busy.recv(timeout=0.1)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert answers > 10  # it outlived many idle timeouts


def test_server_stops_cleanly_with_connections_open(own_server: Any) -> None:
    """(And the metrics listener serves no WebSocket.)"""
    metrics_port = free_port()
    srv = own_server(None, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    v2 = srv.client("apigatewayv2")
    api = v2.create_api(
        Name="stop", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )
    v2.create_stage(ApiId=api["ApiId"], StageName="s")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{metrics_port}/ws/{api['ApiId']}/s", open_timeout=30)
    assert refused.value.response.status_code == 403
    with connect(f"{api['ApiEndpoint']}/s", open_timeout=30) as ws:
        ws.send("{}")
        assert json.loads(ws.recv(timeout=30))["message"] == "Forbidden"
        assert srv.stop() == 0, srv.log()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)


def test_bad_input_is_a_400_never_a_500(server: Server) -> None:
    v2 = server.client("apigatewayv2", parameter_validation=False)
    bad_apis: list[dict[str, Any]] = [
        {"Name": 123, "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": "$request.body.a"},
        {"Name": "x", "ProtocolType": ["WEBSOCKET"]},
        {"Name": "x", "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": {"a": 1}},
        {"Name": "x", "ProtocolType": "WEBSOCKET"},
        {"Name": "", "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": "$request.body.a"},
        {
            "Name": "x",
            "ProtocolType": "WEBSOCKET",
            "RouteSelectionExpression": "$request.body.a",
            "Tags": {"k": 1},
        },
    ]
    for params in bad_apis:
        with pytest.raises(v2.exceptions.BadRequestException):
            v2.create_api(**params)
    api_id = v2.create_api(
        Name="bad", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.a"
    )["ApiId"]
    try:
        calls = [
            lambda: v2.create_route(ApiId=api_id, RouteKey=5),
            lambda: v2.create_route(ApiId=api_id),
            lambda: v2.create_route(
                ApiId=api_id, RouteKey="k", RouteResponseSelectionExpression="x"
            ),
            lambda: v2.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY"),
            lambda: v2.create_integration(
                ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri="not a function!"
            ),
            lambda: v2.create_integration(
                ApiId=api_id,
                IntegrationType="AWS_PROXY",
                IntegrationUri="fn",
                TimeoutInMillis="soon",
            ),
            lambda: v2.create_stage(ApiId=api_id, StageName="bad/name"),
            lambda: v2.create_stage(ApiId=api_id, StageName="s", Description=5),
            lambda: v2.update_api(ApiId=api_id, RouteSelectionExpression="$request.header.x"),
        ]
        for call in calls:
            with pytest.raises(v2.exceptions.BadRequestException):
                call()
        # a refused update left the API as it was
        assert v2.get_api(ApiId=api_id)["RouteSelectionExpression"] == "$request.body.a"
        with pytest.raises(v2.exceptions.NotFoundException):
            v2.create_route(ApiId="nosuchapi0", RouteKey="k")
    finally:
        v2.delete_api(ApiId=api_id)


def test_integration_timeout(chat: ChatApi) -> None:
    """Past the integration's TimeoutInMillis the client is told the message failed (the
    route is two-way: in time, the function's body would come back)."""
    fn_arn = chat.v2.get_integrations(ApiId=chat.api_id)["Items"][0]["IntegrationUri"]
    quick = chat.v2.create_integration(
        ApiId=chat.api_id, IntegrationType="AWS_PROXY", IntegrationUri=fn_arn, TimeoutInMillis=500
    )
    chat.v2.create_route(
        ApiId=chat.api_id,
        RouteKey="slow",
        Target=f"integrations/{quick['IntegrationId']}",
        RouteResponseSelectionExpression="$default",
    )
    with chat.connect() as ws:
        ws.send(json.dumps({"action": "slow"}))
        answer = json.loads(ws.recv(timeout=30))
        assert answer["message"] == "Internal server error"
        # the connection goes on: the next message is served
        assert _whoami(ws)["apiId"] == chat.api_id


def test_selection_expression_with_braces_and_text(server: Server, v2: Any, chat: ChatApi) -> None:
    """`${request.body.kind}-v1`: a variable within text (API Gateway's expression language)."""
    fn_arn = v2.get_integrations(ApiId=chat.api_id)["Items"][0]["IntegrationUri"]
    api = v2.create_api(
        Name="braces", ProtocolType="WEBSOCKET", RouteSelectionExpression="${request.body.kind}-v1"
    )
    try:
        grant(server, chat.function, api["ApiId"])
        integ = v2.create_integration(
            ApiId=api["ApiId"], IntegrationType="AWS_PROXY", IntegrationUri=fn_arn
        )
        for key in ("chat-v1", "$default"):
            v2.create_route(
                ApiId=api["ApiId"],
                RouteKey=key,
                Target=f"integrations/{integ['IntegrationId']}",
                RouteResponseSelectionExpression="$default",
            )
        v2.create_stage(ApiId=api["ApiId"], StageName="s")
        with connect(f"{api['ApiEndpoint']}/s", open_timeout=30) as ws:
            ws.send(json.dumps({"kind": "chat"}))
            assert ws.recv(timeout=30) == "routed:chat-v1"
            ws.send(json.dumps({"kind": "other"}))  # no route "other-v1": $default
            assert ws.recv(timeout=30) == 'default:{"kind": "other"}'
    finally:
        v2.delete_api(ApiId=api["ApiId"])


def test_integration_needs_the_functions_permission(
    server: Server, v2: Any, functions: Functions, chat: ChatApi
) -> None:
    """API Gateway may invoke a function only if its resource policy allows
    apigateway.amazonaws.com for the API: without it the handshake gets a 500, and a message
    the internal-error message (the function never runs)."""
    bare = ChatApi(server, v2, functions, permit=False)
    lam = server.client("lambda")
    try:
        with pytest.raises(InvalidStatus) as refused:
            bare.connect()
        assert refused.value.response.status_code == 500
        assert json.loads(refused.value.response.body or b"{}") == {
            "message": "Internal server error"
        }
        # a permission naming another API does not grant
        grant(server, bare.function, chat.api_id)
        with pytest.raises(InvalidStatus) as refused:
            bare.connect()
        assert refused.value.response.status_code == 500
        # a permission for $connect only: the handshake passes, messages are refused
        grant(server, bare.function, bare.api_id, "prod/$connect")
        with bare.connect() as ws:
            ws.send(json.dumps({"action": "whoami"}))
            error = json.loads(ws.recv(timeout=30))
            assert error["message"] == "Internal server error"
            assert "connectionId" in error and "requestId" in error
            # the wildcard <apiId>/* grants every route, for this open connection too
            sid = grant(server, bare.function, bare.api_id)
            assert _whoami(ws)["apiId"] == bare.api_id
            lam.remove_permission(FunctionName=bare.function, StatementId=sid)
            ws.send(json.dumps({"action": "whoami"}))
            assert json.loads(ws.recv(timeout=30))["message"] == "Internal server error"
        warning = f"websocket: API {bare.api_id} may not invoke"
        wait_for(lambda: warning in server.log(), 30, "the missing-permission warning")
        text = server.log()
        assert "apigateway.amazonaws.com" in text
        assert text.count(warning) == 1  # once per API and function, not per message
    finally:
        v2.delete_api(ApiId=bare.api_id)


def test_integration_timeout_fails_the_message_not_the_connection(chat: ChatApi) -> None:
    """Past the integration's TimeoutInMillis the client is told the message failed; the
    connection goes on serving messages, and the slow invocation is not waited for."""
    integration = chat.v2.get_integrations(ApiId=chat.api_id)["Items"][0]
    chat.v2.update_integration(
        ApiId=chat.api_id, IntegrationId=integration["IntegrationId"], TimeoutInMillis=500
    )
    chat.v2.create_route(
        ApiId=chat.api_id, RouteKey="slow", Target=f"integrations/{integration['IntegrationId']}"
    )
    with chat.connect() as ws:
        ws.send(json.dumps({"action": "slow"}))
        error = json.loads(ws.recv(timeout=30))
        assert error["message"] == "Internal server error"
        assert error["connectionId"] and error["requestId"]
        # the slow function is still running (3 s); this message goes to another environment
        assert _whoami(ws)["apiId"] == chat.api_id
