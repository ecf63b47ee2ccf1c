"""Authentication: SigV4 in both forms, keys, sessions, the first-start profile, --auth off.

Loopback only; boto3 never probes instance metadata (conftest sets AWS_EC2_METADATA_DISABLED)
and no test writes the real ~/.aws (HOME and the AWS file variables point into tmp).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import httpx
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from tests.conftest import ADMIN_KEY, SIGNED_HTTP, Functions, Server, free_port, lamina

pytestmark = pytest.mark.control_plane

_FN = "/2015-03-31/functions"


def _client(server: Server, key: str, secret: str, token: str | None = None, **kw: Any) -> Any:
    return boto3.client(
        kw.pop("service", "lambda"),
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}),
    )


def _code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def _signed(
    server: Server,
    method: str = "GET",
    path: str = _FN,
    body: bytes = b"",
    creds: Credentials | None = None,
    service: str = "lambda",
) -> AWSRequest:
    request = AWSRequest(method=method, url=server.endpoint + path, data=body)
    botocore.auth.SigV4Auth(creds or Credentials(*ADMIN_KEY), service, "us-east-1").add_auth(
        request
    )
    return request


def _send(request: AWSRequest, body: bytes | None = None) -> httpx.Response:
    return httpx.request(
        request.method,
        request.url,
        headers=dict(request.headers.items()),
        content=request.body if body is None else body,
    )


def test_signed_requests_work_for_every_api(server: Server) -> None:
    assert "Functions" in _client(server, *ADMIN_KEY).list_functions()
    assert "logGroups" in _client(server, *ADMIN_KEY, service="logs").describe_log_groups()
    assert "Rules" in _client(server, *ADMIN_KEY, service="events").list_rules()


def test_unsigned_is_missing_token(server: Server) -> None:
    resp = httpx.get(server.endpoint + _FN)
    assert resp.status_code == 403
    assert resp.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert resp.json()["message"] == "Missing Authentication Token"
    # The JSON APIs say it in `__type`; the open endpoints stay open.
    logs = httpx.post(
        server.endpoint + "/",
        headers={"X-Amz-Target": "Logs_20140328.DescribeLogGroups"},
        content=b"{}",
    )
    assert logs.status_code == 403
    assert logs.json()["__type"] == "MissingAuthenticationTokenException"
    assert httpx.get(server.endpoint + "/health").status_code == 200
    assert httpx.get(server.endpoint + "/metrics").status_code == 200
    assert httpx.get(server.endpoint + "/lamina/environments").status_code == 403


def test_unknown_key(server: Server) -> None:
    for service, call in (("lambda", "list_functions"), ("logs", "describe_log_groups")):
        with pytest.raises(ClientError) as e:
            getattr(_client(server, "AKIANOSUCHKEY0000000", "x" * 40, service=service), call)()
        assert _code(e) == "UnrecognizedClientException"
        assert e.value.response["Error"]["Message"] == (
            "The security token included in the request is invalid."
        )
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_wrong_secret_and_tampering(server: Server) -> None:
    with pytest.raises(ClientError) as e:
        _client(server, ADMIN_KEY[0], "not-the-secret").list_functions()
    assert _code(e) == "InvalidSignatureException"
    assert "does not match the signature you provided" in e.value.response["Error"]["Message"]

    request = _signed(server)
    auth = request.headers["Authorization"]
    request.headers.replace_header("Authorization", auth[:-1] + ("0" if auth[-1] != "0" else "1"))
    tampered = _send(request)
    assert tampered.status_code == 403
    assert tampered.headers["x-amzn-ErrorType"] == "InvalidSignatureException"

    body = json.dumps({"FunctionName": "x"}).encode()
    request = _signed(server, "POST", _FN, body)
    other = _send(request, body.replace(b"x", b"y"))
    assert other.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert _send(_signed(server, "GET", _FN)).status_code == 200

    bad = httpx.get(server.endpoint + _FN, headers={"Authorization": "AWS4-HMAC-SHA256 nope"})
    assert bad.headers["x-amzn-ErrorType"] == "IncompleteSignatureException"


def _shifted(monkeypatch: pytest.MonkeyPatch, minutes: int) -> None:
    when = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)


def test_clock_skew(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _shifted(monkeypatch, -10)
    with pytest.raises(ClientError) as old:
        _client(server, *ADMIN_KEY).list_functions()
    assert _code(old) == "InvalidSignatureException"
    assert old.value.response["Error"]["Message"].startswith("Signature expired: ")
    assert "(" in old.value.response["Error"]["Message"]
    assert old.value.response["Error"]["Message"].endswith(" - 5 min.)")
    _shifted(monkeypatch, 10)
    with pytest.raises(ClientError) as new:
        _client(server, *ADMIN_KEY).list_functions()
    assert new.value.response["Error"]["Message"].startswith("Signature not yet current: ")
    _shifted(monkeypatch, -3)  # within the 5 minutes
    _client(server, *ADMIN_KEY).list_functions()


def _presigned(server: Server, expires: int) -> str:
    request = AWSRequest(method="GET", url=server.endpoint + _FN)
    botocore.auth.SigV4QueryAuth(
        Credentials(*ADMIN_KEY), "lambda", "us-east-1", expires=expires
    ).add_auth(request)
    return str(request.url)


def test_presigned_urls(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _presigned(server, 60)
    assert "X-Amz-Signature=" in url and "Authorization" not in url
    assert "Functions" in httpx.get(url).json()
    tampered = httpx.get(url.replace("X-Amz-Expires=60", "X-Amz-Expires=61"))
    assert tampered.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    _shifted(monkeypatch, -10)
    expired = httpx.get(_presigned(server, 60))
    assert expired.status_code == 403
    assert expired.json()["message"].startswith("Signature expired")


def test_odd_signatures_are_refused_with_403s_not_500s(server: Server) -> None:
    request = _signed(server)
    headers = {k: v.encode() for k, v in request.headers.items()}
    for name, value in (
        ("Authorization", headers["Authorization"][:-2] + b"\xff\xfe"),  # not hex, not ASCII
        ("Host", b"[::1"),  # no URL parser takes it; it is compared as sent
    ):
        response = httpx.request("GET", request.url, headers=headers | {name: value})
        assert response.status_code == 403, response.text
        assert response.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert httpx.request("GET", request.url, headers=headers).status_code == 200


def test_function_role_session(functions: Functions, server: Server) -> None:
    """An environment's credentials are a session of its role; they sign as it, and a
    wrong or missing token does not."""
    code = (
        "import os\n\ndef handler(event, context):\n    return {k: os.environ[k] for k in "
        "('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN')}\n"
    )
    role = "authn-session"
    name = functions.create(code)["FunctionName"]
    lam = server.client()
    lam.update_function_configuration(
        FunctionName=name, Role=f"arn:aws:iam::000000000000:role/{role}"
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    out = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    key, secret, token = (
        out["AWS_ACCESS_KEY_ID"],
        out["AWS_SECRET_ACCESS_KEY"],
        out["AWS_SESSION_TOKEN"],
    )
    assert key.startswith("ASIA") and len(key) == 20 and len(secret) == 40
    # Authenticated as the role's session, which may do nothing while the role is unknown...
    with pytest.raises(ClientError) as denied:
        _client(server, key, secret, token).list_functions()
    assert _code(denied) == "AccessDeniedException"
    assert f"assumed-role/{role}/{name}" in str(denied.value)
    # ...and what the role's policies allow once Lamina knows it (no new session needed).
    allow = {"Effect": "Allow", "Action": "lambda:ListFunctions", "Resource": "*"}
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{role}",
        json={"Policies": [{"Version": "2012-10-17", "Statement": [allow]}]},
    )
    assert put.status_code in (200, 201), put.text
    assert "Functions" in _client(server, key, secret, token).list_functions()
    with pytest.raises(ClientError) as no_token:
        _client(server, key, secret).list_functions()
    assert _code(no_token) == "UnrecognizedClientException"
    with pytest.raises(ClientError) as bad_token:
        _client(server, key, secret, token[:-2] + "xx").list_functions()
    assert _code(bad_token) == "UnrecognizedClientException"


def test_iam_function_url(functions: Functions, server: Server) -> None:
    code = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'hi'}\n"
    name = functions.create(code)["FunctionName"]
    lam = server.client()
    url = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    assert httpx.get(url).status_code == 403
    request = AWSRequest(method="GET", url=url)
    botocore.auth.SigV4Auth(Credentials(*ADMIN_KEY), "lambda", "us-east-1").add_auth(request)
    resp = _send(request)
    assert resp.status_code == 200 and resp.text == "hi"
    request = AWSRequest(method="GET", url=url)
    botocore.auth.SigV4Auth(Credentials("test", "wrong"), "lambda", "us-east-1").add_auth(request)
    assert _send(request).status_code == 403


def test_keys_cli(server: Server, tmp_path: Path) -> None:
    made = lamina("keys", "create", "--name", "ci", "--json", endpoint=server.endpoint)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert set(key) == {"AccessKeyId", "SecretAccessKey"}
    user = _client(server, key["AccessKeyId"], key["SecretAccessKey"])
    with pytest.raises(ClientError) as no_policy:  # a new key may do nothing yet
        user.list_functions()
    assert _code(no_policy) == "AccessDeniedException"
    listed = lamina("keys", "list", endpoint=server.endpoint)
    assert key["AccessKeyId"] in listed.stdout and "SecretAccessKey" not in listed.stdout

    # A key that is not the admin's may not manage keys.
    request = _signed(
        server,
        "POST",
        "/lamina/keys",
        b"{}",
        creds=Credentials(key["AccessKeyId"], key["SecretAccessKey"]),
    )
    denied = _send(request)
    assert denied.status_code == 403
    assert denied.headers["x-amzn-ErrorType"] == "AccessDeniedException"

    policy = tmp_path / "p.json"
    allow = {"Effect": "Allow", "Action": "lambda:List*", "Resource": "*"}
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [allow]}))
    attached = lamina(
        "keys", "attach-policy", key["AccessKeyId"], str(policy), endpoint=server.endpoint
    )
    assert attached.returncode == 0, attached.stderr
    assert "Functions" in user.list_functions()
    policy.write_text("[]")
    refused = lamina(
        "keys", "attach-policy", key["AccessKeyId"], str(policy), endpoint=server.endpoint
    )
    assert refused.returncode != 0

    deleted = lamina("keys", "delete", key["AccessKeyId"], endpoint=server.endpoint)
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(ClientError) as gone:
        user.list_functions()
    assert _code(gone) == "UnrecognizedClientException"


@pytest.fixture
def aws_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("[other]\naws_access_key_id = KEEP\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / ".aws" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / ".aws" / "config"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    yield home


def test_first_start_writes_the_profile(aws_home: Path, tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", extra_args=("--auth", "on")).start()
    try:
        assert "aws --profile lamina lambda list-functions" in srv.log()
        creds = (aws_home / ".aws" / "credentials").read_text()
        assert "[other]" in creds and "[lamina]" in creds
        assert (aws_home / ".aws" / "credentials").stat().st_mode & 0o777 == 0o600
        session = boto3.Session(profile_name="lamina")
        client = session.client("lambda", config=Config(retries={"total_max_attempts": 1}))
        assert client.meta.endpoint_url == srv.endpoint
        assert "Functions" in client.list_functions()
        # The CLI finds the profile by itself.
        env_free = subprocess.run(
            [sys.executable, "-m", "lamina", "ls", "--endpoint", srv.endpoint],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert env_free.returncode == 0, env_free.stderr
    finally:
        assert srv.stop() == 0
    srv.start()
    try:
        assert srv.log().count("aws --profile lamina") == 1
        assert "Functions" in boto3.Session(profile_name="lamina").client("lambda").list_functions()
    finally:
        assert srv.stop() == 0


def test_auth_off_on_loopback_only(tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", extra_args=("--auth", "off")).start()
    try:
        assert httpx.get(srv.endpoint + _FN).status_code == 200
        assert "authentication is off" in srv.log()
    finally:
        assert srv.stop() == 0
    # Refused before anything binds (nothing beyond loopback is ever bound in tests).
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "serve",
            "--auth",
            "off",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "other"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "--auth off is only allowed on a loopback address" in refused.stderr
    assert not (tmp_path / "other").exists()


def test_good_callers_keep_working_under_a_flood_of_bad_signatures(server: Server) -> None:
    stop = threading.Event()
    refused = 0

    def flood() -> None:
        nonlocal refused
        bad = _client(server, ADMIN_KEY[0], "wrong-secret")
        while not stop.is_set():
            try:
                bad.list_functions()
            except ClientError:
                refused += 1

    threads = [threading.Thread(target=flood) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        good = _client(server, *ADMIN_KEY)
        for _ in range(30):
            assert "Functions" in good.list_functions()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert refused > 0


def test_cli_falls_back_to_the_data_dirs_admin_key(server: Server, tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")
    }
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none-config"),
        "LAMINA_ENDPOINT": server.endpoint,
    }

    def ls(data_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lamina", "ls"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env | {"LAMINA_DATA_DIR": str(data_dir)},
        )

    found = ls(server.data_dir)
    assert found.returncode == 0, found.stderr
    unsigned = ls(tmp_path / "empty")
    assert unsigned.returncode != 0
    assert "MissingAuthenticationTokenException" in unsigned.stderr


@pytest.mark.parametrize(
    ("path", "target", "expected"),
    [
        (_FN, None, "lambda"),
        ("/lamina/routes", None, "lambda"),
        ("/", "Logs_20140328.DescribeLogGroups", "logs"),
        ("/", "AWSEvents.ListRules", "events"),
    ],
)
def test_credential_scope_names_the_api_addressed(
    server: Server, path: str, target: str | None, expected: str
) -> None:
    """A request signed for another of Lamina's services is refused as AWS refuses it, naming
    the service of the API it addressed (it used to be accepted, and a wrong scope was told
    'events' whatever the API)."""
    method = "GET" if target is None else "POST"
    headers = {} if target is None else {"X-Amz-Target": target}
    body = b"" if target is None else b"{}"
    for service in ("lambda", "logs", "events"):
        request = AWSRequest(method=method, url=server.endpoint + path, data=body, headers=headers)
        botocore.auth.SigV4Auth(Credentials(*ADMIN_KEY), service, "us-east-1").add_auth(request)
        resp = _send(request)
        if service == expected:
            assert resp.status_code == 200, resp.text
            continue
        assert resp.status_code == 403, (service, resp.text)
        error = resp.json()
        error_type = error["__type"] if target else resp.headers["x-amzn-ErrorType"]
        assert error_type == "InvalidSignatureException"
        assert error["message"] == f"Credential should be scoped to correct service: '{expected}'. "
