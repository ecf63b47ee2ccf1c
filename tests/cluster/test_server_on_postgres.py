"""A real server keeps its control plane in PostgreSQL: what one node was told through the
Lambda API (functions, versions, aliases, settings, URLs, policies, tags, layers, the admin
key) another node on the same database answers with after the first stopped, usage included;
a node with another sealing key exits non-zero saying so.

The nodes are `lamina serve --cluster` processes, one at a time: the store layer is what is
tested here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests.cluster._engines import NatsCluster
from tests.conftest import ROLE, Server, make_zip, wait_for

from lamina.store.engine import make_engine


def node(data_dir: Path, database_url: str, name: str, nats: NatsCluster) -> Server:
    """A `lamina serve --cluster` node of its own cluster name (one per test database)."""
    cluster = "t" + database_url.rsplit("/", 1)[1].replace("_", "")
    args = ("--cluster", "--database", database_url, "--nats", ",".join(nats.urls))
    args += ("--node-name", name, "--cluster-name", cluster, "--sandbox", "process")
    return Server(data_dir=data_dir, extra_args=args)


HANDLER = """
import os
def handler(event, context):
    return {"secret": os.environ["SECRET"], "got": event}
"""


def test_a_second_node_sees_what_the_first_was_told(
    database_url: str, tmp_path: Path, runtime_images: Any, nats3: NatsCluster
) -> None:
    first = node(tmp_path / "a", database_url, "a", nats3).start(timeout=60)
    try:
        lam = first.client()
        lam.create_function(
            FunctionName="shared",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": HANDLER})},
            Environment={"Variables": {"SECRET": "s3cret"}},
            Tags={"team": "blue"},
        )
        lam.get_waiter("function_active_v2").wait(
            FunctionName="shared", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        version = lam.publish_version(FunctionName="shared")["Version"]
        lam.create_alias(FunctionName="shared", Name="live", FunctionVersion=version)
        lam.put_function_concurrency(FunctionName="shared", ReservedConcurrentExecutions=5)
        lam.put_function_event_invoke_config(FunctionName="shared", MaximumRetryAttempts=1)
        url = lam.create_function_url_config(FunctionName="shared", AuthType="AWS_IAM")
        lam.add_permission(
            FunctionName="shared",
            StatementId="s1",
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
        )
        layer = lam.publish_layer_version(
            LayerName="deps", Content={"ZipFile": make_zip({"python/x.py": "X = 1\n"})}
        )
        out = lam.invoke(FunctionName="shared", Qualifier="live", Payload=b'{"n": 1}')
        assert json.loads(out["Payload"].read()) == {"secret": "s3cret", "got": {"n": 1}}

        engine = make_engine(database_url)
        try:

            def used() -> Any:
                with engine.connect() as conn:
                    return conn.execute(
                        text("SELECT requests FROM usage WHERE function = 'shared'")
                    ).scalar()

            assert wait_for(used, message="the invocation's usage in PostgreSQL") == 1
        finally:
            engine.dispose()
    finally:
        assert first.stop() == 0, first.log()

    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "secret.key", tmp_path / "b" / "secret.key")
    second = node(tmp_path / "b", database_url, "b", nats3).start(timeout=60)
    try:
        lam = second.client()  # signs with the admin key the first node stored
        fn = lam.get_function(FunctionName="shared")
        assert fn["Configuration"]["Environment"]["Variables"] == {"SECRET": "s3cret"}
        assert fn["Tags"] == {"team": "blue"}
        assert fn["Concurrency"]["ReservedConcurrentExecutions"] == 5
        assert lam.get_alias(FunctionName="shared", Name="live")["FunctionVersion"] == version
        config = lam.get_function_event_invoke_config(FunctionName="shared")
        assert config["MaximumRetryAttempts"] == 1
        got = lam.get_function_url_config(FunctionName="shared")
        # (its host is the node's own)
        assert got["FunctionUrl"].split("/")[3:] == url["FunctionUrl"].split("/")[3:]
        assert (
            json.loads(lam.get_policy(FunctionName="shared")["Policy"])["Statement"][0]["Sid"]
            == "s1"
        )
        versions = lam.list_layer_versions(LayerName="deps")["LayerVersions"]
        assert [v["LayerVersionArn"] for v in versions] == [layer["LayerVersionArn"]]
    finally:
        assert second.stop() == 0, second.log()

    stranger = node(tmp_path / "c", database_url, "c", nats3)  # its own, new sealing key
    with pytest.raises(RuntimeError, match="exited with 1"):
        stranger.start(timeout=60)
    assert f"the sealing key {tmp_path / 'c' / 'secret.key'} is not the cluster's" in stranger.log()
