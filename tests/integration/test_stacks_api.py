"""`/lamina/stacks`: the stack records `lamina deploy --template` keeps on the server, their
checks (AWS-shaped errors, never a 500), their survival across a restart, and the
`lamina:*Stack` actions a key's policy is checked against."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials
from tests.conftest import SIGNED_HTTP, Server, lamina

from lamina.cli.signing import Signer

pytestmark = pytest.mark.control_plane

RECORD = {
    "TemplatePath": "/apps/one/template.yaml",
    "Parameters": {"Stage": "dev"},
    "Resources": {
        "Fn": {
            "type": "AWS::Lambda::Function",
            "physical_ref": "one-Fn",
            "attributes": {"Arn": "arn:aws:lambda:us-east-1:000000000000:function:one-Fn"},
            "properties": {"Runtime": "python3.11"},
            "properties_digest": "abc",
            "status": "CREATE_COMPLETE",
        }
    },
    "Outputs": {"FnArn": "arn:aws:lambda:us-east-1:000000000000:function:one-Fn"},
    "Status": "CREATE_COMPLETE",
}


def _put(server: Server, name: str, body: Any) -> httpx.Response:
    return SIGNED_HTTP.put(f"{server.endpoint}/lamina/stacks/{name}", json=body)


def test_put_get_list_delete_and_the_record_survives_a_restart(own_server: Any) -> None:
    first = own_server()
    put = _put(first, "one", RECORD)
    assert put.status_code == 200, put.text
    created = put.json()["Stack"]
    assert created["StackName"] == "one" and created["ResourceCount"] == 1
    second_put = _put(first, "one", dict(RECORD, Status="UPDATE_COMPLETE"))
    assert second_put.json()["Stack"]["CreationTime"] == created["CreationTime"]
    first.stop()
    second = own_server(first.data_dir)
    got = SIGNED_HTTP.get(f"{second.endpoint}/lamina/stacks/one").json()["Stack"]
    assert got["StackStatus"] == "UPDATE_COMPLETE"
    assert got["Resources"] == RECORD["Resources"] and got["Outputs"] == RECORD["Outputs"]
    listed = lamina("stacks", endpoint=second.endpoint)
    assert listed.returncode == 0 and "one" in listed.stdout and "UPDATE_COMPLETE" in listed.stdout
    shown = lamina("stacks", "show", "one", endpoint=second.endpoint)
    assert "one-Fn" in shown.stdout and "FnArn" in shown.stdout, shown.stdout
    deleted = SIGNED_HTTP.delete(f"{second.endpoint}/lamina/stacks/one")
    assert deleted.status_code == 204
    missing = SIGNED_HTTP.get(f"{second.endpoint}/lamina/stacks/one")
    assert missing.status_code == 404
    assert missing.headers["x-amzn-ErrorType"].startswith("ResourceNotFoundException")
    assert "no stacks" in lamina("stacks", endpoint=second.endpoint).stdout
    gone = lamina("stacks", "delete", "one", endpoint=second.endpoint)
    assert gone.returncode != 0 and "does not exist" in gone.stderr


def test_bad_records_are_refused_with_aws_errors(server: Server) -> None:
    bad: list[tuple[str, Any]] = [
        ("9starts-with-digit", RECORD),
        ("x" * 129, RECORD),
        ("ok", {"Nope": 1}),
        ("ok", dict(RECORD, Status="FINE")),
        ("ok", dict(RECORD, Resources=[1])),
        ("ok", dict(RECORD, Resources={"A": {"type": 1}})),
        ("ok", dict(RECORD, Resources={"A": dict(RECORD["Resources"]["Fn"], extra=1)})),
        ("ok", dict(RECORD, Parameters="x")),
        ("ok", dict(RECORD, TemplatePath=3)),
    ]
    for name, body in bad:
        resp = _put(server, name, body)
        assert resp.status_code == 400, (name, body, resp.text)
        assert resp.headers["x-amzn-ErrorType"].startswith("ValidationException"), resp.text
    not_json = SIGNED_HTTP.put(f"{server.endpoint}/lamina/stacks/ok", content=b"{")
    assert not_json.status_code == 400
    assert SIGNED_HTTP.get(f"{server.endpoint}/lamina/stacks/ok").status_code == 404


def test_stack_actions_are_authorized(server: Server) -> None:
    made = SIGNED_HTTP.post(f"{server.endpoint}/lamina/keys", json={})
    assert made.status_code in (200, 201), made.text
    access, secret = made.json()["AccessKeyId"], made.json()["SecretAccessKey"]
    grant = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["lamina:ListStacks", "lamina:GetStack"],
                "Resource": "*",
            }
        ],
    }
    put = SIGNED_HTTP.post(f"{server.endpoint}/lamina/keys/{access}/policies", json=grant)
    assert put.status_code == 200, put.text
    signer = Signer("", Credentials(access, secret), region="us-east-1")
    assert _put(server, "authz", RECORD).status_code == 200
    with httpx.Client(auth=signer, timeout=5.0) as reader:
        assert reader.get(f"{server.endpoint}/lamina/stacks").status_code == 200
        assert reader.get(f"{server.endpoint}/lamina/stacks/authz").status_code == 200
        denied = reader.put(f"{server.endpoint}/lamina/stacks/authz", json=RECORD)
        assert denied.status_code == 403 and "lamina:PutStack" in denied.text
        denied = reader.delete(f"{server.endpoint}/lamina/stacks/authz")
        assert denied.status_code == 403 and "lamina:DeleteStack" in denied.text
    assert SIGNED_HTTP.delete(f"{server.endpoint}/lamina/stacks/authz").status_code == 204
