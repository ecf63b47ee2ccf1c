"""Execution roles: `lamina roles`, `/lamina/roles`, a function's Role, `--strict-roles`, and
KMSKeyArn (recorded)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import ROLE, SIGNED_HTTP, Functions, Server, lamina, make_zip

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}],
}
KMS = "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _name() -> str:
    return f"r-{uuid.uuid4().hex[:10]}"


def _create(lam: Any, role: str, **kwargs: Any) -> dict[str, Any]:
    resp: dict[str, Any] = lam.create_function(
        FunctionName=kwargs.pop("FunctionName", None) or f"t-{uuid.uuid4().hex[:12]}",
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return 1\n"})},
        **kwargs,
    )
    return resp


def test_cli_put_list_get_delete_and_roles_survive_a_restart(
    own_server: Any, tmp_path: Path
) -> None:
    first = own_server()
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    put = lamina(
        "roles",
        "put",
        "app-role",
        str(policy),
        "--description",
        "the app",
        "--path",
        "/svc/",
        endpoint=first.endpoint,
    )
    assert put.returncode == 0, put.stderr
    arn = "arn:aws:iam::000000000000:role/svc/app-role"
    assert arn in put.stdout
    listed = lamina("roles", "list", endpoint=first.endpoint)
    assert "app-role" in listed.stdout and arn in listed.stdout and "the app" in listed.stdout
    got = json.loads(lamina("roles", "get", "app-role", endpoint=first.endpoint).stdout)
    assert got["Arn"] == arn and got["Policies"] == [POLICY] and got["Path"] == "/svc/"

    first.stop()
    second = own_server(data_dir=first.data_dir)
    again = SIGNED_HTTP.get(second.endpoint + "/lamina/roles/app-role").json()["Role"]
    assert again == got, "a role is kept across a restart"

    deleted = lamina("roles", "delete", "app-role", endpoint=second.endpoint)
    assert deleted.returncode == 0, deleted.stderr
    assert "no roles" in lamina("roles", "list", endpoint=second.endpoint).stdout
    missing = lamina("roles", "get", "app-role", endpoint=second.endpoint)
    assert missing.returncode == 1
    assert "ResourceNotFoundException" in missing.stderr
    assert "app-role cannot be found" in missing.stderr


def test_cli_refuses_a_policy_file_that_is_not_json(server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = lamina("roles", "put", _name(), str(bad), endpoint=server.endpoint)
    assert out.returncode == 1 and "is not JSON" in out.stderr
    out = lamina("roles", "put", _name(), str(tmp_path / "gone.json"), endpoint=server.endpoint)
    assert out.returncode == 1 and "cannot read" in out.stderr


def test_endpoints_put_get_list_delete(server: Server) -> None:
    name = _name()
    url = f"{server.endpoint}/lamina/roles/{name}"
    resp = SIGNED_HTTP.put(url, json={"Policies": POLICY, "Description": "one document"})
    assert resp.status_code == 200, resp.text
    role = resp.json()["Role"]
    assert role["Arn"] == f"arn:aws:iam::000000000000:role/{name}"
    assert role["Path"] == "/" and role["Policies"] == [POLICY]
    assert role["CreateDate"].endswith("+0000")
    names = [
        r["RoleName"] for r in SIGNED_HTTP.get(server.endpoint + "/lamina/roles").json()["Roles"]
    ]
    assert name in names
    # Role names are unique without regard to case, as in IAM.
    clash = SIGNED_HTTP.put(url.replace(name, name.upper()), json={"Policies": [POLICY]})
    assert clash.status_code == 409
    assert SIGNED_HTTP.delete(url).status_code == 204
    assert SIGNED_HTTP.get(url).status_code == 404
    assert SIGNED_HTTP.delete(url).status_code == 404


@pytest.mark.parametrize(
    ("name", "body", "status", "kind", "says"),
    [
        ("x" * 65, {"Policies": [POLICY]}, 400, "ValidationException", "roleName"),
        ("bad name", {"Policies": [POLICY]}, 400, "ValidationException", "roleName"),
        ("ok", {"Policies": [POLICY], "Path": "no-slash"}, 400, "ValidationException", "path"),
        ("ok", {}, 400, "InvalidParameterValueException", "non-empty list"),
        ("ok", {"Policies": ["text"]}, 400, "InvalidParameterValueException", "JSON object"),
        (
            "ok",
            {"Policies": [{"Statement": [{"Effect": "Allow", "Action": "*"}]}]},
            400,
            "InvalidParameterValueException",
            "Resource and NotResource",
        ),
        (
            "ok",
            {"Policies": [{"Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}}]},
            400,
            "InvalidParameterValueException",
            "Effect must be Allow or Deny",
        ),
        ("ok", {"Policies": [POLICY], "Tags": {}}, 400, "InvalidParameterValueException", "Tags"),
    ],
)
def test_bad_names_and_policies_are_refused_clearly(
    server: Server, name: str, body: dict[str, Any], status: int, kind: str, says: str
) -> None:
    resp = SIGNED_HTTP.put(f"{server.endpoint}/lamina/roles/{name}", json=body)
    assert resp.status_code == status
    assert resp.headers["x-amzn-ErrorType"] == kind
    assert says in resp.json()["message"]


@pytest.mark.parametrize(
    "role",
    [
        "arn:aws:iam::123:role/short-account",
        "arn:aws:iam::000000000000:user/not-a-role",
        "lamina-function",
        "arn:aws:s3:::000000000000:role/x",
    ],
)
def test_a_malformed_role_arn_is_a_validation_error(
    lam_unchecked: Any, functions: Functions, role: str
) -> None:
    with pytest.raises(ClientError) as e:
        _create(lam_unchecked, role)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "'role'" in e.value.response["Error"]["Message"]
    made = functions.create("def handler(e, c):\n    return 1\n")
    with pytest.raises(ClientError) as e:
        lam_unchecked.update_function_configuration(FunctionName=made["FunctionName"], Role=role)
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_an_unknown_role_is_accepted_without_strict_roles(lam: Any, functions: Functions) -> None:
    unknown = "arn:aws:iam::000000000000:role/nobody-defined-this"
    made = _create(lam, unknown)
    functions.names.append(made["FunctionName"])
    assert made["Role"] == unknown


def test_strict_roles_refuse_a_role_lamina_does_not_know(own_server: Any) -> None:
    srv = own_server(None, "--strict-roles")
    lam = srv.client()
    unknown = "arn:aws:iam::000000000000:role/unknown"
    with pytest.raises(ClientError) as e:
        _create(lam, unknown)
    err = e.value.response["Error"]
    assert err["Code"] == "InvalidParameterValueException"
    assert err["Message"] == "The role defined for the function cannot be assumed by Lambda."
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    role = SIGNED_HTTP.put(srv.endpoint + "/lamina/roles/known", json={"Policies": [POLICY]})
    arn = role.json()["Role"]["Arn"]
    made = _create(lam, arn, FunctionName="strict-fn")
    assert made["Role"] == arn
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName="strict-fn", Role=unknown)
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"

    # Deleting a role in use is allowed (as in IAM); the function keeps naming it.
    assert SIGNED_HTTP.delete(srv.endpoint + "/lamina/roles/known").status_code == 204
    assert lam.get_function_configuration(FunctionName="strict-fn")["Role"] == arn
    # ...and an update that leaves the Role alone still works.
    lam.get_waiter("function_updated_v2").wait(
        FunctionName="strict-fn", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert lam.update_function_configuration(FunctionName="strict-fn", Timeout=5)["Timeout"] == 5


def test_kms_key_arn_is_recorded_per_version(lam: Any, functions: Functions) -> None:
    made = functions.create("def handler(e, c):\n    return 1\n", KMSKeyArn=KMS)
    name = made["FunctionName"]
    assert made["KMSKeyArn"] == KMS
    assert lam.get_function_configuration(FunctionName=name)["KMSKeyArn"] == KMS
    version = lam.publish_version(FunctionName=name)["Version"]
    other = KMS.replace("1234abcd", "9999abcd")
    updated = lam.update_function_configuration(FunctionName=name, KMSKeyArn=other)
    assert updated["KMSKeyArn"] == other
    assert (
        lam.get_function_configuration(FunctionName=name, Qualifier=version)["KMSKeyArn"] == KMS
    ), "a published version keeps its own"
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    # "" goes back to no key of the caller's, as on Lambda.
    cleared = lam.update_function_configuration(FunctionName=name, KMSKeyArn="")
    assert "KMSKeyArn" not in cleared
    assert "KMSKeyArn" not in lam.get_function(FunctionName=name)["Configuration"]


def test_a_malformed_kms_key_arn_is_a_validation_error(lam_unchecked: Any) -> None:
    with pytest.raises(ClientError) as e:
        _create(lam_unchecked, ROLE, KMSKeyArn="not-an-arn")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "kMSKeyArn" in e.value.response["Error"]["Message"]
