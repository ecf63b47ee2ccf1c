"""A SAM function fed by an SQS queue, deployed as a stack: its `SQS` event becomes an
event-source mapping on the server's `--sqs-endpoint` (moto here, a stand-in for an SQS-API
endpoint), its generated role gets `AWSLambdaSQSQueueExecutionRole`'s permissions (what the
poller asks of it), its `EventInvokeConfig` the function's async settings; deleting the stack
removes the mapping with the rest."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from tests.conftest import Server, lamina, wait_for, wait_seen
from tests.integration import test_event_sources as _event_sources

pytestmark = pytest.mark.control_plane

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  QueueArn:
    Type: String
Resources:
  Reader:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.11
      Timeout: 5
      EventInvokeConfig:
        MaximumRetryAttempts: 0
        MaximumEventAgeInSeconds: 120
      Events:
        Orders:
          Type: SQS
          Properties:
            Queue: !Ref QueueArn
            BatchSize: 5
            MaximumBatchingWindowInSeconds: 1
Outputs:
  ReaderArn:
    Value: !GetAtt Reader.Arn
"""

CODE = """
import json, time

def handler(event, context):
    for r in event["Records"]:
        print("SEEN " + json.dumps({"t": time.time(), "body": r["body"],
                                    "source": r["eventSource"], "arn": r["eventSourceARN"]}))
"""


# moto's SQS endpoint for the server (`--sqs-endpoint`), as the event-source tests make it
sqs_endpoint = _event_sources.sqs_endpoint


def test_an_sqs_event_becomes_a_mapping_that_feeds_the_function_and_goes_with_the_stack(
    own_server: Any, sqs_endpoint: str, tmp_path: Path
) -> None:
    srv: Server = own_server(None, "--sqs-endpoint", sqs_endpoint)
    lam = srv.client()
    sqs = boto3.client(
        "sqs",
        endpoint_url=sqs_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    try:
        url = sqs.create_queue(QueueName=f"orders-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        app = tmp_path / "orders"
        (app / "src").mkdir(parents=True)
        (app / "src" / "app.py").write_text(CODE)
        (app / "template.yaml").write_text(TEMPLATE)
        out = lamina(
            "deploy",
            "--template",
            str(app / "template.yaml"),
            "--parameter-overrides",
            f"QueueArn={arn}",
            endpoint=srv.endpoint,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "AWS::Lambda::EventSourceMapping" in out.stdout
        name = "orders-Reader"

        mappings = lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
        assert [(m["EventSourceArn"], m["BatchSize"]) for m in mappings] == [(arn, 5)]
        uuid_ = mappings[0]["UUID"]
        wait_for(
            lambda: lam.get_event_source_mapping(UUID=uuid_)["State"] == "Enabled",
            timeout=30,
            message="the mapping enabled",
        )
        invoke_config = lam.get_function_event_invoke_config(FunctionName=name)
        assert invoke_config["MaximumRetryAttempts"] == 0
        assert invoke_config["MaximumEventAgeInSeconds"] == 120

        for i in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=f"order {i}")
        records = wait_seen(srv, name, 3, timeout=30)
        assert sorted(r["body"] for r in records) == ["order 0", "order 1", "order 2"]
        assert {(r["source"], r["arn"]) for r in records} == {("aws:sqs", arn)}

        gone = lamina("stacks", "delete", "orders", endpoint=srv.endpoint)
        assert gone.returncode == 0, gone.stdout + gone.stderr
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_event_source_mapping(UUID=uuid_)
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function(FunctionName=name)
    finally:
        sqs.close()


MQ_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  BrokerArn:
    Type: String
  SecretArn:
    Type: String
  VirtualHost:
    Type: String
Resources:
  Consumer:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.11
      Events:
        Orders:
          Type: MQ
          Properties:
            Broker: !Ref BrokerArn
            Queues: [orders]
            BatchSize: 10
            SourceAccessConfigurations:
              - Type: BASIC_AUTH
                URI: !Ref SecretArn
              - Type: VIRTUAL_HOST
                URI: !Ref VirtualHost
"""

MQ_CODE = """
import base64, json, time

def handler(event, context):
    for queue, messages in event["rmqMessagesByQueue"].items():
        for m in messages:
            print("SEEN " + json.dumps({"t": time.time(), "queue": queue,
                                        "data": base64.b64decode(m["data"]).decode()}))
"""


def test_an_mq_event_reads_a_rabbitmq_queue_with_the_templates_secret(
    own_server: Any, tmp_path: Path
) -> None:
    import asyncio

    from tests._rabbit import declare, private_vhost, publish
    from tests.conftest import SIGNED_HTTP

    srv: Server = own_server()
    lam = srv.client()
    with private_vhost("lamina-stack") as vhost:
        asyncio.run(declare(vhost, "orders"))
        name = f"rmq-{uuid.uuid4().hex[:8]}"
        # the broker's URL carries no credentials: the template's BASIC_AUTH secret logs in
        put = SIGNED_HTTP.put(
            f"{srv.endpoint}/lamina/brokers/{name}", json={"Url": "amqp://127.0.0.1:5672/"}
        )
        assert put.status_code == 200, put.text
        broker = put.json()["Broker"]["Arn"]
        secret = SIGNED_HTTP.put(
            f"{srv.endpoint}/lamina/secrets/{name}",
            json={"Username": "guest", "Password": "guest"},
        )
        assert secret.status_code == 200, secret.text
        secret_arn = secret.json()["Secret"]["Arn"]

        app = tmp_path / "shop"
        (app / "src").mkdir(parents=True)
        (app / "src" / "app.py").write_text(MQ_CODE)
        (app / "template.yaml").write_text(MQ_TEMPLATE)
        out = lamina(
            "deploy",
            "--template",
            str(app / "template.yaml"),
            "--parameter-overrides",
            f"BrokerArn={broker} SecretArn={secret_arn} VirtualHost={vhost}",
            endpoint=srv.endpoint,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        mapping = lam.list_event_source_mappings(FunctionName="shop-Consumer")[
            "EventSourceMappings"
        ][0]
        assert mapping["Queues"] == ["orders"]
        wait_for(
            lambda: lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Enabled",
            timeout=30,
            message="the mapping enabled",
        )
        asyncio.run(publish(vhost, "orders", [b"tea", b"cake"]))
        records = wait_seen(srv, "shop-Consumer", 2, timeout=30)
        assert sorted(r["data"] for r in records) == ["cake", "tea"]
        assert {r["queue"] for r in records} == {f"orders::{vhost}"}

        gone = lamina("stacks", "delete", "shop", endpoint=srv.endpoint)
        assert gone.returncode == 0, gone.stdout + gone.stderr
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_event_source_mapping(UUID=mapping["UUID"])
