"""Code and layer content from S3: a Lamina server with `--s3-endpoint` pointed at moto's
`moto_server` (a third-party S3-API server, used here as the user's object store) deploys
functions and layers from objects, and answers Lambda's errors for missing ones."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from tests.conftest import ROLE, Server, free_port, make_zip

from lamina import limits
from lamina.control.s3_code import S3CodeFetcher, S3Location
from lamina.errors import InvalidParameterValueError

pytestmark = pytest.mark.control_plane

# The credentials Lamina's S3 client finds in its environment (moto accepts any).
S3_KEY = ("s3-reader", "s3-secret")


@contextmanager
def moto_server(log_dir: Path, **env: str) -> Iterator[str]:
    """A `moto_server` on a free loopback port (with `env` added to its environment)."""
    port = free_port()
    log = open(log_dir / f"moto-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}")
            # A bare connect, not a request: with authorization on, moto counts requests.
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's object store."""
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY[0],
        aws_secret_access_key=S3_KEY[1],
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"code-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_server(
    own_server: Callable[..., Server], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Server:
    """A Lamina server reading code from the moto endpoint, with credentials from its
    environment (the usual AWS chain)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_KEY[1])
    return own_server(None, "--s3-endpoint", s3_endpoint)


def _error(e: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = e.value.response["Error"]
    return str(err["Code"]), str(err["Message"])


def _invoke(lam: Any, name: str, **kwargs: Any) -> Any:
    resp = lam.invoke(FunctionName=name, Payload=b"{}", **kwargs)
    assert "FunctionError" not in resp, resp["Payload"].read()
    return json.loads(resp["Payload"].read())


def _handler(answer: str) -> bytes:
    return make_zip({"app.py": f"def handler(event, context):\n    return {answer!r}\n"})


def test_function_code_from_s3_deploys_and_runs(s3_server: Server, s3: Any, bucket: str) -> None:
    lam = s3_server.client()
    package = _handler("from-s3")
    s3.put_object(Bucket=bucket, Key="fn/app.zip", Body=package)
    created = lam.create_function(
        FunctionName="from-s3",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"S3Bucket": bucket, "S3Key": "fn/app.zip"},
    )
    assert created["CodeSize"] == len(package)
    assert created["CodeSha256"] == _sha256_b64(package)
    lam.get_waiter("function_active_v2").wait(
        FunctionName="from-s3", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert _invoke(lam, "from-s3") == "from-s3"
    # GetFunction points at Lamina's own copy, which is the object's bytes.
    location = lam.get_function(FunctionName="from-s3")["Code"]["Location"]
    assert location.startswith(s3_server.endpoint)
    assert httpx.get(location, timeout=10).content == package

    # UpdateFunctionCode from S3, the new code runs.
    s3.put_object(Bucket=bucket, Key="fn/v2.zip", Body=_handler("updated"))
    updated = lam.update_function_code(
        FunctionName="from-s3", S3Bucket=bucket, S3Key="fn/v2.zip", Publish=True
    )
    assert updated["Version"] == "1"
    lam.get_waiter("function_updated_v2").wait(
        FunctionName="from-s3", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert _invoke(lam, "from-s3") == "updated"


def test_an_object_version_is_read_as_named(s3_server: Server, s3: Any, bucket: str) -> None:
    lam = s3_server.client()
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="app.zip", Body=_handler("first"))["VersionId"]
    s3.put_object(Bucket=bucket, Key="app.zip", Body=_handler("second"))
    lam.create_function(
        FunctionName="versioned",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"S3Bucket": bucket, "S3Key": "app.zip", "S3ObjectVersion": first},
    )
    lam.get_waiter("function_active_v2").wait(
        FunctionName="versioned", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert _invoke(lam, "versioned") == "first"


def test_layer_content_from_s3(s3_server: Server, s3: Any, bucket: str) -> None:
    lam = s3_server.client()
    layer_zip = make_zip({"python/shared.py": "WHO = 'layer-from-s3'\n"})
    s3.put_object(Bucket=bucket, Key="layers/shared.zip", Body=layer_zip)
    layer = lam.publish_layer_version(
        LayerName="shared",
        Content={"S3Bucket": bucket, "S3Key": "layers/shared.zip"},
        CompatibleRuntimes=["python3.11"],
    )
    assert layer["Content"]["CodeSize"] == len(layer_zip)
    assert layer["Content"]["CodeSha256"] == _sha256_b64(layer_zip)
    lam.create_function(
        FunctionName="uses-layer",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={
            "ZipFile": make_zip(
                {"app.py": "import shared\ndef handler(e, c):\n    return shared.WHO\n"}
            )
        },
        Layers=[layer["LayerVersionArn"]],
    )
    lam.get_waiter("function_active_v2").wait(
        FunctionName="uses-layer", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert _invoke(lam, "uses-layer") == "layer-from-s3"


def test_missing_objects_get_lambdas_errors_and_leave_nothing(
    s3_server: Server, s3: Any, bucket: str
) -> None:
    lam = s3_server.client()
    with pytest.raises(ClientError) as e:
        lam.create_function(
            FunctionName="no-key",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"S3Bucket": bucket, "S3Key": "missing.zip"},
        )
    assert _error(e) == (
        "InvalidParameterValueException",
        "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: "
        "The specified key does not exist.",
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="no-key")

    with pytest.raises(ClientError) as e:
        lam.publish_layer_version(
            LayerName="no-bucket",
            Content={"S3Bucket": f"absent-{uuid.uuid4().hex[:8]}", "S3Key": "layer.zip"},
        )
    code, message = _error(e)
    assert code == "InvalidParameterValueException"
    assert message.startswith(
        "Error occurred while GetObject. S3 Error Code: NoSuchBucket. S3 Error Message: "
    ), message
    assert lam.list_layer_versions(LayerName="no-bucket")["LayerVersions"] == []

    # An update from a missing key keeps the code the function had.
    s3.put_object(Bucket=bucket, Key="ok.zip", Body=_handler("kept"))
    lam.create_function(
        FunctionName="keeps-code",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"S3Bucket": bucket, "S3Key": "ok.zip"},
    )
    before = lam.get_function(FunctionName="keeps-code")["Configuration"]
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName="keeps-code", S3Bucket=bucket, S3Key="gone.zip")
    assert "S3 Error Code: NoSuchKey" in _error(e)[1]
    after = lam.get_function(FunctionName="keeps-code")["Configuration"]
    assert after["CodeSha256"] == before["CodeSha256"]
    assert after["RevisionId"] == before["RevisionId"]
    # ...and the function is not left busy by the failed update.
    lam.get_waiter("function_active_v2").wait(
        FunctionName="keeps-code", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert _invoke(lam, "keeps-code") == "kept"


def test_access_denied_and_missing_credentials_are_answered_clearly(
    own_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto checks credentials and IAM policies after its first 5 requests: the set-up below.
    with moto_server(tmp_path, INITIAL_NO_AUTH_ACTION_COUNT="5") as endpoint:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="admin")
        iam.create_user(UserName="nobody")
        iam.put_user_policy(
            UserName="admin",
            PolicyName="everything",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        admin = iam.create_access_key(UserName="admin")["AccessKey"]
        nobody = iam.create_access_key(UserName="nobody")["AccessKey"]
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=admin["AccessKeyId"],
            aws_secret_access_key=admin["SecretAccessKey"],
        )
        s3.create_bucket(Bucket="locked")
        s3.put_object(Bucket="locked", Key="app.zip", Body=_handler("never"))

        # Lamina's credentials may not read the bucket.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", nobody["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", nobody["SecretAccessKey"])
        lam = own_server(tmp_path / "denied", "--s3-endpoint", endpoint).client()
        with pytest.raises(ClientError) as e:
            lam.create_function(
                FunctionName="denied",
                Runtime="python3.11",
                Role=ROLE,
                Handler="app.handler",
                Code={"S3Bucket": "locked", "S3Key": "app.zip"},
            )
        assert _error(e) == (
            "InvalidParameterValueException",
            "Error occurred while GetObject. S3 Error Code: AccessDenied. S3 Error Message: "
            "Access Denied",
        )

        # Lamina has no credentials at all.
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        lam = own_server(tmp_path / "anonymous", "--s3-endpoint", endpoint).client()
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
            lam.create_function(
                FunctionName="anonymous",
                Runtime="python3.11",
                Role=ROLE,
                Handler="app.handler",
                Code={"S3Bucket": "locked", "S3Key": "app.zip"},
            )
        assert "no credentials for its S3 endpoint" in str(e.value)


def test_not_a_zip_in_s3_is_refused_like_an_upload(s3_server: Server, s3: Any, bucket: str) -> None:
    lam = s3_server.client()
    s3.put_object(Bucket=bucket, Key="text.zip", Body=b"not a zip")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.create_function(
            FunctionName="not-zip",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"S3Bucket": bucket, "S3Key": "text.zip"},
        )
    assert "Could not unzip uploaded file" in str(e.value)


def test_without_an_endpoint_s3_code_is_refused_naming_the_flag(lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.create_function(
            FunctionName=f"t-{uuid.uuid4().hex[:8]}",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"S3Bucket": "some-bucket", "S3Key": "app.zip"},
        )
    assert "--s3-endpoint" in str(e.value)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.publish_layer_version(
            LayerName="needs-s3", Content={"S3Bucket": "some-bucket", "S3Key": "layer.zip"}
        )
    assert "--s3-endpoint" in str(e.value)


def test_s3_locations_are_validated_as_the_model_says(lam_unchecked: Any) -> None:
    lam = lam_unchecked
    with pytest.raises(ClientError) as e:
        lam.create_function(
            FunctionName="bad-bucket",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"S3Bucket": "ab", "S3Key": "app.zip"},
        )
    assert _error(e) == (
        "ValidationException",
        "1 validation error detected: Value 'ab' at 'code.s3Bucket' failed to satisfy "
        "constraint: Member must have length greater than or equal to 3",
    )
    # ...reported with the request's other validation errors, as one ValidationException.
    with pytest.raises(ClientError) as e:
        lam.create_function(
            FunctionName="bad-bucket",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Timeout=0,
            Code={"S3Bucket": "ab", "S3Key": "app.zip"},
        )
    code, message = _error(e)
    assert code == "ValidationException"
    assert message.startswith("2 validation errors detected:")
    assert "'code.s3Bucket'" in message and "'timeout'" in message
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName="whatever", S3Bucket="bucket.", S3Key="k")
    code, message = _error(e)
    assert code == "ValidationException"
    assert "at 's3Bucket'" in message
    with pytest.raises(ClientError) as e:
        lam.publish_layer_version(LayerName="half", Content={"S3Bucket": "some-bucket"})
    assert _error(e)[0] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        lam.create_function(
            FunctionName="both",
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"S3Bucket": "some-bucket", "S3Key": "k", "ZipFile": _handler("x")},
        )
    assert _error(e)[0] == "InvalidParameterValueException"


def test_the_fetcher_stops_reading_past_the_size_limit(
    s3_endpoint: str, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lambda's 250 MB is too much to move in a test: a smaller limit exercises the same check.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_KEY[1])
    monkeypatch.setattr(limits, "S3_ZIP_MAX_BYTES", 1000)
    s3.put_object(Bucket=bucket, Key="big.zip", Body=b"x" * 1001)
    s3.put_object(Bucket=bucket, Key="small.zip", Body=b"y" * 1000)
    fetcher = S3CodeFetcher(s3_endpoint, "us-east-1")
    try:
        with pytest.raises(InvalidParameterValueError, match="Unzipped size must be smaller"):
            asyncio.run(fetcher.fetch(S3Location(bucket, "big.zip")))
        assert asyncio.run(fetcher.fetch(S3Location(bucket, "small.zip"))) == b"y" * 1000
    finally:
        fetcher.close()


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_serve_refuses_an_s3_endpoint_that_is_not_a_url(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
            "--s3-endpoint",
            "minio.local:9000",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--s3-endpoint: 'minio.local:9000' is not an http(s) URL" in out.stderr
