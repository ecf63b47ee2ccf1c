"""Bad input gets Lambda's error, as the right boto3 exception, and leaves nothing behind."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import ROLE, SIGNED_HTTP, Functions, Server, make_zip

HELLO = "def handler(event, context):\n    return 1\n"
DLQ = "arn:aws:sqs:us-east-1:000000000000:dead-letters"


def code_files(server: Server) -> set[str]:
    root = server.data_dir / "code"
    # os.walk passes over a directory removed while it walks (the server collects the code of
    # functions deleted by earlier tests in the background); Path.rglob raises (CI saw it).
    found = set()
    for directory, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            found.add(os.path.relpath(os.path.join(directory, entry), root))
    return found


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


@pytest.fixture
def nothing_left(server: Server, lam: Any) -> Callable[[str], None]:
    """Asserts that a refused create left no function and no code on disk."""
    before = code_files(server)

    def check(name: str) -> None:
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function(FunctionName=name)
        # Nothing added (code of functions deleted by earlier tests may be collected meanwhile).
        assert code_files(server) <= before
        assert not list((server.data_dir / "code" / "tmp").iterdir())

    return check


def create(lam: Any, name: str, zipped: bytes, **kw: Any) -> Any:
    args = {"Runtime": "python3.11", "Role": ROLE, "Handler": "app.handler"} | kw
    return lam.create_function(FunctionName=name, Code={"ZipFile": zipped}, **args)


def symlink_zip(entries: list[tuple[str, str | None]]) -> bytes:
    """(name, link target) pairs; a None target makes a regular file."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, target in entries:
            info = zipfile.ZipInfo(name)
            if target is None:
                info.external_attr = 0o100644 << 16
                zf.writestr(info, HELLO)
            else:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, target)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["bad name", "a" * 65, "x!y", "ünï"])
def test_invalid_name(lam_unchecked: Any, nothing_left: Callable[[str], None], name: str) -> None:
    with pytest.raises(ClientError) as e:
        create(lam_unchecked, name, make_zip({"app.py": HELLO}))
    assert error_code(e) == "ValidationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unknown_runtime(lam: Any, nothing_left: Callable[[str], None]) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ClientError) as e:
        create(lam, name, make_zip({"app.py": HELLO}), Runtime="cobol85")
    assert error_code(e) == "ValidationException"
    assert "runtime" in e.value.response["Error"]["Message"]
    nothing_left(name)


def test_deprecated_runtime(lam: Any, nothing_left: Callable[[str], None]) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, make_zip({"app.py": HELLO}), Runtime="python3.7")
    assert "no longer supported" in e.value.response["Error"]["Message"]
    nothing_left(name)


def test_runtime_not_installed_names_available(
    lam: Any, nothing_left: Callable[[str], None]
) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        # (A Java runtime whose JDK is missing says so instead: see test_java.py.)
        create(lam, name, make_zip({"app.py": HELLO}), Runtime="ruby3.3")
    message = e.value.response["Error"]["Message"]
    assert "ruby3.3" in message and "python3.11" in message
    nothing_left(name)


def test_not_a_zip(lam: Any, nothing_left: Callable[[str], None]) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, b"this is not a zip file at all")
    assert "Could not unzip uploaded file" in e.value.response["Error"]["Message"]
    nothing_left(name)


def empty_zip() -> bytes:
    """A zip with no entries: its end-of-central-directory record alone, 22 bytes."""
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    assert len(buf.getvalue()) == 22
    return buf.getvalue()


def test_empty_zip(lam: Any, functions: Functions, nothing_left: Callable[[str], None]) -> None:
    """An empty zip is refused as Lambda refuses it, by create, code update and layers."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, empty_zip())
    assert e.value.response["Error"]["Message"] == "Uploaded file must be a non-empty zip"
    nothing_left(name)
    existing = functions.create(HELLO)["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.update_function_code(FunctionName=existing, ZipFile=empty_zip())
    assert e.value.response["Error"]["Message"] == "Uploaded file must be a non-empty zip"
    assert lam.get_function(FunctionName=existing)["Configuration"]["CodeSize"] > 22
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.publish_layer_version(LayerName=name, Content={"ZipFile": empty_zip()})
    assert e.value.response["Error"]["Message"] == "Uploaded file must be a non-empty zip"
    assert lam.list_layer_versions(LayerName=name)["LayerVersions"] == []


def test_nul_in_entry_name(lam: Any, nothing_left: Callable[[str], None]) -> None:
    """`zipfile` would read "app.py\0.txt" as "app.py": the name as stored is refused."""
    # `zipfile` cuts the name when writing too: the NUL goes into the bytes afterwards.
    zipped = make_zip({"app.py": HELLO, "lib/x.py#.txt": HELLO}).replace(b"#", b"\0")
    assert zipped.count(b"lib/x.py\0.txt") == 2  # the local and the central header
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, zipped)
    assert "NUL" in e.value.response["Error"]["Message"]
    nothing_left(name)


def test_corrupt_member(lam: Any, nothing_left: Callable[[str], None]) -> None:
    good = bytearray(make_zip({"app.py": HELLO * 50}))
    # Flip a byte inside the compressed data of the only member: its CRC no longer matches.
    good[60] ^= 0xFF
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        create(lam, name, bytes(good))
    nothing_left(name)


def test_bad_base64(server: Server, nothing_left: Callable[[str], None]) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    body = {
        "FunctionName": name,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": "!!! not base64 !!!"},
    }
    resp = SIGNED_HTTP.post(server.endpoint + "/2015-03-31/functions", json=body)
    assert resp.status_code == 400
    assert resp.headers["x-amzn-ErrorType"] == "InvalidParameterValueException"
    assert "base64" in resp.json()["message"]
    nothing_left(name)


def test_malformed_json_body(server: Server) -> None:
    resp = SIGNED_HTTP.post(server.endpoint + "/2015-03-31/functions", content=b"{nope")
    assert resp.status_code == 400
    assert resp.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"


def test_zip_over_upload_limit(server: Server, nothing_left: Callable[[str], None]) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    # 50 MB + 1 byte of zip, sent raw so boto3's own limits don't get in the way.
    big = base64.b64encode(b"PK" + b"\0" * (50 * 1024 * 1024 - 1)).decode()
    body = {
        "FunctionName": name,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": big},
    }
    resp = SIGNED_HTTP.post(server.endpoint + "/2015-03-31/functions", json=body, timeout=60)
    assert resp.status_code == 413
    assert resp.headers["x-amzn-ErrorType"] == "RequestEntityTooLargeException"
    nothing_left(name)


def test_unzipped_over_limit(lam: Any, tmp_path: Path, nothing_left: Callable[[str], None]) -> None:
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.py", HELLO)
        with zf.open("zeros.bin", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(251):
                f.write(chunk)
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, path.read_bytes())
    assert "Unzipped size must be smaller than 262144000 bytes" in str(e.value)
    nothing_left(name)


@pytest.mark.parametrize(
    "entries",
    [
        [("app.py", None), ("../evil.py", None)],
        [("app.py", None), ("/etc/evil.py", None)],
        [("app.py", None), ("lib/../../evil.py", None)],
        [("app.py", None), ("out", "../../../etc/passwd")],
        [("app.py", None), ("out", "/etc/passwd")],
        # Each link alone stays inside; followed together they leave the root.
        [("app.py", None), ("a", "."), ("l", "a/..")],
        [("app.py", None), ("d", "sub"), ("d/file.py", None)],
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "symlink-out", "symlink-abs", "chain", "below"],
)
def test_entries_escaping_the_root(
    lam: Any, nothing_left: Callable[[str], None], entries: list[tuple[str, str | None]]
) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, symlink_zip(entries))
    assert "Could not unzip uploaded file" in e.value.response["Error"]["Message"]
    nothing_left(name)


def test_symlink_inside_is_fine(functions: Functions, lam: Any) -> None:
    zipped = symlink_zip([("real.py", None), ("app.py", "real.py")])
    name = f"t-{uuid.uuid4().hex[:8]}"
    create(lam, name, zipped)
    functions.names.append(name)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"1"


def test_duplicate_name(functions: Functions, lam: Any) -> None:
    name = functions.create(HELLO)["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceConflictException) as e:
        create(lam, name, make_zip({"app.py": HELLO}))
    assert name in e.value.response["Error"]["Message"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"MemorySize": 64}, "greater than or equal to 128"),
        ({"MemorySize": 10241}, "less than or equal to 10240"),
        ({"Timeout": 901}, "less than or equal to 900"),
        ({"EphemeralStorage": {"Size": 100}}, "greater than or equal to 512"),
        ({"Role": "not-a-role"}, "role"),
        ({"Handler": "has space"}, "handler"),
    ],
)
def test_out_of_range_configuration(
    lam_unchecked: Any, nothing_left: Callable[[str], None], kwargs: dict[str, Any], fragment: str
) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ClientError) as e:
        create(lam_unchecked, name, make_zip({"app.py": HELLO}), **kwargs)
    assert error_code(e) == "ValidationException"
    assert fragment in e.value.response["Error"]["Message"]
    nothing_left(name)


def test_two_problems_reported_together(lam_unchecked: Any) -> None:
    with pytest.raises(ClientError) as e:
        create(
            lam_unchecked, "two-problems", make_zip({"app.py": HELLO}), MemorySize=1, Timeout=1000
        )
    assert e.value.response["Error"]["Message"].startswith("2 validation errors detected")


def test_reserved_environment_keys(lam: Any, nothing_left: Callable[[str], None]) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(
            lam,
            name,
            make_zip({"app.py": HELLO}),
            Environment={"Variables": {"AWS_REGION": "x", "OK_KEY": "y"}},
        )
    assert "Reserved keys used in this request: AWS_REGION" in str(e.value)
    nothing_left(name)


def test_environment_over_4kb(lam: Any, nothing_left: Callable[[str], None]) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(
            lam, name, make_zip({"app.py": HELLO}), Environment={"Variables": {"BIG": "x" * 4100}}
        )
    assert "4KB" in str(e.value)
    nothing_left(name)


def test_bad_update_leaves_function_unchanged(
    functions: Functions, lam: Any, lam_unchecked: Any
) -> None:
    created = functions.create(HELLO)
    name = created["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_code(FunctionName=name, ZipFile=b"not a zip")
    with pytest.raises(ClientError):
        lam_unchecked.update_function_configuration(FunctionName=name, MemorySize=5)
    config = lam.get_function_configuration(FunctionName=name)
    assert config["RevisionId"] == created["RevisionId"]
    assert config["CodeSha256"] == created["CodeSha256"]
    assert config["MemorySize"] == 128


def test_unknown_function(lam: Any) -> None:
    for call in (
        lambda: lam.get_function(FunctionName="no-such-function"),
        lambda: lam.get_function_configuration(FunctionName="no-such-function"),
        lambda: lam.update_function_configuration(FunctionName="no-such-function", Timeout=5),
        lambda: lam.update_function_code(
            FunctionName="no-such-function", ZipFile=make_zip({"app.py": HELLO})
        ),
        lambda: lam.delete_function(FunctionName="no-such-function"),
        lambda: lam.invoke(FunctionName="no-such-function"),
    ):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
            call()
        assert (
            "arn:aws:lambda:us-east-1:000000000000:function:no-such-function"
            in e.value.response["Error"]["Message"]
        )


def test_unpublished_version_is_not_found(functions: Functions, lam: Any) -> None:
    name = functions.create(HELLO)["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="7")
    assert lam.invoke(FunctionName=name, Qualifier="$LATEST")["StatusCode"] == 200


def test_unknown_route_is_aws_shaped(server: Server) -> None:
    resp = SIGNED_HTTP.get(server.endpoint + "/2015-03-31/nothing-here")
    assert resp.status_code == 404
    assert resp.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert json.loads(resp.content)["message"]


def test_unsupported_features_are_refused_not_ignored(lam: Any, functions: Functions) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, make_zip({"app.py": HELLO}), DeadLetterConfig={"TargetArn": DLQ})
    assert "SQS" in str(e.value) and "DeadLetterConfig" in str(e.value)
    existing = functions.create(HELLO)["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.update_function_code(
            FunctionName=existing, ZipFile=make_zip({"app.py": HELLO}), DryRun=True
        )
    assert "DryRun" in str(e.value)
    # Explicitly off is fine.
    create(lam, name, make_zip({"app.py": HELLO}), Publish=False)
    functions.names.append(name)
