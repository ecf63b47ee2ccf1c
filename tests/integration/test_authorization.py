"""Authorization end to end, with signed requests: access keys limited by their policies, a
function's resource policy granting another principal, and a function's execution role letting
it invoke one function and not another (signed from inside its sandbox)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tests.conftest import SIGNED_HTTP, Functions, Server, lamina

pytestmark = pytest.mark.control_plane

ACCOUNT = "000000000000"
ECHO = "def handler(event, context):\n    return {'ran': context.function_name}\n"

# A caller that signs its own Invoke requests with its environment's role session (the
# Debian interpreter functions run on has no botocore: SigV4 by hand, as any SDK does it).
CALLER = r"""
import datetime, hashlib, hmac, os, urllib.error, urllib.request

def _mac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()

def invoke(name):
    endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    host = endpoint.split("://", 1)[1]
    path = f"/2015-03-31/functions/{name}/invocations"
    body = b"{}"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    region = os.environ["AWS_REGION"]
    digest = hashlib.sha256(body).hexdigest()
    headers = {
        "host": host,
        "x-amz-content-sha256": digest,
        "x-amz-date": stamp,
        "x-amz-security-token": os.environ["AWS_SESSION_TOKEN"],
    }
    names = ";".join(sorted(headers))
    canonical = "\n".join(
        ["POST", path, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), names, digest]
    )
    scope = f"{stamp[:8]}/{region}/lambda/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (stamp[:8], region, "lambda", "aws4_request"):
        key = _mac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = (
        f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}"
    )
    sent = {k: v for k, v in headers.items() if k != "host"}
    request = urllib.request.Request(
        endpoint + path, data=body, method="POST", headers={**sent, "Authorization": auth}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return {"status": resp.status, "body": resp.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "error": e.headers.get("x-amzn-ErrorType")}

def handler(event, context):
    return {target: invoke(target) for target in event["targets"]}
"""


def client(server: Server, key: dict[str, str], service: str = "lambda") -> Any:
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        config=Config(retries={"total_max_attempts": 1}),
    )


def new_key(server: Server, tmp_path: Path, *statements: dict[str, Any]) -> dict[str, str]:
    """A new access key named after a fresh user, with one policy of `statements` (if any)."""
    name = f"user-{uuid.uuid4().hex[:8]}"
    made = lamina("keys", "create", "--name", name, "--json", endpoint=server.endpoint)
    assert made.returncode == 0, made.stderr
    key: dict[str, str] = json.loads(made.stdout)
    key["User"] = name
    if statements:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))
        attached = lamina(
            "keys", "attach-policy", key["AccessKeyId"], str(path), endpoint=server.endpoint
        )
        assert attached.returncode == 0, attached.stderr
    return key


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def test_a_key_limited_to_invoking_one_function_can_do_exactly_that(
    functions: Functions, lam: Any, server: Server, tmp_path: Path
) -> None:
    allowed = functions.create(ECHO)["FunctionName"]
    other = functions.create(ECHO)["FunctionName"]
    lam.publish_version(FunctionName=allowed)
    lam.create_alias(FunctionName=allowed, Name="live", FunctionVersion="1")
    key = new_key(
        server,
        tmp_path,
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn(allowed)},
    )
    user = client(server, key)
    resp = user.invoke(FunctionName=allowed, Payload=b"{}")
    assert json.loads(resp["Payload"].read()) == {"ran": allowed}

    with pytest.raises(ClientError) as denied:
        user.invoke(FunctionName=other, Payload=b"{}")
    assert code(denied) == "AccessDeniedException"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    message = denied.value.response["Error"]["Message"]
    assert f"user/{key['User']}" in message
    assert "lambda:InvokeFunction" in message and arn(other) in message
    # An unqualified ARN does not cover the function's aliases (IAM's rule)...
    with pytest.raises(ClientError) as alias:
        user.invoke(FunctionName=allowed, Qualifier="live", Payload=b"{}")
    assert code(alias) == "AccessDeniedException"
    # ...nor any other action on the function, nor the account's listings.
    for call in (
        lambda: user.get_function(FunctionName=allowed),
        lambda: user.delete_function(FunctionName=allowed),
        lambda: user.list_functions(),
        lambda: client(server, key, "logs").describe_log_groups(),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException"
    assert lam.get_function(FunctionName=allowed)  # still there


def test_an_explicit_deny_wins_over_an_allow(
    functions: Functions, lam: Any, server: Server, tmp_path: Path
) -> None:
    name = functions.create(ECHO)["FunctionName"]
    key = new_key(
        server,
        tmp_path,
        {"Effect": "Allow", "Action": "lambda:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "lambda:Delete*", "Resource": arn(name)},
    )
    user = client(server, key)
    assert user.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
    with pytest.raises(ClientError) as denied:
        user.delete_function(FunctionName=name)
    assert code(denied) == "AccessDeniedException"
    assert "explicit deny" in denied.value.response["Error"]["Message"]
    assert lam.get_function(FunctionName=name)


def test_a_resource_policy_grants_another_principal(
    functions: Functions, lam: Any, server: Server, tmp_path: Path
) -> None:
    name = functions.create(ECHO)["FunctionName"]
    key = new_key(server, tmp_path)  # no identity policy at all
    user = client(server, key)
    with pytest.raises(ClientError) as before:
        user.invoke(FunctionName=name, Payload=b"{}")
    assert code(before) == "AccessDeniedException"
    lam.add_permission(
        FunctionName=name,
        StatementId="let-user-invoke",
        Action="lambda:InvokeFunction",
        Principal=f"arn:aws:iam::{ACCOUNT}:user/{key['User']}",
    )
    assert json.loads(user.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()) == {
        "ran": name
    }
    with pytest.raises(ClientError):  # the grant is for invoking only
        user.get_function(FunctionName=name)
    lam.remove_permission(FunctionName=name, StatementId="let-user-invoke")
    with pytest.raises(ClientError) as after:
        user.invoke(FunctionName=name, Payload=b"{}")
    assert code(after) == "AccessDeniedException"


def test_a_functions_role_lets_it_invoke_one_function_and_not_a_third(
    functions: Functions, lam: Any, server: Server
) -> None:
    allowed = functions.create(ECHO)["FunctionName"]
    third = functions.create(ECHO)["FunctionName"]
    role = f"caller-{uuid.uuid4().hex[:8]}"
    statement = {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn(allowed)}
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{role}",
        json={"Policies": [{"Version": "2012-10-17", "Statement": [statement]}]},
    )
    assert put.status_code in (200, 201), put.text
    caller = functions.create(CALLER, Timeout=30)["FunctionName"]
    lam.update_function_configuration(
        FunctionName=caller, Role=f"arn:aws:iam::{ACCOUNT}:role/{role}"
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=caller)

    resp = lam.invoke(FunctionName=caller, Payload=json.dumps({"targets": [allowed, third]}))
    out = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, out
    assert out[allowed]["status"] == 200
    assert json.loads(out[allowed]["body"]) == {"ran": allowed}
    assert out[third] == {"status": 403, "error": "AccessDeniedException"}
