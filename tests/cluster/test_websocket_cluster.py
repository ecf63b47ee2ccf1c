"""WebSocket APIs in a cluster: an API made on one node is served by every node, and the
`@connections` API reaches a connection whatever node holds it (from outside, and from a
function running on another node)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from tests.cluster._engines import NatsCluster, Postgres
from tests.cluster._nodes import LaminaCluster
from tests.conftest import SIGNED_HTTP, Functions
from tests.integration.test_websocket_api import CHAT, MANAGE_POLICY
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


@pytest.fixture
def cluster(tmp_path: Path, pg: Postgres, nats3: NatsCluster) -> Iterator[LaminaCluster]:
    lc = LaminaCluster(tmp_path, pg.new_database(), nats3.urls)
    try:
        for name in ("a", "b"):
            lc.node(name)
        yield lc
    finally:
        lc.stop()
        lc.print_logs()  # shown by pytest when the test failed


def _manage(endpoint: str) -> Any:
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_connections_on_two_nodes(cluster: LaminaCluster) -> None:
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    put = SIGNED_HTTP.put(f"{a.endpoint}/lamina/roles/ws-chat", json={"Policies": [MANAGE_POLICY]})
    assert put.status_code == 200, put.text
    functions = Functions(a.client())
    try:
        fn = functions.create(CHAT, Role="arn:aws:iam::000000000000:role/ws-chat", Timeout=30)
        v2 = a.client("apigatewayv2")
        api = v2.create_api(
            Name="chat", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
        )
        api_id = api["ApiId"]
        a.client("lambda").add_permission(
            FunctionName=fn["FunctionName"],
            StatementId="ws-chat",
            Action="lambda:InvokeFunction",
            Principal="apigateway.amazonaws.com",
            SourceArn=f"arn:aws:execute-api:us-east-1:000000000000:{api_id}/*",
        )
        integration = v2.create_integration(
            ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=fn["FunctionArn"]
        )
        target = f"integrations/{integration['IntegrationId']}"
        v2.create_route(ApiId=api_id, RouteKey="sendmessage", Target=target)
        v2.create_route(
            ApiId=api_id,
            RouteKey="whoami",
            Target=target,
            RouteResponseSelectionExpression="$default",
        )
        v2.create_stage(ApiId=api_id, StageName="prod")
        on_a = f"ws://127.0.0.1:{a.port}/ws/{api_id}/prod"
        on_b = f"ws://127.0.0.1:{b.port}/ws/{api_id}/prod"  # made on a, served by b
        with connect(on_a, open_timeout=30) as alice, connect(on_b, open_timeout=30) as bob:
            ids = []
            for ws in (alice, bob):
                ws.send(json.dumps({"action": "whoami"}))
                ids.append(json.loads(ws.recv(timeout=30))["id"])
            # the function (on whichever node) posts to a connection held by a and one by b
            alice.send(json.dumps({"action": "sendmessage", "data": "hi all", "to": ids}))
            assert alice.recv(timeout=30) == "hi all"
            assert bob.recv(timeout=30) == "hi all"
            # from outside, through the node that does not hold the connection
            from_a, from_b = _manage(a.endpoint), _manage(b.endpoint)
            from_b.post_to_connection(ConnectionId=ids[0], Data=b"via b")
            assert alice.recv(timeout=30) == "via b"
            assert from_a.get_connection(ConnectionId=ids[1])["Identity"]["SourceIp"]
            from_a.delete_connection(ConnectionId=ids[1])
            with pytest.raises(ConnectionClosed):
                bob.recv(timeout=30)
            with pytest.raises(from_a.exceptions.GoneException):
                from_a.post_to_connection(ConnectionId=ids[1], Data=b"late")
    finally:
        functions.cleanup()
