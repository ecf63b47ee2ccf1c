"""moto's `moto_server` as the SQS-API endpoint of a test module (not a test module itself):
the `endpoint` and `sqs` fixtures (one server per module), and `queues`, uniquely named
queues deleted after each test.

A test module takes the fixtures by assigning them to its own names (`endpoint =
_sqs.endpoint`), which is how pytest finds them there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from tests.conftest import wait_for
from tests.integration.test_code_from_s3 import moto_server

#: the account moto keeps its queues in
ACCOUNT = "123456789012"
#: the region of the client, and of the queues' ARNs
REGION = "us-east-1"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server on a free loopback port, for the whole module: its URL."""
    with moto_server(tmp_path_factory.mktemp("moto-sqs")) as url:
        yield url


@pytest.fixture(scope="module")
def sqs(endpoint: str) -> Iterator[Any]:
    """A boto3 SQS client of `endpoint` (moto takes any key)."""
    client = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    yield client
    client.close()


class Queues:
    """Uniquely named queues at the endpoint, deleted after the test."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.urls: list[str] = []

    def make(self, fifo: bool = False, **attributes: Any) -> tuple[str, str]:
        """A new queue (FIFO if `fifo`) with these attributes: its name and URL."""
        name = f"q-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        if fifo:
            attributes["FifoQueue"] = "true"
        url = self.sqs.create_queue(
            QueueName=name, Attributes={k: str(v) for k, v in attributes.items()}
        )["QueueUrl"]
        self.urls.append(url)
        return name, url

    def arn(self, name: str) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"

    def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight)"""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return (
            int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        )

    def wait_drained(self, url: str, timeout: float = 30.0) -> None:
        wait_for(lambda: self.counts(url) == (0, 0), timeout, f"{url} drained")

    def send(self, url: str, *bodies: str, **kwargs: Any) -> dict[str, str]:
        """body -> message id"""
        return {
            b: self.sqs.send_message(QueueUrl=url, MessageBody=b, **kwargs)["MessageId"]
            for b in bodies
        }


@pytest.fixture
def queues(sqs: Any) -> Iterator[Queues]:
    q = Queues(sqs)
    yield q
    for url in q.urls:
        q.sqs.delete_queue(QueueUrl=url)
