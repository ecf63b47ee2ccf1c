"""Container-image functions through boto3 and `lamina`, where no registry is needed:
Lambda's rules and errors for `PackageType: Image`, the process backend's refusal, and the
`lamina images` / `lamina deploy --image-uri` commands. (Pulling and running images from a
registry: test_image_functions.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.cluster._engines import free_port
from tests.conftest import ROLE, Functions, Server, lamina

pytestmark = pytest.mark.control_plane

HELLO = "def handler(event, context):\n    return 1\n"


def _name() -> str:
    return f"img-{uuid.uuid4().hex[:10]}"


def _error(call: Callable[[], Any]) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as raised:
        call()
    err = raised.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def _uri() -> str:
    # A loopback registry that is not there: nothing gets as far as contacting it.
    return f"127.0.0.1:{free_port()}/app:1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"Runtime": "python3.12"},
            "Please don't provide Handler or Runtime or Layer when the intended function "
            "PackageType is Image.",
        ),
        (
            {"Handler": "app.handler"},
            "Please don't provide Handler or Runtime or Layer when the intended function "
            "PackageType is Image.",
        ),
        (
            {"Layers": ["arn:aws:lambda:us-east-1:000000000000:layer:l:1"]},
            "Please don't provide Handler or Runtime or Layer when the intended function "
            "PackageType is Image.",
        ),
    ],
)
def test_an_image_function_takes_no_runtime_handler_or_layers(
    lam: Any, extra: dict[str, Any], message: str
) -> None:
    name = _name()
    code, text, status = _error(
        lambda: lam.create_function(
            FunctionName=name, Role=ROLE, PackageType="Image", Code={"ImageUri": _uri()}, **extra
        )
    )
    assert (code, text, status) == ("InvalidParameterValueException", message, 400)
    assert _error(lambda: lam.get_function(FunctionName=name))[0] == "ResourceNotFoundException"


def test_the_package_type_and_the_code_must_agree(lam: Any) -> None:
    code, text, _ = _error(
        lambda: lam.create_function(FunctionName=_name(), Role=ROLE, PackageType="Image", Code={})
    )
    assert code == "InvalidParameterValueException"
    assert text == "Please provide ImageUri when the intended function PackageType is Image."
    code, text, _ = _error(
        lambda: lam.create_function(
            FunctionName=_name(),
            Role=ROLE,
            Runtime="python3.12",
            Handler="app.handler",
            Code={"ImageUri": _uri()},
        )
    )
    assert (code, text) == (
        "InvalidParameterValueException",
        "Please don't provide ImageUri when the intended function PackageType is Zip.",
    )


def test_image_config_limits_are_the_model_s(lam_unchecked: Any) -> None:
    code, text, _ = _error(
        lambda: lam_unchecked.create_function(
            FunctionName=_name(),
            Role=ROLE,
            PackageType="Image",
            Code={"ImageUri": _uri()},
            ImageConfig={"Command": ["x"] * 1501, "WorkingDirectory": "/" * 1001},
        )
    )
    assert code == "ValidationException"
    assert text.startswith("2 validation errors detected:")
    assert (
        "'imageConfig.command' failed to satisfy constraint: Member must have length less "
        "than or equal to 1500" in text
    )
    assert (
        "'imageConfig.workingDirectory' failed to satisfy constraint: Member must have "
        "length less than or equal to 1000" in text
    )


def test_a_zip_function_takes_no_image(functions: Functions, lam: Any) -> None:
    name = functions.create(HELLO)["FunctionName"]
    code, text, _ = _error(lambda: lam.update_function_code(FunctionName=name, ImageUri=_uri()))
    assert (code, text) == (
        "InvalidParameterValueException",
        "Please don't provide ImageUri when updating a function with packageType Zip.",
    )
    code, text, _ = _error(
        lambda: lam.update_function_configuration(
            FunctionName=name, ImageConfig={"Command": ["app.handler"]}
        )
    )
    assert code == "InvalidParameterValueException" and "ImageConfig" in text
    assert lam.get_function(FunctionName=name)["Code"]["RepositoryType"] == "S3"


def test_the_process_backend_refuses_image_functions(
    own_server: Callable[..., Server],
) -> None:
    srv = own_server(None, "--sandbox", "process")
    client = srv.client()
    name = _name()
    code, text, status = _error(
        lambda: client.create_function(
            FunctionName=name, Role=ROLE, PackageType="Image", Code={"ImageUri": _uri()}
        )
    )
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert text == (
        "container-image functions need the namespace sandbox (lamina serve --sandbox namespace)"
    )
    assert client.list_functions()["Functions"] == []
    # The CLI says the same, and lists no image.
    out = lamina("deploy", name, "--image-uri", _uri(), endpoint=srv.endpoint)
    assert out.returncode == 1 and "need the namespace sandbox" in out.stderr
    listed = lamina("images", endpoint=srv.endpoint)
    assert listed.returncode == 0 and listed.stdout.strip() == "no images", listed.stderr


def test_a_bad_registry_option_stops_the_start(own_server: Callable[..., Server]) -> None:
    with pytest.raises(RuntimeError, match="exited with 2"):
        own_server(None, "--image-registry", "ftp://registry.example")
