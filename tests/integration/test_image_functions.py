"""Container-image functions end to end: images built here, pushed with skopeo to a real
`docker-registry` on loopback, created through boto3, pulled by the server and run in the
namespace sandbox.

The image is made without Docker: a root filesystem with the host's bash and curl (with the
libraries `ldd` names), and a runtime of a few lines of bash that speaks the Runtime API with
curl (the tutorial custom runtime's shape); the function's answer says what the runtime saw
(its marker file, arguments, working directory and environment)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests._oci import Registry, manifest_of, missing_tools, push, tar_of_dir, tar_of_files
from tests._oci import write_layout as layout_of
from tests.cluster._engines import free_port
from tests.conftest import ROLE, Server, lamina

if os.geteuid() != 0:
    pytest.skip(
        "image functions run in namespace sandboxes, which need root", allow_module_level=True
    )

RUNTIME = r"""#!/bin/bash
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
  EVENT=$(curl -sS -D /tmp/headers "$API/next")
  ID=""
  while IFS=: read -r key value; do
    if [[ "${key,,}" == "lambda-runtime-aws-request-id" ]]; then ID=${value//[[:space:]]/}; fi
  done < /tmp/headers
  MARK=$(< /marker)
  RESPONSE="{\"event\":$EVENT,\"marker\":\"$MARK\",\"cwd\":\"$PWD\",\"args\":\"$*\",\"name\":\"$AWS_LAMBDA_FUNCTION_NAME\",\"own\":\"$OWN\",\"mine\":\"${MINE:-}\",\"exec_env\":\"${AWS_EXECUTION_ENV:-none}\"}"
  curl -sS -o /dev/null "$API/$ID/response" -d "$RESPONSE"
done
"""
ENV = ("PATH=/usr/local/bin:/usr/bin:/bin", "OWN=from-image")


def _base_root(root: Path) -> Path:
    """bash and curl from the host, each with the libraries it links."""
    for program in ("/bin/bash", "/usr/bin/curl"):
        real = Path(os.path.realpath(program))
        target = root / program.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, target)
        found = subprocess.run(["ldd", str(real)], capture_output=True, text=True, check=True)
        for lib in re.findall(r"(/\S+)", found.stdout):
            dest = root / lib.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copy2(os.path.realpath(lib), dest)
    return root


@pytest.fixture(scope="module")
def base_layer(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    missing = missing_tools()
    assert not missing, f"the image tests need {missing}"
    return tar_of_dir(_base_root(tmp_path_factory.mktemp("base") / "root"))


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    with Registry() as running:
        yield running


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, runtime_images: Any
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("image-server")
    server = Server(
        data_dir=base / "data",
        extra_args=("--sandbox", "namespace", "--image-registry", registry.url),
    ).start()
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def lam(srv: Server) -> Any:
    return srv.client()


class Images:
    """Builds and pushes images of the test runtime, each with its own marker."""

    def __init__(self, registry: Registry, base: bytes, work: Path) -> None:
        self.registry = registry
        self.base = base
        self.work = work

    def push(self, repo: str, tag: str, marker: str, **config: Any) -> str:
        """Push REPO:TAG; returns its manifest digest."""
        layout = self.work / f"{repo}-{tag}"
        # (srv/: the WORKDIR, which a Dockerfile's WORKDIR would have made)
        app = tar_of_files({"marker": marker + "\n", "usr/local/bin/runtime": RUNTIME, "srv/": ""})
        config.setdefault("entrypoint", ["/usr/local/bin/runtime"])
        config.setdefault("cmd", ["first"])
        config.setdefault("working_dir", "/srv")
        layout_of(layout, [self.base, app], tag=tag, env=ENV, **config)
        return push(layout, self.registry, repo, tag, source_tag=tag)

    def uri(self, repo: str, tag: str) -> str:
        return f"{self.registry.host}/{repo}:{tag}"


@pytest.fixture
def images(registry: Registry, base_layer: bytes, tmp_path: Path) -> Images:
    return Images(registry, base_layer, tmp_path)


def _name() -> str:
    return f"img-{uuid.uuid4().hex[:10]}"


def _wait(lam: Any, name: str) -> dict[str, Any]:
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    config: dict[str, Any] = lam.get_function_configuration(FunctionName=name)
    return config


def _settled(lam: Any, name: str) -> dict[str, Any]:
    for _ in range(300):
        config: dict[str, Any] = lam.get_function_configuration(FunctionName=name)
        if config["State"] != "Pending" and config.get("LastUpdateStatus") != "InProgress":
            return config
        time.sleep(0.2)
    raise AssertionError(f"{name} never settled")


def _invoke(lam: Any, name: str, **more: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    resp = lam.invoke(FunctionName=name, Payload=b'{"n": 1}', **more)
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    return body, resp


def _create(lam: Any, name: str, uri: str, **more: Any) -> dict[str, Any]:
    created: dict[str, Any] = lam.create_function(
        FunctionName=name, Role=ROLE, PackageType="Image", Code={"ImageUri": uri}, **more
    )
    return created


def test_create_pull_and_invoke(lam: Any, srv: Server, images: Images, registry: Registry) -> None:
    digest = images.push("app", "v1", "one")
    name = _name()
    created = _create(lam, name, images.uri("app", "v1"))
    assert created["State"] == "Pending" and created["PackageType"] == "Image"
    assert created["CodeSha256"] == digest.split(":")[1]
    assert "Runtime" not in created and "Handler" not in created
    config = _wait(lam, name)
    assert config["State"] == "Active" and config["LastUpdateStatus"] == "Successful"
    got = lam.get_function(FunctionName=name)
    assert got["Code"] == {
        "RepositoryType": "ECR",
        "ImageUri": images.uri("app", "v1"),
        "ResolvedImageUri": f"{registry.host}/app@{digest}",
    }
    body, resp = _invoke(lam, name, LogType="Tail")
    assert body == {
        "event": {"n": 1},
        "marker": "one",
        "cwd": "/srv",
        "args": "first",
        "name": name,
        "own": "from-image",
        "mine": "",
        "exec_env": "none",
    }
    assert "Init Duration" in base64.b64decode(resp["LogResult"]).decode()
    warm, resp = _invoke(lam, name, LogType="Tail")
    assert warm["marker"] == "one"
    assert "Init Duration" not in base64.b64decode(resp["LogResult"]).decode()
    out = lamina("images", "--json", endpoint=srv.endpoint)
    assert out.returncode == 0, out.stderr
    listed = {i["Digest"]: i for i in json.loads(out.stdout)["Images"]}
    assert listed[digest]["State"] == "ready" and name in listed[digest]["Functions"]


def test_image_config_and_variables(lam: Any, images: Images) -> None:
    images.push("app", "v1", "one")
    name = _name()
    _create(
        lam,
        name,
        images.uri("app", "v1"),
        ImageConfig={"Command": ["second", "third"], "WorkingDirectory": "/tmp"},
        Environment={"Variables": {"MINE": "set", "OWN": "overridden"}},
    )
    config = _wait(lam, name)
    assert config["ImageConfigResponse"] == {
        "ImageConfig": {"Command": ["second", "third"], "WorkingDirectory": "/tmp"}
    }
    body, _ = _invoke(lam, name)
    assert (body["args"], body["cwd"]) == ("second third", "/tmp")
    assert (body["mine"], body["own"]) == ("set", "overridden")


def test_update_to_a_new_tag_then_a_digest_pin(
    lam: Any, images: Images, registry: Registry
) -> None:
    first = images.push("upd", "v1", "one")
    images.push("upd", "v2", "two")
    name = _name()
    _create(lam, name, images.uri("upd", "v1"))
    _wait(lam, name)
    assert _invoke(lam, name)[0]["marker"] == "one"
    updated = lam.update_function_code(FunctionName=name, ImageUri=images.uri("upd", "v2"))
    assert updated["LastUpdateStatus"] == "InProgress"
    config = _settled(lam, name)
    assert config["LastUpdateStatus"] == "Successful"
    assert _invoke(lam, name)[0]["marker"] == "two"
    pinned = f"{registry.host}/upd@{first}"
    lam.update_function_code(FunctionName=name, ImageUri=pinned)
    config = _settled(lam, name)
    assert config["CodeSha256"] == first.split(":")[1]
    assert lam.get_function(FunctionName=name)["Code"]["ImageUri"] == pinned
    assert _invoke(lam, name)[0]["marker"] == "one"
    version = lam.publish_version(FunctionName=name)
    assert version["CodeSha256"] == first.split(":")[1]


def test_an_ecr_uri_maps_to_the_registry(lam: Any, images: Images) -> None:
    images.push("team/app", "v1", "ecr")
    name = _name()
    _create(lam, name, "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:v1")
    _wait(lam, name)
    assert _invoke(lam, name)[0]["marker"] == "ecr"


def test_a_missing_image_is_refused_at_once(lam: Any, images: Images) -> None:
    images.push("there", "v1", "x")
    name = _name()
    missing = images.uri("there", "nope")
    with pytest.raises(ClientError) as raised:
        _create(lam, name, missing)
    err = raised.value.response["Error"]
    assert err["Code"] == "InvalidParameterValueException"
    assert err["Message"] == f"Source image {missing} does not exist. Provide a valid source image."
    with pytest.raises(ClientError):
        lam.get_function(FunctionName=name)


def test_an_unreachable_registry_is_refused(lam: Any) -> None:
    with pytest.raises(ClientError) as raised:
        _create(lam, _name(), f"127.0.0.1:{free_port()}/app:v1")
    err = raised.value.response
    assert err["Error"]["Code"] == "AccessDeniedException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize(
    ("damage", "reason"), [("corrupt", "InvalidImage"), ("delete", "ImageDeleted")]
)
def test_a_layer_that_cannot_be_pulled_fails_the_function(
    lam: Any, images: Images, registry: Registry, damage: str, reason: str
) -> None:
    repo = f"broken-{damage}"
    images.push(repo, "v1", f"broken-{damage}-{uuid.uuid4().hex}")
    app_layer = manifest_of(registry, repo, "v1")["layers"][-1]["digest"]
    blob = registry.blob_path(app_layer)
    if damage == "corrupt":
        blob.write_bytes(b"\x1f\x8b" + os.urandom(blob.stat().st_size - 2))
    else:
        shutil.rmtree(blob.parent)
    name = _name()
    _create(lam, name, images.uri(repo, "v1"))
    config = _settled(lam, name)
    assert config["State"] == "Failed", config
    assert config["StateReasonCode"] == reason
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName=name, Payload=b"{}")
    err = raised.value.response["Error"]
    assert err["Code"] == "ResourceConflictException"
    assert "following state: Failed" in err["Message"]


def test_a_node_that_lost_an_image_pulls_it_again(
    own_server: Any, images: Images, registry: Registry, tmp_path: Path
) -> None:
    """After a restart with the image cache wiped, the first invocation pulls the image
    again; with the registry gone too, invocations fail clearly (and nothing else breaks)."""
    images.push("lost", "v1", "lost-and-found")
    data = tmp_path / "own-data"
    args = ("--sandbox", "namespace", "--image-registry", registry.url)
    first = own_server(data, *args)
    lam = first.client()
    name = _name()
    _create(lam, name, images.uri("lost", "v1"))
    _wait(lam, name)
    assert first.stop() == 0, first.log()
    shutil.rmtree(data / "images")

    again = own_server(data, *args)
    lam = again.client()
    assert lam.get_function_configuration(FunctionName=name)["State"] == "Active"
    assert _invoke(lam, name)[0]["marker"] == "lost-and-found"
    assert again.stop() == 0, again.log()

    shutil.rmtree(data / "images")
    registry.stop()
    try:
        third = own_server(data, *args)
        lam = third.client()
        with pytest.raises(ClientError) as raised:
            lam.invoke(FunctionName=name, Payload=b"{}")
        err = raised.value.response
        assert err["Error"]["Code"] == "ResourceNotReadyException"
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 502
        assert "could not be pulled" in err["Error"]["Message"]
    finally:
        registry.start()


def test_lamina_deploy_an_image(lam: Any, srv: Server, images: Images) -> None:
    images.push("cli", "v1", "cli-one")
    images.push("cli", "v2", "cli-two")
    name = _name()
    out = lamina(
        "deploy",
        name,
        "--image-uri",
        images.uri("cli", "v1"),
        "--command",
        "from cli",
        endpoint=srv.endpoint,
    )
    assert out.returncode == 0, out.stderr
    assert "created" in out.stdout and images.uri("cli", "v1") in out.stdout
    assert _invoke(lam, name)[0]["args"] == "from cli"
    out = lamina("deploy", name, "--image-uri", images.uri("cli", "v2"), endpoint=srv.endpoint)
    assert out.returncode == 0, out.stderr
    body = _invoke(lam, name)[0]
    assert (body["marker"], body["args"]) == ("cli-two", "from cli")
    listed = lamina("ls", endpoint=srv.endpoint)
    assert any(name in line and "(image)" in line for line in listed.stdout.splitlines())


def test_a_registry_with_credentials(own_server: Any, base_layer: bytes, tmp_path: Path) -> None:
    """--image-registry-auth: the auth file's credentials open a registry that asks for
    them; without them the registry's refusal is Lambda's AccessDeniedException."""
    with Registry(auth=("lamina", "s3cret")) as locked:
        Images(locked, base_layer, tmp_path).push("private", "v1", "private-one")
        uri = f"{locked.host}/private:v1"
        plain = own_server(tmp_path / "plain", "--sandbox", "namespace").client()
        with pytest.raises(ClientError) as raised:
            _create(plain, _name(), uri)
        assert raised.value.response["Error"]["Code"] == "AccessDeniedException"

        auth = tmp_path / "auth.json"
        token = base64.b64encode(b"lamina:s3cret").decode()
        auth.write_text(json.dumps({"auths": {locked.host: {"auth": token}}}))
        lam = own_server(
            tmp_path / "with-auth", "--sandbox", "namespace", "--image-registry-auth", str(auth)
        ).client()
        name = _name()
        _create(lam, name, uri)
        assert _wait(lam, name)["State"] == "Active"
        assert _invoke(lam, name)[0]["marker"] == "private-one"


def test_the_image_must_be_for_the_function_s_architecture(lam: Any, images: Images) -> None:
    images.push("arm", "v1", "arm", architecture="arm64")
    name = _name()
    with pytest.raises(ClientError) as raised:
        _create(lam, name, images.uri("arm", "v1"), Architectures=["x86_64"])
    err = raised.value.response["Error"]
    assert err["Code"] == "InvalidParameterValueException", err
    assert "arm64" in err["Message"], err  # says what the image is for
    with pytest.raises(ClientError):
        lam.get_function(FunctionName=name)
