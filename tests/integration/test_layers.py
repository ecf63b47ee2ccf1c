"""Layers through boto3: the layer operations, functions that use layers, and /opt at run time."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import signal
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.exceptions import ClientError
from tests.conftest import ROLE, Functions, Server, make_zip

_MODEL = botocore.session.get_session().get_service_model("lambda")
CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000")
PREFIX = "arn:aws:lambda:us-east-1:000000000000:layer:"

IMPORTER = (
    "import shared\n"
    "def handler(event, context):\n"
    "    return {'from': shared.WHO, 'file': shared.__file__}\n"
)


def assert_shape(data: dict[str, Any], shape_name: str) -> None:
    """Every member we return is a member of botocore's shape, recursively for structures."""
    shape = _MODEL.shape_for(shape_name)
    _check(data, shape, shape_name)


def _check(data: Any, shape: Any, where: str) -> None:
    if shape.type_name == "structure":
        assert isinstance(data, dict), where
        unknown = set(data) - set(shape.members) - {"ResponseMetadata"}
        assert not unknown, f"{where} has no members {unknown}"
        for key, value in data.items():
            if key in shape.members:
                _check(value, shape.members[key], f"{where}.{key}")
    elif shape.type_name == "list":
        assert isinstance(data, list), where
        for item in data:
            _check(item, shape.member, f"{where}[]")


def error_code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def exe_zip(files: dict[str, str], executable: tuple[str, ...] = ()) -> bytes:
    """A zip whose `executable` entries keep the executable bit."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 if name in executable else 0o100644) << 16
            zf.writestr(info, content)
    return buf.getvalue()


class Layers:
    """Publishes uniquely named layers and deletes their versions after the test."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.published: list[tuple[str, int]] = []

    def name(self) -> str:
        return f"l-{uuid.uuid4().hex[:12]}"

    def publish(
        self, files: dict[str, str] | bytes, name: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        zipped = files if isinstance(files, bytes) else make_zip(dict(files))
        resp: dict[str, Any] = self.client.publish_layer_version(
            LayerName=name or self.name(), Content={"ZipFile": zipped}, **kwargs
        )
        self.published.append((resp["LayerArn"].rsplit(":", 1)[1], resp["Version"]))
        return resp

    def cleanup(self) -> None:
        for name, version in self.published:
            self.client.delete_layer_version(LayerName=name, VersionNumber=version)


@pytest.fixture
def layers(lam: Any) -> Iterator[Layers]:
    made = Layers(lam)
    yield made
    made.cleanup()


def python_layer(who: str, folder: str = "python") -> dict[str, str]:
    return {f"{folder}/shared.py": f"WHO = {who!r}\n"}


def invoke(lam: Any, name: str) -> tuple[Any, str | None]:
    resp = lam.invoke(FunctionName=name)
    return json.loads(resp["Payload"].read()), resp.get("FunctionError")


def wait_updated(lam: Any, name: str) -> None:
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )


# -- the layer operations ----------------------------------------------------------


def test_publish_returns_what_lambda_fills(layers: Layers) -> None:
    zipped = make_zip(python_layer("one"))
    name = layers.name()
    resp = layers.publish(
        zipped,
        name=name,
        Description="shared code",
        CompatibleRuntimes=["python3.11", "python3.12"],
        CompatibleArchitectures=["x86_64"],
        LicenseInfo="MIT",
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert_shape(resp, "PublishLayerVersionResponse")
    assert resp["LayerArn"] == PREFIX + name
    assert resp["LayerVersionArn"] == f"{PREFIX}{name}:1"
    assert resp["Version"] == 1
    assert CREATED.fullmatch(resp["CreatedDate"])
    assert resp["Description"] == "shared code"
    assert resp["CompatibleRuntimes"] == ["python3.11", "python3.12"]
    assert resp["CompatibleArchitectures"] == ["x86_64"]
    assert resp["LicenseInfo"] == "MIT"
    content = resp["Content"]
    assert content["CodeSize"] == len(zipped)
    assert content["CodeSha256"] == base64.b64encode(hashlib.sha256(zipped).digest()).decode()
    download = httpx.get(content["Location"])
    assert download.status_code == 200
    assert download.content == zipped


def test_publish_without_optional_members(layers: Layers) -> None:
    resp = layers.publish(python_layer("bare"))
    assert resp["Description"] == ""
    for absent in ("CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo"):
        assert absent not in resp


def test_get_layer_version_and_by_arn(layers: Layers, lam: Any) -> None:
    published = layers.publish(python_layer("got"), CompatibleRuntimes=["python3.11"])
    name = published["LayerArn"].rsplit(":", 1)[1]
    for got in (
        lam.get_layer_version(LayerName=name, VersionNumber=1),
        lam.get_layer_version(LayerName=published["LayerArn"], VersionNumber=1),
        lam.get_layer_version_by_arn(Arn=published["LayerVersionArn"]),
    ):
        assert_shape(got, "GetLayerVersionResponse")
        for key in ("LayerArn", "LayerVersionArn", "Version", "CreatedDate", "Content"):
            assert got[key] == published[key]
        assert got["CompatibleRuntimes"] == ["python3.11"]


def test_missing_layer_versions_are_not_found(layers: Layers, lam: Any) -> None:
    name = layers.publish(python_layer("x"))["LayerArn"].rsplit(":", 1)[1]
    for call in (
        lambda: lam.get_layer_version(LayerName=name, VersionNumber=2),
        lambda: lam.get_layer_version(LayerName="no-such-layer", VersionNumber=1),
        lambda: lam.get_layer_version_by_arn(Arn=f"{PREFIX}{name}:2"),
        lambda: lam.get_layer_version_by_arn(
            Arn=f"arn:aws:lambda:us-east-1:111111111111:layer:{name}:1"
        ),
    ):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            call()


def test_bad_layer_parameters(lam_unchecked: Any) -> None:
    lam = lam_unchecked
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.get_layer_version(LayerName="some-layer", VersionNumber=0)
    assert "less than 1" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as ce:
        lam.get_layer_version_by_arn(Arn="arn:aws:lambda:us-east-1:000000000000:function:f")
    assert error_code(ce) == "ValidationException"
    with pytest.raises(ClientError) as ce:
        lam.get_layer_version(LayerName="bad name!", VersionNumber=1)
    assert error_code(ce) == "ValidationException"
    with pytest.raises(ClientError) as ce:
        lam.list_layers(MaxItems=51)
    assert error_code(ce) == "ValidationException"
    with pytest.raises(ClientError) as ce:
        lam.list_layer_versions(LayerName="some-layer", CompatibleRuntime="cobol85")
    assert error_code(ce) == "ValidationException"


def code_files(server: Server) -> set[str]:
    root = server.data_dir / "code"
    return {str(p.relative_to(root)) for p in root.rglob("*") if "tmp" not in p.parts}


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"LayerName": "bad name!"}, "ValidationException"),
        ({"LayerName": "x" * 141}, "ValidationException"),
        ({"CompatibleRuntimes": ["cobol85"]}, "ValidationException"),
        ({"CompatibleRuntimes": ["python3.11"] * 16}, "ValidationException"),
        ({"CompatibleArchitectures": ["sparc"]}, "ValidationException"),
        ({"LicenseInfo": "x" * 513}, "ValidationException"),
        ({"Description": "x" * 257}, "ValidationException"),
        ({"Content": {"S3Bucket": "b", "S3Key": "k"}}, "ValidationException"),
        # the session server has no --s3-endpoint
        ({"Content": {"S3Bucket": "bucket", "S3Key": "k"}}, "InvalidParameterValueException"),
        ({"Content": {}}, "InvalidParameterValueException"),
        ({"Content": {"ZipFile": b"not a zip"}}, "InvalidParameterValueException"),
        (
            {"Content": {"ZipFile": make_zip({"../escape.py": "x"})}},
            "InvalidParameterValueException",
        ),
        (
            {"LayerName": "arn:aws:lambda:eu-west-1:000000000000:layer:elsewhere"},
            "InvalidParameterValueException",
        ),
    ],
)
def test_publish_refuses_bad_input_and_leaves_nothing(
    lam_unchecked: Any, server: Server, kwargs: dict[str, Any], code: str
) -> None:
    before = code_files(server)
    args: dict[str, Any] = {
        "LayerName": f"l-{uuid.uuid4().hex[:12]}",
        "Content": {"ZipFile": make_zip({"python/refused.py": f"X = {uuid.uuid4().hex!r}"})},
    } | kwargs
    with pytest.raises(ClientError) as e:
        lam_unchecked.publish_layer_version(**args)
    assert error_code(e) == code, e.value.response["Error"]["Message"]
    assert code_files(server) <= before  # nothing added
    name = args["LayerName"]
    if re.fullmatch(r"[a-zA-Z0-9_-]{1,140}", name):
        assert lam_unchecked.list_layer_versions(LayerName=name)["LayerVersions"] == []


def test_versions_count_up_and_are_never_reused(layers: Layers, lam: Any) -> None:
    name = layers.name()
    assert layers.publish(python_layer("1"), name=name)["Version"] == 1
    assert layers.publish(python_layer("2"), name=name)["Version"] == 2
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    assert layers.publish(python_layer("3"), name=name)["Version"] == 3
    lam.delete_layer_version(LayerName=name, VersionNumber=1)
    lam.delete_layer_version(LayerName=name, VersionNumber=3)
    assert lam.list_layer_versions(LayerName=name)["LayerVersions"] == []
    assert name not in {item["LayerName"] for item in all_layers(lam)}
    assert layers.publish(python_layer("4"), name=name)["Version"] == 4


def test_delete_layer_version(layers: Layers, lam: Any, server: Server) -> None:
    zipped = make_zip(python_layer(f"doomed-{uuid.uuid4().hex}"))
    sha = hashlib.sha256(zipped).hexdigest()
    published = layers.publish(zipped)
    name = published["LayerArn"].rsplit(":", 1)[1]
    assert (server.data_dir / "code" / "zips" / f"{sha}.zip").is_file()
    resp = lam.delete_layer_version(LayerName=name, VersionNumber=1)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version(LayerName=name, VersionNumber=1)
    # Nothing else used the code, so it is gone, and so is its download.
    assert not (server.data_dir / "code" / "zips" / f"{sha}.zip").exists()
    assert not (server.data_dir / "code" / "tasks" / sha).exists()
    assert httpx.get(published["Content"]["Location"]).status_code == 404
    # Deleting what does not exist succeeds, as on Lambda.
    lam.delete_layer_version(LayerName=name, VersionNumber=1)
    lam.delete_layer_version(LayerName="never-published", VersionNumber=9)


def all_layers(lam: Any, **filters: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in lam.get_paginator("list_layers").paginate(
        PaginationConfig={"PageSize": 2}, **filters
    ):
        assert len(page["Layers"]) <= 2
        assert_shape(page, "ListLayersResponse")
        found += page["Layers"]
    return found


def test_list_layers_paginates_and_shows_the_latest_version(layers: Layers, lam: Any) -> None:
    names = sorted(layers.name() for _ in range(3))
    for name in names:
        layers.publish(python_layer("a"), name=name, Description="old")
        layers.publish(python_layer("b"), name=name, Description="new")
    first = lam.list_layers(MaxItems=1)
    assert len(first["Layers"]) == 1
    assert first["NextMarker"]
    found = all_layers(lam)
    listed = [item["LayerName"] for item in found]
    assert len(listed) == len(set(listed)), "a layer was listed twice"
    assert listed == sorted(listed)
    mine = {item["LayerName"]: item for item in found if item["LayerName"] in names}
    assert sorted(mine) == names
    for name, item in mine.items():
        assert item["LayerArn"] == PREFIX + name
        latest = item["LatestMatchingVersion"]
        assert latest["Version"] == 2
        assert latest["LayerVersionArn"] == f"{PREFIX}{name}:2"
        assert latest["Description"] == "new"
        assert CREATED.fullmatch(latest["CreatedDate"])


def test_list_filters_match_compatible_runtimes_and_architectures(layers: Layers, lam: Any) -> None:
    name = layers.name()
    layers.publish(
        python_layer("a"),
        name=name,
        CompatibleRuntimes=["python3.12"],
        CompatibleArchitectures=["arm64"],
    )
    layers.publish(python_layer("b"), name=name, CompatibleRuntimes=["python3.13"])
    layers.publish(python_layer("c"), name=name)  # says nothing: no filter matches it

    def latest(**filters: Any) -> int | None:
        for item in all_layers(lam, **filters):
            if item["LayerName"] == name:
                return int(item["LatestMatchingVersion"]["Version"])
        return None

    def versions(**filters: Any) -> list[int]:
        resp = lam.list_layer_versions(LayerName=name, **filters)
        return [v["Version"] for v in resp["LayerVersions"]]

    assert latest() == 3
    assert latest(CompatibleRuntime="python3.12") == 1
    assert latest(CompatibleRuntime="python3.13") == 2
    assert latest(CompatibleRuntime="nodejs20.x") is None
    assert latest(CompatibleArchitecture="arm64") == 1
    assert latest(CompatibleRuntime="python3.13", CompatibleArchitecture="arm64") is None
    assert versions() == [3, 2, 1]
    assert versions(CompatibleRuntime="python3.12") == [1]
    assert versions(CompatibleArchitecture="arm64", CompatibleRuntime="python3.12") == [1]
    assert versions(CompatibleArchitecture="x86_64") == []


def test_list_layer_versions_paginates_newest_first(layers: Layers, lam: Any) -> None:
    name = layers.name()
    for i in range(5):
        layers.publish(python_layer(str(i)), name=name, LicenseInfo="MIT")
    first = lam.list_layer_versions(LayerName=name, MaxItems=2)
    assert [v["Version"] for v in first["LayerVersions"]] == [5, 4]
    assert first["NextMarker"]
    seen = []
    for page in lam.get_paginator("list_layer_versions").paginate(
        LayerName=PREFIX + name, PaginationConfig={"PageSize": 2}
    ):
        assert_shape(page, "ListLayerVersionsResponse")
        seen += [v["Version"] for v in page["LayerVersions"]]
        for v in page["LayerVersions"]:
            assert v["LayerVersionArn"] == f"{PREFIX}{name}:{v['Version']}"
            assert v["LicenseInfo"] == "MIT"
    assert seen == [5, 4, 3, 2, 1]
    assert lam.list_layer_versions(LayerName="no-such-layer")["LayerVersions"] == []


# -- functions that use layers -----------------------------------------------------


def test_a_function_importing_from_a_layer_works(
    layers: Layers, functions: Functions, lam: Any
) -> None:
    layer = layers.publish(python_layer("layer"), CompatibleRuntimes=["python3.11"])
    created = functions.create(IMPORTER, Layers=[layer["LayerVersionArn"]])
    assert created["Layers"] == [
        {"Arn": layer["LayerVersionArn"], "CodeSize": layer["Content"]["CodeSize"]}
    ]
    assert_shape(created, "FunctionConfiguration")
    result, error = invoke(lam, created["FunctionName"])
    assert error is None, result
    assert result["from"] == "layer"
    assert result["file"].endswith("/python/shared.py")
    got = lam.get_function(FunctionName=created["FunctionName"])
    assert_shape(got, "GetFunctionResponse")
    assert got["Configuration"]["Layers"] == created["Layers"]


@pytest.mark.parametrize("folder", ["nodejs/node_modules", "nodejs/node20/node_modules"])
def test_a_node_function_requiring_from_a_layer_works(
    layers: Layers, functions: Functions, lam: Any, folder: str
) -> None:
    layer = layers.publish({f"{folder}/greet/index.js": "exports.who = () => 'node layer';\n"})
    code = "const greet = require('greet');\nexports.handler = async () => greet.who();\n"
    name = functions.create(
        {"index.js": code},
        handler="index.handler",
        runtime="nodejs20.x",
        Layers=[layer["LayerVersionArn"]],
    )["FunctionName"]
    result, error = invoke(lam, name)
    assert error is None, result
    assert result == "node layer"


def test_site_packages_of_the_runtime_version(
    layers: Layers, functions: Functions, lam: Any
) -> None:
    layer = layers.publish(python_layer("site", "python/lib/python3.11/site-packages"))
    name = functions.create(IMPORTER, Layers=[layer["LayerVersionArn"]])["FunctionName"]
    result, error = invoke(lam, name)
    assert error is None, result
    assert result["from"] == "site"
    assert "/python/lib/python3.11/site-packages/shared.py" in result["file"]


def test_later_layers_overwrite_earlier_files(
    layers: Layers, functions: Functions, lam: Any
) -> None:
    first = layers.publish(python_layer("first") | {"python/only_first.py": "X = 1\n"})
    second = layers.publish(python_layer("second"))
    code = IMPORTER.replace("import shared", "import shared, only_first")
    arns = [first["LayerVersionArn"], second["LayerVersionArn"]]
    one = functions.create(code, Layers=arns)["FunctionName"]
    other = functions.create(code, Layers=arns[::-1])["FunctionName"]
    assert invoke(lam, one)[0]["from"] == "second"
    assert invoke(lam, other)[0]["from"] == "first"
    # The function's own code comes before every layer.
    mine = functions.create({"app.py": IMPORTER, "shared.py": "WHO = 'own'\n"}, Layers=arns)
    assert invoke(lam, mine["FunctionName"])[0]["from"] == "own"


def test_updating_layers_changes_what_the_function_imports(
    layers: Layers, functions: Functions, lam: Any
) -> None:
    v1 = layers.publish(python_layer("v1"))
    name = layers.publish(python_layer("v2"), name=v1["LayerArn"].rsplit(":", 1)[1])
    created = functions.create(IMPORTER, Layers=[v1["LayerVersionArn"]])
    fn = created["FunctionName"]
    assert invoke(lam, fn)[0]["from"] == "v1"
    resp = lam.update_function_configuration(FunctionName=fn, Layers=[name["LayerVersionArn"]])
    assert resp["Layers"][0]["Arn"] == name["LayerVersionArn"]
    assert resp["RevisionId"] != created["RevisionId"]
    wait_updated(lam, fn)
    assert invoke(lam, fn)[0]["from"] == "v2"
    # Other changes keep the layers.
    lam.update_function_configuration(FunctionName=fn, Timeout=10)
    wait_updated(lam, fn)
    assert lam.get_function_configuration(FunctionName=fn)["Layers"] == resp["Layers"]
    # An empty list removes them.
    resp = lam.update_function_configuration(FunctionName=fn, Layers=[])
    assert "Layers" not in resp
    wait_updated(lam, fn)
    result, error = invoke(lam, fn)
    assert error == "Unhandled"
    assert "shared" in result["errorMessage"]


def test_layer_bin_is_on_path(layers: Layers, functions: Functions, lam: Any) -> None:
    layer = layers.publish(
        exe_zip({"bin/tool": '#!/bin/sh\necho tool-ran "$@"\n'}, executable=("bin/tool",))
    )
    code = (
        "import subprocess\n"
        "def handler(event, context):\n"
        "    return subprocess.run(['tool', 'x'], capture_output=True, text=True).stdout\n"
    )
    name = functions.create(code, Layers=[layer["LayerVersionArn"]])["FunctionName"]
    result, error = invoke(lam, name)
    assert error is None, result
    assert result == "tool-ran x\n"


def test_compatible_runtimes_do_not_restrict_functions(
    layers: Layers, functions: Functions, lam: Any
) -> None:
    """Lambda uses CompatibleRuntimes only to filter ListLayers/ListLayerVersions: a function
    may take a layer that names other runtimes, or other architectures."""
    layer = layers.publish(
        python_layer("node-only?"),
        CompatibleRuntimes=["nodejs20.x"],
        CompatibleArchitectures=["arm64"],
    )
    name = functions.create(IMPORTER, Layers=[layer["LayerVersionArn"]])["FunctionName"]
    assert invoke(lam, name)[0]["from"] == "node-only?"


def test_function_layer_errors(layers: Layers, functions: Functions, lam: Any) -> None:
    one = layers.publish(python_layer("1"))
    two = layers.publish(python_layer("2"), name=one["LayerArn"].rsplit(":", 1)[1])
    missing = one["LayerArn"] + ":99"
    others = [layers.publish(python_layer(str(i)))["LayerVersionArn"] for i in range(5)]
    existing = functions.create(IMPORTER, Layers=[one["LayerVersionArn"]])["FunctionName"]
    cases = [
        ([missing], f"Layer version {missing} does not exist."),
        ([PREFIX + "never-published:1"], "does not exist"),
        (
            ["arn:aws:lambda:us-east-1:111111111111:layer:theirs:1"],
            "does not exist",
        ),
        (["arn:aws:lambda:eu-west-1:000000000000:layer:x:1"], "same region"),
        ([*others, one["LayerVersionArn"]], "more than 5 layers"),
        ([one["LayerVersionArn"], two["LayerVersionArn"]], "same layer"),
        ([one["LayerVersionArn"], one["LayerVersionArn"]], "same layer"),
    ]
    for arns, message in cases:
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
            functions.create(IMPORTER, Layers=arns)
        assert message in e.value.response["Error"]["Message"]
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.update_function_configuration(FunctionName=existing, Layers=arns)
    with pytest.raises(ClientError) as ce:
        functions.create(IMPORTER, Layers=["not-an-arn"])
    assert error_code(ce) == "ValidationException"
    # Nothing changed on the function that refused updates.
    config = lam.get_function_configuration(FunctionName=existing)
    assert [layer["Arn"] for layer in config["Layers"]] == [one["LayerVersionArn"]]
    assert invoke(lam, existing)[0]["from"] == "1"


def test_refused_layers_leave_no_function_or_code(layers: Layers, lam: Any, server: Server) -> None:
    before = code_files(server)
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": IMPORTER + f"# {uuid.uuid4().hex}\n"})},
            Layers=[PREFIX + "never-published:1"],
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    assert code_files(server) <= before  # nothing added


def test_a_function_keeps_a_deleted_layer_version(
    layers: Layers, functions: Functions, lam: Any, server: Server
) -> None:
    """As on Lambda: a function keeps using a layer version deleted after it took it, but no
    new function can take a deleted version."""
    zipped = make_zip(python_layer(f"kept-{uuid.uuid4().hex}"))
    sha = hashlib.sha256(zipped).hexdigest()
    layer = layers.publish(zipped)
    name = layer["LayerArn"].rsplit(":", 1)[1]
    fn = functions.create(IMPORTER, Layers=[layer["LayerVersionArn"]])["FunctionName"]
    lam.delete_layer_version(LayerName=name, VersionNumber=1)
    assert invoke(lam, fn)[0]["from"].startswith("kept-")
    assert (server.data_dir / "code" / "tasks" / sha).is_dir(), "the function still uses it"
    # Sending the same Layers again (with another change) keeps the deleted version.
    lam.update_function_configuration(FunctionName=fn, Layers=[layer["LayerVersionArn"]], Timeout=9)
    wait_updated(lam, fn)
    lam.update_function_code(FunctionName=fn, ZipFile=make_zip({"app.py": IMPORTER + "#2\n"}))
    wait_updated(lam, fn)
    assert invoke(lam, fn)[0]["from"].startswith("kept-")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        functions.create(IMPORTER, Layers=[layer["LayerVersionArn"]])
    lam.delete_function(FunctionName=fn)
    deadline = time.monotonic() + 10
    while (server.data_dir / "code" / "tasks" / sha).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (server.data_dir / "code" / "tasks" / sha).exists()
    assert not (server.data_dir / "code" / "zips" / f"{sha}.zip").exists()


def test_layer_code_outlives_a_function_with_the_same_code(
    layers: Layers, functions: Functions, lam: Any, server: Server
) -> None:
    """One zip published as a layer and deployed as a function is stored once; deleting the
    function must not take the layer's code with it."""
    files = {"app.py": IMPORTER, "python/shared.py": f"WHO = '{uuid.uuid4().hex}'\n"}
    zipped = make_zip(files)
    sha = hashlib.sha256(zipped).hexdigest()
    layer = layers.publish(zipped)
    fn = functions.create(files)["FunctionName"]
    lam.invoke(FunctionName=fn)
    lam.delete_function(FunctionName=fn)
    time.sleep(0.5)  # the function's environment stops and its code is released meanwhile
    assert (server.data_dir / "code" / "tasks" / sha).is_dir()
    assert httpx.get(layer["Content"]["Location"]).content == zipped


def opt_dirs(server: Server) -> set[str]:
    root = server.data_dir / "opt"
    return {p.name for p in root.iterdir() if re.fullmatch(r"[0-9a-f]{64}", p.name)}


def test_merged_opt_is_shared_and_removed_when_unused(
    layers: Layers, functions: Functions, lam: Any, server: Server
) -> None:
    layer = layers.publish(python_layer(f"opt-{uuid.uuid4().hex}"))
    before = opt_dirs(server)
    one = functions.create(IMPORTER, Layers=[layer["LayerVersionArn"]])["FunctionName"]
    two = functions.create(IMPORTER, Layers=[layer["LayerVersionArn"]])["FunctionName"]
    made = opt_dirs(server) - before
    assert len(made) == 1, "functions with the same layers share one /opt"
    invoke(lam, one)
    lam.delete_function(FunctionName=one)
    assert made <= opt_dirs(server)
    lam.delete_function(FunctionName=two)
    deadline = time.monotonic() + 10
    while made & opt_dirs(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not made & opt_dirs(server)


def test_layers_survive_a_restart(own_server: Any) -> None:
    first = own_server()
    lam = first.client()
    layer = lam.publish_layer_version(
        LayerName="kept", Content={"ZipFile": make_zip(python_layer("restarted"))}
    )
    lam.create_function(
        FunctionName="with-layer",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": IMPORTER})},
        Layers=[layer["LayerVersionArn"]],
    )
    before = lam.get_function_configuration(FunctionName="with-layer")
    assert first.stop(signal.SIGTERM) == 0
    # A lost /opt is rebuilt at start-up.
    for merged in (first.data_dir / "opt").iterdir():
        if re.fullmatch(r"[0-9a-f]{64}", merged.name):
            for path in sorted(merged.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            merged.rmdir()
    second = own_server(first.data_dir)
    lam2 = second.client()
    after = lam2.get_function_configuration(FunctionName="with-layer")
    assert after["Layers"] == before["Layers"]
    assert lam2.get_layer_version(LayerName="kept", VersionNumber=1)["Version"] == 1
    assert invoke(lam2, "with-layer")[0]["from"] == "restarted"
    assert (
        lam2.publish_layer_version(
            LayerName="kept", Content={"ZipFile": make_zip(python_layer("again"))}
        )["Version"]
        == 2
    )
